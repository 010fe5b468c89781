"""Data loading against what a training step consumes, with ``train.num_workers`` 0 and 2 (issue 15 part 3).

Usage::

    python benchmarks/loader_speed.py [--dataset hippocampus|acdc|demo|synthetic] [--cases 30] [--steps 8]
                                      [--rounds 2] [--workers 0 2] [--json loader.json]

The training loop draws its batches through ``torch.utils.data.DataLoader(StepBatches, batch_size=None,
sampler=range(start, iterations), num_workers=train.num_workers)`` (uncol.engine): the cases are read
(NIfTI/HDF5 readers), normalised and resized once at set-up, then every step crops and augments its
labeled (and unlabeled) images from memory. This script builds a real :class:`uncol.engine.Trainer` for
a shipped configuration on a real-format dataset, then measures, on one torch thread:

* **set-up**: reading and preparing every case (seconds, and per case);
* **loader throughput**: images per second (labeled + unlabeled) delivered by that DataLoader with each
  ``--workers`` value, over ``--steps`` steps after the first batch (whose wait, including the
  workers' start, is reported apart);
* **consumption**: images per step / the median :meth:`~uncol.engine.Trainer.train_step` time of the
  configuration's method, on batches drawn beforehand;

and reports loader throughput / consumption against the issue's target (at least 3x). The three
measurements alternate ``--rounds`` times, so machine load affects all of them alike.

Datasets (``--dataset``): ``hippocampus`` (MSD Task04 NIfTI volumes from ``../shared/data``, the first
``--cases`` cases, ``configs/hippocampus_mean_teacher.yaml``: 3D patches 40x56x40, free rotation, 4 + 4
images per step); ``acdc`` (ACDC HDF5 slices from ``../shared/data``, the slices of the first ``--cases``
patients in list order, ``configs/acdc_mean_teacher.yaml``: 256x256, free rotation, 8 + 8); ``demo``
(the built-in demo's NIfTI slabs, written to a temporary folder by
:func:`uncol.demo_run.build_demo_dataset`, the demo's supervised configuration: 96x112, 4 per step);
``synthetic`` (small NIfTI volumes from ``tests/fixtures_data.py``, for tests).

Like the ``uncol`` command, the script first keeps freed memory in the process (:mod:`uncol.allocator`;
``UNCOL_MALLOC_TUNING=0`` leaves glibc's defaults, under which page faults cost up to 20% more time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]

from student_cost import _summary, _time_once  # noqa: E402

from uncol.config import Config, config_from_dict, load_config  # noqa: E402
from uncol.engine import Trainer  # noqa: E402

#: The issue's target: the loader delivers at least this multiple of what a training step consumes.
TARGET = 3.0
DATASETS = ("hippocampus", "acdc", "demo", "synthetic")


def shared_data() -> Path:
    """The shared real datasets: ``$UNCOL_SHARED_DATA`` or ``../shared/data`` next to the repository."""
    return Path(os.environ.get("UNCOL_SHARED_DATA", REPO.parent / "shared" / "data"))


def _common(values: dict[str, Any], root: Path, name: str) -> dict[str, Any]:
    """Benchmark settings on top of a configuration: one thread, CPU, no validation, output in ``root``."""
    values["name"] = name
    values["output_dir"] = str(root / "runs")
    values["train"] |= {"threads": 1, "device": "cpu", "val_every": 0, "log_every": 10**6, "checkpoint_every": 10**6}
    return values


def hippocampus_config(root: Path, cases: int) -> Config:
    """``configs/hippocampus_mean_teacher.yaml`` on the first ``cases`` Hippocampus cases (linked into ``root``)."""
    src = shared_data() / "Hippocampus" / "TrainingSet"
    names = sorted(p.name for p in (src / "images").glob("*.nii.gz"))[:cases]
    for sub in ("images", "labels"):
        (root / "data" / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / "data" / sub / n).symlink_to(src / sub / n)
    values = load_config(REPO / "configs" / "hippocampus_mean_teacher.yaml").to_dict()
    values["data"]["root"] = str(root / "data")
    values["split"]["labeled"] = 0.25  # a few labeled cases of the subset; the rest unlabeled
    return config_from_dict(_common(values, root, "loader_hippocampus"))


def acdc_config(root: Path, cases: int) -> Config:
    """``configs/acdc_mean_teacher.yaml`` on the slices of the first ``cases`` ACDC training patients."""
    src = shared_data() / "ACDC"
    slices = (src / "train_slices.list").read_text().split()
    patients: list[str] = []
    for s in slices:
        p = s.split("_")[0]
        if p not in patients:
            patients.append(p)
    keep = set(patients[:cases])
    root.mkdir(parents=True, exist_ok=True)
    lists = {
        "train_list": [s for s in slices if s.split("_")[0] in keep],
        "val_list": (src / "val.list").read_text().split()[:1],
        "test_list": (src / "test.list").read_text().split()[:1],
    }
    values = load_config(REPO / "configs" / "acdc_mean_teacher.yaml").to_dict()
    values["data"]["root"] = str(src)
    for key, entries in lists.items():
        path = root / f"{key}.list"
        path.write_text("\n".join(entries) + "\n")
        values["data"][key] = str(path)  # absolute: read instead of the dataset's own lists
    values["split"]["labeled"] = max(1, cases // 4)
    return config_from_dict(_common(values, root, "loader_acdc"))


def demo_config(root: Path) -> Config:
    """The demo's supervised configuration on its NIfTI dataset, written under ``root``."""
    from uncol.demo_run import build_demo_dataset
    from uncol.demo_run import demo_config as demo

    data = build_demo_dataset(root / "data")
    values = demo(data, root / "runs", method="supervised").to_dict()
    return config_from_dict(_common(values, root, "loader_demo"))


