"""Prediction on new files, keeping each input's geometry (NIfTI affine/spacing, 2D image size).

Every input is tried: a file that cannot be read or predicted (unreadable, truncated, wrong
channel count, ...) is recorded with its reason and the others go on; the caller sees the failures
in the returned :class:`~uncol.prediction_result.PredictionResult` (``uncol predict`` exits 1).
Outputs go to ``OUT/`` (masks) and ``OUT/maps/`` (entropy and probability maps, kept apart so that
``uncol score OUT GT`` sees masks only); formats are described in docs/prediction.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from uncol.backends import load_inference_network
from uncol.config import Config
from uncol.data.io import read_image_file, write_mask
from uncol.data.maps import map_path, write_entropy_map, write_probability_map
from uncol.data.readers.common import compact_int, format_of
from uncol.data.readers.image2d import MASK_VALUES, png_path_for
from uncol.data.types import CaseData
from uncol.devices import select_device
from uncol.errors import ConfigError, DataError
from uncol.inference import predict_probabilities_batch, tta_flip_axes
from uncol.metrics import compute_entropy
from uncol.prediction_result import PredictedFile, PredictionFailure, PredictionResult
from uncol.runs import inference_config, load_run_config
from uncol.threads import resolve_threads, use_threads

__all__ = ["INPUT_SUFFIXES", "MAPS_DIR", "collect_inputs", "failure_reason", "predict_files", "read_input"]

INPUT_SUFFIXES = (".nii.gz", ".nii", ".h5", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
#: Sub-folder of the output folder that holds the entropy and probability maps.
MAPS_DIR = "maps"


def _is_input(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(INPUT_SUFFIXES) and not path.name.startswith(".")


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[PredictionFailure]]:
    """Expand files and folders (non-recursive) into the image files to predict.

    Returns:
        ``(files, failures)``: the files in order; a missing path, an unsupported file type or a
        folder without image files is a failure, so that the other inputs still run.
    """
    files: list[Path] = []
    failures: list[PredictionFailure] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if _is_input(f))
            if not found:
                failures.append(
                    PredictionFailure(p, f"no image files in this folder (looked for {', '.join(INPUT_SUFFIXES)})")
                )
            files += found
        elif p.is_file():
            if p.name.lower().endswith(INPUT_SUFFIXES):
                files.append(p)
            else:
                failures.append(PredictionFailure(p, f"unsupported file type (supported: {', '.join(INPUT_SUFFIXES)})"))
        else:
            failures.append(PredictionFailure(p, "no such file or folder"))
    return files, failures


def _mask_target(out: Path, path: Path) -> Path:
    """Where the mask of ``path`` goes: the input's name (2D images: as PNG)."""
    target = out / path.name
    return png_path_for(target) if format_of(path) == "image2d" else target


def _plan_outputs(files: list[Path], out: Path) -> tuple[list[tuple[Path, Path]], list[PredictionFailure]]:
    """``(input, mask path)`` pairs; an input whose mask would overwrite an input or an earlier mask fails."""
    planned: list[tuple[Path, Path]] = []
    failures: list[PredictionFailure] = []
    owner: dict[Path, Path] = {}
    inputs = {f.resolve() for f in files}
    for path in files:
        target = _mask_target(out, path)
        key = target.resolve()
        if key in inputs:
            failures.append(PredictionFailure(path, f"its mask {target} would overwrite an input; choose another --out"))
        elif key in owner:
            failures.append(
                PredictionFailure(path, f"its mask {target.name} would overwrite the mask of {owner[key]}; rename one")
            )
        else:
            owner[key] = path
            planned.append((path, target))
    return planned, failures


def read_input(path: Path, in_channels: int) -> CaseData:
    """Read one input file for a model taking ``in_channels`` channels (a grey RGB image is accepted by a
    one-channel model).

    Raises:
        DataError: an unreadable, truncated or unsupported file, or a channel count the model does not take.
    """
    return _fit_channels(read_image_file(path), in_channels, path)


def _fit_channels(data: CaseData, in_channels: int, path: Path) -> CaseData:
    """Accept a grey image stored as RGB for a one-channel model; refuse other channel mismatches."""
    channels = data.image.shape[0]
    if channels == in_channels:
        return data
    if in_channels == 1 and channels == 3 and np.allclose(data.image[0], data.image[1:]):
        data.image = data.image[:1]
        return data
    raise DataError(path, f"image has {channels} channel(s) but the model expects {in_channels}")


