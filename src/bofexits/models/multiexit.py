"""A backbone split into sequential stages, with an exit head after every stage but the last.

The last stage ends in the backbone's own classifier, so "exit S" is the plain backbone and
the full-network baseline is exactly the model the user brought (docs/method.md §1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from bofexits.errors import ConfigError, InputError
from bofexits.models.exits import ExitHeads

__all__ = ["MultiExitNetwork", "check_chain", "check_input", "split_named_layers", "split_sequential"]

ExitFactory = Callable[[Sequence[int]], ExitHeads]


def check_input(
    x: torch.Tensor,
    input_shape: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> None:
    """Reject what would otherwise fail deep inside a stage or be silently mis-routed.

    Args:
        x: (B, C, H, W) batch.
        input_shape: expected (C, H, W).
        dtype: the network's parameter dtype (a float64 batch into a float32 network fails
            inside the first convolution with a message about "bias type").
        device: the network's device.

    >>> check_input(torch.zeros(2, 1, 4, 4), (1, 4, 4))
    >>> check_input(torch.zeros(2, 1, 4, 4, dtype=torch.float64), (1, 4, 4), dtype=torch.float32)
    Traceback (most recent call last):
    ...
    bofexits.errors.InputError: expected float32 input (the network's dtype), got float64; convert with x.float()
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise InputError("got a meta tensor, which holds no data; pass a tensor with real values")
    if not x.is_floating_point():
        raise InputError(
            f"expected a float tensor, got dtype {x.dtype}; convert with x.float() and normalise"
        )
    if dtype is not None and x.dtype != dtype:
        convert = "x.float()" if dtype == torch.float32 else f"x.to({dtype})"
        raise InputError(
            f"expected {str(dtype).removeprefix('torch.')} input (the network's dtype), "
            f"got {str(x.dtype).removeprefix('torch.')}; convert with {convert}"
        )
    if device is not None and x.device.type != device.type:
        raise InputError(
            f"input is on {x.device} but the network is on {device}; move it with x.to({str(device)!r})"
        )
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise InputError(
            f"expected input of shape (B, {', '.join(map(str, input_shape))}), got {tuple(x.shape)}; "
            "resize the images or build the network for this input shape"
        )
    if not bool(torch.isfinite(x).all()):
        raise InputError("input contains NaN or inf values; clean or re-normalise the images first")


class _Flatten2d(nn.Module):
    """Flatten before a Linear child, as torchvision-style forwards do between pool and fc."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.flatten(x, 1) if x.ndim > 2 else x)


@torch.no_grad()
def check_chain(
    stages: Sequence[nn.Module], model: nn.Module, input_shape: Sequence[int]
) -> list[tuple[int, ...]]:
    """Refuse stages that, run in order, do not give `model`'s output (eval mode, a random batch of 2).

    Cutting a model by its children is only right when its forward is a plain chain of them;
    a forward that does more (a skip across children, a reshape) would be silently changed.

    Returns:
        The output shape of each stage without the batch, e.g. [(64, 56, 56), ..., (classes,)].
    """
    modes = [(m, m.training) for m in (model, *stages)]
    for m, _ in modes:
        m.eval()
    shapes = []
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else None
        x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(dtype)
        y = x
        for stage in stages:
            y = stage(y)
            shapes.append(tuple(y.shape[1:]))
        want = model(x)
    except RuntimeError as exc:
        raise ConfigError(f"the stages do not accept input of shape {tuple(input_shape)}: {exc}") from exc
    finally:
        for m, mode in modes:
            m.train(mode)
    if y.shape != want.shape or not torch.allclose(y, want, atol=1e-5, rtol=1e-4):
        raise ConfigError(
            "the model's forward is not a plain chain of its children; pass the stages explicitly "
            "with MultiExitNetwork(stages, ...)"
        )
    return shapes


def split_sequential(model: nn.Sequential, split_points: Sequence[int]) -> list[nn.Module]:
    """Cut an `nn.Sequential` into stages after the given child indices (0-based, inclusive).

    >>> seq = nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity())
    >>> [len(s) for s in split_sequential(seq, [0])]
    [1, 2]
    """
    n = len(model)
    points = list(split_points)
    if not points or points != sorted(set(points)) or points[0] < 0 or points[-1] >= n - 1:
        raise ConfigError(
            f"split points {points} must be strictly increasing child indices in [0, {n - 2}] "
            "(the last stage needs at least one child)"
        )
    bounds = [0, *[p + 1 for p in points], n]
    return [model[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def split_named_layers(model: nn.Module, layer_names: Sequence[str]) -> list[nn.Module]:
    """Cut a model whose forward is a plain chain of its children after the named children.

    A Linear child that receives a map is fed its flattened input (the `torch.flatten` such
    forwards call between pooling and the classifier). `MultiExitNetwork.from_named_layers`
    checks the chain against the model's own forward.
    """
    children = list(model.named_children())
    names = [name for name, _ in children]
    unknown = [n for n in layer_names if n not in names]
    if unknown:
        raise ConfigError(f"unknown layer names {unknown}; top-level children are: {', '.join(names)}")
    points = sorted(names.index(n) for n in layer_names)
    wrapped = [_Flatten2d(m) if isinstance(m, nn.Linear) else m for _, m in children]
    return split_sequential(nn.Sequential(*wrapped), points)


class MultiExitNetwork(nn.Module):
    """Stages f_1..f_S plus exit heads after stages 1..S-1.

    Args:
        stages: S >= 2 modules applied in order; the last returns the final logits (B, classes).
        exits: a factory called with the channel count after each of stages 1..S-1, returning
            the exit heads (e.g. ``lambda ch: BoFExits(ch, 10)``).
        input_shape: (C, H, W) of one input, used to infer feature shapes and validate inputs.

    In training mode `forward` returns every exit's logits (the final one last). Inference
    that stops early lives in `bofexits.inference.runtime`.
    """

    def __init__(self, stages: Sequence[nn.Module], exits: ExitFactory, input_shape: Sequence[int]) -> None:
        super().__init__()
        if len(stages) < 2:
            raise ConfigError(f"a multi-exit network needs at least 2 stages, got {len(stages)}")
        self.stages = nn.ModuleList(stages)
        self.input_shape = tuple(int(s) for s in input_shape)
        shapes = self._feature_shapes()
        self.feature_shapes = shapes[:-1]
        if len(shapes[-1]) != 1:
            raise ConfigError(
                f"the last stage must return logits (B, classes), it returns (B, {', '.join(map(str, shapes[-1]))})"
            )
        self.num_classes = shapes[-1][0]
        for i, s in enumerate(self.feature_shapes):
            if len(s) != 3:
                raise ConfigError(f"stage {i + 1} must return a (B, C, H, W) feature map, got (B, {s})")
        self.exits = exits([s[0] for s in self.feature_shapes])
        if self.exits.num_exits != len(stages) - 1:
            raise ConfigError(
                f"exit heads cover {self.exits.num_exits} exits, the network has {len(stages) - 1}"
            )

    @property
    def num_exits(self) -> int:
        """S: the early exits plus the final one."""
        return len(self.stages)

    @torch.no_grad()
    def _feature_shapes(self) -> list[tuple[int, ...]]:
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(1, *self.input_shape)
            shapes = []
            for stage in self.stages:
                x = stage(x)
                shapes.append(tuple(x.shape[1:]))
        except RuntimeError as exc:
            raise ConfigError(f"the stages do not accept input of shape {self.input_shape}: {exc}") from exc
        finally:
            self.train(was_training)
        return shapes

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature maps after stages 1..S-1 and the final logits, running every stage."""
        maps = []
        for stage in self.stages[:-1]:
            x = stage(x)
            maps.append(x)
        return maps, self.stages[-1](x)

    def validate_input(self, x: torch.Tensor) -> None:
        """`check_input` against this network's input shape, parameter dtype and device."""
        param = next(self.parameters(), None)
        dtype = param.dtype if param is not None else None
        device = param.device if param is not None else None
        check_input(x, self.input_shape, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of all S exits, [(B, classes)] * S, the backbone's own output last."""
        self.validate_input(x)
        maps, final = self.features(x)
        return [*self.exits(maps), final]

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The plain backbone: all stages, no exits (the full-network baseline)."""
        for stage in self.stages:
            x = stage(x)
        return x

    @classmethod
    def from_sequential(
        cls, model: nn.Sequential, split_points: Sequence[int], exits: ExitFactory, input_shape: Sequence[int]
    ) -> MultiExitNetwork:
        """Exits after the children at `split_points` of an `nn.Sequential`."""
        return cls(split_sequential(model, split_points), exits, input_shape)

    @classmethod
    def from_named_layers(
        cls, model: nn.Module, layer_names: Sequence[str], exits: ExitFactory, input_shape: Sequence[int]
    ) -> MultiExitNetwork:
        """Exits after the named top-level children of a model whose forward chains its children.

        The chained stages are compared with ``model(x)`` on a random input; a model whose
        forward does more (skip connections across children, reshapes) is refused.
        """
        stages = split_named_layers(model, layer_names)
        net = cls(stages, exits, input_shape)
        check_chain(list(net.stages), model, net.input_shape)
        return net
