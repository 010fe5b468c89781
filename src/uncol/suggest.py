"""Which scans to annotate next: ``uncol suggest RUN [--unlabeled DIR ...] [--top N]`` (docs/suggest.md).

A trained run predicts every unlabeled scan (files and folders, or the run's own unlabeled split);
each scan is scored by the mean predictive entropy and, when the run has a foundation teacher, by the
teacher's disagreement with the prediction (:mod:`uncol.suggestions`). Scans are grouped by patient
(``data.group_regex``) and the groups ranked; the ranking goes to ``OUT/suggestions.csv`` (default
``RUN/suggestions/``), and ``--write-list`` turns the top groups into a ``split.labeled_list`` file for
the next run. As in ``uncol predict``, a file that cannot be read or predicted is listed as a failure
and the others are ranked.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from uncol.config import Config
from uncol.data.labeled_list import write_labeled_list
from uncol.data.splits import load_splits
from uncol.data.types import CaseData
from uncol.devices import select_device
from uncol.errors import ConfigError, DataError
from uncol.inference import predict_probabilities_batch
from uncol.prediction import failure_reason
from uncol.prediction_result import PredictionFailure
from uncol.runs import RunPaths, inference_config, load_run_config, load_weights
from uncol.suggestions.disagreement import TeacherDisagreement
from uncol.suggestions.ranking import GroupSuggestion, rank_groups
from uncol.suggestions.scores import ScanScore, entropy_scores
from uncol.suggestions.sources import Scan, scans_from_inputs, scans_from_split
from uncol.suggestions.table import write_suggestions
from uncol.threads import use_threads

__all__ = ["SUGGESTIONS_DIR", "SuggestResult", "suggest", "write_next_list"]

#: Default output folder inside the run folder (``uncol report`` looks for it there).
SUGGESTIONS_DIR = "suggestions"


@dataclass
class SuggestResult:
    """Outcome of :func:`suggest`.

    Attributes:
        groups: every group, rank 1 first.
        scans: every scan scored, in input order.
        failures: the inputs that could not be read or predicted.
        csv: the ``suggestions.csv`` written.
        top: how many groups were asked for (``None``: all).
        teacher: the foundation teacher's identity, or ``None`` when ranked by entropy alone.
        labeled_list: the ``split.labeled_list`` file written, if any.
        threads: the CPU threads torch used.
    """

    groups: list[GroupSuggestion]
    scans: list[ScanScore]
    failures: list[PredictionFailure] = field(default_factory=list)
    csv: Path = Path()
    top: int | None = None
    teacher: str | None = None
    labeled_list: Path | None = None
    threads: int = 0

    @property
    def ok(self) -> bool:
        """Whether every input was scored."""
        return not self.failures

    @property
    def top_groups(self) -> list[GroupSuggestion]:
        """The ``top`` highest-ranked groups (all of them without ``top``)."""
        return self.groups if self.top is None else self.groups[: self.top]


def _chunks(scans: Sequence[Scan], cfg: Config) -> Iterator[Sequence[Scan]]:
    """Scans predicted together: a 2D network batches slices across scans, a 3D one takes one volume."""
    size = max(1, cfg.eval.slice_batch_size) if cfg.spatial_dims == 2 else 1
    for start in range(0, len(scans), size):
        yield scans[start : start + size]


def _predict(
    net: torch.nn.Module, loaded: Sequence[CaseData], cfg: Config, dev: torch.device
) -> list[np.ndarray | Exception]:
    """Probabilities of each loaded scan, or the exception that stopped it (each alone after a batch failure)."""
    try:
        return list(predict_probabilities_batch(net, loaded, cfg, dev))
    except Exception:  # noqa: BLE001 - find out which scan of the batch failed by predicting each alone
        outcomes: list[np.ndarray | Exception] = []
        for data in loaded:
            try:
                outcomes.append(predict_probabilities_batch(net, [data], cfg, dev)[0])
            except Exception as exc:  # noqa: BLE001 - recorded against this scan
                outcomes.append(exc)
        return outcomes


def _teacher(cfg: Config, device: str | None, use_cache: bool) -> TeacherDisagreement:
    """The run's foundation teacher, ready to judge predictions."""
    from uncol import teachers

    tc = cfg.teacher if device is None else dataclasses.replace(cfg.teacher, device=device)
    teacher = teachers.build_teacher(tc)
    cache = teachers.open_cache(cfg, teacher) if use_cache else None
    return TeacherDisagreement(cfg, teacher, cache)


def _score_all(
    net: torch.nn.Module,
    scans: Sequence[Scan],
    cfg: Config,
    dev: torch.device,
    judge: TeacherDisagreement | None,
    failures: list[PredictionFailure],
    show_progress: bool,
) -> list[ScanScore]:
    """Read, predict and score every scan; a scan that fails is added to ``failures`` by name."""
    scores: list[ScanScore] = []
    with tqdm(total=len(scans), desc="suggest", disable=not show_progress, dynamic_ncols=True) as bar:
        for chunk in _chunks(scans, cfg):
            loaded: list[tuple[Scan, CaseData]] = []
            for scan in chunk:
                try:
                    loaded.append((scan, scan.read(cfg)))
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                    failures.append(PredictionFailure(scan.files[0], failure_reason(exc)))
            outcomes = _predict(net, [d for _, d in loaded], cfg, dev) if loaded else []
            for (scan, data), probs in zip(loaded, outcomes, strict=True):
                try:
                    if isinstance(probs, Exception):
                        raise probs
                    mean, foreground = entropy_scores(probs)
                    disagreement = judge(data, probs) if judge is not None else None
                    scores.append(ScanScore(scan.case_id, scan.group, scan.files, scan.source, mean, foreground,
                                            disagreement))
                except Exception as exc:  # noqa: BLE001 - recorded against this scan
                    failures.append(PredictionFailure(scan.files[0], failure_reason(exc)))
            bar.update(len(chunk))
            if failures:
                bar.set_postfix(failed=len(failures))
    return scores


