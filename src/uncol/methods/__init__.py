"""Training methods: each turns a batch into losses; the engine does the rest.

A method is one module: a :class:`TrainingMethod` subclass registered by name
(:func:`register_method`) with its options dataclass. Importing this package registers the built-in
methods.
"""

from __future__ import annotations

from torch import nn

from uncol.config import Config

# Built-in methods register themselves on import; supervised first, so that lists of methods start with
# the lower bound.
from uncol.methods import supervised  # noqa: F401  # isort: skip
from uncol.methods import bcp, mean_teacher, ua_mt, uncol  # noqa: F401
from uncol.methods.base import BatchPhase, DataNeeds, StepContext, TrainingMethod, check_range
from uncol.methods.registry import get_method, import_method_module, method_names, register_method


def build_method(cfg: Config, network: nn.Module) -> TrainingMethod:
    """Instantiate the method named by ``cfg.method.name`` (importing ``cfg.method.module`` first)."""
    import_method_module(cfg.method.module)
    return get_method(cfg.method.name)(cfg, network)


__all__ = [
    "BatchPhase",
    "DataNeeds",
    "StepContext",
    "TrainingMethod",
    "check_range",
    "build_method",
    "get_method",
    "method_names",
    "register_method",
]
