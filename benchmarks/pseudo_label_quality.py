"""Diagnostic: how good are UnCoL's pseudo-labels, teacher by teacher?

The "unlabeled" slices of a benchmark split do have ground truth (it is only hidden from training),
so each teacher can be scored where the method would use it. For a UnCoL run folder this loads the
EMA (specialized) teacher of its latest checkpoint, draws unlabeled training slices (un-augmented),
prompts the foundation teacher from the EMA teacher's pseudo-labels exactly as stage 2 does, fuses
both with the entropy rule at a given threshold, and reports against the hidden ground truth:

* Dice per class of the EMA teacher, the foundation teacher and the fused pseudo-label, and of the EMA
  and fused pseudo-labels with each class kept to its largest connected component (BCP's clean-up);
* per teacher, the fraction of pixels where it is confident and its accuracy there;
* the fraction of pixels supervised by each teacher alone, by both and by neither, and the accuracy
  of the fused pseudo-label on the supervised pixels.

Where the run used the class-wise gate (``method.uncol.teacher_min_dice``), the voting classes of its
``teacher_reliability.json`` gate the foundation teacher here too (``--no-gate`` to score it ungated).

    python benchmarks/pseudo_label_quality.py runs/bench/bench_acdc_uncol_7p --slices 120 [--threshold 0.75]

Not a test: it prints figures for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from uncol import teachers
from uncol.config import config_from_dict
from uncol.data.splits import load_splits
from uncol.data.training import SampleSet
from uncol.methods.consistency import threshold_scale
from uncol.methods.postprocess import keep_largest_component_per_class
from uncol.methods.uncertainty import entropy
from uncol.methods.uncol.jittered_targets import JitteredPromptTargets
from uncol.methods.uncol.pseudo_labels import fuse_pseudo_labels, gate_classes
from uncol.metrics import compute_dice
from uncol.models.networks import build_network
from uncol.runs import RunPaths, load_run_config


def checkpoint_path(run: Path, which: str) -> Path:
    """The checkpoint ``--checkpoint`` names: ``latest``, ``switch`` (the one branch point) or a path."""
    paths = RunPaths(run)
    if which == "latest":
        return paths.latest
    if which == "switch":
        points = paths.branch_points()
        if len(points) != 1:
            raise SystemExit(f"{paths.checkpoints}: expected one stage-switch checkpoint step<N>.pt, found {len(points)}")
        return points[0]
    path = Path(which)
    if not path.is_file():
        raise SystemExit(f"{path}: no such checkpoint")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--slices", type=int, default=120, help="unlabeled slices scored (seeded draw)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="entropy threshold as a fraction of the base (default: method.uncol.threshold_start)")
    ap.add_argument("--threshold-base", choices=["ln2", "lnK"], default=None,
                    help="what the fraction multiplies (default: the run's method.uncol.threshold_base; runs "
                         "from before issue 13 gated on lnK)")
    ap.add_argument("--weights", choices=["ema", "network"], default="ema", help="teacher: the EMA or the student")
    ap.add_argument("--prompt", choices=["pseudo", "gt"], default="pseudo",
                    help="prompt the foundation teacher from the EMA pseudo-label (as training does) or from the "
                         "hidden ground truth (the teacher's own ceiling)")
    ap.add_argument("--no-gate", action="store_true", help="ignore the run's class-wise gate (teacher_reliability.json)")
    ap.add_argument("--checkpoint", default="latest",
                    help="weights scored: 'latest' (the run's last checkpoint), 'switch' (its checkpoint at the "
                         "stage switch, checkpoints/step<N>.pt: the pseudo-labels stage 2 starts from), or a path")
    ap.add_argument("--prompt-checkpoint", default=None,
                    help="prompt the foundation teacher from the EMA pseudo-labels of this checkpoint (latest, switch or "
                         "a path) instead of --checkpoint's: what method.uncol.foundation_refresh does when a window's "
                         "prompting teacher is older than the EMA teacher fused with it ('--checkpoint latest "
                         "--prompt-checkpoint switch': a window over the whole stage 2, at its end)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="config overrides (e.g. teacher.cache_dir=...)")
    a = ap.parse_args(argv)

    cfg = load_run_config(a.run)
    cfg = config_from_dict(cfg.to_dict(), a.extra)
    torch.set_num_threads(max(1, cfg.train.threads))
    splits = load_splits(RunPaths(a.run).splits)
    rng = np.random.default_rng(a.seed)
    cases = list(splits.unlabeled)
    samples = SampleSet(cases, cfg, use_labels=True)  # the hidden labels, for scoring only
    pick = rng.choice(len(samples), size=min(a.slices, len(samples)), replace=False)
    samples.samples = [samples.samples[i] for i in sorted(pick)]

    def load_net(which: str) -> tuple[torch.nn.Module, dict]:
        state = torch.load(checkpoint_path(a.run, which), map_location="cpu", weights_only=False)
        net = build_network(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.train.patch_size)
        if a.weights == "ema":
            net.load_state_dict({k.removeprefix("module."): v for k, v in state["modules"]["ema"].items()})
        else:
            net.load_state_dict(state["modules"]["network"])
        return net.eval(), state

    net, state = load_net(a.checkpoint)
    prompt_net, prompt_state = (net, state) if a.prompt_checkpoint is None else load_net(a.prompt_checkpoint)
    teacher = teachers.build_teacher(cfg.teacher)
    cache = teachers.open_cache(cfg, teacher)
    grid = tuple(p // net.vit_patch for p in cfg.train.patch_size)
    # Stage-2 boxes are jittered as training jitters them (method.uncol.stage2_box_jitter).
    jitter = cfg.teacher.box_jitter_px if cfg.method.options.stage2_box_jitter else 0.0
    targets = JitteredPromptTargets(teacher, cache, samples, cfg, grid, embeddings=True, lazy=True, box_jitter_px=jitter)

    k = cfg.data.num_classes
    voting = None
    gate_file = a.run / "teacher_reliability.json"
    if gate_file.is_file() and not a.no_gate:
        report = json.loads(gate_file.read_text())
        names_all = cfg.data.class_names or [str(c) for c in range(k)]
        voting = torch.tensor([n in report["voting_classes"] for n in names_all])
    # The method's options live in cfg.method.options (section method.uncol of the config).
    frac = a.threshold if a.threshold is not None else cfg.method.options.threshold_start
    base = a.threshold_base or cfg.method.options.threshold_base
    thr = frac * threshold_scale(base, k)
    no_view = ((False,) * cfg.spatial_dims, 0)
    rows = ("specialized", "general", "fused", "specialized, largest component", "fused, largest component")
    scores: dict[str, list[list[float]]] = {n: [[] for _ in range(1, k)] for n in rows}
    tot = {"n": 0, "conf_s": 0, "conf_g": 0, "acc_s": 0, "acc_g": 0, "src": np.zeros(4), "acc_f": 0, "sup": 0}
    for i, s in enumerate(samples.samples):
        x = torch.from_numpy(s.image[None]).float()
        with torch.no_grad():
            p_s = torch.softmax(net(x), dim=1)
        source = p_s
        if prompt_net is not net:
            with torch.no_grad():
                source = torch.softmax(prompt_net(x), dim=1)
        if a.prompt == "gt":
            source = torch.nn.functional.one_hot(torch.from_numpy(s.label), k).permute(2, 0, 1)[None].float()
        p_g = targets.pseudo_label_probabilities([i], [no_view], source, np.random.default_rng([a.seed, i]))
        if voting is not None:
            p_g = gate_classes(p_g, p_s, voting)
        fused = fuse_pseudo_labels(p_g, p_s, thr)
        gt = s.label
        preds = {"specialized": p_s.argmax(1)[0].numpy(), "general": p_g.argmax(1)[0].numpy(),
                 "fused": fused.labels[0].numpy()}
        # BCP's clean-up (method.bcp.largest_component): each class kept to its largest connected component.
        for name in ("specialized", "fused"):
            preds[f"{name}, largest component"] = keep_largest_component_per_class(
                torch.from_numpy(preds[name])[None], k)[0].numpy()
        for name, pr in preds.items():
            for c in range(1, k):
                d = compute_dice(pr == c, gt == c)
                if not math.isnan(d):
                    scores[name][c - 1].append(d)
        conf_s = (entropy(p_s) < thr)[0].numpy()
        conf_g = (entropy(p_g) < thr)[0].numpy()
        tot["n"] += gt.size
        tot["conf_s"] += int(conf_s.sum())
        tot["conf_g"] += int(conf_g.sum())
        tot["acc_s"] += int((preds["specialized"] == gt)[conf_s].sum())
        tot["acc_g"] += int((preds["general"] == gt)[conf_g].sum())
        tot["src"] += np.bincount(fused.source[0].numpy().ravel().astype(np.int64), minlength=4)
        m = fused.mask[0].numpy()
        tot["sup"] += int(m.sum())
        tot["acc_f"] += int((preds["fused"] == gt)[m].sum())

    names = cfg.data.class_names[1:] if cfg.data.class_names else [str(c) for c in range(1, k)]
    print(f"run {a.run} ({a.weights} weights, step {state['step']}), {len(samples)} unlabeled slices, "
          f"threshold {frac:.2f} x {base} = {thr:.3f} nats, foundation teacher prompted from {a.prompt}"
          f"{'' if prompt_net is net else ' of the EMA at step ' + str(prompt_state['step'])}, overlap rule {cfg.teacher.overlap}, "
          f"class gate {'off' if voting is None else report['voting_classes']}")
    print("| pseudo-label | " + " | ".join(f"{n} Dice %" for n in names) + " | mean Dice % |")
    print("|---|" + "---|" * (len(names) + 1))
    for name, per in scores.items():
        means = [100 * float(np.mean(v)) if v else float("nan") for v in per]
        print(f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) + f" | {np.nanmean(means):.1f} |")
    n = tot["n"]
    print(f"\nEMA teacher confident on {100 * tot['conf_s'] / n:.1f}% of pixels, accuracy there "
          f"{100 * tot['acc_s'] / max(1, tot['conf_s']):.2f}%")
    print(f"foundation teacher confident on {100 * tot['conf_g'] / n:.1f}% of pixels, accuracy there "
          f"{100 * tot['acc_g'] / max(1, tot['conf_g']):.2f}%")
    src = tot["src"] / n
    print(f"supervised by: neither {100 * src[0]:.1f}%, foundation only {100 * src[1]:.1f}%, EMA only "
          f"{100 * src[2]:.1f}%, both {100 * src[3]:.1f}%; fused accuracy on supervised pixels "
          f"{100 * tot['acc_f'] / max(1, tot['sup']):.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
