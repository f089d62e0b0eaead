"""`python -m bofexits ...` (and `torchrun -m bofexits ...`): the `bofexits` command."""

import sys

from bofexits.cli import main

sys.exit(main())
