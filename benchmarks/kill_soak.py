"""Kill soak: SIGKILL a tiny training run at many random moments, resume it each time, compare the end.

Each cycle trains a tiny 2D run (a synthetic HDF5 dataset, tests/fixtures_data.py) in a fresh output
folder through tests/fault_child.py (``uncol train`` with hooks, no test branch in uncol itself), in a
child process forked from this one (``--spawn``: a fresh interpreter each time, slower): the child is
started, killed with SIGKILL after a random delay (uniform in ``[0, --max-delay]`` seconds,
counted from the moment it has passed its set-up and written ``config.yaml``), restarted with
``--resume``, killed again, and so on until the run finishes. Checkpoint and teacher-cache writes are slowed
down (``--slow`` seconds each, written in 8 chunks) so that a good share of the kills lands in the middle of
one; with ``--method uncol`` (the stand-in foundation teacher) kills also land in teacher-cache writes.

Checked and counted:

* every checkpoint a resumed child loaded is one that some child had written whole (the SHA-256 of the
  file loaded is among those of complete contents written; fault_child.py logs both): ``corrupt_loads``;
* after each kill, the partial temporary files left (a kill during a checkpoint or cache write);
* at the end of each cycle: no temporary file left in the run folder, the final weights against those
  of an uninterrupted run (maximum absolute difference), and the training log's losses against its log.

Example (figures in benchmarks/RESULTS.md)::

    .venv/bin/python benchmarks/kill_soak.py --minutes 12 --out /tmp/kill_soak.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "fault_child.py"
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Imported once here, so that a forked child starts training at once (imports run no torch operation).
import fake_teacher  # noqa: E402, F401
import fault_child  # noqa: E402, F401
import uncol.api  # noqa: E402, F401
from fixtures_data import make_hdf5_dataset  # noqa: E402
from uncol.atomic import is_temporary  # noqa: E402
from uncol.config import config_from_dict  # noqa: E402


def tiny_config(out_dir: Path, data_root: Path, method: str, iterations: int, checkpoint_every: int) -> str:
    """The YAML of a tiny 2D run (as in tests/test_faults.py), validation every third of the run."""
    data = make_hdf5_dataset(data_root, n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3) \
        if not data_root.exists() else None
    values: dict[str, Any] = {
        "name": method,
        "output_dir": str(out_dir),
        "data": (dataclasses.asdict(data) if data else json.loads((data_root / "data.json").read_text()))
        | {"normalize": "zscore"},
        "split": {"labeled": 2},
        "model": {"arch": "unet2d", "channels": [4, 8, 16]},
        "augment": {"rotate_degrees": 10.0},
        "train": {"iterations": iterations, "batch_size": 2, "patch_size": [32, 32],
                  "val_every": max(1, iterations // 3), "checkpoint_every": checkpoint_every, "log_every": 1,
                  "threads": 1, "lr": 0.01, "device": "cpu"},
    }
    if data is not None:
        (data_root / "data.json").write_text(json.dumps(dataclasses.asdict(data)))
    if method == "uncol":
        values["model"] = {"arch": "uncol_student2d", "channels": [8, 16, 32], "vit_patch": 4, "vit_dim": 24,
                           "vit_heads": 2, "vit_depth": 4, "context_dims": [8]}
        values["method"] = {"name": "uncol", "uncol": {"unlabeled_batch_size": 2, "stage1_fraction": 0.5}}
        values["teacher"] = {"name": "litemedsam", "layers": ["stage1", "stage2", "neck", "fused"],
                             "token_grid": 8, "prompt": "box", "min_pixels": 2}
        values["augment"] = {"flip": True, "rotate90": True, "rotate_degrees": 0.0}
    return config_from_dict(values).to_yaml()


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _losses(run: Path) -> list[str]:
    with open(run / "log.csv", newline="") as fh:
        return [row["loss"] for row in csv.DictReader(fh)]


def _network(path: Path) -> dict[str, np.ndarray]:
    """The network's weights as NumPy arrays: the parent runs no torch operation (it forks children)."""
    return {k: v.numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True)["network"].items()}


