"""Write corrupted benchmark sets to disk in the layouts RobustBench reads.

- Arrays (CIFAR-10-C style): ``<out>/<name>.npy`` uint8 (S*N, H, W, 3), severity
  blocks in the order given, and ``<out>/labels.npy`` (labels tiled S times, uint8
  as the original). Each file streams through a memory-mapped ``.partial`` file
  with a JSON progress marker beside it, and is renamed into place when complete.
- JPEG folders (ImageNet-C / Tiny-ImageNet-C style):
  ``<out>/<name>/<severity>/<class>/<file>``, JPEG quality 85, optimize=True.

Interrupted runs resume: finished files are skipped, and a partial array file
continues from its last recorded chunk. Image i always gets global index i, so a
resumed or chunked run writes the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import os
import multiprocessing
import signal
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from numpy.lib.format import open_memmap, read_array_header_1_0, read_array_header_2_0, read_magic
from PIL import Image
from tqdm.auto import tqdm

from tta.atomic import atomic_path, save_npy, write_json
from tta.errors import DataError, InputError
from tta.data.manifest import TTA_MANIFEST, read_manifest, severity_blocks, write_manifest

from .api import ALL_CORRUPTIONS, CORRUPTIONS, corrupt
from .frost import find_frost_dir
from .presets import PRESETS
from .workers import die_with

log = logging.getLogger(__name__)

JPEG_QUALITY = 85  # the original saves every ImageNet-C / Tiny-ImageNet-C image as JPEG q85


def _check_request(corruptions: Sequence[str], severities: Sequence[int], preset: str) -> None:
    for name in corruptions:
        if name not in ALL_CORRUPTIONS:
            raise InputError(f"unknown corruption {name!r}; choose from: {', '.join(ALL_CORRUPTIONS)}")
    if not severities or any(s not in (1, 2, 3, 4, 5) for s in severities) or len(set(severities)) != len(severities):
        raise InputError(f"severities must be distinct integers 1..5, got {list(severities)}; e.g. --severities 1,2,3,4,5")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        major, _ = read_magic(f)
        shape, _, dtype = (read_array_header_1_0 if major == 1 else read_array_header_2_0)(f)
    return shape, dtype


def _write_json(path: Path, obj: dict) -> None:
    write_json(path, obj, indent=None)


def _check_folder(out: Path, severities: Sequence[int], n: int) -> None:
    """Refuse to add files whose severity blocks differ from those already in ``out``:
    the folder's one ``labels.npy`` and manifest describe every file in it."""
    old = read_manifest(out)
    want = ",".join(map(str, severities))
    if old and old.get("n") == n and tuple(severities) != severity_blocks(old):
        have = ",".join(map(str, severity_blocks(old)))
        raise DataError(f"{out} holds severities {have} ({TTA_MANIFEST}), not {want}; "
                        f"pass --severities {have} or choose another --out")
    lab = out / "labels.npy"
    if lab.exists():
        got, _ = _npy_shape(lab)
        if tuple(got) != (len(severities) * n,):
            raise DataError(f"{out} already holds labels.npy of shape {tuple(got)}, not ({len(severities) * n},) for "
                            f"{n} images x severities {want}; choose another --out")


def _update_manifest(out: Path, corruptions: Sequence[str], severities: Sequence[int], preset: str, seed: int,
                     n: int) -> None:
    old = read_manifest(out)
    same = {k: old.get(k) for k in ("preset", "seed", "n")} == {"preset": preset, "seed": seed, "n": n}
    names = sorted(set(corruptions) | (set(old.get("corruptions", [])) if same else set()))
    # severities in file order: rows [i*n, (i+1)*n) of every file hold severities[i]
    write_manifest(out, {"generator": "tta.corruptions", "preset": preset, "seed": seed, "n": n,
                         "severities": [int(s) for s in severities], "corruptions": names})


# ---- worker side (also used in-process when workers == 1) ----
_SRC: np.ndarray | None = None


