"""TorchScript export: one scripted module running the adaptive loop over traced stage+exit blocks.

The same blocks as the ONNX export (`bofexits.deploy.onnx`), with the shrinking-batch loop of
`bofexits.inference.runtime.route` written in TorchScript, so libtorch (C++) can run real early exit.
Each traced piece is checked against PyTorch on a batch of another size, as the ONNX graphs are.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bofexits.deploy import _export
from bofexits.deploy import manifest as schema
from bofexits.deploy._export import ExportError
from bofexits.deploy.info import deploy_info
from bofexits.deploy.manifest import TORCHSCRIPT_FORMAT
from bofexits.errors import InputError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["TORCHSCRIPT_FORMAT", "ExportError", "export_torchscript"]

_SIGNATURE = (
    "adaptive.pt: x (B, C, H, W) float32 -> (logits (B, classes), exit_index (B,) int64); "
    "backbone.pt: x -> logits"
)


class _AdaptiveScript(nn.Module):
    """The shrinking-batch loop of `bofexits.inference.runtime.route` in TorchScript, over traced blocks.

    ``forward(x) -> (logits, exit_index)``. Each block returns its exit's confidence, so the
    loop only compares it with `thresholds` (a buffer: set another beta's thresholds in place).
    Non-finite logits raise the project's `InputError`; once scripted, TorchScript raises it as
    `torch.jit.Error` whose message starts with the class name, the most a scripted module can do.
    """

    def __init__(
        self, blocks: Sequence[nn.Module], final: nn.Module, thresholds: list[float], num_classes: int
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
                    raise InputError("an exit produced NaN or inf logits; the weights are broken")
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
                raise InputError("the final exit produced NaN or inf logits; the weights are broken")
            out[alive] = final
        return out, exit_index


def _trace(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    verify: tuple[torch.Tensor, ...],
    names: list[str],
    what: str,
) -> torch.jit.ScriptModule:
    """`module` traced on `args`, then checked against itself in PyTorch on `verify` (another batch size)."""
    try:
        traced = torch.jit.trace(module, args, check_trace=False)
    except Exception as exc:
        raise ExportError(f"{what} cannot be traced ({_export.root_cause(exc)})") from exc
    got, want = traced(*verify), module(*verify)
    got, want = ((got,), (want,)) if isinstance(want, torch.Tensor) else (got, want)
    _export.check_outputs(what, "TorchScript", names, [g.numpy() for g in got], [w.numpy() for w in want])
    return traced


def _traced_parts(
    rt: AdaptiveRuntime, score: str
) -> tuple[list[torch.jit.ScriptModule], torch.jit.ScriptModule, torch.jit.ScriptModule]:
    """The stage+exit blocks (each also returning its exit's score), the final stage and the plain
    backbone, traced on a batch of 2 and checked on a batch of 3."""
    (xs, states), (vs, vstates) = _export.chain_inputs(rt, 2, seed=1), _export.chain_inputs(rt, 3, seed=2)
    s, empty = len(rt.stages), torch.zeros(0)
    names = ["features", "logits", "next_state", "score"]
    blocks = []
    for i, (state, vstate) in enumerate(zip(states, vstates, strict=True)):
        block = _export.ExitBlock(
            rt.stages[i], rt.exits, i, takes_state=state is not None, score=score
        ).eval()
        args = (xs[i], state if state is not None else empty)
        verify = (vs[i], vstate if vstate is not None else empty)
        blocks.append(_trace(block, args, verify, names, f"stage {i + 1} of {s} or its exit"))
    final = _trace(rt.stages[-1], (xs[-1],), (vs[-1],), ["logits"], f"stage {s} of {s}")
    backbone = _trace(rt.plain_backbone(), (xs[0],), (vs[0],), ["logits"], "the plain backbone")
    return blocks, final, backbone


@torch.no_grad()
def export_torchscript(
    source: str | Path | MultiExitNetwork, out_dir: str | Path, *, overwrite: bool = False, **info_kwargs: Any
) -> Path:
    """Write ``adaptive.pt`` (one scripted module: the adaptive loop over traced stage+exit blocks),
    ``backbone.pt`` (traced plain backbone) and a manifest (`bofexits.deploy.manifest.TorchScriptManifest`),
    atomically.

    ``torch.jit.load(dir / "adaptive.pt")(x)`` returns ``(logits, exit_index)`` like
    `AdaptiveRuntime`, with the rule's thresholds baked in; usable from C++ (libtorch).

    Args:
        source, out_dir, overwrite, **info_kwargs: as for `bofexits.deploy.onnx.export_onnx`.

    Raises:
        ExportError: a piece cannot be traced or scripted, or its trace does not reproduce PyTorch.
    """
    model, info = deploy_info(source, **info_kwargs)
    rt = _export.export_runtime(model, info)
    for part in [*rt.stages, rt.exits]:
        part.requires_grad_(False)  # outputs need no autograd graph, with or without torch.no_grad
    with _export.quiet():
        blocks, final, backbone = _traced_parts(rt, info.calibration.score)
        try:
            adaptive = torch.jit.script(
                _AdaptiveScript(blocks, final, info.policy.thresholds, model.num_classes)
            )
        except Exception as exc:
            raise ExportError(
                f"the adaptive loop cannot be compiled to TorchScript ({_export.root_cause(exc)})"
            ) from exc
    given = source if isinstance(source, (str, Path)) else None
    with _export.staging_dir(Path(out_dir), overwrite, given) as tmp:
        files = {}
        for name, module in (("adaptive", adaptive), ("backbone", backbone)):
            # Serialised in memory, written by Python: TorchScript's C++ writer aborts the process
            # (SIGABRT) on a full disk, where a Python write raises ENOSPC that `staging_dir` reports.
            buffer = io.BytesIO()
            with _export.quiet():  # torch.jit.save's deprecation notice
                torch.jit.save(module, buffer)
            (tmp / f"{name}.pt").write_bytes(buffer.getvalue())
            files[name] = schema.FileEntry(f"{name}.pt", schema.sha256_file(tmp / f"{name}.pt"))
        manifest = schema.TorchScriptManifest(
            adaptive=files["adaptive"],
            backbone=files["backbone"],
            signature=_SIGNATURE,
            **_export.manifest_fields(model, info),
        )
        _export.write_manifest(tmp, manifest)
    return Path(out_dir)
