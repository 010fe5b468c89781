"""Running a teacher network with some layers in training mode.

The mean-teacher references (Tarvainen and Valpola's code, SSL4MIS, UA-MT, BCP) never switch their EMA
teacher to evaluation mode: its normalisation layers use the statistics of the batch it sees and its
dropout layers drop. :class:`uncol.ema.EMA` keeps its copy in evaluation mode; this context manager
switches chosen layer kinds to training mode for the duration of a forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

#: Normalisation layers whose behaviour differs between modes (batch vs running statistics).
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
#: Dropout layers of every dimension.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)


def has_dropout(module: nn.Module) -> bool:
    """Whether ``module`` contains a dropout layer with a positive drop probability."""
    return any(isinstance(m, DROPOUT_TYPES) and m.p > 0 for m in module.modules())


@contextmanager
def layers_in_train_mode(module: nn.Module, norm: bool, dropout: bool) -> Iterator[None]:
    """Put the normalisation (``norm``) and/or dropout (``dropout``) layers of ``module`` in training mode.

    Their previous modes are restored on exit. Normalisation layers in training mode also update their
    running statistics; an EMA teacher's are overwritten by the student's at its next update.
    """
    kinds: tuple[type[nn.Module], ...] = (NORM_TYPES if norm else ()) + (DROPOUT_TYPES if dropout else ())
    switched = [m for m in module.modules() if kinds and isinstance(m, kinds)]
    previous = [m.training for m in switched]
    try:
        for m in switched:
            m.training = True
        yield
    finally:
        for m, mode in zip(switched, previous, strict=True):
            m.training = mode
