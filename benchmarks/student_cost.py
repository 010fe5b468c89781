"""UnCoL student cost on one CPU thread: training against the U-Net, inference against LiteMedSAM (issue 13).

Usage::

    python benchmarks/student_cost.py [--n 5] [--batch 4] [--size 256] [--teacher-n 3] [--3d] [--json cost.json]

Builds the untrained networks of ``configs/acdc_supervised.yaml`` (2D U-Net) and
``configs/acdc_uncol.yaml`` (the UnCoL student) -- weights do not change the cost -- and LiteMedSAM
(``teacher.name=litemedsam`` on the CPU, its shipped weights), then measures on one thread:

(a) **training**: forward + backward (cross-entropy against a random label map, gradients freed
    between calls) of one batch ``(batch, 1, size, size)`` in train mode, per image; the optimizer
    step is *not* included (it is the same small per-parameter update for any method). Besides the
    whole student, two of its parts are timed the same way by calling them directly: the CNN
    backbone alone (``student.backbone(x)``, the same U-Net without the token injections) and the
    transformer side (``student.vit`` + ``student.adapter`` prompt-free, the adapter attending to the
    ViT's own last-layer tokens, backward from the adapted tokens). The four calls alternate within
    each round, so that a machine shared with other jobs slows all of them alike.
(b) **inference**: one ``(1, 1, size, size)`` image, eval mode, no gradients: the student (no
    context, one pass) against LiteMedSAM's encoder + prompt encoder + mask decoder with one box
    (:meth:`FoundationTeacher.predict`, including its resizing to the 256 px canvas and back),
    alternating.
(c) with ``--3d``: training as in (a) for the 3D U-Net of ``configs/hippocampus_supervised.yaml``
    against the student of ``configs/hippocampus_uncol.yaml``, both at the student's patch size
    (``--batch-3d`` volumes per call).

Medians of ``n`` timed calls after the warm-up calls are reported (LiteMedSAM: ``teacher_n`` calls,
it takes seconds each); the figures to compare across machines are the ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uncol.config import load_config
from uncol.models import build_network
from uncol.models.student import UnCoLStudent

REPO = Path(__file__).resolve().parents[1]
UNET_CONFIG = REPO / "configs" / "acdc_supervised.yaml"
STUDENT_CONFIG = REPO / "configs" / "acdc_uncol.yaml"
UNET3D_CONFIG = REPO / "configs" / "hippocampus_supervised.yaml"
STUDENT3D_CONFIG = REPO / "configs" / "hippocampus_uncol.yaml"
#: The issue's targets: student training cost at most this multiple of the U-Net's ...
TRAIN_TARGET = 1.5
#: ... and LiteMedSAM's inference at least this multiple of the student's.
INFERENCE_TARGET = 20.0


def _time_once(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _summary(seconds: list[float], per: int = 1) -> dict[str, Any]:
    """Median and range of timed calls, in ms per image (``per`` images per call)."""
    ms = [1000.0 * s / per for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "n": len(ms)}


def build_networks(size: int, dims: int = 2, shape: tuple[int, ...] | None = None) -> tuple[nn.Module, UnCoLStudent, int, int]:
    """The untrained U-Net and UnCoL student; also in_channels and num_classes.

    Args:
        size: 2D: the square side (ACDC configs).
        dims: 2 (ACDC configs at ``size x size``) or 3 (Hippocampus configs at ``shape``).
        shape: 3D input size; ``None``: the student config's ``train.patch_size``.
    """
    if dims == 2:
        unet_path, student_path, spatial = UNET_CONFIG, STUDENT_CONFIG, [size, size]
    else:
        unet_path, student_path = UNET3D_CONFIG, STUDENT3D_CONFIG
        spatial = list(shape) if shape is not None else load_config(STUDENT3D_CONFIG).train.patch_size
    patch = [f"train.patch_size=[{','.join(str(s) for s in spatial)}]"]
    unet_cfg = load_config(unet_path, patch)
    student_cfg = load_config(student_path, patch)
    torch.manual_seed(0)
    unet = build_network(unet_cfg.model, unet_cfg.data.in_channels, unet_cfg.data.num_classes, unet_cfg.train.patch_size)
    student = build_network(
        student_cfg.model, student_cfg.data.in_channels, student_cfg.data.num_classes, student_cfg.train.patch_size
    )
    if not isinstance(student, UnCoLStudent):  # pragma: no cover - fixed by the config
        raise TypeError(f"{student_path.name} did not build an UnCoLStudent")
    return unet, student, student_cfg.data.in_channels, student_cfg.data.num_classes


def _train_step(net: nn.Module, forward: Callable[[], torch.Tensor], target: torch.Tensor | None) -> Callable[[], None]:
    """A closure: forward + backward of ``forward()`` (cross-entropy against ``target``, else the mean)."""

    def step() -> None:
        out = forward()
        loss = nn.functional.cross_entropy(out, target) if target is not None else out.pow(2).mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    return step


def measure_training(
    size: int = 256, batch: int = 4, n: int = 5, warmup: int = 2, dims: int = 2, shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Forward + backward per image of the U-Net, the student and the student's parts (ms), alternating.

    Args:
        size: square input side (2D).
        batch: images per call.
        n: timed rounds (the median is reported).
        warmup: untimed rounds first.
        dims: 2 (ACDC configs) or 3 (Hippocampus configs, see :func:`build_networks`).
        shape: 3D input size (``None``: the student config's patch size).

    Returns:
        ``{"unet", "student", "student_backbone", "student_vit_adapter"}`` -> :func:`_summary` (ms per
        image), the ratios ``student_over_unet`` (of the medians) and ``paired_student_over_unet``
        (median of the per-round ratios), and the input shape.
    """
    unet, student, in_ch, num_classes = build_networks(size, dims, shape)
    unet.train()
    student.train()
    spatial = (size, size) if dims == 2 else tuple(student.vit.grid[i] * student.vit_patch for i in range(3))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, in_ch, *spatial, generator=gen)
    y = torch.randint(0, num_classes, (batch, *spatial), generator=gen)

    def vit_adapter() -> torch.Tensor:
        layers, _ = student.vit(x)
        return student.adapter(layers[-1], layers[-1])

    runs: dict[str, Callable[[], None]] = {
        "unet": _train_step(unet, lambda: unet(x), y),
        "student": _train_step(student, lambda: student(x), y),
        "student_backbone": _train_step(student, lambda: student.backbone(x), y),
        "student_vit_adapter": _train_step(student, vit_adapter, None),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    for _ in range(n):
        for name, fn in runs.items():
            times[name].append(_time_once(fn))
    out: dict[str, Any] = {name: _summary(ts, batch) for name, ts in times.items()}
    out["input"] = [batch, in_ch, *spatial]
    out["student_over_unet"] = out["student"]["median_ms"] / out["unet"]["median_ms"]
    out["paired_student_over_unet"] = statistics.median(
        s / u for s, u in zip(times["student"], times["unet"], strict=True)
    )
    return out


def _one_box_image(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random ``(size, size)`` image in [0, 1] and one box around its central half (x0, y0, x1, y1)."""
    image = rng.random((size, size), dtype=np.float32)
    box = np.array([[size // 4, size // 4, 3 * size // 4 - 1, 3 * size // 4 - 1]], dtype=np.float32)
    return image, box


def measure_inference(
    size: int = 256, n: int = 5, teacher_n: int = 3, warmup: int = 1, with_teacher: bool = True
) -> dict[str, Any]:
    """Inference per image: the prompt-free student, and LiteMedSAM with one box (ms), alternating.

    Args:
        size: square image side.
        n: timed student calls.
        teacher_n: timed LiteMedSAM calls (at most ``n``; the first ``teacher_n`` rounds call both).
        warmup: untimed calls of each first.
        with_teacher: build and time LiteMedSAM (False: the student alone, for quick tests).

    Returns:
        ``"student"`` (and ``"litemedsam"``) -> :func:`_summary`, and ``litemedsam_over_student``
        (ratio of the medians) when the teacher was timed.
    """
    _, student, in_ch, _ = build_networks(size)
    student.eval()
    x = torch.rand(1, in_ch, size, size, generator=torch.Generator().manual_seed(1))
    runs: dict[str, Callable[[], Any]] = {"student": lambda: student(x)}
    counts = {"student": n}
    if with_teacher:
        from uncol.teachers import Prompts, build_teacher

        cfg = load_config(STUDENT_CONFIG, ["teacher.device=cpu"])
        teacher = build_teacher(cfg.teacher)
        image, box = _one_box_image(size, np.random.default_rng(0))
        prompts = Prompts(boxes=box, present=np.ones(1, dtype=bool))
        runs["litemedsam"] = lambda: teacher.predict(image, prompts)
        counts["litemedsam"] = min(teacher_n, n)
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for _ in range(warmup):
            for fn in runs.values():
                fn()
        for i in range(n):
            for name, fn in runs.items():
                if i < counts[name]:
                    times[name].append(_time_once(fn))
    out: dict[str, Any] = {name: _summary(ts) for name, ts in times.items()}
    out["input"] = [1, in_ch, size, size]
    if with_teacher:
        out["litemedsam_over_student"] = out["litemedsam"]["median_ms"] / out["student"]["median_ms"]
    return out


def format_table(training: dict[str, Any], inference: dict[str, Any], training_3d: dict[str, Any] | None = None) -> str:
    """Markdown table of the measurements and the ratios against the issue's targets."""

    def row(label: str, r: dict[str, Any]) -> str:
        return f"| {label} | {r['median_ms']:.1f} ({r['min_ms']:.1f}-{r['max_ms']:.1f}) | {r['n']} |"

    b, _, h, w = training["input"]
    lines = [
        "| measurement | ms per image, median (min-max) | calls |",
        "|---|---|---|",
        row(f"training (fwd+bwd, batch {b}, {h}x{w}): 2D U-Net", training["unet"]),
        row("training: UnCoL student", training["student"]),
        row("training: student's U-Net backbone alone", training["student_backbone"]),
        row("training: student's ViT + adapter alone", training["student_vit_adapter"]),
        row(f"inference ({inference['input'][2]}x{inference['input'][3]}, batch 1): UnCoL student", inference["student"]),
    ]
    if "litemedsam" in inference:
        lines.append(row("inference: LiteMedSAM encoder + mask decoder, one box", inference["litemedsam"]))
    if training_3d is not None:
        b3, _, *sp = training_3d["input"]
        size3 = "x".join(str(s) for s in sp)
        lines += [
            row(f"3D training (fwd+bwd, batch {b3}, {size3}): 3D U-Net", training_3d["unet"]),
            row("3D training: UnCoL student", training_3d["student"]),
            row("3D training: student's backbone alone", training_3d["student_backbone"]),
            row("3D training: student's ViT + adapter alone", training_3d["student_vit_adapter"]),
        ]
    ratio = training["student_over_unet"]
    lines += [
        "",
        f"- training, student / U-Net: {ratio:.2f}x (paired {training['paired_student_over_unet']:.2f}x); "
        f"target <= {TRAIN_TARGET}x: {'met' if ratio <= TRAIN_TARGET else 'NOT met'}",
    ]
    if "litemedsam_over_student" in inference:
        speedup = inference["litemedsam_over_student"]
        lines.append(
            f"- inference, LiteMedSAM / student: {speedup:.1f}x; target >= {INFERENCE_TARGET:.0f}x: "
            f"{'met' if speedup >= INFERENCE_TARGET else 'NOT met'}"
        )
    if training_3d is not None:
        r3 = training_3d["student_over_unet"]
        lines.append(
            f"- 3D training, student / 3D U-Net: {r3:.2f}x (paired {training_3d['paired_student_over_unet']:.2f}x); "
            f"target <= {TRAIN_TARGET}x: {'met' if r3 <= TRAIN_TARGET else 'NOT met'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both measurements, print the table and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--batch", type=int, default=4, help="training batch size")
    p.add_argument("--size", type=int, default=256, help="square input side (divisible by 16)")
    p.add_argument("--teacher-n", type=int, default=3, help="timed LiteMedSAM calls")
    p.add_argument("--no-teacher", action="store_true", help="skip LiteMedSAM")
    p.add_argument("--3d", dest="three_d", action="store_true", help="also time 3D training (Hippocampus configs)")
    p.add_argument("--batch-3d", type=int, default=2, help="3D training batch size")
    p.add_argument("--shape-3d", type=int, nargs=3, default=None, help="3D input size (default: the student config's)")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    training = measure_training(a.size, a.batch, a.n)
    inference = measure_inference(a.size, a.n, a.teacher_n, with_teacher=not a.no_teacher)
    training_3d = (
        measure_training(batch=a.batch_3d, n=a.n, dims=3, shape=tuple(a.shape_3d) if a.shape_3d else None)
        if a.three_d else None
    )
    print(f"torch {torch.__version__}, 1 thread, {time.perf_counter() - start:.0f} s in all\n")
    print(format_table(training, inference, training_3d))
    if a.json:
        from uncol.atomic import atomic_write_json

        record = {"training": training, "inference": inference}
        if training_3d is not None:
            record["training_3d"] = training_3d
        atomic_write_json(a.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
