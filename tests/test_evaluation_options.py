"""``uncol evaluate``: ``--set`` overrides of evaluation options, and the unit of the distances
(``px`` for 2D images without spacing, ``mm`` with a spacing, ``vox`` for volumes without one and medpy)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fixtures_data import make_hdf5_dataset, make_image2d_dataset, make_nifti_dataset
from uncol import api
from uncol.cli import main
from uncol.config import DataConfig, config_from_dict
from uncol.errors import ConfigError
from uncol.evaluation import evaluate_run
from uncol.metrics import format_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(root: Path, name: str, data: DataConfig) -> Path:
    """Two steps of a tiny 2D U-Net (checkpoints best.pt at step 1 and final.pt at step 2); no evaluation."""
    values = {
        "name": name, "output_dir": str(root / "runs"), "data": dataclasses.asdict(data),
        "split": {"labeled": 2, "val_fraction": 0.25, "test_fraction": 0.25},
        "model": {"arch": "unet2d", "channels": [4, 8]},
        "train": {"iterations": 2, "batch_size": 2, "patch_size": [32, 32], "val_every": 1, "log_every": 1,
                  "threads": 1, "device": "cpu"},
    }
    return Path(api.train(config_from_dict(values), evaluate_splits=(), show_progress=False)["run_dir"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    torch.set_num_threads(1)
    return {
        "hdf5": _train(root, "hdf5", make_hdf5_dataset(root / "h5", n_train=4, n_val=1, n_test=1, slices=2,
                                                       num_classes=3)),
        "png": _train(root, "png", make_image2d_dataset(root / "png", n_cases=8)),
        "nifti": _train(root, "nifti", make_nifti_dataset(root / "nii", n_cases=6, shape=(20, 20, 4),
                                                          spacing=(1.5, 1.5, 3.0))),
    }


def test_set_overrides_choose_the_weights_and_the_convention_keeps_its_own_file(runs, capsys):
    run = runs["hdf5"]
    best = evaluate_run(run, "test", show_progress=False)
    final = evaluate_run(run, "test", show_progress=False, overrides=["eval.checkpoint=final"])
    assert (best["checkpoint"], final["checkpoint"]) == ("best", "final")
    assert final["checkpoint_step"] == 2
    stored = json.loads((run / "metrics_test.json").read_text())
    assert stored["checkpoint"] == "final"
    # an overridden convention is written beside the run's own evaluation, not over it
    medpy = evaluate_run(run, "test", show_progress=False, overrides=["eval.convention=medpy"])
    assert medpy["convention"] == "medpy" and (run / "metrics_test_medpy.json").is_file()
    assert json.loads((run / "metrics_test.json").read_text())["convention"] == "standard"
    with pytest.raises(ConfigError, match="model.channels"):
        evaluate_run(run, "test", show_progress=False, overrides=["model.channels=[2, 4]"])

    assert main(["evaluate", str(run), "--set", "eval.checkpoint=final", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "final checkpoint" in out and "distances in vox" in out and "HD95 (vox)" in out


@pytest.mark.parametrize(
    ("kind", "overrides", "unit"),
    [
        ("hdf5", [], "vox"),                                # 3D HDF5 volumes store no spacing
        ("hdf5", ["data.spacing=[2.0, 1.0, 1.0]"], "mm"),   # a configured spacing is physical
        ("png", [], "px"),                                  # 2D images store none
        ("png", ["eval.convention=medpy"], "px"),
        ("nifti", [], "mm"),                                # NIfTI headers hold the voxel size
        ("nifti", ["eval.convention=medpy"], "vox"),
    ],
)
def test_distances_say_their_unit(runs, kind, overrides, unit):
    res = evaluate_run(runs[kind], "test", show_progress=False, overrides=overrides)
    assert res["distance_unit"] == unit
    assert f"HD95 ({unit})" in format_table(res)
    name = "metrics_test_medpy.json" if "eval.convention=medpy" in overrides else "metrics_test.json"
    assert json.loads((runs[kind] / name).read_text())["distance_unit"] == unit
