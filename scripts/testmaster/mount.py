"""Run a FUSE filesystem (ntfs-3g) in the foreground as our own child, and always unmount."""
import os
import subprocess
import time

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
FIXED_TIME = "2024-03-01 12:00:00"   # frozen clock for every time-stamping tool


def faketime_env():
    """Environment that freezes the clock (libfaketime) at FIXED_TIME, UTC.

    The `faketime` wrapper waits for its child, which never returns for a daemon, so the
    library is preloaded directly."""
    env = dict(os.environ, TZ="UTC", FAKETIME=FIXED_TIME, FAKETIME_DONT_RESET="1")
    if os.path.exists(FAKETIME_LIB):
        env["LD_PRELOAD"] = FAKETIME_LIB
    else:
        raise SystemExit(f"libfaketime not found at {FAKETIME_LIB}; run scripts/setup-deps")
    return env


class NtfsMount:
    def __init__(self, image, mountpoint, readonly=False, log=None, fake_time=True, extra_opts=""):
        self.image, self.mnt, self.ro, self.log, self.fake = image, mountpoint, readonly, log, fake_time
        self.extra = extra_opts
        self.proc = None

    def __enter__(self):
        opts = "no_detach" + (",ro" if self.ro else "") + ("," + self.extra if self.extra else "")
        out = open(self.log or os.devnull, "ab")
        env = faketime_env() if self.fake else None
        self.proc = subprocess.Popen(["ntfs-3g", "-o", opts, self.image, self.mnt],
                                     stdout=out, stderr=out, env=env)
        out.close()
        for _ in range(2000):
            if os.path.ismount(self.mnt):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"ntfs-3g failed to mount {self.image} (exit {self.proc.returncode}); "
                                   f"see {self.log}")
            time.sleep(0.01)
        self.__exit__(None, None, None)
        raise RuntimeError(f"ntfs-3g did not mount {self.image} within 20 s")

    def __exit__(self, *exc):
        if self.proc is None:
            return False
        for attempt in range(50):
            if not os.path.ismount(self.mnt):
                break
            r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        try:
            self.proc.wait(timeout=60)   # ntfs-3g flushes and closes the image on exit
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
        return False
