"""The training engine: one loop that every training method plugs into.

The engine owns the optimiser, learning-rate schedule, mixed precision, validation-based model
selection, checkpoints (atomic, complete enough to resume bit-identically) and logs (CSV, TensorBoard,
progress bar). A method (``uncol.methods``) only turns a batch into named losses.

Run folder layout (see docs/run_folder.md)::

    RUN/config.yaml  splits.json  log.csv  val.csv  tensorboard/  checkpoints/{latest,best,final}.pt
        metrics_val.json  metrics_test.json  summary.json
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from uncol.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from uncol.checkpoints import load_checkpoint, state_dict_mismatch
from uncol.config import Config, config_from_dict
from uncol.data.index import Problems, scan
from uncol.data.preflight import (
    DISCOVERY,
    BadCase,
    bad_cases_error,
    case_problem,
    discovery_problems,
    load_checked,
    without_bad_cases,
    write_excluded,
)
from uncol.data.readers import load_case
from uncol.data.splits import Splits, load_splits, make_splits, save_splits
from uncol.data.training import SampleSet, StepBatches
from uncol.data.types import Case, CaseData
from uncol.devices import select_device
from uncol.distributed import process_group
from uncol.distributed_training import (
    DataParallel,
    Silent,
    barrier,
    check_replicas,
    device_for_rank,
    gather,
    mean_scalars,
    shard_indices,
    training_ranks,
    use_sync_batchnorm,
)
from uncol.errors import ConfigError, DataError, UncolError
from uncol.inference import predict_labels
from uncol.methods import StepContext, TrainingMethod, build_method, get_method
from uncol.metrics import compute_dice
from uncol.models import build_network, count_parameters
from uncol.runs import (
    CHECKPOINT_VERSION,
    RunPaths,
    branch_checkpoint,
    config_differences,
    read_checkpoint,
)

# ----------------------------------------------------------------------------------------------------------
# Devices, seeds, RNG state


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """All global RNG states, for checkpoints.

    Stored as tensors and plain data only (the NumPy state's ``uint32`` key array as an int64 tensor),
    so that checkpoints load with ``torch.load(weights_only=True)`` (uncol.checkpoints).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (also reads the tuple that older checkpoints hold)."""
    random.setstate(state["python"])
    npy = state["numpy"]
    if isinstance(npy, dict):
        keys = np.asarray(npy["keys"].numpy(), dtype=np.uint32)
        npy = (npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    np.random.set_state(npy)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------
# Logs


class CsvLog:
    """Append-only CSV log that survives resumption (rows after the resumed step are dropped)."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as fh:
                text = fh.read()
            if not text.endswith("\n"):  # a last row torn by a kill or a full disk (a cut "13" reads as step 1)
                text = text[: text.rfind("\n") + 1]
            reader = csv.DictReader(text.splitlines())
            self.fields = list(reader.fieldnames or [])
            rows = [r for r in reader if int(r["step"]) <= resume_step]
            self._rewrite(rows)
        elif path.exists():
            path.unlink()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        def write(p: Path) -> None:
            with open(p, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self.fields or ["step"])
                w.writeheader()
                w.writerows(rows)

        from uncol.atomic import atomic_write

        atomic_write(self.path, write)

    def write(self, row: dict[str, Any]) -> None:
        """Append a row; a new column rewrites the file with the wider header."""
        if self.fields is None or any(k not in self.fields for k in row):
            old: list[dict[str, str]] = []
            if self.path.exists() and self.fields is not None:
                with open(self.path, newline="") as fh:
                    old = list(csv.DictReader(fh))
            self.fields = list(dict.fromkeys([*(self.fields or []), *row.keys()]))
            self._rewrite([*old, row])
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.fields).writerow(row)


# ----------------------------------------------------------------------------------------------------------
# Schedules


