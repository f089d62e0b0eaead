"""`bofexits predict`: classify image files with a checkpoint (PyTorch) or an ONNX export directory.

Each image is read with Pillow and decoded by `bofexits._pixels.decode_pixels`, the decoder
`bofexits.data.image_folder` prepares training images with (EXIF orientation, alpha over black,
16-bit and float greys scaled to 8 bits, the recorded colour mode "L" or "RGB", a bilinear
resize to exactly the input size), then ``(pixels / 255 - mean) / std`` in numpy, the same
steps for both back ends. An image smaller than half the input size
in either side is refused: upscaling it further would mostly invent the content.

For an export directory nothing here imports torch; a checkpoint runs `AdaptiveRuntime`.
`device` (`--device`) is where: the PyTorch model's device, or onnxruntime's execution provider
(`onnx_providers`: CUDAExecutionProvider for cuda, the CPU's otherwise).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from bofexits._pixels import PixelError, decode_pixels
from bofexits.deploy.manifest import TorchScriptManifest, read_manifest
from bofexits.deploy.rule import confidence
from bofexits.deploy.runner import OnnxAdaptiveRunner, _onnxruntime, preprocess
from bofexits.devices import check_device_name
from bofexits.errors import BofexitsError, CheckpointError, ConfigError, InputError

__all__ = [
    "MIN_SIDE_FRACTION",
    "Prediction",
    "decode_image",
    "format_predictions",
    "load_image",
    "onnx_providers",
    "open_onnx_runner",
    "predict_files",
]

#: Smallest accepted image side, as a fraction of the model's input side.
MIN_SIDE_FRACTION = 0.5
if TYPE_CHECKING:  # an export folder is served without torch
    import torch
_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@dataclass
class Prediction:
    """The outcome for one file: a class, or an error.

    Attributes:
        file: the path as given.
        class_name, class_index: the predicted class.
        exit: the exit taken, 1-based (num_exits = the full network).
        num_exits: S.
        confidence: the top softmax probability at the exit taken.
        ms: inference time (preprocessed input to logits), milliseconds.
        error: why the file could not be classified (then the other fields are None).
    """

    file: str
    class_name: str | None = None
    class_index: int | None = None
    exit: int | None = None
    num_exits: int | None = None
    confidence: float | None = None
    ms: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_image(path: str | Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """Read one image file as a (H, W, C) uint8 array at `size` (height, width) in `mode`.

    The pixels are `bofexits._pixels.decode_pixels`'s, the decoder training on an image folder
    uses too (EXIF orientation, alpha over black, deep greys scaled, bilinear resize).

    Raises:
        InputError: the path is not a regular file, not an image Pillow can read, in a mode that
            cannot be converted, or too small (see `MIN_SIDE_FRACTION`); the message names it.
    """
    path = Path(path)
    _check_regular_file(path)
    return decode_image(path, size, mode, name=str(path))


def decode_image(
    source: str | Path | BinaryIO, size: tuple[int, int], mode: str, *, name: str, max_pixels: int | None = None
) -> np.ndarray:
    """`load_image` on an open file or a path: the steps and errors of reading files, for bytes from a request.

    Args:
        source: a path or a binary file object (e.g. ``io.BytesIO(body)``).
        size, mode: as for `load_image`.
        name: how error messages call the image.
        max_pixels: refuse larger images before decoding them (a server's guard against
            decompression bombs: a small PNG can hold a huge image).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = name
    height, width = size
    try:
        with Image.open(source) as opened:
            if max_pixels is not None and opened.width * opened.height > max_pixels:
                raise InputError(
                    f"{path} is {opened.width}x{opened.height} pixels, more than the {max_pixels} accepted; "
                    "resize it first"
                )
            image = ImageOps.exif_transpose(opened)
            image.load()
    except InputError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
    ) as exc:
        raise InputError(f"{path} is not an image Pillow can read ({exc}); pass PNG or JPEG files") from exc
    if image.width < MIN_SIDE_FRACTION * width or image.height < MIN_SIDE_FRACTION * height:
        raise InputError(
            f"{path} is {image.width}x{image.height} pixels, the model reads {width}x{height}; images under half "
            "that size would be mostly invented by upscaling: use a larger image"
        )
    try:
        return decode_pixels(image, (height, width), mode)
    except PixelError as exc:
        raise InputError(f"{path} {exc}") from None


