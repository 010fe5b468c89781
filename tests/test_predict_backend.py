"""``uncol predict --backend onnxruntime``: the run's ONNX export predicts the masks PyTorch predicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the onnx package is not installed (pip install onnx onnxruntime)")
pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed or has no wheel for this platform")

from fixtures_data import make_nifti_dataset  # noqa: E402
from uncol import api  # noqa: E402
from uncol.cli import main  # noqa: E402
from uncol.config import config_from_dict  # noqa: E402
from uncol.errors import ConfigError, UncolError  # noqa: E402
from uncol.export import export_onnx  # noqa: E402
from uncol.prediction import predict_files  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(root: Path, name: str, data, channels: list[int]) -> Path:
    values = {
        "name": name, "output_dir": str(root / "runs"), "data": dataclasses.asdict(data),
        "split": {"labeled": 2, "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"arch": "unet2d", "channels": channels},
        "train": {"iterations": 3, "batch_size": 2, "patch_size": [16, 16], "val_every": 0, "checkpoint_every": 3,
                  "threads": 1, "device": "cpu"},
    }
    return Path(api.train(config_from_dict(values), evaluate_splits=(), show_progress=False)["run_dir"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny 2D U-Net run on NIfTI volumes with its ONNX export at the default place, and its data folder."""
    root = tmp_path_factory.mktemp("backend")
    data = make_nifti_dataset(root / "nii", n_cases=5, shape=(20, 18, 5), num_classes=3)
    torch.set_num_threads(1)
    run = _train(root, "run", data, [4, 8])
    export_onnx(run)
    return run, root / "nii" / "images", root


def test_onnxruntime_masks_match_torch(exported, tmp_path):
    run, images, _ = exported
    torch_res = predict_files(run, [images], tmp_path / "torch", show_progress=False, probabilities=True)
    onnx_res = predict_files(run, [images], tmp_path / "onnx", show_progress=False, probabilities=True,
                             backend="onnxruntime")
    assert torch_res.ok and onnx_res.ok and len(onnx_res.masks) == 5
    for a, b in zip(torch_res.outputs, onnx_res.outputs, strict=True):
        assert a.mask.name == b.mask.name
        np.testing.assert_array_equal(np.asarray(nib.load(a.mask).dataobj), np.asarray(nib.load(b.mask).dataobj))
        np.testing.assert_allclose(nib.load(a.probabilities).get_fdata(), nib.load(b.probabilities).get_fdata(),
                                   atol=1e-4)
    # the command line, with the export named explicitly
    model = run / "export" / "best.onnx"
    out = tmp_path / "cli"
    assert main(["predict", str(run), str(images), "--out", str(out), "--backend", "onnxruntime", "--model",
                 str(model), "--quiet"]) == 0
    for a in torch_res.outputs:
        np.testing.assert_array_equal(np.asarray(nib.load(out / a.mask.name).dataobj), np.asarray(nib.load(a.mask).dataobj))


def test_backend_errors_name_the_file_or_the_command(exported, tmp_path):
    run, images, root = exported
    with pytest.raises(UncolError, match="uncol export .*--checkpoint final"):  # no export of final.pt
        predict_files(run, [images], tmp_path / "o", show_progress=False, backend="onnxruntime", checkpoint="final")
    with pytest.raises(ConfigError, match="--backend onnxruntime"):
        predict_files(run, [images], tmp_path / "o", show_progress=False, model=run / "export" / "best.onnx")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        predict_files(run, [images], tmp_path / "o", show_progress=False, backend="onnxruntime", device="cuda")
    other = _train(root, "wider", make_nifti_dataset(root / "nii2", n_cases=5, shape=(20, 18, 5)), [8, 16])
    wrong = export_onnx(other, tmp_path / "wider.onnx").path
    with pytest.raises(UncolError, match=f"{wrong}: an export of another network"):
        predict_files(run, [images], tmp_path / "o", show_progress=False, backend="onnxruntime", model=wrong)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "o"), "--backend", "onnxruntime",
                 "--model", str(broken), "--quiet"]) == 2