def lr_factor(schedule: str, step: int, iterations: int) -> float:
    """Learning-rate multiplier at ``step``: poly (1-t)^0.9, cosine, or constant."""
    t = min(1.0, step / max(1, iterations))
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


@dataclass
class TrainSummary:
    """What a finished (or interrupted) training run reports."""

    run_dir: Path
    steps_done: int
    iterations: int
    best_step: int | None
    best_val_dice: float | None
    seconds: float
    parameters: int
    cpu_seconds: float = 0.0
    #: images drawn into training batches: ``{"labeled": n, "unlabeled": n}`` (views counted).
    images_seen: dict[str, int] | None = None
    #: of those, the images the steps trained on (:meth:`TrainingMethod.images_trained`; fewer where a
    #: stage leaves part of the batch unused).
    images_trained: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "run_dir": str(self.run_dir),
            "steps_done": self.steps_done,
            "iterations": self.iterations,
            "best_step": self.best_step,
            "best_val_dice": self.best_val_dice,
            # milliseconds: a run of a few tiny steps must not round to 0 s (the benchmark reads these)
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "images_seen": self.images_seen or {"labeled": 0, "unlabeled": 0},
            "images_trained": self.images_trained or {"labeled": 0, "unlabeled": 0},
            "parameters": self.parameters,
        }


