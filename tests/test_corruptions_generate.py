"""Writing CIFAR-10-C style arrays and ImageNet-C style JPEG folders to disk."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tta.cli.main import cli
from tta.corruptions import corrupt
from tta.corruptions.generate import generate_arrays, generate_jpeg_folders
from tta.corruptions.sources import load_array_set
from tta.errors import DataError, InputError


@pytest.fixture()
def clean_npy(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 10, size=10)
    np.save(tmp_path / "test_images.npy", images)
    np.save(tmp_path / "test_labels.npy", labels)
    return tmp_path / "test_images.npy", images, labels


def test_generate_arrays_layout_matches_corrupt(clean_npy, tmp_path):
    src, images, labels = clean_npy
    out = tmp_path / "C"
    mm, lab = load_array_set(src)
    generate_arrays(mm, lab, out, ["fog", "pixelate"], chunk_size=4, progress=False)
    np.testing.assert_array_equal(np.load(out / "labels.npy"), np.tile(labels, 5).astype(np.uint8))
    assert np.load(out / "labels.npy").dtype == np.uint8
    fog = np.load(out / "fog.npy")
    assert fog.shape == (50, 32, 32, 3) and fog.dtype == np.uint8
    for s in range(1, 6):
        np.testing.assert_array_equal(fog[(s - 1) * 10 : s * 10], corrupt(images, "fog", s))
    assert sorted(p.name for p in out.iterdir()) == ["fog.npy", "labels.npy", "pixelate.npy", "tta-corrupt.json"]
    manifest = json.loads((out / "tta-corrupt.json").read_text())
    assert manifest["seed"] == 0 and manifest["corruptions"] == ["fog", "pixelate"] and manifest["n"] == 10


def test_generate_arrays_resumes_after_interruption(clean_npy, tmp_path, monkeypatch):
    src, images, labels = clean_npy
    out = tmp_path / "C"
    mm, lab = load_array_set(src)
    import tta.corruptions.generate as gen

    real = gen._run_chunk
    calls = {"n": 0}

    def dying(task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(gen, "_run_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        generate_arrays(mm, lab, out, ["gaussian_noise"], chunk_size=4, progress=False)
    assert not (out / "gaussian_noise.npy").exists()
    marker = json.loads((out / ".gaussian_noise.progress.json").read_text())
    assert len(marker["done"]) == 3

    done_calls = {"n": 0}

    def counting(task):
        done_calls["n"] += 1
        return real(task)

    monkeypatch.setattr(gen, "_run_chunk", counting)
    generate_arrays(mm, lab, out, ["gaussian_noise"], chunk_size=4, progress=False)
    assert done_calls["n"] == 15 - 3  # 5 severities x 3 chunks, 3 already written
    full = np.load(out / "gaussian_noise.npy")
    for s in range(1, 6):
        np.testing.assert_array_equal(full[(s - 1) * 10 : s * 10], corrupt(images, "gaussian_noise", s))
    assert not (out / ".gaussian_noise.progress.json").exists()
    done_calls["n"] = 0
    generate_arrays(mm, lab, out, ["gaussian_noise"], chunk_size=4, progress=False)  # finished: skipped
    assert done_calls["n"] == 0


def test_generate_arrays_two_workers_equal_one(clean_npy, tmp_path):
    src, images, labels = clean_npy
    mm, lab = load_array_set(src)
    generate_arrays(mm, lab, tmp_path / "a", ["shot_noise"], severities=[2, 5], chunk_size=3, workers=2, progress=False)
    arr = np.load(tmp_path / "a" / "shot_noise.npy")
    assert arr.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(arr[:10], corrupt(images, "shot_noise", 2))
    np.testing.assert_array_equal(arr[10:], corrupt(images, "shot_noise", 5))


def test_existing_file_of_wrong_shape_is_an_error(clean_npy, tmp_path):
    src, images, labels = clean_npy
    out = tmp_path / "C"
    out.mkdir()
    np.save(out / "fog.npy", np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="delete it"):
        generate_arrays(images, labels, out, ["fog"], progress=False)


def test_bad_requests(clean_npy, tmp_path):
    src, images, labels = clean_npy
    with pytest.raises(InputError, match="unknown corruption"):
        generate_arrays(images, labels, tmp_path / "x", ["fogg"], progress=False)
    with pytest.raises(InputError, match="severities"):
        generate_arrays(images, labels, tmp_path / "x", ["fog"], severities=[0, 1], progress=False)


def test_sources(tmp_path, clean_npy):
    src, images, labels = clean_npy
    im, lab = load_array_set(src.parent)  # a folder with test_images.npy
    assert isinstance(im, np.memmap) and np.array_equal(lab, labels)
    # torchvision's CIFAR-10 folder, read from the pickle
    folder = tmp_path / "tv" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(10, -1), "labels": list(labels)}, f)
    im2, lab2 = load_array_set(tmp_path / "tv")
    np.testing.assert_array_equal(im2, images)
    np.testing.assert_array_equal(lab2, labels)
    np.save(tmp_path / "alone.npy", images)
    with pytest.raises(DataError, match="no labels beside"):
        load_array_set(tmp_path / "alone.npy")
    with pytest.raises(DataError, match="does not exist"):
        load_array_set(tmp_path / "missing.npy")


def test_cli_corrupt_writes_and_reports_errors(clean_npy, tmp_path):
    src, images, labels = clean_npy
    runner = CliRunner()
    res = runner.invoke(cli, ["corrupt", "--data-dir", str(src), "--output", str(tmp_path / "o"), "--domains",
                              "contrast,brightness", "--severities", "1,5", "--seed", "3"])
    assert res.exit_code == 0, res.output
    arr = np.load(tmp_path / "o" / "contrast.npy")
    np.testing.assert_array_equal(arr[10:], corrupt(images, "contrast", 5))
    res = runner.invoke(cli, ["corrupt", "--data-dir", str(tmp_path / "nope.npy"), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Error: clean set" in res.output and len(res.output.strip().splitlines()) == 1


def test_jpeg_folders_like_imagenet_c(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "val"
    for wnid in ("n01", "n02"):
        (src / wnid).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (80, 90, 3)).astype(np.uint8)).save(src / wnid / f"img{k}.JPEG")
    out = tmp_path / "C"
    generate_jpeg_folders(src, out, ["contrast"], [1, 3], preset="tiny", progress=False)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.JPEG"))
    assert files == [f"contrast/{s}/{w}/img{k}.JPEG" for s in (1, 3) for w in ("n01", "n02") for k in (0, 1)]
    with Image.open(out / "contrast/3/n02/img1.JPEG") as im:
        assert im.size == (64, 64) and im.format == "JPEG"
    mtime = (out / "contrast/1/n01/img0.JPEG").stat().st_mtime_ns
    generate_jpeg_folders(src, out, ["contrast"], [1, 3], preset="tiny", progress=False)  # resume: nothing redone
    assert (out / "contrast/1/n01/img0.JPEG").stat().st_mtime_ns == mtime


def test_readers_and_leaderboard_tell_generated_files_from_the_original(clean_npy, tmp_path):
    from tta.data.cifar_c import CifarCSource
    from tta.pipeline.setting import _data_name

    src, images, labels = clean_npy
    mm, lab = load_array_set(src)
    generate_arrays(mm, lab, tmp_path / "gen" / "CIFAR-10-C", ["fog"], seed=3, chunk_size=5, progress=False)
    info = CifarCSource(tmp_path / "gen", corruptions=["fog"]).describe()
    assert info["generated"] == "files" and info["corruption_seed"] == 3
    assert "generated by tta corrupt, seed 3" in info["label"]
    assert _data_name({"data": info}) == "CIFAR-10-C generated by tta.corruptions (seed 3)"
    # a folder without the manifest reads as original files
    (tmp_path / "orig" / "CIFAR-10-C").mkdir(parents=True)
    for name in ("fog.npy", "labels.npy"):
        (tmp_path / "orig" / "CIFAR-10-C" / name).write_bytes((tmp_path / "gen" / "CIFAR-10-C" / name).read_bytes())
    plain = CifarCSource(tmp_path / "orig", corruptions=["fog"]).describe()
    assert "generated" not in plain and _data_name({"data": plain}) == "CIFAR-10-C"
