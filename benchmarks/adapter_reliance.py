"""How much a trained UnCoL student's mask depends on its knowledge adapter (issue 13).

Usage::

    python benchmarks/adapter_reliance.py RUN [RUN ...] [--split test] [--checkpoint best] [--max-cases 0]
        [--device cpu] [--json reliance.json]

For every case of the run's ``--split`` (its own ``splits.json``), the run's student predicts the
mask as ``uncol evaluate`` does (:func:`uncol.inference.predict_probabilities`: eval mode, the run's
normalisation, resizing or sliding window; no TTA) under five conditions:

* ``base``: prompt-free, the adapter attending to the student's own last-layer tokens (inference).
* ``zeroed``: the adapter's output replaced by zeros, so each injection adds only the constant its
  projection makes of zeros (bias through the norm's running statistics): what the mask owes the
  adapter.
* ``own``: the own tokens passed explicitly as the context; must equal ``base`` (a harness check).
* ``shuffled``: the own tokens in a random order. A control: cross-attention is invariant to the
  order of its keys/values, and the tokens carry their positions in their content (the ViT adds the
  position embedding at its input), so only float rounding may change the mask.
* ``other``: the tokens of another image: the next case of the split (the first for the last), its
  middle slice (2D students) or its centre patch (3D), normalised and sized as the network's input.

Per condition it reports the share of voxels whose predicted label differs from ``base`` (mean over
cases, and pooled over all voxels) and the mean foreground Dice against the reference (classes
``1..K-1`` present in the reference or the prediction, averaged per case, then over cases) with its
paired change against ``base``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uncol.config import Config
from uncol.data.readers.load import load_case
from uncol.data.splits import load_splits
from uncol.data.training import prepare_case
from uncol.data.transforms import pad_to_size, resize_image
from uncol.data.types import CaseData
from uncol.devices import select_device
from uncol.errors import UncolError
from uncol.inference import predict_probabilities
from uncol.metrics.overlap import compute_dice
from uncol.models.student import UnCoLStudent
from uncol.runs import RunPaths, load_weights

CONDITIONS = ("base", "zeroed", "own", "shuffled", "other")
#: Seed of the token permutation of ``shuffled``.
SHUFFLE_SEED = 0


class _WithContext(nn.Module):
    """The student with its adapter context computed from the input by ``context``."""

    def __init__(self, student: UnCoLStudent, context: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.student = student
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` with the adapter attending to ``context(x)``."""
        return self.student(x, context=self.context(x))


@contextlib.contextmanager
def adapter_zeroed(student: UnCoLStudent) -> Iterator[None]:
    """Within the block, the student's knowledge adapter outputs zeros."""
    handle = student.adapter.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    try:
        yield
    finally:
        handle.remove()


def own_tokens(student: UnCoLStudent, x: torch.Tensor) -> torch.Tensor:
    """The student's last-layer ViT tokens of ``x``, ``(B, N, D)`` (its prompt-free context)."""
    layers, _ = student.vit(x)
    return layers[-1]