@dataclass
class _Options:
    """What to compute and write for every input."""

    cfg: Config
    device: torch.device
    out: Path
    uncertainty: bool
    probabilities: bool
    tta: bool
    tta_axes: Sequence[int] | None
    mask_values: str


def _check_options(
    cfg: Config, mask_values: str, tta: bool, tta_axes: Sequence[int] | None, files: list[tuple[Path, Path]]
) -> None:
    """Refuse options that would fail every input, before any is read."""
    tta_flip_axes(tta, tta_axes, cfg.spatial_dims)
    if mask_values not in MASK_VALUES:
        raise ConfigError(f"mask_values: expected one of {', '.join(MASK_VALUES)}, got {mask_values!r}")
    any_2d = any(format_of(p) == "image2d" for p, _ in files)
    if any_2d and mask_values != "index" and cfg.data.num_classes > 256:
        raise ConfigError(
            f"mask_values={mask_values}: a PNG holds 256 colours, the model has {cfg.data.num_classes} classes; use index"
        )


def _write_outputs(path: Path, target: Path, data: CaseData, probs: np.ndarray, opts: _Options) -> PredictedFile:
    """Write the mask (argmax) of one input and the maps asked for, in the input's geometry."""
    num_classes = probs.shape[0]
    labels = compact_int(probs.argmax(axis=0))
    mask = write_mask(target, labels, data, mask_values=opts.mask_values, num_classes=num_classes)
    entropy_path = probs_path = None
    maps = opts.out / MAPS_DIR
    if opts.uncertainty:
        entropy_path = write_entropy_map(
            map_path(maps, path, "entropy"), compute_entropy(probs), num_classes, data
        )
    if opts.probabilities:
        probs_path = write_probability_map(map_path(maps, path, "probabilities"), probs, data)
    return PredictedFile(path, mask, entropy_path, probs_path)


def failure_reason(exc: Exception) -> str:
    """A failure's reason: the problem of a :class:`DataError` (the file is named beside it), else the error."""
    if isinstance(exc, DataError):
        return exc.problem if exc.path is not None else str(exc)
    return f"{type(exc).__name__}: {exc}"


def _batches(planned: list[tuple[Path, Path]], cfg: Config) -> Iterator[list[tuple[Path, Path]]]:
    """Inputs in groups predicted together: 2D image files share a batch, volumes go alone.

    Whether a file is a 2D image is known from its extension for PNG/JPEG/...; NIfTI and HDF5
    files may hold either, so they are predicted alone (their slices are batched anyway).
    """
    size = max(1, cfg.eval.slice_batch_size) if cfg.spatial_dims == 2 else 1
    pending: list[tuple[Path, Path]] = []
    for item in planned:
        if format_of(item[0]) != "image2d":
            if pending:
                yield pending
                pending = []
            yield [item]
            continue
        pending.append(item)
        if len(pending) >= size:
            yield pending
            pending = []
    if pending:
        yield pending


def _predict_group(
    network: torch.nn.Module, group: list[tuple[Path, Path]], opts: _Options, result: PredictionResult
) -> None:
    """Read, predict and write one group of inputs, recording each input's failure by name."""
    loaded: list[tuple[Path, Path, CaseData]] = []
    for path, target in group:
        try:
            loaded.append((path, target, read_input(path, opts.cfg.data.in_channels)))
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
            result.failures.append(PredictionFailure(path, failure_reason(exc)))
    if not loaded:
        return
    try:
        probs = predict_probabilities_batch(
            network, [d for _, _, d in loaded], opts.cfg, opts.device, tta=opts.tta, tta_axes=opts.tta_axes
        )
        outcomes: list[np.ndarray | Exception] = list(probs)
    except Exception:  # noqa: BLE001 - find out which input of the batch failed by predicting each alone
        outcomes = [_predict_one(network, data, opts) for _, _, data in loaded]
    for (path, target, data), outcome in zip(loaded, outcomes, strict=True):
        if isinstance(outcome, Exception):
            result.failures.append(PredictionFailure(path, failure_reason(outcome)))
            continue
        try:
            result.outputs.append(_write_outputs(path, target, data, outcome, opts))
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk for one file; the others may fit
            result.failures.append(PredictionFailure(path, failure_reason(exc)))


