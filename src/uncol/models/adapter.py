"""The knowledge adapter of the UnCoL student: cross-attention from student tokens to a context.

UnCoL (Lu, Hong and Yang, arXiv:2512.13101, Sec. 3.5) fuses the student's image features with
features provided by a teacher through "a cross-attention module, where the student's image features
act as the query and the teacher-provided features as key and value": prompt-informed features of the
frozen foundation model (labeled data), high-level features of the EMA teacher (unlabeled data), and
at inference the student's own transformer features, so that inference stays prompt-free.

A context may come from a network of another width and resolution: contexts of the student's width
are used as they are, and every other accepted width ``d`` (``context_dims``) has its own
``LayerNorm(d) -> Linear(d, dim)`` projection into the student's token space. The length of the
context is free (keys/values need not share the student's token grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from uncol.errors import ConfigError


def check_context_dims(context_dims: Sequence[int], dim: int) -> None:
    """Reject context widths that are not distinct, positive and different from ``dim``.

    A context of width ``dim`` is taken to live in the student's token space already, so a projection
    for that width would make the meaning of such a context ambiguous.

    Raises:
        ConfigError: naming ``model.context_dims``.
    """
    if any(d < 1 or d == dim for d in context_dims) or len(set(context_dims)) != len(context_dims):
        raise ConfigError(
            f"model.context_dims: {list(context_dims)} must be distinct positive widths other than "
            f"model.vit_dim={dim} (contexts of width vit_dim need no projection)"
        )


class KnowledgeAdapter(nn.Module):
    """Pre-norm cross-attention block: ``x + Attn(LN(x), LN(ctx))``, then ``+ MLP(LN(.))`` and a final LN.

    Args:
        dim: width of the query (student) tokens.
        heads: attention heads; must divide ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        context_dims: widths other than ``dim`` that a context may have (teacher features); each gets
            a learned projection to ``dim``.
        dropout: dropout rate of the attention output and the MLP.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 2.0,
        context_dims: Sequence[int] = (),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"model.vit_dim ({dim}) must be divisible by model.vit_heads ({heads})")
        check_context_dims(context_dims, dim)
        self.dim = dim
        self.context_dims = tuple(int(d) for d in context_dims)
        self.context_proj = nn.ModuleDict(
            {str(d): nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dim)) for d in self.context_dims}
        )
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(round(dim * mlp_ratio))
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )
        self.norm_out = nn.LayerNorm(dim)

    def context_tokens(self, context: torch.Tensor) -> torch.Tensor:
        """A context as tokens of width ``dim``.

        Args:
            context: a token sequence ``(B, M, Dc)`` or a feature map ``(B, Dc, *grid)`` (any grid).

        Returns:
            ``(B, M, dim)``: the tokens, projected when ``Dc != dim``.
        """
        if context.ndim == 3:
            tokens = context
        elif context.ndim >= 4:
            tokens = context.flatten(2).transpose(1, 2)
        else:
            raise ValueError(
                f"KnowledgeAdapter: context must be tokens (B, M, D) or a feature map (B, D, *grid), "
                f"got shape {tuple(context.shape)}"
            )
        width = tokens.shape[-1]
        if width == self.dim:
            return tokens
        if str(width) in self.context_proj:
            return self.context_proj[str(width)](tokens)
        raise ValueError(
            f"KnowledgeAdapter: context width {width} is neither the student width {self.dim} nor one of "
            f"model.context_dims {list(self.context_dims)}; add it to model.context_dims"
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Let the student tokens ``x`` attend to ``context``.

        Args:
            x: queries, ``(B, N, dim)``.
            context: keys/values, ``(B, M, Dc)`` or ``(B, Dc, *grid)`` (see :meth:`context_tokens`).

        Returns:
            Adapted tokens ``(B, N, dim)``, layer-normalised.
        """
        ctx = self.context_tokens(context)
        if ctx.shape[0] != x.shape[0]:
            raise ValueError(f"KnowledgeAdapter: context batch {ctx.shape[0]} != student batch {x.shape[0]}")
        ctx = self.norm_context(ctx)
        x = x + self.attn(self.norm_query(x), ctx, ctx, need_weights=False)[0]
        x = x + self.mlp(self.norm_mlp(x))
        return self.norm_out(x)
