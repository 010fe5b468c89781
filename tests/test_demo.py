"""The demo dataset and its like-for-like comparison (fast: no training)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from uncol.data.index import discover
from uncol.data.splits import make_splits
from uncol.demo_run import DEMO_METHODS, MIN_TISSUE_VOXELS, build_demo_dataset, comparison_table, demo_config


def _slab_number(path) -> int:
    return int(path.name.split("_")[1].split(".")[0])


def test_demo_slabs_hold_both_tissues_and_test_slabs_span_the_brain(tmp_path):
    root = build_demo_dataset(tmp_path / "demo")
    train = sorted((root / "labelsTr").glob("*.nii.gz"))
    test = sorted((root / "labelsTs").glob("*.nii.gz"))
    assert len(test) >= 4 and len(train) >= 3 * len(test) - 1
    for path in train + test:
        label = np.asarray(nib.load(path).dataobj)
        assert min(int((label == k).sum()) for k in (1, 2)) >= MIN_TISSUE_VOXELS, path.name
    numbers = sorted(_slab_number(p) for p in train + test)
    assert numbers == list(range(len(numbers)))  # consecutive slabs, none lost
    assert [_slab_number(p) for p in test] == list(range(1, len(numbers), 4))  # every fourth slab


def test_demo_methods_share_labeled_val_and_test_slabs(tmp_path):
    root = build_demo_dataset(tmp_path / "demo")
    splits = {}
    for method in DEMO_METHODS:
        cfg = demo_config(root, tmp_path, method=method)
        splits[method] = make_splits(discover(cfg.data), cfg.split)
    sup, unc = (splits[m] for m in DEMO_METHODS)
    for part in ("labeled", "unlabeled", "val", "test"):
        assert [c.case_id for c in getattr(sup, part)] == [c.case_id for c in getattr(unc, part)], part
    assert all(c.case_id.startswith("slab_") for c in sup.test) and len(sup.test) >= 4
    # labeled slabs spread over the brain: neither bunched at one end nor adjacent
    pool = sorted(_slab_number_id(c.case_id) for c in sup.labeled + sup.unlabeled)
    labeled = sorted(_slab_number_id(c.case_id) for c in sup.labeled)
    assert len(labeled) >= 2 and labeled[0] > pool[0] and labeled[-1] < pool[-1]
    assert min(np.diff(labeled)) > 1


def _slab_number_id(case_id: str) -> int:
    return int(case_id.split("_")[1])


def test_comparison_table_puts_methods_side_by_side():
    def result(dice: float, steps: int, trained_unlabeled: int) -> dict:
        per_class = {"dice": {"mean": dice, "std": 0.01, "n": 4}}
        return {
            "test": {"summary": {"1": per_class, "2": per_class, "mean": per_class}},
            "train": {"steps_done": steps, "cpu_seconds": 12.0, "images_seen": {"labeled": 40, "unlabeled": 8},
                      "images_trained": {"labeled": 40, "unlabeled": trained_unlabeled}},
        }

    table = comparison_table({"supervised": result(0.5, 20, 8), "uncol": result(0.75, 10, 4)}, ["bg", "gm", "wm"])
    lines = table.splitlines()
    assert lines[0].split() == ["test", "Dice", "(%)", "supervised", "uncol"]
    gm = lines[2].split()
    assert gm[0] == "gm" and gm[1:4] == ["50.0", "±", "1.0"] and gm[4:] == ["75.0", "±", "1.0"]
    steps = next(ln for ln in lines if ln.startswith("training steps"))
    assert steps.split()[-2:] == ["20", "10"]
    # the images the steps trained on, not the drawn ones
    assert lines[-1].startswith("unlabeled images trained on") and lines[-1].split()[-2:] == ["8", "4"]


def test_run_demo_applies_overrides_after_the_demo_config_and_scores_the_given_splits(tmp_path):
    from uncol.demo_run import run_demo
    from uncol.runs import RunPaths, load_run_config

    result = run_demo(tmp_path, name="probe", iterations=2, device="cpu", show_progress=False, method="supervised",
                      overrides=["train.seed=3", "split.labeled=2"], evaluate_splits=("test",))
    paths = RunPaths(result["run_dir"])
    cfg = load_run_config(paths.root)
    assert (cfg.train.seed, cfg.split.labeled, cfg.train.iterations) == (3, 2, 2)
    assert "test" in result and "val" not in result
    assert paths.metrics("test").exists() and not paths.metrics("val").exists()
