"""`python -m mlcdseg` runs the command line."""

from mlcdseg.cli import main

raise SystemExit(main())
