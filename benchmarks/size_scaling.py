"""How training step time and peak memory grow with the image size, U-Net against the UnCoL student (issue 15).

Usage::

    python benchmarks/size_scaling.py [--sizes-2d 128 256 512] [--shapes-3d 32x32x32 48x64x48 64x64x64]
                                      [--batch 2] [--n 5] [--repeats 2] [--json scaling.json]

For every input size, the untrained networks of ``configs/acdc_supervised.yaml`` /
``configs/acdc_uncol.yaml`` (2D) and ``configs/hippocampus_supervised.yaml`` /
``configs/hippocampus_uncol.yaml`` (3D) are built at that size (``benchmarks/student_cost.py``'s
:func:`build_networks`) and timed on one thread: forward + backward (cross-entropy against a random
label map, gradients freed between calls; no optimiser step) of a ``(batch, 1, *size)`` batch in train
mode, median of ``n`` calls after 2 warm-up calls.

Each (network, size) runs in a fresh child process, so that its peak memory is its own: the child
reports its resident set before the first call (torch, the network and the batch loaded) and the
high-water mark of its resident set after the calls (``VmHWM`` in ``/proc/self/status``: what
``getrusage``'s ``ru_maxrss`` reports, read without its lag); the difference is
the memory a training step adds (activations, gradients, workspace). The U-Net and student children
of one size alternate, ``repeats`` times, and the step-time ratio student / U-Net is the median of the
per-repeat ratios, so machine load affects both alike. ``tracemalloc`` does not see torch's
allocations, which is why the resident set is used.

Like the ``uncol`` command, the script first keeps freed memory in the process (:mod:`uncol.allocator`;
``UNCOL_MALLOC_TUNING=0`` leaves glibc's defaults, under which page faults cost up to 20% more time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

NETWORKS = ("unet", "student")


def _memory_mb() -> dict[str, float]:
    """This process's resident set now (``VmRSS``) and its high-water mark (``VmHWM``), MiB, from /proc.

    ``VmHWM`` is the kernel's peak, which it raises before unmapping freed memory (so a peak freed
    within a step is kept); ``getrusage``'s ``ru_maxrss`` is the same counter but may lag ``VmRSS``
    until the next such update.
    """
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0  # kB
    return out


def child(network: str, shape: list[int], batch: int, n: int, warmup: int = 2) -> dict[str, Any]:
    """Time ``network``'s training calls at ``shape`` in this process and read its memory (see module doc)."""
    import torch
    from student_cost import _summary, _time_once, _train_step, build_networks

    torch.set_num_threads(1)
    dims = len(shape)
    unet, student, in_ch, num_classes = build_networks(shape[0], dims, tuple(shape) if dims == 3 else None)
    net = unet if network == "unet" else student
    del unet, student
    net.train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, in_ch, *shape, generator=gen)
    y = torch.randint(0, num_classes, (batch, *shape), generator=gen)
    step = _train_step(net, lambda: net(x), y)
    before = _memory_mb()["VmRSS"]
    for _ in range(warmup):
        step()
    times = [_time_once(step) for _ in range(n)]
    peak = _memory_mb()["VmHWM"]
    return {
        "network": network, "shape": shape, "batch": batch, "step": _summary(times),
        "rss_before_mb": before, "peak_rss_mb": peak, "step_memory_mb": max(0.0, peak - before),
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def run_child(network: str, shape: list[int], batch: int, n: int) -> dict[str, Any]:
    """:func:`child` in a fresh Python process; its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", network, "x".join(map(str, shape)),
           "--batch", str(batch), "--n", str(n)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(shapes: list[list[int]], batch: int = 2, n: int = 5, repeats: int = 2) -> list[dict[str, Any]]:
    """For each shape, alternate U-Net and student children ``repeats`` times.

    Returns:
        One row per shape: ``shape``, per network ``{"step_ms", "step_memory_mb", "peak_rss_mb"}``
        (medians over the repeats; ms per step of the whole batch) and ``time_ratio`` / ``memory_ratio``
        (student over U-Net; the time ratio is the median of the per-repeat ratios).
    """
    rows = []
    for shape in shapes:
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in NETWORKS}
        for _ in range(repeats):
            for net in NETWORKS:
                runs[net].append(run_child(net, shape, batch, n))
        row: dict[str, Any] = {"shape": shape, "batch": batch}
        for net, rs in runs.items():
            row[net] = {
                "step_ms": statistics.median(r["step"]["median_ms"] for r in rs),
                "step_memory_mb": statistics.median(r["step_memory_mb"] for r in rs),
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            }
        row["time_ratio"] = statistics.median(
            s["step"]["median_ms"] / u["step"]["median_ms"] for u, s in zip(runs["unet"], runs["student"], strict=True)
        )
        row["memory_ratio"] = row["student"]["step_memory_mb"] / max(1e-9, row["unet"]["step_memory_mb"])
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table; growth is against the first row of the same dimensionality."""
    lines = [
        "| input (batch) | U-Net ms/step | student ms/step | student / U-Net | U-Net step memory MiB | "
        "student step memory MiB | U-Net peak RSS MiB | student peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        u, s = r["unet"], r["student"]
        lines.append(
            f"| {'x'.join(map(str, r['shape']))} ({r['batch']}) | {u['step_ms']:.0f} | {s['step_ms']:.0f} | "
            f"{r['time_ratio']:.2f}x | {u['step_memory_mb']:.0f} | {s['step_memory_mb']:.0f} | "
            f"{u['peak_rss_mb']:.0f} | {s['peak_rss_mb']:.0f} |"
        )
    growth = []
    for dims in (2, 3):
        rs = [r for r in rows if len(r["shape"]) == dims]
        if len(rs) < 2:
            continue
        base = rs[0]
        pixels0 = 1
        for v in base["shape"]:
            pixels0 *= v
        for r in rs[1:]:
            pixels = 1
            for v in r["shape"]:
                pixels *= v
            k = pixels / pixels0
            growth.append(
                f"- {'x'.join(map(str, r['shape']))} vs {'x'.join(map(str, base['shape']))} ({k:.1f}x the pixels): "
                f"U-Net time {r['unet']['step_ms'] / base['unet']['step_ms']:.1f}x, memory "
                f"{r['unet']['step_memory_mb'] / max(1e-9, base['unet']['step_memory_mb']):.1f}x; student time "
                f"{r['student']['step_ms'] / base['student']['step_ms']:.1f}x, memory "
                f"{r['student']['step_memory_mb'] / max(1e-9, base['student']['step_memory_mb']):.1f}x"
            )
    return "\n".join(lines + ([""] + growth if growth else []))


def _shape(text: str) -> list[int]:
    return [int(v) for v in text.lower().split("x")]


def main(argv: list[str] | None = None) -> int:
    """Run the children, print the table and optionally write JSON (or, with ``--child``, be one)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-2d", type=int, nargs="*", default=[128, 256, 512], help="square 2D sides")
    p.add_argument("--shapes-3d", nargs="*", default=["32x32x32", "48x64x48", "64x64x64"], help="3D patch sizes")
    p.add_argument("--batch", type=int, default=2, help="images per step")
    p.add_argument("--n", type=int, default=5, help="timed calls per child")
    p.add_argument("--repeats", type=int, default=2, help="alternating repeats of each (network, size)")
    p.add_argument("--child", nargs=2, metavar=("NETWORK", "SHAPE"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    from uncol.allocator import tune_malloc

    tune_malloc()  # as the `uncol` command does, so the figures are those of `uncol train`
    if a.child is not None:
        print(json.dumps(child(a.child[0], _shape(a.child[1]), a.batch, a.n)))
        return 0
    shapes = [[s, s] for s in a.sizes_2d] + [_shape(s) for s in a.shapes_3d]
    start = time.perf_counter()
    rows = measure(shapes, a.batch, a.n, a.repeats)
    print(f"1 thread, a fresh process per (network, size), {time.perf_counter() - start:.0f} s in all\n")
    print(format_table(rows))
    if a.json:
        from uncol.atomic import atomic_write_json

        atomic_write_json(a.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
