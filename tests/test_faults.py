"""Faults (issue 15, part 4): kills in the middle of a write, full disk, read-only folder, moved run folder.

A kill is made deterministic by tests/fault_child.py, which runs ``uncol train`` in a child process and
SIGKILLs it right after part of a chosen file's temporary copy is on disk. The killed run is resumed and
must end with exactly the weights of an uninterrupted run; a partial file is never loaded. Full disk and
read-only folders are simulated by making the write raise ``OSError(ENOSPC / EROFS)`` (tests run as root
here, where ``chmod`` does not bind; the chmod variant runs for other users).
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import uncol
import uncol.atomic
from fake_teacher import FakeTeacher
from fixtures_data import make_hdf5_dataset
from uncol import teachers
from uncol.atomic import is_temporary
from uncol.cli import main
from uncol.config import Config, DataConfig, config_from_dict
from uncol.engine import Trainer
from uncol.errors import OutputError
from uncol.runs import RunPaths, load_run_config, read_checkpoint

CHILD = Path(__file__).resolve().parent / "fault_child.py"
LAYERS = ["stage1", "stage2", "neck", "fused"]


def tiny_config(root: Path, data: DataConfig, method: str = "supervised") -> Config:
    """12 steps of a tiny 2D run: checkpoints at steps 4, 8, 12, validation at 6 and 12."""
    values: dict[str, Any] = {
        "name": method,
        "output_dir": str(root / "runs"),
        "data": dataclasses.asdict(data) | {"normalize": "zscore"},
        "split": {"labeled": 2},
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "augment": {"rotate_degrees": 10.0},
        "train": {"iterations": 12, "batch_size": 2, "patch_size": [32, 32], "val_every": 6,
                  "checkpoint_every": 4, "log_every": 1, "threads": 1, "lr": 0.01, "device": "cpu"},
    }
    if method == "uncol":  # the UnCoL student with the stand-in foundation teacher (tests/fake_teacher.py)
        values["model"] = {"arch": "uncol_student2d", "channels": [8, 16, 32], "vit_patch": 4, "vit_dim": 24,
                           "vit_heads": 2, "vit_depth": 4, "context_dims": [8]}
        values["method"] = {"name": "uncol", "uncol": {"unlabeled_batch_size": 2, "stage1_fraction": 0.5}}
        values["teacher"] = {"name": "litemedsam", "layers": LAYERS, "token_grid": 8, "prompt": "box", "min_pixels": 2}
        values["augment"] = {"flip": True, "rotate90": True, "rotate_degrees": 0.0}
    return config_from_dict(values)


def fake_factory(tc: Any) -> FakeTeacher:
    return FakeTeacher(layers=tc.layers, token_grid=tc.token_grid, size=64)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    return make_hdf5_dataset(tmp_path_factory.mktemp("faults") / "data", n_train=4, n_val=1, n_test=1, slices=3,
                             shape=(32, 32), num_classes=3)


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, data: DataConfig) -> Iterator[dict[str, Path]]:
    """Uninterrupted runs (final weights) of each method, trained in this process."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("reference")
    saved = teachers.TEACHER_FACTORIES["litemedsam"]
    teachers.TEACHER_FACTORIES["litemedsam"] = fake_factory
    try:
        out = {}
        for method in ("supervised", "uncol"):
            cfg = tiny_config(root / method, data, method)
            Trainer(cfg, root / method / "run", show_progress=False).fit()
            out[method] = RunPaths(root / method / "run").final
        yield out
    finally:
        teachers.TEACHER_FACTORIES["litemedsam"] = saved
        torch.set_num_threads(threads)


@pytest.fixture
def fake_teacher_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(teachers.TEACHER_FACTORIES, "litemedsam", fake_factory)


def same_weights(a: Path, b: Path) -> None:
    wa = torch.load(a, map_location="cpu", weights_only=True)["network"]
    wb = torch.load(b, map_location="cpu", weights_only=True)["network"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"weights differ at {k}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temporaries(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if is_temporary(f))


def run_child(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, str(CHILD), *args], env=full_env, capture_output=True, text=True,
                          timeout=300)


# ----------------------------------------------------------------------------------------------------------
# SIGKILL in the middle of a write, then resume


KILL_POINTS = {
    # name: (method, file glob, n-th write of it, fraction written when killed)
    "latest.pt at step 8": ("supervised", "latest.pt", 2, 0.5),
    "best.pt at step 6": ("supervised", "best.pt", 1, 0.3),
    "teacher cache entry": ("uncol", "*.feat", 3, 0.5),
}
#: A child process takes 10-25 s on the shared 2-core machine (imports): two kill points in the default suite.
SLOW_POINTS = {"best.pt at step 6"}


