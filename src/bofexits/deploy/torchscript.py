"""TorchScript export: one scripted module running the adaptive loop over traced stage+exit blocks.

The same blocks as the ONNX export (`bofexits.deploy.onnx`), with the shrinking-batch loop of
`bofexits.inference.runtime.route` written in TorchScript, so libtorch (C++) can run real early exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bofexits import __version__
from bofexits._io import write_json
from bofexits.deploy import runner as deploy
from bofexits.deploy.onnx import ExportError, _Block, _quiet, _root_cause, _runtime, _staging_dir, deploy_info
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["TORCHSCRIPT_FORMAT", "export_torchscript"]

TORCHSCRIPT_FORMAT = "bofexits-torchscript"


class _AdaptiveScript(nn.Module):
    """The shrinking-batch loop of `bofexits.inference.runtime.route` in TorchScript, over traced blocks.

    ``forward(x) -> (logits, exit_index)``. Each block returns its exit's confidence, so the
    loop only compares it with `thresholds` (a buffer: set another beta's thresholds in place).
    """

    def __init__(
        self, blocks: list[nn.Module], final: nn.Module, thresholds: list[float], num_classes: int
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.final = final
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        out = torch.zeros(n, self.num_classes, dtype=x.dtype)
        exit_index = torch.full([n], len(self.blocks), dtype=torch.long)
        alive = torch.arange(n)
        state = torch.zeros(0, dtype=x.dtype)
        done = False
        i = 0
        for block in self.blocks:
            if not done:
                x, logits, state, score = block(x, state)
                if not bool(torch.isfinite(logits).all()):
                    raise RuntimeError("an exit produced NaN or inf logits; the weights are broken")
                stop = score >= self.thresholds[i]  # type: ignore[index]
                if bool(stop.any()):
                    out[alive[stop]] = logits[stop]
                    exit_index[alive[stop]] = i
                    go_on = ~stop
                    alive, x = alive[go_on], x[go_on]
                    if state.dim() > 0 and state.shape[0] == go_on.shape[0]:
                        state = state[go_on]
                    done = alive.shape[0] == 0
            i += 1
        if not done:
            final = self.final(x)
            if not bool(torch.isfinite(final).all()):
                raise RuntimeError("the final exit produced NaN or inf logits; the weights are broken")
            out[alive] = final
        return out, exit_index


@torch.no_grad()
def export_torchscript(
    source: str | Path | MultiExitNetwork, out_dir: str | Path, *, overwrite: bool = False, **info_kwargs: Any
) -> Path:
    """Write ``adaptive.pt`` (one scripted module: the adaptive loop over traced stage+exit blocks),
    ``backbone.pt`` (traced plain backbone) and a manifest, atomically.

    ``torch.jit.load(dir / "adaptive.pt")(x)`` returns ``(logits, exit_index)`` like
    `AdaptiveRuntime`, with the rule's thresholds baked in; usable from C++ (libtorch).

    Args:
        source, out_dir, overwrite, **info_kwargs: as for `export_onnx`.
    """
    model, info = deploy_info(source, **info_kwargs)
    rt = _runtime(model, info)
    for part in [*rt.stages, rt.exits]:
        part.requires_grad_(False)  # outputs need no autograd graph, with or without torch.no_grad
    s, score = len(rt.stages), info.calibration.score
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, *rt.model.input_shape, generator=gen)
    state = torch.zeros(0)
    blocks: list[nn.Module] = []
    with _quiet():
        for i in range(s - 1):
            block = _Block(rt.stages[i], rt.exits, i, takes_state=state.numel() > 0, score=score).eval()
            try:
                traced = torch.jit.trace(block, (x, state), check_trace=False)
            except Exception as exc:
                raise ExportError(
                    f"stage {i + 1} of {s} or its exit cannot be traced ({_root_cause(exc)})"
                ) from exc
            blocks.append(traced)
            x, _, state, _ = block(x, state)
        try:
            final = torch.jit.trace(rt.stages[-1], (x,), check_trace=False)
            backbone = torch.jit.trace(
                rt.plain_backbone(), (torch.randn(2, *rt.model.input_shape, generator=gen),)
            )
            adaptive = torch.jit.script(
                _AdaptiveScript(blocks, final, info.policy.thresholds, model.num_classes)
            )
        except Exception as exc:
            raise ExportError(f"the network cannot be compiled to TorchScript ({_root_cause(exc)})") from exc
    files = {"adaptive": "adaptive.pt", "backbone": "backbone.pt"}
    with _staging_dir(Path(out_dir), overwrite) as tmp:
        adaptive.save(str(tmp / files["adaptive"]))
        backbone.save(str(tmp / files["backbone"]))
        manifest = {
            "format": TORCHSCRIPT_FORMAT,
            "version": deploy.VERSION,
            "producer": {"bofexits": __version__, "torch": torch.__version__},
            "num_exits": model.num_exits,
            "num_classes": model.num_classes,
            "files": {k: {"file": f, "sha256": deploy.sha256_file(tmp / f)} for k, f in files.items()},
            "signature": "adaptive.pt: x (B, C, H, W) float32 -> (logits (B, classes), exit_index (B,) int64); "
            "backbone.pt: x -> logits",
            **info.manifest_fields(model.input_shape),
        }
        write_json(tmp / deploy.MANIFEST, manifest)
    return Path(out_dir)
