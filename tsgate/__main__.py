"""``python -m tsgate`` is the ``tsgate`` command."""

from tsgate.cli import main

raise SystemExit(main())
