"""2D image files (PNG, JPEG, TIFF, GIF, BMP) and their segmentation masks.

Images become ``(C, H, W)`` float32: grayscale gives one channel, colour three (alpha dropped,
palette images expanded to RGB). Masks are decoded into class ids according to a *mask mode*
(see :func:`read_mask2d`), because 2D datasets store masks in several incompatible ways.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from uncol.atomic import atomic_write
from uncol.data.readers.common import as_image, as_label, case_id_of, compact_int, is_jpeg
from uncol.data.types import CaseData
from uncol.errors import DataError

MASK_MODES: tuple[str, ...] = ("auto", "binary", "index", "palette")
_GRAY_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_PALETTE_MODES = {"P", "PA"}


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image; refuse multi-frame files (a 3D stack is not a 2D image)."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        img = Image.open(path)
        frames = int(getattr(img, "n_frames", 1))
        img.load()  # decoding now is what detects truncated files
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        raise DataError(path, f"unreadable or truncated image file ({type(e).__name__}: {e})") from None
    if frames > 1:
        raise DataError(path, f"3D file where 2D is expected ({frames} frames in a 2D image file)")
    return img


def _pixels(img: Image.Image) -> np.ndarray:
    """Pixel values ``(H, W)`` or ``(H, W, C)`` with any alpha channel dropped."""
    if img.mode == "LA":
        return np.asarray(img)[..., 0]
    if img.mode == "RGBA":
        return np.asarray(img)[..., :3]
    if img.mode in _GRAY_MODES or img.mode == "RGB":
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def read_image2d(path: Path) -> CaseData:
    """Read a 2D image file as ``(C, H, W)`` float32 (1 channel for grayscale, 3 for colour)."""
    img = _open(path)
    source = img.convert("RGBA") if img.mode in _PALETTE_MODES else img
    if source.mode == "1":
        source = source.convert("L")
    pixels = _pixels(source)
    image = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
    return CaseData(
        case_id=case_id_of(path),
        image=as_image(image),
        label=None,
        spacing=(),
        affine=None,
        slice_axis=0,
        meta={
            "path": str(path),
            "format": "image2d",
            "size": tuple(img.size),  # (width, height), as PIL reports it
            "mode": img.mode,
            "file_format": img.format,
        },
    )


def _binary(img: Image.Image) -> np.ndarray:
    source = img.convert("RGB") if img.mode in _PALETTE_MODES else img
    pixels = _pixels(source)
    fg = pixels > 127
    return (fg.any(axis=-1) if fg.ndim == 3 else fg).astype(np.uint8)


def _index(img: Image.Image, path: Path) -> np.ndarray:
    pixels = _pixels(img)
    if pixels.ndim == 3:
        if not (np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])):
            raise DataError(
                path,
                "colour mask (R, G, B differ) cannot be read as class indices; "
                "use data.mask_mode=palette for palette PNGs, binary for black/white masks, or convert the masks",
            )
        pixels = pixels[..., 0]
    return as_label(pixels, path)


def read_mask2d(path: Path, mask_mode: str = "auto") -> np.ndarray:
    """Decode a 2D mask file into class ids ``(H, W)``.

    Modes:
        binary: any value > 127 (in any colour channel) is class 1, else 0.
        index: the pixel value is the class id (colour masks must have R = G = B).
        palette: the palette index of a P-mode image is the class id.
        auto: palette for P-mode files, binary for JPEG files and for masks whose values are all
            0 or 255, index otherwise.

    JPEG masks are always thresholded at 127: lossy compression spreads values around the edges,
    so they can only hold binary masks.
    """
    if mask_mode not in MASK_MODES:
        raise DataError(path, f"unknown mask mode {mask_mode!r} (expected one of {', '.join(MASK_MODES)})")
    img = _open(path)
    jpeg = is_jpeg(path) or img.format == "JPEG"
    if jpeg:
        if mask_mode in ("index", "palette"):
            raise DataError(
                path, f"JPEG masks are lossy and cannot hold class indices (mask_mode={mask_mode}); use binary or PNG"
            )
        return _binary(img)
    if mask_mode == "binary":
        return _binary(img)
    if mask_mode == "palette" or (mask_mode == "auto" and img.mode in _PALETTE_MODES):
        if img.mode not in _PALETTE_MODES:
            raise DataError(path, f"mask is not a palette (P mode) image but {img.mode} (mask_mode=palette)")
        return compact_int(np.asarray(img))
    if mask_mode == "auto":
        pixels = _pixels(img)
        if pixels.dtype != bool and np.isin(pixels, (0, 255)).all():
            fg = pixels == 255
            return (fg.any(axis=-1) if fg.ndim == 3 else fg).astype(np.uint8)
    return _index(img, path)


def png_path_for(path: Path) -> Path:
    """Where a 2D mask asked for at ``path`` is written: PNG, keeping the stem."""
    if path.suffix.lower() == ".png":
        return path
    return path.with_name(case_id_of(path) + ".png")


#: How class ids are stored in a 2D mask PNG (see :func:`write_png_label`).
MASK_VALUES: tuple[str, ...] = ("index", "scaled", "palette")

# Class colours 1..20 of a palette mask: Trubetskoy's 20 distinct colours, in his order (the
# first ones are the most distinct); class 0 (background) is black.
_DISTINCT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def _spare_colours() -> list[tuple[int, int, int]]:
    """Further colours after the listed ones: the 6x6x6 colour cube, then a walk of other colours."""
    levels = (0, 51, 102, 153, 204, 255)
    # 97 is coprime to 216, so the walk visits every cube colour once, neighbours far apart.
    cube = [(levels[i // 36], levels[i // 6 % 6], levels[i % 6]) for i in ((k * 97) % 216 for k in range(216))]
    others = [(g, 255 - g, (g * 7) % 256) for g in ((k * 37) % 256 for k in range(256))]
    return cube + others


def class_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct RGB colours of classes ``0 .. num_classes-1`` (at most 256): black, then distinct colours.

    Classes 1..20 get Trubetskoy's 20 distinct colours; further classes the first colours not yet
    used from a walk through the 6x6x6 colour cube (and beyond it), so every class has its own.
    """
    if not 1 <= num_classes <= 256:
        raise ValueError(f"a PNG palette holds 1..256 classes, got {num_classes}")
    colours: list[tuple[int, int, int]] = [(0, 0, 0), *_DISTINCT_COLOURS][:num_classes]
    used = set(colours)
    for rgb in _spare_colours():
        if len(colours) == num_classes:
            break
        if rgb not in used:
            colours.append(rgb)
            used.add(rgb)
    return colours


