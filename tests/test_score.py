"""``uncol.score`` (uncol.scoring) on folders and files of NIfTI and PNG label maps built on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from uncol.cli import main
from uncol.errors import DataError
from uncol.scoring import score, write_json


def _box(shape: tuple[int, ...], start: tuple[int, ...], size: tuple[int, ...], value: int = 1) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = value
    return label


def _nifti(path: Path, label: np.ndarray, zooms: tuple[float, ...] = (1.0, 1.0, 3.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), np.diag([*zooms, 1.0])), path)
    return path


def _png(path: Path, label: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def nifti_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Case a: class 1 shifted one slice (3 mm), class 2 exact. Case b: class 1 exact, no class 2."""
    shape = (20, 20, 10)
    gt_a = _box(shape, (4, 4, 2), (8, 8, 4)) + _box(shape, (14, 14, 2), (4, 4, 4), 2)
    pred_a = _box(shape, (4, 4, 3), (8, 8, 4)) + _box(shape, (14, 14, 2), (4, 4, 4), 2)
    gt_b = _box(shape, (2, 2, 2), (6, 6, 6))
    _nifti(tmp_path / "gt" / "a.nii.gz", gt_a)
    _nifti(tmp_path / "gt" / "b.nii.gz", gt_b)
    _nifti(tmp_path / "pred" / "a.nii.gz", pred_a)
    _nifti(tmp_path / "pred" / "b.nii.gz", gt_b)
    (tmp_path / "pred" / "notes.txt").write_text("not a label file")  # ignored
    return tmp_path / "pred", tmp_path / "gt"


def test_nifti_folders_use_header_spacing(nifti_dirs: tuple[Path, Path]) -> None:
    pred, gt = nifti_dirs
    out = score(pred, gt)
    assert set(out) == {"convention", "cases", "summary", "empty_cases", "distance_unit", "failures"}
    assert out["convention"] == "standard"
    assert out["distance_unit"] == "mm" and out["failures"] == []  # NIfTI headers carry spacing
    assert [c["case"] for c in out["cases"]] == ["a", "b"]
    a1 = out["cases"][0]["metrics"]["1"]
    assert a1["dice"] == pytest.approx(0.75)  # 3 of 4 slices overlap
    assert a1["jaccard"] == pytest.approx(3 / 5)
    assert a1["hd95"] == pytest.approx(3.0)  # one slice of 3 mm (header zooms)
    assert out["cases"][0]["metrics"]["2"] == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    # num_classes inferred as 3; class 2 is absent from both sides of case b: skipped, counted.
    assert out["cases"][1]["metrics"]["2"] == {"dice": None, "jaccard": None, "hd95": None, "asd": None}
    assert out["summary"]["2"]["dice"] == {"mean": 1.0, "std": 0.0, "n": 1}
    assert out["summary"]["1"]["hd95"]["mean"] == pytest.approx(1.5)
    assert set(out["summary"]["mean"]) == {"dice", "jaccard", "hd95", "asd"}
    assert set(out["summary"]["mean"]["dice"]) == {"mean", "std", "n"}
    assert out["empty_cases"] == {
        "1": {"both": 0, "pred_only": 0, "ref_only": 0},
        "2": {"both": 1, "pred_only": 0, "ref_only": 0},
        "total": 1,
    }
    json.dumps(out, allow_nan=False)


def test_spacing_override_convention_and_policies(nifti_dirs: tuple[Path, Path]) -> None:
    pred, gt = nifti_dirs
    out = score(pred, gt, spacing=(1.0, 1.0, 1.0))
    assert out["cases"][0]["metrics"]["1"]["hd95"] == pytest.approx(1.0)
    out = score(pred, gt, convention="medpy")  # voxel units, and the missing class scores 0
    assert out["convention"] == "medpy"
    assert out["cases"][0]["metrics"]["1"]["hd95"] == pytest.approx(1.0)
    assert out["cases"][1]["metrics"]["2"] == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0}
    out = score(pred, gt, empty_both="perfect", num_classes=4)
    assert out["cases"][1]["metrics"]["2"] == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    assert out["empty_cases"]["3"] == {"both": 2, "pred_only": 0, "ref_only": 0}
    assert out["summary"]["3"]["dice"] == {"mean": 1.0, "std": 0.0, "n": 2}


def test_png_folders(tmp_path: Path) -> None:
    gt = _box((30, 30), (5, 5), (10, 10)) + _box((30, 30), (20, 20), (5, 5), 2)
    pred = _box((30, 30), (5, 7), (10, 10))  # class 1 shifted 2 columns, class 2 missed
    _png(tmp_path / "gt" / "img_01.png", gt)
    _png(tmp_path / "pred" / "img_01.png", pred)
    out = score(tmp_path / "pred", tmp_path / "gt")
    m = out["cases"][0]["metrics"]
    assert m["1"]["dice"] == pytest.approx(0.8)
    assert m["1"]["hd95"] == pytest.approx(2.0)  # PNG has no spacing: 1.0 per axis
    assert m["2"] == {"dice": 0.0, "jaccard": 0.0, "hd95": None, "asd": None}
    assert out["empty_cases"]["2"]["ref_only"] == 1
    anisotropic = score(tmp_path / "pred", tmp_path / "gt", spacing=(1.0, 2.5))
    assert anisotropic["cases"][0]["metrics"]["1"]["hd95"] == pytest.approx(5.0)  # 2 columns of 2.5


