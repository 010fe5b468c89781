"""Importing the scripts of benchmarks/ in tests: they are files, not a package."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_scripts(*names: str) -> Iterator[tuple[ModuleType, ...]]:
    """``benchmarks/<name>.py`` imported as modules ``name`` (registered in ``sys.modules`` meanwhile, so
    that scripts importing one another and dataclasses defined in them work), removed again on exit."""
    modules = []
    try:
        for name in names:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            modules.append(module)
        yield tuple(modules)
    finally:
        for name in names:
            sys.modules.pop(name, None)
