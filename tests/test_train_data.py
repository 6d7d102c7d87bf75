"""Training data: readers of the clean sets and the batch augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tta.errors import DataError
from tta.training import load_images, random_crop_flip
from tta.training.data import find_test_split


def _candidates(image: torch.Tensor, padding: int = 4) -> list[torch.Tensor]:
    """Every crop (and its mirror) of the zero-padded image, built one by one."""
    h, w, _ = image.shape
    padded = F.pad(image, (0, 0, padding, padding, padding, padding))
    out = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            out += [crop, crop.flip(1)]
    return out


def test_random_crop_flip_yields_a_padded_crop_or_its_mirror() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (6, 8, 8, 3), dtype=torch.uint8, generator=g)
    out = random_crop_flip(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for img, aug in zip(images, out):
        assert any(torch.equal(aug, c) for c in _candidates(img))


def test_random_crop_flip_is_seeded_and_varies_per_image() -> None:
    images = torch.arange(64 * 8 * 8 * 3, dtype=torch.int64).remainder(251).add(1).to(torch.uint8).view(64, 8, 8, 3)
    a = random_crop_flip(images, torch.Generator().manual_seed(5))
    b = random_crop_flip(images, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    same = torch.stack([images[0]] * 64)
    out = random_crop_flip(same, torch.Generator().manual_seed(2))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 20  # 162 possible crops: 64 draws are far from all equal
    # zero padding shows up as black borders in some crops
    assert (out == 0).any()


def _write(tmp_path, split: str, n: int = 12, dtype=np.uint8) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / f"{split}_images.npy", rng.integers(0, 256, (n, 32, 32, 3)).astype(dtype))
    np.save(tmp_path / f"{split}_labels.npy", rng.integers(0, 10, n))


def test_load_images_from_file_or_folder_and_find_test_split(tmp_path) -> None:
    _write(tmp_path, "train", 12)
    _write(tmp_path, "test", 5)
    by_file = load_images(tmp_path / "train_images.npy")
    by_dir = load_images(tmp_path)
    assert len(by_file) == len(by_dir) == 12
    assert isinstance(by_file.images, np.memmap)
    np.testing.assert_array_equal(by_file.labels, np.load(tmp_path / "train_labels.npy"))
    assert len(find_test_split(tmp_path / "train_images.npy")) == 5
    assert len(find_test_split(tmp_path)) == 5


def test_load_images_errors_name_the_fix(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_images(tmp_path / "nothing")
    _write(tmp_path, "train", 4, dtype=np.float32)
    with pytest.raises(DataError, match="uint8"):
        load_images(tmp_path)
    np.save(tmp_path / "train_images.npy", np.zeros((4, 32, 32, 3), np.uint8))
    np.save(tmp_path / "train_labels.npy", np.zeros(3, np.int64))
    with pytest.raises(DataError, match="4 images but labels"):
        load_images(tmp_path)
    (tmp_path / "train_labels.npy").unlink()
    with pytest.raises(DataError, match="train_labels.npy does not exist"):
        load_images(tmp_path / "train_images.npy")


def _write_torchvision_cifar10(root, n_per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python folder in the official layout (pickled dicts, CHW rows), small batches."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    rows = rng.integers(0, 256, (len(names) * n_per_batch, 3 * 32 * 32), dtype=np.uint8)
    labels = rng.integers(0, 10, len(rows))
    for i, name in enumerate(names):
        sl = slice(i * n_per_batch, (i + 1) * n_per_batch)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows[sl], "labels": labels[sl].tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(k) for k in range(10)]}, f)
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def test_torchvision_cifar_folder_is_read_as_nhwc_with_its_test_split(tmp_path, monkeypatch) -> None:
    import torchvision

    images, labels = _write_torchvision_cifar10(tmp_path)
    # torchvision checks the official MD5s before it unpickles; these synthetic files cannot match them
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train_set = load_images(path, "train")
        assert train_set.images.dtype == np.uint8 and train_set.images.shape == (20, 32, 32, 3)
        np.testing.assert_array_equal(train_set.images, images[:20])
        np.testing.assert_array_equal(train_set.labels, labels[:20])
        test_set = find_test_split(path)
        np.testing.assert_array_equal(test_set.images, images[20:])
        np.testing.assert_array_equal(test_set.labels, labels[20:])


def test_cifar_python_folder_is_read_without_torchvision_and_refuses_foreign_pickles(tmp_path) -> None:
    # tta.data.imagesets reads the batches with an arrays-only unpickler, so no checksum is needed before loading,
    # and a batch that references any other object is refused with a clear error.
    import pickle

    images, labels = _write_torchvision_cifar10(tmp_path)
    np.testing.assert_array_equal(load_images(tmp_path, "train").images, images[:20])
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": __import__("collections").OrderedDict(), "labels": []}, f)
    with pytest.raises(DataError, match="re-download"):
        load_images(tmp_path, "train")