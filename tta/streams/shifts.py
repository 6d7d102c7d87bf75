"""Shift protocols: which domains form each block of the stream, and when the model resets."""
from __future__ import annotations

from dataclasses import dataclass

from ..name_registry import Registry

#: (corruption, severity): one domain of a stream
DomainKey = tuple[str, int]


@dataclass(frozen=True)
class Shift:
    """How a list of corruptions becomes the blocks of a stream."""

    name: str
    summary: str
    #: reset the adapter before every block (otherwise only once, at the start)
    reset_each_block: bool
    #: pool all domains into one shuffled block
    pooled: bool = False
    #: visit severities 1..5..1 for each corruption
    gradual: bool = False
    #: label correlation (--delta/--sorted) on every other block only: the blocks whose index has this
    #: parity (1: i.i.d. first, then correlated; 0: correlated first); None: on every block
    correlated_parity: int | None = None

    def correlated(self, block: int) -> bool:
        """Whether the label correlation of the run applies to block number ``block``."""
        return self.correlated_parity is None or block % 2 == self.correlated_parity

    def blocks(self, corruptions: list[str], severity: int) -> list[list[DomainKey]]:
        """The domains of each block, in stream order."""
        if self.pooled:
            return [[(c, severity) for c in corruptions]]
        if self.gradual:
            ramp = [1, 2, 3, 4, 5, 4, 3, 2, 1]
            return [[(c, s)] for c in corruptions for s in ramp]
        return [[(c, severity)] for c in corruptions]


SHIFTS: Registry[Shift] = Registry("shift")

for _shift in (
    Shift("iid", "each domain on its own; the model is reset before each domain", reset_each_block=True),
    Shift("continual", "domains one after another in order, never reset", reset_each_block=False),
    Shift("mixed", "all domains pooled and shuffled into one stream", reset_each_block=False, pooled=True),
    Shift("gradual", "severity 1->5->1 for each domain in turn, never reset", reset_each_block=False, gradual=True),
    Shift("switching", "continual, the label order switching at every domain: i.i.d., correlated (--delta), "
          "i.i.d., ...; never reset", reset_each_block=False, correlated_parity=1),
    Shift("switching-reverse", "switching in the other phase: correlated (--delta) first, then i.i.d., ...; "
          "never reset", reset_each_block=False, correlated_parity=0),
):
    SHIFTS.add(_shift.name, _shift)


def get_shift(name: str) -> Shift:
    return SHIFTS.get(name)


def listing() -> list[str]:
    """Lines for ``tta list shifts``."""
    lines = [f"{name:12s} {shift.summary}" for name, shift in SHIFTS.items()]
    lines.append("label correlation on top of any shift: --delta D (Dirichlet; default 0.1 CIFAR-10, 0.01 CIFAR-100 "
                 "and ImageNet) or --sorted; switching shifts need one (switching@0.1 in a sweep grid)")
    return lines
