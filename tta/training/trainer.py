"""Train a backbone with any normalization layer on a clean set, resumably.

SGD (momentum 0.9, Nesterov, weight decay 5e-4; AdamW on request, for ViTs) with a OneCycle (default) or
cosine learning-rate schedule, batch-level random-crop + flip augmentation,
channels_last on CPU unless group norms make NCHW faster. Every epoch writes ``<out stem>.resume.pt`` atomically
(model, optimizer, scheduler, epoch, RNG states: tensors and plain containers
only, so it loads with ``weights_only=True``). The end writes ``out`` (a plain
``state_dict`` for ``tta.load_model(name, checkpoint=out, norm=...)``) and a
JSON record ``<out stem>.json``.
"""
from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import CheckpointError, InputError, TTAError
from ..models import build_model, resolve_model_name
from ..atomic import save_torch, write_json
from ..schema import TRAINING_RECORD, check
from ..runtime import prefers_channels_last
from .augment import random_crop_flip
from .data import ImageArrays, load_images, find_test_split

log = logging.getLogger(__name__)

SCHEDULES = ("onecycle", "cosine")
OPTIMIZERS = ("sgd", "adamw")
#: optimizer, peak lr and weight decay when neither the user nor the model's ``train_recipe`` sets them
CNN_RECIPE = {"optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4}
# Fields that must agree between a resume checkpoint and the run that continues it.
_RESUME_KEYS = (
    "model", "norm", "norm_options", "epochs", "batch_size", "lr", "momentum", "weight_decay",
    "schedule", "pct_start", "seed", "limit_train", "optimizer",
)


@dataclass
class TrainConfig:
    """Everything that determines a training run; stored in the record and the resume file."""

    model: str
    data: str
    out: str
    norm: str | None = None
    """Norm kind (``tta list norms``); None takes the model's default (bn for CNNs, ln for ViTs)."""
    norm_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    lr: float | None = None
    """Peak learning rate (OneCycle) or initial one (cosine); None: the model's recipe (0.2 CNN, 1e-3 ViT)."""
    momentum: float = 0.9
    weight_decay: float | None = None
    """None: the model's recipe (5e-4 CNN, 0.05 ViT)."""
    optimizer: str | None = None
    """``sgd`` (Nesterov, the CNN recipe) or ``adamw`` (the ViT recipe); None: the model's."""
    schedule: str = "onecycle"
    pct_start: float = 0.25
    """OneCycle: fraction of steps spent warming up to ``lr``."""
    seed: int = 0
    test_data: str | None = None
    limit_train: int | None = None
    """Train on a seeded random subset of this many images (smoke runs, tests)."""
    limit_test: int | None = None
    eval_batch_size: int = 500
    channels_last: bool | None = None
    """None: channels_last unless the model has group-norm layers (see tta.runtime.prefers_channels_last)."""

    def validate(self) -> None:
        spec = resolve_model_name(self.model)
        if self.norm is None:
            self.norm = spec.default_norm
        recipe = {**CNN_RECIPE, **spec.train_recipe}
        for key, value in recipe.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}; pass --epochs 1 or more")
        if self.batch_size < 2:
            raise InputError(f"batch size must be >= 2 for batch statistics, got {self.batch_size}; pass --batch-size 2 or more")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate must be a positive number, got {self.lr}; pass e.g. --lr 0.1")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if not 0 < self.pct_start < 1:
            raise InputError(f"pct_start must lie in (0, 1), got {self.pct_start}; e.g. 0.25")


def resume_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".resume.pt")


def record_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".json")


RECORD_SCHEMA = "tta.train_record"


def training_record(checkpoint: str | Path) -> dict[str, Any] | None:
    """The JSON record ``tta train`` wrote beside ``checkpoint``, or None when there is none."""
    path = record_path(checkpoint)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path} beside the checkpoint is not readable JSON ({exc}); pass --norm explicitly or move that file"
        ) from None
    # records written before the schema field carry these keys
    is_record = isinstance(doc, dict) and (
        doc.get("schema") == RECORD_SCHEMA or {"model", "norm", "hyperparameters", "config"} <= set(doc)
    )
    if not is_record:
        return None
    return check(doc, TRAINING_RECORD, what=f"training record {path} beside the checkpoint",
                 fix="pass --norm (and --norm-option) explicitly, or move that file away")


def _to_input(batch: torch.Tensor) -> torch.Tensor:
    # (B,H,W,3) uint8 -> (B,3,H,W) float in [0,1] whose memory is already channels_last
    return batch.permute(0, 3, 1, 2).float().div_(255)


def eval_rows(n_total: int, limit: int | None) -> np.ndarray:
    """Rows to evaluate: all, or ``limit`` evenly spaced ones (datasets may be sorted by class)."""
    if limit is None or limit >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, limit).round().astype(np.int64))


@torch.no_grad()
def offline_accuracy(model: nn.Module, data: ImageArrays, batch_size: int = 500, limit: int | None = None) -> float:
    """Top-1 accuracy of ``model`` in eval mode on ``data`` (or ``limit`` evenly spaced images)."""
    was_training = model.training
    model.eval()
    rows = eval_rows(len(data), limit)
    correct = 0
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        x = _to_input(torch.from_numpy(data.images[idx]))
        y = torch.from_numpy(data.labels[idx])
        correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return correct / max(len(rows), 1)


def _training_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )


