"""benchmarks/small_folder.py: the digits folder, one quick run, and what its JSON holds.

The end-to-end tests need scikit-learn (its bundled digits), which the CI venv does not carry:
they skip without it. The missing-package message is checked either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import load_script

small_folder = load_script("small_folder")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One `--quick` run in a temporary folder: (its --out, small_folder.json as read back)."""
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn: pip install scikit-learn")
    out = tmp_path_factory.mktemp("small_folder")
    small_folder.main(["--quick", "--out", str(out)])
    return out, json.loads((out / "small_folder.json").read_text())


def test_missing_scikit_learn_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn...` now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SystemExit, match="pip install scikit-learn"):
        small_folder.build_folder(Path("unused"))


@pytest.mark.slow  # trains a tiny network and compares every policy twice: about 10 s
def test_quick_run_writes_both_calibration_splits(quick: tuple[Path, dict[str, Any]]) -> None:
    out, result = quick
    assert result["quick"] is True and result["levels"] == [0.4, 0.5]
    data = result["data"]
    assert data["num_train"] + data["num_test"] == 1797 and data["num_test"] == result["num_test"] == 360
    for part, n in (("train", data["num_train"]), ("test", data["num_test"])):
        classes = sorted(p.name for p in (out / "digits" / part).iterdir())
        assert classes == [str(d) for d in range(10)]
        assert len(list((out / "digits" / part).glob("*/*.png"))) == n
    assert result["num_train_fit"] + result["num_val"] == data["num_train"]
    assert set(result["splits"]) == {"train", "val"}
    for split, r in result["splits"].items():
        assert r["calibration_split"] == split and r["num_test"] == 360
        assert r["calibration_images"] == (result["num_train_fit"] if split == "train" else result["num_val"])
        assert 0.0 <= r["full_accuracy"] <= 1.0
        assert r["full_accuracy"] == pytest.approx(result["exit_accuracies"][-1])
        assert "proposed" in r["families"] and set(result["baselines"]) <= set(r["families"])
        for family in r["families"].values():
            assert set(family["at"]) == {"0.4", "0.5"}
            for p in [family["knee"], *family["at"].values()]:
                if p is not None:
                    assert 0.0 <= p["accuracy"] <= 1.0 and 0.0 < p["relative_macs"] <= 1.0 + 1e-9
                    assert p["correct"] == round(p["accuracy"] * 360)
            for level, p in family["at"].items():
                assert p is None or p["relative_macs"] <= float(level) + 1e-9
        best = r["best_baseline"]
        assert set(best) >= {"knee", "at", "at_accuracy_difference_pp", "knee_macs_difference_pp"}
        for level, b in best["at"].items():
            mine = r["proposed"]["at"][level]
            if b is not None:  # the best of the baselines at that level, by accuracy
                assert b["policy"] in result["baselines"]
                accs = [r["families"][n]["at"][level] for n in result["baselines"]]
                assert b["accuracy"] == max(a["accuracy"] for a in accs if a is not None)
            if b is not None and mine is not None:
                diff = best["at_accuracy_difference_pp"][level]
                assert diff == pytest.approx(100 * (mine["accuracy"] - b["accuracy"]))
        for key, c in r["paired"].items():  # the library's paired bootstrap, where it computes one
            assert key in ("0.4", "0.5", "knee") and c["rival"] in result["baselines"]
            assert c["images"] == 360 and c["low"] <= c["difference"] <= c["high"]
            if key != "knee" and best["at"][key] is not None:
                assert c["rival"] == best["at"][key]["policy"]
                assert 100 * c["difference"] == pytest.approx(
                    best["at_accuracy_difference_pp"][key], abs=1e-3
                )
    baselines = {n: result["splits"]["train"]["families"][n] for n in result["baselines"]}
    assert baselines == {n: result["splits"]["val"]["families"][n] for n in result["baselines"]}
    text = (out / "small_folder.md").read_text()
    assert "Calibrated on the training split" in text and "Calibrated on the validation split" in text


@pytest.mark.slow
def test_rerun_reuses_folder_and_checkpoint(quick: tuple[Path, dict[str, Any]]) -> None:
    out, first = quick
    again = small_folder.main(["--quick", "--out", str(out)])
    assert again["data"]["reused"] is True and again["wall_s"]["train_reused"] is True
    assert json.loads(json.dumps(again["splits"])) == first["splits"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


@pytest.mark.slow  # trains the quick network a second time
def test_val_calibration_equals_training_with_calibration_split_val(
    quick: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import dataclasses

    from bofexits.training.checkpoint import load_model
    from bofexits.training.loop import train
    from bofexits.training.splits import run_splits

    out, result = quick
    model, stored, cfg = load_model(Path(result["run_dir"]) / "checkpoint.pt")
    fits = small_folder.calibrations_by_split(model, stored, run_splits(cfg)[1])
    trained = train(dataclasses.replace(cfg, calibration_split="val"), tmp_path, progress=False)
    assert set(trained.calibrations) == set(fits["val"])
    for score, cal in trained.calibrations.items():
        mine = fits["val"][score]
        assert cal.num_samples == mine.num_samples == result["num_val"]
        torch.testing.assert_close(cal.quantiles, mine.quantiles, msg=score)
        torch.testing.assert_close(cal.conditional, mine.conditional, msg=score)


def test_foreign_folder_is_refused_not_deleted(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn: pip install scikit-learn")
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a complete digits folder"):
        small_folder.build_folder(tmp_path / "digits")
    assert (tmp_path / "digits" / "mine.txt").read_text() == "keep me"
