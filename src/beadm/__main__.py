"""``python3 -m beadm`` and the ``beadm`` command (``run``).

``beadm version`` answers here, before the command line machinery is imported: that
import is most of a short command's start-up time (issue 15). Everything else goes to
:func:`beadm.cli.main`.
"""

import sys


def run() -> int:
    if sys.argv[1:] == ["version"]:
        from beadm import __version__

        print(f"beadm {__version__}")
        return 0
    from beadm.cli import main

    return main()


if __name__ == "__main__":
    raise SystemExit(run())
