"""The network that ``uncol predict`` runs: the run's PyTorch weights, or its ONNX export on ONNX Runtime.

Both give ``(config, network)`` with the same call (``logits = network(x)``), so the whole-case
inference of :mod:`uncol.inference` (slices, sliding windows, TTA) is the same for either backend.
The ONNX model is ``RUN/export/<checkpoint>.onnx`` as ``uncol export`` writes it, or a file named with
``--model``; its network (layers, channels, classes, input size) must be the run's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from uncol.config import Config
from uncol.errors import ConfigError, UncolError
from uncol.runs import inference_config, load_run_config, load_weights

__all__ = ["BACKENDS", "load_inference_network"]

#: ``torch``: the run's checkpoint in PyTorch (CPU or GPU); ``onnxruntime``: its ONNX export (CPU).
BACKENDS = ("torch", "onnxruntime")


def _network_of(cfg: Config) -> tuple[Any, ...]:
    """What the stored weights of a network depend on (:data:`uncol.runs.NETWORK_DEFINING`)."""
    return dataclasses.asdict(cfg.model), cfg.data.in_channels, cfg.data.num_classes, list(cfg.train.patch_size)


def load_inference_network(
    run_dir: str | Path,
    which: str,
    backend: str = "torch",
    model: str | Path | None = None,
    overrides: Sequence[str] = (),
    threads: int = 0,
) -> tuple[Config, nn.Module]:
    """The configuration (with ``overrides``) and the network to predict with.

    Args:
        run_dir: the run folder.
        which: ``best`` or ``final``: the checkpoint, or the checkpoint the ONNX export was made from.
        backend: one of :data:`BACKENDS`.
        model: an ``.onnx`` file to use instead of ``RUN/export/<which>.onnx`` (``onnxruntime`` only).
        overrides: ``key=value`` inference options (:func:`uncol.runs.inference_config`).
        threads: ONNX Runtime's intra-op threads (0: its default); torch's are set by the caller.

    Raises:
        ConfigError: an unknown backend, or ``model`` with the ``torch`` backend.
        UncolError: a missing export (naming ``uncol export``), a file ONNX Runtime cannot load, or an
            export of another network than the run's.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        if model is not None:
            raise ConfigError(f"--model {model}: an ONNX model runs with --backend onnxruntime")
        cfg, net, _ = load_weights(run_dir, which, overrides=overrides)
        return cfg, net
    from uncol.export import load_exported

    exported, net = load_exported(model if model is not None else run_dir, which, threads)
    if _network_of(exported) != _network_of(load_run_config(run_dir)):
        raise UncolError(
            f"{getattr(net, 'path', model)}: an export of another network than the run {run_dir} "
            "(model, channels, classes or input size differ)"
        )
    return inference_config(exported, overrides), net
