"""The run folder: its paths, the configuration and checkpoints stored in it, and branching.

Training writes a run folder; evaluation, prediction and export read one. Everything that knows the
folder's layout lives here, so readers of a run never import the trainer (docs/run_folder.md)::

    RUN/config.yaml  splits.json  log.csv  val.csv  tensorboard/  checkpoints/{latest,best,final}.pt
        metrics_val.json  metrics_test.json  metrics_<split>_cases.csv  uncertainty_<split>.json  summary.json
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from uncol.checkpoints import load_checkpoint, load_module_state
from uncol.config import Config, config_from_dict
from uncol.errors import ConfigError, UncolError

#: Version of the checkpoint format; a checkpoint of another version is refused by name.
CHECKPOINT_VERSION = 1
#: Settings that change where or how fast a run computes, never what it computes: a resumed run may
#: change them (methods add their own, :meth:`~uncol.methods.base.TrainingMethod.speed_options`).
#: The teacher cache is keyed by content, so moving it changes nothing.
RESUME_MAY_DIFFER = frozenset({
    "train.device", "train.num_workers", "train.threads", "train.amp", "output_dir",
    # Memory layout and compilation change the order of float operations only, as threads and devices do.
    "train.channels_last", "train.compile",
    "teacher.device", "teacher.cache_dir", "teacher.batch_size",
    # Cases are left out only when a run starts; a resumed run refuses any bad case whatever it says.
    "data.on_bad_case",
})
#: Options that define the trained network (its layers, input channels, classes and input size):
#: inference-time overrides may not change them, since the stored weights are built from them.
NETWORK_DEFINING = ("model.", "data.in_channels", "data.num_classes", "train.patch_size")


class RunPaths:
    """Paths inside a run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.splits = self.root / "splits.json"
        self.log_csv = self.root / "log.csv"
        self.val_csv = self.root / "val.csv"
        self.tensorboard = self.root / "tensorboard"
        self.checkpoints = self.root / "checkpoints"
        self.latest = self.checkpoints / "latest.pt"
        self.best = self.checkpoints / "best.pt"
        self.final = self.checkpoints / "final.pt"
        self.summary = self.root / "summary.json"
        #: cases left out by ``data.on_bad_case=exclude`` (only when some were).
        self.excluded_cases = self.root / "excluded_cases.json"

    def metrics(self, split: str) -> Path:
        """JSON file with the evaluation of ``split``."""
        return self.root / f"metrics_{split}.json"

    def uncertainty(self, split: str) -> Path:
        """JSON file with the reliability diagram and risk-coverage curves of ``split``'s evaluation."""
        return self.root / f"uncertainty_{split}.json"

    def branch_point(self, step: int) -> Path:
        """Checkpoint kept at the step from which other runs may branch (see ``Trainer``'s ``branch_from``)."""
        return self.checkpoints / f"step{step}.pt"

    def branch_points(self) -> list[Path]:
        """The branch-point checkpoints the run has kept (:meth:`branch_point`), by name."""
        return sorted(self.checkpoints.glob("step*.pt"))

    @property
    def branched_from(self) -> Path:
        """Record of the checkpoint a branched run started from."""
        return self.root / "branched_from.json"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


#: Options of the UnCoL student: they build no layer of any other architecture.
STUDENT_OPTIONS = frozenset({
    "model.vit_dim", "model.vit_depth", "model.vit_heads", "model.vit_patch", "model.context_dims",
    "model.student_backbone",
})


def unused_options(cfg: Config) -> frozenset[str]:
    """Dotted options that cannot change what a run of ``cfg`` computes: the student's options for any
    other architecture. A changed default of such an option leaves finished and resumable runs valid."""
    return frozenset() if cfg.model.arch.startswith("uncol_student") else STUDENT_OPTIONS


def config_differences(a: Config, b: Config, may_differ: frozenset[str] = frozenset()) -> list[str]:
    """Dotted keys whose values differ between two configs, ignoring speed-only options
    (:data:`RESUME_MAY_DIFFER` and ``may_differ``) and options neither config uses (:func:`unused_options`;
    both must share the architecture for that, or ``model.arch`` itself differs)."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    ignore = RESUME_MAY_DIFFER | may_differ
    if a.model.arch == b.model.arch:
        ignore = ignore | unused_options(a)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k) and k not in ignore)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A resumable training checkpoint, refused by name when unreadable, holding anything but tensors and
    plain data (:func:`uncol.checkpoints.load_checkpoint`), or of another format version."""
    state = load_checkpoint(path, "checkpoint")
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise UncolError(f"{path}: not an uncol checkpoint of version {CHECKPOINT_VERSION}")
    return state


