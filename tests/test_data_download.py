"""The CIFAR-C downloader, exercised offline against a local file:// archive."""
from __future__ import annotations

import hashlib
import tarfile

import numpy as np
import pytest

from tta.data import CifarCSource
from tta.data import download as dl
from tta.errors import DataError


@pytest.fixture()
def archive(tmp_path):
    src = tmp_path / "src" / "CIFAR-10-C"
    src.mkdir(parents=True)
    np.save(src / "fog.npy", np.full((10, 4, 4, 3), 9, dtype=np.uint8))
    np.save(src / "labels.npy", np.tile(np.arange(2), 5))
    tar_path = tmp_path / "CIFAR-10-C.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(src, arcname="CIFAR-10-C")
    return tar_path, hashlib.md5(tar_path.read_bytes()).hexdigest()


def test_download_checks_md5_and_unpacks(tmp_path, archive, monkeypatch):
    tar_path, md5 = archive
    monkeypatch.setitem(dl.ARCHIVES, "cifar10", (tar_path.as_uri(), "CIFAR-10-C.tar", md5))
    data = tmp_path / "data"
    folder = dl.download_cifar_c(data, "cifar10")
    assert folder == data / "CIFAR-10-C"
    assert (data / "CIFAR-10-C.tar").read_bytes() == tar_path.read_bytes()
    assert sorted(p.name for p in data.iterdir()) == ["CIFAR-10-C", "CIFAR-10-C.tar"]  # no partial or temp files
    dom = CifarCSource(data).domain("fog", 2)
    assert len(dom) == 2 and int(dom.images.max()) == 9


def test_download_with_wrong_md5_keeps_nothing(tmp_path, archive, monkeypatch):
    tar_path, _ = archive
    monkeypatch.setitem(dl.ARCHIVES, "cifar10", (tar_path.as_uri(), "CIFAR-10-C.tar", "0" * 32))
    data = tmp_path / "data"
    with pytest.raises(DataError, match="MD5"):
        dl.download_cifar_c(data, "cifar10")
    assert list(data.iterdir()) == []