def synthetic_config(root: Path, cases: int) -> Config:
    """Small synthetic NIfTI volumes (tests/fixtures_data.py) with Mean Teacher: a quick stand-in."""
    import dataclasses

    from fixtures_data import make_nifti_dataset

    data = make_nifti_dataset(root / "data", n_cases=cases, shape=(24, 24, 16), num_classes=3)
    values = {
        "data": dataclasses.asdict(data) | {"normalize": "zscore"},
        "split": {"labeled": 0.5, "val_fraction": 0.2, "test_fraction": 0.0},
        "model": {"arch": "unet3d", "channels": [8, 16, 32]},
        "augment": {"flip": True, "rotate_degrees": 15.0, "intensity": True},
        "method": {"name": "mean_teacher", "mean_teacher": {"unlabeled_batch_size": 2}},
        "train": {"iterations": 1000, "batch_size": 2, "patch_size": [16, 16, 16]},
    }
    return config_from_dict(_common(values, root, "loader_synthetic"))


def make_config(dataset: str, root: Path, cases: int) -> Config:
    """The configuration of ``dataset`` (see the module docstring)."""
    if dataset == "hippocampus":
        return hippocampus_config(root, cases)
    if dataset == "acdc":
        return acdc_config(root, cases)
    if dataset == "demo":
        return demo_config(root)
    if dataset == "synthetic":
        return synthetic_config(root, cases)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")


def images_per_step(batch: dict[str, Any]) -> int:
    """Labeled plus unlabeled images in one step's batch."""
    n = int(batch["image"].shape[0])
    return n + (int(batch["unlabeled_image"].shape[0]) if "unlabeled_image" in batch else 0)