class Child:
    """``tests/fault_child.py ARGS`` in a child process: a forked copy of this one (imports done once, so a
    kill every few seconds is affordable on a loaded machine) or, with ``spawn``, a fresh interpreter.

    Either way it is a process of its own, killed with SIGKILL, whose files are what the kill left.
    """

    def __init__(self, args: list[str], env: dict[str, str], err: Path, spawn: bool = False) -> None:
        full = {"OMP_NUM_THREADS": "1", "UNCOL_FAULT_FAKE_TEACHER": "1", **env}
        self.err = err
        self.returncode: int | None = None
        if spawn:
            with open(err, "w") as fh:
                self._proc: subprocess.Popen | None = subprocess.Popen(
                    [sys.executable, str(CHILD), *args], env={**os.environ, **full},
                    stdout=subprocess.DEVNULL, stderr=fh)
            self.pid = self._proc.pid
            return
        self._proc = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: hooks in place, then the command line; never returns
            code = 1
            try:
                fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 2)
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                os.environ.update(full)
                import fault_child
                from uncol.cli import main as uncol_main

                fault_child.install()
                code = uncol_main(args)
            except BaseException:  # noqa: BLE001 - reported through the exit status and the err file
                import traceback

                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        if self.returncode is None:
            if self._proc is not None:
                self.returncode = self._proc.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL it (if it still runs)."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        """Wait for its end; returns the exit status."""
        while self.poll() is None:
            time.sleep(0.02)
        return int(self.returncode)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""


def _wait_for_setup(proc: Child, log: Path, before: int, run: Path, timeout: float = 300.0) -> bool:
    """Wait until the child has written its run folder's config.yaml (set-up passed); False if it ended."""
    config = str(run / "config.yaml")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(e["event"] == "written" and e["path"] == config for e in _events(log)[before:]):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError("child did not start training")


class Soak:
    """Counters of the whole soak."""

    def __init__(self) -> None:
        self.kills = 0
        self.resumes = 0
        self.kills_in_checkpoint_write = 0
        self.kills_in_cache_write = 0
        self.kills_in_other_write = 0
        self.loads = 0
        self.corrupt_loads = 0
        self.cycles = 0
        self.unfinished_cycles = 0
        self.cycles_identical = 0
        self.logs_identical = 0
        self.leftover_temporaries = 0
        self.max_weight_diff = 0.0
        self.failures: list[str] = []


