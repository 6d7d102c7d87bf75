"""A small Vision Transformer for 32x32 inputs, with a choice of token norm and norm placement.

Patch 4 (64 patches + a class token), width 192, 6 blocks, 3 heads, MLP 384:
about 1.8 M parameters, sized to train on a CPU. The norm layers come from a
token-level norm kind (``ln``, ``rmsnorm``, ``crmsnorm``, ``powernorm``; see
``tta list norms``) and their placement from ``tta.norms._placement``
(Pre-LN, Post-LN, LayerNorm Scaling, Mix-LN). Inputs are [0,1] RGB; the
normalization to ImageNet mean/std happens inside, as for the CIFAR ResNets.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..norms import MakeNorm, token_kinds
from ..norms._placement import BlockNorms, block_plan, needs_final_norm
from ._input_norm import IMAGENET_MEAN, IMAGENET_STD, InputNormalize



class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """One transformer block; ``arrangement`` says Pre- or Post-norm and the Pre-norm output scale."""

    def __init__(self, dim: int, heads: int, hidden: int, norm: MakeNorm, arrangement: BlockNorms) -> None:
        super().__init__()
        self.post, self.scale = arrangement.post, arrangement.scale
        self.norm1 = norm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = norm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post:
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x) * self.scale)
        return x + self.mlp(self.norm2(x) * self.scale)

    def extra_repr(self) -> str:
        return f"post={self.post}, scale={self.scale:.4g}"


class CifarViT(nn.Module):
    """ViT for 32x32 images; ``norm`` is a token norm factory (``norm_factory(kind).tokens``)."""

    def __init__(
        self,
        num_classes: int = 10,
        norm: MakeNorm = nn.LayerNorm,
        scheme: str = "pre",
        *,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 2.0,
        patch: int = 4,
        image_size: int = 32,
        post_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise InputError(f"patch size {patch} does not tile {image_size}x{image_size} images")
        self.scheme, self.image_size = scheme, image_size
        plan = block_plan(depth, scheme, post_fraction)
        self.normalize = InputNormalize(IMAGENET_MEAN, IMAGENET_STD)
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2 + 1, dim))
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden, norm, a) for a in plan))
        self.norm = norm(dim) if needs_final_norm(plan) else nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # plain truncated-normal init (std 0.02), not depth-scaled: LayerNorm Scaling's authors
        # advise against combining it with scaled initialization
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(self.normalize(x)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def build_vit(norm: Any, scheme: str, num_classes: int = 10) -> CifarViT:
    """A ``CifarViT`` from a ``NormFactory`` of a kind with a token form (``tta.build_model`` path)."""
    tokens = getattr(norm, "tokens", None)
    if tokens is None:
        raise InputError(
            f"a ViT backbone needs a token-level norm kind, not {getattr(norm, '__name__', norm)!r}; "
            f"pass norm= one of: {', '.join(token_kinds())}"
        )
    return CifarViT(num_classes, tokens, scheme)
