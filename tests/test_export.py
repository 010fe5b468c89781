"""ONNX export (uncol.export): parity with PyTorch on real images, metadata, errors, the OnnxNetwork wrapper.

Tiny networks trained for 2 steps on the synthetic fixture datasets: a 2D U-Net, the UnCoL student
(prompt-free, trained without a teacher: distillation and pseudo-labels off) and a 3D U-Net.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("onnx", reason="the onnx package is not installed (pip install onnx onnxruntime)")
pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed or has no wheel for this platform")

from fixtures_data import make_hdf5_dataset, make_nifti_dataset  # noqa: E402
from uncol.cli import main  # noqa: E402
from uncol.config import config_from_dict  # noqa: E402
from uncol.data.readers import load_case  # noqa: E402
from uncol.data.splits import load_splits  # noqa: E402
from uncol.engine import Trainer  # noqa: E402
from uncol.errors import UncolError  # noqa: E402
from uncol.export import PARITY_TOLERANCE, OnnxNetwork, export_onnx, load_exported, read_metadata  # noqa: E402
from uncol.inference import predict_labels  # noqa: E402
from uncol.runs import load_weights  # noqa: E402

NAMES = ["background", "RV", "LV"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(root: Path, name: str, data, model: dict, **sections: dict) -> Path:
    dims = 3 if model["arch"].endswith("3d") else 2
    values = {
        "name": name,
        "output_dir": str(root / "runs"),
        "data": dataclasses.asdict(data) | {"class_names": NAMES, "normalize": "zscore"},
        "split": {"labeled": 2, "val_fraction": 0.2, "test_fraction": 0.2},
        "model": model,
        "augment": {"rotate_degrees": 0.0},
        "train": {"iterations": 2, "batch_size": 2, "patch_size": [32, 32] if dims == 2 else [16, 16, 16],
                  "val_every": 0, "checkpoint_every": 2, "threads": 1, "device": "cpu"},
        **sections,
    }
    run = root / "runs" / name
    Trainer(config_from_dict(values), run, show_progress=False).fit()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained tiny runs: ``unet2d`` and ``student`` on HDF5 (2D slices, 3D val/test volumes), ``unet3d`` on NIfTI."""
    root = tmp_path_factory.mktemp("export")
    h5 = make_hdf5_dataset(root / "h5", n_train=4, n_val=1, n_test=1, slices=3, shape=(32, 32), num_classes=3)
    nii = make_nifti_dataset(root / "nii", n_cases=5, shape=(16, 16, 16), num_classes=3, spacing=(1.0, 1.0, 1.0))
    torch.set_num_threads(1)
    return {
        "unet2d": _train(root, "unet2d", h5, {"arch": "unet2d", "channels": [4, 8, 16]}),
        "student": _train(
            root, "student", h5,
            {"arch": "uncol_student2d", "channels": [4, 8, 16], "vit_patch": 4, "vit_dim": 24, "vit_heads": 2,
             "vit_depth": 2},
            method={"name": "uncol", "uncol": {"distill": "none", "pseudo_labels": "none"}},
        ),
        "unet3d": _train(root, "unet3d", nii, {"arch": "unet3d", "channels": [4, 8, 16]}),
    }


@pytest.mark.parametrize("kind", ["unet2d", "student", "unet3d"])
def test_export_matches_pytorch_on_the_runs_images(runs, kind, tmp_path):
    res = export_onnx(runs[kind], tmp_path / f"{kind}.onnx")
    assert res.path.is_file()
    # Real images of the run's own val/test cases, not noise.
    assert res.inputs.startswith("images of case(s)"), res.inputs
    assert res.parity.ok and 0 <= res.parity.max_abs_diff <= PARITY_TOLERANCE
    assert res.parity.max_abs_logit > 0 and res.parity.label_agreement > 0.99
    shapes = [c["shape"] for c in res.parity.checks]
    assert [2, 1] == shapes[0][:2] and [1, 1] == shapes[1][:2]  # the batch axis is free
    if kind == "student":
        # The student's token grid is traced as a constant: fixed spatial size, one check per batch size.
        assert res.input_shape == ["batch", 1, 32, 32] and len(shapes) == 2
    else:
        assert res.input_shape[2:] == [f"size_{a}" for a in range(len(res.input_shape) - 2)]
        assert len(shapes) == 3 and shapes[2][2:] != shapes[0][2:]  # checked at a second size too


