"""uncol: label-efficient medical image segmentation (UnCoL and semi-supervised baselines).

The public API (``uncol.train``, ``uncol.evaluate``, ``uncol.predict``, ``uncol.score``,
``uncol.check_data``, ``uncol.benchmark_grid``, ``uncol.demo``) is imported lazily so that
``import uncol`` stays cheap.
The implementing modules have other names (``uncol.evaluation``, ``uncol.prediction``,
``uncol.scoring``, ``uncol.demo_run``): importing a submodule binds its name on the package, so a
module called ``uncol/evaluate.py`` would replace the function ``uncol.evaluate`` once imported.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"train", "evaluate", "predict", "score", "check_data", "resolve_config", "benchmark_grid"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from uncol import api

        return getattr(api, name)
    if name == "demo":
        from uncol.demo_run import run_demo

        return run_demo
    if name in ("Config", "load_config"):
        from uncol import config

        return getattr(config, name)
    raise AttributeError(f"module 'uncol' has no attribute {name!r}")


__all__ = ["Config", "benchmark_grid", "check_data", "demo", "evaluate", "load_config", "predict", "score", "train"]
