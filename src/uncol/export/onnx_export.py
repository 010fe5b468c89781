"""``uncol export RUN --format onnx``: the trained inference network as an ONNX model, verified.

The exported graph is the network that evaluation and prediction run: for UnCoL the prompt-free
student (its knowledge adapter attends to the student's own tokens, ``context=None``); for the other
methods the segmentation network. It maps normalised images ``(batch, channels, *spatial)`` to logits
``(batch, classes, *spatial)``; normalisation, resizing and sliding windows stay outside, as in
:mod:`uncol.inference`, and the configuration needed for them is stored in the model's metadata.

Every export is checked before it is written: ONNX Runtime runs it on the run's own images and its
logits must match PyTorch's within :data:`uncol.export.parity.PARITY_TOLERANCE`; a model that does
not is never written (the file is assembled in a temporary file and renamed only after the check).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uncol.atomic import atomic_write
from uncol.config import Config
from uncol.data.transforms import resize_image
from uncol.errors import ConfigError, UncolError
from uncol.export.parity import PARITY_TOLERANCE, Parity, compare_logits
from uncol.export.runtime import (
    INPUT_NAME,
    METADATA_VERSION,
    OUTPUT_NAME,
    OnnxNetwork,
    default_onnx_path,
    import_onnxruntime,
)
from uncol.export.samples import run_inputs

DEFAULT_OPSET = 17
CHECKPOINTS = ("best", "final")


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how it was verified.

    Attributes:
        path: the ``.onnx`` file.
        checkpoint: ``best`` or ``final``.
        input_shape: the model input's shape; ``"batch"`` and ``"size_<axis>"`` name free axes.
        parity: the ONNX Runtime vs PyTorch comparison.
        inputs: which images the comparison ran on.
        metadata: the ``metadata_props`` written into the model.
    """

    path: Path
    checkpoint: str
    input_shape: list[int | str]
    parity: Parity
    inputs: str
    metadata: dict[str, str] = field(default_factory=dict)


def spatial_multiple(cfg: Config) -> int | None:
    """The multiple every spatial size of a free-size export must be, or None when the size is fixed.

    U-Nets and V-Nets are fully convolutional: any size divisible by their total downsampling works.
    The UnCoL student is exported at ``train.patch_size`` only: its ViT's position embedding and the
    reshape of its tokens into the backbone's grid are traced as constants of that size (inference
    always feeds it ``train.patch_size`` inputs: resized 2D slices, 3D sliding windows).
    """
    arch = cfg.model.arch
    if arch.startswith("uncol_student"):
        return None
    if arch == "vnet":
        return 16  # MONAI's V-Net always downsamples four times
    return 2 ** (len(cfg.model.channels) - 1)


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise UncolError(f"the onnx package is not installed ({e}); install it with `pip install onnx onnxruntime`") from None
    return onnx


