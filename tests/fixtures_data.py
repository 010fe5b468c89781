"""Builders of tiny synthetic datasets, written at test time into temporary folders.

Every builder writes one of the layouts uncol reads and returns a :class:`DataConfig` pointing at
it, so tests of any layer (readers, training, evaluation) can run on real files without committing
data. The images are learnable: each class is a blob with its own mean intensity plus noise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import h5py
import nibabel as nib
import numpy as np
from PIL import Image

from uncol.config import DataConfig


def blob_label(shape: Sequence[int], num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A label map in which every class 1..K-1 is one ellipsoidal blob (all classes present)."""
    shape = tuple(int(s) for s in shape)
    label = np.zeros(shape, dtype=np.uint8)
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    n_fg = max(1, num_classes - 1)
    for k in range(1, num_classes):
        # Class k lives in band k of the first axis so that no blob is hidden by another.
        lo = (k - 1) * shape[0] / n_fg
        center = [lo + shape[0] / n_fg / 2] + [s / 2 + rng.uniform(-s / 8, s / 8) for s in shape[1:]]
        radii = [max(1.5, shape[0] / n_fg / 2.5)] + [max(1.5, s / 4) for s in shape[1:]]
        dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True))
        label[dist <= 1.0] = k
    return label


def blob_image(label: np.ndarray, rng: np.random.Generator, scale: float = 100.0) -> np.ndarray:
    """Intensities ``scale * (class + 1)`` plus Gaussian noise, float32."""
    return (scale * (label.astype(np.float32) + 1.0) + rng.normal(0, scale / 10, label.shape)).astype(np.float32)


