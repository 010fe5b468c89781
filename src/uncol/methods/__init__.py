"""Training methods: each turns a batch into losses; the engine does the rest."""

from __future__ import annotations

from torch import nn

from uncol.config import Config
from uncol.errors import ConfigError
from uncol.methods.base import StepContext, TrainingMethod
from uncol.methods.supervised import SupervisedMethod
from uncol.methods.uncol import UnCoLMethod

METHODS: dict[str, type[TrainingMethod]] = {
    SupervisedMethod.name: SupervisedMethod,
    UnCoLMethod.name: UnCoLMethod,
}


def build_method(cfg: Config, network: nn.Module) -> TrainingMethod:
    """Instantiate the method named by ``cfg.method.name``."""
    try:
        cls = METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(f"method.name: unknown method {cfg.method.name!r}; known: {', '.join(METHODS)}") from None
    return cls(cfg, network)


__all__ = ["METHODS", "StepContext", "TrainingMethod", "build_method"]
