"""Whole-case inference: 2D networks slice by slice, 3D networks by sliding window.

Outputs are always at the case's original size and orientation, so they can be scored against the
original labels and written back with the input's geometry.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from uncol.config import Config
from uncol.data.training import prepare_case
from uncol.data.transforms import pad_to_size, resize_image, resize_logits
from uncol.data.types import CaseData
from uncol.errors import DataError


@torch.no_grad()
def predict_probabilities(network: nn.Module, data: CaseData, cfg: Config, device: torch.device) -> np.ndarray:
    """Softmax probabilities ``(K, *spatial)`` of one case at its original size.

    Args:
        network: a network in eval mode returning logits.
        data: the loaded case (raw intensities; normalised here exactly as in training).
        cfg: run configuration (normalisation, patch size, sliding-window options).
        device: device to run on.
    """
    data = CaseData(
        data.case_id, data.image.copy(), data.label, data.spacing, data.affine, data.slice_axis, data.meta
    )
    data = prepare_case(data, cfg)
    if data.image.shape[0] != cfg.data.in_channels:
        raise DataError(
            data.meta.get("path"),
            f"image has {data.image.shape[0]} channel(s) but the model expects {cfg.data.in_channels}",
        )
    if cfg.spatial_dims == 2:
        return _predict_2d(network, data, cfg, device)
    if data.image.ndim != 4:
        raise DataError(data.meta.get("path"), "2D image where a 3D volume is expected (the model is 3D)")
    return _predict_3d(network, data, cfg, device)


def _predict_2d(network: nn.Module, data: CaseData, cfg: Config, device: torch.device) -> np.ndarray:
    patch = tuple(cfg.train.patch_size)
    image = data.image
    if image.ndim == 3:  # a single 2D image: treat as a volume of one slice
        image = image[:, None]
        axis = 0
    else:
        axis = data.slice_axis
    vol = np.moveaxis(image, axis + 1, 1)  # (C, S, H, W)
    n_slices, plane = vol.shape[1], vol.shape[2:]
    out = np.zeros((cfg.data.num_classes, n_slices, *plane), dtype=np.float32)
    bs = max(1, cfg.eval.slice_batch_size)
    for start in range(0, n_slices, bs):
        chunk = [vol[:, k] for k in range(start, min(n_slices, start + bs))]
        if cfg.train.resize_2d:
            x = np.stack([resize_image(c, patch) for c in chunk])
            logits = _forward(network, torch.from_numpy(x), device)
            probs = torch.softmax(resize_logits(logits.float(), plane), dim=1)
        else:
            x = torch.from_numpy(np.stack(chunk))
            probs = torch.softmax(_sliding(network, x, patch, cfg, device).float(), dim=1)
        out[:, start : start + len(chunk)] = probs.permute(1, 0, 2, 3).cpu().numpy()
    out = np.moveaxis(out, 1, axis + 1)
    if data.image.ndim == 3:
        out = out[:, 0]
    return out


def _predict_3d(network: nn.Module, data: CaseData, cfg: Config, device: torch.device) -> np.ndarray:
    patch = tuple(cfg.train.patch_size)
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


def predict_labels(network: nn.Module, data: CaseData, cfg: Config, device: torch.device) -> np.ndarray:
    """Hard label map (argmax of the probabilities) at the case's original size."""
    return predict_probabilities(network, data, cfg, device).argmax(axis=0).astype(np.uint8)
