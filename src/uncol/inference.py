"""Whole-case inference: 2D networks slice by slice, 3D networks by sliding window.

Outputs are always at the case's original size and orientation, so they can be scored against the
original labels and written back with the input's geometry. Test-time augmentation (TTA) by flips
predicts every flipped copy of a case through the same pipeline, flips each prediction back and
averages the softmax probabilities.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from uncol.config import Config
from uncol.data.training import prepare_case
from uncol.data.transforms import pad_to_size, resize_image, resize_logits
from uncol.data.types import CaseData
from uncol.errors import ConfigError, DataError

__all__ = [
    "flip_combinations", "predict_labels", "predict_probabilities", "predict_probabilities_batch", "tta_flip_axes",
]


def flip_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the identity first): the flips that TTA averages over."""
    axes = tuple(axes)
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def tta_flip_axes(tta: bool, tta_axes: Sequence[int] | None, spatial_dims: int) -> tuple[int, ...]:
    """The network axes to flip: none without TTA, all of them by default, else ``tta_axes`` checked.

    Raises:
        ConfigError: ``tta_axes`` empty, repeated or outside ``0 .. spatial_dims - 1``.
    """
    if not tta:
        return ()
    if tta_axes is None:
        return tuple(range(spatial_dims))
    axes = tuple(int(a) for a in tta_axes)
    if not axes or len(set(axes)) != len(axes) or any(a < 0 or a >= spatial_dims for a in axes):
        raise ConfigError(
            f"tta_axes: distinct axes among 0..{spatial_dims - 1} of the {spatial_dims}D network input "
            f"expected, got {list(tta_axes)}"
        )
    return axes


def _prepared(data: CaseData, cfg: Config) -> CaseData:
    """A normalised copy of a case (the caller's array is untouched), checked against the network."""
    data = CaseData(
        data.case_id, data.image.copy(), data.label, data.spacing, data.affine, data.slice_axis, data.meta
    )
    data = prepare_case(data, cfg)
    if data.image.shape[0] != cfg.data.in_channels:
        raise DataError(
            data.meta.get("path"),
            f"image has {data.image.shape[0]} channel(s) but the model expects {cfg.data.in_channels}",
        )
    if cfg.spatial_dims == 3 and data.image.ndim != 4:
        raise DataError(data.meta.get("path"), "2D image where a 3D volume is expected (the model is 3D)")
    return data


def _case_axes(data: CaseData, network_axes: tuple[int, ...], spatial_dims: int) -> tuple[int, ...]:
    """Spatial axes of a case's array that correspond to the given axes of the network input.

    A 2D network sees the in-plane axes of a volume (all axes but the slice axis), in order.
    """
    if spatial_dims == 2 and data.image.ndim == 4:
        in_plane = [a for a in range(3) if a != data.slice_axis]
        return tuple(in_plane[a] for a in network_axes)
    return network_axes


