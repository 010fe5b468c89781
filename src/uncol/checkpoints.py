"""Reading checkpoint files safely: nothing in a checkpoint is ever executed.

A ``.pt`` file is a pickle, and unpickling may call any function the file names (a tampered file can
run code on the machine that loads it). Every checkpoint uncol reads goes through :func:`load_checkpoint`,
which uses ``torch.load(weights_only=True)``: only tensors and plain data (dicts, lists, tuples, numbers,
strings) are rebuilt, and a file naming anything else is refused by name.

The only other types allowed are the three numpy ones that the NumPy RNG state of checkpoints written
before its state was stored as plain data holds (an ``uint32`` array), so that such runs still resume.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uncol.errors import UncolError


def _legacy_numpy_globals() -> list[Any]:
    """``_reconstruct``, ``ndarray`` and the ``uint32`` dtype class: what an old NumPy RNG state needs."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: Path, what: str = "checkpoint") -> Any:
    """Load a ``.pt`` file with ``weights_only=True`` (no code from the file runs).

    Args:
        path: the file.
        what: what the file should be, for messages (``checkpoint``, ``weights file``).

    Returns:
        The unpickled object (tensors and plain containers only).

    Raises:
        UncolError: a file that names code or objects other than plain data ("refused"), or an
            unreadable, truncated or non-torch file; the message names the file.
    """
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is not None:
            raise UncolError(
                f"{path}: refused: this {what} asks to call or rebuild the Python object '{found.group(1)}', "
                "which is neither a tensor nor plain data; uncol never runs code from a checkpoint "
                "(use a file written by uncol)"
            ) from None
        # torch wraps every other unpickling failure (garbage, truncation) in a long message: keep its cause.
        cause = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(e), re.S)
        detail = cause.group(1).strip() if cause else str(e).splitlines()[0]
        raise UncolError(f"{path}: unreadable {what} (not a torch file, or damaged: {detail})") from None
    except Exception as e:  # noqa: BLE001 - torch, zipfile and OS errors all mean the file is damaged
        raise UncolError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from None


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if torch.is_tensor(value) else None


def state_dict_mismatch(module: nn.Module, state: Any) -> str | None:
    """What keeps ``state`` from loading into ``module`` (missing and unexpected keys, other shapes), or None."""
    if not isinstance(state, dict):
        return f"expected a state dict, found {type(state).__name__}"
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {_shape(state[k])} vs {_shape(v)}"
        for k, v in own.items()
        if k in state and _shape(state[k]) != _shape(v)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("other shape (file vs network)", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts) or None


def load_module_state(module: nn.Module, state: Any, path: Path, network: str) -> None:
    """``module.load_state_dict(state)``, or an error naming the file and how the weights differ.

    Args:
        module: the module built from the configuration.
        state: its state dict from the checkpoint.
        path: the checkpoint file, for the message.
        network: what the module is, for the message (e.g. ``"unet2d network"``).

    Raises:
        UncolError: weights of another architecture (or another size of this one).
    """
    problem = state_dict_mismatch(module, state)
    if problem is not None:
        raise UncolError(f"{path}: the weights do not fit the {network} (another architecture or size?): {problem}")
    module.load_state_dict(state)
