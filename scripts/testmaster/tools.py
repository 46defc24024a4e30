"""Small helpers shared by the image builders (test masters, boot master)."""

import subprocess
import sys
import time

_T0 = time.monotonic()


def make_progress(tool):
    """A progress printer for stderr: `[tool  1.2s] message`."""
    def progress(msg):
        print(f"[{tool} {time.monotonic() - _T0:5.1f}s] {msg}", file=sys.stderr, flush=True)
    return progress


def run(cmd, **kw):
    """Runs a command that must succeed; its output is captured and shown only on failure."""
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r
