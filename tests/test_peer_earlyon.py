"""benchmarks/peers/earlyon.py --quick end to end on a tiny checkpoint and fake Fashion-MNIST.

Skipped where the outside toolkit `earlyon` is not importable (the project's .venv does not carry
it; benchmarks/peers/requirements-earlyon.txt builds the venv that does)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("earlyon")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "earlyon.py"


def _load_script() -> object:
    spec = importlib.util.spec_from_file_location("earlyon_peer_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json_and_table(
    tmp_path: Path, write_fake_data: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import write_tiny_checkpoint

    data = write_fake_data(tmp_path / "data", n_train=200, n_test=60)
    checkpoint = write_tiny_checkpoint(tmp_path / "run" / "checkpoint.pt", data)
    peer = _load_script()
    assert peer.EARLYON_ERROR is None  # type: ignore[attr-defined]
    out = tmp_path / "bench"
    argv = [str(checkpoint), "--quick", "--threads", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["earlyon.py", *argv])
    peer.main()  # type: ignore[attr-defined]
    result = json.loads((out / "earlyon.json").read_text())
    assert result["versions"]["earlyon"] == "0.3.0"
    assert set(result["targets"]) == {"accuracy drop <= 0.5 pp", "compute budget 50 %"}
    for target in result["targets"].values():
        assert len(target["earlyon_head_macs"]) == 3 and all(m > 0 for m in target["earlyon_head_macs"])
        for lib in ("bofexits", "earlyon"):
            side = target[lib]
            assert 0.0 <= side["accuracy"] <= 1.0 and 0.0 <= side["balance"] <= 1.0
            assert len(side["exit_fractions"]) == 4 and sum(side["exit_fractions"]) == pytest.approx(1.0)
            assert (
                side["relative_macs"] > 0 and side["batch1_mean_ms"] > 0 and side["batched_images_per_s"] > 0
            )
            assert side["batch1_p95_ms"] > 0 and isinstance(side["target_met"], bool)
    assert result["plain"]["batch1_mean_ms"] > 0 and result["commands"][-1].endswith("--out " + str(out))
    text = (out / "earlyon.md").read_text()
    assert "| measure | bofexits | earlyon | better |" in text and "## compute budget 50 %" in text
