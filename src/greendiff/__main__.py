"""``python -m greendiff``: the CLI, its exit code passed on (torchrun and accelerate launch run it this way)."""

from greendiff.cli import main

raise SystemExit(main())
