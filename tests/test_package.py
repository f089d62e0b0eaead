"""The package root: every public name resolves, lazily, and `import bofexits` alone needs no torch;
the built wheel is complete, builds without warnings, installs into a fresh environment and runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bofexits


def test_every_public_name_resolves() -> None:
    for name in bofexits.__all__:
        assert getattr(bofexits, name) is not None, name
    assert "AdaptiveRuntime" in dir(bofexits)


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        bofexits.not_a_name  # noqa: B018
    except AttributeError as exc:
        assert "not_a_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_alone_loads_no_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import bofexits, bofexits.deploy.runner; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_type_checking_imports_match_the_exports() -> None:
    # The names type checkers see are the names `__getattr__` serves, from the same modules.
    import ast
    from pathlib import Path

    tree = ast.parse(Path(bofexits.__file__).read_text())
    guard = next(n for n in tree.body if isinstance(n, ast.If))
    seen = {
        alias.name: node.module
        for node in guard.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == bofexits._HOME


# --- the built wheel ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "bofexits"


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, **kwargs)


def _build_wheel(out: Path) -> tuple[Path, str]:
    """A wheel built from a clean copy of the sources (no build/ or egg-info left in the repo)."""
    import shutil

    need = re.search(r'requires = \["setuptools>=(\d+)', (ROOT / "pyproject.toml").read_text())
    assert need is not None, "pyproject.toml's build-system must require setuptools>=N"
    import setuptools

    have = int(setuptools.__version__.split(".")[0])
    assert have >= int(need.group(1)), (
        f"setuptools {setuptools.__version__} builds this environment's wheels but pyproject.toml needs "
        f">={need.group(1)}: pip install 'setuptools>={need.group(1)}'"
    )
    tree = out / "source"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # No build isolation: setuptools comes from this environment (checked above), nothing is fetched.
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(out / "dist"), str(tree)]
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-3000:]
    wheels = list((out / "dist").glob("bofexits-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], log


@pytest.mark.slow
def test_the_wheel_builds_cleanly_installs_and_runs(tmp_path: Path) -> None:
    import sysconfig
    import zipfile

    import torch
    from PIL import Image

    from bofexits.config import ModelConfig
    from bofexits.deploy.onnx import export_onnx
    from bofexits.deploy.predict import predict_files
    from bofexits.models.build import build_model
    from bofexits.policies import ExitCalibration

    wheel, log = _build_wheel(tmp_path)
    warned = [line.strip() for line in log.splitlines() if "deprecat" in line.lower()]
    assert warned == [], "the build warns:\n" + "\n".join(warned)

    # Every module of every subpackage (each __init__.py included), the typing marker and the licence.
    names = set(zipfile.ZipFile(wheel).namelist())
    in_src = {
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    missing = sorted(in_src - names)
    assert missing == [], f"not in the wheel: {missing}"
    subpackages = {n.rsplit("/", 1)[0] for n in in_src}
    assert {"bofexits/models", "bofexits/policies", "bofexits/deploy"} <= subpackages
    assert "bofexits/py.typed" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    # A fresh environment with the wheel installed; the dependencies come from this one's site-packages
    # through PYTHONPATH, which does not run .pth files, so the repository's editable install stays out.
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    py, cli = venv / "bin" / "python", venv / "bin" / "bofexits"
    install = _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)]
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    where = _run([str(py), "-c", "import bofexits.models.bof as m; print(m.__file__)"], env=env, cwd=tmp_path)
    assert where.returncode == 0 and where.stdout.startswith(str(venv)), where.stdout + where.stderr
    helped = _run([str(cli), "train", "--help"], env=env, cwd=tmp_path)
    assert helped.returncode == 0 and "--dataset" in helped.stdout, helped.stderr

    # `bofexits predict` from the installed wheel on a small ONNX export gives the repository's answers.
    torch.manual_seed(0)
    net = build_model(ModelConfig(widths=[4, 8, 8, 16], codewords=8)).eval()
    with torch.no_grad():
        cal = ExitCalibration.fit(net(torch.randn(64, 1, 28, 28))[:-1], "max_prob")
    export = export_onnx(
        net, tmp_path / "export", calibration=cal, beta=0.5, variant="quantile", exporter="legacy"
    )
    rng = np.random.default_rng(0)
    pngs = []
    for i in range(3):
        pngs.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(pngs[-1])
    predicted = _run(
        [str(cli), "predict", str(export), *map(str, pngs), "--json", "--threads", "1"], env=env, cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    got = json.loads(predicted.stdout)["predictions"]
    want, _ = predict_files(export, pngs, threads=1)
    assert [(p["class_index"], p["exit"]) for p in got] == [(p.class_index, p.exit) for p in want]
