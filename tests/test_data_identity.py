"""Data identity for resumable runs: content decides, modification times and folder locations do not."""
from __future__ import annotations

import os
import shutil

import numpy as np

from tta.data.domain import ArrayDomain, open_npy
from tta.data.identity import CHUNK, SAMPLES, file_digest
from tta.data.imagenet_c import FileDomain


def _write(path, data: bytes, when: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(when, when))


def test_a_file_keeps_its_digest_through_a_copy_and_new_times_and_loses_it_when_sampled_bytes_change(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, SAMPLES * CHUNK * 3 + 123, dtype=np.uint8).tobytes()  # large: sampled
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    _write(a, data, 10**18)
    shutil.copyfile(a, b)  # new modification time, same bytes
    assert os.stat(a).st_mtime_ns != os.stat(b).st_mtime_ns
    assert file_digest(a) == file_digest(b)
    assert file_digest(a).startswith(f"{len(data)}:")
    middle = round((SAMPLES // 2) * (len(data) - CHUNK) / (SAMPLES - 1)) + CHUNK // 2  # inside an evenly spaced sample
    for offset in (0, middle, len(data) - 1):  # first chunk, a middle sample, last byte
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        _write(b, bytes(changed), 2 * 10**18 + offset)
        assert file_digest(b) != file_digest(a), offset
    _write(b, data[:-1], 3 * 10**18)  # truncated by one byte
    assert file_digest(b) != file_digest(a)


def test_a_small_file_is_digested_whole(tmp_path):
    data = bytes(range(256)) * 64
    a = tmp_path / "a.bin"
    _write(a, data, 10**18)
    before = file_digest(a)
    for offset in range(0, len(data), 997):  # any byte counts
        changed = bytearray(data)
        changed[offset] ^= 1
        _write(a, bytes(changed), 10**18 + offset + 1)
        assert file_digest(a) != before, offset
    _write(a, data, 5 * 10**18)
    assert file_digest(a) == before


def test_an_array_domain_is_named_by_its_file_content_not_its_path(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "x").mkdir()
    np.save(tmp_path / "x" / "snow.npy", data)
    shutil.copytree(tmp_path / "x", tmp_path / "y")
    labels = np.zeros(len(data), dtype=np.int64)

    def domain(folder, severity=5):
        path = tmp_path / folder / "snow.npy"
        return ArrayDomain(open_npy(path, "test"), labels, "snow", severity, str(path))

    one, two = domain("x"), domain("y")
    assert one.identity() == two.identity()
    assert one.identity() != ArrayDomain(one.images, labels, "snow", 4, one.source).identity()
    np.save(tmp_path / "y" / "snow.npy", data[::-1])
    assert one.identity() != domain("y").identity()
    embedded = ArrayDomain(data, labels, "fog", 5, "demo:embedded")
    assert embedded.identity() == ("fog@5", "demo:embedded")


def _folder_domain(root, files: dict[str, bytes], when: int) -> FileDomain:
    paths = []
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, data, when)
        paths.append(path)
    return FileDomain(paths, np.zeros(len(paths), dtype=np.int64), "fog", 5, str(root))


def test_a_folder_domain_is_named_by_its_file_list_and_their_content(tmp_path):
    files = {f"n{i % 3:02d}/img{i}.JPEG": bytes([i]) * (100 + i) for i in range(20)}
    here = _folder_domain(tmp_path / "a" / "fog" / "5", files, 10**18)
    moved = _folder_domain(tmp_path / "b" / "fog" / "5", files, 2 * 10**18)  # elsewhere, new times
    assert here.identity() == moved.identity()
    renamed = dict(files)
    renamed["n00/other.JPEG"] = renamed.pop("n00/img0.JPEG")
    assert _folder_domain(tmp_path / "c" / "fog" / "5", renamed, 10**18).identity() != here.identity()
    edited = dict(files)
    edited["n00/img0.JPEG"] = b"\x00" * 100 + b"\x01"  # the first file is always among those digested
    assert _folder_domain(tmp_path / "d" / "fog" / "5", edited, 10**18).identity() != here.identity()