def _predict_one(network: torch.nn.Module, data: CaseData, opts: _Options) -> np.ndarray | Exception:
    """One input's probabilities, or the exception that stopped them."""
    try:
        return predict_probabilities_batch(network, [data], opts.cfg, opts.device, tta=opts.tta, tta_axes=opts.tta_axes)[0]
    except Exception as exc:  # noqa: BLE001 - returned to be recorded against this input
        return exc


def predict_files(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    checkpoint: str | None = None,
    device: str | None = None,
    show_progress: bool = True,
    *,
    uncertainty: bool = False,
    probabilities: bool = False,
    tta: bool = False,
    tta_axes: Sequence[int] | None = None,
    mask_values: str = "palette",
    threads: int | None = None,
    overrides: Sequence[str] = (),
    backend: str = "torch",
    model: str | Path | None = None,
) -> PredictionResult:
    """Segment image files with a trained run and write one mask per input into ``out_dir``.

    Masks keep the input's geometry: NIfTI outputs have the input's affine and header, 2D outputs
    the input's size (always PNG, also for JPEG inputs, since JPEG is lossy). Every input is tried;
    failures are returned, not raised.

    Args:
        run_dir: a finished run folder.
        inputs: image files and folders (folders: their image files, not recursive).
        out_dir: output folder (created); maps go to its ``maps/`` sub-folder.
        checkpoint: ``best`` or ``final`` (default: the run's ``eval.checkpoint``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (default: the run's ``train.device``).
        show_progress: draw a progress bar.
        uncertainty: also write the entropy of the predicted probabilities (``<stem>_entropy``).
        probabilities: also write the class probabilities (``<stem>_probabilities``).
        tta: test-time augmentation by flips (:func:`uncol.inference.predict_probabilities_batch`).
        tta_axes: network axes to flip with ``tta`` (default all).
        mask_values: how 2D PNG masks store the classes: ``palette`` (class ids with a colour
            palette, the default), ``index`` (plain class ids) or ``scaled`` (spread over 0..255).
            NIfTI and HDF5 masks always hold class ids.
        threads: CPU threads for torch (default: the run's ``train.threads``, else the number of
            cores this process may use).
        overrides: ``key=value`` options applied to the run's configuration, e.g.
            ``eval.sw_batch_size=8`` (options that define the network are refused).
        backend: ``torch`` (the run's weights) or ``onnxruntime`` (its ONNX export, on the CPU;
            :mod:`uncol.backends`).
        model: the ``.onnx`` file for ``onnxruntime`` (default ``RUN/export/<checkpoint>.onnx``).

    Returns:
        The outputs per input and the failures.

    Raises:
        UncolError: problems that concern every input (not a run folder, an invalid option, no
            input file at all, a missing ONNX export).
    """
    stored = load_run_config(run_dir)
    which = checkpoint or inference_config(stored, overrides).eval.checkpoint
    if backend == "onnxruntime" and device not in (None, "cpu"):
        raise ConfigError(f"device={device}: the onnxruntime backend runs on the CPU")
    n_threads = resolve_threads(threads, stored.train.threads)
    cfg, net = load_inference_network(run_dir, which, backend, model, overrides, n_threads)
    out = Path(out_dir)
    files, input_failures = collect_inputs(inputs)
    planned, plan_failures = _plan_outputs(files, out)
    result = PredictionResult(failures=input_failures + plan_failures)
    if not files:
        raise DataError(None, "nothing to predict: " + "; ".join(str(f) for f in result.failures))
    _check_options(cfg, mask_values, tta, tta_axes, planned)
    result.threads = use_threads(n_threads, cfg.train.threads)
    dev = select_device("cpu" if backend == "onnxruntime" else device or cfg.train.device)
    net.to(dev)
    opts = _Options(cfg, dev, out, uncertainty, probabilities, tta, tta_axes, mask_values)
    with tqdm(total=len(planned), desc="predict", disable=not show_progress, dynamic_ncols=True) as bar:
        for group in _batches(planned, cfg):
            _predict_group(net, group, opts, result)
            bar.update(len(group))
            if result.failures:
                bar.set_postfix(failed=len(result.failures))
    order = {p: i for i, p in enumerate(files)}
    result.outputs.sort(key=lambda o: order[o.input])
    return result
