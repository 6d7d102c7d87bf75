"""Shared fixtures. Real data comes from ../shared (or $TTA_SHARED) and is never copied."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TTA_SHARED", REPO.parent / "shared")).expanduser()

# One thread: on 2-core machines torch's default 2 threads ran several times slower
# whenever another process shared the CPU.
torch.set_num_threads(1)


def shared_path(*parts: str) -> Path:
    """A path under the shared folder, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set TTA_SHARED to the folder holding data/ and models/")
    return path


@pytest.fixture(scope="session")
def cifar10_test() -> tuple[np.ndarray, np.ndarray]:
    """The shared CIFAR-10 test images (memory-mapped uint8 NHWC) and labels."""
    root = shared_path("data", "cifar10")
    return np.load(root / "test_images.npy", mmap_mode="r"), np.load(root / "test_labels.npy")


@pytest.fixture(scope="session")
def resnet20_checkpoint() -> Path:
    return shared_path("models", "cifar10", "resnet20.th")


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div_(255)
