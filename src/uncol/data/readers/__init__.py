"""Format readers (NIfTI, HDF5, 2D image files) and :func:`load_case`, the one entry point to them."""

from __future__ import annotations

from uncol.data.readers.common import case_id_of, format_of
from uncol.data.readers.load import load_case

__all__ = ["case_id_of", "format_of", "load_case"]