def loader_pass(trainer: Trainer, start: int, steps: int, workers: int) -> tuple[float, float, int]:
    """Iterate the engine's DataLoader over ``steps + 1`` steps from ``start``.

    Returns:
        ``(first_s, rest_s, images)``: the wait for the first batch (the workers' start included), the
        time of the other ``steps`` batches, and the images those delivered.
    """
    loader = DataLoader(
        trainer.batches, batch_size=None, sampler=range(start, start + steps + 1), num_workers=workers,
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1 = time.perf_counter()
    images = sum(images_per_step(b) for b in it)
    t2 = time.perf_counter()
    del it
    return t1 - t0, t2 - t1, images


def measure(
    dataset: str = "hippocampus",
    cases: int = 30,
    steps: int = 8,
    rounds: int = 2,
    workers: Sequence[int] = (0, 2),
    warmup: int = 2,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Loader throughput with each ``workers`` value against a training step's consumption, alternating.

    Args:
        dataset: see :data:`DATASETS`.
        cases: cases (hippocampus, synthetic) or patients (acdc) to use.
        steps: steps per loader pass and timed training steps per round.
        rounds: repetitions of (loader with each workers value, training steps).
        workers: ``train.num_workers`` values.
        warmup: untimed training steps first.
        workdir: folder for links, lists and runs (``None``: a temporary one, removed).

    Returns:
        The configuration's name, method, batch, ``setup_s`` and ``cases_loaded``, ``step`` (ms per step
        summary), ``consumed_images_per_s``, and per workers value ``loader[w]`` with ``images_per_s``
        (total images / total time over the rounds), ``first_batch_s`` (median) and ``ratio``.
    """
    torch.set_num_threads(1)
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uncol-loader-speed-")))
        cfg = make_config(dataset, root, cases)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, root / "runs" / "run", show_progress=False)
        trainer.setup()
        setup_s = time.perf_counter() - t0
        torch.set_num_threads(1)
        batches = trainer.batches
        n_cases = len(batches.labeled.samples) + (len(batches.unlabeled.samples) if batches.unlabeled else 0)
        per_step = images_per_step(batches[0])
        for s in range(warmup):
            trainer.train_step(batches[s])
        step_times: list[float] = []
        loader: dict[int, dict[str, list[float]]] = {w: {"first": [], "rest": [], "images": []} for w in workers}
        position = warmup
        for _ in range(rounds):
            for w in workers:
                first, rest, images = loader_pass(trainer, position, steps, w)
                loader[w]["first"].append(first)
                loader[w]["rest"].append(rest)
                loader[w]["images"].append(images)
            drawn = [batches[position + i] for i in range(steps)]
            for i, b in enumerate(drawn):
                trainer.step = position + i
                step_times.append(_time_once(lambda b=b: trainer.train_step(b)))
            position += steps
        step = _summary(step_times)
        consumed = per_step / (step["median_ms"] / 1000.0)
        out: dict[str, Any] = {
            "config": cfg.name, "method": cfg.method.name, "dataset": dataset, "images_per_step": per_step,
            "patch_size": list(cfg.train.patch_size), "setup_s": setup_s, "samples_loaded": n_cases,
            "step": step, "consumed_images_per_s": consumed, "loader": {},
        }
        for w, r in loader.items():
            rate = sum(r["images"]) / sum(r["rest"])
            out["loader"][w] = {
                "images_per_s": rate, "first_batch_s": statistics.median(r["first"]), "ratio": rate / consumed,
            }
        return out


def format_report(r: dict[str, Any]) -> str:
    """Markdown table of the loader throughputs against the consumption, with the target."""
    size = "x".join(str(s) for s in r["patch_size"])
    lines = [
        f"{r['dataset']}: `{r['config']}` ({r['method']}, {r['images_per_step']} images per step at {size}); "
        f"set-up (read + prepare {r['samples_loaded']} training samples) {r['setup_s']:.1f} s",
        "",
        "| | images/s | first batch (s) | / consumption |",
        "|---|---|---|---|",
        f"| training step consumes ({r['step']['median_ms']:.0f} ms per step) | {r['consumed_images_per_s']:.1f} | | 1.0x |",
    ]
    for w, lr in r["loader"].items():
        lines.append(
            f"| loader, `train.num_workers={w}` | {lr['images_per_s']:.1f} | {lr['first_batch_s']:.2f} | "
            f"{lr['ratio']:.1f}x |"
        )
    worst = min(lr["ratio"] for lr in r["loader"].values())
    lines += ["", f"- loader / consumption, worst: {worst:.1f}x; target >= {TARGET:.0f}x: "
              f"{'met' if worst >= TARGET else 'NOT met'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the report and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=DATASETS, default="hippocampus")
    p.add_argument("--cases", type=int, default=30, help="cases (patients for acdc) to use")
    p.add_argument("--steps", type=int, default=8, help="steps per loader pass and timed training steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="train.num_workers values")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    from uncol.allocator import tune_malloc

    tune_malloc()  # as the `uncol` command does, so the figures are those of `uncol train`
    start = time.perf_counter()
    r = measure(a.dataset, a.cases, a.steps, a.rounds, a.workers)
    print(f"torch {torch.__version__}, 1 thread, {time.perf_counter() - start:.0f} s in all\n")
    print(format_report(r))
    if a.json:
        from uncol.atomic import atomic_write_json

        atomic_write_json(a.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
