"""Stage two of a run: its settings resolved into data, a stream, a model and the adapter around it.

``prepare`` fails fast, before any image is adapted on; ``prepare_stream`` stops before
the model, which is enough to fingerprint a run (``tta sweep`` plans cells with it).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..adaptation import adapt, default_method
from ..data.domain_source import DomainSource
from ..data.paths import default_data_dir
from ..data.resolve import open_source
from ..errors import CheckpointError, InputError
from ..methods.regime_aware import unsupported_reason
from ..models import load_model, resolve_model_name
from ..models._zoo import default_model_dir, find_pretrained
from ..names import DEFAULT_METHOD
from ..precheck import check_settings
from ..runtime import configure_threads, pick_device
from ..streams import Stream, make_stream
from ..training import record_path, training_record
from ..validate import check_dataset_size
from .config import DATASET_BATCH_SIZE, DEFAULT_BATCH_SIZE, DEFAULT_DELTA, DEFAULT_MODELS, RunConfig
from .results import sha256_file

log = logging.getLogger(__name__)

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
    if config.method is None:
        reason = unsupported_reason(model)
        if reason is not None and config.options:
            raise InputError(f"no --method given and {DEFAULT_METHOD} cannot run on {model_info['name']} ({reason}), "
                             "so --option has no method to set; pass --method")
        config = replace(config, method=default_method(model))  # results record the method that ran
        if reason is not None:
            notes.append(f"no --method given: {DEFAULT_METHOD} cannot run on {model_info['name']} ({reason}), so the "
                         "model was not adapted (source); pass --method")
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
        from ..data.demo_model import load_demo_model  # noqa: PLC0415

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
