"""`python -m mailshift.cli ...`, the same as the `mailshift` entry point."""

import sys

from mailshift.cli import main

sys.exit(main())