def write_nifti(path: Path, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), affine: np.ndarray | None = None) -> Path:
    """Write ``array`` as NIfTI with the given spacing (or full affine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if affine is None:
        affine = np.diag([*list(spacing)[:3], 1.0])
        affine[:3, 3] = [-10.0, 5.0, 2.5]  # a non-trivial origin, so that tests notice a lost affine
    img = nib.Nifti1Image(array, affine)
    img.header.set_zooms(tuple(spacing)[: array.ndim] + (1.0,) * max(0, array.ndim - len(spacing)))
    nib.save(img, str(path))
    return path


def write_h5(path: Path, image: np.ndarray, label: np.ndarray | None = None) -> Path:
    """Write an SSL4MIS-style HDF5 case (datasets ``image`` and, if given, ``label``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("image", data=image)
        if label is not None:
            fh.create_dataset("label", data=label)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its size (a download or copy that stopped half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def make_nifti_dataset(
    root: Path,
    n_cases: int = 6,
    shape: Sequence[int] = (24, 24, 16),
    num_classes: int = 3,
    *,
    layout: Literal["folders", "msd", "nnunet"] = "folders",
    channels: int = 1,
    spacing: Sequence[float] = (1.5, 1.0, 2.0),
    n_test: int = 0,
    n_unlabeled: int = 0,
    seed: int = 0,
) -> DataConfig:
    """A NIfTI dataset of ``n_cases`` labeled volumes ``case_000``, ``case_001``, ...

    Args:
        root: folder to create the dataset in.
        n_cases: labeled training cases.
        shape: volume shape (x, y, z).
        num_classes: classes including background (every class appears in every case).
        layout: ``folders`` (``images/`` + ``labels/``, identical names, as Hippocampus),
            ``msd`` (``imagesTr/`` + ``labelsTr/`` + MSD ``dataset.json``) or ``nnunet``
            (``imagesTr/case_000_0000.nii.gz`` + ``labelsTr/case_000.nii.gz`` + nnU-Net v2 ``dataset.json``;
            ``channels`` > 1 writes ``_0001``... files).
        channels: image channels (nnunet: separate files; others: a 4D image).
        spacing: voxel size written in the headers.
        n_test: test cases in ``imagesTs``/``labelsTs`` (``test/images``, ``test/labels`` for folders).
        n_unlabeled: extra unlabeled images in ``unlabeled/``.
        seed: seed of the synthetic content.
    """
    rng = np.random.default_rng(seed)
    if layout == "folders":
        dirs = ("images", "labels", "test/images", "test/labels")
    else:
        dirs = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
    suffix = "_0000" if layout == "nnunet" else ""

    def write_case(case_id: str, image_dir: str, label_dir: str | None) -> None:
        label = blob_label(shape, num_classes, rng)
        volumes = [blob_image(label, rng, scale=100.0 * (c + 1)) for c in range(channels)]
        if layout == "nnunet":
            for c, vol in enumerate(volumes):
                write_nifti(root / image_dir / f"{case_id}_{c:04d}.nii.gz", vol, spacing)
        else:
            vol = volumes[0] if channels == 1 else np.stack(volumes, axis=-1)
            write_nifti(root / image_dir / f"{case_id}.nii.gz", vol, spacing)
        if label_dir is not None:
            write_nifti(root / label_dir / f"{case_id}.nii.gz", label, spacing)

    for i in range(n_cases):
        write_case(f"case_{i:03d}", dirs[0], dirs[1])
    for i in range(n_test):
        write_case(f"test_{i:03d}", dirs[2], dirs[3])
    for i in range(n_unlabeled):
        write_case(f"extra_{i:03d}", "unlabeled", None)
    names = ["background"] + [f"class{k}" for k in range(1, num_classes)]
    if layout == "msd":
        meta = {"labels": {str(k): n for k, n in enumerate(names)}, "modality": {str(c): "MRI" for c in range(channels)}}
        (root / "dataset.json").write_text(json.dumps(meta))
    elif layout == "nnunet":
        meta = {"labels": {n: k for k, n in enumerate(names)}, "channel_names": {str(c): "MRI" for c in range(channels)}}
        (root / "dataset.json").write_text(json.dumps(meta))
    return DataConfig(
        format="nifti",
        root=str(root),
        num_classes=num_classes,
        in_channels=channels,
        images_dir=dirs[0],
        labels_dir=dirs[1],
        test_images_dir=dirs[2] if n_test else "",
        test_labels_dir=dirs[3] if n_test else "",
        unlabeled_dir="unlabeled" if n_unlabeled else "",
        channel_suffix=suffix,
    )


def make_hdf5_dataset(
    root: Path,
    n_train: int = 6,
    n_val: int = 2,
    n_test: int = 2,
    slices: int = 4,
    shape: Sequence[int] = (32, 32),
    num_classes: int = 4,
    *,
    n_unlabeled: int = 0,
    folder: str = "data",
    seed: int = 0,
) -> DataConfig:
    """An ACDC-like SSL4MIS HDF5 dataset: 2D training slices, 3D val/test volumes, ``.list`` files.

    Training patients ``patientNNN`` (``slices`` slice files each, ``patientNNN_frame01_slice_K``) are
    listed in ``train_slices.list`` in a seeded shuffled patient order (so list order differs from
    sorted order); ``val.list``/``test.list`` name volumes ``patientNNN_frame01`` of further patients;
    ``unlabeled.list`` names image-only slices. Groups: ``data.group_regex = ^(patient\\d+)``.
    """
    rng = np.random.default_rng(seed)
    data_dir = root / folder
    patients = list(range(1, n_train + n_val + n_test + n_unlabeled + 1))
    train_p = [int(p) for p in rng.permutation(patients[:n_train])]
    val_p = patients[n_train : n_train + n_val]
    test_p = patients[n_train + n_val : n_train + n_val + n_test]
    unl_p = patients[n_train + n_val + n_test :]
    vol_shape = (slices, *shape)

    def volume() -> tuple[np.ndarray, np.ndarray]:
        label = blob_label(vol_shape, num_classes, rng)
        image = blob_image(label, rng, scale=0.2)
        return (image - image.min()) / (image.max() - image.min()), label

    train_ids, unl_ids = [], []
    for p, ids, labeled in [(p, train_ids, True) for p in train_p] + [(p, unl_ids, False) for p in unl_p]:
        image, label = volume()
        for k in range(slices):
            cid = f"patient{p:03d}_frame01_slice_{k + 1}"
            write_h5(data_dir / f"{cid}.h5", image[k], label[k] if labeled else None)
            ids.append(cid)
    val_ids, test_ids = [], []
    for ps, ids in ((val_p, val_ids), (test_p, test_ids)):
        for p in ps:
            cid = f"patient{p:03d}_frame01"
            image, label = volume()
            write_h5(data_dir / f"{cid}.h5", image, label)
            ids.append(cid)
    lists = {"train_slices.list": train_ids, "val.list": val_ids, "test.list": test_ids, "unlabeled.list": unl_ids}
    for name, ids in lists.items():
        if ids:
            (root / name).write_text("\n".join(ids) + "\n")
    return DataConfig(
        format="hdf5",
        root=str(root),
        num_classes=num_classes,
        train_list="train_slices.list",
        val_list="val.list" if val_ids else "",
        test_list="test.list" if test_ids else "",
        unlabeled_list="unlabeled.list" if unl_ids else "",
        path_pattern=f"{folder}/{{case}}.h5" if folder else "{case}.h5",
        group_regex=r"^(patient\d+)",
    )


def mask_image(label: np.ndarray, style: Literal["binary", "index", "palette", "rgb"]) -> Image.Image:
    """Encode a class map as a mask image in one of the usual 2D styles."""
    if style == "binary":
        return Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8))
    if style == "index":
        return Image.fromarray(label.astype(np.uint8))
    if style == "rgb":  # gray stored as RGB (R = G = B = class id)
        return Image.fromarray(np.repeat(label.astype(np.uint8)[..., None], 3, axis=-1))
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    colours = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * (256 * 3 - 12)
    img.putpalette(colours)
    return img


