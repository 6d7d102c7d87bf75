"""``tta corrupt``: write CIFAR-10-C / Tiny-ImageNet-C / ImageNet-C style sets."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from tta.errors import InputError

from .aliases import with_aliases
from .signals import sigterm_as_interrupt

#: the names of tta.corruptions.PRESETS, repeated so that `tta --help` does not import torch
PRESET_NAMES = ("cifar", "tiny", "imagenet")


def _check_out(out: Path) -> None:
    """Fail before any work when ``out`` cannot be written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write to --output {out} ({exc.strerror or exc}); pass a writable folder") from None


@click.command("corrupt", cls=with_aliases({"--src": "--data-dir", "--out": "--output", "--corruptions": "--domains",
                                              "--n-images": "--n-examples", "--workers": "--jobs"}))
@click.option("--data-dir", "src", required=True, type=click.Path(path_type=Path),
              help="clean set: images .npy (labels .npy beside it), torchvision CIFAR folder, or an ImageFolder (JPEG layout)")
@click.option("--output", "-o", "out", required=True, type=click.Path(path_type=Path), help="output folder")
@click.option("--preset", default="cifar", show_default=True, type=click.Choice(PRESET_NAMES))
@click.option("--domains", "corruptions", default=None, help="comma-separated names, or 'all' for the 19 [default: the 15 standard]")
@click.option("--severities", default="1,2,3,4,5", show_default=True, help="comma-separated severities")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--layout", type=click.Choice(["auto", "npy", "jpeg"]), default="auto", show_default=True,
              help="npy: <name>.npy + labels.npy; jpeg: <name>/<severity>/<class>/<file>; auto: npy for array sources")
@click.option("--chunk-size", default=1000, show_default=True, type=int, help="images per work unit")
@click.option("--jobs", "-j", "workers", default=1, show_default=True, type=int, help="processes (npy layout)")
@click.option("--n-examples", "n_images", default=None, type=int,
              help="corrupt only the first N source images (npy layout; the same bytes as those rows of a full run)")
@click.option("--frost-dir", default=None, type=click.Path(path_type=Path), help="frost texture folder")
def corrupt_cmd(src, out, preset, corruptions, severities, seed, layout, chunk_size, workers, n_images, frost_dir) -> None:
    """Generate corrupted copies of a clean set (resumable; rerun the same command to continue).

    \b
    tta corrupt --data-dir data/cifar10/test_images.npy -o data/CIFAR-10-C --jobs 2
    tta corrupt --data-dir data/cifar10/test_images.npy -o small/CIFAR-10-C --domains fog,snow --severities 5 --n-examples 500
    """
    from tta.corruptions import ALL_CORRUPTIONS, CORRUPTIONS  # noqa: PLC0415  (imports torch)
    from tta.corruptions.generate import generate_arrays, generate_jpeg_folders, parse_list  # noqa: PLC0415
    from tta.corruptions.sources import load_array_set  # noqa: PLC0415

    if chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1, got {chunk_size}; e.g. --chunk-size 1000")
    if workers < 1:
        raise InputError(f"--jobs must be >= 1, got {workers}; e.g. --jobs 2")
    if n_images is not None and n_images < 1:
        raise InputError(f"--n-examples must be >= 1, got {n_images}")
    names = list(ALL_CORRUPTIONS) if corruptions == "all" else parse_list(corruptions, CORRUPTIONS)
    try:
        sevs = [int(s) for s in parse_list(severities, ())]
    except ValueError:
        raise InputError(f"--severities must be integers 1..5, got {severities!r}; e.g. --severities 1,3,5") from None
    is_folder = src.is_dir() and not any(
        (src / f).exists() for f in ("test_images.npy", "cifar-10-batches-py", "cifar-100-python", "test_batch", "test"))
    jpeg = layout == "jpeg" or (layout == "auto" and is_folder)
    if jpeg and n_images is not None:
        raise InputError("--n-examples works with the npy layout only; drop it or pass --layout npy with an array source")
    images = labels = None
    if not jpeg:
        images, labels = load_array_set(src)  # fails on a bad --src before --out is touched
        if n_images is not None:
            images, labels = images[:n_images], labels[:n_images]
    _check_out(out)
    if frost_dir is None:  # textures kept in a frost/ folder beside the clean set need no flag
        from tta.data.resolve import frost_beside  # noqa: PLC0415

        folder = src if src.is_dir() else src.parent
        frost_dir = frost_beside(folder, folder.parent)
    try:
        with sigterm_as_interrupt():  # SIGTERM stops the pool like Ctrl-C
            if jpeg:
                generate_jpeg_folders(src, out, names, sevs, preset=preset, seed=seed,
                                      chunk_size=min(chunk_size, 256), frost_dir=frost_dir)
            else:
                generate_arrays(images, labels, out, names, sevs, preset=preset, seed=seed, chunk_size=chunk_size,
                                workers=workers, frost_dir=frost_dir, report=lambda msg: click.echo(msg, err=True))
    except KeyboardInterrupt:
        click.echo(f"stopped; the finished chunks are kept in {out}: rerun the same command to continue", err=True)
        sys.exit(130)
    click.echo(f"wrote {len(names)} corruption(s) x {len(sevs)} severities to {out}")
