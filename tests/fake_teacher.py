"""A stand-in foundation teacher for tests (teacher plumbing, UnCoL training).

:class:`FakeTeacher` has the real interface but a trivial, exactly flip/rotation-equivariant
"encoder" (average pooling and a 1x1 convolution) and a "decoder" that returns a box-shaped logit map
whose height grows with the prompt's position (so overlap resolution is observable). It counts
encoded images and decoder calls, which is how the tests see whether the cache recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from uncol.teachers import FUSED, Encoded, FoundationTeacher
from uncol.teachers.preprocessing import PreprocessSpec


class PoolEncoder(nn.Module):
    """Two 2x2 average pools then a fixed 1x1 convolution to 8 channels: exactly equivariant."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.AvgPool2d(2)
        self.stage2 = nn.AvgPool2d(2)
        self.neck = nn.Conv2d(3, 8, 1)
        with torch.no_grad():
            self.neck.weight.copy_(torch.linspace(-1, 1, 24).reshape(8, 3, 1, 1))
            self.neck.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stage2(self.stage1(x)))


class FakeTeacher(FoundationTeacher):
    """Stand-in teacher on a ``size`` x ``size`` canvas."""

    name = "fake"

    def __init__(
        self,
        layers: Sequence[str] = (),
        token_grid: int = 8,
        size: int = 64,
        weights: str = "w0",
        batch_size: int = 4,
        keep_aspect: bool = True,
    ) -> None:
        self.spec = PreprocessSpec(size=size, keep_aspect=keep_aspect)
        super().__init__(layers, token_grid, "cpu", batch_size)
        self.encoder = PoolEncoder()
        self.prompt_encoder = nn.Identity()
        self.mask_decoder = nn.Identity()
        self._weights = weights
        self.encoded_images = 0
        self.decode_calls = 0
        self._finalize()

    def default_layers(self) -> tuple[str, ...]:
        return ("stage1", "stage2", FUSED)

    def available_layers(self) -> tuple[str, ...]:
        return ("stage1", "stage2", "neck")

    @property
    def weights_id(self) -> str:
        return self._weights

    def layer_output_to_map(self, name: str, output: torch.Tensor) -> torch.Tensor:
        return output

    def encode(self, images: Sequence[np.ndarray], keep_embedding: bool = True) -> list[Encoded]:
        self.encoded_images += len(images)
        return super().encode(images, keep_embedding)

    def _decode(self, embedding, boxes, points):
        self.decode_calls += 1
        s = self.spec.size
        yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
        n = boxes.shape[0] if boxes is not None else points[0].shape[0]
        logits = torch.full((n, s, s), -10.0)
        for p in range(n):
            if boxes is not None:
                x0, y0, x1, y1 = boxes[p, 0].tolist()
                inside = (xx >= x0) & (xx <= x1 + 1) & (yy >= y0) & (yy <= y1 + 1)
            else:
                coords, labels = points
                inside = torch.zeros(s, s, dtype=torch.bool)
                for (x, y), lab in zip(coords[p].tolist(), labels[p].tolist(), strict=True):
                    if lab == 1:
                        inside |= (xx - x) ** 2 + (yy - y) ** 2 <= 25
            logits[p][inside] = 2.0 + p  # later prompts have higher logits: overlaps go to them
        fused = embedding.expand(n, -1, -1, -1) * torch.arange(1, n + 1, dtype=torch.float32)[:, None, None, None]
        return logits, fused
