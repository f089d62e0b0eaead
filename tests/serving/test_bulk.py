"""`bofexits predict` on folders and globs through the engine: the batch-1 answers, in full batches."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from bofexits.cli import main
from bofexits.deploy.predict import predict_files
from bofexits.serving.bulk import expand_images, predict_images


@pytest.mark.parametrize("source", ["ckpt", "export"])
def test_a_folder_and_a_glob_answer_as_batch_1_does(small_run: dict[str, Any], source: str) -> None:
    folder = small_run["root"] / f"bulk_{source}"
    folder.mkdir()
    for p in small_run["pngs"]:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: skipped
    (folder / "broken.png").write_text("not an image")  # an image suffix: its own error
    files = expand_images([folder])
    assert [f.rsplit("/", 1)[1] for f in files] == [
        "broken.png",
        "img0.png",
        "img1.png",
        "img2.png",
        "img3.png",
    ]
    assert expand_images([str(folder / "img*.png")]) == files[1:]
    got, about = predict_images(small_run[source], [folder], threads=1, max_batch=2)
    want, _ = predict_files(small_run[source], files, threads=1)
    assert [(p.class_index, p.exit) for p in got] == [(p.class_index, p.exit) for p in want]
    assert "not an image" in (got[0].error or "") and all(p.error is None for p in got[1:])
    assert about["max_batch"] == 2 and about["num_exits"] == 4


def test_the_cli_takes_a_quoted_glob(small_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    pattern = str(small_run["root"] / "img*.png")
    assert main(["-q", "predict", str(small_run["export"]), pattern, "--json", "--max-batch", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["predictions"]) == 4 and out["max_batch"] == 3


def test_an_export_is_served_without_torch(small_run: dict[str, Any]) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from bofexits.serving.bulk import predict_images\n"
        f"out, about = predict_images({str(small_run['export'])!r}, [{str(small_run['pngs'][0])!r}], device='auto')\n"
        "assert out[0].error is None and about['backend'] == 'onnxruntime', out\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
