"""Exporting a trained network for deployment: ONNX, verified against PyTorch (docs/export.md).

* :func:`export_onnx`: a run's inference network (UnCoL: the prompt-free student) to an ``.onnx``
  file with its configuration in the metadata, checked with ONNX Runtime before it is written;
* :class:`OnnxNetwork`: an exported model called like the torch network (torch tensors in and out),
  so :mod:`uncol.inference` runs on ONNX Runtime unchanged; :func:`load_exported` gives
  ``(config, network)`` as :func:`uncol.runs.load_weights` does for PyTorch.
"""

from __future__ import annotations

from uncol.export.onnx_export import (
    DEFAULT_OPSET,
    ExportResult,
    export_network,
    export_onnx,
    spatial_multiple,
)
from uncol.export.parity import PARITY_TOLERANCE, Parity, compare_logits
from uncol.export.runtime import OnnxNetwork, default_onnx_path, load_exported, read_metadata

__all__ = [
    "DEFAULT_OPSET",
    "PARITY_TOLERANCE",
    "ExportResult",
    "OnnxNetwork",
    "Parity",
    "compare_logits",
    "default_onnx_path",
    "export_network",
    "export_onnx",
    "load_exported",
    "read_metadata",
    "spatial_multiple",
]
