"""`python -m bofexits.cli ...`: the `bofexits` command."""

import sys

from bofexits.cli import main

sys.exit(main())
