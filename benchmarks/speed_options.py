"""Which CPU speed options pay: channels_last, inference_mode, torch.compile (issue 15 part 3).

Usage::

    python benchmarks/speed_options.py [--size 256] [--batch 4] [--n 10] [--profile 3] [--compile]
                                       [--json options.json]

On one thread, with the untrained networks of ``configs/acdc_supervised.yaml`` (2D U-Net) and
``configs/acdc_uncol.yaml`` (UnCoL student) at ``size x size`` (``benchmarks/student_cost.py``'s
builders), each option is measured against the default within one run, the two variants alternating
call by call (A, B, A, B...) so that machine load affects both alike; the figure is the median of the
per-pair time ratios (option / default, below 1 = faster):

* **profile**: the top operators (self CPU time) of the U-Net's supervised training call
  (forward + backward + SGD step), under :mod:`torch.profiler`;
* **channels_last**: forward + backward of each network with its weights and input in
  ``torch.channels_last`` against the default contiguous layout (and the largest difference of the
  logits), and the same for the 3D networks of the Hippocampus configurations at the 3D student's
  patch size (``channels_last_3d``, ``batch / 2`` volumes); then whole training steps with ``train.channels_last`` against the default, Mean Teacher
  and UnCoL stage 2 with the student (``batch / 2`` labeled + ``batch / 2`` unlabeled images, built as
  ``benchmarks/step_speed.py`` builds them);
* **inference_mode**: ``torch.inference_mode()`` against ``torch.no_grad()`` for the forwards that need
  no gradient: an EMA-teacher-style forward (train-mode layers, ``batch`` images) and evaluation (eval
  mode, one image);
* **torch.compile** (``--compile``): forward + backward of the U-Net compiled with the default inductor
  backend against eager (the compile time reported apart), then whole training steps with
  ``train.compile`` against the default, as for ``channels_last`` (the first, compiling, step apart).
  Inductor keeps compiled code in a cache on disk, so a second run compiles faster.

Like the ``uncol`` command, the script first keeps freed memory in the process (:mod:`uncol.allocator`;
``UNCOL_MALLOC_TUNING=0`` leaves glibc's defaults, under which page faults cost up to 20% more time).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from student_cost import _summary, _time_once, _train_step, build_networks  # noqa: E402


def paired(a: Callable[[], Any], b: Callable[[], Any], n: int, warmup: int = 2) -> dict[str, Any]:
    """Alternate ``a`` and ``b``; their timing summaries (ms per call) and the median ratio ``b / a``."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(n):
        ta.append(_time_once(a))
        tb.append(_time_once(b))
    return {
        "default": _summary(ta), "option": _summary(tb),
        "ratio": statistics.median(y / x for x, y in zip(ta, tb, strict=True)),
    }


def profile_supervised(size: int, batch: int, steps: int, top: int = 12) -> list[tuple[str, float, float]]:
    """Top operators (self CPU ms per step, calls per step) of the U-Net's supervised training step."""
    unet, _, in_ch, k = build_networks(size)
    unet.train()
    opt = torch.optim.SGD(unet.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, in_ch, size, size, generator=gen)
    y = torch.randint(0, k, (batch, size, size), generator=gen)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(unet(x), y).backward()
        opt.step()

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [(e.key, e.self_cpu_time_total / 1000.0 / steps, e.count / steps) for e in ops]


