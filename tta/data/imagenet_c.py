"""ImageNet-C folders: ``<data_dir>/ImageNet-C/<corruption>/<severity>/<wnid>/<file>.JPEG``.

Images are decoded lazily, one batch at a time, in DataLoader worker processes.
Class indices come from the canonical, sorted list of the 1,000 ILSVRC-2012 wnids
shipped with tta (``imagenet_wnids.txt``, the list timm ships as
``imagenet_synsets.txt``), never from whichever class folders exist on disk, so a
partial copy cannot shift the labels.

Which images: ``subset="5000"`` is RobustBench's 5,000-image list (read from an
installed ``robustbench`` package, or from a file given as ``subset``);
``subset="50000"`` is every image found.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .domain import Domain
from .identity import FILES_PER_FOLDER, file_digest
from .domain_source import BENCHMARK_CORRUPTIONS, DomainSource

FOLDER = "ImageNet-C"


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet wnids in class-index order (sorted)."""
    text = resources.files("tta.data").joinpath("imagenet_wnids.txt").read_text()
    wnids = tuple(text.split())
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    return wnids


def robustbench_5000_list() -> Path | None:
    """RobustBench's packaged 5,000-image list, located without importing robustbench."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "helper_files" / "imagenet_test_image_ids.txt"
    return path if path.is_file() else None


class FileDomain(Domain):
    """Image files decoded per batch."""

    preferred_workers = min(4, os.cpu_count() or 1)

    def __init__(self, paths: list[Path], labels: np.ndarray, name: str, severity: int, source: str) -> None:
        super().__init__(name, severity, labels, source)
        self.paths = paths

    def identity(self) -> tuple[Any, ...]:
        """(key, file count, digest of the file list relative to the folder, content digests of
        :data:`~tta.data.identity.FILES_PER_FOLDER` evenly spaced files): the same folder moved or
        re-extracted resumes, one with other or edited files does not."""
        paths = self.paths
        try:
            names = hashlib.sha256("\n".join(Path(os.path.relpath(p, self.source)).as_posix()
                                             for p in paths).encode()).hexdigest()
            picks = [paths[round(i * (len(paths) - 1) / max(FILES_PER_FOLDER - 1, 1))]
                     for i in range(min(FILES_PER_FOLDER, len(paths)))]
            return (self.key, len(paths), names, tuple(file_digest(p) for p in picks))
        except OSError:
            return (self.key, self.source)

    def load(self, indices: np.ndarray) -> torch.Tensor:
        from PIL import Image  # noqa: PLC0415

        rows = []
        for i in np.asarray(indices):
            path = self.paths[int(i)]
            try:
                with Image.open(path) as im:
                    rows.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except (OSError, ValueError) as exc:
                raise DataError(f"cannot decode {path} ({exc}); re-extract that ImageNet-C folder") from None
        try:
            batch = np.stack(rows)
        except ValueError:
            raise DataError(f"images of {self.key} under {self.source} differ in size; ImageNet-C images are 224x224") from None
        return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)


class ImageNetCSource(DomainSource):
    dataset = "imagenet"

    def __init__(self, data_dir: str | Path, subset: str = "5000") -> None:
        self.root = Path(data_dir).expanduser() / FOLDER
        if not self.root.is_dir():
            raise DataError(
                f"{self.root} does not exist; put the ImageNet-C folders (<corruption>/<severity>/<wnid>/*.JPEG) "
                "under --data-dir (ImageNet-C has no automatic download)"
            )
        present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        names = list(BENCHMARK_CORRUPTIONS) + [c for c in present if c not in BENCHMARK_CORRUPTIONS]
        super().__init__(f"ImageNet-C ({self.root}, {subset} images)", names, 1000)
        self.subset = subset
        self.wanted = self._image_list(subset)
        self.class_of = {w: i for i, w in enumerate(imagenet_wnids())}

    def _image_list(self, subset: str) -> list[str] | None:
        if subset == "50000":
            return None
        path = robustbench_5000_list() if subset == "5000" else Path(subset).expanduser()
        if path is None or not path.is_file():
            raise DataError(
                "the 5,000-image ImageNet-C list comes with RobustBench; pip install 'tta-toolkit[robustbench]', "
                "pass --imagenet-subset 50000 for all images, or --imagenet-subset FILE with 'wnid/name.JPEG' lines"
            )
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]

    def check_domains(self, names: list[str]) -> None:
        for name in names:
            self.check_corruption(name)
        missing = [n for n in names if not (self.root / n).is_dir()]
        if missing:
            raise DataError(f"{self.root} lacks the folders {', '.join(missing)}; extract them or pass --domains")

    def _make(self, name: str, severity: int) -> FileDomain:
        folder = self.root / name / str(severity)
        if self.wanted is None:
            rel = sorted(str(p.relative_to(folder)) for p in folder.glob("*/*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        else:
            rel = self.wanted
            absent = [r for r in rel if not (folder / r).is_file()]
            if absent:
                raise DataError(f"{folder} lacks {len(absent)} listed images (first: {absent[0]}); re-extract it")
        if not rel:
            raise DataError(f"{folder} holds no images; extract ImageNet-C {name} severity {severity} there")
        unknown = sorted({r.split("/")[0] for r in rel} - set(self.class_of))
        if unknown:
            raise DataError(f"{folder} has class folders that are not ImageNet wnids: {', '.join(unknown[:5])}; remove them")
        labels = np.array([self.class_of[r.split("/")[0]] for r in rel], dtype=np.int64)
        return FileDomain([folder / r for r in rel], labels, name, severity, str(folder))
