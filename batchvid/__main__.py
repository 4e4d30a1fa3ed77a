"""`python -m batchvid` is the same program as `batchvid`."""

from batchvid.cli import main

raise SystemExit(main())