def run_cycle(
    soak: Soak, work: Path, cfg_text: str, method: str, ref_final: Path, ref_losses: list[str], rng: random.Random,
    max_delay: float, slow: float, deadline: float, spawn: bool,
) -> None:
    """One run from scratch to its end through kills and resumes."""
    out = work / f"cycle{soak.cycles:03d}"
    out.mkdir(parents=True)
    cfg_file = out / "cfg.yaml"
    cfg_file.write_text(cfg_text.replace(str(work / "ref"), str(out)))
    run = out / method
    log = out / "writes.jsonl"
    env = {"UNCOL_FAULT_SLOW": f"*.pt,*.feat,*.emb:{slow}", "UNCOL_FAULT_LOG": str(log)}
    first = True
    seen: set[Path] = set()
    while not (run / "checkpoints" / "final.pt").exists() or not (run / "summary.json").exists():
        if time.time() > deadline and not first:
            soak.unfinished_cycles += 1  # the budget ended: this cycle is not compared
            return
        args = ["train", str(cfg_file), "--no-eval", "--quiet"] if first else \
            ["train", str(run), "--resume", "--no-eval", "--quiet"]
        before = len(_events(log))
        proc = Child(args, env, out / "stderr.txt", spawn)
        soak.resumes += 0 if first else 1
        first = False
        if _wait_for_setup(proc, log, before, run):
            time.sleep(rng.uniform(0.0, max_delay))
        proc.kill()
        proc.wait()
        err = proc.stderr()
        if proc.returncode == -signal.SIGKILL:
            soak.kills += 1
            # The partial files this kill left (earlier kills' leftovers may still be there).
            temps = [f for f in out.rglob("*") if is_temporary(f) and f not in seen]
            seen.update(temps)
            in_ckpt = [f for f in temps if f.parent == run / "checkpoints"]
            in_cache = [f for f in temps if "teacher_cache" in f.parts]
            soak.kills_in_checkpoint_write += bool(in_ckpt)
            soak.kills_in_cache_write += bool(in_cache)
            soak.kills_in_other_write += bool(temps) and not in_ckpt and not in_cache
        elif proc.returncode != 0:
            soak.failures.append(f"{run}: child exited {proc.returncode}: {err.strip()[-500:]}")
            return
    events = _events(log)
    written = {e["sha256"] for e in events if e["event"] == "written"}
    for e in (e for e in events if e["event"] == "loaded"):
        soak.loads += 1
        if not e["ok"] or e["sha256"] not in written:
            soak.corrupt_loads += 1
            soak.failures.append(f"{e['path']}: loaded a file never written whole ({e})")
    soak.leftover_temporaries += sum(1 for f in run.rglob("*") if is_temporary(f))
    a, b = _network(ref_final), _network(run / "checkpoints" / "final.pt")
    diff = max(float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a)
    soak.max_weight_diff = max(soak.max_weight_diff, diff)
    soak.cycles_identical += all(a[k].tobytes() == b[k].tobytes() for k in a)
    soak.logs_identical += _losses(run) == ref_losses
    soak.cycles += 1
    shutil.rmtree(out / "teacher_cache", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the soak for ``--minutes`` and print (and optionally write) its counts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12.0, help="wall-clock budget (the last cycle finishes)")
    ap.add_argument("--method", choices=("supervised", "uncol"), default="supervised")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--checkpoint-every", type=int, default=3)
    ap.add_argument("--max-delay", type=float, default=4.0, help="longest random delay before a kill (s)")
    ap.add_argument("--slow", type=float, default=0.2, help="seconds each checkpoint write takes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the counts")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--spawn", action="store_true",
                    help="start each child as a fresh interpreter (slower: imports each time) instead of a fork")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_soak_"))
    t0 = time.time()
    deadline = t0 + a.minutes * 60
    soak = Soak()
    try:
        cfg_text = tiny_config(work / "ref", work / "data", a.method, a.iterations, a.checkpoint_every)
        (work / "ref").mkdir()
        (work / "ref" / "cfg.yaml").write_text(cfg_text)
        ref = Child(["train", str(work / "ref" / "cfg.yaml"), "--no-eval", "--quiet"], {}, work / "ref" / "err.txt",
                    a.spawn)
        if ref.wait() != 0:
            print(ref.stderr(), file=sys.stderr)
            return 1
        ref_run = work / "ref" / a.method
        ref_seconds = time.time() - t0
        ref_losses = _losses(ref_run)
        while time.time() < deadline:
            run_cycle(soak, work, cfg_text, a.method, ref_run / "checkpoints" / "final.pt", ref_losses, rng,
                      a.max_delay, a.slow, deadline, a.spawn)
            if soak.failures:
                break
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "method": a.method, "iterations": a.iterations, "checkpoint_every": a.checkpoint_every,
        "max_delay_s": a.max_delay, "slow_write_s": a.slow, "seed": a.seed,
        "wall_s": round(time.time() - t0, 1), "reference_run_s": round(ref_seconds, 1),
        **{k: v for k, v in vars(soak).items() if k != "failures"}, "failures": soak.failures,
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not soak.failures and soak.cycles_identical == soak.cycles else 1


if __name__ == "__main__":
    sys.exit(main())
