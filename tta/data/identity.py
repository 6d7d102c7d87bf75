"""What tells one copy of a dataset from another, by content rather than by file metadata.

A saved partial run must only resume on the data it started on. Modification
times are the wrong test: copying a folder back, re-extracting an archive or
re-provisioning a shared mount gives identical images new times (and a partial
run would silently restart from batch 0), while two different copies of a
corrupted test set can share a path and a time. So a file is named by its size and a
digest of its content: the whole file when it is small, otherwise
:data:`SAMPLES` evenly spaced chunks of :data:`CHUNK` bytes, the first and last
included. Reading about a megabyte keeps this cheap on 150 MB CIFAR-10-C files;
two different generations or downloads of a dataset differ throughout, so the
samples tell them apart. A file edited only between the samples keeps its
identity: regenerate into a fresh file, or start over with ``--fresh``.

Each domain names itself with :meth:`tta.data.domain.Domain.identity` (a folder of
image files overrides it); this module holds the file digest they share.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

#: chunks read from a large file; their bytes and offsets make its digest
SAMPLES = 16
#: bytes per chunk
CHUNK = 64 << 10
#: files of a folder-backed domain (one image per file) whose whole content is digested
FILES_PER_FOLDER = 8


def file_digest(path: str | Path) -> str:
    """``"<size>:<sha256 of the sampled content>"`` of a file (whole content up to SAMPLES * CHUNK bytes)."""
    st = os.stat(path)
    return _digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001  (mtime only keys the cache)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= SAMPLES * CHUNK:
            h.update(f.read())
        else:
            step = (size - CHUNK) / (SAMPLES - 1)
            for i in range(SAMPLES):
                offset = round(i * step)
                f.seek(offset)
                h.update(offset.to_bytes(8, "little"))
                h.update(f.read(CHUNK))
    return f"{size}:{h.hexdigest()}"
