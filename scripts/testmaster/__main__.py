"""The one entry point of the test-master package:

    python3 -m testmaster build-test-master|check-test-master|build-boot-master|build-store-disk [ARGS]

(scripts/build-test-master, scripts/check-test-master and scripts/build-boot-master run it
with /usr/bin/python3, which has python3-hivex.) `COMMAND --help` describes each command.
"""
import signal
import sys
from collections.abc import Callable
from types import FrameType

from . import boot, build, check, stores

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "build-test-master": build.main,
    "check-test-master": check.main,
    "build-boot-master": boot.main,
    "build-store-disk": stores.main,
}


def on_signal(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds the stack, so every mount is unmounted and the work directory removed.
    raise SystemExit(f"interrupted by signal {signum}")


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print((__doc__ or "").strip())
        return 0
    if not argv or argv[0] not in COMMANDS:
        what = f"unknown command {argv[0]!r}" if argv else "no command"
        print(f"testmaster: {what}; give one of {', '.join(COMMANDS)} (then --help for its "
              "arguments)", file=sys.stderr)
        return 1
    command, args = argv[0], argv[1:]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        return COMMANDS[command](args)
    except RuntimeError as e:
        print(f"{command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
