"""The public Python API; the ``uncol`` command line is a thin layer over these functions.

Example (in a notebook)::

    import uncol
    result = uncol.train("configs/acdc_supervised.yaml", overrides=["train.iterations=200"])
    print(result["test"]["summary"]["mean"]["dice"])
    uncol.predict(result["run_dir"], ["scan.nii.gz"], out_dir="masks/")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uncol.config import Config, load_config
from uncol.distributed_training import training_ranks
from uncol.engine import Trainer
from uncol.errors import UncolError
from uncol.runs import RunPaths, load_run_config

if TYPE_CHECKING:  # the prediction modules are imported when predict is called
    from uncol.prediction_result import PredictionResult


def resolve_config(config: str | Path | Config | None, overrides: Sequence[str] = ()) -> Config:
    """A :class:`Config` from a YAML path, a run folder (its stored config), or a Config object."""
    if isinstance(config, Config):
        if overrides:
            from uncol.config import config_from_dict

            return config_from_dict(config.to_dict(), list(overrides))
        return config
    if config is not None and Path(config).is_dir():
        cfg = load_run_config(config)
        if overrides:
            from uncol.config import config_from_dict

            cfg = config_from_dict(cfg.to_dict(), list(overrides))
        return cfg
    return load_config(config, list(overrides))


def run_dir_of(cfg: Config) -> Path:
    """The run folder of a configuration: ``output_dir/name``."""
    return Path(cfg.output_dir) / cfg.name


def train(
    config: str | Path | Config,
    overrides: Sequence[str] = (),
    resume: bool = False,
    evaluate_splits: Sequence[str] = ("val", "test"),
    show_progress: bool = True,
    run_dir: str | Path | None = None,
    stop_after: int | None = None,
    branch_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train a model, then evaluate the validation-selected weights on ``evaluate_splits``.

    Under torchrun with several processes every process calls this; they train data-parallel, and
    rank 0 writes the run folder and evaluates (docs/distributed.md).

    Args:
        config: YAML path, run folder (to resume it) or Config.
        overrides: ``key=value`` overrides.
        resume: continue an interrupted run from its last checkpoint.
        evaluate_splits: splits to score after training (empty to skip).
        show_progress: draw progress bars.
        run_dir: run folder; default ``output_dir/name``, or ``config`` itself when it is a run folder.
        stop_after: stop (with a checkpoint) once this many steps are done, without evaluating; the
            run is continued later with ``resume=True``, with the same result as an uninterrupted run.
        branch_from: start from another run's checkpoint, e.g. UnCoL's stage-1 checkpoint
            ``checkpoints/step<N>.pt``, with a configuration that differs only in options not read
            before it (:class:`uncol.engine.Trainer`); ignored when resuming this run's own checkpoint.

    Returns:
        ``{"run_dir": str, "train": summary dict, "<split>": metrics dict, ...}``.
    """
    cfg = resolve_config(config, overrides)
    if run_dir is None:
        run_dir = Path(config) if (not isinstance(config, Config) and Path(config).is_dir()) else run_dir_of(cfg)
    summary = Trainer(cfg, run_dir, resume=resume, show_progress=show_progress, stop_after=stop_after,
                      checkpoint_on_stop=True, branch_from=branch_from, scored_splits=evaluate_splits).fit()
    out: dict[str, Any] = {"run_dir": str(run_dir), "train": summary.to_json()}
    if summary.steps_done < summary.iterations:
        return out  # stopped early on request: nothing final to evaluate yet
    if not training_ranks().is_writer:
        return out  # under torchrun, rank 0 evaluates the weights it wrote
    from uncol.evaluation import evaluate_run

    splits = RunPaths(run_dir)
    for split in evaluate_splits:
        from uncol.data.splits import load_splits

        if getattr(load_splits(splits.splits), split):
            out[split] = evaluate_run(run_dir, split, show_progress=show_progress)
    return out


def evaluate(run_dir: str | Path, split: str = "test", **kwargs: Any) -> dict[str, Any]:
    """Score a trained run on a split; see :func:`uncol.evaluation.evaluate_run`."""
    from uncol.evaluation import evaluate_run

    return evaluate_run(run_dir, split, **kwargs)


def predict(
    run_dir: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, **kwargs: Any
) -> PredictionResult:
    """Segment files with a trained run; see :func:`uncol.prediction.predict_files`.

    Returns:
        The files written per input and the inputs that failed (``.ok``, ``.masks``, ``.failures``).
    """
    from uncol.prediction import predict_files

    return predict_files(run_dir, inputs, out_dir, **kwargs)


def score(pred: str | Path, gt: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Score prediction files against reference files; see :func:`uncol.scoring.score`."""
    from uncol.scoring import score as _score

    return _score(pred, gt, **kwargs)


def check_data(path_or_config: str | Path, overrides: Sequence[str] = ()):
    """Check a dataset given as a folder (layout auto-detected) or a YAML config."""
    from uncol.data.check import check_dataset
    from uncol.data.layout import detect_layout

    p = Path(path_or_config)
    if p.is_dir():
        data_cfg = detect_layout(p)
    elif p.is_file():
        data_cfg = load_config(p, list(overrides)).data
    else:
        raise UncolError(f"{p}: no such file or folder")
    return check_dataset(data_cfg)


def benchmark_grid(
    grid: str | Path,
    out: str | Path | None = None,
    only_report: bool = False,
    dry_run: bool = False,
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
    methods: Sequence[str] | None = None,
    labeled: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Run a benchmark grid (methods x labeled amounts x seeds) and write its CSV, tables and figure.

    Finished runs are skipped and interrupted ones resumed, so the same call continues a grid that
    was stopped; ``methods`` / ``labeled`` train a subset first (the comparison that matters most);
    see :func:`uncol.benchmark.run_grid` and ``docs/benchmark.md``.
    """
    from uncol.benchmark import run_grid

    return run_grid(
        grid, out, only_report=only_report, dry_run=dry_run, show_progress=show_progress, echo=echo,
        methods=methods, labeled=labeled,
    )