def export_network(
    network: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    dynamic_spatial: bool,
    metadata: dict[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``network`` as an ONNX model with a free batch axis (and free spatial axes if asked).

    Args:
        network: maps ``(B, C, *spatial)`` to logits; exported in eval mode.
        example: an input of the shape to trace with.
        path: the file to write (not atomic: :func:`export_onnx` writes into a temporary file).
        dynamic_spatial: leave the spatial axes free (fully convolutional networks only).
        metadata: ``metadata_props`` to store (strings).
        opset: ONNX opset version.

    Returns:
        ``path``.
    """
    onnx = _import_onnx()
    path = Path(path)
    spatial = range(2, example.ndim)
    axes = {0: "batch", **({a: f"size_{a - 2}" for a in spatial} if dynamic_spatial else {})}
    network.eval()
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated and that traced Python conditions on
        # shapes become constants; both are checked for by the parity test that follows every export
        # (constant shapes are why the UnCoL student is exported at a fixed size).
        warnings.simplefilter("ignore")
        # Not under no_grad: there, torch's transformer layers take a fused fast path
        # (aten::_transformer_encoder_layer_fwd) that has no ONNX equivalent.
        try:
            torch.onnx.export(
                network,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        except Exception as e:  # noqa: BLE001 - the exporter raises many types (unsupported op, bad opset, ...)
            raise UncolError(
                f"torch cannot export {type(network).__name__} to ONNX opset {opset} ({type(e).__name__}: {e})"
            ) from None
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    if metadata:
        set_metadata(path, metadata)
    return path


def set_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX model at ``path`` (in place)."""
    onnx = _import_onnx()
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, dict(metadata))
    onnx.save(model, str(path))


def _metadata(cfg: Config, which: str, meta: dict[str, Any], run_dir: Path, opset: int) -> dict[str, str]:
    from uncol import __version__

    multiple = spatial_multiple(cfg)
    names = list(cfg.data.class_names) or [str(k) for k in range(cfg.data.num_classes)]
    return {
        "uncol_metadata_version": METADATA_VERSION,
        "producer": f"uncol {__version__}",
        "run": run_dir.name,
        "checkpoint": which,
        "step": str(meta.get("step", "")),
        "method": cfg.method.name,
        "arch": cfg.model.arch,
        "spatial_dims": str(cfg.spatial_dims),
        "in_channels": str(cfg.data.in_channels),
        "num_classes": str(cfg.data.num_classes),
        "class_names": json.dumps(names),
        "patch_size": json.dumps(list(cfg.train.patch_size)),
        "dynamic_spatial": json.dumps(multiple is not None),
        "spatial_multiple": json.dumps(multiple),
        "normalize": cfg.data.normalize,
        "resize_2d": json.dumps(cfg.train.resize_2d),
        "input": "normalised images (batch, channels, *spatial), float32",
        "output": "logits (batch, classes, *spatial), float32",
        "opset": str(opset),
        "config": cfg.to_yaml(),
    }


def _check_batches(inputs: torch.Tensor, cfg: Config) -> list[torch.Tensor]:
    """The batches a new export is checked on: all inputs, the first alone (free batch axis) and,
    for free-size exports, the inputs resized to another valid size (free spatial axes)."""
    batches = [inputs, inputs[:1]]
    multiple = spatial_multiple(cfg)
    if multiple is not None:
        size = [p + multiple for p in cfg.train.patch_size]
        batches.append(torch.stack([torch.from_numpy(resize_image(x.numpy(), size)) for x in inputs]))
    return batches


def export_onnx(
    run_dir: str | Path,
    out: str | Path | None = None,
    which: str = "best",
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export a trained run's inference network to ONNX and verify it with ONNX Runtime.

    Args:
        run_dir: the run folder (``checkpoints/best.pt`` or ``final.pt`` must exist).
        out: the ``.onnx`` file to write; default ``RUN/export/<which>.onnx``.
        which: the weights to export, ``best`` (validation-selected) or ``final``.
        opset: ONNX opset version.
        tolerance: largest absolute logit difference accepted between ONNX Runtime and PyTorch.

    Returns:
        The written file, its input shape, the parity measured and the metadata stored.

    Raises:
        UncolError: not a run folder, missing or corrupt checkpoint, onnx/onnxruntime missing, or
            ONNX Runtime's logits beyond ``tolerance`` (then nothing is written).
    """
    if which not in CHECKPOINTS:
        raise ConfigError(f"checkpoint: expected one of {', '.join(CHECKPOINTS)}, got {which!r}")
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UncolError(f"{run}: not a run folder (no config.yaml)")
    _import_onnx()
    import_onnxruntime()
    from uncol.runs import load_weights

    cfg, network, meta = load_weights(run, which)
    target = Path(out) if out is not None else default_onnx_path(run, which)
    inputs, described = run_inputs(cfg, run, count=2)
    metadata = _metadata(cfg, which, meta, run, opset)
    result: dict[str, Any] = {}

    # Export, verify on the temporary file, then store the verdict with the metadata: a model that
    # fails the check never reaches ``target``.
    def build(tmp: Path) -> None:
        try:
            export_network(
                network, inputs, tmp, dynamic_spatial=spatial_multiple(cfg) is not None, opset=opset, metadata=metadata
            )
        except UncolError as e:
            raise UncolError(f"{target}: {e}") from None  # name the file asked for, not the temporary one
        # One thread: the check inputs are tiny, and the export may run beside training jobs.
        parity = compare_logits(network, OnnxNetwork(tmp, threads=1), _check_batches(inputs, cfg), tolerance)
        if not parity.ok:
            raise UncolError(
                f"{target}: ONNX Runtime's logits differ from PyTorch's by up to {parity.max_abs_diff:.3g} "
                f"(tolerance {tolerance:g}) on {described}; the export was not written"
            )
        metadata.update({
            "parity_max_abs_diff": f"{parity.max_abs_diff:.3g}",
            "parity_tolerance": f"{tolerance:g}",
            "parity_inputs": described,
        })
        set_metadata(tmp, metadata)
        result["parity"] = parity

    atomic_write(target, build)
    net = OnnxNetwork(target, threads=1)
    return ExportResult(
        path=target,
        checkpoint=which,
        input_shape=list(net.input_shape),
        parity=result["parity"],
        inputs=described,
        metadata=dict(net.metadata),
    )
