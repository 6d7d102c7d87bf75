"""Find the data for a run: CIFAR-C files, else generated domains, else download, else explain (or demo)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .cifar_c import FOLDERS, NUM_CLASSES, CifarCSource, cifar_c_dir
from .clean import find_clean, load_clean
from .demo import DemoSource
from .domain_source import DomainSource
from .download import download_cifar_c, network_available
from .generated import GeneratedSource, corruptions_module
from .imagenet_c import ImageNetCSource

log = logging.getLogger(__name__)

DATASETS = ("auto", "cifar10", "cifar100", "imagenet", "demo")


def missing_data_paragraph(dataset: str, data_dir: Path, *, generator: bool) -> str:
    """What is missing and how to get it, as one paragraph (one line)."""
    folder = FOLDERS.get(dataset, "CIFAR-10-C")
    clean = "cifar10/test_images.npy + test_labels.npy or cifar-10-batches-py/" if dataset == "cifar10" else "cifar-100-python/"
    gen = "" if generator else " (generating needs tta.corruptions, which this install lacks)"
    return (
        f"No {folder} data under {data_dir}: tta looked for {data_dir / folder}/<corruption>.npy with labels.npy "
        f"(RobustBench layout) and for a clean test set ({clean}) to generate the corruptions from{gen}. "
        f"Get the data by running again with --download (about 2.9 GB from Zenodo, MD5-checked), or download "
        f"{folder}.tar from Zenodo yourself and unpack it into {data_dir}, or point --data-dir / $TTA_DATA at a folder "
        f"that already holds {folder}/; to try tta without any data, run with --dataset demo."
    )


def frost_beside(*folders: Path) -> Path | None:
    """A ``frost/`` folder with the textures in one of ``folders`` (or beside a file among them), unless
    ``$TTA_FROST_DIR`` names one: a data folder laid out as ``cifar10/`` + ``frost/`` needs no ``--frost-dir``."""
    from tta.corruptions.frost import ENV_VAR, FROST_FILES  # noqa: PLC0415  (tta.corruptions is optional)

    if os.environ.get(ENV_VAR):
        return None
    for folder in folders:
        folder = Path(folder)
        for base in (folder, folder.parent) if folder.is_file() else (folder,):
            candidate = base / "frost"
            if all((candidate / f).is_file() for f in FROST_FILES):
                return candidate
    return None


def open_source(
    dataset: str,
    data_dir: str | Path,
    *,
    download: bool = False,
    confirm_download: Callable[[str], bool] | None = None,
    corruption_seed: int = 0,
    imagenet_subset: str = "5000",
    frost_dir: str | Path | None = None,
    demo_fallback: bool = True,
) -> tuple[DomainSource, list[str]]:
    """The domain source for ``dataset`` and notes to show the user.

    ``auto`` means CIFAR-10 when its data can be found or fetched, and the
    embedded demo (with a loud notice) when it cannot and ``demo_fallback`` allows it:
    a data folder the user named must hold data, so then what is missing is an error.
    """
    data_dir = Path(data_dir).expanduser()
    notes: list[str] = []
    if dataset == "demo":
        return DemoSource(), notes
    if dataset == "imagenet":
        return ImageNetCSource(data_dir, imagenet_subset), notes
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    name = "cifar10" if dataset == "auto" else dataset
    # 1. RobustBench layout
    if cifar_c_dir(data_dir, name).is_dir():
        return CifarCSource(data_dir, name), notes
    # 2. clean test set + generator
    clean = find_clean(data_dir, name)
    generator = corruptions_module() is not None
    if clean is not None and generator:
        images, labels = load_clean(clean, name)
        notes.append(f"no {FOLDERS[name]} folder under {data_dir}; generating corruptions from {clean}")
        frost_dir = frost_dir if frost_dir is not None else frost_beside(data_dir, clean)
        return GeneratedSource(images, labels, dataset=name, origin=str(clean), num_classes=NUM_CLASSES[name],
                               seed=corruption_seed, frost_dir=frost_dir), notes
    # 3. download
    wants = download or (confirm_download is not None and network_available() and confirm_download(
        f"{FOLDERS[name]} is not under {data_dir}. Download it from Zenodo (about 2.9 GB)?"))
    if wants:
        if not network_available():
            raise DataError(f"--download was asked for but zenodo.org cannot be reached; {missing_data_paragraph(name, data_dir, generator=generator)}")
        download_cifar_c(data_dir, name)
        return CifarCSource(data_dir, name), notes
    # 4. explain, and fall back to the demo when neither the dataset nor a data folder was chosen
    if dataset == "auto" and not demo_fallback and not data_dir.exists():
        raise DataError(f"data folder {data_dir} (--data-dir or $TTA_DATA) does not exist; pass the folder holding "
                        f"{FOLDERS[name]}/ or a clean test set ({name}/test_images.npy), or add --download to fetch "
                        f"{FOLDERS[name]} into it")
    paragraph = missing_data_paragraph(name, data_dir, generator=generator)
    if dataset == "auto" and demo_fallback:
        notes.append(paragraph)
        notes.append("Running the embedded DEMO instead (scikit-learn digits, NOT CIFAR-10-C).")
        return DemoSource(), notes
    raise DataError(paragraph)
