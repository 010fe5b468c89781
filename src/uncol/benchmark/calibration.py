"""Budget calibration: how many steps of a (method, labeled) pair fit the grid's CPU budget.

A throwaway run of the pair's configuration is trained for ``calibration_steps`` steps in two
segments, stopping after the first :data:`~uncol.benchmark.grid.CALIBRATION_WARMUP_STEPS` steps and
continuing to the end; the CPU time of the second segment divided by its steps is the cost per step,
so the one-time warm-up of the first steps (memory allocation, lazy initialisation) is not counted.
The run is configured with ``calibration_steps + 1`` iterations, so that methods whose schedule is a
fraction of the run (UnCoL's two stages, ramps) spend the measured steps in the same proportions as
a full run, and it stops before the final step so that no validation is measured. The engine counts
CPU time of the training loop only (``summary.json`` ``cpu_seconds``); set-up, such as loading the
data or computing teacher targets, is outside the budget in calibration and in the real runs alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from uncol.benchmark.grid import CALIBRATION_WARMUP_STEPS
from uncol.benchmark.plan import iterations_for_budget
from uncol.benchmark.state import CodeVersion
from uncol.config import Config
from uncol.errors import UncolError


def calibrate(
    cfg: Config, work_dir: Path, steps: int, budget_cpu_seconds: float, version: CodeVersion
) -> dict[str, Any]:
    """Measure a configuration's CPU cost per step and the iterations that fit the budget.

    Args:
        cfg: the configuration of the pair's first run (its ``train.iterations`` is replaced).
        work_dir: throwaway run folder, removed before and after.
        steps: steps to train, the first ``CALIBRATION_WARMUP_STEPS`` of them unmeasured.
        budget_cpu_seconds: CPU seconds of training per run.
        version: the code version, recorded with the result.

    Returns:
        The grid-state entry: ``iterations``, ``cpu_per_step``, ``measured_steps``,
        ``budget_cpu_seconds``, ``calibration_steps`` and the code version.
    """
    from uncol.api import resolve_config
    from uncol.engine import Trainer

    if steps <= CALIBRATION_WARMUP_STEPS:
        raise UncolError(f"calibration needs more than {CALIBRATION_WARMUP_STEPS} steps, got {steps}")
    # No validation inside the measured steps (val_every=0 validates only at the last step, never reached).
    probe = resolve_config(cfg, [f"train.iterations={steps + 1}", "train.val_every=0"])
    shutil.rmtree(work_dir, ignore_errors=True)
    try:
        warm = Trainer(probe, work_dir, show_progress=False, stop_after=CALIBRATION_WARMUP_STEPS,
                       checkpoint_on_stop=True).fit()
        done = Trainer(probe, work_dir, resume=True, show_progress=False, stop_after=steps,
                       checkpoint_on_stop=True).fit()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    measured = done.steps_done - warm.steps_done
    cpu = done.cpu_seconds - warm.cpu_seconds
    if measured < 1 or cpu <= 0:
        raise UncolError(
            f"{cfg.name}: calibration measured {cpu:.3g} CPU seconds over {measured} steps; "
            "raise budget.calibration_steps"
        )
    per_step = cpu / measured
    return {
        "iterations": iterations_for_budget(budget_cpu_seconds, per_step),
        "cpu_per_step": per_step,
        "measured_steps": measured,
        "budget_cpu_seconds": budget_cpu_seconds,
        "calibration_steps": steps,
        "version": version.to_json(),
    }
