"""Batched, seeded test-time augmentations (RoTTA's strong augmentation; CoTTA's and ROID's views)."""
from .rotta import rotta_augment

__all__ = ["rotta_augment"]
