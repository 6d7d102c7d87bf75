"""Checksum-verified download of CIFAR-10-C / CIFAR-100-C from Zenodo, with a progress bar.

Record numbers, file sizes and MD5 sums are the ones Zenodo lists (records
2535967 and 3555552, as used by RobustBench's ``zenodo_download``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tarfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DataError

log = logging.getLogger(__name__)

ARCHIVES = {
    "cifar10": ("https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1", "CIFAR-10-C.tar",
                "56bf5dcef84df0e2308c6dcbcbbd8499"),
    "cifar100": ("https://zenodo.org/records/3555552/files/CIFAR-100-C.tar?download=1", "CIFAR-100-C.tar",
                 "11f0ed0f1191edbf9fa23466ae6021d3"),
}
HOST = "zenodo.org"


def network_available(host: str = HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def download_cifar_c(data_dir: str | Path, dataset: str = "cifar10") -> Path:
    """Download, MD5-check and unpack the CIFAR-C archive into ``data_dir``; return the folder.

    The archive is fetched to ``<name>.part`` (resumed if present), renamed once
    its MD5 matches, and unpacked into a temporary folder that is renamed into place.
    """
    url, name, md5 = ARCHIVES[dataset]
    root = Path(data_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    archive = root / name
    if not archive.is_file():
        part = archive.with_suffix(".part")
        _fetch(url, part)
        got = _md5(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise DataError(f"downloaded {name} has MD5 {got}, expected {md5}; the download was corrupted, run again")
        os.replace(part, archive)
    target = root / name.removesuffix(".tar")
    tmp = root / f".{target.name}.unpacking"
    if tmp.exists():  # left by an interrupted unpack: start it over from the kept archive
        shutil.rmtree(tmp)
    try:
        with tarfile.open(archive) as tar:
            extract_safely(tar, tmp)
    except (tarfile.TarError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} is not a readable tar archive ({exc}); delete it and run again to re-download") from None
    except DataError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not (tmp / target.name).is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} holds no {target.name}/ folder; delete it and run again to re-download")
    if target.exists():
        shutil.rmtree(target)  # an unpack that was cut short before the rename cannot leave one; an old copy can
    os.replace(tmp / target.name, target)
    shutil.rmtree(tmp)
    return target


def extract_safely(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack the regular files and folders of ``tar`` under ``dest``, refusing anything that could escape it.

    Written out rather than ``extractall(filter="data")``, which Python gained only in 3.11.4 / 3.10.12 (and
    3.12): a member with an absolute name or a ``..`` part, a link of any kind, a device or FIFO raises
    ``DataError`` naming it before anything is written. Files get mode 0644, folders 0755, as the data filter."""
    members = tar.getmembers()
    for m in members:
        parts = m.name.replace("\\", "/").split("/")
        if m.name.startswith("/") or (len(m.name) > 1 and m.name[1] == ":") or ".." in parts:
            raise DataError(f"archive member {m.name!r} points outside the target folder; the archive is not "
                            "the published one, delete it and run again")
        if not (m.isfile() or m.isdir()):
            kind = "link" if (m.issym() or m.islnk()) else "special file"
            raise DataError(f"archive member {m.name!r} is a {kind}; CIFAR-C archives hold only files and folders, "
                            "delete the archive and run again")
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    for m in members:
        path = (base / m.name).resolve()
        if path != base and base not in path.parents:
            raise DataError(f"archive member {m.name!r} resolves outside {dest}; delete the archive and run again")
        if m.isdir():
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
            continue
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        src = tar.extractfile(m)
        assert src is not None  # a regular file always has data
        with src, open(path, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        path.chmod(0o644)


def _fetch(url: str, part: Path) -> None:
    done = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310  (fixed https URL)
            if done and resp.status != 206:
                done = 0
            total = int(resp.headers.get("Content-Length", 0)) + done
            with open(part, "ab" if done else "wb") as f, tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=part.name) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise DataError(f"download of {url} failed ({exc}); check the network and rerun (it resumes)") from None


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324  (Zenodo publishes MD5)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
