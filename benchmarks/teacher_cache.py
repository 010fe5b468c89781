"""Benchmark of the teacher feature cache (issue 3).

Measures, with the real LiteMedSAM teacher:

* cold cost per image: preprocessing + encoder pass + pooling + writing the entry (empty cache);
* warm cost per image: hashing the image + reading and checking its entry (a fresh cache object, so
  nothing comes from memory), for features only and for features + image embedding;
* the cache's size on disk per image (features entry, embedding entry);
* the mask decoder's cost on a cached embedding (the semantic path with fresh prompts);
* the cost of a supervised 2D U-Net training step (256 x 256, batch 8, SGD, Dice + CE) without and with
  reading the batch's cached teacher features, mirroring flips/rotations on them, and a small
  projection + MSE on them; both variants alternate in one run and the ratio of medians is reported.

Images: the first training slices of ACDC resized to 256 x 256 as the training pipeline stores them
(``--acdc``), else synthetic blob images. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/teacher_cache.py --acdc ../shared/data/ACDC --out bench/teacher_cache.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from uncol.config import ModelConfig, TeacherConfig
from uncol.data.transforms import resize_image
from uncol.methods.losses import SegmentationLoss
from uncol.models import build_network
from uncol.teachers import FeatureCache, apply_geometry, build_teacher


def load_images(acdc: Path | None, n: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """``n`` images ``(1, size, size)`` and labels, from ACDC training slices or synthetic."""
    images, labels = [], []
    if acdc is not None and (acdc / "train_slices.list").is_file():
        names = (acdc / "train_slices.list").read_text().split()[:n]
        for name in names:
            with h5py.File(acdc / "data" / f"{name}.h5") as fh:
                img, lab = fh["image"][:].astype(np.float32), fh["label"][:]
            images.append(resize_image(img[None], (size, size)))
            t = torch.from_numpy(lab.astype(np.float32))[None, None]
            labels.append(torch.nn.functional.interpolate(t, size=(size, size), mode="nearest")[0, 0].long().numpy())
        return images, labels, f"ACDC training slices {names[0]}.. resized to {size}x{size}"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        cy, cx, r = rng.uniform(80, 176), rng.uniform(80, 176), rng.uniform(20, 50)
        lab = (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2).astype(np.int64)
        images.append((lab + rng.normal(0, 0.2, lab.shape)).astype(np.float32)[None])
        labels.append(lab * 3)
    return images, labels, f"synthetic blobs {size}x{size}"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class StepBench:
    """One supervised U-Net step, optionally with teacher-feature distillation from the cache."""

    def __init__(self, cache: FeatureCache, num_classes: int = 4) -> None:
        torch.manual_seed(0)
        self.net = build_network(ModelConfig(arch="unet2d", channels=[16, 32, 64, 128, 256]), 1, num_classes)
        self.loss = SegmentationLoss()
        self.cache = cache
        self.grid = cache.teacher.token_grid
        # The student feature we distil into: the first encoder block's output (B, 16, 128, 128).
        self._feat: list[torch.Tensor] = []
        self.net.model[0].register_forward_hook(lambda _m, _i, o: self._feat.append(o))
        self.proj = nn.ModuleDict()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def build_projection(self, example: dict[str, torch.Tensor]) -> None:
        """A 1x1 convolution per teacher layer from the student feature to the teacher's channels."""
        for n, t in example.items():
            self.proj[n.replace(".", "_")] = nn.Conv2d(16, int(t.shape[0]), 1)
        self.opt.add_param_group({"params": list(self.proj.parameters())})

    def step(self, images: list[np.ndarray], labels: list[np.ndarray], with_teacher: bool, rng: np.random.Generator) -> float:
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack(images))
        y = torch.from_numpy(np.stack(labels))
        self._feat.clear()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(x), y)
        if with_teacher:
            feats = self.cache.get_batch(images)
            flips = [(bool(rng.random() < 0.5), bool(rng.random() < 0.5)) for _ in images]
            ks = [int(rng.integers(4)) for _ in images]
            student = nn.functional.adaptive_avg_pool2d(self._feat[0], self.grid)
            for name, t in feats.items():
                target = torch.stack([apply_geometry(t[i], flips[i], ks[i]) for i in range(len(images))]).float()
                loss = loss + nn.functional.mse_loss(self.proj[name.replace(".", "_")](student), target)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--acdc", type=Path, default=None, help="ACDC folder (else synthetic images)")
    ap.add_argument("--images", type=int, default=8, help="images encoded cold (also the batch size)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant (after 2 warm-up steps each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    images, labels, source = load_images(args.acdc, args.images, 256)
    teacher = build_teacher(TeacherConfig(name="litemedsam", device="cpu", batch_size=1))
    tmp = Path(tempfile.mkdtemp(prefix="uncol_teacher_bench_")) if args.cache_dir is None else args.cache_dir
    res: dict[str, object] = {"source": source, "threads": args.threads, "machine": platform.processor() or platform.machine()}
    try:
        cache = FeatureCache(teacher, tmp)
        cold = [timed(lambda im=im: cache.encode([im], embeddings=True)) for im in images]
        res["cold_s_per_image"] = statistics.median(cold)
        warm_feat = [timed(lambda im=im: FeatureCache(teacher, tmp).get(im)) for im in images]
        warm_emb = [timed(lambda im=im: FeatureCache(teacher, tmp).encode([im], embeddings=True)) for im in images]
        res["warm_s_per_image_features"] = statistics.median(warm_feat)
        res["warm_s_per_image_with_embedding"] = statistics.median(warm_emb)
        usage = cache.disk_usage()
        res["disk_bytes_per_image_features"] = usage["feat"][1] / max(1, usage["feat"][0])
        res["disk_bytes_per_image_embedding"] = usage["emb"][1] / max(1, usage["emb"][0])
        encoded = cache.encode(images[:1], embeddings=True)[0]
        prompts = teacher.gt_prompts(labels[0], 4)
        res["decoder_s_per_image_3_prompts"] = statistics.median(
            [timed(lambda: teacher.decode(encoded, prompts)) for _ in range(3)]
        )

        bench = StepBench(cache)
        bench.build_projection(cache.get(images[0]))
        rng = np.random.default_rng(0)
        for _ in range(2):
            bench.step(images, labels, False, rng)
            bench.step(images, labels, True, rng)
        plain, teach = [], []
        for _ in range(args.steps):  # alternate, so load changes hit both variants alike
            plain.append(bench.step(images, labels, False, rng))
            teach.append(bench.step(images, labels, True, rng))
        res["step_s_without_teacher"] = statistics.median(plain)
        res["step_s_with_teacher"] = statistics.median(teach)
        res["step_ratio"] = res["step_s_with_teacher"] / res["step_s_without_teacher"]
        res["step_s_all"] = {"without": plain, "with": teach}
    finally:
        if args.cache_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    printable = {k: v for k, v in res.items() if k != "step_s_all"}
    print(json.dumps(printable, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