@torch.no_grad()
def predict_probabilities_batch(
    network: nn.Module,
    cases: Sequence[CaseData],
    cfg: Config,
    device: torch.device,
    *,
    tta: bool = False,
    tta_axes: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Softmax probabilities ``(K, *spatial)`` of several cases, each at its original size.

    The 2D slices of all cases share network batches of ``eval.slice_batch_size`` (2D images of
    different sizes are batched together when ``train.resize_2d`` resizes them to the patch); 3D
    cases go through the sliding window one by one.

    Args:
        network: a network in eval mode returning logits.
        cases: the loaded cases (raw intensities; normalised here exactly as in training).
        cfg: run configuration (normalisation, patch size, sliding-window options).
        device: device to run on.
        tta: test-time augmentation: average the probabilities of every combination of flips of
            ``tta_axes`` (each flipped back first), ``2 ** len(tta_axes)`` predictions per case.
        tta_axes: axes of the network input to flip (2D network: 0 = rows, 1 = columns of each
            image or slice; 3D network: the volume's axes 0, 1, 2); default all of them.

    Returns:
        One float32 array per case, in order.

    Raises:
        DataError: a case whose channel count or dimensionality does not fit the network.
        ConfigError: invalid ``tta_axes``.
    """
    axes = tta_flip_axes(tta, tta_axes, cfg.spatial_dims)
    prepared = [_prepared(c, cfg) for c in cases]
    flips = flip_combinations(axes)
    total: list[np.ndarray] | None = None
    for flip in flips:
        case_flips = [_case_axes(c, flip, cfg.spatial_dims) for c in prepared]
        flipped = [_flipped_case(c, a) for c, a in zip(prepared, case_flips, strict=True)]
        probs = _predict_prepared(network, flipped, cfg, device)
        # Flip each prediction back into the input's orientation before it is averaged.
        probs = [_flip(p, a) for p, a in zip(probs, case_flips, strict=True)]
        total = probs if total is None else [t + p for t, p in zip(total, probs, strict=True)]
    assert total is not None  # flip_combinations always yields the identity
    if len(flips) > 1:
        total = [np.ascontiguousarray(t / len(flips), dtype=np.float32) for t in total]
    return total


def predict_probabilities(
    network: nn.Module,
    data: CaseData,
    cfg: Config,
    device: torch.device,
    *,
    tta: bool = False,
    tta_axes: Sequence[int] | None = None,
) -> np.ndarray:
    """Softmax probabilities ``(K, *spatial)`` of one case at its original size.

    Args:
        network: a network in eval mode returning logits.
        data: the loaded case (raw intensities; normalised here exactly as in training).
        cfg: run configuration (normalisation, patch size, sliding-window options).
        device: device to run on.
        tta: average over flips (see :func:`predict_probabilities_batch`).
        tta_axes: network axes to flip; default all.
    """
    return predict_probabilities_batch(network, [data], cfg, device, tta=tta, tta_axes=tta_axes)[0]


def predict_labels(
    network: nn.Module,
    data: CaseData,
    cfg: Config,
    device: torch.device,
    *,
    tta: bool = False,
    tta_axes: Sequence[int] | None = None,
) -> np.ndarray:
    """Hard label map (argmax of the probabilities) at the case's original size."""
    probs = predict_probabilities(network, data, cfg, device, tta=tta, tta_axes=tta_axes)
    return probs.argmax(axis=0).astype(np.uint8)


def _flip(array: np.ndarray, spatial_axes: tuple[int, ...]) -> np.ndarray:
    """Flip a channel-first array along spatial axes (a copy, so torch can take it)."""
    if not spatial_axes:
        return array
    return np.ascontiguousarray(np.flip(array, axis=tuple(a + 1 for a in spatial_axes)))


def _flipped_case(data: CaseData, spatial_axes: tuple[int, ...]) -> CaseData:
    if not spatial_axes:
        return data
    return CaseData(
        data.case_id, _flip(data.image, spatial_axes), None, data.spacing, data.affine, data.slice_axis, data.meta
    )


def _predict_prepared(
    network: nn.Module, cases: Sequence[CaseData], cfg: Config, device: torch.device
) -> list[np.ndarray]:
    if cfg.spatial_dims == 2:
        return _predict_2d(network, cases, cfg, device)
    return [_predict_3d(network, c, cfg, device) for c in cases]


def _slices_of(data: CaseData) -> tuple[np.ndarray, int | None]:
    """``(C, S, H, W)`` slices of a case and the spatial axis they came from (``None``: a 2D image)."""
    if data.image.ndim == 3:
        return data.image[:, None], None
    return np.moveaxis(data.image, data.slice_axis + 1, 1), data.slice_axis


def _predict_2d(
    network: nn.Module, cases: Sequence[CaseData], cfg: Config, device: torch.device
) -> list[np.ndarray]:
    patch = tuple(cfg.train.patch_size)
    volumes = [_slices_of(c) for c in cases]
    outs = [np.zeros((cfg.data.num_classes, *v.shape[1:]), dtype=np.float32) for v, _ in volumes]
    items = [(i, k) for i, (v, _) in enumerate(volumes) for k in range(v.shape[1])]
    bs = max(1, cfg.eval.slice_batch_size)
    for start in range(0, len(items), bs):
        chunk = items[start : start + bs]
        slices = [volumes[i][0][:, k] for i, k in chunk]
        if cfg.train.resize_2d:
            x = np.stack([resize_image(s, patch) for s in slices])
            logits = _forward(network, torch.from_numpy(x), device).float()
            for j, (i, k) in enumerate(chunk):
                plane = slices[j].shape[1:]
                outs[i][:, k] = torch.softmax(resize_logits(logits[j : j + 1], plane), dim=1)[0].cpu().numpy()
        else:
            # Without resizing, slices are tiled at their own size: only same-size slices share a batch.
            for _, group in itertools.groupby(enumerate(chunk), key=lambda t: slices[t[0]].shape):
                members = list(group)
                x = torch.from_numpy(np.stack([slices[j] for j, _ in members]))
                probs = torch.softmax(_sliding(network, x, patch, cfg, device).float(), dim=1).cpu().numpy()
                for row, (_, (i, k)) in enumerate(members):
                    outs[i][:, k] = probs[row]
    results = []
    for out, (_, axis) in zip(outs, volumes, strict=True):
        results.append(out[:, 0] if axis is None else np.moveaxis(out, 1, axis + 1))
    return results


def inference_window(cfg: Config) -> tuple[int, ...]:
    """The 3D sliding window: ``train.pad_to`` when set, else ``train.patch_size``.

    A network trained on patches cropped from volumes padded to ``pad_to`` (UnCoL 3D) segments a whole
    padded volume in one window, as its training crops were framed; windows of the patch size blended
    together cost it 6 points of test Dice on Hippocampus (benchmarks/RESULTS.md).
    """
    return cfg.train.padded_size


def _predict_3d(network: nn.Module, data: CaseData, cfg: Config, device: torch.device) -> np.ndarray:
    patch = inference_window(cfg)
    image, _, pads = pad_to_size(data.image, None, patch)
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    probs = torch.softmax(_sliding(network, x, patch, cfg, device).float(), dim=1)[0].cpu().numpy()
    sl = tuple(slice(a, probs.shape[i + 1] - b) for i, (a, b) in enumerate(pads))
    return np.ascontiguousarray(probs[(slice(None), *sl)])


def _forward(network: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        return network(x)


def _sliding(network: nn.Module, x: torch.Tensor, patch: tuple[int, ...], cfg: Config, device: torch.device) -> torch.Tensor:
    with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        return sliding_window_inference(
            x.to(device),
            roi_size=patch,
            sw_batch_size=cfg.eval.sw_batch_size,
            predictor=network,
            overlap=cfg.eval.sw_overlap,
            mode="gaussian",
        )
