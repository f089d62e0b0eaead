"""A torchrun worker for tests/training/test_distributed.py: `train` with test hooks (not a test).

`python -m torch.distributed.run --standalone --nproc-per-node N tests/training/ddp_worker.py SPEC`
where SPEC is a JSON file: `configs` (one per rank, the last repeated), `out`, `resume`,
`stop_after` (every rank leaves cleanly after that epoch's checkpoint, like a job that ran out
of time), `fail` ([rank, epoch]: that rank raises after that epoch's checkpoint), `hang`
([rank, epoch]: that rank sleeps for an hour there) and `timeout` (seconds, `--dist-timeout`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path


def run(spec_path: str) -> int:
    from bofexits.config import from_dict
    from bofexits.errors import BofexitsError
    from bofexits.training.loop import train

    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    cfg = from_dict(spec["configs"][min(rank, len(spec["configs"]) - 1)])
    stop, fail, hang = spec.get("stop_after"), spec.get("fail"), spec.get("hang")

    def on_epoch(epoch: int) -> None:
        if fail and rank == fail[0] and epoch == fail[1]:
            raise RuntimeError(f"injected fault after epoch {epoch}")
        if hang and rank == hang[0] and epoch == hang[1]:
            time.sleep(3600)
        if stop and epoch == stop:
            sys.stdout.flush()
            os._exit(0)  # after the barrier: every rank has seen the whole checkpoint

    try:
        train(
            cfg,
            spec["out"],
            resume=spec.get("resume", False),
            progress=False,
            on_epoch=on_epoch,
            dist_timeout=timedelta(seconds=spec.get("timeout", 300)),
        )
    except BofexitsError as exc:
        where = "" if str(exc).startswith("rank ") else f"rank {rank}: "
        print(f"bofexits: error: {where}{exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(run)(sys.argv[1]))
