"""Diagnostic: what an entropy gate keeps, at UA-MT's ``ln 2`` base and at ``ln K``.

UnCoL (and UA-MT) supervise an unlabeled pixel only where a teacher's predictive entropy is below
``(start + (end - start) r(t)) x base`` nats. For a trained run's network (its EMA teacher where the run
has one) this scores unlabeled training slices, whose ground truth exists but is hidden from training,
at both ends of the ramp (``r = 0``: 0.75 x base, ``r = 1``: 1.0 x base) for both bases, and reports per
setting the fraction of pixels admitted (all, and those where the prediction or the hidden label is a
foreground class), the accuracy of the argmax there, and the share of the network's errors that the
gate lets through. A gate that admits nearly everything (ln K with K > 2:
issue 13) filters nothing; one that admits too little starves the pseudo-label loss.

    python benchmarks/entropy_gate.py RUN [--slices 120] [--weights ema|network] [--seed 0]

Not a test: it prints a table for benchmarks/RESULTS.md. 2D runs (slices); 3D runs score whole volumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from uncol.config import config_from_dict
from uncol.data.splits import load_splits
from uncol.data.training import SampleSet
from uncol.methods.consistency import threshold_scale
from uncol.methods.uncertainty import entropy
from uncol.models.networks import build_network
from uncol.runs import RunPaths, load_run_config

#: (label, threshold fraction): the two ends of the Gaussian ramp with the default 0.75 -> 1.0.
FRACTIONS = (("r=0", 0.75), ("r=1", 1.0))


def load_network(run: Path, cfg, weights: str | None) -> tuple[torch.nn.Module, str, int]:
    """The run's latest weights: its EMA teacher when it has one (``weights=None``), else the network."""
    state = torch.load(RunPaths(run).latest, map_location="cpu", weights_only=False)
    net = build_network(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.train.patch_size)
    modules = state["modules"]
    which = weights or ("ema" if "ema" in modules else "network")
    if which == "ema":
        if "ema" not in modules:
            raise SystemExit(f"{run}: the checkpoint holds no EMA teacher; use --weights network")
        net.load_state_dict({k.removeprefix("module."): v for k, v in modules["ema"].items()})
    else:
        net.load_state_dict(modules["network"])
    return net.eval(), which, int(state["step"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--slices", type=int, default=120, help="unlabeled samples scored (seeded draw)")
    ap.add_argument("--weights", choices=["ema", "network"], default=None, help="default: the EMA teacher if any")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="config overrides")
    a = ap.parse_args(argv)

    cfg = config_from_dict(load_run_config(a.run).to_dict(), a.extra)
    torch.set_num_threads(max(1, cfg.train.threads))
    splits = load_splits(RunPaths(a.run).splits)
    samples = SampleSet(list(splits.unlabeled), cfg, use_labels=True)  # hidden labels, for scoring only
    if not samples.samples:
        raise SystemExit(f"{a.run}: its split has no unlabeled cases to score")
    rng = np.random.default_rng(a.seed)
    pick = sorted(rng.choice(len(samples.samples), size=min(a.slices, len(samples.samples)), replace=False))
    net, which, step = load_network(a.run, cfg, a.weights)
    k = cfg.data.num_classes
    settings = [(base, name, frac * threshold_scale(base, k)) for base in ("ln2", "lnK") for name, frac in FRACTIONS]
    admitted = np.zeros(len(settings))
    correct_admitted = np.zeros(len(settings))
    fg_admitted = np.zeros(len(settings))
    total = errors = foreground = 0
    for i in pick:
        s = samples.samples[i]
        with torch.no_grad():
            p = torch.softmax(net(torch.from_numpy(s.image[None]).float()), dim=1)
        h = entropy(p)[0].numpy()
        pred = p.argmax(1)[0].numpy()
        right = pred == s.label
        fg = (pred > 0) | (s.label > 0)  # where a structure is, in the prediction or the hidden label
        total += right.size
        errors += int((~right).sum())
        foreground += int(fg.sum())
        for j, (_, _, thr) in enumerate(settings):
            keep = h < thr
            admitted[j] += keep.sum()
            correct_admitted[j] += (keep & right).sum()
            fg_admitted[j] += (keep & fg).sum()
    acc = 1.0 - errors / max(1, total)
    print(f"run {a.run} ({which} weights, step {step}), {len(pick)} unlabeled samples, K = {k}, "
          f"argmax accuracy {100 * acc:.1f}% on all pixels")
    print("| base | ramp | threshold (nats) | pixels admitted % | foreground pixels admitted % | accuracy on admitted % "
          "| errors admitted % |")
    print("|---|---|---|---|---|---|---|")
    for j, (base, name, thr) in enumerate(settings):
        wrong_in = admitted[j] - correct_admitted[j]
        print(f"| {base} | {name} | {thr:.3f} | {100 * admitted[j] / total:.1f} | "
              f"{100 * fg_admitted[j] / max(1, foreground):.1f} | "
              f"{100 * correct_admitted[j] / max(1, admitted[j]):.2f} | {100 * wrong_in / max(1, errors):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
