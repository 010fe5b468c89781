"""Running an exported ONNX model: :class:`OnnxNetwork`, a drop-in for the torch network at inference.

``OnnxNetwork`` takes and returns torch tensors like the network it was exported from, so the
whole-case inference of :mod:`uncol.inference` (2D slice batches, 3D sliding windows) runs on ONNX
Runtime unchanged::

    net = OnnxNetwork("runs/acdc_uncol_7p/export/best.onnx")
    probs = predict_probabilities(net, case, net.config, torch.device("cpu"))

The run's resolved configuration travels inside the model (metadata key ``config``), so an exported
file is enough to predict: normalisation, patch size and class names come with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import yaml
from torch import nn

from uncol.config import Config, config_from_dict
from uncol.errors import ConfigError, UncolError

#: Version of the metadata layout written by :func:`uncol.export.export_onnx`.
METADATA_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def default_onnx_path(run_dir: str | Path, which: str) -> Path:
    """Where ``uncol export RUN`` writes the export of the ``best`` or ``final`` weights: ``RUN/export/<which>.onnx``."""
    return Path(run_dir) / "export" / f"{which}.onnx"


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a clear error saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise UncolError(
            f"ONNX Runtime is not installed ({e}); install it with `pip install onnxruntime`"
        ) from None
    return onnxruntime


def open_session(path: str | Path, threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads; 0 keeps ONNX Runtime's default (one per physical core).

    Raises:
        UncolError: missing file, or a file ONNX Runtime cannot load (naming it).
    """
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise UncolError(f"{path}: no such ONNX model")
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for any bad file
        raise UncolError(f"{path}: ONNX Runtime cannot load this model ({type(e).__name__}: {e})") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an exported model, as a dict of strings (see docs/export.md)."""
    session = open_session(path, threads=1)
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxNetwork(nn.Module):
    """An exported network run by ONNX Runtime, called like the torch network: ``logits = net(x)``.

    It is an :class:`~torch.nn.Module` without parameters, so ``net.to(device)`` and ``net.eval()``
    work where inference code expects a network; ONNX Runtime computes on the CPU and the logits are
    returned on the input's device, as float32.

    Args:
        path: the ``.onnx`` file written by :func:`uncol.export.export_onnx`.
        threads: ONNX Runtime intra-op threads; 0 keeps its default.

    Raises:
        UncolError: the file is missing, unreadable, or not an uncol export (no ``config`` metadata).
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = open_session(self.path, threads)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if "config" not in self.metadata:
            raise UncolError(f"{self.path}: not an uncol export (no 'config' in the model's metadata_props)")
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UncolError(f"{self.path}: expected one input, the model has {len(inputs)}")
        self.input_name = inputs[0].name
        # Symbolic axes are strings ("batch", "size_0"); fixed ones ints, checked before running.
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.config = _config_of(self.metadata["config"], self.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)`` of images ``(B, in_channels, *spatial)``.

        Raises:
            ValueError: ``x`` has the wrong rank, channel count or (for a fixed-size export) spatial
                size, named with what the model expects.
        """
        if x.ndim != len(self.input_shape):
            raise ValueError(f"{self.path}: expected a {len(self.input_shape)}D input, got shape {tuple(x.shape)}")
        for axis, (want, got) in enumerate(zip(self.input_shape, x.shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise ValueError(
                    f"{self.path}: input axis {axis} must be {want} (model input {self.input_shape}), got shape "
                    f"{tuple(x.shape)}"
                )
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([OUTPUT_NAME], {self.input_name: array})
        return torch.from_numpy(logits).to(x.device)

    @property
    def class_names(self) -> list[str]:
        """Class names stored at export (background first)."""
        return list(json.loads(self.metadata.get("class_names", "[]")))


def _config_of(text: str, path: Path) -> Config:
    """The run configuration stored in an export's metadata."""
    try:
        return config_from_dict(yaml.safe_load(text))
    except (yaml.YAMLError, ConfigError, TypeError) as e:
        raise UncolError(f"{path}: the configuration stored in the model's metadata is invalid ({e})") from None


def load_exported(path: str | Path, which: str = "best", threads: int = 0) -> tuple[Config, OnnxNetwork]:
    """``(config, network)`` of an exported model: what ``uncol.runs.load_weights`` gives for torch.

    This is the one-line hook for prediction on ONNX Runtime: where inference loads
    ``cfg, net, _ = load_weights(run_dir, which)``, ``cfg, net = load_exported(run_dir, which)``.

    Args:
        path: an ``.onnx`` file, or a run folder whose ``export/<which>.onnx`` is used.
        which: ``best`` or ``final``: the checkpoint the run folder's export was made from.
        threads: ONNX Runtime intra-op threads; 0 keeps its default.
    """
    p = Path(path)
    if p.is_dir():
        p = default_onnx_path(p, which)
        if not p.is_file():
            raise UncolError(
                f"{p}: no ONNX export of the {which} checkpoint in this run; create it with "
                f"`uncol export {path} --format onnx --checkpoint {which}`"
            )
    net = OnnxNetwork(p, threads)
    return net.config, net
