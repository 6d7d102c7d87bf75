"""Settings of a run: ``RunConfig`` and its defaults; torch-free, so flags and grids are checked before torch loads."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..errors import InputError

#: default model per dataset (RobustBench's corruption-benchmark BN backbones)
DEFAULT_MODELS = {"cifar10": "wrn-28-10", "cifar100": "resnext-29", "imagenet": "resnet50"}
#: Dirichlet δ for ``--delta`` without a value: the UnMix-TNS scripts' TEST.DELTA_DIRICHLET
#: (devavratTomar/unmixtns ``tta_experiments/run.sh``; docs/running.md, "Protocols")
DEFAULT_DELTA = {"cifar10": 0.1, "cifar100": 0.01, "imagenet": 0.01, "demo": 0.1}
DEFAULT_SEED = 2020
DEFAULT_BATCH_SIZE = 64
#: test batch per dataset when ``batch_size`` is None: the same scripts' TEST.BATCH_SIZE
DATASET_BATCH_SIZE = {"imagenet": 16}
DEFAULT_SEVERITY = 5


@dataclass
class RunConfig:
    """Everything that determines a run.

    Defaults follow the UnMix-TNS scripts (docs/running.md, "Protocols"): severity 5, seed
    2020, batch 64 (16 on ImageNet-C), δ per dataset when ``delta="default"``. Label
    correlation is off by default (``delta=None``), which is the plain ``continual``
    setting; the UnMix-TNS paper's non-i.i.d. settings add ``delta="default"``.
    ``protocol="reference"`` draws the reference framework's exact sample order.
    """

    method: str | None = None
    """None: ``tta.adaptation.default_method`` of the model (``regime-aware``; ``source`` for a model it cannot run);
    results record the method that ran."""
    shift: str = "continual"
    dataset: str = "auto"
    data_dir: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    norm: str | None = None
    """Norm kind the checkpoint was trained with; None reads it from the ``tta train`` record beside it."""
    norm_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    domains: list[str] | None = None
    severity: int = DEFAULT_SEVERITY
    batch_size: int | None = None
    """None: 64, or 16 on ImageNet-C (``DATASET_BATCH_SIZE``)."""
    n_examples: int | None = None
    seed: int = DEFAULT_SEED
    delta: float | str | None = None  # a float, "default" (per dataset) or None (no correlation)
    sort_labels: bool = False
    order_file: str | None = None
    download: bool = False
    threads: int | None = 1
    device: str = "auto"
    workers: int | None = None
    imagenet_subset: str | None = None
    """None: RobustBench's 5,000-image list, or all 50,000 images for label-correlated streams
    and ``n_examples`` runs, as the reference framework's ``create_imagenetc_dataset``."""
    protocol: str = "tta"
    """How the sample order is drawn: ``"tta"`` or ``"reference"`` (``tta.streams.build_order``)."""
    frost_dir: str | None = None
    """Frost textures for generated domains (else ``$TTA_FROST_DIR`` or an imagecorruptions wheel)."""
    source_data: str | None = None
    """Clean source images (.npy, uint8 NHWC) for methods that need them (eata); the method's ``source_data``."""
    precision: str = "fp32"
    """Autocast precision of every step: "fp32", "bf16" (CPU or GPU) or "fp16" (GPU; ``Adapter.set_precision``)."""


def as_config(config: RunConfig | Mapping[str, Any]) -> RunConfig:
    """A ``RunConfig`` from itself or a mapping of its fields; unknown keys are an error naming them."""
    if isinstance(config, RunConfig):
        return config
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(f"unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return RunConfig(**dict(config))
