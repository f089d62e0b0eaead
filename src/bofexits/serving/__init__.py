"""Serving early exits: stage-level continuous batching behind HTTP (vLLM's layout).

* `scheduler`: one queue per stage and what runs next (no torch, no HTTP);
* `stages`: the step protocol the engine drives (`StageBackend`) and its onnxruntime form
  (`OnnxStages`); `torch_stages`: PyTorch stages from a checkpoint (`TorchStages`);
  `load`: opens either (`open_stages`);
* `engine`: runs stage batches, answers finished requests (`Engine`);
* `telemetry`: Prometheus metrics; `slo`: the latency-driven controller of beta;
* `http`: the FastAPI app; `server`: `bofexits serve` under uvicorn; `ray_app`: the Ray Serve
  deployment; `bulk`: `bofexits predict` on many images through the engine.

Importing this package imports neither torch nor FastAPI; the modules that need them do.
"""

from __future__ import annotations

from bofexits.serving.engine import Answer, Engine, Overloaded, ShuttingDown
from bofexits.serving.scheduler import Batch, Group, Scheduler
from bofexits.serving.slo import SloController
from bofexits.serving.stages import ModelFacts, OnnxStages, StageBackend, expected_accuracy
from bofexits.serving.telemetry import Telemetry

__all__ = [
    "Answer",
    "Batch",
    "Engine",
    "Group",
    "ModelFacts",
    "OnnxStages",
    "Overloaded",
    "Scheduler",
    "ShuttingDown",
    "SloController",
    "StageBackend",
    "Telemetry",
    "expected_accuracy",
]