def _make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        # momentum stays at cfg.momentum: cycling it would break the fixed-momentum SGD recipe
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, pct_start=cfg.pct_start, cycle_momentum=False
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


def _index_pool(cfg: TrainConfig, n: int) -> torch.Tensor:
    if cfg.limit_train is None or cfg.limit_train >= n:
        return torch.arange(n)
    # rows of the shared set are sorted by class, so a prefix would hold one class only
    g = torch.Generator().manual_seed(cfg.seed + 1)
    return torch.randperm(n, generator=g)[: cfg.limit_train]


def train(
    cfg: TrainConfig, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Run (or continue, with ``resume``) the training ``cfg`` describes; return the JSON record.

    ``stop_after`` ends this run after that epoch (its resume checkpoint written)
    so a long training can be split into time-boxed runs; the result is then a
    short dict naming the resume file instead of the record.
    """
    cfg.validate()
    t_start = time.perf_counter()
    train_set = load_images(cfg.data, "train")
    test_set = load_images(cfg.test_data, "test") if cfg.test_data else find_test_split(cfg.data)
    pool = _index_pool(cfg, len(train_set))
    steps = len(pool) // cfg.batch_size
    if steps == 0:
        raise InputError(
            f"batch size {cfg.batch_size} exceeds the {len(pool)} training images; lower --batch-size"
        )
    n_classes = resolve_model_name(cfg.model).num_classes
    if int(train_set.labels.max()) >= n_classes:
        raise InputError(
            f"labels reach {int(train_set.labels.max())} but {cfg.model} has {n_classes} classes; "
            "pick a --model built for this dataset"
        )

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.norm, **cfg.norm_options)
    channels_last = cfg.channels_last if cfg.channels_last is not None else prefers_channels_last(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = _training_optimizer(cfg, model)
    sched = _make_scheduler(cfg, opt, cfg.epochs * steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = resume_path(cfg.out)
    if resume:
        start_epoch, history = _restore(ckpt, cfg, model, opt, sched, gen)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        order = pool[torch.randperm(len(pool), generator=gen)]
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, mininterval=5)
        for step in bar:
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size].numpy())
            x = _to_input(random_crop_flip(torch.from_numpy(train_set.images[idx]), gen))
            y = torch.from_numpy(train_set.labels[idx])
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise TTAError(
                    f"training diverged at epoch {epoch + 1} step {step + 1} (loss {loss.item()}); lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.4f}")
        seen = steps * cfg.batch_size
        entry = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / seen,
            "train_acc": float(correct) / seen,
            "seconds": time.perf_counter() - t0,
        }
        history.append(entry)
        log.info("epoch %d/%d loss %.4f train acc %.4f (%.0f s)", epoch + 1, cfg.epochs,
                 entry["train_loss"], entry["train_acc"], entry["seconds"])
        save_torch(
            {
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
            },
            ckpt,
        )
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < cfg.epochs:
            log.info("stopping after epoch %d as asked; continue with resume=True", epoch + 1)
            return {"stopped_after_epoch": epoch + 1, "resume_checkpoint": str(ckpt), "history": history}

    model.eval()
    save_torch(model.state_dict(), cfg.out)
    test_acc = offline_accuracy(model, test_set, cfg.eval_batch_size, cfg.limit_test)
    record = {
        "schema": RECORD_SCHEMA,
        "config": asdict(cfg),
        "seed": cfg.seed,
        "model": cfg.model,
        "norm": cfg.norm,
        "norm_options": cfg.norm_options,
        "epochs": cfg.epochs,
        "hyperparameters": {
            **({"optimizer": "AdamW"} if cfg.optimizer == "adamw" else
               {"optimizer": "SGD", "nesterov": True, "momentum": cfg.momentum}),
            "weight_decay": cfg.weight_decay,
            "lr": cfg.lr, "schedule": cfg.schedule, "pct_start": cfg.pct_start, "batch_size": cfg.batch_size,
            "augmentation": "random crop (zero padding 4) + horizontal flip",
        },
        "train_data": train_set.source,
        "train_images": int(len(pool)),
        "test_data": test_set.source,
        "test_images": int(len(eval_rows(len(test_set), cfg.limit_test))),
        "test_accuracy": test_acc,
        "history": history,
        "checkpoint": str(cfg.out),
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "seconds_this_run": time.perf_counter() - t_start,
    }
    write_json(record_path(cfg.out), record, sort_keys=True)
    log.info("test accuracy %.4f on %d images; wrote %s", test_acc, record["test_images"], cfg.out)
    return record


def _restore(
    path: Path,
    cfg: TrainConfig,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
) -> tuple[int, list[dict[str, float]]]:
    if not path.is_file():
        raise CheckpointError(f"no resume checkpoint at {path}; run once without --resume (or check --out)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable file means the same to the user)
        raise CheckpointError(f"resume checkpoint {path} is unreadable ({exc}); delete it and train from scratch") from None
    saved = state.get("config", {})
    now = asdict(cfg)
    # resume files from before the optimizer choice existed were all SGD runs
    diff = [k for k in _RESUME_KEYS if saved.get(k, "sgd" if k == "optimizer" else None) != now.get(k)]
    if diff:
        k = diff[0]
        raise CheckpointError(
            f"resume checkpoint {path} was written with {k}={saved.get(k)!r}, not {now.get(k)!r}; "
            "pass the same options as the first run or a new --out"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming %s after epoch %d", path, state["epoch"])
    return int(state["epoch"]), list(state["history"])
