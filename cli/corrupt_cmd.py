"""``tta corrupt``: write CIFAR-10-C / Tiny-ImageNet-C / ImageNet-C style sets."""
from __future__ import annotations

from pathlib import Path

import click

from tta.corruptions import CORRUPTIONS, PRESETS
from tta.corruptions.generate import generate_arrays, generate_jpeg_folders, parse_list
from tta.corruptions.sources import load_array_set
from tta.errors import InputError


@click.command("corrupt")
@click.option("--src", required=True, type=click.Path(path_type=Path),
              help="clean set: images .npy (labels .npy beside it), torchvision CIFAR folder, or an ImageFolder (JPEG layout)")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="output folder")
@click.option("--preset", default="cifar", show_default=True, type=click.Choice(list(PRESETS)))
@click.option("--corruptions", default=None, help="comma-separated names, or 'all' for the 19 [default: the 15 standard]")
@click.option("--severities", default="1,2,3,4,5", show_default=True, help="comma-separated severities")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--layout", type=click.Choice(["auto", "npy", "jpeg"]), default="auto", show_default=True,
              help="npy: <name>.npy + labels.npy; jpeg: <name>/<severity>/<class>/<file>; auto: npy for array sources")
@click.option("--chunk-size", default=1000, show_default=True, type=int, help="images per work unit")
@click.option("--workers", default=1, show_default=True, type=int, help="processes (npy layout)")
@click.option("--frost-dir", default=None, type=click.Path(path_type=Path), help="frost texture folder")
def corrupt_cmd(src, out, preset, corruptions, severities, seed, layout, chunk_size, workers, frost_dir) -> None:
    """Generate corrupted copies of a clean set (resumable; rerun the same command to continue)."""
    from tta.corruptions import ALL_CORRUPTIONS

    names = list(ALL_CORRUPTIONS) if corruptions == "all" else parse_list(corruptions, CORRUPTIONS)
    try:
        sevs = [int(s) for s in parse_list(severities, ())]
    except ValueError:
        raise InputError(f"--severities must be integers 1..5, got {severities!r}; e.g. --severities 1,3,5") from None
    is_folder = src.is_dir() and not any(
        (src / f).exists() for f in ("test_images.npy", "cifar-10-batches-py", "cifar-100-python", "test_batch", "test"))
    if layout == "jpeg" or (layout == "auto" and is_folder):
        generate_jpeg_folders(src, out, names, sevs, preset=preset, seed=seed, chunk_size=min(chunk_size, 256),
                              frost_dir=frost_dir)
    else:
        images, labels = load_array_set(src)
        generate_arrays(images, labels, out, names, sevs, preset=preset, seed=seed, chunk_size=chunk_size,
                        workers=workers, frost_dir=frost_dir)
    click.echo(f"wrote {len(names)} corruption(s) x {len(sevs)} severities to {out}")
