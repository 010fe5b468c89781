"""The training engine: end-to-end runs, resumption (in-process and after SIGKILL), run-folder checks."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fixtures_data import make_hdf5_dataset, make_nifti_dataset
from uncol.config import Config, config_from_dict
from uncol.engine import Trainer
from uncol.errors import ConfigError, UncolError
from uncol.runs import RunPaths, load_weights


def tiny_2d_config(tmp_path: Path, **train: object) -> Config:
    data = make_hdf5_dataset(tmp_path / "data", n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3)
    values = {
        "name": "tiny2d",
        "output_dir": str(tmp_path / "runs"),
        "data": dataclasses.asdict(data) | {"normalize": "zscore"},
        "split": {"labeled": 2},
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "augment": {"rotate_degrees": 10.0},
        "train": {
            "iterations": 12, "batch_size": 2, "patch_size": [32, 32], "val_every": 6,
            "checkpoint_every": 4, "log_every": 1, "threads": 1, "lr": 0.01, "device": "cpu",
        }
        | train,
    }
    return config_from_dict(values)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["network"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"weights differ at {k}"


def test_train_writes_a_complete_run_folder(tmp_path):
    cfg = tiny_2d_config(tmp_path)
    run = tmp_path / "runs" / "tiny2d"
    summary = Trainer(cfg, run, show_progress=False).fit()
    p = RunPaths(run)
    for f in (p.config, p.splits, p.log_csv, p.val_csv, p.latest, p.best, p.final, p.summary):
        assert f.exists(), f
    assert any(p.tensorboard.iterdir())
    assert summary.steps_done == 12
    assert summary.best_step in (6, 12)
    rows = p.log_csv.read_text().strip().splitlines()
    assert rows[0].startswith("step,lr,time_s,loss") and len(rows) == 13
    assert len(p.val_csv.read_text().strip().splitlines()) == 3  # header + steps 6 and 12
    cfg_back, net, meta = load_weights(run, "best")
    assert cfg_back == cfg and meta["step"] == summary.best_step


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    cfg = tiny_2d_config(tmp_path)
    ref = tmp_path / "runs" / "ref"
    Trainer(cfg, ref, show_progress=False).fit()

    run = tmp_path / "runs" / "interrupted"
    # Stop after step 7: the last checkpoint is at step 4, so steps 5-7 are redone after resuming,
    # exactly as after a kill between two checkpoints.
    first = Trainer(cfg, run, show_progress=False, stop_after=7).fit()
    assert first.steps_done == 7 and not RunPaths(run).final.exists()
    Trainer(cfg, run, resume=True, show_progress=False).fit()
    assert_same_weights(RunPaths(ref).final, RunPaths(run).final)
    # the log has each step once, with the same losses as the uninterrupted run
    assert RunPaths(ref).log_csv.read_text().count("\n") == RunPaths(run).log_csv.read_text().count("\n")
    ref_losses = [r.split(",")[3] for r in RunPaths(ref).log_csv.read_text().splitlines()[1:]]
    run_losses = [r.split(",")[3] for r in RunPaths(run).log_csv.read_text().splitlines()[1:]]
    assert ref_losses == run_losses


def test_existing_run_needs_resume_and_same_config(tmp_path):
    cfg = tiny_2d_config(tmp_path, iterations=4)
    run = tmp_path / "runs" / "r"
    Trainer(cfg, run, show_progress=False).fit()
    with pytest.raises(UncolError, match="--resume"):
        Trainer(cfg, run, show_progress=False).fit()
    changed = config_from_dict(cfg.to_dict(), ["train.lr=0.5"])
    with pytest.raises(ConfigError, match="train.lr"):
        Trainer(changed, run, resume=True, show_progress=False).fit()
    # speed-only options may change on resume
    Trainer(config_from_dict(cfg.to_dict(), ["train.threads=2"]), run, resume=True, show_progress=False).fit()


def test_corrupt_checkpoint_is_reported(tmp_path):
    cfg = tiny_2d_config(tmp_path, iterations=4)
    run = tmp_path / "runs" / "r"
    cfg = config_from_dict(cfg.to_dict(), ["train.checkpoint_every=1"])
    Trainer(cfg, run, show_progress=False, stop_after=2).fit()
    RunPaths(run).latest.write_bytes(b"not a checkpoint")
    with pytest.raises(UncolError, match="latest.pt: unreadable checkpoint"):
        Trainer(cfg, run, resume=True, show_progress=False).fit()


def test_killed_process_resumes_to_identical_weights(tmp_path):
    """SIGKILL a real `uncol train` process mid-run, resume it, compare with an uninterrupted run."""
    cfg = tiny_2d_config(tmp_path, iterations=150, checkpoint_every=5, val_every=50)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "uncol.cli", "train", str(cfg_file), "--no-eval", "--quiet"]

    killed = tmp_path / "runs" / "killed"
    proc = subprocess.Popen([*cmd, "--set", f"name={killed.name}"], env=env, stderr=subprocess.PIPE)
    latest = RunPaths(killed).latest
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere between two checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not RunPaths(killed).final.exists(), "the run finished before it could be killed"

    subprocess.run([*cmd, "--set", f"name={killed.name}", "--resume"], env=env, check=True)
    ref = tmp_path / "runs" / "ref"
    subprocess.run([*cmd, "--set", f"name={ref.name}"], env=env, check=True)
    assert_same_weights(RunPaths(ref).final, RunPaths(killed).final)


def test_3d_training_evaluation_and_prediction_keep_geometry(tmp_path):
    import nibabel as nib

    from uncol.api import evaluate, predict

    data = make_nifti_dataset(tmp_path / "nifti", n_cases=6, shape=(20, 20, 12), num_classes=3, n_test=0)
    cfg = config_from_dict(
        {
            "name": "tiny3d",
            "output_dir": str(tmp_path / "runs"),
            "data": dataclasses.asdict(data),
            "split": {"val_fraction": 0.2, "test_fraction": 0.2, "labeled": 1.0, "labeled_order": "random"},
            "model": {"arch": "unet3d", "channels": [4, 8, 16]},
            "train": {"iterations": 6, "batch_size": 2, "patch_size": [16, 16, 8], "val_every": 3, "threads": 1,
                      "device": "cpu"},
            "eval": {"sw_batch_size": 2},
        }
    )
    run = tmp_path / "runs" / "tiny3d"
    Trainer(cfg, run, show_progress=False).fit()
    res = evaluate(run, "test", show_progress=False)
    assert res["split"] == "test" and res["convention"] == "standard"
    assert set(res["summary"]) == {"1", "2", "mean"}
    assert len(res["cases"]) >= 1
    assert (run / "metrics_test.json").exists()

    src = sorted((Path(data.root) / data.images_dir).glob("*.nii.gz"))[0]
    out = predict(run, [src], tmp_path / "pred", show_progress=False)
    assert out.ok and not out.failures
    ref_img, pred_img = nib.load(src), nib.load(out.masks[0])
    assert pred_img.shape == ref_img.shape[:3]
    assert (pred_img.affine == ref_img.affine).all()
    assert pred_img.header.get_zooms()[:3] == ref_img.header.get_zooms()[:3]


def test_training_in_chunks_with_stop_after_matches_one_run(tmp_path):
    import uncol

    cfg = tiny_2d_config(tmp_path)
    ref = tmp_path / "ref"
    Trainer(cfg, ref, show_progress=False).fit()
    run = tmp_path / "run"
    out = uncol.train(cfg, stop_after=5, show_progress=False, run_dir=run)  # 5: not a checkpoint step
    assert out["train"]["steps_done"] == 5 and "test" not in out
    assert torch.load(RunPaths(run).latest, map_location="cpu", weights_only=False)["step"] == 5
    uncol.train(cfg, resume=True, show_progress=False, run_dir=run, evaluate_splits=())
    assert_same_weights(RunPaths(ref).final, RunPaths(run).final)
