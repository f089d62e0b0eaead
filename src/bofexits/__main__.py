"""`python -m bofexits ...` (and `torchrun -m bofexits ...`): the `bofexits` command.

Under torchrun the entry point is wrapped in torch's `record`, which writes an uncaught
exception to the error file torchrun reads, so its failure summary names the rank and the
cause. Outside torchrun nothing of torch is imported here (the deployment path is torch-free).
"""

import os
import sys

from bofexits.cli import main

if "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun for every worker
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())
sys.exit(main())
