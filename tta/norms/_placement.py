"""Where a transformer's norm layers sit: Pre-LN, Post-LN, LayerNorm Scaling and Mix-LN.

These are arrangements of the same norm layer, not new layers, so they are
chosen per backbone (``vit-cifar``, ``vit-cifar-post``, ``vit-cifar-lns``,
``vit-cifar-mixln``) and combine with any token norm kind (``ln``,
``rmsnorm``, ...).

- ``pre``: h = x + Attn(N(x)); out = h + FFN(N(h)); a final norm before the head.
- ``post``: h = N(x + Attn(x)); out = N(h + FFN(h)).
- ``lns`` (LayerNorm Scaling, Sun et al. 2025, "The Curse of Depth in LLMs";
  lmsdss/LayerNorm-Scaling): Pre-LN with the norm output of block ℓ (1-based)
  scaled by 1/√ℓ. No new parameters. The authors warn against combining it
  with depth-scaled initialization, so tta's ViT uses a plain normal init.
- ``mix-ln`` (Li, Yin & Liu 2024; pixeli99/MixLN): the first ⌊αL⌋ blocks are
  Post-LN, the rest Pre-LN; α = 0.25 (``POST_NUM`` 3 of 12 and 6 of 24 blocks
  in the official LLaMA runs, which use RMSNorm; here the norm kind is free).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

SCHEMES = ("pre", "post", "lns", "mix-ln")
MIX_LN_POST_FRACTION = 0.25


@dataclass(frozen=True)
class BlockNorms:
    """How one block uses its norms: after the residual sum (``post``), or before the branch times ``scale``."""

    post: bool
    scale: float = 1.0


def block_plan(depth: int, scheme: str = "pre", post_fraction: float = MIX_LN_POST_FRACTION) -> list[BlockNorms]:
    """The norm arrangement of each of ``depth`` blocks under ``scheme``."""
    if scheme not in SCHEMES:
        raise InputError(f"unknown norm placement {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    if depth < 1:
        raise InputError(f"a transformer needs depth >= 1, got {depth}")
    if scheme == "post":
        return [BlockNorms(post=True)] * depth
    if scheme == "lns":
        return [BlockNorms(post=False, scale=1.0 / math.sqrt(layer)) for layer in range(1, depth + 1)]
    if scheme == "mix-ln":
        if not 0.0 <= post_fraction <= 1.0:
            raise InputError(f"Mix-LN post_fraction must lie in [0, 1], got {post_fraction}; the paper uses 0.25")
        n_post = math.floor(post_fraction * depth)
        return [BlockNorms(post=i < n_post) for i in range(depth)]
    return [BlockNorms(post=False)] * depth


def needs_final_norm(plan: list[BlockNorms]) -> bool:
    """A stack whose last block is Pre-LN leaves its output unnormalized, so it ends with a norm."""
    return not plan[-1].post
