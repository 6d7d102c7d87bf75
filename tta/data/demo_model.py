"""The demo's source model: a small BatchNorm CNN trained on clean digits on first use.

Training takes a few seconds on one CPU thread; the weights are cached atomically
in ``<cache>/demo/`` and reused, so later demo runs start at once.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import save_torch
from .demo import demo_split
from .paths import cache_dir

log = logging.getLogger(__name__)

WEIGHTS_NAME = "digits-cnn-v1.pt"
TRAIN_SEED = 0
EPOCHS = 15


class DemoCNN(nn.Module):
    """conv-BN-ReLU ×4 with two poolings, global average pool, linear; takes [0, 1] RGB."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x - 0.5))


def demo_weights_path() -> Path:
    return cache_dir() / "demo" / WEIGHTS_NAME


def train_demo_model(epochs: int | None = None) -> DemoCNN:
    """Train the demo CNN on the 1,000 clean training digits (deterministic on CPU)."""
    epochs = epochs or EPOCHS
    (images, labels), _ = demo_split()
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    torch.manual_seed(TRAIN_SEED)
    model = DemoCNN()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * ((len(y) + 63) // 64))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            xb = x[idx]
            # small random shifts so the model does not memorize pixel positions
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def load_demo_model(path: Path | None = None, *, retrain: bool = False) -> tuple[DemoCNN, Path]:
    """The cached demo model, training and caching it first when absent."""
    path = path or demo_weights_path()
    model = DemoCNN()
    if path.is_file() and not retrain:
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval(), path
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            log.warning("demo weights at %s are unreadable (%s); retraining", path, exc)
    log.warning("training the demo source model on first use (a few seconds); caching it at %s", path)
    model = train_demo_model()
    save_torch(model.state_dict(), path)
    return model, path


def demo_clean_accuracy(model: nn.Module) -> float:
    """Accuracy of ``model`` on the clean demo test digits."""
    _, (images, labels) = demo_split()
    with torch.no_grad():
        pred = model(torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)).argmax(1).numpy()
    return float(np.mean(pred == labels))

