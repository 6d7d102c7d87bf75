"""``DomainSource``: where the domains of a dataset come from (files, generator, demo)."""
from __future__ import annotations

from typing import Any

from ..errors import UnknownNameError
from .domain import Domain

#: The 15 benchmark corruptions in the order of the continual protocol
#: (RobustBench's CORRUPTIONS, used by the reference TTA framework; docs/running.md).
BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)


class DomainSource:
    """A dataset as a set of (corruption, severity) domains.

    Subclasses set ``dataset`` (the key for per-dataset method defaults), ``label``
    (shown in tables), ``corruptions`` and ``num_classes``, and implement ``_make``.
    """

    dataset: str = ""
    is_demo: bool = False

    def __init__(self, label: str, corruptions: list[str], num_classes: int) -> None:
        self.label = label
        self.corruptions = list(corruptions)
        self.num_classes = num_classes
        self._cache: dict[tuple[str, int], Domain] = {}

    def check_corruption(self, name: str) -> None:
        if name not in self.corruptions:
            raise UnknownNameError(
                f"unknown corruption {name!r} for {self.label}; choose from: {', '.join(self.corruptions)}"
            )

    def check_domains(self, names: list[str]) -> None:
        """Raise before streaming when any of ``names`` cannot be produced."""
        for name in names:
            self.check_corruption(name)

    def default_domains(self) -> list[str]:
        """The domains a stream runs when none are named (the canonical order)."""
        return list(self.corruptions)

    def domain(self, name: str, severity: int) -> Domain:
        self.check_corruption(name)
        key = (name, int(severity))
        if key not in self._cache:
            self._cache[key] = self._make(name, int(severity))
        return self._cache[key]

    def _make(self, name: str, severity: int) -> Domain:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "label": self.label, "demo": self.is_demo, "num_classes": self.num_classes}
