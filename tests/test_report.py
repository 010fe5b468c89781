"""`uncol report`: one self-contained HTML file per run (or runs side by side), checked as a reader
would see it, in headless Chromium where it is installed."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fixtures_data import make_hdf5_dataset, make_nifti_dataset
from uncol import api
from uncol.cli import main
from uncol.errors import UncolError
from uncol.report import build_report
from uncol.report.overlays import pick_cases, pick_planes

SECTIONS = ("setup", "metrics", "calibration", "uncertainty", "training", "cases")


def _train(root: Path, name: str, data_cfg, model: dict, patch: list[int], evaluate: bool = True) -> Path:
    values = {
        "name": name,
        "output_dir": str(root / "runs"),
        "data": dataclasses.asdict(data_cfg),
        "split": {"labeled": 2, "val_fraction": 0.2, "test_fraction": 0.4},
        "model": model,
        "train": {"iterations": 3, "batch_size": 2, "patch_size": patch, "val_every": 3, "log_every": 1,
                  "threads": 1, "device": "cpu"},
    }
    cfg = root / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(values))
    api.train(str(cfg), evaluate_splits=("test",) if evaluate else (), show_progress=False)
    return root / "runs" / name


@pytest.fixture(scope="module")
def runs2d(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny 2D runs on 3D HDF5 volumes (3 test volumes): one without dropout, one with; a third not evaluated."""
    root = tmp_path_factory.mktemp("report2d")
    data = make_hdf5_dataset(root / "data", n_train=4, n_val=1, n_test=3, slices=3, shape=(32, 32), num_classes=3)
    model = {"arch": "unet2d", "channels": [4, 8, 16]}
    return {
        "plain": _train(root, "plain", data, model, [32, 32]),
        "dropout": _train(root, "dropout", data, {**model, "dropout": 0.3}, [32, 32]),
        "unevaluated": _train(root, "unevaluated", data, model, [32, 32], evaluate=False),
    }


def _images(text: str) -> list[Image.Image]:
    out = []
    for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', text):
        assert src.startswith("data:image/png;base64,"), src[:60]
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        img.load()
        out.append(img)
    return out


def _check_self_contained(text: str) -> list[Image.Image]:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    assert "url(" not in text  # no CSS resource either
    for href in re.findall(r'href="([^"]*)"', text):
        assert href.startswith("#"), href
    images = _images(text)
    assert all(img.format == "PNG" and min(img.size) >= 100 for img in images)
    return images


def test_report_of_one_run_is_self_contained_with_every_section(runs2d):
    path = build_report([runs2d["plain"]])
    assert path == runs2d["plain"] / "report_test.html"
    text = path.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in text and f'href="#{sid}"' in text
    images = _check_self_contained(text)
    # box plots, reliability, risk-coverage, training, and the best/median/worst cases (3 test cases)
    assert len(images) == 4 + 3
    assert all(f'alt="{role} case patient' in text for role in ("best", "median", "worst"))
    assert "not available: the network has no dropout" in text
    # HDF5 volumes store no voxel size: distances in voxels
    for label in ("ECE", "NLL (nats)", "Brier score", "AUROC", "E-AURC", "HD95 (vox)", "Dice (%)", "CPU time"):
        assert label in text


def test_compare_through_the_cli_puts_runs_side_by_side(runs2d, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["report", str(runs2d["plain"]), "--compare", str(runs2d["dropout"]), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    text = out.read_text()
    images = _check_self_contained(text)
    assert len(images) == 4 + 3
    # every table has a column per run; the dropout run's MC-dropout scores are reported
    setup = text.split('<section id="setup">')[1].split("</section>")[0]
    assert setup.count("<th>plain</th>") == 1 and setup.count("<th>dropout</th>") == 1
    assert "MC-dropout mutual information" in text
    unc = text.split('<section id="uncertainty">')[1].split("</section>")[0]
    assert "not available: the network has no dropout" in unc  # for the plain run only
    # a case figure shows both runs' predictions: wider than the single-run one (2 + 2x2 vs 5 panels)
    single = _images(build_report([runs2d["plain"]], out=tmp_path / "one.html").read_text())
    assert images[-1].size[0] > single[-1].size[0]


def test_unevaluated_run_is_evaluated_or_named_with_the_command(runs2d, tmp_path, capsys):
    run = runs2d["unevaluated"]
    with pytest.raises(UncolError, match="uncol evaluate"):
        build_report([run], out=tmp_path / "x.html", evaluate=False)
    assert main(["report", str(run), "--no-evaluate", "--out", str(tmp_path / "x.html")]) == 2
    assert "uncol evaluate" in capsys.readouterr().err
    assert not (run / "metrics_test.json").exists()
    path = build_report([run], out=tmp_path / "r.html")
    assert (run / "metrics_test.json").exists() and (run / "uncertainty_test.json").exists()
    assert "evaluating it now" in capsys.readouterr().out
    _check_self_contained(path.read_text())


def test_3d_run_shows_three_planes(tmp_path):
    data = make_nifti_dataset(tmp_path / "nifti", n_cases=5, shape=(24, 24, 16), num_classes=2)
    run = _train(tmp_path, "vol", data, {"arch": "unet3d", "channels": [4, 8]}, [16, 16, 16])
    text = build_report([run]).read_text()
    images = _check_self_contained(text)
    assert "on each axis, the slice with the most foreground" in text
    # three plane rows make a case figure taller than wide-ish single-slice rows would
    assert images[-1].size[1] > 400


def test_pick_cases_and_planes():
    metrics = {"cases": [
        {"case": n, "metrics": {"1": {"dice": d}, "2": {"dice": None}}}
        for n, d in [("a", 0.5), ("b", 0.9), ("c", 0.1), ("d", 0.7), ("e", None)]
    ]}
    assert pick_cases(metrics) == [("best", "b", 0.9), ("median", "a", 0.5), ("worst", "c", 0.1)]
    assert [p[0] for p in pick_cases({"cases": metrics["cases"][:1]})] == ["best"]
    label = np.zeros((6, 8, 10), dtype=np.uint8)
    label[1:3, 2:7, 4] = 1
    label[2, 2:4, 5:9] = 2
    planes = pick_planes(label, 3, 0)
    assert [(p.axis, p.index) for p in planes] == [(0, 2), (1, 2), (2, 4)]
    assert [(p.axis, p.index) for p in pick_planes(label, 2, 2)] == [(2, 4)]
    assert [(p.axis, p.index) for p in pick_planes(np.zeros((6, 8, 10)), 2, 0)] == [(0, 3)]
    assert [p.axis for p in pick_planes(label[0], 2, 0)] == [None]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (Debian package chromium)")
def test_report_renders_in_headless_chromium(runs2d, tmp_path):
    path = build_report([runs2d["plain"]], out=tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={shot}", "--window-size=1280,3000", path.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (3000, 1280)
    grey = img.mean(axis=2)
    # a rendered page: text and figures all the way down, not a blank or an error page
    rows_with_ink = (grey < 200).any(axis=1)
    assert rows_with_ink[:300].any() and rows_with_ink[1500:].mean() > 0.3
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # figures in colour, not just text
