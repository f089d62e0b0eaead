"""Atomic file writes."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bofexits._io import RunLock, RunLockedError, atomic_path, clean_stale_temps, write_json, write_text


def test_write_text(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.txt"
    write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    write_text(target, "second")
    assert target.read_text(encoding="utf-8") == "second"
    assert os.listdir(target.parent) == ["x.txt"]


def test_write_json(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    data = {"a": [1, 2.5], "b": {"c": None}}
    write_json(target, data)
    text = target.read_text()
    assert json.loads(text) == data
    assert text.endswith("\n") and "\n  " in text  # indented


@pytest.mark.parametrize(
    "value,text", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")]
)
def test_write_json_writes_non_finite_as_strings(tmp_path: Path, value: float, text: str) -> None:
    target = tmp_path / "r.json"
    write_json(target, {"t": [value, 1.5], "n": {"x": value}})
    strict = json.loads(target.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert strict == {"t": [text, 1.5], "n": {"x": text}}
    assert os.listdir(tmp_path) == ["r.json"]


def test_write_json_keeps_old_file_on_unserialisable_data(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_bytes(b"new but incomplete")
            assert target.read_bytes() == b"old"  # not visible before the block ends
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_path_tolerates_writer_removing_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    with pytest.raises(FileNotFoundError):
        with atomic_path(target) as tmp:
            tmp.unlink()
    assert os.listdir(tmp_path) == []


def test_write_text_failure_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.txt"
    write_text(target, "old")

    def fail(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError("no space")

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError, match="no space"):
        write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_written_files_honour_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "x.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    plain = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == plain == 0o644


def test_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=rf"in use by process {os.getpid()} on .*pick another --out"):
            with RunLock(tmp_path / "run"):
                pass
    with RunLock(tmp_path / "run"):  # released on exit
        pass


def test_lock_of_a_killed_process_is_taken_over_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = (
        "import sys, time; from bofexits._io import RunLock; RunLock(sys.argv[1]).__enter__(); "
        "print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"process {proc.pid}"):
            RunLock(tmp_path).__enter__()
    finally:
        proc.kill()
        proc.wait()
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        pass
    assert f"stale lock on {tmp_path} left by process {proc.pid}" in caplog.text


def test_clean_stale_temps_removes_only_atomic_write_leftovers(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "checkpoint.pt").write_bytes(b"whole")
    (tmp_path / "notes.tmp.txt").write_text("keep")
    assert [p.name for p in clean_stale_temps(tmp_path)] == [".checkpoint.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "notes.tmp.txt"]