def make_image2d_dataset(
    root: Path,
    n_cases: int = 6,
    size: Sequence[int] = (32, 40),
    num_classes: int = 2,
    *,
    rgb: bool = False,
    mask_style: Literal["binary", "index", "palette", "rgb"] = "binary",
    image_ext: str = ".png",
    mask_ext: str = ".png",
    mask_match: Literal["stem", "suffix"] = "stem",
    mask_suffix: str = "_mask",
    masks_dir: str = "masks",
    n_unlabeled: int = 0,
    seed: int = 0,
) -> DataConfig:
    """A 2D dataset ``images/img_000.png`` + ``masks/img_000.png`` (or ``img_000_mask.png``).

    Args:
        root: folder to create the dataset in.
        n_cases: labeled images.
        size: image size (H, W).
        num_classes: classes including background (binary masks need 2).
        rgb: colour (3-channel) images instead of grayscale.
        mask_style: ``binary`` (0/255), ``index`` (value = class), ``palette`` (P mode), ``rgb`` (R=G=B=class).
        image_ext: image file extension (``.png``, ``.jpg``, ``.tif``, ``.bmp``...).
        mask_ext: mask file extension (``.jpg`` gives lossy binary masks).
        mask_match: ``stem`` (same stem) or ``suffix`` (stem + ``mask_suffix``).
        mask_suffix: suffix for ``mask_match=suffix``.
        masks_dir: mask folder name.
        n_unlabeled: extra images in ``unlabeled/``.
        seed: seed of the synthetic content.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / masks_dir).mkdir(parents=True, exist_ok=True)

    def image_of(label: np.ndarray) -> Image.Image:
        gray = np.clip(blob_image(label, rng, scale=60.0), 0, 255).astype(np.uint8)
        if rgb:
            return Image.fromarray(np.stack([gray, 255 - gray, gray // 2], axis=-1))
        return Image.fromarray(gray)

    for i in range(n_cases):
        label = blob_label(size, num_classes, rng)
        image_of(label).save(root / "images" / f"img_{i:03d}{image_ext}")
        mask_stem = f"img_{i:03d}" + (mask_suffix if mask_match == "suffix" else "")
        mask_image(label, mask_style).save(root / masks_dir / f"{mask_stem}{mask_ext}")
    for i in range(n_unlabeled):
        (root / "unlabeled").mkdir(exist_ok=True)
        image_of(blob_label(size, num_classes, rng)).save(root / "unlabeled" / f"extra_{i:03d}{image_ext}")
    return DataConfig(
        format="image2d",
        root=str(root),
        num_classes=num_classes,
        in_channels=3 if rgb else 1,
        images_dir="images",
        labels_dir=masks_dir,
        unlabeled_dir="unlabeled" if n_unlabeled else "",
        mask_match=mask_match,
        mask_suffix=mask_suffix,
    )
