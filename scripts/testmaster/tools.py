"""Small helpers shared by the image builders (test masters, boot master) and the checker:
commands that must succeed, progress lines, hashes, package versions, the work directory and
the manifest file."""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_T0 = time.monotonic()
HASH_CHUNK = 4 << 20

Progress = Callable[[str], None]


def make_progress(tool: str) -> Progress:
    """A progress printer for stderr: `[tool  1.2s] message`."""

    def progress(msg: str) -> None:
        print(f"[{tool} {time.monotonic() - _T0:5.1f}s] {msg}", file=sys.stderr, flush=True)

    return progress


def run(cmd: Sequence[str], *, input: bytes | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Runs a command that must succeed; its output is captured and shown only on failure."""
    r = subprocess.run(cmd, capture_output=True, input=input, env=env, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file, read in chunks (images are hundreds of MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(pkgs: Sequence[str]) -> dict[str, str]:
    """{package: version} of the installed Debian packages among `pkgs` (dpkg-query)."""
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *pkgs],
                       capture_output=True, text=True, check=False)
    versions = {}
    for line in r.stdout.splitlines():
        name, sep, version = line.partition(" ")
        if sep:
            versions[name] = version
    return versions


@contextlib.contextmanager
def work_directory(tool: str, out: str, keep: bool, progress: Progress) -> Iterator[str]:
    """A temporary directory next to `out` (same file system, so the result is renamed into
    place), removed afterwards unless `keep`."""
    work = tempfile.mkdtemp(prefix=f".{tool}-", dir=os.path.dirname(out))
    try:
        yield work
    finally:
        if keep:
            progress(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def remove_stale(*paths: str) -> None:
    """Removes earlier outputs, so a failed build leaves none that looks complete."""
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)


def write_manifest(manifest: dict[str, Any], path: str) -> None:
    """Writes the manifest as indented JSON, atomically (a `.partial` file renamed)."""
    with open(path + ".partial", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(path + ".partial", path)