def _init_worker(src: np.ndarray | str, parent_pid: int | None = None) -> None:
    global _SRC
    import torch

    if parent_pid is not None:  # a pool worker: never outlive the command, and let it handle Ctrl-C
        die_with(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    torch.set_num_threads(1)
    _SRC = np.load(src, mmap_mode="r") if isinstance(src, str) else src


def _run_chunk(task: tuple) -> tuple:
    partial, name, sev, block, start, stop, n, preset, seed, frost_dir = task
    assert _SRC is not None
    y = corrupt(np.ascontiguousarray(_SRC[start:stop]), name, sev, preset=preset, seed=seed,
                indices=np.arange(start, stop), frost_dir=frost_dir)
    mm = np.load(partial, mmap_mode="r+")
    mm[block * n + start : block * n + stop] = y
    mm.flush()
    del mm
    return name, block, start


def generate_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    preset: str = "cifar",
    seed: int = 0,
    chunk_size: int = 1000,
    workers: int = 1,
    frost_dir: str | os.PathLike | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``<out>/<name>.npy`` for every corruption plus ``labels.npy``; returns the paths.

    ``report`` (e.g. ``print``) is told which files a rerun skips as done and which it resumes.
    """
    say = report or log.info
    if chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1, got {chunk_size}; e.g. --chunk-size 1000")
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    _check_request(corruptions, severities, preset)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != 3:
        raise InputError(f"images must be (N, H, W, 3) uint8, got {images.dtype} {images.shape}")
    if "frost" in corruptions:
        frost_dir = str(find_frost_dir(frost_dir))  # fail before any work, and pin it for workers
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    n = len(images)
    shape = (len(severities) * n,) + tuple(images.shape[1:])
    config = {"n": n, "shape": list(shape), "severities": list(severities), "preset": preset, "seed": seed,
              "chunk_size": chunk_size}

    _check_folder(out, severities, n)
    lab = out / "labels.npy"
    if not lab.exists():
        save_npy(lab, np.tile(np.asarray(labels), len(severities)).astype(np.uint8))

    jobs: list[tuple] = []
    partials: dict[str, tuple[Path, Path, set]] = {}
    for name in corruptions:
        final = out / f"{name}.npy"
        if final.exists():
            got, dtype = _npy_shape(final)
            if tuple(got) != shape or dtype != np.uint8:
                raise DataError(f"{final} exists with shape {got} {dtype}, not {shape} uint8; delete it or choose another --out")
            say(f"skipping {final}: already written")
            continue
        partial = out / f".{name}.npy.partial"
        marker = out / f".{name}.progress.json"
        done: set = set()
        state = json.loads(marker.read_text()) if marker.exists() and partial.exists() else None
        if state is not None and state.get("config") == config:
            done = {tuple(d) for d in state["done"]}
            say(f"resuming {name}: {len(done)} of {len(severities) * -(-n // chunk_size)} chunks already written")
        else:
            open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)  # allocates the file at full size
            _write_json(marker, {"config": config, "done": []})
        partials[name] = (partial, marker, done)
        for block, sev in enumerate(severities):
            for start in range(0, n, chunk_size):
                if (block, start) not in done:
                    jobs.append((str(partial), name, sev, block, start, min(start + chunk_size, n), n, preset, seed, frost_dir))

    src: np.ndarray | str = str(images.filename) if isinstance(images, np.memmap) and images.filename else images
    remaining = {name: sum(1 for j in jobs if j[1] == name) for name in partials}

    def finish(name: str, block: int, start: int) -> None:
        partial, marker, done = partials[name]
        done.add((block, start))
        _write_json(marker, {"config": config, "done": sorted(done)})
        remaining[name] -= 1
        if remaining[name] == 0:
            os.replace(partial, out / f"{name}.npy")
            marker.unlink()

    for name, left in list(remaining.items()):
        if left == 0:  # everything was written before an interruption at the rename
            remaining[name] = 1
            finish(name, -1, -1)

    bar = tqdm(total=len(jobs), desc="corrupt", unit="chunk", disable=not progress)
    if workers <= 1:
        _init_worker(src)
        for job in jobs:
            finish(*_run_chunk(job))
            bar.update()
    else:
        pool = multiprocessing.Pool(workers, initializer=_init_worker, initargs=(src, os.getpid()))
        try:
            for res in pool.imap(_run_chunk, jobs):
                finish(*res)
                bar.update()
        except BaseException:
            pool.terminate()  # finished chunks are recorded; a rerun resumes from them
            raise
        else:
            pool.close()
        finally:
            pool.join()
    bar.close()
    _update_manifest(out, corruptions, severities, preset, seed, n)
    return [lab] + [out / f"{name}.npy" for name in corruptions]


def _preprocess(path: Path, preset: str) -> np.ndarray:
    from torchvision.transforms import functional as TF
    from torchvision.transforms import InterpolationMode

    with Image.open(path) as im:
        im = im.convert("RGB")
        if preset == "imagenet":  # trn.Resize(256), trn.CenterCrop(224)
            im = TF.center_crop(TF.resize(im, 256, interpolation=InterpolationMode.BILINEAR), 224)
        else:  # Tiny ImageNet: trn.Resize((64, 64)); CIFAR: resize to 32x32
            size = PRESETS[preset].size
            if im.size != (size, size):
                im = TF.resize(im, [size, size], interpolation=InterpolationMode.BILINEAR)
        return np.asarray(im)


def generate_jpeg_folders(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    preset: str = "imagenet",
    seed: int = 0,
    chunk_size: int = 64,
    frost_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Write ``<out>/<name>/<severity>/<class>/<file>`` JPEGs (q85) from an ImageFolder tree."""
    from .sources import list_image_folder

    _check_request(corruptions, severities, preset)
    if "frost" in corruptions:
        frost_dir = str(find_frost_dir(frost_dir))
    files = list_image_folder(src)
    out = Path(out_dir).expanduser()
    bar = tqdm(total=len(files) * len(corruptions) * len(severities), desc="corrupt", unit="img", disable=not progress)
    for start in range(0, len(files), chunk_size):
        chunk = files[start : start + chunk_size]
        batch: np.ndarray | None = None
        for name in corruptions:
            for sev in severities:
                targets = [out / name / str(sev) / wnid / f.name for wnid, f in chunk]
                todo = [i for i, t in enumerate(targets) if not t.exists()]
                if todo:
                    if batch is None:
                        batch = np.stack([_preprocess(f, preset) for _, f in chunk])
                    y = corrupt(batch[todo], name, sev, preset=preset, seed=seed,
                                indices=np.arange(start, start + len(chunk))[todo], frost_dir=frost_dir)
                    for k, i in enumerate(todo):
                        _save_jpeg_atomic(targets[i], y[k])
                bar.update(len(chunk))
    bar.close()
    return out


def _save_jpeg_atomic(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=JPEG_QUALITY, optimize=True)


def parse_list(text: str | None, default: Iterable) -> list:
    """Split a comma/space separated option value."""
    if text is None:
        return list(default)
    return [t for t in text.replace(",", " ").split() if t]