def channels_last(
    size: int, batch: int, n: int, dims: int = 2, shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Forward + backward, default layout against channels_last, for the U-Net and the student.

    ``dims=3``: the Hippocampus networks at ``shape`` (``None``: the 3D student's patch size),
    ``channels_last_3d``.
    """
    out: dict[str, Any] = {}
    unet, student, in_ch, k = build_networks(size, dims, shape)
    spatial = (size, size) if dims == 2 else tuple(student.vit.grid[i] * student.vit_patch for i in range(3))
    layout = torch.channels_last if dims == 2 else torch.channels_last_3d
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, in_ch, *spatial, generator=gen)
    y = torch.randint(0, k, (batch, *spatial), generator=gen)
    for name, net in (("unet", unet), ("student", student)):
        net.train()
        twin = build_networks(size, dims, shape)[0 if name == "unet" else 1]
        twin.load_state_dict(net.state_dict())
        twin = twin.to(memory_format=layout).train()
        x_cl = x.contiguous(memory_format=layout)
        with torch.no_grad():
            diff = (net.eval()(x) - twin.eval()(x_cl)).abs().max().item()
        net.train()
        twin.train()
        r = paired(_train_step(net, lambda n_=net: n_(x), y), _train_step(twin, lambda t=twin, xc=x_cl: t(xc), y), n)
        r["max_logit_difference"] = diff
        out[name if dims == 2 else f"{name} 3D {'x'.join(map(str, spatial))}"] = r
    return out


def engine_option(size: int, batch: int, n: int, option: dict[str, Any]) -> dict[str, Any]:
    """Whole training steps (:meth:`Trainer.train_step`) with the ``train`` ``option`` against the default:
    Mean Teacher and UnCoL stage 2 on the student, as ``benchmarks/step_speed.py`` builds them
    (``batch`` labeled + ``batch`` unlabeled images, the stand-in foundation teacher). The first step of
    each (with ``train.compile``, the compiling) is reported apart as ``first_step_s``."""
    import tempfile

    from step_speed import STAGE2_START, fake_teacher_registered, make_configs, prepared_trainer

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="uncol-speed-options-") as tmp, fake_teacher_registered():
        root = Path(tmp)
        for index, name in ((1, "mean_teacher"), (0, "uncol_stage2")):
            pair = []
            for k, train in enumerate(({}, option)):
                cfg = make_configs(root / f"{name}{k}", size, batch, batch, train=train)[index]
                pair.append(prepared_trainer(cfg, root / f"run_{name}{k}"))
            batches = [pair[0].batches[STAGE2_START + i] for i in range(n + 3)]
            a, b = _stepper(pair[0], batches, STAGE2_START), _stepper(pair[1], batches, STAGE2_START)
            first = [_time_once(a), _time_once(b)]
            out[name] = paired(a, b, n) | {"first_step_s": first}
    return out


def _stepper(trainer: Any, batches: list[dict[str, Any]], start: int) -> Callable[[], None]:
    """A closure running the trainer's next training step on the next of ``batches``, from step ``start``."""
    done = [0]

    def step() -> None:
        trainer.step = start + done[0]
        trainer.train_step(batches[done[0]])
        done[0] += 1

    return step


def inference_mode(size: int, batch: int, n: int) -> dict[str, Any]:
    """``no_grad`` against ``inference_mode``: a train-mode teacher forward of ``batch`` images, and
    evaluation (eval mode, one image), for the student; equal outputs checked."""
    _, student, in_ch, _ = build_networks(size)
    gen = torch.Generator().manual_seed(0)
    xb = torch.rand(batch, in_ch, size, size, generator=gen)
    x1 = xb[:1].clone()
    out: dict[str, Any] = {}
    for label, mode, x in (("teacher_forward", True, xb), ("evaluation", False, x1)):
        student.train(mode)

        def run(ctx: Callable[[], contextlib.AbstractContextManager[Any]], x: torch.Tensor = x) -> torch.Tensor:
            with ctx():
                return student(x)

        # In train mode the outputs use batch statistics, so the running statistics moving between calls
        # do not change them.
        same = torch.equal(run(torch.no_grad), run(torch.inference_mode))
        r = paired(lambda r_=run: r_(torch.no_grad), lambda r_=run: r_(torch.inference_mode), n)
        r["identical_outputs"] = same
        out[label] = r
    return out


def compiled(size: int, batch: int, n: int) -> dict[str, Any]:
    """Forward + backward of the U-Net, eager against ``torch.compile`` (inductor); compile time apart."""
    unet, _, in_ch, k = build_networks(size)
    unet.train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, in_ch, size, size, generator=gen)
    y = torch.randint(0, k, (batch, size, size), generator=gen)
    fast = torch.compile(unet)
    t0 = time.perf_counter()
    _train_step(unet, lambda: fast(x), y)()
    compile_s = time.perf_counter() - t0
    r = paired(_train_step(unet, lambda: unet(x), y), _train_step(unet, lambda: fast(x), y), n)
    r["compile_s"] = compile_s
    return r


def format_report(r: dict[str, Any]) -> str:
    """Markdown tables of the measurements."""

    def row(label: str, m: dict[str, Any], extra: str = "") -> str:
        return (f"| {label} | {m['default']['median_ms']:.1f} | {m['option']['median_ms']:.1f} | "
                f"{m['ratio']:.3f} | {extra} |")

    lines = [f"{r['size']}x{r['size']}, batch {r['batch']}, 1 thread", "",
             "| option (against the default) | default ms | option ms | option / default (paired median) | note |",
             "|---|---|---|---|---|"]
    for name, m in r["channels_last"].items():
        lines.append(row(f"channels_last, {name} fwd+bwd", m, f"max logit difference {m['max_logit_difference']:.1e}"))
    for name, m in r.get("engine_channels_last", {}).items():
        lines.append(row(f"channels_last, whole {name.replace('_', ' ')} training step", m))
    for name, m in r.get("engine_compile", {}).items():
        lines.append(row(f"train.compile, whole {name.replace('_', ' ')} training step", m,
                         f"first step {m['first_step_s'][0]:.1f} s plain, {m['first_step_s'][1]:.0f} s compiled"))
    for name, m in r["inference_mode"].items():
        lines.append(row(f"inference_mode vs no_grad, {name.replace('_', ' ')}", m,
                         "identical outputs" if m["identical_outputs"] else "outputs DIFFER"))
    if "compile" in r:
        m = r["compile"]
        lines.append(row("torch.compile, U-Net fwd+bwd", m, f"compile {m['compile_s']:.0f} s"))
    if r.get("profile"):
        lines += ["", "U-Net supervised step (fwd + bwd + SGD), top operators:", "",
                  "| operator | self ms per step | calls per step |", "|---|---|---|"]
        lines += [f"| `{k}` | {ms:.1f} | {c:.0f} |" for k, ms, c in r["profile"]]
    return "\n".join(lines)


def measure(
    size: int = 256,
    batch: int = 4,
    n: int = 10,
    profile: int = 3,
    compile_: bool = False,
    shape_3d: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """All the measurements of the module docstring (``shape_3d``: the 3D input; ``None``: the 3D student's)."""
    torch.set_num_threads(1)
    r: dict[str, Any] = {"size": size, "batch": batch}
    r["profile"] = profile_supervised(size, batch, profile) if profile else []
    r["channels_last"] = channels_last(size, batch, n) | channels_last(size, max(1, batch // 2), n, dims=3, shape=shape_3d)
    r["engine_channels_last"] = engine_option(size, max(1, batch // 2), n, {"channels_last": True})
    r["inference_mode"] = inference_mode(size, batch, n)
    if compile_:
        r["compile"] = compiled(size, batch, n)
        r["engine_compile"] = engine_option(size, max(1, batch // 2), n, {"compile": True})
    return r


def main(argv: list[str] | None = None) -> int:
    """Measure, print the tables and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="square input side (multiple of 16)")
    p.add_argument("--batch", type=int, default=4, help="images per training call")
    p.add_argument("--n", type=int, default=10, help="timed pairs")
    p.add_argument("--profile", type=int, default=3, help="profiled U-Net steps (0: none)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    from uncol.allocator import tune_malloc

    tune_malloc()  # as the `uncol` command does, so the figures are those of `uncol train`
    start = time.perf_counter()
    r = measure(a.size, a.batch, a.n, a.profile, a.compile)
    print(f"torch {torch.__version__}, 1 thread, {time.perf_counter() - start:.0f} s in all\n")
    print(format_report(r))
    if a.json:
        from uncol.atomic import atomic_write_json

        atomic_write_json(a.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