def branch_checkpoint(path: Path) -> Path:
    """The checkpoint file named by ``branch_from`` (a run folder stands for its ``latest.pt``)."""
    if path.is_dir():
        path = RunPaths(path).latest
    if not path.is_file():
        raise UncolError(f"{path}: no such checkpoint to branch from")
    if path.parent.name != "checkpoints":
        raise UncolError(f"{path}: branch from a checkpoint inside a run folder's checkpoints/ (its splits and logs are needed)")
    return path


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved configuration stored in a run folder.

    A run folder moved or copied elsewhere (another machine, other absolute paths) still names its old
    place in ``output_dir``: then ``output_dir`` becomes the folder's parent, so that whatever is found
    through it (the default teacher cache ``output_dir/teacher_cache``) is looked up beside the folder,
    never at its old location (:func:`relocated_output_dir`). Data paths stay as the user wrote them.
    """
    p = RunPaths(run_dir)
    if not p.config.exists():
        raise UncolError(f"{p.root}: not a run folder (no config.yaml)")
    try:
        values = yaml.safe_load(p.config.read_text())
    except yaml.YAMLError as e:
        raise UncolError(f"{p.config}: unreadable config: {e}") from None
    cfg = config_from_dict(values)
    moved = relocated_output_dir(cfg, p.root)
    return cfg if moved is None else dataclasses.replace(cfg, output_dir=moved)


def relocated_output_dir(cfg: Config, run_dir: str | Path) -> str | None:
    """The parent of ``run_dir`` when the config's ``output_dir/name`` is not that folder (it was moved or
    copied since), else ``None``: the config already points at it."""
    here = Path(run_dir)
    stored = Path(cfg.output_dir) / cfg.name
    try:
        if stored.exists() and stored.samefile(here):
            return None
    except OSError:  # an unreadable old location is not this folder
        pass
    return str(here.resolve().parent)


def inference_config(stored: Config, overrides: Sequence[str] = ()) -> Config:
    """A run's configuration with ``key=value`` overrides for inference (e.g. ``eval.sw_batch_size=8``).

    Raises:
        ConfigError: an invalid override, or one of an option in :data:`NETWORK_DEFINING`.
    """
    if not overrides:
        return stored
    cfg = config_from_dict(stored.to_dict(), list(overrides))
    before, after = _flatten(stored.to_dict()), _flatten(cfg.to_dict())
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    fixed = [k for k in changed if k.startswith(NETWORK_DEFINING)]
    if fixed:
        raise ConfigError(
            f"--set {', '.join(fixed)}: cannot be changed for a trained run (the stored weights were built with them)"
        )
    return cfg


def _check_same_network(path: Path, stored: Config, run: Config) -> None:
    """Refuse weights whose network differs from the one of the run folder they sit in.

    Weights carry the configuration they were trained with, so a file copied in from another run would
    load without error and silently stand for this run in evaluation and prediction.
    """
    a, b = _flatten(stored.to_dict()), _flatten(run.to_dict())
    changed = sorted(k for k in a.keys() | b.keys() if k.startswith(NETWORK_DEFINING) and a.get(k) != b.get(k))
    if changed:
        shown = ", ".join(f"{k}: {a.get(k)!r} (weights) != {b.get(k)!r} (config.yaml)" for k in changed[:4])
        raise UncolError(f"{path}: weights of another network than this run's config.yaml: {shown}")


def load_weights(
    run_dir: str | Path, which: str = "best", *, overrides: Sequence[str] = ()
) -> tuple[Config, torch.nn.Module, dict[str, Any]]:
    """Network and config of a finished run, from ``checkpoints/{best,final}.pt``.

    Args:
        run_dir: the run folder.
        which: ``best`` or ``final``.
        overrides: ``key=value`` options applied to the returned configuration
            (:func:`inference_config`); the network is built from the stored one.

    Returns:
        ``(config, network in eval mode on CPU, checkpoint metadata)``.
    """
    p = RunPaths(run_dir)
    path = p.best if which == "best" else p.final
    if not path.exists():
        raise UncolError(f"{path}: no {which} checkpoint in this run (has training finished?)")
    state = load_checkpoint(path, "weights file")
    if not isinstance(state, dict) or state.get("kind") != "weights" or not isinstance(state.get("config"), dict):
        raise UncolError(f"{path}: not an uncol weights file")
    cfg = config_from_dict(state["config"])
    moved = relocated_output_dir(cfg, p.root)  # a moved folder: its weights name the old place too
    if moved is not None:
        cfg = dataclasses.replace(cfg, output_dir=moved)
    if p.config.exists():
        _check_same_network(path, cfg, load_run_config(p.root))
    from uncol.models import build_network

    net = build_network(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.train.patch_size)
    load_module_state(net, state["network"], path, f"{cfg.model.arch} network of its configuration")
    net.eval()
    meta = {k: v for k, v in state.items() if k not in ("network", "config")}
    return inference_config(cfg, overrides), net, meta
