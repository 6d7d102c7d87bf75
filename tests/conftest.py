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


# A CIFAR-10-C-layout folder built from the real test images: two Gaussian-noise "corruptions"
# at 5 severities, N per class per severity (200 images), small enough for CI.
SMALL_C_PER_CLASS = 20
SMALL_C_CORRUPTIONS = {"noise_low": 0.04, "noise_high": 0.12}


@pytest.fixture(scope="session")
def small_cifar_c_dir(tmp_path_factory, cifar10_test) -> Path:
    """<tmp>/CIFAR-10-C/{noise_low,noise_high}.npy (5N,32,32,3) uint8 + labels.npy (5N,)."""
    images, labels = cifar10_test
    pick = np.concatenate([np.flatnonzero(labels == k)[:SMALL_C_PER_CLASS] for k in range(10)])
    clean, y = np.asarray(images[pick]), labels[pick]
    root = tmp_path_factory.mktemp("data")
    folder = root / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, sigma in SMALL_C_CORRUPTIONS.items():
        sev = []
        for s in range(1, 6):  # severity s: noise std sigma * s / 5
            noisy = clean / 255.0 + rng.normal(0, sigma * s / 5, clean.shape)
            sev.append((np.clip(noisy, 0, 1) * 255).astype(np.uint8))
        np.save(folder / f"{name}.npy", np.concatenate(sev))
    np.save(folder / "labels.npy", np.tile(y, 5).astype(np.uint8))
    return root


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """48 training and 20 test images whose class is written in the mean colour, so it is learnable."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("test", 20)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 32, 32, 3)) + (labels * 20)[:, None, None, None]
        np.save(root / f"{split}_images.npy", images.astype(np.uint8))
        np.save(root / f"{split}_labels.npy", labels)
    return root


def random_cifar_c(root: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """A CIFAR-10-C-layout folder of random gaussian_noise images (n per severity) and a random
    ResNet-20 checkpoint under ``root``: (data folder, checkpoint), for CLI tests that need no real data."""
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.save(folder / "gaussian_noise.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(n) % 10, 5).astype(np.uint8))
    ckpt = root / "rand20.pt"
    from tta import build_model  # noqa: PLC0415

    torch.manual_seed(0)
    torch.save(build_model("resnet20").state_dict(), ckpt)
    return root, ckpt
