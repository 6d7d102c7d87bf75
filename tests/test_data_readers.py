"""Dataset readers: clean sets, ImageNet-C labels, generated domains, memory-mapped CIFAR-C."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tta import load_model
from tta.cli.main import cli
from tta.data.cifar_c import CifarCSource
from tta.data.clean import load_clean
from tta.data.imagenet_c import ImageNetCSource, imagenet_wnids
from tta.data.generated import corruptions_module
from tta.streams import make_stream

from conftest import to_tensor


def test_wnid_list_is_the_sorted_ilsvrc_classes():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids))
    assert list(wnids) == sorted(wnids)
    # well-known anchors of the ILSVRC-2012 class index: 0 tench, 999 toilet tissue
    assert wnids[0] == "n01440764" and wnids[999] == "n15075141"


def test_imagenet_c_labels_follow_canonical_list_not_present_folders(tmp_path):
    from PIL import Image

    wnids = imagenet_wnids()
    picked = [wnids[3], wnids[500], wnids[998]]  # a partial copy: 3 of 1000 classes
    for w in picked:
        d = tmp_path / "ImageNet-C" / "fog" / "5" / w
        d.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * k + 10, dtype=np.uint8)).save(d / f"ILSVRC2012_val_{k}.JPEG")
    src = ImageNetCSource(tmp_path, subset="50000")
    dom = src.domain("fog", 5)
    assert sorted(dom.labels.tolist()) == [3, 3, 500, 500, 998, 998]
    stream = make_stream(src, "iid", domains=["fog"], batch_size=6, seed=0, num_workers=0)
    (batch,) = list(stream)
    assert batch.x.shape == (6, 3, 8, 8) and 0 <= float(batch.x.min()) and float(batch.x.max()) <= 1
    assert np.array_equal(batch.y.numpy(), dom.labels[batch.index.numpy()])
    # lazy decoding in DataLoader worker processes gives the same batches
    in_workers = make_stream(src, "iid", domains=["fog"], batch_size=2, seed=0, num_workers=2)
    in_main = make_stream(src, "iid", domains=["fog"], batch_size=2, seed=0, num_workers=0)
    pairs = list(zip(in_workers, in_main))
    assert len(pairs) == 3 and all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in pairs)


def test_torchvision_cifar_folder_is_read_without_md5(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (7, 3072), dtype=np.uint8)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": list(range(7))}, f)
    images, labels = load_clean(folder / "test_batch")
    assert images.shape == (7, 32, 32, 3) and labels.tolist() == list(range(7))
    # CHW row layout: channel 0 occupies the first 1024 bytes of a row
    assert np.array_equal(images[2, :, :, 0].ravel(), data[2, :1024])
    assert np.array_equal(images[2, :, :, 2].ravel(), data[2, 2048:])


def test_cifar_c_is_memory_mapped_and_sliced_by_severity(tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    x = np.arange(5 * 4 * 2 * 2 * 3, dtype=np.uint8).reshape(20, 2, 2, 3)
    np.save(folder / "fog.npy", x)
    np.save(folder / "labels.npy", np.tile(np.arange(4), 5))
    dom = CifarCSource(tmp_path).domain("fog", 3)
    assert isinstance(dom.images, np.memmap)
    assert np.array_equal(np.asarray(dom.images), x[8:12])
    got = dom.load(np.array([3, 0]))
    assert torch.equal(got, torch.from_numpy(x[[11, 8]]).permute(0, 3, 1, 2).float() / 255)


@pytest.mark.realdata
def test_generated_domains_match_direct_corruption(tmp_path, cifar10_test, resnet20_checkpoint):
    mod = corruptions_module()
    if mod is None:
        pytest.skip("tta.corruptions is not available")
    images, labels = cifar10_test
    pick = np.concatenate([np.flatnonzero(labels == k)[:12] for k in range(10)])
    clean = tmp_path / "cifar10"
    clean.mkdir()
    np.save(clean / "test_images.npy", np.asarray(images[pick]))
    np.save(clean / "test_labels.npy", labels[pick])
    out, order_path = tmp_path / "r.json", tmp_path / "o.json"
    result = CliRunner().invoke(cli, [
        "run", "-q", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--method", "source", "--model", "resnet20",
        "--checkpoint", str(resnet20_checkpoint), "--domains", "gaussian_noise,contrast", "--batch-size", "40",
        "--output", str(out), "--export-order", str(order_path),
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert "generating corruptions" in result.output and doc["data"]["generated"] is True
    model = load_model("resnet20", checkpoint=resnet20_checkpoint)
    x_clean, y = np.asarray(images[pick]), labels[pick]
    for name in ("gaussian_noise", "contrast"):
        corrupted = mod.corrupt(x_clean, name, 5, preset="cifar", seed=0, indices=np.arange(len(y)))
        with torch.no_grad():
            err = 100 * float(np.mean(model(to_tensor(corrupted)).argmax(1).numpy() != y))
        assert doc["metrics"]["domain_errors"][name] == pytest.approx(err)


class _Exploit:
    """Unpickling this would call os.system; a safe reader must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_batches_admit_arrays_only(tmp_path) -> None:
    from tta.data.clean import read_cifar_batch
    from tta.errors import DataError

    good = tmp_path / "test_batch"
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    good.write_bytes(pickle.dumps({"data": rows, "labels": [3, 7], "batch_label": "testing batch 1 of 1"}))
    images, labels = load_clean(good, "cifar10")
    np.testing.assert_array_equal(images, rows.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))
    assert labels.tolist() == [3, 7]
    evil = tmp_path / "evil_batch"
    evil.write_bytes(pickle.dumps({"data": _Exploit(), "labels": []}))
    with pytest.raises(DataError, match="posix.system|os.system|nt.system"):
        read_cifar_batch(evil)
