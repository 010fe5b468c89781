"""Single-file reading and writing: uncol.data.io."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from fixtures_data import blob_label, mask_image, truncate, write_h5, write_nifti
from uncol.data.io import read_image_file, read_mask, write_mask
from uncol.data.readers.common import as_label, case_id_of
from uncol.errors import DataError

RNG = np.random.default_rng(0)


def test_case_id_strips_double_extension() -> None:
    assert case_id_of("a/b/case_001.nii.gz") == "case_001"
    assert case_id_of("x.y.png") == "x.y"
    assert case_id_of("PATIENT.H5") == "PATIENT"


# -- NIfTI ----------------------------------------------------------------------------------


def test_nifti_image_keeps_order_spacing_affine_header(tmp_path: Path) -> None:
    vol = RNG.normal(size=(10, 12, 7)).astype(np.float32)
    path = write_nifti(tmp_path / "vol.nii.gz", vol, spacing=(1.5, 0.8, 3.0))
    data = read_image_file(path)
    assert data.case_id == "vol"
    assert data.image.shape == (1, 10, 12, 7) and data.image.dtype == np.float32
    np.testing.assert_allclose(data.image[0], vol)
    assert data.spacing == pytest.approx((1.5, 0.8, 3.0))
    np.testing.assert_allclose(data.affine, nib.load(path).affine)
    assert isinstance(data.meta["nifti_header"], nib.Nifti1Header)
    assert data.slice_axis == 2
    assert data.label is None


def test_nifti_4d_channels_first(tmp_path: Path) -> None:
    vol = RNG.normal(size=(8, 9, 5, 3)).astype(np.float32)
    data = read_image_file(write_nifti(tmp_path / "multi.nii", vol))
    assert data.image.shape == (3, 8, 9, 5)
    np.testing.assert_allclose(data.image[2], vol[..., 2])


def test_nifti_float_label_with_integer_values_accepted(tmp_path: Path) -> None:
    label = blob_label((10, 10, 6), 3, RNG).astype(np.float32)
    out, spacing = read_mask(write_nifti(tmp_path / "lab.nii.gz", label, spacing=(2.0, 2.0, 1.0)))
    assert np.issubdtype(out.dtype, np.integer)
    np.testing.assert_array_equal(out, label.astype(int))
    assert spacing == pytest.approx((2.0, 2.0, 1.0))


def test_nifti_non_integer_label_rejected(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "soft.nii.gz", np.full((4, 4, 4), 0.5, dtype=np.float32))
    with pytest.raises(DataError, match="soft.nii.gz.*non-integer"):
        read_mask(path)


def test_truncated_nifti_names_file(tmp_path: Path) -> None:
    path = truncate(write_nifti(tmp_path / "broken.nii.gz", RNG.normal(size=(20, 20, 20)).astype(np.float32)))
    with pytest.raises(DataError, match="broken.nii.gz.*truncated"):
        read_image_file(path)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothere.nii.gz.*not found"):
        read_image_file(tmp_path / "nothere.nii.gz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt.*unsupported file type"):
        read_image_file(tmp_path / "notes.txt")


def test_write_nifti_mask_keeps_geometry(tmp_path: Path) -> None:
    affine = np.array([[0.0, -1.2, 0, 30], [0.9, 0, 0, -4], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    src = write_nifti(tmp_path / "img.nii.gz", RNG.normal(size=(9, 11, 5)).astype(np.float32), affine=affine)
    ref = read_image_file(src)
    label = blob_label((9, 11, 5), 3, RNG)
    out = write_mask(tmp_path / "pred" / "img.nii.gz", label, ref)
    assert out == tmp_path / "pred" / "img.nii.gz"
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, nib.load(src).affine, atol=1e-6)
    assert written.header.get_zooms() == pytest.approx(nib.load(src).header.get_zooms())
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), label)
    assert not list((tmp_path / "pred").glob(".*tmp"))  # no temporary file left behind


def test_write_nifti_many_classes_uses_int16(tmp_path: Path) -> None:
    ref = read_image_file(write_nifti(tmp_path / "img.nii", np.zeros((4, 4, 4), np.float32)))
    label = np.full((4, 4, 4), 300, dtype=np.int64)
    written = nib.load(write_mask(tmp_path / "out.nii", label, ref))
    assert written.get_data_dtype() == np.int16
    assert int(np.asanyarray(written.dataobj).max()) == 300


def test_write_mask_shape_mismatch(tmp_path: Path) -> None:
    ref = read_image_file(write_nifti(tmp_path / "img.nii", np.zeros((4, 4, 4), np.float32)))
    with pytest.raises(DataError, match="out.nii.*differs"):
        write_mask(tmp_path / "out.nii", np.zeros((4, 4, 3), np.uint8), ref)


# -- HDF5 -----------------------------------------------------------------------------------


def test_hdf5_2d_and_3d(tmp_path: Path) -> None:
    img2 = RNG.random((20, 24)).astype(np.float32)
    data = read_image_file(write_h5(tmp_path / "s.h5", img2, np.zeros((20, 24), np.uint8)))
    assert data.image.shape == (1, 20, 24) and data.spacing == (1.0, 1.0)
    img3 = RNG.random((5, 20, 24)).astype(np.float32)
    data = read_image_file(write_h5(tmp_path / "v.h5", img3))
    assert data.image.shape == (1, 5, 20, 24) and data.slice_axis == 0 and data.affine is None


def test_hdf5_truncated_and_missing_key(tmp_path: Path) -> None:
    path = truncate(write_h5(tmp_path / "cut.h5", RNG.random((64, 64)).astype(np.float32)))
    with pytest.raises(DataError, match="cut.h5.*truncated"):
        read_image_file(path)
    nolabel = write_h5(tmp_path / "nolabel.h5", RNG.random((8, 8)).astype(np.float32))
    with pytest.raises(DataError, match="nolabel.h5.*no label dataset 'label'"):
        read_mask(nolabel)


def test_write_hdf5_mask(tmp_path: Path) -> None:
    ref = read_image_file(write_h5(tmp_path / "v.h5", RNG.random((3, 8, 8)).astype(np.float32)))
    label = blob_label((3, 8, 8), 4, RNG)
    out = write_mask(tmp_path / "p.h5", label, ref)
    with h5py.File(out) as fh:
        np.testing.assert_array_equal(fh["label"][()], label)


# -- 2D images ------------------------------------------------------------------------------


def test_gray_rgb_rgba_palette_images(tmp_path: Path) -> None:
    gray = (RNG.random((10, 14)) * 255).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    data = read_image_file(tmp_path / "g.png")
    assert data.image.shape == (1, 10, 14)
    np.testing.assert_array_equal(data.image[0], gray)
    assert data.meta["size"] == (14, 10) and data.meta["mode"] == "L"

    rgba = (RNG.random((10, 14, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c.png")
    data = read_image_file(tmp_path / "c.png")
    assert data.image.shape == (3, 10, 14)
    np.testing.assert_array_equal(data.image[1], rgba[..., 1])

    mask_image(np.eye(6, dtype=np.uint8), "palette").save(tmp_path / "p.gif")
    data = read_image_file(tmp_path / "p.gif")
    assert data.image.shape == (3, 6, 6)
    assert data.image[0, 0, 0] == 255  # palette colour of index 1 is red


def test_16bit_tiff_image(tmp_path: Path) -> None:
    arr = (RNG.random((7, 9)) * 60000).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.tif")
    data = read_image_file(tmp_path / "deep.tif")
    np.testing.assert_array_equal(data.image[0], arr.astype(np.float32))


def test_multiframe_tiff_is_3d(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((6, 6), v, np.uint8)) for v in (1, 2, 3)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(DataError, match="stack.tif.*3D file where 2D is expected"):
        read_image_file(tmp_path / "stack.tif")


def test_truncated_png(tmp_path: Path) -> None:
    Image.fromarray((RNG.random((64, 64)) * 255).astype(np.uint8)).save(tmp_path / "half.png")
    with pytest.raises(DataError, match="half.png.*truncated"):
        read_image_file(truncate(tmp_path / "half.png"))


@pytest.mark.parametrize("style", ["binary", "index", "palette", "rgb"])
def test_mask_styles_auto(tmp_path: Path, style: str) -> None:
    label = blob_label((16, 20), 2 if style == "binary" else 4, RNG)
    mask_image(label, style).save(tmp_path / "m.png")  # type: ignore[arg-type]
    out, spacing = read_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(out, label)
    assert spacing is None


def test_mask_modes_explicit(tmp_path: Path) -> None:
    label = blob_label((16, 20), 3, RNG)
    mask_image(label, "index").save(tmp_path / "i.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "i.png", mask_mode="index")[0], label)
    np.testing.assert_array_equal(read_mask(tmp_path / "i.png", mask_mode="binary")[0], np.zeros_like(label))
    with pytest.raises(DataError, match="i.png.*not a palette"):
        read_mask(tmp_path / "i.png", mask_mode="palette")
    mask_image(label, "palette").save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png", mask_mode="palette")[0], label)


def test_colour_mask_rejected_as_index(tmp_path: Path) -> None:
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[2:5, 2:5] = (200, 10, 10)
    Image.fromarray(arr).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour.png.*R, G, B differ"):
        read_mask(tmp_path / "colour.png", mask_mode="index")
    # binary decoding accepts it: any channel above 127 is foreground
    assert read_mask(tmp_path / "colour.png", mask_mode="binary")[0].sum() == 9


def test_jpeg_mask_thresholded(tmp_path: Path) -> None:
    label = blob_label((32, 32), 2, RNG)
    mask_image(label, "binary").save(tmp_path / "m.jpg", quality=60)
    raw = np.asarray(Image.open(tmp_path / "m.jpg"))
    assert not np.isin(raw, (0, 255)).all()  # compression noise is really there
    for mode in ("auto", "binary"):
        out, _ = read_mask(tmp_path / "m.jpg", mask_mode=mode)
        assert set(np.unique(out)) <= {0, 1}
        assert (out != label).mean() < 0.02
    with pytest.raises(DataError, match="m.jpg.*JPEG"):
        read_mask(tmp_path / "m.jpg", mask_mode="index")


def test_write_png_mask_same_size_and_jpg_becomes_png(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(tmp_path / "photo.jpg")
    ref = read_image_file(tmp_path / "photo.jpg")
    label = blob_label((10, 14), 3, RNG)
    out = write_mask(tmp_path / "out" / "photo.jpg", label, ref)
    assert out == tmp_path / "out" / "photo.png"
    written = Image.open(out)
    assert written.format == "PNG" and written.size == (14, 10)
    np.testing.assert_array_equal(np.asarray(written), label)
    np.testing.assert_array_equal(read_mask(out, mask_mode="index")[0], label)


def test_as_label_rejects_nan() -> None:
    with pytest.raises(DataError, match="x.nii.*NaN"):
        as_label(np.array([0.0, np.nan]), "x.nii")
