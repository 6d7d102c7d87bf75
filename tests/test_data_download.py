"""The CIFAR-C downloader, exercised offline against a local file:// archive."""
from __future__ import annotations

import hashlib
import tarfile

import numpy as np
import pytest

from tta.data.cifar_c import CifarCSource
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


def _without_extraction_filters(monkeypatch):
    """Python < 3.11.4 (Debian 12's 3.11.2): ``extractall`` has no ``filter`` argument and tarfile no filters."""
    original = tarfile.TarFile.extractall

    def old_extractall(self, path=".", members=None, *, numeric_owner=False, **kw):
        if kw:
            raise TypeError(f"TarFile.extractall() got an unexpected keyword argument {next(iter(kw))!r}")
        return original(self, path, members, numeric_owner=numeric_owner)

    monkeypatch.setattr(tarfile.TarFile, "extractall", old_extractall)
    for name in ("data_filter", "tar_filter", "fully_trusted_filter"):
        monkeypatch.delattr(tarfile, name, raising=False)


def test_download_unpacks_on_a_python_without_tar_filters(tmp_path, archive, monkeypatch):
    _without_extraction_filters(monkeypatch)
    tar_path, md5 = archive
    monkeypatch.setitem(dl.ARCHIVES, "cifar10", (tar_path.as_uri(), "CIFAR-10-C.tar", md5))
    folder = dl.download_cifar_c(tmp_path / "data", "cifar10")
    assert int(CifarCSource(tmp_path / "data").domain("fog", 1).images.max()) == 9
    assert oct((folder / "fog.npy").stat().st_mode & 0o777) == "0o644"


def test_unpack_resumes_from_the_kept_archive(tmp_path, archive, monkeypatch):
    """An unpack cut short leaves the archive and a temp folder; the rerun unpacks again without downloading."""
    tar_path, md5 = archive
    data = tmp_path / "data"
    data.mkdir()
    (data / "CIFAR-10-C.tar").write_bytes(tar_path.read_bytes())
    stale = data / ".CIFAR-10-C.unpacking" / "CIFAR-10-C"
    stale.mkdir(parents=True)
    (stale / "fog.npy").write_bytes(b"half")
    monkeypatch.setitem(dl.ARCHIVES, "cifar10", ("file:///nonexistent/never-fetched.tar", "CIFAR-10-C.tar", md5))
    dl.download_cifar_c(data, "cifar10")
    assert sorted(p.name for p in data.iterdir()) == ["CIFAR-10-C", "CIFAR-10-C.tar"]
    assert int(CifarCSource(data).domain("fog", 1).images.max()) == 9


def _member(tar, name, kind=tarfile.REGTYPE, data=b"x", linkname=""):
    import io

    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("bad", [
    ("CIFAR-10-C/../../escaped.npy", tarfile.REGTYPE, ""),
    ("/tmp/tta-absolute-escape.npy", tarfile.REGTYPE, ""),
    ("CIFAR-10-C/link.npy", tarfile.SYMTYPE, "../../escaped.npy"),
    ("CIFAR-10-C/hard.npy", tarfile.LNKTYPE, "/etc/passwd"),
    ("CIFAR-10-C/dev", tarfile.CHRTYPE, ""),
], ids=["dotdot", "absolute", "symlink-out", "hardlink", "device"])
@pytest.mark.parametrize("filters", [True, False], ids=["with-filters", "python-3.11.2"])
def test_malicious_archive_member_is_refused(tmp_path, monkeypatch, bad, filters):
    if not filters:
        _without_extraction_filters(monkeypatch)
    name, kind, link = bad
    tar_path = tmp_path / "evil" / "CIFAR-10-C.tar"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w") as tar:
        _member(tar, "CIFAR-10-C/labels.npy")
        _member(tar, name, kind, linkname=link)
    md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
    monkeypatch.setitem(dl.ARCHIVES, "cifar10", (tar_path.as_uri(), "CIFAR-10-C.tar", md5))
    data = tmp_path / "a" / "b" / "data"
    with pytest.raises(DataError, match="archive member"):
        dl.download_cifar_c(data, "cifar10")
    assert not (tmp_path / "a" / "escaped.npy").exists() and not (tmp_path / "escaped.npy").exists()
    assert not (data / "CIFAR-10-C").exists() and not (data / ".CIFAR-10-C.unpacking").exists()
    from pathlib import Path

    assert not Path("/tmp/tta-absolute-escape.npy").exists()
