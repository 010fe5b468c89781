"""The `uncol` command line, end to end on tiny datasets built at run time."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from fixtures_data import make_hdf5_dataset, make_image2d_dataset
from uncol.cli import main


def write_config(path: Path, data_cfg, output_dir: Path, **sections: dict) -> Path:
    values = {
        "name": "cli",
        "output_dir": str(output_dir),
        "data": dataclasses.asdict(data_cfg),
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "train": {"iterations": 4, "batch_size": 2, "patch_size": [32, 32], "val_every": 2, "threads": 1, "device": "cpu"},
    }
    for k, v in sections.items():
        values[k] = {**values.get(k, {}), **v}
    path.write_text(yaml.safe_dump(values))
    return path


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  iteratons: 3\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "c.yaml" in err and "train.iteratons" in err and "Traceback" not in err
    assert main(["config", "show", "--set", "train.lr=abc"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_config_show_and_docs(capsys):
    assert main(["config", "show", "--set", "train.iterations=7"]) == 0
    assert "iterations: 7" in capsys.readouterr().out
    assert main(["config", "docs"]) == 0
    assert "| `train.iterations` |" in capsys.readouterr().out


def test_train_evaluate_score_on_hdf5(tmp_path, capsys):
    data = make_hdf5_dataset(tmp_path / "acdc", n_train=4, n_val=1, n_test=2, slices=3, shape=(32, 32), num_classes=3)
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "runs", split={"labeled": 2})
    assert main(["train", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "run folder:" in out and "test (standard convention)" in out
    run = tmp_path / "runs" / "cli"
    assert main(["evaluate", str(run), "--split", "test", "--convention", "medpy", "--save-predictions", "--quiet"]) == 0
    res = json.loads((run / "metrics_test_medpy.json").read_text())
    assert res["convention"] == "medpy" and len(res["cases"]) == 2
    preds = sorted((run / "predictions_test").iterdir())
    assert len(preds) == 2
    # score the saved predictions against the reference volumes through the CLI
    gt_dir = Path(data.root) / "data"
    gt = tmp_path / "gt"
    gt.mkdir()
    for p in preds:
        (gt / p.name).symlink_to(gt_dir / p.name)
    assert main(["score", str(run / "predictions_test"), str(gt), "--json", str(tmp_path / "s.json")]) == 0
    scored = json.loads((tmp_path / "s.json").read_text())
    assert {c["case"] for c in scored["cases"]} == {p.name.removesuffix(".h5") for p in preds}
    # the CLI's score of the saved masks equals the evaluation of the same predictions (same convention)
    ev = json.loads((run / "metrics_test_medpy.json").read_text())
    assert main(["score", str(run / "predictions_test"), str(gt), "--convention", "medpy", "--json", str(tmp_path / "m.json")]) == 0
    sm = json.loads((tmp_path / "m.json").read_text())
    assert abs(sm["summary"]["mean"]["dice"]["mean"] - ev["summary"]["mean"]["dice"]["mean"]) < 1e-9


def test_predict_png_keeps_size_and_resume_flag(tmp_path, capsys):
    data = make_image2d_dataset(tmp_path / "img", n_cases=6)
    cfg = write_config(
        tmp_path / "c.yaml", data, tmp_path / "runs",
        data={"num_classes": 2, "normalize": "minmax"}, split={"val_fraction": 0.2, "test_fraction": 0.2},
    )
    assert main(["train", str(cfg), "--quiet", "--no-eval"]) == 0
    run = tmp_path / "runs" / "cli"
    # an existing run without --resume is refused with a clear message
    assert main(["train", str(cfg), "--quiet", "--no-eval"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(run), "--resume", "--quiet", "--no-eval"]) == 0
    # a supervised run has no deferred options: branching with a changed option is refused by name
    branch = ["train", str(cfg), "--set", "name=branch", "--quiet", "--no-eval", "--branch-from", str(run)]
    assert main([*branch, "--set", "train.lr=0.5"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(branch[:-1] + [str(tmp_path / "nothing.pt")]) == 2
    assert "nothing.pt" in capsys.readouterr().err

    src = tmp_path / "new.jpg"
    Image.fromarray((np.random.default_rng(0).random((45, 37)) * 255).astype(np.uint8)).save(src)
    assert main(["predict", str(run), str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = tmp_path / "out" / "new.png"  # JPEG input -> lossless PNG mask
    assert Image.open(out).size == (37, 45)
    assert main(["predict", str(run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o2")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_data_check_exit_codes(tmp_path, capsys):
    data = make_hdf5_dataset(tmp_path / "ok", n_train=3, n_val=1, n_test=1, slices=2)
    assert main(["data", "check", data.root]) == 0
    capsys.readouterr()
    broken = Path(data.root) / "data"
    victim = sorted(broken.glob("*.h5"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    assert main(["data", "check", data.root, "--json", str(tmp_path / "r.json")]) == 1
    assert victim.name in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["problems"]


def test_demo_runs_on_what_pip_installs(tmp_path, capsys):
    """Both demo methods on the same slabs, UnCoL with the real LiteMedSAM teacher (its features of the
    ~40 training slices are encoded once), printed side by side."""
    args = ["demo", "--out", str(tmp_path), "--iterations", "3", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "grey_matter" in out and "white_matter" in out and "run folder" in out
    table = out[out.index("the same labeled, validation and test slabs"):]
    assert "supervised" in table and "uncol" in table and "unlabeled images trained on" in table
    assert "How to read this" in table and "benchmarks/RESULTS.md" in table  # where the demo's limit is said
    splits = {}
    for method in ("supervised", "uncol"):
        run = tmp_path / f"demo_{method}"
        assert (run / "metrics_test.json").exists()
        splits[method] = json.loads((run / "splits.json").read_text())
    assert splits["supervised"] == splits["uncol"]  # like for like: the same labeled, val and test slabs
    with open(tmp_path / "demo_uncol" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["stage"]) == 2.0  # the last step is in stage 2 (semi-supervised)
    assert float(rows[-1]["frac_both"]) + float(rows[-1]["frac_none"]) <= 1.0


def test_public_api_names_stay_functions_after_every_submodule_is_imported():
    import importlib
    import pkgutil

    import uncol

    for mod in pkgutil.walk_packages(uncol.__path__, "uncol."):
        importlib.import_module(mod.name)
    for name in ("train", "evaluate", "predict", "score", "check_data", "demo"):
        assert callable(getattr(uncol, name)), f"uncol.{name} is not callable once its modules are imported"