def test_metadata_describes_the_model(runs, tmp_path):
    res = export_onnx(runs["student"], tmp_path / "student.onnx", which="final")
    meta = read_metadata(res.path)
    assert json.loads(meta["class_names"]) == NAMES
    assert json.loads(meta["patch_size"]) == [32, 32]
    assert (meta["normalize"], meta["spatial_dims"], meta["arch"], meta["method"]) == (
        "zscore", "2", "uncol_student2d", "uncol")
    assert (meta["checkpoint"], meta["step"], meta["in_channels"], meta["num_classes"]) == ("final", "2", "1", "3")
    assert meta["dynamic_spatial"] == "false" and meta["parity_tolerance"] == "0.001"
    assert float(meta["parity_max_abs_diff"]) <= PARITY_TOLERANCE
    assert yaml.safe_load(meta["config"])["model"]["arch"] == "uncol_student2d"


def test_default_path_and_load_exported(runs):
    res = export_onnx(runs["unet2d"])
    assert res.path == runs["unet2d"] / "export" / "best.onnx"
    cfg, net = load_exported(runs["unet2d"])
    assert isinstance(net, OnnxNetwork) and cfg.model.arch == "unet2d" and net.class_names == NAMES
    with pytest.raises(UncolError, match="no ONNX export of the final checkpoint"):
        load_exported(runs["unet2d"], which="final")


@pytest.mark.parametrize("kind", ["unet2d", "student"])
def test_onnx_network_is_a_drop_in_for_the_torch_network(runs, kind, tmp_path):
    """OnnxNetwork returns the torch network's logits, and whole-case inference runs on it unchanged."""
    path = export_onnx(runs[kind], tmp_path / "m.onnx").path
    cfg, net, _ = load_weights(runs[kind])
    onnx_net = OnnxNetwork(path, threads=1).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert (onnx_net(x) - net(x)).abs().max() <= PARITY_TOLERANCE
    # The hook for `uncol predict --backend onnxruntime`: the same predicted masks on a 3D test volume.
    case = load_splits(runs[kind] / "splits.json").test[0]
    data = load_case(case, cfg.data)
    cpu = torch.device("cpu")
    np.testing.assert_array_equal(predict_labels(onnx_net, data, onnx_net.config, cpu), predict_labels(net, data, cfg, cpu))


def test_onnx_network_names_wrong_inputs(runs, tmp_path):
    net = OnnxNetwork(export_onnx(runs["student"], tmp_path / "s.onnx").path)
    with pytest.raises(ValueError, match="input axis 2 must be 32"):
        net(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="expected a 4D input"):
        net(torch.zeros(1, 32, 32))


def test_beyond_tolerance_is_an_error_and_writes_nothing(runs, tmp_path):
    out = tmp_path / "never.onnx"
    with pytest.raises(UncolError, match=r"differ from PyTorch's by up to .* \(tolerance -1\).*not written"):
        export_onnx(runs["unet2d"], out, tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one is left


def test_unsupported_opset_is_a_clear_error(runs, tmp_path):
    out = tmp_path / "old.onnx"
    with pytest.raises(UncolError, match=r"old\.onnx: torch cannot export UNet to ONNX opset 99"):
        export_onnx(runs["unet2d"], out, opset=99)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_run_folder_is_a_clear_error(runs, tmp_path):
    with pytest.raises(UncolError, match="not a run folder"):
        export_onnx(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(runs["unet2d"], broken, ignore=shutil.ignore_patterns("export"))
    best = broken / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    with pytest.raises(UncolError, match=r"best\.pt: unreadable"):
        export_onnx(broken)
    (broken / "checkpoints" / "final.pt").unlink()
    with pytest.raises(UncolError, match=r"final\.pt: no "):
        export_onnx(broken, which="final")
    not_uncol = tmp_path / "plain.onnx"
    not_uncol.write_bytes(b"not a model")
    with pytest.raises(UncolError, match="plain.onnx: ONNX Runtime cannot load"):
        OnnxNetwork(not_uncol)


def test_images_not_readable_fall_back_to_seeded_noise(runs, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(runs["unet2d"], moved, ignore=shutil.ignore_patterns("export"))
    splits = json.loads((moved / "splits.json").read_text())
    for role in ("labeled", "unlabeled", "val", "test"):
        for case in splits[role]:
            case["image_path"] = "/nonexistent" + case["image_path"]
    (moved / "splits.json").write_text(json.dumps(splits))
    res = export_onnx(moved, tmp_path / "m.onnx")
    assert res.inputs.startswith("seeded random inputs") and "/nonexistent" in res.inputs
    assert res.parity.ok


def test_cli_export(runs, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(runs["student"]), "--format", "onnx", "--out", str(out), "--checkpoint", "final"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "ONNX Runtime vs PyTorch on images of case(s)" in text and "tolerance 0.001" in text
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
