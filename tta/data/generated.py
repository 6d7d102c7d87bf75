"""Domains generated on the fly from a clean image set with ``tta.corruptions``.

Each batch is corrupted when it is read. The corruption of an image depends on
the seed and the image's index only (``corrupt(..., indices=...)``), so any
stream order sees the same corrupted pixels.
"""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .domain import Domain, to_float_nchw
from .domain_source import BENCHMARK_CORRUPTIONS, DomainSource


def corruptions_module() -> Any | None:
    """``tta.corruptions`` when it provides ``corrupt`` and ``CORRUPTIONS``, else None."""
    try:
        mod = importlib.import_module("tta.corruptions")
    except ImportError:
        return None
    return mod if hasattr(mod, "corrupt") and hasattr(mod, "CORRUPTIONS") else None


class GeneratedDomain(Domain):
    def __init__(self, clean: np.ndarray, labels: np.ndarray, name: str, severity: int, seed: int, preset: str, source: str,
                 frost_dir: str | None = None) -> None:
        super().__init__(name, severity, labels, source)
        self.clean = clean
        self.seed = seed
        self.preset = preset
        self.frost_dir = frost_dir

    def load(self, indices: np.ndarray) -> torch.Tensor:
        indices = np.asarray(indices)
        mod = corruptions_module()
        out = mod.corrupt(np.ascontiguousarray(self.clean[indices]), self.name, self.severity,
                          preset=self.preset, seed=self.seed, indices=indices, frost_dir=self.frost_dir)
        return to_float_nchw(np.asarray(out), f"{self.source} ({self.key})")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "generated": True, "corruption_seed": self.seed, "preset": self.preset}


class GeneratedSource(DomainSource):
    """Corrupted domains of a clean test set, generated per batch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, dataset: str, origin: str, num_classes: int,
                 seed: int = 0, preset: str = "cifar", frost_dir: str | None = None) -> None:
        mod = corruptions_module()
        if mod is None:
            raise DataError(
                "generating corrupted domains needs tta.corruptions, which is not available in this install; "
                "use pre-generated CIFAR-10-C files under --data-dir instead"
            )
        self.dataset = dataset
        names = [c for c in BENCHMARK_CORRUPTIONS if c in mod.CORRUPTIONS] + [
            c for c in mod.CORRUPTIONS if c not in BENCHMARK_CORRUPTIONS
        ]
        super().__init__(f"{dataset} test set from {origin}, corruptions generated (seed {seed})", names, num_classes)
        self.images, self.labels, self.seed, self.preset, self.origin = images, labels, seed, preset, origin
        self.frost_dir = None if frost_dir is None else str(frost_dir)

    def check_domains(self, names: list[str]) -> None:
        """Corrupt one image per domain up front, so a missing dependency (e.g. frost textures)
        stops the run before it starts rather than halfway through."""
        super().check_domains(names)
        mod = corruptions_module()
        probe = np.ascontiguousarray(self.images[:1])
        for name in names:
            mod.corrupt(probe, name, 1, preset=self.preset, seed=self.seed, indices=np.zeros(1, dtype=np.int64),
                        frost_dir=self.frost_dir)

    def _make(self, name: str, severity: int) -> GeneratedDomain:
        return GeneratedDomain(self.images, self.labels, name, severity, self.seed, self.preset, self.origin,
                               self.frost_dir)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "generated": True, "corruption_seed": self.seed, "clean_source": self.origin}