def write_next_list(
    path: str | Path, run_dir: str | Path, groups: Sequence[GroupSuggestion], new_only: bool = False
) -> Path:
    """Write a ``split.labeled_list`` file for the next run: the run's labeled groups, then ``groups``.

    Args:
        path: the file to write.
        run_dir: the run whose labeled groups (``splits.json``) come first.
        groups: the suggested groups to add, in rank order.
        new_only: write the suggested groups only.

    Returns:
        The path written.
    """
    blocks: list[tuple[str, Sequence[str]]] = []
    if not new_only:
        labeled = list(dict.fromkeys(c.group for c in load_splits(RunPaths(run_dir).splits).labeled))
        blocks.append((f"labeled in {run_dir} ({len(labeled)} groups)", labeled))
    names = [g.group for g in groups]
    blocks.append((f"suggested by uncol suggest {run_dir}: the top {len(names)} groups", names))
    return write_labeled_list(path, blocks)


def suggest(
    run_dir: str | Path,
    unlabeled: Sequence[str | Path] | None = None,
    top: int | None = None,
    out: str | Path | None = None,
    threads: int | None = None,
    device: str | None = None,
    *,
    checkpoint: str | None = None,
    use_teacher: bool = True,
    use_cache: bool = True,
    write_list: str | Path | None = None,
    new_only: bool = False,
    overrides: Sequence[str] = (),
    show_progress: bool = True,
) -> SuggestResult:
    """Rank unlabeled scans (grouped by patient) by how much annotating them should help.

    Args:
        run_dir: a finished run folder.
        unlabeled: image files and folders (any format ``uncol predict`` reads); ``None``: the run's own
            unlabeled split (``splits.json``).
        top: how many groups to suggest (``--write-list`` and the report); ``None``: all are ranked.
        out: output folder (default ``RUN/suggestions``).
        threads: CPU threads for torch (default: the run's ``train.threads``, else the cores).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the network and the teacher (default: the
            run's ``train.device`` and ``teacher.device``).
        checkpoint: ``best`` or ``final`` (default: the run's ``eval.checkpoint``).
        use_teacher: include the foundation teacher's disagreement when the run has a teacher
            (``teacher.name`` not ``none``); ``False`` ranks by entropy alone.
        use_cache: let the teacher's encoder outputs go through the run's feature cache.
        write_list: also write the next run's ``split.labeled_list`` file here (needs ``top``).
        new_only: the list names the suggested groups only, not the run's labeled ones too.
        overrides: ``key=value`` inference options, as for ``uncol predict``.
        show_progress: draw a progress bar.

    Returns:
        The ranking, the scans' scores and the failures.

    Raises:
        UncolError: problems that concern every scan (not a run folder, an invalid option, no scan, no
            scan that could be scored).
    """
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ConfigError(f"top: a number of groups >= 1 is needed, got {top!r}")
    if write_list is not None and top is None:
        raise ConfigError("write_list: say how many groups to label with top (--top N)")
    stored = load_run_config(run_dir)
    which = checkpoint or inference_config(stored, overrides).eval.checkpoint
    cfg, net, meta = load_weights(run_dir, which, overrides=overrides)
    if unlabeled is None:
        scans, failures = scans_from_split(run_dir), []
    else:
        scans, failures = scans_from_inputs(unlabeled, cfg.data.group_regex)
    if not scans:
        raise DataError(None, "nothing to rank: " + "; ".join(str(f) for f in failures))
    used_threads = use_threads(threads, cfg.train.threads)
    dev = select_device(device or cfg.train.device)
    net.to(dev)
    judge = _teacher(cfg, device, use_cache) if use_teacher and cfg.teacher.name != "none" else None
    scores = _score_all(net, scans, cfg, dev, judge, failures, show_progress)
    if not scores:
        raise DataError(None, "no scan could be scored: " + "; ".join(str(f) for f in failures[:5]))
    groups = rank_groups(scores)
    folder = Path(out) if out is not None else RunPaths(run_dir).root / SUGGESTIONS_DIR
    info: dict[str, Any] = {
        "run": str(run_dir),
        "checkpoint": which,
        "checkpoint_step": meta.get("step"),
        "unlabeled": "split" if unlabeled is None else [str(u) for u in unlabeled],
        "ranking": "entropy+teacher" if judge is not None else "entropy",
        "teacher": judge.teacher.identity if judge is not None else None,
        "group_regex": cfg.data.group_regex or None,
        "top": top,
        "groups": len(groups),
        "scans": len(scores),
        "entropy_unit": "nats",
        "failures": [{"input": str(f.input), "reason": f.reason} for f in failures],
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    csv_path = write_suggestions(folder, groups, scores, info)
    result = SuggestResult(groups, scores, failures, csv_path, top, info["teacher"], None, used_threads)
    if write_list is not None:
        result.labeled_list = write_next_list(write_list, run_dir, result.top_groups, new_only)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return result
