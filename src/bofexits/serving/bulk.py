"""`bofexits predict` on many images (files, folders, globs) through the serving engine.

Offline bulk inference is the server's case with every request arriving at once: the images
enter stage 1's queue together and the engine runs full stage batches, re-batching the
survivors at every exit, where one-at-a-time inference would run batch 1 throughout. Images
are read and preprocessed as `bofexits.deploy.predict` reads them (`load_image`, `preprocess`),
in chunks, so a large folder does not sit in memory at once. A file that cannot be read gets
its own error; the others are answered.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bofexits.deploy.predict import Prediction, load_image
from bofexits.deploy.runner import preprocess
from bofexits.errors import BofexitsError, InputError
from bofexits.serving.engine import Answer, Engine
from bofexits.serving.load import open_stages

__all__ = ["IMAGE_SUFFIXES", "expand_images", "predict_images"]

#: Files a folder contributes (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_CHUNK = 1024  # images read and queued at a time


def expand_images(items: Sequence[str | Path]) -> list[str]:
    """Files from paths, folders (their image files, sorted, not recursive) and glob patterns (sorted).

    A path that is neither a folder nor a pattern stays as given, so a missing file gets its
    own error later.
    """
    out: list[str] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            out.extend(
                str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif glob.has_magic(text):
            out.extend(sorted(glob.glob(text)))
        else:
            out.append(text)
    return out


def predict_images(
    source: str | Path,
    images: Sequence[str | Path],
    *,
    beta: float | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    max_batch: int = 32,
) -> tuple[list[Prediction], dict[str, Any]]:
    """Classify every image with real early exit, in full stage batches; a bad file gets an error.

    Args:
        source: a checkpoint file (PyTorch) or an ONNX export folder (onnxruntime).
        images: files, folders or glob patterns (`expand_images`).
        beta, threads, data_dir, device: as for `bofexits.deploy.predict.predict_files`.
        max_batch: most samples per stage batch.

    Returns:
        One `Prediction` per image in order (`ms`: the chunk's engine time per image, the
        amortised cost in bulk), and a description of the model, rule and device used.
    """
    backend = open_stages(source, beta=beta, threads=threads, data_dir=data_dir, device=device)
    facts = backend.facts
    mode = facts.color_mode
    if mode is None:
        raise InputError(
            f"the model reads {facts.input_shape[0]}-channel inputs; predict reads L or RGB images only"
        )
    files = expand_images(images)
    engine = Engine(backend, max_batch=max_batch, max_wait_ms=0, max_queue=max(_CHUNK, 1))
    _, h, w = facts.input_shape
    warm = np.zeros((1, *facts.input_shape), dtype=np.float32)  # the first call pays lazy set-up
    engine.submit(warm, lambda row, answer: None)
    engine.run_until_idle()
    out: list[Prediction] = []
    for start in range(0, len(files), _CHUNK):
        chunk = files[start : start + _CHUNK]
        found: dict[int, Prediction] = {}
        rows, arrays = [], []
        for k, file in enumerate(chunk):
            try:
                arrays.append(load_image(file, (h, w), mode))
                rows.append(k)
            except BofexitsError as exc:
                found[k] = Prediction(file, error=str(exc))
        if arrays:
            x = preprocess(np.stack(arrays), facts.input_shape, facts.mean, facts.std)
            answers: dict[int, Answer | BaseException] = {}
            t0 = time.perf_counter()
            engine.submit(x, answers.__setitem__)
            engine.run_until_idle()
            ms = 1e3 * (time.perf_counter() - t0) / len(rows)
            for row, k in enumerate(rows):
                found[k] = _prediction(chunk[k], answers[row], facts.classes, ms)
        out.extend(found[k] for k in range(len(chunk)))
    about = {
        "source": str(source),
        "backend": facts.backend,
        "device": facts.device,
        "score": facts.score,
        "variant": facts.variant,
        "beta": backend.beta,
        "num_exits": backend.num_exits,
        "max_batch": max_batch,
    }
    return out, about


def _prediction(file: str, answer: Answer | BaseException, classes: list[str], ms: float) -> Prediction:
    if not isinstance(answer, Answer):
        return Prediction(file, error=str(answer))
    k = answer.class_index
    return Prediction(file, classes[k], k, answer.exit, answer.num_exits, answer.confidence, ms)
