"""``uncol predict`` (uncol.prediction, uncol.inference): geometry, mask values, maps, TTA, failures.

Runs are written directly (config + untrained weights from ``build_network``), so no test trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fixtures_data import truncate, write_nifti
from uncol.atomic import atomic_torch_save, atomic_write_text
from uncol.cli import _MASK_VALUES, build_parser, main
from uncol.config import Config, config_from_dict
from uncol.data.io import read_image_file, read_mask
from uncol.data.readers.image2d import MASK_VALUES, class_palette, write_png_label
from uncol.data.transforms import normalize_intensity
from uncol.errors import ConfigError
from uncol.inference import flip_combinations, predict_labels, predict_probabilities
from uncol.metrics import compute_entropy
from uncol.models import build_network
from uncol.prediction import predict_files
from uncol.runs import CHECKPOINT_VERSION, RunPaths, load_weights

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_config(arch: str = "unet2d", in_channels: int = 1, num_classes: int = 3, **sections: dict) -> Config:
    patch = [16, 16, 16] if arch == "unet3d" else [32, 32]
    values: dict = {
        "name": "pred",
        "data": {"format": "nifti", "root": "unused", "in_channels": in_channels, "num_classes": num_classes},
        "model": {"arch": arch, "channels": [4, 8]},
        "train": {"patch_size": patch, "threads": 1, "device": "cpu"},
    }
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value}
    return config_from_dict(values)


def make_run(root: Path, cfg: Config, seed: int = 0) -> Path:
    """A run folder holding ``cfg`` and untrained (seeded) weights as its best checkpoint."""
    torch.manual_seed(seed)
    net = build_network(cfg.model, cfg.data.in_channels, cfg.data.num_classes, cfg.train.patch_size)
    paths = RunPaths(root)
    atomic_write_text(paths.config, cfg.to_yaml())
    state = {"version": CHECKPOINT_VERSION, "kind": "weights", "network": net.state_dict(), "config": cfg.to_dict()}
    atomic_torch_save(state, paths.best)
    return root


def gray_png(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A random grayscale PNG of ``size`` (H, W)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random(size) * 255).astype(np.uint8)).save(path)
    return path


def rotated_affine() -> np.ndarray:
    """A non-trivial voxel-to-world matrix: axes permuted and flipped, anisotropic, shifted."""
    return np.array([[0.0, -1.5, 0.0, 12.0], [1.2, 0.0, 0.0, -7.0], [0.0, 0.0, 2.0, 3.5], [0.0, 0.0, 0.0, 1.0]])


def volume(path: Path, shape: Sequence[int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_nifti(path, rng.normal(100, 20, shape).astype(np.float32), (1.2, 1.5, 2.0), affine=rotated_affine())


def expected_probabilities(run: Path, path: Path) -> np.ndarray:
    cfg, net, _ = load_weights(run)
    return predict_probabilities(net, read_image_file(path), cfg, CPU)


# -- geometry -----------------------------------------------------------------------------------------


def test_nifti_mask_entropy_and_probabilities_keep_the_input_geometry(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", make_config("unet3d"))
    src = volume(tmp_path / "in" / "scan.nii.gz", (20, 18, 12))  # larger than the 16^3 patch in x and y
    res = predict_files(run, [src], tmp_path / "out", show_progress=False, uncertainty=True, probabilities=True)
    assert res.ok and res.masks == [tmp_path / "out" / "scan.nii.gz"]
    out = res.outputs[0]
    assert out.entropy == tmp_path / "out" / "maps" / "scan_entropy.nii.gz"
    assert out.probabilities == tmp_path / "out" / "maps" / "scan_probabilities.nii.gz"
    ref = nib.load(str(src))
    for path in out.paths:
        img = nib.load(str(path))
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-6)
        assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(ref.affine) == ("A", "L", "S")
        assert img.header.get_zooms()[:3] == pytest.approx(ref.header.get_zooms()[:3])
        assert img.shape[:3] == ref.shape
    probs = expected_probabilities(run, src)
    mask = np.asarray(nib.load(str(out.mask)).dataobj)
    np.testing.assert_array_equal(mask, probs.argmax(0))
    stored = nib.load(str(out.probabilities)).get_fdata()
    assert stored.shape == (20, 18, 12, 3)  # class last
    np.testing.assert_allclose(stored, np.moveaxis(probs, 0, -1), atol=1e-6)
    entropy = nib.load(str(out.entropy)).get_fdata()
    np.testing.assert_allclose(entropy, compute_entropy(probs), atol=1e-5)
    assert 0 < entropy.max() <= math.log(3) + 1e-6


class PatchOnly(nn.Module):
    """A pointwise network that refuses any input but the training patch, and records its calls."""

    def __init__(self, patch: Sequence[int], in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.patch = tuple(patch)
        self.conv = nn.Conv3d(in_channels, num_classes, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert tuple(x.shape[2:]) == self.patch, f"window {tuple(x.shape[2:])} is not the patch {self.patch}"
        self.calls += 1
        return self.conv(x)


def test_3d_input_larger_than_the_patch_is_tiled_by_sliding_window(tmp_path: Path) -> None:
    cfg = make_config("unet3d", eval={"sw_batch_size": 1})
    torch.manual_seed(0)
    net = PatchOnly(cfg.train.patch_size, 1, 3).eval()
    data = read_image_file(volume(tmp_path / "big.nii.gz", (40, 24, 20)))
    probs = predict_probabilities(net, data, cfg, CPU)
    assert probs.shape == (3, 40, 24, 20)
    assert net.calls > 1  # several windows, each of the patch size
    # Blending pointwise predictions of overlapping windows gives the pointwise prediction back.
    x = torch.from_numpy(normalize_intensity(data.image, cfg.data.normalize))[None]
    with torch.no_grad():
        direct = torch.softmax(net.conv(x), dim=1)[0].numpy()
    np.testing.assert_allclose(probs, direct, atol=1e-5)


# -- 2D images ----------------------------------------------------------------------------------------


def test_png_and_jpeg_masks_keep_the_size_in_each_mask_values_mode(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", make_config(in_channels=3, data={"format": "image2d"}))
    rng = np.random.default_rng(1)
    jpg = tmp_path / "in" / "photo.jpg"
    jpg.parent.mkdir()
    Image.fromarray((rng.random((45, 37, 3)) * 255).astype(np.uint8)).save(jpg)
    png = tmp_path / "in" / "other.png"
    Image.fromarray((rng.random((30, 50, 3)) * 255).astype(np.uint8)).save(png)
    expected = {p.name: expected_probabilities(run, p).argmax(0) for p in (jpg, png)}
    for mode in MASK_VALUES:
        res = predict_files(run, [jpg, png], tmp_path / mode, show_progress=False, mask_values=mode)
        assert res.ok and [p.name for p in res.masks] == ["photo.png", "other.png"]
        for src, mask_path in zip((jpg, png), res.masks, strict=True):
            labels = expected[src.name]
            img = Image.open(mask_path)
            assert img.size == Image.open(src).size
            if mode == "index":
                assert img.mode == "L"
                np.testing.assert_array_equal(np.asarray(img), labels)
            elif mode == "scaled":  # 3 classes: 0, 128, 255
                np.testing.assert_array_equal(np.asarray(img), np.rint(labels * 127.5).astype(np.uint8))
            else:
                assert img.mode == "P"
                np.testing.assert_array_equal(np.asarray(img), labels)  # the pixels are still class ids
                colours = np.asarray(img.getpalette()[:9]).reshape(3, 3)
                assert len({tuple(c) for c in colours}) == 3 and tuple(colours[0]) == (0, 0, 0)
                np.testing.assert_array_equal(read_mask(mask_path)[0], labels)  # uncol reads it back


def test_png_mask_encodings_of_every_class(tmp_path: Path) -> None:
    from uncol.data.types import CaseData

    labels = np.arange(12, dtype=np.uint8).reshape(3, 4) % 5
    reference = CaseData("m", np.zeros((1, 3, 4), np.float32), None, (), meta={"size": (4, 3)})
    expected = {"index": labels, "scaled": np.rint(labels.astype(float) * 255 / 4), "palette": labels}
    for mode, values in expected.items():
        path = write_png_label(tmp_path / mode / "m.jpg", labels, reference, mask_values=mode, num_classes=5)
        assert path.suffix == ".png"  # never a lossy JPEG mask
        img = Image.open(path)
        np.testing.assert_array_equal(np.asarray(img), values)
        if mode == "palette":
            assert img.getpalette()[:15] == [v for rgb in class_palette(5) for v in rgb]
    assert len(set(class_palette(256))) == 256


def test_2d_entropy_png_and_probability_tiff(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", make_config(data={"format": "image2d"}))
    src = gray_png(tmp_path / "in" / "img.png", (26, 34))
    res = predict_files(run, [src], tmp_path / "out", show_progress=False, uncertainty=True, probabilities=True)
    out = res.outputs[0]
    assert (out.entropy.name, out.probabilities.name) == ("img_entropy.png", "img_probabilities.tif")
    probs = expected_probabilities(run, src)
    ent = Image.open(out.entropy)
    assert ent.mode.startswith("I;16") and ent.size == (34, 26)
    # 16-bit PNG holding the normalised entropy: H = value / 65535 * ln K.
    np.testing.assert_allclose(np.asarray(ent) / 65535 * math.log(3), compute_entropy(probs), atol=1e-4)
    tif = Image.open(out.probabilities)
    assert tif.n_frames == 3 and tif.mode == "F" and tif.size == (34, 26)
    for k in range(3):
        tif.seek(k)
        np.testing.assert_allclose(np.asarray(tif), probs[k], atol=1e-6)


# -- failures -----------------------------------------------------------------------------------------


def _mixed_folder(folder: Path) -> dict[str, Path]:
    good_png = gray_png(folder / "good.png", (20, 24))
    bad_png = truncate(gray_png(folder / "bad.png", (20, 24), seed=1), keep=0.4)
    good_nii = volume(folder / "vol.nii.gz", (20, 16, 3))
    bad_nii = truncate(volume(folder / "broken.nii.gz", (20, 16, 3)), keep=0.5)
    colour = folder / "colour.png"
    Image.fromarray((np.random.default_rng(2).random((20, 24, 3)) * 255).astype(np.uint8)).save(colour)
    (folder / "notes.txt").write_text("not an image")
    return {"good_png": good_png, "bad_png": bad_png, "good_nii": good_nii, "bad_nii": bad_nii, "colour": colour}


def test_corrupt_and_unfit_inputs_are_named_and_the_rest_written(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", make_config())
    files = _mixed_folder(tmp_path / "in")
    res = predict_files(run, [tmp_path / "in"], tmp_path / "out", show_progress=False, mask_values="index")
    assert not res.ok
    assert sorted(p.name for p in res.masks) == ["good.png", "vol.nii.gz"]
    failed = {f.input.name: f.reason for f in res.failures}
    assert set(failed) == {"bad.png", "broken.nii.gz", "colour.png"}
    assert "truncated" in failed["bad.png"] and "truncated" in failed["broken.nii.gz"]
    assert "3 channel(s) but the model expects 1" in failed["colour.png"]
    assert not (tmp_path / "out" / "bad.png").exists() and not (tmp_path / "out" / "colour.png").exists()
    assert nib.load(str(tmp_path / "out" / "vol.nii.gz")).shape == nib.load(str(files["good_nii"])).shape


def test_a_batch_that_fails_is_retried_input_by_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uncol.prediction as prediction

    real = prediction.predict_probabilities_batch

    def poisoned(network, cases, *args, **kwargs):
        if any(c.case_id == "poison" for c in cases):
            raise RuntimeError("cannot predict this one")
        return real(network, cases, *args, **kwargs)

    monkeypatch.setattr(prediction, "predict_probabilities_batch", poisoned)
    run = make_run(tmp_path / "run", make_config())
    inputs = [gray_png(tmp_path / "in" / f"{n}.png", (16, 20), seed=i) for i, n in enumerate(["a", "poison", "z"])]
    res = predict_files(run, inputs, tmp_path / "out", show_progress=False)
    assert [p.name for p in res.masks] == ["a.png", "z.png"]
    assert [(f.input.name, f.reason) for f in res.failures] == [("poison.png", "RuntimeError: cannot predict this one")]


def test_outputs_never_overwrite_inputs_or_each_other(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", make_config())
    a_png = gray_png(tmp_path / "in" / "a.png", (16, 16))
    a_jpg = tmp_path / "in" / "a.jpg"
    Image.open(a_png).save(a_jpg)
    res = predict_files(run, [a_png, a_jpg], tmp_path / "out", show_progress=False)
    assert res.masks == [tmp_path / "out" / "a.png"]
    assert [f.input for f in res.failures] == [a_jpg] and "mask of" in res.failures[0].reason
    vol = volume(tmp_path / "in" / "v.nii.gz", (16, 16, 2))
    before = vol.read_bytes()
    res = predict_files(run, [vol], tmp_path / "in", show_progress=False)
    assert not res.outputs and "overwrite an input" in res.failures[0].reason
    assert vol.read_bytes() == before


def test_cli_predict_exits_1_listing_failures_and_writes_the_rest(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run", make_config())
    _mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    args = ["predict", str(run), str(tmp_path / "in"), "--out", str(out), "--uncertainty", "--probabilities",
            "--tta", "--threads", "1", "--set", "eval.slice_batch_size=2", "--device", "cpu", "--quiet"]
    assert main(args) == 1
    captured = capsys.readouterr()
    for name in ("bad.png", "broken.nii.gz", "colour.png"):
        assert name in captured.err
    assert "3 input(s) failed" in captured.err and "2 mask(s) written" in captured.out
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["good.png", "vol.nii.gz"]
    assert Image.open(out / "good.png").mode == "P"  # the default: a palette PNG
    assert sorted(p.name for p in (out / "maps").iterdir()) == [
        "good_entropy.png", "good_probabilities.tif", "vol_entropy.nii.gz", "vol_probabilities.nii.gz",
    ]
    assert main(["predict", str(run), str(tmp_path / "in" / "good.png"), "--out", str(tmp_path / "o2"), "--quiet"]) == 0
    assert main(["predict", str(run), str(tmp_path / "nothing"), "--out", str(tmp_path / "o3")]) == 2
    assert "nothing" in capsys.readouterr().err


def test_cli_options() -> None:
    assert set(_MASK_VALUES) == set(MASK_VALUES)
    parser = build_parser()
    a = parser.parse_args(["evaluate", "RUN", "--threads", "3"])
    assert a.threads == 3
    a = parser.parse_args(["predict", "RUN", "x.png", "--out", "o"])
    assert (a.mask_values, a.threads, a.overrides, a.tta) == ("palette", None, [], False)
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "RUN", "x.png", "--out", "o", "--threads", "0"])


# -- options: overrides, threads ------------------------------------------------------------------


def test_overrides_and_threads(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", make_config(train={"threads": 1}))
    src = gray_png(tmp_path / "a.png", (16, 16))
    res = predict_files(run, [src], tmp_path / "o1", show_progress=False, overrides=["eval.slice_batch_size=1"])
    assert res.ok and res.threads == 1 and torch.get_num_threads() == 1
    res = predict_files(run, [src], tmp_path / "o2", show_progress=False, threads=2)
    assert res.threads == 2 and torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match="model.channels"):
        predict_files(run, [src], tmp_path / "o3", show_progress=False, overrides=["model.channels=[2,4]"])
    with pytest.raises(ConfigError, match="eval.nope"):
        predict_files(run, [src], tmp_path / "o3", show_progress=False, overrides=["eval.nope=1"])
    with pytest.raises(ConfigError, match="tta_axes"):
        predict_files(run, [src], tmp_path / "o3", show_progress=False, tta=True, tta_axes=[2])
    with pytest.raises(ConfigError, match="mask_values"):
        predict_files(run, [src], tmp_path / "o3", show_progress=False, mask_values="rainbow")


# -- test-time augmentation ----------------------------------------------------------------------------


def _flip(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(a, axis=tuple(x + 1 for x in axes)) if axes else a


@pytest.mark.parametrize(
    ("arch", "shape", "tta_axes", "case_axes"),
    [
        ("unet2d", (1, 26, 30), None, (0, 1)),  # a 2D image
        ("unet2d", (1, 20, 18, 3), None, (0, 1)),  # a volume sliced along z: the in-plane axes
        ("unet2d", (1, 20, 18, 3), (1,), (1,)),  # a subset
        ("unet3d", (1, 18, 16, 12), None, (0, 1, 2)),
    ],
)
def test_tta_is_the_average_of_the_flipped_predictions(tmp_path, arch, shape, tta_axes, case_axes) -> None:
    from uncol.data.types import CaseData

    cfg = make_config(arch)
    torch.manual_seed(0)
    net = build_network(cfg.model, 1, 3, cfg.train.patch_size).eval()
    image = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    data = CaseData("c", image, None, (1.0,) * (len(shape) - 1), slice_axis=2)
    tta = predict_probabilities(net, data, cfg, CPU, tta=True, tta_axes=tta_axes)
    manual = []
    for flip in flip_combinations(case_axes):
        flipped = CaseData("c", np.ascontiguousarray(_flip(image, flip)), None, data.spacing, slice_axis=2)
        manual.append(_flip(predict_probabilities(net, flipped, cfg, CPU), flip))
    assert len(manual) == 2 ** len(case_axes)
    np.testing.assert_allclose(tta, np.mean(manual, axis=0), atol=1e-5)
    plain = predict_probabilities(net, data, cfg, CPU)
    assert not np.allclose(tta, plain, atol=1e-4)  # the flips do change this network's output
    assert predict_labels(net, data, cfg, CPU, tta=True, tta_axes=tta_axes).shape == shape[1:]


@pytest.mark.parametrize("resize_2d", [True, False])
def test_tta_changes_nothing_for_a_flip_equivariant_network(resize_2d: bool) -> None:
    from uncol.data.types import CaseData

    cfg = make_config(train={"resize_2d": resize_2d})
    torch.manual_seed(0)
    net = nn.Conv2d(1, 3, 1).eval()  # pointwise: flipping the input flips the output
    image = np.random.default_rng(0).normal(0, 1, (1, 40, 36)).astype(np.float32)
    data = CaseData("c", image, None, (1.0, 1.0))
    plain = predict_probabilities(net, data, cfg, CPU)
    assert plain.std() > 0.01  # not a constant map
    np.testing.assert_allclose(predict_probabilities(net, data, cfg, CPU, tta=True), plain, atol=1e-5)


def test_batched_prediction_equals_one_by_one(tmp_path: Path) -> None:
    from uncol.inference import predict_probabilities_batch

    cfg = make_config(eval={"slice_batch_size": 3})
    torch.manual_seed(0)
    net = build_network(cfg.model, 1, 3, cfg.train.patch_size).eval()
    cases = [read_image_file(gray_png(tmp_path / f"{i}.png", size, seed=i)) for i, size in enumerate([(20, 30), (33, 17), (32, 32), (9, 40)])]
    batched = predict_probabilities_batch(net, cases, cfg, CPU)
    for case, probs in zip(cases, batched, strict=True):
        assert probs.shape == (3, *case.spatial_shape)
        np.testing.assert_allclose(probs, predict_probabilities(net, case, cfg, CPU), atol=1e-5)