def _check_regular_file(path: Path) -> None:
    """Name what the path is when it is not a regular file (a folder, a FIFO, a device, nothing)."""
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist; check the path") from None
    except OSError as exc:
        raise InputError(f"image {path} cannot be read ({exc.strerror or exc}); check the path") from None
    if stat.S_ISREG(st.st_mode):
        return
    what = (
        "a folder"
        if stat.S_ISDIR(st.st_mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(st.st_mode)
        else "a device"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "not a regular file"
    )
    raise InputError(f"image {path} is {what}, not an image file; pass image files")


def onnx_providers(
    device: str, available: Sequence[str], *, strict: bool = True
) -> list[str | tuple[str, dict[str, Any]]]:
    """onnxruntime's execution providers for a `--device` name, given the ones this onnxruntime has.

    cpu: the CPU provider. cuda / cuda:N: the CUDA provider on that GPU, then the CPU's for any
    operator it lacks; refused when this onnxruntime has no CUDA provider (the CPU-only wheel),
    unless not `strict` (benchmarks timing PyTorch on a GPU beside a CPU-only onnxruntime):
    then the CPU's. auto: CUDA when this onnxruntime has it, else the CPU.

    Raises:
        ConfigError: an unknown device name, or (`strict`) CUDA asked for without the CUDA provider.

    >>> onnx_providers("auto", ["CPUExecutionProvider"])
    ['CPUExecutionProvider']
    >>> onnx_providers("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    [('CUDAExecutionProvider', {'device_id': 1}), 'CPUExecutionProvider']
    """
    name = check_device_name(device)
    has_cuda = _CUDA in available
    if name == "cpu" or (not has_cuda and (name == "auto" or not strict)):
        return [_CPU]
    if not has_cuda:
        raise ConfigError(
            f"device {name!r} asked for, but this onnxruntime has no {_CUDA} (only {', '.join(available)}); "
            "install onnxruntime-gpu in place of onnxruntime, or use --device cpu or auto"
        )
    return [(_CUDA, {"device_id": int(name.split(":")[1]) if ":" in name else 0}), _CPU]


def _check_started(runner: OnnxAdaptiveRunner, device: str) -> None:
    """An explicit cuda device must have got the CUDA provider: onnxruntime falls back to the CPU
    with only a logged warning when it cannot start it (no GPU, or CUDA libraries missing)."""
    if device.startswith("cuda") and _CUDA not in runner.backbone.session.get_providers():
        raise ConfigError(
            f"device {device!r} asked for, but onnxruntime could not start its {_CUDA} (no GPU visible, or "
            "CUDA/cuDNN libraries missing: its warning above says which); use --device cpu or auto"
        )


@dataclass
class _Backend:
    """What `predict_files` needs from a model: its facts and a batch-1 adaptive call.

    `device` says where it runs: "cpu" or the GPU's name for PyTorch, the execution provider
    for onnxruntime.
    """

    name: str
    classes: list[str]
    input_shape: tuple[int, ...]
    mean: list[float]
    std: list[float]
    color_mode: str | None
    num_exits: int
    rule: dict[str, Any]
    run: Callable[[np.ndarray], tuple[np.ndarray, int]]
    device: str


def open_onnx_runner(
    export_dir: Path, beta: float | None, threads: int | None, device: str, *, who: str = "predict"
) -> OnnxAdaptiveRunner:
    """The runner of an ONNX export on `device`'s execution provider, which must have started.

    What `predict` and `bofexits serve` both open; `who` names the verb in the message that
    refuses a TorchScript export.
    """
    if isinstance(read_manifest(export_dir, verify_files=False), TorchScriptManifest):
        raise CheckpointError(
            f"{export_dir} is a TorchScript export; {who} reads checkpoints and ONNX exports "
            "(bofexits export CHECKPOINT --format onnx DIR), or load adaptive.pt with torch.jit.load"
        )
    providers = onnx_providers(device, _onnxruntime().get_available_providers())
    runner = OnnxAdaptiveRunner(
        export_dir, threads=1 if threads is None else threads, beta=beta, providers=providers
    )
    _check_started(runner, device)
    return runner


def _onnx_backend(export_dir: Path, beta: float | None, threads: int | None, device: str) -> _Backend:
    runner = open_onnx_runner(export_dir, beta, threads, device)
    return _Backend(
        "onnxruntime",
        runner.classes,
        runner.input_shape,
        runner.mean.tolist(),
        runner.std.tolist(),
        runner.color_mode,
        runner.num_exits,
        {"score": runner.score, "variant": runner.variant, "beta": runner.beta},
        runner.run_single,
        runner.backbone.session.get_providers()[0],
    )


def _torch_backend(
    checkpoint: Path, beta: float | None, threads: int | None, data_dir: str | None, device: str
) -> _Backend:
    import torch

    from bofexits.deploy.info import deploy_info
    from bofexits.devices import describe_device, resolve_device
    from bofexits.inference.runtime import AdaptiveRuntime

    where = resolve_device(device)  # a GPU that is not there: refused before the checkpoint is read
    if threads:
        torch.set_num_threads(threads)
    model, info = deploy_info(checkpoint, beta=beta, data_dir=data_dir)
    runtime = AdaptiveRuntime(model.float().to(where), info.policy, check_inputs=False)

    def run(x: np.ndarray) -> tuple[np.ndarray, int]:
        logits, index = runtime.run_single(torch.from_numpy(x).to(where))
        return logits.cpu().numpy(), index  # .cpu() waits for the GPU: the caller's timing is whole

    return _Backend(
        "pytorch",
        info.classes,
        tuple(model.input_shape),
        info.mean,
        info.std,
        info.color_mode,
        model.num_exits,
        {"score": info.calibration.score, "variant": info.variant, "beta": info.beta},
        run,
        describe_device(where),
    )


def _open_backend(
    source: str | Path,
    *,
    beta: float | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
    device: str | torch.device | None = None,
) -> _Backend:
    """An export directory (onnxruntime) or a checkpoint file (PyTorch), on `device` (None: the CPU)."""
    source = Path(source)
    device = "cpu" if device is None else check_device_name(str(device))
    if source.is_dir():
        return _onnx_backend(source, beta, threads, device)
    if not source.exists():
        raise CheckpointError(f"{source} does not exist; pass a checkpoint.pt or an export directory")
    return _torch_backend(source, beta, threads, data_dir, device)


def _predict_one(backend: _Backend, mode: str, file: str | Path) -> Prediction:
    """Read, preprocess and classify one file, timing the network alone; a `BofexitsError` becomes the error."""
    _, h, w = backend.input_shape
    try:
        image = load_image(file, (h, w), mode)
        x = preprocess(image[None], backend.input_shape, backend.mean, backend.std)
        t0 = time.perf_counter()
        logits, index = backend.run(x)
        ms = (time.perf_counter() - t0) * 1e3
    except BofexitsError as exc:
        return Prediction(str(file), error=str(exc))
    k = int(logits[0].argmax())
    conf = float(confidence(logits.astype(np.float32), "max_prob")[0])
    return Prediction(str(file), backend.classes[k], k, index + 1, backend.num_exits, conf, ms)


def predict_files(
    source: str | Path,
    images: Sequence[str | Path],
    *,
    beta: float | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
    device: str | torch.device | None = None,
) -> tuple[list[Prediction], dict[str, Any]]:
    """Classify each image at batch 1 with real early exit; a bad file gets an error, not an exception.

    Args:
        source: a checkpoint file (PyTorch) or an ONNX export folder (onnxruntime).
        images: image files.
        beta: override the knob.
        threads: inference threads.
        data_dir: training data, for a checkpoint without class names or normalisation.
        device: auto, cpu, cuda or cuda:N: the PyTorch model's device, or onnxruntime's
            execution provider (`onnx_providers`); auto is a GPU when one can be used. None: the
            CPU, where a checkpoint loads (the command line's default is auto).

    Returns:
        One `Prediction` per image in order, and a description of the model, rule and device used.
    """
    backend = _open_backend(source, beta=beta, threads=threads, data_dir=data_dir, device=device)
    mode = backend.color_mode
    if mode is None or mode not in ("L", "RGB"):
        raise InputError(
            f"the model reads {backend.input_shape[0]}-channel inputs; predict converts images to L or RGB only"
        )
    c, h, w = backend.input_shape
    backend.run(np.zeros((1, c, h, w), dtype=np.float32))  # warm-up: the first call pays lazy set-up
    out = [_predict_one(backend, mode, file) for file in images]
    about = {
        "source": str(source),
        "backend": backend.name,
        "device": backend.device,
        **backend.rule,
        "num_exits": backend.num_exits,
    }
    return out, about


def format_predictions(
    predictions: Sequence[Prediction], about: dict[str, Any], *, as_json: bool = False
) -> str:
    """One line per image for people, or one JSON object for programs.

    >>> print(format_predictions([Prediction("a.png", "Bag", 8, 1, 4, 0.97, 0.42)], {}))
    a.png: Bag (exit 1 of 4, confidence 0.970, 0.42 ms)
    """
    if as_json:
        return json.dumps({**about, "predictions": [p.to_dict() for p in predictions]}, indent=2)
    lines = []
    for p in predictions:
        if p.error is not None:
            lines.append(f"{p.file}: error: {p.error}")
        else:
            lines.append(
                f"{p.file}: {p.class_name} (exit {p.exit} of {p.num_exits}, confidence {p.confidence:.3f}, "
                f"{p.ms:.2f} ms)"
            )
    return "\n".join(lines)
