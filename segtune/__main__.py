from segtune.cli import entry

entry()
