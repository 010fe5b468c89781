"""Benchmark: rotated cached teacher features against re-encoding the rotated image (issue 13).

UnCoL caches the frozen teacher's outputs of each *un-augmented* training slice and maps them onto
every augmented view. With a free in-plane rotation (``augment.rotate_degrees > 0``) the maps are
turned with :func:`uncol.data.rotation.rotate_maps` (bilinear ``grid_sample`` about the centre, the
rotation the image gets). The exact alternative is to re-encode the rotated image (seconds per slice
on a CPU). This script measures the gap with the real LiteMedSAM on ACDC slices, for each angle:

* visual targets (the encoder layers of the default layer map, pooled to the 16 x 16 token grid, as
  training stores them): cosine similarity per token between the rotated cached map and the map of the
  re-encoded rotated image, over the tokens whose cell lies inside the rotated slice ("inside") and over
  all tokens ("all", where the fill matters: nearest edge token vs zeros); with two references: no
  mapping at all (the cached map of the unrotated slice) and two different slices;
* the full image embedding (64 x 64 x 256) rotated the same way;
* the teacher's mask for ground-truth boxes: (b) decoded from the rotated cached embedding with the
  rotated slice's boxes, and (c) what stage 2 does, decoded on the unrotated cached embedding with the
  unrotated slice's boxes and its class probabilities rotated; Dice of each against the mask decoded
  from the re-encoded rotated slice, and of all three against the rotated ground truth;
* the prompt-fused (semantic) features: rotated cached vs decoded from the re-encoded rotated slice;
* cost: one encoder pass vs rotating one slice's cached targets (ratio within this run).

90 degrees is included as the reference: quarter turns are what training already applies to cached
features (exactly, as a permutation), so their error is the teacher's own lack of rotation equivariance,
the bar a free rotation is held to. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rotated_features.py --acdc ../shared/data/ACDC \\
        --slices 8 --angles 10 20 30 90 --out /tmp/rotated_features.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from uncol.config import TeacherConfig
from uncol.data.rotation import rotate_maps
from uncol.data.transforms import AugmentParams, apply_augment, resize_image, resize_label
from uncol.teachers import Encoded, build_teacher
from uncol.teachers.base import class_probabilities
from uncol.teachers.prompts import boxes_from_mask

NUM_CLASSES = 4  # ACDC: background, RV, Myo, LV


def pick_slices(acdc: Path, n: int, size: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``n`` training slices holding every class, spread over the list (one per patient where possible)."""
    names = (acdc / "train_slices.list").read_text().split()
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    seen: set[str] = set()
    step = max(1, len(names) // (4 * n))
    for name in names[::step]:
        patient = name.split("_")[0]
        if patient in seen:
            continue
        with h5py.File(acdc / "data" / f"{name}.h5") as fh:
            img, lab = fh["image"][:].astype(np.float32), fh["label"][:].astype(np.int64)
        if len(np.unique(lab)) < NUM_CLASSES:
            continue
        seen.add(patient)
        # As the training pipeline stores 2D samples (configs/acdc_uncol.yaml: normalize none, resize_2d).
        out.append((name, resize_image(img[None], (size, size)), resize_label(lab, (size, size))))
        if len(out) == n:
            break
    return out


def rotate_view(image: np.ndarray, label: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The training augmentation's free rotation alone (no flips, quarter turns or intensity changes)."""
    p = AugmentParams(flips=(False, False), rot90=0, angle=angle, scale=1.0, shift=0.0, gamma=1.0, noise_seed=0,
                      noise_std=0.0)
    img, lab = apply_augment(image, label, p)
    assert lab is not None
    return img, lab


def token_cosine(a: torch.Tensor, b: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity over channels of two ``(C, h, w)`` maps: ``(h, w)``.

    ``centre`` ``(C,)``: subtracted from both first (the features' mean over the benchmark's slices), so
    that the large component every token shares does not inflate the score.
    """
    a, b = a.float(), b.float()
    if centre is not None:
        a, b = a - centre[:, None, None], b - centre[:, None, None]
    return F.cosine_similarity(a, b, dim=0)


def distill_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What the distillation loss compares: tokens layer-normalised over channels
    (:func:`uncol.methods.uncol.distillation.tokens_of`); their MSE is ``2 (1 - this)``."""
    return token_cosine(a - a.mean(0, keepdim=True), b - b.mean(0, keepdim=True))


def inside_tokens(size: int, grid: int, angle: float) -> torch.Tensor:
    """``(grid, grid)``: tokens whose whole cell lies inside the rotated slice."""
    ones = rotate_maps(torch.ones(1, size, size), angle, fill=0.0)
    return F.avg_pool2d(ones[None], size // grid)[0, 0] > 0.999


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the foreground classes present in either map."""
    scores = []
    for c in range(1, NUM_CLASSES):
        x, y = a == c, b == c
        total = x.sum() + y.sum()
        if total:
            scores.append(2.0 * np.logical_and(x, y).sum() / total)
    return float(np.mean(scores)) if scores else 1.0


def decode_label(teacher, encoded: Encoded, label: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """Class probabilities ``(K, H, W)`` and mean fused features ``(C, g, g)`` for ground-truth boxes."""
    prompts = boxes_from_mask(label, NUM_CLASSES)
    logits, fused = teacher.decode(encoded, prompts)
    return class_probabilities(logits.numpy()), fused[torch.from_numpy(prompts.present)].mean(0)


def mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--acdc", type=Path, required=True, help="ACDC folder (train_slices.list, data/*.h5)")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--angles", type=float, nargs="+", default=[10.0, 20.0, 30.0, 90.0])
    ap.add_argument("--size", type=int, default=256, help="training slice size (train.patch_size)")
    ap.add_argument("--grid", type=int, default=16, help="token grid (train.patch_size / model.vit_patch)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    torch.manual_seed(0)

    teacher = build_teacher(replace(TeacherConfig(), name="litemedsam", token_grid=args.grid, overlap="nested"))
    layers = teacher.visual_layers
    slices = pick_slices(args.acdc, args.slices, args.size)
    print(f"{len(slices)} ACDC slices: {', '.join(s[0] for s in slices)}; layers {layers}", flush=True)

    t0 = time.perf_counter()
    cached = teacher.encode([s[1] for s in slices])
    t_encode = (time.perf_counter() - t0) / len(slices)

    # Reference: the same layers of two different slices (what an unrelated target would score).
    centre = {n: torch.stack([e.features[n].float() for e in cached]).mean((0, 2, 3)) for n in layers}
    pairs = range(1, len(cached))
    cross = {
        n: {
            "cos": mean([float(token_cosine(cached[i].features[n], cached[i - 1].features[n]).mean()) for i in pairs]),
            "cos_centred": mean([float(token_cosine(cached[i].features[n], cached[i - 1].features[n], centre[n]).mean())
                                 for i in pairs]),
            "distill_cos": mean([float(distill_cosine(cached[i].features[n], cached[i - 1].features[n]).mean())
                                 for i in pairs]),
        }
        for n in layers
    } if len(cached) > 1 else {}

    rows = []
    rotate_s: list[float] = []
    for angle in args.angles:
        acc: dict[str, list[float]] = {}

        def add(key: str, value: float, acc: dict[str, list[float]] = acc) -> None:
            acc.setdefault(key, []).append(value)

        inside = inside_tokens(args.size, args.grid, angle)
        for (_, image, label), enc in zip(slices, cached, strict=True):
            img_r, lab_r = rotate_view(image, label, angle)
            reenc = teacher.encode([img_r])[0]
            t1 = time.perf_counter()
            mapped = {n: rotate_maps(enc.features[n].float(), angle, fill=None) for n in layers}
            rotate_s.append(time.perf_counter() - t1)
            for n in layers:
                target = reenc.features[n].float()
                add(f"cos_inside/{n}", float(token_cosine(mapped[n], target)[inside].mean()))
                add(f"cos_all_edgefill/{n}", float(token_cosine(mapped[n], target).mean()))
                zeros = rotate_maps(enc.features[n].float(), angle, fill=0.0)
                add(f"cos_all_zerofill/{n}", float(token_cosine(zeros, target).nan_to_num(0.0).mean()))
                add(f"cos_unmapped_inside/{n}", float(token_cosine(enc.features[n], target)[inside].mean()))
                add(f"cos_centred_inside/{n}", float(token_cosine(mapped[n], target, centre[n])[inside].mean()))
                add(f"cos_centred_unmapped_inside/{n}",
                    float(token_cosine(enc.features[n], target, centre[n])[inside].mean()))
                add(f"distill_cos_inside/{n}", float(distill_cosine(mapped[n], target)[inside].mean()))
                add(f"distill_cos_unmapped_inside/{n}", float(distill_cosine(enc.features[n], target)[inside].mean()))
            assert enc.embedding is not None and reenc.embedding is not None
            emb_r = rotate_maps(enc.embedding.float(), angle, fill=None)
            emb_inside = F.interpolate(inside[None, None].float(), size=emb_r.shape[-2:], mode="nearest")[0, 0] > 0
            add("cos_embedding_inside", float(token_cosine(emb_r, reenc.embedding)[emb_inside].mean()))
            # Teacher masks for ground-truth boxes.
            p_re, fused_re = decode_label(teacher, reenc, lab_r)
            p_b, _ = decode_label(teacher, Encoded(enc.features, emb_r.half(), enc.geometry), lab_r)
            p_c0, fused_c0 = decode_label(teacher, enc, label)
            p_c = rotate_maps(torch.from_numpy(p_c0), angle, fill=1.0 / NUM_CLASSES).numpy()
            m_re, m_b, m_c = p_re.argmax(0), p_b.argmax(0), p_c.argmax(0)
            add("dice_rotated_embedding_vs_reencoded", dice(m_b, m_re))
            add("dice_rotated_probabilities_vs_reencoded", dice(m_c, m_re))
            add("dice_gt/reencoded", dice(m_re, lab_r))
            add("dice_gt/rotated_embedding", dice(m_b, lab_r))
            add("dice_gt/rotated_probabilities", dice(m_c, lab_r))
            fused_r = rotate_maps(fused_c0, angle, fill=None)
            add("cos_semantic_inside", float(token_cosine(fused_r, fused_re)[inside].mean()))
        row = {"angle": angle, "inside_token_fraction": round(float(inside.float().mean()), 3)}
        row |= {k: mean(v) for k, v in acc.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)

    result = {
        "slices": [s[0] for s in slices],
        "layers": list(layers),
        "cross_slice_cosine": cross,
        "encode_s_per_slice": round(t_encode, 3),
        "rotate_targets_s_per_slice": round(statistics.median(rotate_s), 5),
        "encode_over_rotate": round(t_encode / statistics.median(rotate_s), 1),
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
