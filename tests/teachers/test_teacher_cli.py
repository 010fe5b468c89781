"""`uncol teacher cache` and `uncol teacher zero-shot` end to end on tiny datasets (stand-in teacher)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from fixtures_data import make_hdf5_dataset, make_image2d_dataset, make_nifti_dataset
from uncol import teachers
from uncol.cli import main
from uncol.config import load_config
from uncol.data.training import SampleSet
from uncol.errors import ConfigError
from uncol.teachers.zero_shot import split_cases


def _config(path: Path, data_cfg, out: Path, **sections) -> Path:
    values = {
        "name": "t",
        "output_dir": str(out),
        "data": dataclasses.asdict(data_cfg),
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "train": {"patch_size": [32, 32], "threads": 1, "device": "cpu"},
        "teacher": {"name": "litemedsam", "device": "cpu"},
    }
    for k, v in sections.items():
        values[k] = {**values.get(k, {}), **v}
    path.write_text(yaml.safe_dump(values))
    return path


def test_cache_command_encodes_the_training_samples(tmp_path, use_fake, capsys):
    data = make_image2d_dataset(tmp_path / "img", n_cases=5, n_unlabeled=2)
    cfg_path = _config(tmp_path / "c.yaml", data, tmp_path / "runs", split={"labeled": 2, "val_fraction": 0.2, "test_fraction": 0.2})
    assert main(["teacher", "cache", str(cfg_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 already cached" in out and "feat:" in out
    cfg = load_config(cfg_path)
    n_train = len(split_cases(cfg, "train"))
    assert f"{n_train} image(s)" in out and use_fake[0].encoded_images == n_train
    # exactly the arrays training looks up: the resized, normalised samples are cache hits now
    cache = teachers.open_cache(cfg, use_fake[0])
    samples = SampleSet(split_cases(cfg, "train"), cfg, use_labels=False).samples
    assert all(cache.contains(s.image) for s in samples)
    assert main(["teacher", "cache", str(cfg_path), "--quiet"]) == 0
    assert f"0 computed, {n_train} already cached" in capsys.readouterr().out
    assert (tmp_path / "runs" / "teacher_cache" / "fake").is_dir()


def test_zero_shot_on_hdf5_volumes(tmp_path, use_fake, capsys):
    data = make_hdf5_dataset(tmp_path / "acdc", n_train=2, n_val=1, n_test=2, slices=3, shape=(32, 32), num_classes=3)
    cfg_path = _config(tmp_path / "c.yaml", data, tmp_path / "runs")
    assert main(["teacher", "zero-shot", str(cfg_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "standard convention" in out and "medpy convention" in out
    report = json.loads((tmp_path / "runs" / "t_zero_shot" / "zero_shot_test.json").read_text())
    assert report["meta"]["cases"] == 2 and report["meta"]["cache"]["misses"] > 0
    # the stand-in segments each blob as its box: an ellipse fills about pi/4 of its box
    for conv in ("standard", "medpy"):
        assert 0.6 < report[conv]["summary"]["mean"]["dice"]["mean"] < 0.95
    encoded = use_fake[0].encoded_images
    # `teacher cache --split test` warms exactly what zero-shot reads (embeddings included)
    assert main(["teacher", "cache", str(cfg_path), "--split", "test", "--quiet"]) == 0
    assert "0 computed" in capsys.readouterr().out and use_fake[-1].encoded_images == 0
    # a second run with jitter reuses the cached embeddings: no encoder pass at all
    assert main(["teacher", "zero-shot", str(cfg_path), "--quiet", "--jitter", "20", "--convention", "standard"]) == 0
    assert use_fake[-1].encoded_images == 0 and encoded > 0
    assert (tmp_path / "runs" / "t_zero_shot" / "zero_shot_test_jitter20.json").is_file()


def test_zero_shot_nifti_largest_slices_and_max_cases(tmp_path, use_fake):
    data = make_nifti_dataset(tmp_path / "hip", n_cases=10, shape=(12, 20, 8))
    cfg_path = _config(tmp_path / "c.yaml", data, tmp_path / "runs", teacher={"slice_axis": -2})
    assert main(["teacher", "zero-shot", str(cfg_path), "--quiet", "--max-cases", "1", "--no-cache"]) == 0
    report = json.loads((tmp_path / "runs" / "t_zero_shot" / "zero_shot_test.json").read_text())
    assert report["meta"]["cases"] == 1 and report["meta"]["slice_axes"] == [2] and report["meta"]["cache"] is None
    assert not (tmp_path / "runs" / "teacher_cache").exists()


def test_teacher_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="teacher.token_grid"):
        load_config(None, ["teacher.token_grid=0"])
    with pytest.raises(ConfigError, match="teacher.checkpoint"):
        load_config(None, ["teacher.name=sam_vit_b"])
    with pytest.raises(ConfigError, match="teacher.name"):
        teachers.build_teacher(load_config(None).teacher)
    data = make_image2d_dataset(tmp_path / "img", n_cases=2)
    cfg_path = _config(tmp_path / "c.yaml", data, tmp_path / "runs", teacher={"slice_axis": 5})
    assert main(["teacher", "zero-shot", str(cfg_path), "--quiet"]) == 2
    assert "teacher.slice_axis" in capsys.readouterr().err
