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
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

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


def domain_identity(domain: Any) -> tuple[Any, ...]:
    """(key, content digest) of one domain: its array file, or the image files it reads from a folder.

    A folder-backed domain (ImageNet-C: ``paths``, one image per file) is named by the
    list of its files relative to its folder and the content of :data:`FILES_PER_FOLDER`
    of them, evenly spaced; a domain without a readable file keeps its source string.
    """
    key = domain.key
    paths = getattr(domain, "paths", None)
    source = str(getattr(domain, "source", ""))
    try:
        if paths is not None:
            root = Path(source)
            names = hashlib.sha256("\n".join(_relative(p, root) for p in paths).encode()).hexdigest()
            picks = [paths[round(i * (len(paths) - 1) / max(FILES_PER_FOLDER - 1, 1))]
                     for i in range(min(FILES_PER_FOLDER, len(paths)))]
            return (key, len(paths), names, tuple(file_digest(p) for p in picks))
        if source and os.path.isfile(source):
            return (key, file_digest(source))
    except OSError:
        pass
    return (key, source)


def _relative(path: Any, root: Path) -> str:
    p = Path(path)
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()
