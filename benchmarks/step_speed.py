"""UnCoL stage-2 training step against a Mean Teacher step, same network, batch and resolution (issue 15 part 3).

Usage::

    python benchmarks/step_speed.py [--size 256] [--batch 2] [--unlabeled-batch 2] [--warmup 3] [--n 12]
                                    [--teacher fake|litemedsam] [--profile 4] [--json step.json]

Both runs train the UnCoL student of ``configs/acdc_uncol.yaml`` (``model.arch: uncol_student2d``) on
one synthetic ACDC-like HDF5 dataset written to a temporary folder (``tests/fixtures_data.py``: slices of
``size x size`` with every class present, so stage 2 prompts every class). Each run is a real
:class:`uncol.engine.Trainer` after :meth:`~uncol.engine.Trainer.setup`; a timed step is
:meth:`~uncol.engine.Trainer.train_step` (forward, backward, optimiser, scheduler and EMA update) on a
batch drawn beforehand (data loading is ``benchmarks/loader_speed.py``'s subject), at a step index
inside UnCoL's stage 2 for both methods:

* **UnCoL stage 2** (``method.uncol``): ``batch`` labeled + ``unlabeled_batch`` unlabeled images;
  EMA teacher forward, the foundation teacher prompted from its pseudo-labels (image embeddings read
  from the warm teacher cache: the set-up filled it), fused pseudo-labels, bidirectional copy-paste,
  adapter context, student forward on the ``2 x batch`` mixed images, visual distillation.
* **Mean Teacher** (``method.mean_teacher``, the same student network): the student forward on the
  ``batch + unlabeled_batch`` images, the EMA teacher on the noisy unlabeled ones, softmax MSE.

The foundation teacher is ``--teacher fake`` (default): the stand-in of ``tests/fake_teacher.py``, with
the real interface, the real cache format and code path, but a near-free encoder and decoder, so the
ratio is what UnCoL's own code adds; or ``--teacher litemedsam``, the real LiteMedSAM (its encoder fills
the cache once during set-up, a few seconds per image; the mask decoder runs at every step).

The two steps alternate (A, B, A, B...) on one thread, so machine load slows both alike; the figure to
compare across machines is the ratio within one run. ``--profile N`` then runs N more UnCoL steps under
:mod:`torch.profiler` and prints where the time goes: UnCoL's parts (labelled with
``record_function``) and the top operators by self CPU time.

Like the ``uncol`` command, the script first keeps freed memory in the process (:mod:`uncol.allocator`;
``UNCOL_MALLOC_TUNING=0`` leaves glibc's defaults, under which page faults cost up to 20% more time).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
# tests/: the stand-in teacher and the synthetic dataset writer; benchmarks/: student_cost's timing helpers.
sys.path[:0] = [str(REPO / "tests"), str(REPO / "benchmarks")]

from student_cost import _summary, _time_once  # noqa: E402

from fake_teacher import FakeTeacher  # noqa: E402
from fixtures_data import make_hdf5_dataset  # noqa: E402
from uncol import teachers  # noqa: E402
from uncol.config import Config, config_from_dict, load_config  # noqa: E402
from uncol.engine import Trainer  # noqa: E402

STUDENT_CONFIG = REPO / "configs" / "acdc_uncol.yaml"
#: The issue's target: an UnCoL stage-2 step at most this multiple of a Mean Teacher step.
TARGET = 1.3
#: The stand-in teacher's layers (tests/fake_teacher.py) and the width of its fused features.
FAKE_LAYERS = ["stage1", "stage2", "neck", "fused"]
FAKE_FUSED_WIDTH = 8
#: Iterations of the benchmark runs; UnCoL's stage 2 starts half-way, where the timed steps are.
ITERATIONS = 1000
STAGE2_START = ITERATIONS // 2


def _fake_factory(tc: Any) -> FakeTeacher:
    return FakeTeacher(layers=tc.layers, token_grid=tc.token_grid, size=64, batch_size=tc.batch_size)


@contextlib.contextmanager
def fake_teacher_registered() -> Iterator[None]:
    """``teacher.name=litemedsam`` builds the stand-in teacher inside the block."""
    before = teachers.TEACHER_FACTORIES["litemedsam"]
    teachers.TEACHER_FACTORIES["litemedsam"] = _fake_factory
    try:
        yield
    finally:
        teachers.TEACHER_FACTORIES["litemedsam"] = before


def make_configs(
    root: Path,
    size: int,
    batch: int,
    unlabeled_batch: int,
    teacher: str = "fake",
    channels: list[int] | None = None,
    train: dict[str, Any] | None = None,
    foundation_refresh: float = 0.0,
) -> tuple[Config, Config]:
    """The UnCoL and Mean Teacher configurations on a synthetic dataset written under ``root``.

    Args:
        root: temporary folder (dataset, runs, teacher cache).
        size: square slice side (multiple of 16).
        batch: labeled images per step (UnCoL: ``stage2_labeled_batch`` too, so every one is used).
        unlabeled_batch: unlabeled images per step.
        teacher: ``fake`` (stand-in) or ``litemedsam``.
        channels: backbone widths (``None``: the config's).
        train: further ``train`` options of both (e.g. ``{"channels_last": True}``).
        foundation_refresh: UnCoL's ``method.uncol.foundation_refresh`` (0: a decode per drawn image and step).
    """
    patients = max(2, batch) + max(2, unlabeled_batch)
    data = make_hdf5_dataset(
        root / "data", n_train=patients, n_val=1, n_test=1, slices=2, shape=(size, size), num_classes=4
    )
    base = load_config(STUDENT_CONFIG).to_dict()
    base["data"] = dataclasses.asdict(data) | {"normalize": "none", "class_names": []}
    base["split"] = {"labeled": max(2, batch), "labeled_order": "list", "val_fraction": 0.0, "test_fraction": 0.0}
    base["output_dir"] = str(root / "runs")
    base["train"] |= {
        "iterations": ITERATIONS, "batch_size": batch, "patch_size": [size, size], "threads": 1, "device": "cpu",
        "val_every": 0, "checkpoint_every": ITERATIONS, "log_every": ITERATIONS, "num_workers": 0,
    } | (train or {})
    if channels is not None:
        base["model"]["channels"] = channels
    uncol = _deep(base)
    uncol["name"] = "speed_uncol"
    uncol["method"]["uncol"] |= {
        "unlabeled_batch_size": unlabeled_batch, "stage2_labeled_batch": batch, "stage1_fraction": 0.5,
        "foundation_refresh": foundation_refresh,
        # The class-wise gate is measured once at set-up; keep it (it changes what stage 2 computes).
    }
    uncol["teacher"] |= {"cache_dir": str(root / "cache"), "device": "cpu"}
    if teacher == "fake":
        uncol["teacher"] |= {"layers": FAKE_LAYERS, "token_grid": 8}
        uncol["model"]["context_dims"] = [FAKE_FUSED_WIDTH]
    mt = _deep(base)
    mt["name"] = "speed_mean_teacher"
    mt["method"] = {"name": "mean_teacher", "mean_teacher": {"unlabeled_batch_size": unlabeled_batch}}
    mt["teacher"] = {"name": "none"}
    mt["model"]["context_dims"] = []
    return config_from_dict(uncol), config_from_dict(mt)


def _deep(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep(v) for v in d]
    return d


def prepared_trainer(cfg: Config, run_dir: Path) -> Trainer:
    """A trainer after set-up (data in memory, teacher targets computed, the teacher cache filled)."""
    trainer = Trainer(cfg, run_dir, show_progress=False)
    trainer.setup()
    return trainer


def timed_step(trainer: Trainer, batch: dict[str, Any], step: int) -> float:
    """Seconds of one :meth:`Trainer.train_step` at ``step``."""
    trainer.step = step
    return _time_once(lambda: trainer.train_step(batch))


#: UnCoL's parts, labelled in the profile: (object attribute path, label).
PROFILED_PARTS = (
    ("method._teachers", "uncol: teachers (EMA forward + foundation prompts + fusion)"),
    ("method.targets_u.pseudo_label_probabilities", "uncol: foundation teacher prompted (decoder + cache reads)"),
    ("method.cache.encode", "uncol: teacher cache reads"),
    ("method.teacher.decode", "uncol: foundation mask decoder"),
    ("method.labeled_context", "uncol: labeled adapter context"),
    ("method.targets_l.visual_targets", "uncol: visual targets (labeled)"),
    ("method.targets_u.visual_targets", "uncol: visual targets (unlabeled)"),
    ("method._distill", "uncol: distillation heads + MSE"),
    ("method.ema.update", "EMA update"),
    ("method.network.forward", "student forward"),
)


@contextlib.contextmanager
def labelled_parts(trainer: Trainer, parts: tuple[tuple[str, str], ...] = PROFILED_PARTS) -> Iterator[None]:
    """Wrap the named bound methods in ``record_function`` labels for the duration of the block."""
    undo: list[tuple[Any, str]] = []
    for path, label in parts:
        *owner_path, attr = path.split(".")
        owner: Any = trainer
        for name in owner_path:
            owner = getattr(owner, name, None)
        if owner is None or not hasattr(owner, attr):
            continue
        fn = getattr(owner, attr)

        def wrapped(*a: Any, _fn: Callable[..., Any] = fn, _label: str = label, **k: Any) -> Any:
            with torch.profiler.record_function(_label):
                return _fn(*a, **k)

        functools.update_wrapper(wrapped, fn)
        setattr(owner, attr, wrapped)
        undo.append((owner, attr))
    try:
        yield
    finally:
        for owner, attr in undo:
            delattr(owner, attr)  # the instance attribute goes; the class's method is back


@contextlib.contextmanager
def counted_prompts(trainer: Trainer, counter: list[int]) -> Iterator[None]:
    """Add the number of prompts (classes) of every foundation-teacher decode to ``counter[0]`` in the block."""
    teacher = getattr(trainer.method, "teacher", None)
    if teacher is None:
        yield
        return
    decode = teacher.decode

    def counting(encoded: Any, prompts: Any) -> Any:
        counter[0] += int(prompts.present.sum())
        return decode(encoded, prompts)

    teacher.decode = counting
    try:
        yield
    finally:
        del teacher.decode  # the class's method is back


def profile_steps(trainer: Trainer, batches: list[dict[str, Any]], start: int, top: int = 15) -> dict[str, Any]:
    """Profile ``len(batches)`` training steps: labelled parts and the top operators by self CPU time.

    Returns:
        ``{"step_ms": mean ms per step, "parts": {label: ms per step}, "top_ops": [(op, self ms per step,
        calls per step)], "table": the profiler's table}``.
    """
    n = len(batches)
    with labelled_parts(trainer), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            with torch.profiler.record_function("training step"):
                trainer.step = start + i
                trainer.train_step(b)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    labels = {label for _, label in PROFILED_PARTS} | {"training step"}
    parts = {e.key: e.cpu_time_total / 1000.0 / n for e in events if e.key in labels}
    ops = sorted((e for e in events if e.key not in labels), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "step_ms": 1000.0 * wall / n,
        "parts": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
        "top_ops": [(e.key, e.self_cpu_time_total / 1000.0 / n, e.count / n) for e in ops[:top]],
        "table": events.table(sort_by="self_cpu_time_total", row_limit=top),
    }


def measure(
    size: int = 256,
    batch: int = 2,
    unlabeled_batch: int = 2,
    warmup: int = 3,
    n: int = 12,
    teacher: str = "fake",
    profile: int = 0,
    channels: list[int] | None = None,
    workdir: Path | None = None,
    foundation_refresh: float = 0.0,
) -> dict[str, Any]:
    """Time UnCoL stage-2 steps against Mean Teacher steps, alternating; optionally profile UnCoL.

    Args:
        size: square slice side.
        batch: labeled images per step.
        unlabeled_batch: unlabeled images per step.
        warmup: untimed steps of each first.
        n: timed steps of each.
        teacher: ``fake`` or ``litemedsam``.
        profile: UnCoL steps to profile afterwards (0: none).
        channels: backbone widths (``None``: the config's).
        workdir: folder for the dataset, runs and cache (``None``: a temporary one, removed).
        foundation_refresh: UnCoL's ``method.uncol.foundation_refresh``; with it > 0 the few unlabeled images of
            the synthetic set are decoded in the warm-up steps and the timed steps reuse those decodes (a warm
            memo: the steady state of a window, not a run's average; see docs/speed.md).

    Returns:
        ``{"uncol", "mean_teacher"}`` -> ms per step summaries, ``ratio`` (of the medians),
        ``paired_ratio`` (median of per-pair ratios), ``decoder_calls_per_step`` and ``prompts_per_step``
        (foundation-teacher decodes and prompted classes in a timed UnCoL step), the input shape and,
        with ``profile``, the profile.
    """
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uncol-step-speed-")))
        if teacher == "fake":
            stack.enter_context(fake_teacher_registered())
        cfg_u, cfg_m = make_configs(root, size, batch, unlabeled_batch, teacher, channels,
                                    foundation_refresh=foundation_refresh)
        t0 = time.perf_counter()
        uc = prepared_trainer(cfg_u, root / "runs" / "uncol")
        mt = prepared_trainer(cfg_m, root / "runs" / "mean_teacher")
        setup_s = time.perf_counter() - t0
        total = warmup + n + profile
        steps = [STAGE2_START + i for i in range(total)]
        batches_u = [uc.batches[s] for s in steps]
        batches_m = [mt.batches[s] for s in steps]
        memo = getattr(uc.method, "memo", None)
        if memo is not None:
            # A warm memo: every unlabeled image decoded once in the window the timed steps fall in.
            ids = list(range(len(memo.targets.samples)))
            whole = [((False,) * len(cfg_u.train.patch_size), 0, 0.0)] * len(ids)
            memo.probabilities(ids, whole, uc.method.ema.module, STAGE2_START, torch.device("cpu"))
        stats = uc.method.targets_u.stats if uc.method.targets_u is not None else None
        times: dict[str, list[float]] = {"uncol": [], "mean_teacher": []}
        decoded_before = 0
        prompts = [0]
        with counted_prompts(uc, prompts):
            for i in range(warmup + n):
                if i == warmup:
                    decoded_before = stats.decoded_slices if stats is not None else 0
                    prompts[0] = 0
                tu = timed_step(uc, batches_u[i], steps[i])
                tm = timed_step(mt, batches_m[i], steps[i])
                if i >= warmup:
                    times["uncol"].append(tu)
                    times["mean_teacher"].append(tm)
        out: dict[str, Any] = {k: _summary(v) for k, v in times.items()}
        out["ratio"] = out["uncol"]["median_ms"] / out["mean_teacher"]["median_ms"]
        out["paired_ratio"] = statistics.median(u / m for u, m in zip(times["uncol"], times["mean_teacher"], strict=True))
        out["decoder_calls_per_step"] = (stats.decoded_slices - decoded_before) / n if stats is not None else 0.0
        out["prompts_per_step"] = prompts[0] / n
        out["input"] = {"size": size, "batch": batch, "unlabeled_batch": unlabeled_batch, "teacher": teacher,
                        "foundation_refresh": foundation_refresh}
        out["setup_s"] = setup_s
        if profile:
            out["profile"] = profile_steps(uc, batches_u[warmup + n:], steps[warmup + n])
        return out


def format_report(r: dict[str, Any]) -> str:
    """Markdown table of the step times and the ratio against the target (plus the profile, if any)."""

    def row(label: str, s: dict[str, Any]) -> str:
        return f"| {label} | {s['median_ms']:.0f} ({s['min_ms']:.0f}-{s['max_ms']:.0f}) | {s['n']} |"

    i = r["input"]
    lines = [
        f"Student `uncol_student2d`, {i['size']}x{i['size']}, {i['batch']} labeled + {i['unlabeled_batch']} unlabeled "
        f"images per step, foundation teacher: {i['teacher']}, method.uncol.foundation_refresh "
        f"{i.get('foundation_refresh', 0.0):g}",
        "",
        "| training step (train_step: fwd + bwd + optimiser + EMA) | ms, median (min-max) | steps |",
        "|---|---|---|",
        row("Mean Teacher", r["mean_teacher"]),
        row("UnCoL stage 2 (warm teacher cache)", r["uncol"]),
        "",
        f"- UnCoL stage 2 / Mean Teacher: {r['ratio']:.2f}x (paired {r['paired_ratio']:.2f}x); "
        f"target <= {TARGET}x: {'met' if r['ratio'] <= TARGET else 'NOT met'}",
        f"- foundation-teacher decoder calls per UnCoL step: {r['decoder_calls_per_step']:.1f} "
        f"({r['prompts_per_step']:.1f} prompted classes)",
    ]
    prof = r.get("profile")
    if prof:
        lines += ["", f"Profile of UnCoL stage 2 ({prof['step_ms']:.0f} ms per step under the profiler):", "",
                  "| part (inclusive) | ms per step |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in prof["parts"].items()]
        lines += ["", "| operator | self ms per step | calls per step |", "|---|---|---|"]
        lines += [f"| `{k}` | {ms:.1f} | {c:.0f} |" for k, ms, c in prof["top_ops"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the report and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="square slice side (multiple of 16)")
    p.add_argument("--batch", type=int, default=2, help="labeled images per step")
    p.add_argument("--unlabeled-batch", type=int, default=2, help="unlabeled images per step")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each method first")
    p.add_argument("--n", type=int, default=12, help="timed steps of each method")
    p.add_argument("--teacher", choices=("fake", "litemedsam"), default="fake", help="foundation teacher")
    p.add_argument("--profile", type=int, default=0, help="UnCoL steps to profile afterwards")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="backbone widths (default: the config's)")
    p.add_argument("--foundation-refresh", type=float, default=0.0,
                   help="UnCoL's method.uncol.foundation_refresh (0: decode every drawn image at every step)")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    from uncol.allocator import tune_malloc

    tune_malloc()  # as the `uncol` command does, so the figures are those of `uncol train`
    torch.set_num_threads(1)
    start = time.perf_counter()
    r = measure(a.size, a.batch, a.unlabeled_batch, a.warmup, a.n, a.teacher, a.profile, a.channels,
                foundation_refresh=a.foundation_refresh)
    print(f"torch {torch.__version__}, 1 thread, {time.perf_counter() - start:.0f} s in all "
          f"(set-up {r['setup_s']:.0f} s)\n")
    print(format_report(r))
    if a.json:
        from uncol.atomic import atomic_write_json

        atomic_write_json(a.json, {k: v for k, v in r.items() if k != "profile"}
                          | ({"profile": {k: v for k, v in r["profile"].items() if k != "table"}} if a.profile else {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
