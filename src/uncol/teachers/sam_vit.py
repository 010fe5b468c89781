"""MedSAM / SAM ViT-B from a local checkpoint: the paper's generalized teacher.

The architecture comes from Meta's ``segment-anything`` package (install the ``sam`` extra:
``pip install 'uncol[sam]'``); the weights from a checkpoint file the user supplies (MedSAM's
``medsam_vit_b.pth`` or SAM's ``sam_vit_b_01ec64.pth``): nothing is downloaded.

Inputs follow MedSAM's recipe, for which the paper uses this model: min-max to [0, 1], three channels,
stretched to 1024 x 1024 (see :mod:`uncol.teachers.preprocessing`). The encoder's 12 blocks are
``blocks.0`` ... ``blocks.11`` (outputs ``(B, 64, 64, 768)`` at 1024 px), then ``neck`` (256 x 64 x 64);
the paper's map applies directly: student layers 1, 2, 3 <- blocks 4, 8, 12 (``blocks.3``, ``blocks.7``,
``blocks.11``), student layer 4 <- the fused features.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import torch

from uncol.errors import ConfigError, UncolError
from uncol.teachers.base import FUSED, FoundationTeacher
from uncol.teachers.preprocessing import PreprocessSpec

DEFAULT_LAYERS = ("blocks.3", "blocks.7", "blocks.11", FUSED)
VIT_B = {"depth": 12, "embed_dim": 768, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SamViTBTeacher(FoundationTeacher):
    """SAM-architecture ViT-B teacher.

    Args:
        checkpoint: local checkpoint path (a state dict of ``segment_anything``'s ``Sam``, possibly
            wrapped under ``"model"``/``"state_dict"``); ``None`` keeps random weights (tests only).
        layers: see :class:`FoundationTeacher`; default :data:`DEFAULT_LAYERS`.
        token_grid: side of the pooled feature grid.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: images per encoder pass.
        img_size: input size (1024 for real checkpoints; smaller sizes build the same ViT-B for fast
            tests with random weights).
    """

    name = "sam_vit_b"

    def __init__(
        self,
        checkpoint: str | Path | None,
        layers: tuple[str, ...] | list[str] = (),
        token_grid: int = 16,
        device: str = "cpu",
        batch_size: int = 1,
        img_size: int = 1024,
    ) -> None:
        try:
            from segment_anything.modeling import (
                ImageEncoderViT,
                MaskDecoder,
                PromptEncoder,
                TwoWayTransformer,
            )
        except ImportError:
            raise ConfigError(
                "teacher.name=sam_vit_b needs the package segment-anything: pip install 'uncol[sam]'"
            ) from None
        self.spec = PreprocessSpec(size=img_size, keep_aspect=False)
        super().__init__(layers, token_grid, device, batch_size)
        grid = img_size // 16
        self.encoder = ImageEncoderViT(
            depth=VIT_B["depth"],
            embed_dim=VIT_B["embed_dim"],
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=VIT_B["num_heads"],
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=VIT_B["global_attn_indexes"],
            window_size=14,
            out_chans=256,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size), mask_in_chans=16
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        self._weights_id = "random" if checkpoint is None else self._load(Path(checkpoint))
        self._finalize()

    def _load(self, path: Path) -> str:
        if not path.is_file():
            raise ConfigError(f"teacher.checkpoint: {path} not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for unreadable files
            raise UncolError(f"{path}: cannot read the ViT-B checkpoint: {e}") from None
        if isinstance(state, dict) and ("model" in state or "state_dict" in state):
            state = state.get("model", state.get("state_dict"))
        if not isinstance(state, dict):
            raise UncolError(f"{path}: not a state dict of a SAM ViT-B model")
        parts = {"image_encoder.": self.encoder, "prompt_encoder.": self.prompt_encoder, "mask_decoder.": self.mask_decoder}
        unknown = [k for k in state if not k.startswith(tuple(parts))]
        if unknown:
            raise UncolError(f"{path}: unexpected keys for a SAM ViT-B model, e.g. {unknown[:3]}")
        for prefix, module in parts.items():
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as e:
                raise UncolError(f"{path}: does not match SAM ViT-B ({prefix[:-1]}): {str(e)[:300]}") from None
        return _file_sha256(path)

    def default_layers(self) -> tuple[str, ...]:
        """The paper's map: student layers 1-3 <- ViT blocks 4, 8, 12; layer 4 <- fused features."""
        return DEFAULT_LAYERS

    def available_layers(self) -> tuple[str, ...]:
        """The 12 transformer blocks and the neck."""
        return (*(f"blocks.{i}" for i in range(VIT_B["depth"])), "neck")

    @property
    def weights_id(self) -> str:
        """SHA-256 of the checkpoint file (``random`` without one)."""
        return self._weights_id

    def layer_output_to_map(self, name: str, output: torch.Tensor) -> torch.Tensor:
        """ViT blocks emit channels-last ``(B, h, w, C)``; the neck ``(B, C, h, w)``."""
        return output if name == "neck" else output.permute(0, 3, 1, 2)
