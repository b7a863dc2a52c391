"""After a search: ``report``, ``export``, ``retrain``, ``predict``, ``dashboard``, ``overlay``.

They read the store (through ``segtune.search.store``) and checkpoints, never other search internals.
"""
