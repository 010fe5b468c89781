"""``uncol init`` (uncol.planning): configs planned from a dataset fingerprint, the split preview, the CLI.

Every fixture layout (NIfTI folders, nnU-Net with dataset.json, HDF5, 2D grey and RGB folders) is
planned for a fixed CPU budget (so results do not depend on the machine), written as commented
YAML, loaded back, validated and split; one generated config is trained for 2 steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_data import blob_label, make_hdf5_dataset, make_image2d_dataset, make_nifti_dataset, write_nifti
from uncol.cli import main
from uncol.config import load_config
from uncol.data.index import discover
from uncol.engine import Trainer
from uncol.errors import ConfigError
from uncol.planning import MachineBudget, cpu_budget, plan_dataset, split_preview, write_config

BUDGET = cpu_budget(threads=2)
LAYOUTS = {
    "nifti": lambda root: make_nifti_dataset(root, n_cases=6, shape=(24, 28, 16), num_classes=3),
    "nnunet": lambda root: make_nifti_dataset(root, layout="nnunet", channels=2, n_test=2, shape=(20, 20, 12)),
    "hdf5": lambda root: make_hdf5_dataset(root, n_train=5, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=4),
    "grey2d": lambda root: make_image2d_dataset(root, n_cases=6, size=(48, 56)),
    "rgb2d": lambda root: make_image2d_dataset(root, n_cases=6, rgb=True, num_classes=4, mask_style="palette",
                                               mask_match="suffix", mask_suffix="_seg", n_unlabeled=2),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("init")
    return {name: Path(make(root / name).root) for name, make in LAYOUTS.items()}


def _total_cases(root: Path, cfg) -> int:
    d = discover(cfg.data)
    return len(d.train) + len(d.val or []) + len(d.test or []) + len(d.unlabeled)


@pytest.mark.parametrize("method", ["supervised", "uncol"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_planned_config_loads_validates_and_splits(datasets, layout, method, tmp_path):
    root = datasets[layout]
    plan = plan_dataset(root, method=method, budget=BUDGET)
    path = write_config(tmp_path / "c.yaml", plan.config, plan.notes, ["a header"])
    text = path.read_text()
    cfg = load_config(path)
    assert cfg.to_dict() == plan.config.to_dict()
    assert text.startswith("# a header\n") and "# detected layout: " in text  # reasons are comments
    # The layout, classes and channels the check detected.
    assert cfg.data.format == {"nifti": "nifti", "nnunet": "nifti", "hdf5": "hdf5"}.get(layout, "image2d")
    assert cfg.data.in_channels == {"nnunet": 2, "rgb2d": 3}.get(layout, 1)
    assert len(cfg.data.class_names) == cfg.data.num_classes == {"nifti": 3, "nnunet": 3, "hdf5": 4, "rgb2d": 4}.get(layout, 2)
    # Sizes: powers of two in 2D, divisible by the network's total downsampling in 3D.
    factor = 2 ** (len(cfg.model.channels) - 1)
    assert all(p % factor == 0 for p in cfg.train.patch_size)
    if cfg.spatial_dims == 2:
        assert all(p & (p - 1) == 0 and 16 <= p <= 256 for p in cfg.train.patch_size)
    assert cfg.train.batch_size % 2 == 0 and 2 <= cfg.train.batch_size <= 16
    if method == "uncol":
        assert cfg.model.arch == f"uncol_student{cfg.spatial_dims}d" and cfg.augment.rotate_degrees > 0.0
        assert cfg.model.vit_patch == factor and cfg.teacher.name == "litemedsam"
        assert cfg.method.options.unlabeled_batch_size == max(2, cfg.train.batch_size // 2)
    else:
        assert cfg.model.arch == f"unet{cfg.spatial_dims}d" and cfg.split.labeled == 1.0
    # The preview is the training split: its counts add up to the dataset's cases.
    preview = split_preview(cfg)
    assert preview.total_cases == _total_cases(root, cfg)
    assert preview.counts["labeled"]["cases"] >= 1 and preview.uses_unlabeled == (method == "uncol")
    text = preview.to_text()
    assert all(role in text for role in ("labeled", "unlabeled", "val", "test"))
    if method == "uncol":
        cost = preview.teacher
        assert cost is not None and cost.labeled_images >= preview.counts["labeled"]["cases"]
        assert 0 < cost.lazy_expected <= cost.unlabeled_images
        assert "lazy_unlabeled_targets=true" in text and "s on a CPU" in text
    else:
        assert preview.teacher is None


def test_data_specific_choices(datasets):
    hdf5 = plan_dataset(datasets["hdf5"], budget=BUDGET)
    c = hdf5.config
    assert (c.model.arch, c.train.patch_size, c.data.normalize) == ("unet2d", [32, 32], "none")  # images in [0, 1]
    assert c.split.labeled_order == "list" and "[0, 1]" in hdf5.notes["data.normalize"]
    nifti = plan_dataset(datasets["nifti"], budget=BUDGET).config
    assert nifti.model.arch == "unet3d" and nifti.data.normalize == "zscore"
    assert all(p >= m for p, m in zip(nifti.train.patch_size, (24, 28, 16), strict=True))  # holds the median volume
    nnunet = plan_dataset(datasets["nnunet"], budget=BUDGET)
    assert nnunet.config.data.class_names == ["background", "class1", "class2"]
    assert nnunet.notes["data.class_names"] == "from dataset.json"
    grey = plan_dataset(datasets["grey2d"], budget=BUDGET)
    assert grey.config.train.patch_size == [64, 64]  # 48 x 56 -> the nearest powers of two
    assert grey.fingerprint.mask_modes == {"binary": 6} and "binary (6 of 6" in grey.notes["data.mask_mode"]
    rgb = plan_dataset(datasets["rgb2d"], budget=BUDGET)
    assert rgb.fingerprint.mask_modes == {"palette": 6}
    assert (rgb.config.data.mask_match, rgb.config.data.mask_suffix) == ("suffix", "_seg")
    # Extra unlabeled images: every training group labeled even for a semi-supervised method.
    assert plan_dataset(datasets["rgb2d"], method="uncol", budget=BUDGET).config.split.labeled == 1.0


def test_labeled_amount_as_asked(datasets):
    cfg = plan_dataset(datasets["hdf5"], labeled=2, method="mean_teacher", budget=BUDGET).config
    preview = split_preview(cfg)
    assert preview.counts["labeled"]["groups"] == 2 and preview.counts["unlabeled"]["groups"] == 3
    cfg = plan_dataset(datasets["nifti"], labeled=0.5, method="bcp", budget=BUDGET).config
    assert cfg.split.labeled == 0.5 and cfg.train.batch_size % 2 == 0  # BCP splits batches in halves
    with pytest.raises(ConfigError, match="split.labeled"):
        plan_dataset(datasets["hdf5"], labeled=2.5, budget=BUDGET)
    with pytest.raises(ConfigError, match="unknown method 'no_such_method'; known: supervised"):
        plan_dataset(datasets["hdf5"], method="no_such_method", budget=BUDGET)


def _nifti_set(root: Path, spacing: tuple[float, ...], offset: float = 0.0, scale: float = 1.0, n: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        label = blob_label((24, 24, 12), 2, rng)
        image = (offset + scale * label + rng.normal(0, 20, label.shape)).astype(np.float32)
        write_nifti(root / "images" / f"c{i}.nii.gz", image, spacing)
        write_nifti(root / "labels" / f"c{i}.nii.gz", label, spacing)
    return root


def test_anisotropic_volumes_are_planned_as_slices_across_the_coarse_axis(tmp_path):
    root = _nifti_set(tmp_path / "aniso", spacing=(1.0, 1.0, 6.0))
    plan = plan_dataset(root, budget=BUDGET)
    assert plan.config.model.arch == "unet2d" and plan.config.data.slice_axis == 2
    assert plan.config.train.patch_size == [32, 32]  # 24 x 24 in-plane -> 32
    assert "6.0x coarser along axis 2" in plan.notes["model.arch"]


def test_ct_like_intensities_are_clipped_and_zscored(tmp_path):
    root = _nifti_set(tmp_path / "ct", spacing=(1.0, 1.0, 1.0), offset=-1000.0, scale=1200.0)
    plan = plan_dataset(root, budget=BUDGET)
    assert plan.config.data.normalize == "percentile" and "Hounsfield" in plan.notes["data.normalize"]


def test_uncol_3d_falls_back_to_2d_when_whole_volumes_exceed_the_budget(datasets):
    small = MachineBudget("cpu", 1, 0.0, step_voxels=2**19, patch_voxels_3d=4096)
    plan = plan_dataset(datasets["nifti"], method="uncol", budget=small)
    assert plan.config.model.arch == "uncol_student2d" and "whole in one patch" in plan.notes["model.arch"]
    supervised = plan_dataset(datasets["nifti"], budget=small)  # crops patches of the volumes: stays 3D
    assert supervised.config.model.arch == "unet3d" and math.prod(supervised.config.train.patch_size) <= 4096
    assert "shrunk to this machine's 3D budget of 4,096 voxels" in supervised.notes["train.patch_size"]


def test_two_training_steps_on_a_generated_config(datasets, tmp_path):
    plan = plan_dataset(datasets["grey2d"], budget=BUDGET)
    path = write_config(tmp_path / "grey.yaml", plan.config, plan.notes)
    torch.set_num_threads(1)
    cfg = load_config(path, [f"output_dir={tmp_path / 'runs'}", "train.iterations=2", "train.val_every=0",
                             "train.threads=1", "train.device=cpu"])
    summary = Trainer(cfg, tmp_path / "runs" / cfg.name, show_progress=False).fit()
    assert summary.steps_done == 2 and (tmp_path / "runs" / cfg.name / "checkpoints" / "final.pt").is_file()


def test_cli_init_then_data_check(datasets, tmp_path, capsys):
    out = tmp_path / "hdf5.yaml"
    assert main(["init", str(datasets["hdf5"]), "--method", "uncol", "--labeled", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("SSL4MIS HDF5", "problems   none", "model.vit_patch = 8", "Split (cases / groups per role",
                     "Foundation teacher (LiteMedSAM)", "lazy_unlabeled_targets=true", f"config written to {out}"):
        assert expected in text, expected
    assert load_config(out).split.labeled == 2
    assert main(["init", str(datasets["hdf5"]), "--out", str(out)]) == 2  # never overwrites silently
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 class_1" in text and "Split (cases / groups per role" in text and "labeled          6 cases" in text
    assert main(["init", str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err