def test_single_files(tmp_path: Path) -> None:
    gt = _png(tmp_path / "gt.png", _box((16, 16), (2, 2), (6, 6)))
    pred = _png(tmp_path / "pred.png", _box((16, 16), (2, 2), (6, 6)))
    out = score(pred, gt)
    assert out["cases"] == [
        {"case": "gt", "metrics": {"1": {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}}}
    ]


def test_unmatched_cases_fail_alone(tmp_path: Path) -> None:
    label = _box((8, 8), (1, 1), (3, 3))
    for name in ("a", "b"):
        _png(tmp_path / "gt" / f"{name}.png", label)
    for name in ("a", "c"):
        _png(tmp_path / "pred" / f"{name}.png", label)
    out = score(tmp_path / "pred", tmp_path / "gt")
    assert [c["case"] for c in out["cases"]] == ["a"]
    assert out["failures"] == [
        {"case": "b", "prediction": None, "reference": str(tmp_path / "gt" / "b.png"),
         "error": f"no prediction for this case in {tmp_path / 'pred'}"},
        {"case": "c", "prediction": str(tmp_path / "pred" / "c.png"), "reference": None,
         "error": f"no ground-truth file for this case in {tmp_path / 'gt'}"},
    ]


def test_shape_mismatch_names_files_and_shapes(tmp_path: Path) -> None:
    gt = _nifti(tmp_path / "gt" / "a.nii.gz", _box((10, 10, 4), (2, 2, 1), (3, 3, 2)))
    pred = _nifti(tmp_path / "pred" / "a.nii.gz", _box((10, 12, 4), (2, 2, 1), (3, 3, 2)))
    with pytest.raises(DataError) as info:  # the only case fails: nothing to report
        score(tmp_path / "pred", tmp_path / "gt")
    msg = str(info.value)
    assert "no case could be scored" in msg
    assert str(pred) in msg and str(gt) in msg
    assert "(10, 12, 4)" in msg and "(10, 10, 4)" in msg


def test_a_corrupt_file_fails_its_case_only(tmp_path: Path, nifti_dirs: tuple[Path, Path], capsys) -> None:
    pred, gt = nifti_dirs
    bad = pred / "b.nii.gz"
    bad.write_bytes(bad.read_bytes()[:60])  # a download cut short
    out = score(pred, gt)
    assert [c["case"] for c in out["cases"]] == ["a"]
    assert len(out["failures"]) == 1
    failure = out["failures"][0]
    assert failure["case"] == "b" and failure["prediction"] == str(bad) and failure["reference"] == str(gt / "b.nii.gz")
    assert str(bad) in failure["error"] and "truncated" in failure["error"]
    report = tmp_path / "s.json"
    assert main(["score", str(pred), str(gt), "--json", str(report)]) == 1
    err = capsys.readouterr().err
    assert "1 case(s) could not be scored" in err and "b.nii.gz" in err
    assert json.loads(report.read_text())["failures"][0]["case"] == "b"
    assert main(["score", str(pred / "a.nii.gz"), str(gt / "a.nii.gz")]) == 0


def test_labels_out_of_range_fail_their_case(nifti_dirs: tuple[Path, Path]) -> None:
    pred, gt = nifti_dirs
    out = score(pred, gt, num_classes=2)  # case a holds class 2, case b does not
    assert [c["case"] for c in out["cases"]] == ["b"]
    assert [f["case"] for f in out["failures"]] == ["a"] and "num_classes=2" in out["failures"][0]["error"]


def test_distance_units(tmp_path: Path, nifti_dirs: tuple[Path, Path], capsys) -> None:
    _png(tmp_path / "gt_png" / "x.png", _box((30, 30), (5, 5), (10, 10)))
    _png(tmp_path / "pred_png" / "x.png", _box((30, 30), (5, 7), (10, 10)))
    pngs = (tmp_path / "pred_png", tmp_path / "gt_png")
    assert score(*pngs)["distance_unit"] == "px"  # 2D image files store no spacing
    assert score(*pngs, spacing=(0.5, 0.5))["distance_unit"] == "mm"
    assert score(*nifti_dirs)["distance_unit"] == "mm"
    assert score(*nifti_dirs, convention="medpy")["distance_unit"] == "vox"
    assert main(["score", *map(str, pngs)]) == 0
    out = capsys.readouterr().out
    assert "HD95 (px)" in out and "ASD (px)" in out and "mm" not in out
    assert main(["score", *map(str, nifti_dirs)]) == 0
    assert "HD95 (mm)" in capsys.readouterr().out


def test_input_errors(tmp_path: Path, nifti_dirs: tuple[Path, Path]) -> None:
    pred, gt = nifti_dirs
    with pytest.raises(DataError, match="no case could be scored.*spacing"):
        score(pred, gt, spacing=(1.0, 1.0))
    with pytest.raises(DataError, match="both be files or both be folders"):
        score(pred / "a.nii.gz", gt)
    with pytest.raises(DataError, match="no such file"):
        score(tmp_path / "missing", gt)
    with pytest.raises(DataError, match="convention"):
        score(pred, gt, convention="nnunet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no label files"):
        score(tmp_path / "empty", gt)


def test_write_json(tmp_path: Path, nifti_dirs: tuple[Path, Path]) -> None:
    out = score(*nifti_dirs)
    dest = tmp_path / "reports" / "score.json"
    assert write_json(out, dest) == dest
    assert json.loads(dest.read_text()) == out
    write_json({"convention": "medpy"}, dest)  # replaces the previous report
    assert json.loads(dest.read_text()) == {"convention": "medpy"}
    assert [p.name for p in dest.parent.iterdir()] == ["score.json"]  # no temporary file left