# ----------------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Trains ``cfg.method`` on ``cfg.data`` into a run folder.

    Args:
        cfg: resolved configuration.
        run_dir: the run folder (created when missing).
        resume: continue from ``checkpoints/latest.pt``; without it an existing checkpoint is an error.
        show_progress: draw a progress bar.
        stop_after: stop once this many steps are done: as if killed (for tests of resumption), or
            with a checkpoint at that step when ``checkpoint_on_stop`` (training in chunks).
        checkpoint_on_stop: write the resumable checkpoint when stopping at ``stop_after``.
        branch_from: start from another run's checkpoint (a ``.pt`` file in its ``checkpoints/``, or its
            run folder for its ``latest.pt``) instead of from scratch. The configurations may differ
            only in options that no step up to the checkpoint's read (the method's
            :meth:`~uncol.methods.base.TrainingMethod.deferred_options`, e.g. UnCoL's stage-2 options
            from its stage-1 checkpoint ``checkpoints/step<N>.pt``) and in speed-only options; the
            splits, logs and best weights up to that step are carried over, so the result equals a
            run from scratch with the new configuration.
        scored_splits: splits scored once training ends (``uncol.api.train``'s ``evaluate_splits``):
            their cases must have labels, which the check before training verifies for the test split
            (validation cases always need them).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        resume: bool = False,
        show_progress: bool = True,
        stop_after: int | None = None,
        checkpoint_on_stop: bool = False,
        branch_from: str | Path | None = None,
        scored_splits: Sequence[str] = ("val", "test"),
    ) -> None:
        self.cfg = cfg
        self.scored_splits = tuple(scored_splits)
        self.branch_from = None if branch_from is None else branch_checkpoint(Path(branch_from))
        self.paths = RunPaths(run_dir)
        self.resume = resume
        self.show_progress = show_progress and training_ranks().is_writer  # one progress bar under torchrun
        self.stop_after = stop_after
        self.checkpoint_on_stop = checkpoint_on_stop
        # Under torchrun with WORLD_SIZE > 1 (docs/distributed.md): this process's share of the work.
        self.ranks = training_ranks()
        self._parallel: DataParallel | None = None
        self.device = device_for_rank(select_device(cfg.train.device), self.ranks)
        self.step = 0  # number of optimiser steps done
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.elapsed = 0.0  # wall-clock seconds of the training loop, across resumptions
        self.cpu_elapsed = 0.0  # CPU seconds of this process (all its threads) in the loop, likewise
        self.images_seen = {"labeled": 0, "unlabeled": 0}  # images drawn into training batches, likewise
        self._val_cases: list[CaseData] | None = None
        self._branching = False  # setting up from branch_from (not resuming this run's own checkpoint)
        self._state_path: Path | None = None  # the checkpoint restored from
        self.excluded: list[BadCase] = []  # cases left out by data.on_bad_case=exclude when the run started
        self._branch_step = 0  # step at which the method's deferred options start (0: none)

    # -- set-up ------------------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any] | None:
        """The checkpoint to continue from (this run's, or the branch source's); writes nothing."""
        p = self.paths
        if p.latest.exists() and not self.resume:
            raise UncolError(
                f"{p.root}: this run folder already has a checkpoint; pass --resume to continue it "
                "or choose another run name (--set name=...)"
            )
        state = None
        if self.resume and p.latest.exists():
            state = read_checkpoint(p.latest)
            saved = config_from_dict(state["config"])
            diff = config_differences(saved, self.cfg, get_method(self.cfg.method.name).speed_options())
            if diff:
                raise ConfigError(
                    f"{p.latest}: cannot resume with a different configuration; changed options: {', '.join(diff)}"
                )
            self._state_path = p.latest
        elif self.branch_from is not None:
            state = read_checkpoint(self.branch_from)
            self._branching = True
            self._state_path = self.branch_from
        return state

    def _check_branch(self, state: dict[str, Any]) -> list[str]:
        """Refuse a branch whose configuration changes what the steps up to the checkpoint computed."""
        src = self.branch_from
        assert src is not None
        start, deferred = self.method.deferred_options()
        saved = config_from_dict(state["config"])
        diff = [k for k in config_differences(saved, self.cfg, self.method.speed_options()) if k != "name"]
        step = int(state["step"])
        if state.get("method") != self.method.name:
            raise ConfigError(f"{src}: a checkpoint of method {state.get('method')!r}, this run is {self.method.name!r}")
        not_deferred = [k for k in diff if k not in deferred]
        if not_deferred:
            raise ConfigError(
                f"{src}: cannot branch from this checkpoint; these options change what its {step} steps "
                f"computed: {', '.join(not_deferred)}"
                + (f" (may differ: {', '.join(sorted(deferred))})" if deferred else "")
            )
        if diff and step > start:
            raise ConfigError(
                f"{src}: the checkpoint is at step {step}, after step {start} from which "
                f"{', '.join(diff)} take effect; branch from checkpoints/step{start}.pt of that run"
            )
        if step >= self.cfg.train.iterations:
            raise ConfigError(f"{src}: the checkpoint is at step {step}, train.iterations={self.cfg.train.iterations}")
        return diff

    def _carry_over(self, state: dict[str, Any], diff: list[str]) -> None:
        """Copy the source run's logs and best weights up to the branch step into this run folder."""
        src_run = RunPaths(self.branch_from.parent.parent)
        p = self.paths
        for a, b in ((src_run.log_csv, p.log_csv), (src_run.val_csv, p.val_csv)):
            if a.exists():
                atomic_write_text(b, a.read_text())  # CsvLog then drops the rows after the branch step
        best = state.get("best")
        if best is None and src_run.best.exists():
            candidate = load_checkpoint(src_run.best, "weights file")
            if isinstance(candidate, dict) and candidate.get("step") == state["best_step"]:
                best = candidate
        if src_run.excluded_cases.exists():  # the splits copied over were made without these cases
            atomic_write_text(p.excluded_cases, src_run.excluded_cases.read_text())
        p.checkpoints.mkdir(parents=True, exist_ok=True)
        if best is not None:
            atomic_torch_save({**best, "config": self.cfg.to_dict()}, p.best)
        else:  # the source run has since selected later weights: select again from the branch on
            self.best_score = self.best_step = None
        atomic_write_json(
            p.branched_from,
            {"checkpoint": str(self.branch_from), "step": int(state["step"]), "changed_options": diff},
        )

    def _make_splits(self, bad: list[BadCase]) -> tuple[Splits, bool]:
        """The run's splits, and whether they are made now (not read from this run or the branch source).

        Splits made now come from a discovery that collects every problem into ``bad`` (a missing or
        orphan label, an unreadable header...) instead of stopping at the first; nothing is saved yet.
        """
        p = self.paths
        if p.splits.exists() and (self.resume or p.latest.exists()):
            return load_splits(p.splits), False
        if self._branching:
            src = RunPaths(self.branch_from.parent.parent).splits
            if not src.exists():
                raise UncolError(f"{self.branch_from}: not inside a run folder (no {src})")
            return load_splits(src), False
        problems = Problems(strict=False)
        discovered = scan(self.cfg.data, problems)
        bad += discovery_problems(problems)
        try:
            return make_splits(discovered, self.cfg.split), True
        except DataError as e:
            if not bad:
                raise
            # Too few cases left once the problems found are set aside: list those, which are the cause.
            split_problem = BadCase(DISCOVERY, e.path, f"cannot split what is left: {e.problem}", excludable=False)
            raise bad_cases_error([*bad, split_problem], "error", resumed=False) from None

    def _check_data(self, bad: list[BadCase], new_splits: bool) -> None:
        """Check the val and test cases, then stop on any problem or leave the bad cases out.

        The labeled and unlabeled cases were checked while loading them into memory (their problems
        are in ``bad`` already); validation keeps the val cases it checked.
        """
        cfg = self.cfg
        bar = self._bar_factory()
        keep = cfg.train.val_max_cases if cfg.train.val_max_cases > 0 else -1
        with bar(total=len(self.splits.val), desc="checking val cases", leave=False) as pb:
            self._val_cases = load_checked(
                self.splits.val, cfg, "val", bad, keep=keep, progress=lambda i, n: pb.update(1)
            )
        needs_test_label = "test" in self.scored_splits
        with bar(total=len(self.splits.test), desc="checking test cases", leave=False) as pb:
            load_checked(
                self.splits.test, cfg, "test", bad, use_labels=needs_test_label, progress=lambda i, n: pb.update(1)
            )
        self.excluded = []
        if not bad:
            return
        mode = cfg.data.on_bad_case if new_splits else "error"
        if mode == "error" or any(not b.excludable for b in bad):
            raise bad_cases_error(bad, mode, resumed=not new_splits)
        self.excluded = list(bad)
        # The val cases kept above are the first good ones: the first val_max_cases of what remains.
        self.splits = without_bad_cases(self.splits, bad)

    def _write_run_folder(self, new_splits: bool) -> None:
        """Create the run folder's first files, once the data has passed its check."""
        p = self.paths
        # atomic_write_text creates the folder: a read-only or full output_dir is an OutputError naming it.
        atomic_write_text(p.config, self.cfg.to_yaml())
        from uncol.atomic import remove_temporaries

        for folder in (p.root, p.checkpoints):  # what a process killed mid-write left (never read)
            remove_temporaries(folder)
        if new_splits or self._branching:
            save_splits(p.splits, self.splits)
        if self.excluded:
            path = write_excluded(p.excluded_cases, self.excluded)
            lines = [f"uncol: data.on_bad_case=exclude: left out {len(self.excluded)} case(s), listed in {path}:"]
            print("\n".join(lines + [f"  - {b}" for b in self.excluded]), file=sys.stderr)

    def setup(self) -> None:
        """Build data, network, method, optimiser and logs; restore state when resuming.

        Before anything is written, every case of every split the run reads is loaded and checked
        (uncol.data.preflight): a problem stops the run, listing all of them, or (``data.on_bad_case``
        ``exclude``, when the run starts) its case is left out and listed in ``excluded_cases.json``.
        """
        cfg = self.cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        state = self._read_state()
        seed_everything(cfg.train.seed)
        bad: list[BadCase] = []
        self.splits, new_splits = self._make_splits(bad)

        def collect(role: str) -> Callable[[Case, UncolError], None]:
            return lambda case, error: bad.append(case_problem(role, case, error))

        bar = self._bar_factory()
        with bar(total=len(self.splits.labeled), desc="loading labeled cases", leave=False) as pb:
            labeled = SampleSet(
                self.splits.labeled, cfg, use_labels=True, progress=lambda i, n: pb.update(1),
                on_bad_case=collect("labeled"),
            )
        network = build_network(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.train.patch_size)
        network = use_sync_batchnorm(network, self.device, cfg.train.sync_batchnorm and self.ranks.distributed)
        self.method: TrainingMethod = build_method(cfg, network)
        # Refused before anything is written: a branch changing what its steps computed, weights of another
        # network (the other modules may take their final shape in setup_data: checked when restored).
        diff = self._check_branch(state) if self._branching else []
        if state is not None:
            self._check_modules(state, only=("network",))
        needs = self.method.data_needs()
        unlabeled = None
        if needs.reads_unlabeled:
            with bar(total=len(self.splits.unlabeled), desc="loading unlabeled cases", leave=False) as pb:
                unlabeled = SampleSet(
                    self.splits.unlabeled, cfg, use_labels=False, progress=lambda i, n: pb.update(1),
                    on_bad_case=collect("unlabeled"),
                )
        elif self.splits.unlabeled:
            # Not read, so not checked: say so rather than pass over them in silence.
            print(
                f"uncol: method {self.method.name!r} trains on no unlabeled images: the {len(self.splits.unlabeled)} "
                "unlabeled case(s) of the split are not read",
                file=sys.stderr,
            )
        self._check_data(bad, new_splits)
        if self.ranks.is_writer:
            self._write_run_folder(new_splits)
        augment = cfg.augment if any((cfg.augment.flip, cfg.augment.rotate90, cfg.augment.rotate_degrees,
                                      cfg.augment.intensity, cfg.augment.noise_std)) else None
        self.batches = StepBatches(
            labeled, cfg.train.batch_size, cfg.train.seed, augment, unlabeled, needs.unlabeled_batch_size, needs.views,
            self.ranks.rank, self.ranks.world_size, needs.crop_multiple,
            [(p.start, p.labeled, p.unlabeled) for p in needs.phases],
        )
        if not self.ranks.is_writer:
            barrier()  # rank 0 prepares first (e.g. fills the teacher cache), the others then read what it wrote
        self.method.setup_data(labeled, unlabeled, self.paths.root, bar)
        if self.ranks.is_writer:
            barrier()
        for m in self.method.modules().values():
            m.to(self.device)
            if self._layout is not None:  # train.channels_last: convolution weights (4D/5D) only
                m.to(memory_format=self._layout)
        if cfg.train.compile:
            # In place (nn.Module.compile): parameter names, hence checkpoints, stay those of the plain network.
            self.method.network.compile()
        if self.ranks.distributed:
            network_params = {id(p) for p in self.method.network.parameters()}
            others = [p for p in self.method.parameters() if id(p) not in network_params]
            self._parallel = DataParallel(self.method.network, others, self.device)
        params = list(self.method.parameters())
        if cfg.train.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.train.lr, momentum=0.9, weight_decay=cfg.train.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        # The method places train.schedule over its phases (default: once over the whole run).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: self.method.lr_factor(s, lambda t, n: lr_factor(cfg.train.schedule, t, n))
        )
        self.use_amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.parameters = count_parameters(self.method.inference_network())
        start, _ = self.method.deferred_options()
        self._branch_step = start if 0 < start < cfg.train.iterations else 0
        if state is not None:
            self._restore(state)
        if self._branching and self.ranks.is_writer:  # the best-so-far of other ranks is never used
            self._carry_over(state, diff)
        resume_step = self.step if state is not None else None
        if not self.ranks.is_writer:  # one writer of the run folder: rank 0
            self.log = self.val_log = self.tb = Silent()
            barrier()  # every rank has read the checkpoint it continues from before rank 0 writes a new one
            return
        self.log = CsvLog(self.paths.log_csv, resume_step)
        self.val_log = CsvLog(self.paths.val_csv, resume_step)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.paths.tensorboard), purge_step=self.step if state is not None else None)
        barrier()

    def _bar_factory(self):
        show = self.show_progress

        def make(**kw):
            return tqdm(disable=not show, dynamic_ncols=True, **kw)

        return make

    # -- checkpoints ---------------------------------------------------------------------------------------

    def save_checkpoint(self, path: Path | None = None, extra: dict[str, Any] | None = None) -> Path:
        """Write everything needed to resume (atomically): weights, EMA, optimiser, scheduler, scaler, step,
        RNG states, best-so-far and the resolved config (plus ``extra`` entries); rank 0 alone writes."""
        if not self.ranks.is_writer:
            return path or self.paths.latest
        state = {
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "method": self.method.name,
            "modules": self.method.state_dict(),
            "method_state": self.method.extra_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "best_score": self.best_score,
            "best_step": self.best_step,
            "elapsed": self.elapsed,
            "cpu_elapsed": self.cpu_elapsed,
            "images_seen": dict(self.images_seen),
            "config": self.cfg.to_dict(),
            **(extra or {}),
        }
        return atomic_torch_save(state, path or self.paths.latest)

    def save_branch_point(self) -> Path:
        """The checkpoint other runs may branch from, with the best weights so far inside (the run's own
        ``best.pt`` may later move past this step)."""
        if not self.ranks.is_writer:
            return self.paths.branch_point(self.step)
        best = None
        if self.best_step is not None and self.paths.best.exists():
            best = load_checkpoint(self.paths.best, "weights file")
        return self.save_checkpoint(self.paths.branch_point(self.step), {"best": best})

    def _check_modules(self, state: dict[str, Any], only: tuple[str, ...] | None = None) -> None:
        """Refuse a checkpoint whose weights do not fit the method's modules (those named in ``only``, or
        all), naming the file and the keys and shapes that differ (not load_state_dict's traceback)."""
        modules = state.get("modules")
        for name, module in self.method.modules().items():
            if only is not None and name not in only:
                continue
            if not isinstance(modules, dict) or name not in modules:
                raise UncolError(f"{self._state_path}: no weights of module {name!r} of method {self.method.name!r}")
            problem = state_dict_mismatch(module, modules[name])
            if problem is not None:
                raise UncolError(
                    f"{self._state_path}: the weights of module {name!r} do not fit this run's "
                    f"{self.cfg.model.arch} network (another architecture or size?): {problem}"
                )

    def _restore(self, state: dict[str, Any]) -> None:
        self._check_modules(state)
        self.method.load_state_dict(state["modules"])
        self.method.load_extra_state(state.get("method_state") or {})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best_score = state["best_score"]
        self.best_step = state["best_step"]
        self.elapsed = float(state.get("elapsed", 0.0))
        self.cpu_elapsed = float(state.get("cpu_elapsed", 0.0))
        self.images_seen = dict(state.get("images_seen", {"labeled": 0, "unlabeled": 0}))

    def _save_weights(self, path: Path, extra: dict[str, Any]) -> None:
        if not self.ranks.is_writer:
            return
        net = self.method.inference_network()
        atomic_torch_save(
            {
                "version": CHECKPOINT_VERSION,
                "kind": "weights",
                "network": net.state_dict(),
                "config": self.cfg.to_dict(),
                **extra,
            },
            path,
        )

    # -- steps -----------------------------------------------------------------------------------------------

    @property
    def _layout(self) -> torch.memory_format | None:
        """Memory layout of the networks and input images (``train.channels_last``); None: the default."""
        if not self.cfg.train.channels_last:
            return None
        return torch.channels_last if self.cfg.spatial_dims == 2 else torch.channels_last_3d

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        layout = self._layout
        if layout is not None:  # image batches (B, C, *spatial); labels and ids keep theirs
            rank = self.cfg.spatial_dims + 2
            for k, v in out.items():
                if torch.is_tensor(v) and v.is_floating_point() and v.dim() == rank:
                    out[k] = v.contiguous(memory_format=layout)
        return out

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimiser step on ``batch``; returns the logged scalars."""
        ctx = StepContext(self.step, self.cfg.train.iterations, self.device)
        self.method.train(True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, enabled=self.use_amp), self._forward_context():
            losses = self.method.train_step(self._to_device(batch), ctx)
        if "loss" not in losses:
            raise RuntimeError(f"method {self.method.name!r} returned no 'loss' entry")  # programming error
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise UncolError(
                f"training diverged at step {self.step}: loss is {loss.item()} "
                "(lower train.lr, check intensities with `uncol data check`)"
            )
        self.scaler.scale(loss).backward()
        if self._parallel is not None:  # DDP averaged the network's gradients during backward
            self._parallel.average_other_gradients()
            self._parallel.sync_buffers()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.method.after_step(ctx)
        return {k: float(v.detach().float().item()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}

    def _forward_context(self) -> contextlib.AbstractContextManager[None]:
        """Under torchrun, the method's forward passes go through DDP; otherwise nothing changes."""
        return contextlib.nullcontext() if self._parallel is None else self._parallel.forward_through(self.method)

    def _validation_cases(self) -> list[CaseData]:
        if self._val_cases is None:
            cases = self.splits.val
            if self.cfg.train.val_max_cases > 0:
                cases = cases[: self.cfg.train.val_max_cases]
            self._val_cases = [load_case(c, self.cfg.data) for c in cases]
        return self._val_cases

    def validation_step(self) -> dict[str, float]:
        """Dice per class on the validation cases (whole cases, as at test time).

        Under torchrun each rank scores its share of the cases; the scores are gathered in case order,
        so every rank gets what one process computes.
        """
        cases = self._validation_cases()
        net = self.method.inference_network()
        was_training = net.training
        net.eval()
        k = self.cfg.data.num_classes
        scores: list[tuple[int, list[float]]] = []
        for i in shard_indices(len(cases), self.ranks):
            data = cases[i]
            pred = predict_labels(net, data, self.cfg, self.device)
            scores.append((i, [compute_dice(pred == c, data.label == c) for c in range(1, k)]))
        net.train(was_training)
        if self.ranks.distributed:
            scores = sorted(s for part in gather(scores) for s in part)
        per_class: list[list[float]] = [[] for _ in range(1, k)]
        for _, dice in scores:
            for c, d in enumerate(dice):
                if not math.isnan(d):
                    per_class[c].append(d)
        out = {f"dice_{c}": float(np.mean(v)) if v else float("nan") for c, v in enumerate(per_class, start=1)}
        valid = [v for v in out.values() if not math.isnan(v)]
        out["dice_mean"] = float(np.mean(valid)) if valid else float("nan")
        return out

    # -- loop ------------------------------------------------------------------------------------------------

    def fit(self) -> TrainSummary:
        """Run (or continue) training until ``train.iterations`` steps are done.

        Under torchrun with several processes, inside a process group (uncol.distributed) unless the
        caller started one.
        """
        if self.ranks.distributed and not torch.distributed.is_initialized():
            with process_group(self.device):
                return self.fit()
        self.setup()
        cfg = self.cfg.train
        start = self.step
        loader = DataLoader(
            self.batches,
            batch_size=None,
            sampler=range(start, cfg.iterations),
            num_workers=cfg.num_workers,
            persistent_workers=False,
        )
        bar = tqdm(
            total=cfg.iterations, initial=start, desc=f"{self.cfg.name} [{self.method.name}]",
            disable=not self.show_progress, dynamic_ncols=True,
        )
        last_val = "-" if self.best_score is None else f"{self.best_score:.4f}"
        t0 = time.perf_counter() - self.elapsed
        c0 = time.process_time() - self.cpu_elapsed
        interrupted = False
        try:
            for batch in loader:
                scalars = self.train_step(batch)
                self.step += 1
                # every rank draws the same number: the global batch is world_size times this one
                self.images_seen["labeled"] += int(batch["image"].shape[0]) * self.ranks.world_size
                if "unlabeled_image" in batch:
                    self.images_seen["unlabeled"] += int(batch["unlabeled_image"].shape[0]) * self.ranks.world_size
                self.elapsed = time.perf_counter() - t0
                self.cpu_elapsed = time.process_time() - c0
                if self.step % max(1, cfg.log_every) == 0 or self.step == cfg.iterations:
                    lr = self.optimizer.param_groups[0]["lr"]
                    if self.ranks.distributed:  # the losses of the global batch, not rank 0's share
                        scalars = mean_scalars(scalars)
                    self.log.write({"step": self.step, "lr": lr, "time_s": round(self.elapsed, 2), **scalars})
                    for k, v in scalars.items():
                        self.tb.add_scalar(f"train/{k}", v, self.step)
                    self.tb.add_scalar("train/lr", lr, self.step)
                if (cfg.val_every and self.step % cfg.val_every == 0) or self.step == cfg.iterations:
                    val = self.validation_step()
                    self._record_validation(val)
                    last_val = f"{val['dice_mean']:.4f}"
                if self.step % max(1, cfg.checkpoint_every) == 0 or self.step == cfg.iterations:
                    self.save_checkpoint()
                if self.step == self._branch_step:
                    self.save_branch_point()
                bar.update(1)
                bar.set_postfix(loss=f"{scalars['loss']:.4f}", val_dice=last_val, best=self._best_text())
                if self.stop_after is not None and self.step >= self.stop_after and self.step < cfg.iterations:
                    if self.checkpoint_on_stop and self.step % max(1, cfg.checkpoint_every):
                        self.save_checkpoint()
                    interrupted = True
                    break
        finally:
            bar.close()
            self.tb.flush()
        if not interrupted and self.step >= cfg.iterations:
            self._save_weights(self.paths.final, {"step": self.step})
            if not self.paths.best.exists():
                # No validation data scored: the final weights are the only candidate.
                self._save_weights(self.paths.best, {"step": self.step, "val_dice": None})
        summary = TrainSummary(
            self.paths.root, self.step, cfg.iterations, self.best_step, self.best_score, self.elapsed, self.parameters,
            self.cpu_elapsed, dict(self.images_seen),
            type(self.method).images_trained(self.cfg, self.step, self.images_seen),
        )
        if self.ranks.distributed:  # same weights and EMA teachers on every rank, or a bug
            check_replicas(self.method.modules(), f"{self.paths.root}, step {self.step}")
        if self.ranks.is_writer:
            # "." for the folder itself: a run folder may be moved or copied, and must not name its old place.
            atomic_write_json(self.paths.summary, summary.to_json() | {"run_dir": "."})
        self.tb.close()
        barrier()  # rank 0 has written everything before any rank returns
        return summary

    def _best_text(self) -> str:
        return "-" if self.best_score is None else f"{self.best_score:.4f}@{self.best_step}"

    def _record_validation(self, val: dict[str, float]) -> None:
        self.val_log.write({"step": self.step, **{k: round(v, 6) for k, v in val.items()}})
        for k, v in val.items():
            self.tb.add_scalar(f"val/{k}", v, self.step)
        score = val["dice_mean"]
        if not math.isnan(score) and (self.best_score is None or score > self.best_score):
            self.best_score = score
            self.best_step = self.step
            self._save_weights(self.paths.best, {"step": self.step, "val_dice": score})
