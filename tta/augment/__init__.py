"""Batched, seeded image augmentations used by test-time adaptation methods."""
from .rotta import rotta_augment

__all__ = ["rotta_augment"]
