"""Allow ``python3 -m beadm``."""

from beadm.cli import main

raise SystemExit(main())
