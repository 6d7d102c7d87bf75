"""One run: data -> stream -> model -> adapter -> online metrics -> result document.

``run_experiment(RunConfig(...))`` returns the result document of one pass in
memory; ``tta.run`` (tta/runner.py) adds output files and resuming on top of it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .adaptation import adapt
from .data import default_data_dir, open_source
from .data.source import DomainSource
from .errors import CheckpointError, InputError
from .evaluate import OnlineMetrics, evaluate
from .models import load_model, resolve_model_name
from .models.registry import default_model_dir, find_pretrained
from .precheck import check_settings
from .results import build_result, sha256_file
from .runtime import configure_threads, pick_device, runtime_info, versions
from .streams import Stream, make_stream
from .training import record_path, training_record
from .validate import check_dataset_size

log = logging.getLogger(__name__)

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

    method: str = "source"
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


@dataclass
class Prepared:
    """The pieces of a run before the loop starts."""

    config: RunConfig
    source: DomainSource
    stream: Stream
    adapted: nn.Module
    model_info: dict[str, Any]
    hparams: dict[str, Any]
    notes: list[str]
    device: Any


def prepare_stream(
    config: RunConfig, confirm_download: Callable[[str], bool] | None = None
) -> tuple[RunConfig, DomainSource, Stream, list[str]]:
    """The data and the stream of a run, without the model: enough to fingerprint it (``tta sweep`` does).

    Returns the config with its per-dataset defaults resolved (batch size, ImageNet subset), as results record it."""
    config = RunConfig(**check_settings(asdict(config)))  # the method's registered name; shift@delta split
    data_dir = Path(config.data_dir).expanduser() if config.data_dir else default_data_dir()
    subset = config.imagenet_subset
    if subset is None:  # the reference reads all 50,000 ids for correlated streams and NUM_EX runs
        subset = "50000" if config.delta is not None or config.sort_labels or config.n_examples else "5000"
    # the demo stands in only when no data location was given: a named folder without data is an error
    named = config.data_dir is not None or bool(os.environ.get("TTA_DATA"))
    source, notes = open_source(
        config.dataset, data_dir, download=config.download, confirm_download=confirm_download,
        imagenet_subset=subset, frost_dir=config.frost_dir, demo_fallback=not named,
    )
    delta = config.delta
    if delta == "default":
        delta = DEFAULT_DELTA.get(source.dataset, 0.1)
    batch_size = config.batch_size or DATASET_BATCH_SIZE.get(source.dataset, DEFAULT_BATCH_SIZE)
    if source.dataset != "imagenet":  # the subset means nothing elsewhere
        if config.imagenet_subset is not None:
            raise InputError(f"--imagenet-subset applies to ImageNet-C only, not {source.label}; drop it")
        subset = None
    config = replace(config, batch_size=batch_size, imagenet_subset=subset)  # results record the resolved values
    stream = make_stream(
        source, config.shift, domains=config.domains, severity=config.severity, batch_size=batch_size,
        seed=config.seed, n_examples=config.n_examples, delta=delta, sort_labels=config.sort_labels,
        order_file=config.order_file, num_workers=config.workers, protocol=config.protocol,
    )
    used = stream.order.meta.get("n_examples")
    if config.n_examples is not None and not config.order_file and used != config.n_examples:
        notes.append(f"--n-examples {config.n_examples}: the domains hold fewer images, so {used} per domain were used "
                     "(and are recorded)")
    return config, source, stream, notes


def prepare(config: RunConfig, confirm_download: Callable[[str], bool] | None = None) -> Prepared:
    """Resolve data, stream, model and method; fails fast, before any image is adapted on."""
    threads = configure_threads(config.threads)
    device = pick_device(config.device)
    config, source, stream, notes = prepare_stream(config, confirm_download)
    model, model_info = _load_model(config, source)
    if len(stream):
        check_dataset_size(tuple(stream.batch(0).x.shape[-2:]), model, source.label)
    torch.manual_seed(config.seed)  # methods that draw from torch's global RNG are reproducible too
    # the library resolves the method's defaults for this dataset and shift, as tta.adapt does for any caller
    options = {**config.options, **({"source_data": config.source_data} if config.source_data else {})}
    adapted = adapt(model.to(device), method=config.method, dataset=source.dataset, shift=config.shift,
                    run_seed=config.seed, run_batch_size=config.batch_size, precision=config.precision, **options)
    hparams = adapted.hparams()
    if hparams.get("stats") == "none" and "stats" not in config.options:
        notes.append(f"{model_info['name']} has no BatchNorm ({model_info.get('norm')}): {config.method} adapts "
                     "the affine parameters of its norm layers (stats='none')")
    log.info("%s on %s with %d thread(s)", config.method, source.label, threads)
    return Prepared(config, source, stream, adapted, model_info, hparams, notes, device)


def _load_model(config: RunConfig, source: DomainSource) -> tuple[nn.Module, dict[str, Any]]:
    if source.is_demo:
        if (config.model or config.checkpoint) and config.data_dir and not Path(config.data_dir).expanduser().is_dir():
            raise InputError(
                f"--data-dir {config.data_dir} does not exist; pass the folder holding CIFAR-10-C/ "
                "(or add --dataset cifar10 --download to fetch it there)"
            )
        if config.model or config.checkpoint:
            raise InputError("the demo brings its own source model; drop --model/--checkpoint or pick another --dataset")
        from .data.demo_model import load_demo_model  # noqa: PLC0415

        model, path = load_demo_model()
        return model, {"name": "demo-cnn", "checkpoint": str(path), "checkpoint_sha256": sha256_file(path)}
    name = config.model
    if name is None:
        name = DEFAULT_MODELS[source.dataset]
        spec = resolve_model_name(name)
        if config.checkpoint is None and find_pretrained(spec) is None and spec.torch_hub_file:
            where = Path(torch.hub.get_dir()) / "checkpoints" / spec.torch_hub_file
            raise CheckpointError(
                f"no --model given and the default, torchvision's {spec.name} ({spec.torch_hub_file}), is not at {where}; "
                f"pass --model {spec.name} --checkpoint /path/to/{spec.torch_hub_file} or place the file there"
            )
        if config.checkpoint is None and find_pretrained(spec) is None:
            where = default_model_dir() / spec.dataset / "corruptions" / f"{spec.robustbench_name}.pt"
            raise CheckpointError(
                f"no --model given and the default, RobustBench's '{spec.robustbench_name}' {spec.name}, is not at {where}; "
                f"pass --model {spec.name} --checkpoint /path/to/{spec.robustbench_name}.pt, or a CIFAR ResNet such as "
                "--model resnet20 --checkpoint /path/to/resnet20.th, or place the file at that path ($TTA_MODEL_DIR)"
            )
    spec = resolve_model_name(name)
    if config.checkpoint is None and find_pretrained(spec) is None:
        if spec.torch_hub_file:
            where = f"at {Path(torch.hub.get_dir()) / 'checkpoints' / spec.torch_hub_file}"
        elif spec.robustbench_name:
            where = f"at {default_model_dir() / spec.dataset / 'corruptions' / (spec.robustbench_name + '.pt')}"
        else:
            where = "(it has no published weights; train one with `tta train`)"
        raise CheckpointError(f"no weights for --model {spec.name} {where}; pass --checkpoint /path/to/weights")
    if spec.num_classes != source.num_classes:
        raise InputError(
            f"model {spec.name} predicts {spec.num_classes} classes but {source.label} has {source.num_classes}; "
            "pick a model trained on that dataset (tta list models)"
        )
    norm, norm_options = _norm_for(config, spec.name)
    model = load_model(name, checkpoint=config.checkpoint, norm=norm, **norm_options)
    ckpt = Path(config.checkpoint).expanduser() if config.checkpoint else find_pretrained(spec)
    return model, {
        "name": spec.name,
        "checkpoint": str(ckpt) if ckpt else None,
        "checkpoint_sha256": sha256_file(ckpt) if ckpt else None,
        "norm": norm or spec.default_norm,
        "norm_options": norm_options,
    }


def _norm_for(config: RunConfig, model_name: str) -> tuple[str | None, dict[str, Any]]:
    """``--norm`` when given; else the norm in the ``tta train`` record beside the checkpoint; else the model's own."""
    if config.norm is not None or config.checkpoint is None:
        return config.norm, dict(config.norm_options)
    record = training_record(config.checkpoint)
    if record is None:
        return None, dict(config.norm_options)
    if record.get("model") != model_name:
        raise InputError(
            f"{config.checkpoint} was trained as {record.get('model')!r} (its record {record_path(config.checkpoint)} "
            f"says so), not {model_name!r}; pass --model {record.get('model')}"
        )
    log.info("norm %s %s from the training record of %s", record["norm"], record.get("norm_options") or "",
             config.checkpoint)
    return record["norm"], {**(record.get("norm_options") or {}), **config.norm_options}


def finish(prepared: Prepared, metrics: OnlineMetrics) -> dict[str, Any]:
    """The result document of a finished run."""
    cfg = prepared.config
    stream_info = prepared.stream.describe()
    return build_result(
        method=cfg.method,
        hparams=prepared.hparams,
        model=prepared.model_info,
        data={**prepared.source.describe(), "notes": prepared.notes},
        stream=stream_info,
        metrics=metrics.as_dict(),
        runtime={**runtime_info(prepared.device), "config": {k: v for k, v in asdict(cfg).items()}},
        versions=versions(),
    )


def run_experiment(config: RunConfig, *, progress: bool = False) -> dict[str, Any]:
    """Prepare, run the online loop once, and return the result document (no files; see ``tta.run``)."""
    prepared = prepare(config)
    metrics = evaluate(prepared.adapted, prepared.stream, device=prepared.device, progress=progress)
    return finish(prepared, metrics)