def _encoded_mask(label: np.ndarray, mask_values: str, num_classes: int | None, path: Path) -> Image.Image:
    """The PIL image of a class map in one of :data:`MASK_VALUES`."""
    hi = int(label.max(initial=0))
    classes = max(num_classes or 0, hi + 1, 2)
    if mask_values == "index":
        return Image.fromarray(label.astype(np.uint8) if hi <= 255 else label.astype(np.uint16))
    if classes > 256:
        raise DataError(path, f"mask_values={mask_values} holds at most 256 classes, got {classes}; use index")
    if mask_values == "scaled":
        # Spread over 0..255 so classes are told apart by eye (2 classes: 0 and 255).
        step = 255.0 / (classes - 1)
        return Image.fromarray(np.rint(label.astype(np.float64) * step).astype(np.uint8))
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = [v for rgb in class_palette(classes) for v in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def write_png_label(
    path: Path,
    label: np.ndarray,
    reference: CaseData,
    *,
    mask_values: str = "index",
    num_classes: int | None = None,
) -> Path:
    """Write a 2D mask PNG of the reference image's size.

    Args:
        path: destination; written as ``.png`` whatever its extension, because lossy JPEG (and
            palette-limited GIF) cannot store class ids faithfully.
        label: class ids ``(H, W)``.
        reference: the image the mask was predicted from (its size is checked).
        mask_values: ``index``: pixel value = class id (8-bit, 16-bit beyond 255 classes; looks
            black in a viewer); ``scaled``: class ``k`` stored as ``round(k * 255 / (K - 1))``
            (visible, but no longer class ids beyond two classes); ``palette``: a palette (P mode)
            PNG whose pixel values are the class ids and whose palette gives each class a distinct
            colour (:func:`class_palette`), so it is both visible and readable as class ids.
        num_classes: classes of the model ``K`` (for ``scaled`` and ``palette``); default: the
            largest label + 1.

    Returns:
        The path written.
    """
    if mask_values not in MASK_VALUES:
        raise DataError(path, f"unknown mask values {mask_values!r} (expected one of {', '.join(MASK_VALUES)})")
    label = compact_int(np.asarray(label))
    if label.ndim != 2:
        raise DataError(path, f"a 2D image mask needs a 2D label map, got shape {label.shape}")
    size = reference.meta.get("size")
    if size is not None and tuple(label.shape) != (int(size[1]), int(size[0])):
        raise DataError(path, f"label shape {label.shape} differs from the image size {size[1]}x{size[0]} (HxW)")
    lo, hi = int(label.min(initial=0)), int(label.max(initial=0))
    if lo < 0 or hi > 65535:
        raise DataError(path, f"label values {lo}..{hi} do not fit a PNG mask")
    pil = _encoded_mask(label, mask_values, num_classes, path)
    target = png_path_for(path)
    return atomic_write(target, lambda tmp: pil.save(tmp, format="PNG"))
