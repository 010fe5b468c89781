"""Bad input, as a tested matrix (docs/bad_input.md): every broken input a new user may bring.

Each case builds a tiny valid dataset with tests/fixtures_data.py, breaks one thing, and asserts that
training stops before its first step with an error naming the file and the problem, that nothing was
written (no run folder; a resumed run's checkpoint left byte for byte), and, where ``uncol data check``
already reports the problem, that it still does. Then: leaving bad cases out (data.on_bad_case=exclude),
configuration files, checkpoints (another architecture; tampered ones carrying code, never run), file
permissions under the umask, and file names that are not UTF-8 or close to the length limit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import (
    make_hdf5_dataset,
    make_image2d_dataset,
    make_nifti_dataset,
    truncate,
    write_h5,
    write_nifti,
)
from uncol.atomic import atomic_write_json, atomic_write_text
from uncol.checkpoints import load_checkpoint
from uncol.cli import main as cli_main
from uncol.config import Config, DataConfig, config_from_dict, load_config
from uncol.data.check import check_dataset
from uncol.data.io import write_mask
from uncol.data.types import CaseData
from uncol.engine import Trainer, capture_rng_state, restore_rng_state
from uncol.errors import BadCasesError, ConfigError, UncolError
from uncol.models import build_network
from uncol.runs import RunPaths, load_weights

SPACING = (1.5, 1.0, 2.0)  # the NIfTI fixture's spacing (its affine is diag(SPACING) plus an origin)


def run_config(
    tmp_path: Path, dataset: DataConfig, *, arch: str = "unet2d", method: str = "supervised", **sections: Any
) -> Config:
    """A 2-step run on ``dataset`` with a tiny network (val/test drawn at random where it has none); ``sections``
    update the sections they name (``train={"iterations": 1}``)."""
    patch = [16, 16, 8] if arch == "unet3d" else [16, 16]
    values: dict[str, Any] = {
        "name": "bad",
        "output_dir": str(tmp_path / "runs"),
        "data": dataclasses.asdict(dataset),
        "split": {"val_fraction": 0.25, "test_fraction": 0.25},
        "model": {"arch": arch, "channels": [4, 8]},
        "augment": {"flip": False, "rotate90": False, "rotate_degrees": 0.0, "intensity": False},
        "method": {"name": method},
        "train": {"iterations": 2, "batch_size": 2, "patch_size": patch, "val_every": 0, "checkpoint_every": 1,
                  "log_every": 1, "threads": 1, "device": "cpu"},
    }
    for key, value in sections.items():
        values[key] = values.get(key, {}) | value if isinstance(value, dict) else value
    return config_from_dict(values)


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content (to show that nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------------
# The data matrix


@dataclass
class Broken:
    """A dataset with one problem, and what the error about it must say."""

    data: DataConfig
    name: str  # the file name the message must contain
    problem: str  # a regex the message must match
    in_check: bool = True  # `uncol data check` reports it too
    role: str | None = None  # the split the problem is reported for, when it matters
    run: dict[str, Any] = field(default_factory=dict)  # run_config keyword arguments


def nifti(root: Path, **kw: Any) -> DataConfig:
    return make_nifti_dataset(root, **({"n_cases": 4, "shape": (16, 16, 8), "num_classes": 3, "spacing": SPACING} | kw))


def hdf5(root: Path, **kw: Any) -> DataConfig:
    return make_hdf5_dataset(
        root, **({"n_train": 2, "n_val": 1, "n_test": 1, "slices": 2, "shape": (16, 16), "num_classes": 3} | kw)
    )


def image2d(root: Path, **kw: Any) -> DataConfig:
    return make_image2d_dataset(root, **({"n_cases": 4, "size": (16, 16)} | kw))


def affine_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).affine)


def garbage(path: Path) -> Path:
    """Overwrite a file with bytes that are no image at all (a download that saved an error page)."""
    path.write_bytes(b"<html>502 Bad Gateway</html>" * 20)
    return path


def first_train_slice(data: DataConfig) -> Path:
    root = Path(data.root)
    return root / "data" / f"{(root / 'train_slices.list').read_text().split()[0]}.h5"


def _nifti_truncated(root: Path) -> Broken:
    data = nifti(root)
    truncate(Path(data.root) / "images" / "case_001.nii.gz")
    return Broken(data, "case_001.nii.gz", "unreadable or truncated NIfTI")


def _nifti_corrupt(root: Path) -> Broken:
    data = nifti(root)
    garbage(Path(data.root) / "images" / "case_001.nii.gz")
    return Broken(data, "case_001.nii.gz", "unreadable")


def _hdf5_truncated(root: Path) -> Broken:
    data = hdf5(root)
    path = truncate(first_train_slice(data))
    return Broken(data, path.name, "unreadable or truncated HDF5")


def _hdf5_corrupt(root: Path) -> Broken:
    data = hdf5(root)
    path = garbage(first_train_slice(data))
    return Broken(data, path.name, "unreadable or truncated HDF5")


def _png_truncated(root: Path) -> Broken:
    data = image2d(root)
    truncate(Path(data.root) / "images" / "img_001.png")
    return Broken(data, "img_001.png", "unreadable or truncated image file")


def _png_corrupt(root: Path) -> Broken:
    data = image2d(root)
    garbage(Path(data.root) / "masks" / "img_002.png")
    return Broken(data, "img_002.png", "unreadable or truncated image file")


def _jpeg_truncated(root: Path) -> Broken:
    data = image2d(root, image_ext=".jpg")
    truncate(Path(data.root) / "images" / "img_001.jpg")
    return Broken(data, "img_001.jpg", "unreadable or truncated image file")


def _jpeg_corrupt(root: Path) -> Broken:
    data = image2d(root, image_ext=".jpg")
    garbage(Path(data.root) / "images" / "img_003.jpg")
    return Broken(data, "img_003.jpg", "unreadable or truncated image file")


def _shape_mismatch(root: Path) -> Broken:
    data = nifti(root)
    label = Path(data.root) / "labels" / "case_002.nii.gz"
    write_nifti(label, np.zeros((16, 16, 7), np.uint8), SPACING, affine=affine_of(label))
    return Broken(data, "case_002.nii.gz", r"label shape \(16, 16, 7\) differs from image shape \(16, 16, 8\)")


def _spacing_mismatch(root: Path) -> Broken:
    data = nifti(root)
    label = Path(data.root) / "labels" / "case_002.nii.gz"
    # Same affine, other voxel size in the header: one of the two headers is wrong.
    write_nifti(label, np.asarray(nib.load(str(label)).dataobj), (1.5, 1.0, 3.0), affine=affine_of(label))
    return Broken(data, "case_002.nii.gz", r"label spacing \(1.5, 1, 3\) differs from the spacing \(1.5, 1, 2\)")


def _affine_mismatch(root: Path) -> Broken:
    data = nifti(root)
    label = Path(data.root) / "labels" / "case_003.nii.gz"
    moved = affine_of(label)
    moved[:3, 3] += 7.0
    write_nifti(label, np.asarray(nib.load(str(label)).dataobj), SPACING, affine=moved)
    return Broken(data, "case_003.nii.gz", "label affine differs from the affine of image")


def _label_out_of_range(root: Path) -> Broken:
    data = nifti(root)
    label = Path(data.root) / "labels" / "case_000.nii.gz"
    write_nifti(label, np.full((16, 16, 8), 5, np.uint8), SPACING, affine=affine_of(label))
    return Broken(data, "case_000.nii.gz", r"label values outside \[0, 3\): \[5\]")


def _mask_out_of_range(root: Path) -> Broken:
    data = image2d(root, num_classes=3, mask_style="index")
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(Path(data.root) / "masks" / "img_001.png")
    return Broken(data, "img_001.png", r"label values outside \[0, 3\): \[7\]")


def _nan_intensities(root: Path) -> Broken:
    data = nifti(root)
    image = Path(data.root) / "images" / "case_001.nii.gz"
    values = np.asarray(nib.load(str(image)).dataobj, dtype=np.float32)
    values[3, 3, 3] = np.nan
    write_nifti(image, values, SPACING, affine=affine_of(image))
    return Broken(data, "case_001.nii.gz", r"image contains NaN or Inf intensities \(1 values\)")


def _inf_intensities(root: Path) -> Broken:
    data = hdf5(root)
    path = first_train_slice(data)
    with h5py.File(path, "r+") as fh:
        image = fh["image"][()]
        image[0, :4] = np.inf
        fh["image"][...] = image
    return Broken(data, path.name, r"image contains NaN or Inf intensities \(4 values\)")


def _nifti_4d(root: Path) -> Broken:
    data = nifti(root)
    image = Path(data.root) / "images" / "case_002.nii.gz"
    values = np.asarray(nib.load(str(image)).dataobj, dtype=np.float32)
    write_nifti(image, np.stack([values] * 3, axis=-1), SPACING, affine=affine_of(image))
    return Broken(data, "case_002.nii.gz", r"image has 3 channel\(s\) but data.in_channels=1")


def _hdf5_4d(root: Path) -> Broken:
    data = hdf5(root)
    path = first_train_slice(data)
    write_h5(path, np.zeros((2, 2, 16, 16), np.float32), np.zeros((2, 2, 16, 16), np.uint8))
    return Broken(data, path.name, r"must be 2D \(H,W\) or 3D \(D,H,W\), got shape \(2, 2, 16, 16\)")


def _2d_where_3d(root: Path) -> Broken:
    data = nifti(root)
    for folder in ("images", "labels"):
        path = Path(data.root) / folder / "case_001.nii.gz"
        write_nifti(path, np.zeros((16, 16), np.float32 if folder == "images" else np.uint8), SPACING)
    return Broken(data, "case_001.nii.gz", "2D image where a 3D volume is expected", run={"arch": "unet3d"})


def _3d_where_2d(root: Path) -> Broken:
    data = image2d(root)
    images = Path(data.root) / "images"
    (images / "img_001.png").unlink()
    frames = [Image.fromarray(np.zeros((16, 16), np.uint8)) for _ in range(3)]
    frames[0].save(images / "img_001.tif", save_all=True, append_images=frames[1:])
    return Broken(data, "img_001.tif", r"3D file where 2D is expected \(3 frames")


def _empty_folder(root: Path) -> Broken:
    data = image2d(root)
    (Path(data.root) / "unlabeled").mkdir()
    data = dataclasses.replace(data, unlabeled_dir="unlabeled")
    return Broken(data, "unlabeled", "empty folder: no supported image files")


def _image_without_label(root: Path) -> Broken:
    data = image2d(root)
    (Path(data.root) / "masks" / "img_002.png").unlink()
    return Broken(data, "img_002.png", "missing mask: no mask for case 'img_002'")


def _label_without_image(root: Path) -> Broken:
    data = nifti(root)
    shutil.copy(Path(data.root) / "labels" / "case_000.nii.gz", Path(data.root) / "labels" / "ghost.nii.gz")
    return Broken(data, "ghost.nii.gz", "orphan label: no image with this case id")


def _not_utf8_name(root: Path) -> Broken:
    data = image2d(root)
    for folder in ("images", "masks"):
        base = os.fsencode(Path(data.root) / folder)
        os.rename(base + b"/img_001.png", base + b"/img_\xff01.png")
    return Broken(data, "img_\\xff01.png", "file name is not valid UTF-8")


def _unlabeled_semi_supervised(root: Path) -> Broken:
    data = hdf5(root, n_unlabeled=1)
    path = Path(data.root) / "data" / f"{(Path(data.root) / 'unlabeled.list').read_text().split()[0]}.h5"
    with h5py.File(path, "r+") as fh:
        image = fh["image"][()]
        image[2, 2] = np.nan
        fh["image"][...] = image
    return Broken(data, path.name, "NaN or Inf", role="unlabeled", run={"method": "mean_teacher"})


def _test_split(root: Path) -> Broken:
    data = hdf5(root)
    path = Path(data.root) / "data" / f"{(Path(data.root) / 'test.list').read_text().split()[0]}.h5"
    with h5py.File(path, "r+") as fh:
        fh["label"][...] = 9
    return Broken(data, path.name, r"label values outside \[0, 3\): \[9\]", role="test")


def _test_without_label(root: Path) -> Broken:
    data = nifti(root, n_test=1)
    (Path(data.root) / "test" / "labels" / "test_000.nii.gz").unlink()
    data = dataclasses.replace(data, test_labels_dir="")
    return Broken(data, "test_000.nii.gz", "has no label, and this split needs one", in_check=False, role="test")


DATA_CASES: dict[str, Callable[[Path], Broken]] = {
    "nifti-truncated": _nifti_truncated,
    "nifti-corrupt": _nifti_corrupt,
    "hdf5-truncated": _hdf5_truncated,
    "hdf5-corrupt": _hdf5_corrupt,
    "png-truncated": _png_truncated,
    "png-corrupt-mask": _png_corrupt,
    "jpeg-truncated": _jpeg_truncated,
    "jpeg-corrupt": _jpeg_corrupt,
    "shape-mismatch": _shape_mismatch,
    "spacing-mismatch": _spacing_mismatch,
    "affine-mismatch": _affine_mismatch,
    "label-out-of-range": _label_out_of_range,
    "mask-out-of-range": _mask_out_of_range,
    "nan-intensities": _nan_intensities,
    "inf-intensities": _inf_intensities,
    "nifti-4d-image": _nifti_4d,
    "hdf5-4d-image": _hdf5_4d,
    "2d-where-3d": _2d_where_3d,
    "3d-where-2d": _3d_where_2d,
    "empty-folder": _empty_folder,
    "image-without-label": _image_without_label,
    "label-without-image": _label_without_image,
    "non-utf8-name": _not_utf8_name,
    "unlabeled-split-semi-supervised": _unlabeled_semi_supervised,
    "test-split": _test_split,
    "test-case-without-label": _test_without_label,
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_stops_training_before_anything_is_written(tmp_path: Path, case: str) -> None:
    broken = DATA_CASES[case](tmp_path / "data")
    cfg = run_config(tmp_path, broken.data, **broken.run)
    with pytest.raises(BadCasesError) as info:
        Trainer(cfg, tmp_path / "runs" / "bad", show_progress=False).fit()
    lines = [line for line in info.value.problems if broken.name in line]
    assert lines, str(info.value)
    assert any(re.search(broken.problem, line) for line in lines), str(info.value)
    if broken.role is not None:
        assert any(line.startswith(f"[{broken.role}]") for line in lines), lines
    assert "nothing was trained" in str(info.value)
    assert not (tmp_path / "runs").exists()  # no run folder, no checkpoint, no splits.json
    if broken.in_check:
        report = check_dataset(broken.data)
        assert any(broken.name in p and re.search(broken.problem, p) for p in report.problems), report.problems


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    data = image2d(tmp_path / "data", n_cases=6)
    root = Path(data.root)
    truncate(root / "images" / "img_000.png")
    (root / "masks" / "img_003.png").unlink()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "ghost.png")
    with pytest.raises(BadCasesError) as info:
        Trainer(run_config(tmp_path, data), tmp_path / "runs" / "bad", show_progress=False).fit()
    text = str(info.value)
    assert len(info.value.problems) == 3, text
    for name, problem in (("img_000.png", "truncated"), ("img_003.png", "missing mask"), ("ghost.png", "orphan mask")):
        assert any(name in p and problem in p for p in info.value.problems), text
    assert "data.on_bad_case=exclude" in text


def test_the_cli_prints_the_list_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _not_utf8_name(tmp_path / "data")
    path = tmp_path / "run.yaml"
    path.write_text(run_config(tmp_path, broken.data).to_yaml())
    assert cli_main(["train", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "uncol: error:" in err and "img_\\xff01.png: file name is not valid UTF-8" in err
    assert cli_main(["data", "check", str(broken.data.root)]) == 1
    assert "img_\\xff01.png: file name is not valid UTF-8" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_supervised_run_says_it_does_not_read_unlabeled_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _unlabeled_semi_supervised(tmp_path / "data")
    trainer = Trainer(run_config(tmp_path, broken.data), tmp_path / "runs" / "sup", show_progress=False)
    trainer.setup()  # the broken unlabeled slice is not read by a supervised run ...
    trainer.tb.close()
    # ... and the run says so instead of passing over it in silence.
    assert "the 2 unlabeled case(s) of the split are not read" in capsys.readouterr().err  # 1 patient, 2 slices


# ----------------------------------------------------------------------------------------------------------
# Leaving bad cases out, and resuming


def test_exclude_leaves_bad_cases_out_and_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = image2d(tmp_path / "data", n_cases=6)
    root = Path(data.root)
    truncate(root / "images" / "img_001.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "ghost.png")
    cfg = run_config(tmp_path, data, data={"on_bad_case": "exclude"}, train={"iterations": 1})
    run = tmp_path / "runs" / "bad"
    Trainer(cfg, run, show_progress=False).fit()
    record = json.loads(RunPaths(run).excluded_cases.read_text())
    files = {Path(e["file"]).name: e for e in record["excluded"]}
    assert set(files) == {"img_001.png", "ghost.png"}
    assert "truncated" in files["img_001.png"]["problem"] and files["img_001.png"]["case_id"] == "img_001"
    assert files["ghost.png"]["role"] == "dataset" and "orphan mask" in files["ghost.png"]["problem"]
    splits = json.loads(RunPaths(run).splits.read_text())
    listed = [c["case_id"] for role in ("labeled", "unlabeled", "val", "test") for c in splits[role]]
    assert "img_001" not in listed and len(listed) == 5
    err = capsys.readouterr().err
    assert "left out 2 case(s)" in err and "img_001.png" in err and "ghost.png" in err


def test_exclude_cannot_hide_a_missing_folder(tmp_path: Path) -> None:
    broken = _empty_folder(tmp_path / "data")
    cfg = run_config(tmp_path, broken.data, data={"on_bad_case": "exclude"})
    with pytest.raises(BadCasesError, match="cannot be excluded") as info:
        Trainer(cfg, tmp_path / "runs" / "bad", show_progress=False).fit()
    assert any("unlabeled" in p and "empty folder" in p for p in info.value.problems)
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_file_broken_since_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    data = image2d(tmp_path / "data", n_cases=6)
    cfg = run_config(tmp_path, data, data={"on_bad_case": "exclude"}, train={"iterations": 3})
    run = tmp_path / "runs" / "r"
    Trainer(cfg, run, show_progress=False, stop_after=1).fit()
    before = files_of(run)
    assert "checkpoints/latest.pt" in before
    splits = json.loads(RunPaths(run).splits.read_text())
    labeled = Path(splits["labeled"][0]["image_path"])
    truncate(labeled)
    with pytest.raises(BadCasesError, match="splits are fixed since it started") as info:
        Trainer(cfg, run, resume=True, show_progress=False).fit()
    assert any(p.startswith("[labeled]") and labeled.name in p for p in info.value.problems)
    after = files_of(run)
    assert after == before  # nothing lost or rewritten, the good checkpoint included


# ----------------------------------------------------------------------------------------------------------
# Configuration files


YAML_CASES = {
    "wrong-type": ("train:\n  iterations: many\n", r"train\.iterations: expected an integer, got 'many'"),
    "unknown-key": ("train:\n  iteratons: 10\n", r"unknown option 'train\.iteratons'; valid options here: .*iterations"),
    "wrong-method-section": (
        "method:\n  name: supervised\n  mean_teacher:\n    ema_decay: 0.9\n",
        r"method\.mean_teacher: options of method 'mean_teacher', but method\.name=supervised",
    ),
    "method-option-outside-its-section": (
        "method:\n  name: mean_teacher\n  ema_decay: 0.9\n",
        r"unknown option 'method\.ema_decay'; the options of method 'mean_teacher' live in 'method\.mean_teacher\.ema_decay'",
    ),
    "not-a-mapping": ("[train, data]\n", "the top level must be a mapping of sections"),
    "invalid-yaml": ("train: [1, 2\n", "invalid YAML"),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_config_file_is_refused_by_name(tmp_path: Path, case: str) -> None:
    text, problem = YAML_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text if text.startswith("[") else f"name: r\noutput_dir: {tmp_path / 'runs'}\n{text}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ") and re.search(problem, str(info.value)), str(info.value)
    from uncol import api

    with pytest.raises(ConfigError, match=re.escape(str(path))):
        api.train(path, show_progress=False)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture
def trained_run(tmp_path: Path) -> tuple[Config, Path]:
    """A run stopped after 1 of 3 steps (``latest.pt`` and ``best.pt`` present), on a 2D image set."""
    data = image2d(tmp_path / "data", n_cases=6)
    cfg = run_config(tmp_path, data, train={"iterations": 3, "val_every": 1})
    run = tmp_path / "runs" / "r"
    Trainer(cfg, run, show_progress=False, stop_after=1).fit()
    assert RunPaths(run).best.exists()
    return cfg, run


class _WritesAFile:
    """What a tampered checkpoint holds: unpickling it would call ``Path.write_text``."""

    entry = "getattr"  # how pickle reaches a method: getattr(Path, "write_text")

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.target, "the payload ran"))


class _RunsCode:
    """The classic payload: unpickling it would ``exec`` Python source."""

    entry = "exec"

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.target)!r}, 'w').write('the payload ran')",))


@pytest.mark.parametrize("payload", [_WritesAFile, _RunsCode])
@pytest.mark.parametrize("which", ["latest", "best", "branch"])
def test_tampered_checkpoint_is_refused_and_its_payload_never_runs(
    trained_run: tuple[Config, Path], tmp_path: Path, payload: type, which: str
) -> None:
    cfg, run = trained_run
    paths = RunPaths(run)
    marker = tmp_path / "pwned.txt"
    target = paths.best if which == "best" else paths.latest
    state = torch.load(target, map_location="cpu", weights_only=True)
    torch.save({**state, "extra": payload(marker)}, target)
    before = files_of(run)
    with pytest.raises(UncolError, match=rf"{re.escape(str(target))}: refused: .*never runs code") as info:
        if which == "latest":
            Trainer(cfg, run, resume=True, show_progress=False).fit()
        elif which == "best":
            load_weights(run)
        else:
            Trainer(dataclasses.replace(cfg, name="b"), tmp_path / "runs" / "b", branch_from=target, show_progress=False).fit()
    assert f"the Python object '{payload.entry}'" in str(info.value)
    assert not marker.exists()
    assert files_of(run) == before
    assert not (tmp_path / "runs" / "b").exists()


def test_checkpoint_of_another_architecture(trained_run: tuple[Config, Path], tmp_path: Path) -> None:
    cfg, run = trained_run
    paths = RunPaths(run)
    other = build_network(dataclasses.replace(cfg.model, channels=[4, 8, 16]), 1, 2, [16, 16])
    # Resuming: modules of another network under this run's configuration.
    state = torch.load(paths.latest, map_location="cpu", weights_only=True)
    torch.save({**state, "modules": {"network": other.state_dict()}}, paths.latest)
    before = files_of(run)
    with pytest.raises(UncolError, match=rf"{re.escape(str(paths.latest))}: the weights of module 'network' do not fit") as info:
        Trainer(cfg, run, resume=True, show_progress=False).fit()
    assert re.search(r"\d+ unexpected: ", str(info.value)), str(info.value)
    assert files_of(run) == before
    # Evaluating: a weights file whose own configuration lies about its network.
    best = torch.load(paths.best, map_location="cpu", weights_only=True)
    torch.save({**best, "network": other.state_dict()}, paths.best)
    with pytest.raises(UncolError, match=rf"{re.escape(str(paths.best))}: the weights do not fit the unet2d network"):
        load_weights(run)
    # Evaluating: a consistent weights file of another run, copied into this run folder.
    wider = config_from_dict(cfg.to_dict(), ["model.channels=[4, 8, 16]"])
    torch.save({**best, "network": other.state_dict(), "config": wider.to_dict()}, paths.best)
    with pytest.raises(UncolError, match=r"weights of another network than this run's config.yaml: model.channels"):
        load_weights(run)


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path: Path) -> None:
    np.random.seed(3)
    state = capture_rng_state()
    expected = (np.random.random(4), torch.rand(4))
    path = tmp_path / "rng.pt"
    torch.save({"rng": state}, path)
    restore_rng_state(load_checkpoint(path)["rng"])
    assert np.array_equal(np.random.random(4), expected[0]) and torch.equal(torch.rand(4), expected[1])
    # Checkpoints written before the NumPy state was stored as plain data still load and resume alike.
    legacy = {**state, "numpy": np.random.get_state()}
    expected = (np.random.random(4), torch.rand(4))
    torch.save({"rng": legacy}, path)
    restore_rng_state(load_checkpoint(path)["rng"])
    assert np.array_equal(np.random.random(4), expected[0])


# ----------------------------------------------------------------------------------------------------------
# File permissions


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test, restoring it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_writes_respect_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int, file_mode: int, dir_mode: int
) -> None:
    umask(mask)
    path = atomic_write_json(tmp_path / "new" / "deeper" / "a.json", {"a": 1})
    assert path.stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "new").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "new" / "deeper").stat().st_mode & 0o777 == dir_mode
    os.chmod(path, 0o640)  # replacing a file keeps its mode, as writing into it would
    atomic_write_text(path, "{}")
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary file left behind


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_run_folder_respects_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int, file_mode: int, dir_mode: int
) -> None:
    data = image2d(tmp_path / "data")
    umask(mask)
    run = tmp_path / "runs" / "r"
    Trainer(run_config(tmp_path, data, train={"iterations": 1}), run, show_progress=False).fit()
    entries = [run, *run.rglob("*")]
    assert RunPaths(run).final.exists() and RunPaths(run).splits.exists()
    wrong = {str(p): oct(p.stat().st_mode & 0o777) for p in entries
             if p.stat().st_mode & 0o777 != (dir_mode if p.is_dir() else file_mode)}
    assert not wrong


# ----------------------------------------------------------------------------------------------------------
# Very long file names


def test_file_names_near_the_length_limit(tmp_path: Path) -> None:
    data = image2d(tmp_path / "data")
    long = "L" * 251  # + ".png": 255 bytes, the usual NAME_MAX
    for folder in ("images", "masks"):
        os.rename(Path(data.root) / folder / "img_001.png", Path(data.root) / folder / f"{long}.png")
    run = tmp_path / "runs" / "r"
    Trainer(run_config(tmp_path, data, train={"iterations": 1}), run, show_progress=False).fit()
    splits = json.loads(RunPaths(run).splits.read_text())
    assert long in [c["case_id"] for role in ("labeled", "val", "test") for c in splits[role]]
    # Writing a file of that name atomically (a prediction) works: the temporary name is shortened.
    reference = CaseData(long, np.zeros((1, 16, 16), np.float32), None, (1.0, 1.0), meta={"size": (16, 16)})
    out = write_mask(tmp_path / "pred" / f"{long}.png", np.ones((16, 16), np.uint8), reference)
    assert out.name == f"{long}.png" and np.asarray(Image.open(out)).max() == 1
    assert os.listdir(out.parent) == [out.name]


# ----------------------------------------------------------------------------------------------------------
# Prediction on files of one's own


def test_predict_names_each_bad_input_and_predicts_the_others(trained_run: tuple[Config, Path], tmp_path: Path) -> None:
    from uncol.api import predict

    _, run = trained_run
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = inputs / "good.png"
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(good)
    nan = np.full((16, 16), 0.5, np.float32)
    nan[2, 3] = np.nan
    Image.fromarray(nan, mode="F").save(inputs / "nan.tif")
    truncate(shutil.copy(good, inputs / "cut.png"), keep=0.3)
    result = predict(run, [inputs], tmp_path / "masks", show_progress=False)
    reasons = {f.input.name: f.reason for f in result.failures}
    assert set(reasons) == {"nan.tif", "cut.png"}, reasons
    assert "NaN or Inf intensities (1 values)" in reasons["nan.tif"] and "truncated" in reasons["cut.png"]
    assert [o.input.name for o in result.outputs] == ["good.png"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["good.png"]