@pytest.mark.parametrize(
    "point", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW_POINTS else p for p in KILL_POINTS]
)
def test_kill_in_the_middle_of_a_write_then_resume_gives_identical_weights(
    tmp_path: Path, data: DataConfig, references: dict[str, Path], fake_teacher_in_process: None, point: str
) -> None:
    method, glob, nth, fraction = KILL_POINTS[point]
    cfg = tiny_config(tmp_path, data, method)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.to_yaml())
    log = tmp_path / "writes.jsonl"
    env = {"UNCOL_FAULT_KILL": f"{glob}:{nth}:{fraction}", "UNCOL_FAULT_LOG": str(log), "UNCOL_FAULT_FAKE_TEACHER": "1"}
    killed = run_child(["train", str(cfg_file), "--no-eval", "--quiet"], env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    run = tmp_path / "runs" / method
    paths = RunPaths(run)
    written = {json.loads(line)["sha256"] for line in log.read_text().splitlines()}
    partial = temporaries(tmp_path / "runs")
    assert len(partial) == 1 and fnmatch.fnmatch(partial[0].name, f".{glob}.*.tmp"), partial
    assert sha256(partial[0]) not in written, "the kill should leave a partial temporary file"
    if paths.latest.exists():  # the checkpoint to resume from is a complete one, as written
        assert sha256(paths.latest) in written
        assert read_checkpoint(paths.latest)["step"] == 4
    assert not paths.final.exists()

    uncol.train(run, resume=True, evaluate_splits=(), show_progress=False)
    same_weights(references[method], paths.final)
    # The run folder's leftovers are removed when training starts again; the teacher cache, shared by
    # writers that may be at work, keeps its stray file, which no reader ever opens.
    assert [f for f in temporaries(tmp_path / "runs") if run in f.parents] == []
    if method == "uncol":
        assert temporaries(tmp_path / "runs") == partial


@pytest.mark.slow
def test_kill_during_the_final_write_and_resume_from_the_command_line(
    tmp_path: Path, data: DataConfig, references: dict[str, Path]
) -> None:
    cfg = tiny_config(tmp_path, data)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.to_yaml())
    log = tmp_path / "writes.jsonl"
    killed = run_child(["train", str(cfg_file), "--no-eval", "--quiet"],
                       {"UNCOL_FAULT_KILL": "final.pt:1:0.5", "UNCOL_FAULT_LOG": str(log)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = tmp_path / "runs" / "supervised"
    resumed = run_child(["train", str(run), "--resume", "--no-eval", "--quiet"], {"UNCOL_FAULT_LOG": str(log)})
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    written = {e["sha256"] for e in events if e["event"] == "written"}
    loaded = [e for e in events if e["event"] == "loaded"]
    assert loaded and all(e["ok"] and e["sha256"] in written for e in loaded)
    same_weights(references["supervised"], RunPaths(run).final)


# ----------------------------------------------------------------------------------------------------------
# Full disk, read-only folder


def failing_write(
    monkeypatch: pytest.MonkeyPatch, name: str, nth: int, code: int
) -> Callable[[], int]:
    """Make the ``nth`` atomic write of files named ``name`` fail with ``OSError(code)`` half-way through."""
    real = uncol.atomic.atomic_write
    seen = {"n": 0}

    def write(path: str | Path, writer: Callable[[Path], None]) -> Path:
        if Path(path).name != name:
            return real(path, writer)
        seen["n"] += 1

        def half_then_fail(tmp: Path) -> None:
            writer(tmp)
            if seen["n"] == nth:
                with open(tmp, "r+b") as fh:
                    fh.truncate(tmp.stat().st_size // 2)
                raise OSError(code, os.strerror(code), str(tmp))

        return real(path, half_then_fail)

    monkeypatch.setattr(uncol.atomic, "atomic_write", write)
    return lambda: seen["n"]


def test_full_disk_during_a_checkpoint_names_it_and_keeps_the_last_one(
    tmp_path: Path, data: DataConfig, references: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tiny_config(tmp_path, data)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.to_yaml())
    failing_write(monkeypatch, "latest.pt", 2, errno.ENOSPC)
    assert main(["train", str(cfg_file), "--no-eval", "--quiet"]) == 2
    err = capsys.readouterr().err
    paths = RunPaths(tmp_path / "runs" / "supervised")
    assert f"{paths.latest}: cannot write: no space left" in err and "Traceback" not in err
    assert read_checkpoint(paths.latest)["step"] == 4  # the last good checkpoint, whole
    assert temporaries(paths.root) == []  # the half-written temporary file is gone
    monkeypatch.undo()  # space freed: the run continues to the weights of an uninterrupted one
    uncol.train(paths.root, resume=True, evaluate_splits=(), show_progress=False)
    same_weights(references["supervised"], paths.final)


def test_full_disk_outside_the_atomic_writers_is_named_too(
    tmp_path: Path, data: DataConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log line appended on a full disk: the command line names the file, no traceback."""
    from uncol import engine

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(tiny_config(tmp_path, data).to_yaml())

    def full(self: Any, row: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(engine.CsvLog, "write", full)
    assert main(["train", str(cfg_file), "--no-eval", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "log.csv: cannot write: no space left" in err and "Traceback" not in err


def test_read_only_output_folder_is_refused_before_training_and_keeps_the_checkpoint(
    tmp_path: Path, data: DataConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tmp_path, data)
    run = tmp_path / "runs" / "supervised"
    Trainer(cfg, run, show_progress=False, stop_after=5, checkpoint_on_stop=True).fit()
    before = sha256(RunPaths(run).latest)
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(uncol.atomic.os, "open", read_only)  # the filesystem was remounted read-only
    with pytest.raises(OutputError, match=r"config\.yaml: cannot write: the folder is on a read-only") as e:
        Trainer(cfg, run, resume=True, show_progress=False).fit()
    assert e.value.errno == errno.EROFS and e.value.path == RunPaths(run).config
    assert sha256(RunPaths(run).latest) == before and temporaries(run) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder: simulated in the test above")
def test_read_only_output_folder_with_chmod(tmp_path: Path, data: DataConfig) -> None:
    cfg = tiny_config(tmp_path, data)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied") as e:
            Trainer(cfg, out / "supervised", show_progress=False).fit()
        assert str(out / "supervised") in str(e.value)
        assert not (out / "supervised").exists()
    finally:
        out.chmod(0o755)


# ----------------------------------------------------------------------------------------------------------
# A run folder moved to another place


def test_a_moved_run_folder_evaluates_predicts_and_resumes(
    tmp_path: Path, data: DataConfig, references: dict[str, Path]
) -> None:
    cfg = tiny_config(tmp_path / "old", data)
    old = tmp_path / "old" / "runs" / "supervised"
    uncol.train(cfg, stop_after=8, show_progress=False)  # best.pt at step 6, latest.pt at step 8
    moved = tmp_path / "elsewhere" / "runs" / "supervised"
    moved.parent.mkdir(parents=True)
    shutil.move(str(old), str(moved))
    shutil.rmtree(tmp_path / "old")  # another machine: nothing is left at the old place

    assert load_run_config(moved).output_dir == str(moved.parent)
    # the default teacher cache is looked for beside the moved folder, not at the old place
    assert teachers.cache_root(load_run_config(moved)) == moved.parent / "teacher_cache"
    res = uncol.evaluate(moved, "test", show_progress=False)
    assert (moved / "metrics_test.json").exists() and res["split"] == "test" and "mean" in res["summary"]
    image = sorted(Path(data.root).rglob("*.h5"))[0]
    pred = uncol.predict(moved, [image], tmp_path / "masks", show_progress=False)
    assert pred.ok and not pred.failures

    assert main(["train", str(moved), "--resume", "--no-eval", "--quiet"]) == 0
    same_weights(references["supervised"], RunPaths(moved).final)
    assert not (tmp_path / "old").exists(), "something was written at the run folder's old place"
    # Nothing in the folder names its old place: data paths (splits.json) name the dataset, as written.
    for f in moved.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".yaml", ".csv"):
            assert str(tmp_path / "old") not in f.read_text(), f
    assert json.loads(RunPaths(moved).summary.read_text())["run_dir"] == "."


def test_a_log_row_torn_by_a_kill_is_dropped_on_resume(tmp_path: Path) -> None:
    """``log.csv`` is appended to, not written atomically: a row cut short ("13,..." as "1") is dropped."""
    from uncol.engine import CsvLog

    log = tmp_path / "log.csv"
    log.write_bytes(b"step,loss\r\n1,0.5\r\n2,0.4\r\n1")
    CsvLog(log, resume_step=2)
    assert log.read_text().splitlines() == ["step,loss", "1,0.5", "2,0.4"]


def test_full_disk_in_the_teacher_cache_names_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import uncol.teachers.cache as cache_module
    from uncol.teachers.cache import FeatureCache

    real = uncol.atomic.atomic_write

    def full(path: str | Path, writer: Callable[[Path], None]) -> Path:
        def half_then_fail(tmp: Path) -> None:
            writer(tmp)
            with open(tmp, "r+b") as fh:
                fh.truncate(tmp.stat().st_size // 2)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

        return real(path, half_then_fail)

    monkeypatch.setattr(cache_module, "atomic_write", full)
    cache = FeatureCache(FakeTeacher(size=64, token_grid=4), tmp_path / "cache")
    image = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    with pytest.raises(OutputError, match="no space left") as e:
        cache.warm([image])
    assert e.value.path.suffix == ".feat" and str(tmp_path / "cache") in str(e.value)
    assert temporaries(tmp_path) == [] and list((tmp_path / "cache").rglob("*.feat")) == []
