"""The ``uncol`` command line: a thin layer over :mod:`uncol.api`."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from uncol.errors import UncolError


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config option, e.g. --set train.iterations=500 (repeatable)",
    )


# The 2D mask encodings of uncol.data.readers.image2d.MASK_VALUES, listed here so that building the
# parser imports no image library (a test checks that the two agree).
_MASK_VALUES = ("palette", "index", "scaled")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads for torch (default: the run's train.threads if > 0, else the number of cores)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's train.device)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``uncol`` command."""
    parser = argparse.ArgumentParser(
        prog="uncol", description="Label-efficient medical image segmentation (UnCoL and semi-supervised baselines)."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config (or resume a run folder)")
    p.add_argument("config", help="YAML config, or a run folder to resume")
    _add_set(p)
    _add_device(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on val/test after training")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                   help="stop with a checkpoint once STEPS steps are done (continue later with --resume)")
    p.add_argument("--branch-from", default=None, metavar="CHECKPOINT",
                   help="start from another run's checkpoint, e.g. its UnCoL stage-1 checkpoint "
                        "checkpoints/step<N>.pt, changing only options that its steps did not read "
                        "(stage-2 ablations without repeating stage 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("evaluate", help="score a trained run on its val or test split")
    p.add_argument("run", help="run folder")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--checkpoint", choices=["best", "final"], default=None)
    p.add_argument("--convention", choices=["standard", "medpy"], default=None)
    p.add_argument("--save-predictions", action="store_true", help="write predicted masks into the run folder")
    _add_threads(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an evaluation option of the run's config, e.g. --set eval.sw_overlap=0.25 or "
                        "--set eval.checkpoint=final (repeatable)")
    _add_device(p)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("predict", help="segment image files with a trained run (geometry kept)")
    p.add_argument("run", help="run folder")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder for the masks (maps go to OUT/maps/)")
    p.add_argument("--checkpoint", choices=["best", "final"], default=None)
    p.add_argument("--uncertainty", action="store_true",
                   help="also write entropy maps OUT/maps/<stem>_entropy.* (docs/prediction.md)")
    p.add_argument("--probabilities", action="store_true",
                   help="also write class probabilities OUT/maps/<stem>_probabilities.*")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the softmax over every combination of flips")
    p.add_argument("--mask-values", choices=list(_MASK_VALUES), default="palette",
                   help="2D PNG masks: palette = class ids with a colour per class (default), "
                        "index = plain class ids, scaled = classes spread over 0..255")
    _add_threads(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option of the run's config, e.g. --set eval.sw_batch_size=8 (repeatable)")
    _add_device(p)
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="torch: the run's weights (default); onnxruntime: its ONNX export on the CPU (uncol export)")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="with --backend onnxruntime: the .onnx file (default: RUN/export/<checkpoint>.onnx)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("score", help="score predicted masks against reference masks (files or folders)")
    p.add_argument("pred")
    p.add_argument("gt")
    p.add_argument("--spacing", nargs="+", type=float, default=None, metavar="S", help="pixel/voxel spacing (overrides headers)")
    p.add_argument("--convention", choices=["standard", "medpy"], default="standard")
    p.add_argument("--num-classes", type=int, default=None, help="classes incl. background (default: max label + 1)")
    p.add_argument("--json", dest="json_out", default=None, help="write the results as JSON here")

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    c = dsub.add_parser("check", help="report cases, shapes, spacing, labels and every problem found")
    c.add_argument("path", help="dataset folder (layout auto-detected) or YAML config")
    _add_set(c)
    c.add_argument("--json", dest="json_out", default=None, help="also write the report as JSON")

    p = sub.add_parser("init", help="inspect a dataset and write a commented config planned for it and this machine")
    p.add_argument("data", help="dataset folder (layout auto-detected, as by `uncol data check`)")
    p.add_argument("--labeled", type=float, default=None, metavar="N|FRACTION",
                   help="labeled training patients: a count > 1 or a ratio in (0, 1] (default: all for supervised, "
                        "10%% for semi-supervised methods)")
    p.add_argument("--method", default="supervised",
                   help="training method: supervised, uncol, mean_teacher, ua_mt, bcp, ... (default: supervised)")
    p.add_argument("--out", default=None, help="config file to write (default: ./<dataset>_<method>.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")

    p = sub.add_parser("export", help="export a trained run's network (UnCoL: the student) to ONNX, verified")
    p.add_argument("run", help="run folder")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    p.add_argument("--out", default=None, help="file to write (default: RUN/export/<checkpoint>.onnx)")
    p.add_argument("--checkpoint", choices=["best", "final"], default="best")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: 17)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest |logit difference| accepted between ONNX Runtime and PyTorch (default: 1e-3)")

    p = sub.add_parser("demo", help="train and evaluate on real MRI shipped with nilearn (no download)")
    p.add_argument("--out", default="runs", help="parent folder of the demo data and run (default: runs)")
    p.add_argument("--iterations", type=int, default=None,
                   help="training steps of every method trained (default: per method, for about equal CPU time)")
    p.add_argument("--method", choices=["both", "uncol", "supervised"], default="both",
                   help="both (default): the supervised 2D U-Net and UnCoL with LiteMedSAM on the same labeled "
                        "slabs, printed side by side; or one of them")
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("teacher", help="the generalized (foundation-model) teacher")
    tsub = p.add_subparsers(dest="teacher_command", required=True, metavar="SUBCOMMAND")
    c = tsub.add_parser("cache", help="precompute the teacher's encoder features of a config's images")
    c.add_argument("config", help="YAML config (its teacher section names the teacher)")
    _add_set(c)
    c.add_argument("--split", choices=["train", "labeled", "unlabeled", "val", "test"], default="train")
    c.add_argument("--embeddings", action="store_true", default=None,
                   help="also cache full image embeddings (default: only for val/test)")
    c.add_argument("--max-cases", type=int, default=0, help="at most N cases (0 = all)")
    c.add_argument("--limit", type=_positive_int, default=0, metavar="N",
                   help="at most N images, the first ones listed (default: all)")
    c.add_argument("--shard", default=None, metavar="I/N",
                   help="encode only shard I of N (0-based; e.g. a job array's task id); not under torchrun, "
                        "whose rank is the shard (docs/teachers.md)")
    c.add_argument("--report", default=None, metavar="JSON",
                   help="also write counts and throughput as JSON (under torchrun: rank 0, all ranks)")
    c.add_argument("--quiet", action="store_true")
    c = tsub.add_parser("zero-shot", help="score the teacher alone, prompted with ground-truth boxes")
    c.add_argument("config", help="YAML config (data, split and teacher sections)")
    _add_set(c)
    c.add_argument("--split", choices=["val", "test", "labeled"], default="test")
    c.add_argument("--max-cases", type=int, default=0, help="score at most N cases (0 = all)")
    c.add_argument("--jitter", type=float, default=0.0, help="box jitter in px at 1024 (0: tight boxes)")
    c.add_argument("--seed", type=int, default=0, help="seed of the box jitter")
    c.add_argument("--convention", choices=["standard", "medpy", "both"], default="both")
    c.add_argument("--out", default=None, help="folder for the JSON report (default: OUTPUT_DIR/NAME_zero_shot)")
    c.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    c.add_argument("--quiet", action="store_true")

    p = sub.add_parser("benchmark", help="train methods x labeled amounts x seeds from a grid file, then tabulate")
    p.add_argument("grid", help="grid YAML file (docs/benchmark.md)")
    p.add_argument("--out", default=None, help="grid folder (default: the grid's 'out')")
    p.add_argument("--only-report", action="store_true", help="train nothing; rebuild CSV, tables and figure")
    p.add_argument("--dry-run", action="store_true", help="print the plan (each run's state and steps) only")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per run remains)")
    p.add_argument("--methods", nargs="+", default=None, metavar="ENTRY",
                   help="train only these method entries this time (the report still covers every finished run)")
    p.add_argument("--labeled", nargs="+", type=float, default=None, metavar="L",
                   help="train only the runs at these labeled amounts this time")

    p = sub.add_parser("suggest", help="rank unlabeled scans (by patient) by the model's uncertainty: which to annotate next")
    p.add_argument("run", help="run folder")
    p.add_argument("--unlabeled", nargs="+", default=None, metavar="PATH",
                   help="image files or folders to rank (default: the run's own unlabeled split)")
    p.add_argument("--top", type=_positive_int, default=None, metavar="N",
                   help="groups to suggest: printed, shown in the report, written by --write-list (default: all ranked)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/suggestions)")
    p.add_argument("--write-list", default=None, metavar="FILE",
                   help="write the next run's split.labeled_list: the run's labeled groups, then the top N")
    p.add_argument("--new-only", action="store_true", help="--write-list names the top N groups only")
    p.add_argument("--no-teacher", action="store_true",
                   help="rank by entropy alone even when the run has a foundation teacher")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the teacher's feature cache")
    p.add_argument("--checkpoint", choices=["best", "final"], default=None)
    _add_threads(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an inference option of the run's config, e.g. --set eval.slice_batch_size=64")
    _add_device(p)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("report", help="one self-contained HTML report of a run, or of runs side by side")
    p.add_argument("run", help="run folder (evaluated first when its split has no evaluation yet)")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="further runs shown side by side")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--out", default=None, help="HTML file (default: RUN/report_<split>[_compare].html)")
    p.add_argument("--no-evaluate", action="store_true",
                   help="fail instead of evaluating a run whose split has no (or an outdated) evaluation")
    p.add_argument("--suggestions", default=None, metavar="DIR",
                   help="output folder of uncol suggest to show (default: RUN/suggestions when it exists)")
    _add_device(p)
    _add_threads(p)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("show", help="print the resolved configuration")
    c.add_argument("config", nargs="?", default=None)
    _add_set(c)
    csub.add_parser("docs", help="print the configuration reference (Markdown)")
    return parser


def _version() -> str:
    from uncol import __version__

    return f"uncol {__version__}"


def _print_metrics(title: str, metrics: dict, class_names: Sequence[str] | None = None) -> None:
    from uncol.metrics import format_table

    print(f"\n{title}")
    print(format_table(metrics, class_names))


def _class_names(run: str | Path) -> list[str] | None:
    from uncol.runs import load_run_config

    names = load_run_config(run).data.class_names
    return names or None


def _cmd_train(a: argparse.Namespace) -> int:
    from uncol import api

    overrides = list(a.overrides) + ([f"train.device={a.device}"] if a.device else [])
    splits = () if a.no_eval else ("val", "test")
    res = api.train(
        a.config, overrides, resume=a.resume, evaluate_splits=splits, show_progress=not a.quiet, stop_after=a.stop_after,
        branch_from=a.branch_from,
    )
    from uncol.distributed_training import training_ranks

    if not training_ranks().is_writer:
        return 0  # under torchrun, rank 0 reports for all
    t = res["train"]
    print(f"\nrun folder: {res['run_dir']}")
    print(f"steps: {t['steps_done']}/{t['iterations']}, time {t['seconds']:.0f} s, parameters {t['parameters']:,}")
    if t["best_val_dice"] is not None:
        print(f"best validation Dice {t['best_val_dice']:.4f} at step {t['best_step']}")
    names = _class_names(res["run_dir"])
    for split in splits:
        if split in res:
            _print_metrics(f"{split} ({res[split]['convention']} convention)", res[split], names)
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from uncol import api
    from uncol.runs import load_run_config
    from uncol.threads import use_threads

    # torch's default thread count oversubscribes the cores; training sets it, so evaluation does too.
    use_threads(a.threads, load_run_config(a.run).train.threads)
    res = api.evaluate(
        a.run, a.split, checkpoint=a.checkpoint, convention=a.convention, device=a.device,
        save_predictions=a.save_predictions, show_progress=not a.quiet, overrides=a.overrides,
    )
    title = f"{a.split} ({res['convention']} convention, {res['checkpoint']} checkpoint, distances in {res['distance_unit']})"
    _print_metrics(title, res, _class_names(a.run))
    return 0


def _cmd_predict(a: argparse.Namespace) -> int:
    from uncol import api

    res = api.predict(
        a.run, a.inputs, a.out, checkpoint=a.checkpoint, device=a.device, show_progress=not a.quiet,
        uncertainty=a.uncertainty, probabilities=a.probabilities, tta=a.tta, mask_values=a.mask_values,
        threads=a.threads, overrides=a.overrides, backend=a.backend, model=a.model,
    )
    maps = sum(len(o.paths) - 1 for o in res.outputs)
    print(f"{len(res.outputs)} mask(s) written to {a.out}" + (f", {maps} map(s) to {Path(a.out) / 'maps'}" if maps else ""))
    return _report_failures(res.failures)


def _report_failures(failures: Sequence[object]) -> int:
    """Print the inputs that failed (to stderr); the exit status: 1 when any failed, else 0."""
    if not failures:
        return 0
    print(f"uncol: {len(failures)} input(s) failed:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    return 1


def _cmd_score(a: argparse.Namespace) -> int:
    from uncol import api
    from uncol.scoring import write_json

    res = api.score(a.pred, a.gt, spacing=a.spacing, convention=a.convention, num_classes=a.num_classes)
    _print_metrics(f"{res['convention']} convention, {len(res['cases'])} case(s), distances in {res['distance_unit']}", res)
    if a.json_out:
        write_json(res, a.json_out)
        print(f"JSON written to {a.json_out}")
    if res["failures"]:
        print(f"uncol: {len(res['failures'])} case(s) could not be scored:", file=sys.stderr)
        for f in res["failures"]:
            print(f"  {f['case']}: {f['error']}", file=sys.stderr)
        return 1
    return 0


def _cmd_data(a: argparse.Namespace) -> int:
    from uncol import api

    report = api.check_data(a.path, a.overrides)
    print(report.to_text())
    out = report.to_dict()
    preview_ok = True
    if Path(a.path).is_file():  # a config: show the split it makes, as `uncol init` does
        from uncol.config import load_config
        from uncol.planning import split_preview

        try:
            preview = split_preview(load_config(a.path, a.overrides))
        except UncolError as e:
            print(f"\nSplit: cannot be made as configured: {e}")
            preview_ok = False
        else:
            print(f"\n{preview.to_text(a.path)}")
            out["split_preview"] = preview.to_dict()
    if a.json_out:
        from uncol.atomic import atomic_write_json

        atomic_write_json(a.json_out, out)
    return 0 if report.ok and preview_ok else 1


def _cmd_init(a: argparse.Namespace) -> int:
    import datetime

    from uncol.planning import plan_dataset, split_preview, write_config
    from uncol.planning.plan import default_name
    from uncol.planning.summary import choices_text, dataset_text

    out = Path(a.out) if a.out else Path(f"{default_name(a.data, a.method)}.yaml")
    if out.exists() and not a.force:  # checked first: planning loads the whole dataset
        raise UncolError(f"{out}: already exists; choose another --out or add --force")
    plan = plan_dataset(a.data, labeled=a.labeled, method=a.method)
    print(dataset_text(plan))
    header = [
        f"Written by `uncol init {a.data} --method {a.method}` on {datetime.date.today().isoformat()}, planned for",
        f"{plan.budget.describe() if plan.budget else 'this machine'}.",
        f"Dataset: {plan.fingerprint.layout_text() if plan.fingerprint else plan.config.data.root}.",
        "Each comment says why a value was chosen; options not listed keep their defaults (docs/configuration.md).",
        f"Next: uncol data check {out}   then   uncol train {out}",
    ]
    write_config(out, plan.config, plan.notes, header)
    print(f"\n{choices_text(plan)}\n")
    ok = plan.fingerprint is None or plan.fingerprint.report.ok
    try:
        print(split_preview(plan.config).to_text(str(out)))
    except UncolError as e:  # e.g. a dataset whose problems stop discovery: the config is still written
        print(f"Split: cannot be made yet: {e}")
        ok = False
    print(f"\nconfig written to {out} (loads and validates); next: uncol data check {out}, then uncol train {out}")
    return 0 if ok else 1


def _cmd_export(a: argparse.Namespace) -> int:
    from uncol.export import DEFAULT_OPSET, PARITY_TOLERANCE, export_onnx

    tolerance = PARITY_TOLERANCE if a.tolerance is None else a.tolerance
    res = export_onnx(a.run, a.out, which=a.checkpoint, opset=a.opset or DEFAULT_OPSET, tolerance=tolerance)
    p = res.parity
    print(f"exported the {res.checkpoint} weights of {a.run} ({res.metadata.get('arch')}) to {res.path}")
    print(f"input {res.input_shape} (named axes are free), opset {res.metadata.get('opset')}")
    print(
        f"ONNX Runtime vs PyTorch on {res.inputs}: max |logit difference| {p.max_abs_diff:.2g} "
        f"(tolerance {p.tolerance:g}; logits up to {p.max_abs_logit:.3g}), same label on {100 * p.label_agreement:.2f}% of pixels"
    )
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from uncol.demo_run import DEMO_METHODS, DEMO_READING, compare_demo, comparison_table

    methods = DEMO_METHODS if a.method == "both" else (a.method,)
    results = compare_demo(
        a.out, iterations=dict.fromkeys(methods, a.iterations) if a.iterations else None, device=a.device,
        show_progress=not a.quiet, resume=a.resume, methods=methods,
    )
    names = ["background", "grey_matter", "white_matter"]
    for method, res in results.items():
        if "test" in res:
            _print_metrics(f"demo, {method}: held-out test slabs (standard convention, mm)", res["test"], names)
    if all("test" in res for res in results.values()):
        print("\nthe same labeled, validation and test slabs for every method:")
        print(comparison_table(results, names))
        print("\n" + textwrap.fill(DEMO_READING, width=100))
    for method, res in results.items():
        t = res["train"]
        print(f"{method}: trained {t['steps_done']} steps in {t['seconds']:.0f} s; run folder: {res['run_dir']}")
    return 0


def _cmd_teacher(a: argparse.Namespace) -> int:
    from uncol.config import load_config

    cfg = load_config(a.config, a.overrides)
    if cfg.teacher.name == "none":
        cfg = load_config(a.config, [*a.overrides, "teacher.name=litemedsam"])
    if cfg.train.threads > 0:
        import torch

        torch.set_num_threads(cfg.train.threads)
    if a.teacher_command == "cache":
        from uncol.atomic import atomic_write_json
        from uncol.teachers.cache_job import run_cache_job

        res = run_cache_job(
            cfg, a.split, a.embeddings, a.max_cases, show_progress=not a.quiet, shard=a.shard, limit=a.limit
        )
        if res.reports:  # under torchrun rank 0 speaks for all ranks
            print("\n".join(res.report_lines()))
            if a.report:
                atomic_write_json(a.report, res.to_dict())
        return 0
    from uncol.teachers.zero_shot import zero_shot_evaluate

    convs = ("standard", "medpy") if a.convention == "both" else (a.convention,)
    res = zero_shot_evaluate(
        cfg, a.split, a.max_cases, convs, a.jitter, a.seed, a.out, show_progress=not a.quiet, use_cache=not a.no_cache
    )
    names = cfg.data.class_names or None
    for conv in convs:
        _print_metrics(f"zero-shot {cfg.teacher.name}, {a.split} ({conv} convention)", res[conv], names)
    print(f"\nreport: {res['meta']['path']}")
    return 0


def _cmd_benchmark(a: argparse.Namespace) -> int:
    from uncol import api

    res = api.benchmark_grid(
        a.grid, a.out, only_report=a.only_report, dry_run=a.dry_run, show_progress=not a.quiet,
        methods=a.methods, labeled=a.labeled,
    )
    if "tables" in res:
        print(f"\n{Path(res['tables']).read_text()}")
    return 0


def _cmd_suggest(a: argparse.Namespace) -> int:
    from uncol.suggest import suggest

    res = suggest(
        a.run, a.unlabeled, a.top, a.out, a.threads, a.device, checkpoint=a.checkpoint,
        use_teacher=not a.no_teacher, use_cache=not a.no_cache, write_list=a.write_list, new_only=a.new_only,
        overrides=a.overrides, show_progress=not a.quiet,
    )
    shown = res.top_groups if res.top is not None else res.groups[:10]
    ranked_by = f"entropy and the disagreement of {res.teacher}" if res.teacher else "entropy"
    print(f"{len(res.groups)} group(s) of {len(res.scans)} scan(s) ranked by {ranked_by}; the first {len(shown)}:")
    print(f"{'rank':>4}  {'group':<24} {'scans':>5}  {'entropy':>8}  {'fg entropy':>10}  {'disagreement':>12}  {'score':>6}")

    def num(v: float | None, width: int) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.4f}"

    for g in shown:
        print(f"{g.rank:>4}  {g.group:<24} {len(g.cases):>5}  {num(g.mean_entropy, 8)}  "
              f"{num(g.foreground_entropy, 10)}  {num(g.disagreement, 12)}  {num(g.score, 6)}")
    print(f"ranking written to {res.csv}")
    if res.labeled_list is not None:
        print(f"labeled list written to {res.labeled_list} (train the next run with --set split.labeled_list=...)")
    return _report_failures(res.failures)


def _cmd_report(a: argparse.Namespace) -> int:
    from uncol.report import build_report
    from uncol.runs import load_run_config
    from uncol.threads import use_threads

    # The report predicts three cases (and evaluates unevaluated runs): the same thread count as evaluate.
    use_threads(a.threads, load_run_config(a.run).train.threads)
    path = build_report(
        [a.run, *a.compare], out=a.out, split=a.split, device=a.device, evaluate=not a.no_evaluate,
        suggestions=a.suggestions,
    )
    print(f"report written to {path}")
    return 0


def _cmd_config(a: argparse.Namespace) -> int:
    from uncol.config import config_reference_markdown, load_config

    if a.config_command == "docs":
        print(config_reference_markdown())
    else:
        print(load_config(a.config, a.overrides).to_yaml(), end="")
    return 0


COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "score": _cmd_score,
    "data": _cmd_data,
    "init": _cmd_init,
    "export": _cmd_export,
    "demo": _cmd_demo,
    "config": _cmd_config,
    "teacher": _cmd_teacher,
    "benchmark": _cmd_benchmark,
    "report": _cmd_report,
    "suggest": _cmd_suggest,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uncol`` console command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from uncol.allocator import tune_malloc

    tune_malloc()  # long CPU runs otherwise spend much of their time mapping memory (uncol.allocator)
    try:
        return COMMANDS[args.command](args)
    except UncolError as e:
        print(f"uncol: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from uncol.atomic import OUTPUT_ERRNOS
        from uncol.errors import OutputError

        if e.errno not in OUTPUT_ERRNOS or not e.filename:
            raise
        # A write outside the atomic writers (a log line, TensorBoard): the same message, naming the file.
        print(f"uncol: error: {OutputError(e.filename, e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uncol: interrupted (a training run can be continued with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
