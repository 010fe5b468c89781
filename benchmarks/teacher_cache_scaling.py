"""Throughput of ``uncol teacher cache`` with 1 and 2 processes on this machine (issue: the cache at scale).

Runs the real command line with the real teacher on the first ``--images`` training images of a
config, each run into an empty temporary cache folder, in these variants:

* ``1proc``: one process, one thread;
* ``2shards``: two ``--shard i/2`` processes started together (a job array of two), one thread each;
* ``torchrun2``: ``torchrun --nproc-per-node 2``, one thread each;
* ``1proc2threads``: one process, two threads (does a second process beat a second thread?).

The variants alternate within each repeat so that a change of the machine's load hits all of them
alike. Throughput is the command's own figure: encoded images over the span from the first process's
start of encoding to the last one's end (setup, i.e. imports, model and data loading, excluded); the
command's wall time, start-up included, is recorded too, with the load average before and after.
Example::

    .venv/bin/python benchmarks/teacher_cache_scaling.py configs/acdc_uncol.yaml \\
        --set data.root=../shared/data/ACDC --images 12 --repeats 2 --out bench/teacher_cache_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("1proc", "2shards", "torchrun2", "1proc2threads")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cache_args(config: str, overrides: list[str], images: int, cache_dir: Path, threads: int) -> list[str]:
    sets = [*overrides, "teacher.name=litemedsam", "teacher.device=cpu", f"train.threads={threads}",
            f"teacher.cache_dir={cache_dir}"]
    args = ["teacher", "cache", config, "--split", "train", "--max-cases", str(images), "--limit", str(images), "--quiet"]
    for s in sets:
        args += ["--set", s]
    return args


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def _run(variant: str, config: str, overrides: list[str], images: int, work: Path, log: Path) -> dict[str, Any]:
    """One run of a variant into an empty cache; returns the command's report and the wall time."""
    bindir = Path(sys.executable).parent
    cache_dir = work / f"cache_{variant}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    threads = 2 if variant == "1proc2threads" else 1
    args = _cache_args(config, overrides, images, cache_dir, threads)
    reports = [work / f"{variant}_{i}.json" for i in range(2)]
    for r in reports:
        r.unlink(missing_ok=True)
    if variant in ("1proc", "1proc2threads"):
        commands = [[str(bindir / "uncol"), *args, "--report", str(reports[0])]]
    elif variant == "2shards":
        commands = [[str(bindir / "uncol"), *args, "--shard", f"{i}/2", "--report", str(reports[i])] for i in range(2)]
    else:
        commands = [[str(bindir / "torchrun"), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                     "--master-port", str(_free_port()), str(bindir / "uncol"), *args, "--report", str(reports[0])]]
    load_before = _load()
    t0 = time.time()
    with open(log, "a") as fh:
        fh.write(f"\n== {variant}: {' && '.join(' '.join(c) for c in commands)}\n")
        fh.flush()
        procs = [subprocess.Popen(c, env=_env(threads), stdout=fh, stderr=subprocess.STDOUT) for c in commands]
        codes = [p.wait() for p in procs]
    wall = time.time() - t0
    if any(codes):
        raise SystemExit(f"{variant}: exit codes {codes}; see {log}")
    found = [json.loads(r.read_text()) for r in reports if r.is_file()]
    shards = [s for f in found for s in f["shards"]]
    encoded = sum(s["encoded"] for s in shards)
    span = max(s["encode_end"] for s in shards) - min(s["encode_start"] for s in shards)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "variant": variant,
        "processes": len(shards),
        "threads_per_process": threads,
        "encoded": encoded,
        "encode_span_s": round(span, 2),
        "images_per_second": round(encoded / span, 4),
        # CPU seconds per image: the work itself, whatever share of the cores the processes got
        "cpu_s_per_image": round(sum(s["encode_cpu_seconds"] for s in shards) / encoded, 3),
        "wall_s": round(wall, 2),
        "per_process": [
            {k: s[k] for k in ("shard", "encoded", "skipped", "encode_seconds", "encode_cpu_seconds", "setup_seconds",
                               "images_per_second")}
            for s in shards
        ],
        "load_before": load_before,
        "load_after": _load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="YAML config (its training split supplies the images)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--images", type=int, default=12, help="images per run (the first training images)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the variants")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="uncol_cache_scaling_"))
    log = (args.out.with_suffix(".log") if args.out else work / "runs.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for repeat in range(args.repeats):
            for variant in args.variants:
                res = _run(variant, args.config, args.overrides, args.images, work, log)
                res["repeat"] = repeat
                runs.append(res)
                print(json.dumps(res), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {
        v: statistics.median(r["images_per_second"] for r in runs if r["variant"] == v)
        for v in args.variants
    }
    cpu = {v: statistics.median(r["cpu_s_per_image"] for r in runs if r["variant"] == v) for v in args.variants}
    summary: dict[str, Any] = {"median_images_per_second": medians, "median_cpu_s_per_image": cpu}
    if "1proc" in medians:
        summary["ratio_to_1proc"] = {v: round(m / medians["1proc"], 3) for v, m in medians.items()}
    result = {
        "config": args.config, "overrides": args.overrides, "images": args.images,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": runs, **summary,
    }
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