def network_input(data: CaseData, cfg: Config) -> torch.Tensor:
    """One network-sized input of a case, ``(1, C, *train.patch_size)``, normalised as in training.

    2D: the middle slice along the slice axis, resized (``train.resize_2d``) or padded and centre-cropped
    to the patch; 3D: the volume padded and centre-cropped to the patch.
    """
    prepared = prepare_case(
        CaseData(data.case_id, data.image.copy(), None, data.spacing, data.affine, data.slice_axis, data.meta), cfg
    )
    image = prepared.image
    patch = tuple(cfg.train.patch_size)
    if cfg.spatial_dims == 2 and image.ndim == 4:
        image = np.take(image, image.shape[prepared.slice_axis + 1] // 2, axis=prepared.slice_axis + 1)
    if cfg.spatial_dims == 2 and cfg.train.resize_2d:
        image = resize_image(image, patch)
    else:
        image, _, _ = pad_to_size(image, None, patch)
        starts = [(s - p) // 2 for s, p in zip(image.shape[1:], patch, strict=True)]
        image = image[(slice(None), *(slice(a, a + p) for a, p in zip(starts, patch, strict=True)))]
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]


def foreground_dice(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the classes ``1..K-1`` present in ``label`` or ``pred`` (NaN when none is)."""
    values = [compute_dice(pred == c, label == c) for c in range(1, num_classes)]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


@torch.no_grad()
def case_reliance(
    student: UnCoLStudent,
    data: CaseData,
    cfg: Config,
    device: torch.device,
    other_context: torch.Tensor,
    seed: int = SHUFFLE_SEED,
) -> dict[str, dict[str, float]]:
    """Predicted labels of one case under every condition, compared with ``base``.

    Args:
        student: the run's student, in eval mode, on ``device``.
        data: the loaded case (raw intensities), with its reference label.
        cfg: the run's configuration.
        device: where to run.
        other_context: ``(1, M, D)`` tokens of another image (the ``other`` condition).
        seed: seed of the token permutation of ``shuffled``.

    Returns:
        ``condition -> {"changed": share of voxels whose label differs from base, "dice": mean
        foreground Dice (NaN without a reference label), "voxels": voxel count}``.
    """
    perm_gen = torch.Generator().manual_seed(seed)
    perms: dict[int, torch.Tensor] = {}

    def shuffled(x: torch.Tensor) -> torch.Tensor:
        tokens = own_tokens(student, x)
        n = tokens.shape[1]
        if n not in perms:
            perms[n] = torch.randperm(n, generator=perm_gen).to(tokens.device)
        return tokens[:, perms[n]]

    other = other_context.to(device)
    nets: dict[str, nn.Module] = {
        "base": student,
        "own": _WithContext(student, lambda x: own_tokens(student, x)),
        "shuffled": _WithContext(student, shuffled),
        "other": _WithContext(student, lambda x: other.expand(x.shape[0], -1, -1)),
    }
    labels: dict[str, np.ndarray] = {}
    for name in CONDITIONS:
        if name == "zeroed":
            with adapter_zeroed(student):
                probs = predict_probabilities(student, data, cfg, device)
        else:
            probs = predict_probabilities(nets[name], data, cfg, device)
        labels[name] = probs.argmax(axis=0)
    base = labels["base"]
    out = {}
    for name, pred in labels.items():
        dice = foreground_dice(pred, data.label, cfg.data.num_classes) if data.label is not None else math.nan
        out[name] = {"changed": float(np.mean(pred != base)), "dice": dice, "voxels": float(pred.size)}
    return out


def summarize_conditions(cases: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per condition over cases: mean and pooled changed share, mean Dice and its paired change vs base."""
    summary = {}
    for name in CONDITIONS:
        rows = [c[name] for c in cases.values()]
        base = [c["base"]["dice"] for c in cases.values()]
        voxels = sum(r["voxels"] for r in rows)
        deltas = [r["dice"] - b for r, b in zip(rows, base, strict=True) if not (math.isnan(r["dice"]) or math.isnan(b))]
        dices = [r["dice"] for r in rows if not math.isnan(r["dice"])]
        summary[name] = {
            "changed_mean": float(np.mean([r["changed"] for r in rows])),
            "changed_pooled": sum(r["changed"] * r["voxels"] for r in rows) / voxels if voxels else math.nan,
            "changed_max": max(r["changed"] for r in rows),
            "dice": float(np.mean(dices)) if dices else math.nan,
            "dice_change": float(np.mean(deltas)) if deltas else math.nan,
            "dice_change_min": min(deltas) if deltas else math.nan,
            "dice_change_max": max(deltas) if deltas else math.nan,
        }
    return summary


def measure_run(
    run_dir: str | Path, split: str = "test", checkpoint: str = "best", max_cases: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """:func:`case_reliance` on every case of a run's split, and :func:`summarize_conditions`.

    Raises:
        UncolError: the run's network is not an UnCoL student, or the split is unknown or empty.
    """
    cfg, net, meta = load_weights(run_dir, checkpoint)
    if not isinstance(net, UnCoLStudent):
        raise UncolError(f"{run_dir}: model.arch={cfg.model.arch} is not an UnCoL student; nothing to measure")
    splits = load_splits(RunPaths(run_dir).splits)
    cases = {"val": splits.val, "test": splits.test}.get(split)
    if not cases:
        raise UncolError(f"{RunPaths(run_dir).splits}: no {split!r} cases (use val or test)")
    if max_cases > 0:
        cases = cases[:max_cases]
    dev = select_device(device)
    net.to(dev).eval()
    loaded = [load_case(c, cfg.data) for c in cases]
    per_case = {}
    for i, data in enumerate(loaded):
        other = loaded[(i + 1) % len(loaded)]
        with torch.no_grad():
            context = own_tokens(net, network_input(other, cfg).to(dev))
        per_case[data.case_id] = case_reliance(net, data, cfg, dev, context)
    return {
        "run": str(run_dir), "split": split, "checkpoint": checkpoint, "checkpoint_step": meta.get("step"),
        "student_backbone": getattr(net, "backbone_name", None), "cases": per_case,
        "summary": summarize_conditions(per_case),
    }


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of one run's summary."""
    lines = [
        f"{result['run']} ({result['split']}, {len(result['cases'])} cases, {result['checkpoint']} checkpoint "
        f"at step {result['checkpoint_step']})",
        "",
        "| adapter context | pixels changed vs base, mean (pooled; max case) | mean foreground Dice % | Dice change, points (min..max case) |",
        "|---|---|---|---|",
    ]
    labels = {
        "base": "own tokens (prompt-free inference)", "zeroed": "adapter output zeroed",
        "own": "own tokens, passed explicitly", "shuffled": "own tokens, shuffled order",
        "other": "another image's tokens",
    }
    for name in CONDITIONS:
        s = result["summary"][name]
        lines.append(
            f"| {labels[name]} | {100 * s['changed_mean']:.2f}% ({100 * s['changed_pooled']:.2f}%; "
            f"{100 * s['changed_max']:.2f}%) | {100 * s['dice']:.2f} | {100 * s['dice_change']:+.2f} "
            f"({100 * s['dice_change_min']:+.2f}..{100 * s['dice_change_max']:+.2f}) |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every run given, print its table, optionally write all results as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="finished UnCoL run folders")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--checkpoint", default="best", choices=("best", "final"))
    p.add_argument("--max-cases", type=int, default=0, help="at most this many cases per run (0: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    results = []
    for run in a.runs:
        result = measure_run(run, a.split, a.checkpoint, a.max_cases, a.device)
        print(format_table(result) + "\n")
        results.append(result)
    if a.json:
        from uncol.atomic import atomic_write_json

        atomic_write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
