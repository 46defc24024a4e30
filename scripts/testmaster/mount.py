"""Run a FUSE filesystem (ntfs-3g) in the foreground as our own child, and always unmount."""
import os
import subprocess
import time
from types import TracebackType

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
FIXED_TIME = "2024-03-01 12:00:00"   # frozen clock for every time-stamping tool


def faketime_env() -> dict[str, str]:
    """Environment that freezes the clock (libfaketime) at FIXED_TIME, UTC.

    The `faketime` wrapper waits for its child, which never returns for a daemon, so the
    library is preloaded directly."""
    env = dict(os.environ, TZ="UTC", FAKETIME=FIXED_TIME, FAKETIME_DONT_RESET="1")
    if os.path.exists(FAKETIME_LIB):
        env["LD_PRELOAD"] = FAKETIME_LIB
    else:
        raise RuntimeError(f"libfaketime not found at {FAKETIME_LIB}; run scripts/setup-deps")
    return env


class NtfsMount:
    def __init__(self, image: str, mountpoint: str, readonly: bool = False, log: str | None = None,
                 fake_time: bool = True, extra_opts: str = "") -> None:
        self.image, self.mnt, self.ro, self.log, self.fake = image, mountpoint, readonly, log, fake_time
        self.extra = extra_opts
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "NtfsMount":
        opts = "no_detach" + (",ro" if self.ro else "") + ("," + self.extra if self.extra else "")
        env = faketime_env() if self.fake else None
        with open(self.log or os.devnull, "ab") as out:
            self.proc = subprocess.Popen(["ntfs-3g", "-o", opts, self.image, self.mnt],
                                         stdout=out, stderr=out, env=env)
        try:
            for _ in range(2000):
                if os.path.ismount(self.mnt):
                    return self
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ntfs-3g failed to mount {self.image} "
                                       f"(exit {self.proc.returncode}); see {self.log}")
                time.sleep(0.01)
            raise RuntimeError(f"ntfs-3g did not mount {self.image} within 20 s")
        except BaseException:
            # A failed or interrupted mount gets no __exit__: unmount (if it came up) here.
            self.unmount()
            raise

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.unmount()

    def unmount(self) -> None:
        """Unmounts (retrying while the mount is busy) and waits for ntfs-3g to exit."""
        if self.proc is None:
            return
        for _ in range(50):
            if not os.path.ismount(self.mnt):
                break
            r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, check=False)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        try:
            self.proc.wait(timeout=60)   # ntfs-3g flushes and closes the image on exit
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
