"""The `segtune` command leaves without the interpreter's teardown (cli.exit_now): what it printed and what the
exit handlers do must still all happen, through a pipe that buffers, with the right exit code."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import SPACES

DEMO = str(SPACES / "demo.yaml")


def entry(*args: str) -> str:
    """Python code that runs the `segtune` command's entry point with ``args``."""
    return f"import sys\nsys.argv = ['segtune', *{list(args)!r}]\nfrom segtune.cli import entry\nentry()\n"


def command(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout to a pipe: block-buffered
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_quick_exit_keeps_every_line_the_command_printed_and_its_exit_code() -> None:
    proc = command(entry("check", DEMO, "--spec-only"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("spec ok: study 'demo'")
    assert sum(line.startswith("  model ok: ") for line in lines) == 6  # 3 archs x 2 encoders
    assert sum(line.startswith("  sample: ") for line in lines) == 3

    bad = command(entry("check", "/no/such/spec.yaml"))
    assert bad.returncode == 2
    assert bad.stderr.strip() == "segtune: error: /no/such/spec.yaml: cannot read the spec: No such file or directory"


def test_threads_and_exit_handlers_end_before_the_quick_exit() -> None:
    # Ray's shutdown, the driver node segtune starts for a remote cluster, temporary folders: all are exit handlers;
    # a thread that is not a daemon (a write still under way) ends first, as at a normal exit; a thread pool left
    # open (its idle workers are not daemons) is closed as at a normal exit, not waited on for ever
    before = (
        "import atexit, threading, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import segtune.cli\n"
        "pool = ThreadPoolExecutor(1)  # kept: a pool that is collected closes itself\n"
        "pool.submit(print, 'pool task ran')\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "returned, command = threading.Event(), segtune.cli.main\n"
        "segtune.cli.main = lambda: (command(), returned.set())[0]  # the thread goes on after the command\n"
        "threading.Thread(target=lambda: (returned.wait(), time.sleep(1), print('thread ended', flush=True))).start()\n"
    )
    proc = command(before + entry("check", DEMO, "--spec-only"))
    assert proc.returncode == 0, proc.stderr
    assert "pool task ran" in proc.stdout.splitlines()
    assert proc.stdout.splitlines()[-2:] == ["thread ended", "exit handler ran"]
