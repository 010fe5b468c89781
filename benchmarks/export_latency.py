"""CPU latency per 256x256 slice: PyTorch vs ONNX Runtime, for the ACDC networks (docs/export.md).

Usage::

    python benchmarks/export_latency.py [--repeats 15] [--warmup 3] [--json latency.json]

Builds the untrained networks of ``configs/acdc_supervised.yaml`` (2D U-Net) and
``configs/acdc_uncol.yaml`` (the prompt-free UnCoL student) -- weights do not change the cost of a
forward pass -- exports each with :func:`uncol.export.export_network`, and times one slice
``(1, 1, 256, 256)`` per call on one CPU thread in both runtimes. The two runtimes are timed in
alternation, call by call, so that a machine shared with other jobs slows both alike; the figure
to compare across machines is the ratio, measured within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from uncol.config import load_config
from uncol.export import OnnxNetwork, export_network, spatial_multiple
from uncol.models import build_network

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"2D U-Net (acdc_supervised)": "configs/acdc_supervised.yaml", "UnCoL student (acdc_uncol)": "configs/acdc_uncol.yaml"}


def _time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(config: Path, repeats: int, warmup: int, workdir: Path) -> dict[str, Any]:
    """Median and spread of the per-slice latency of one config's network in both runtimes (ms)."""
    cfg = load_config(config)
    torch.manual_seed(0)
    net = build_network(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.train.patch_size).eval()
    x = torch.randn(1, cfg.data.in_channels, *cfg.train.patch_size)
    path = workdir / f"{config.stem}.onnx"
    # The file needs the run configuration in its metadata to be opened by OnnxNetwork.
    export_network(net, x, path, dynamic_spatial=spatial_multiple(cfg) is not None, metadata={"config": cfg.to_yaml()})
    onnx_net = OnnxNetwork(path, threads=1)
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    with torch.no_grad():
        runs = {"torch": lambda: net(x), "onnxruntime": lambda: onnx_net(x)}
        for _ in range(warmup):
            for fn in runs.values():
                fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                times[name].append(1000 * _time_once(fn))
    out: dict[str, Any] = {"config": str(config.relative_to(REPO)), "input": list(x.shape)}
    for name, ts in times.items():
        qs = statistics.quantiles(ts, n=4)
        out[name] = {"median_ms": statistics.median(ts), "q1_ms": qs[0], "q3_ms": qs[2], "n": len(ts)}
    out["ratio_onnxruntime_over_torch"] = out["onnxruntime"]["median_ms"] / out["torch"]["median_ms"]
    # Each ONNX Runtime call runs right after a PyTorch call: the median of these pairs' ratios is the
    # figure least moved by other jobs' load, which changes between pairs more than within one.
    out["paired_ratio"] = statistics.median(o / t for t, o in zip(times["torch"], times["onnxruntime"], strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure every network and print a Markdown table (and optionally write JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="timed calls per runtime (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per runtime first")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, rel in CONFIGS.items():
            results[label] = measure(REPO / rel, a.repeats, a.warmup, Path(tmp))
    import onnxruntime

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, 1 thread, batch 1, "
        f"median of {a.repeats} (interquartile range)\n"
    )
    print("| network | PyTorch ms/slice | ONNX Runtime ms/slice | ONNX Runtime / PyTorch (medians; paired) |")
    print("|---|---|---|---|")
    for label, r in results.items():
        t, o = r["torch"], r["onnxruntime"]
        print(
            f"| {label} | {t['median_ms']:.1f} ({t['q1_ms']:.1f}-{t['q3_ms']:.1f}) "
            f"| {o['median_ms']:.1f} ({o['q1_ms']:.1f}-{o['q3_ms']:.1f}) "
            f"| {r['ratio_onnxruntime_over_torch']:.2f}; {r['paired_ratio']:.2f} |"
        )
    if a.json:
        from uncol.atomic import atomic_write_json

        atomic_write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
