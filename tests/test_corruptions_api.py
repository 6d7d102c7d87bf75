"""The public API: names, shapes, seeding, chunking, statistics, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from tta.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, PRESETS, corrupt, find_frost_dir
from tta.errors import DataError, InputError, UnknownNameError


@pytest.fixture(autouse=True)
def _frost(monkeypatch):
    monkeypatch.setenv("TTA_FROST_DIR", str(shared_path("data", "frost")))


def _mixed(n: int = 8, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, size, size, 3)).astype(np.uint8)


def test_names_and_presets():
    assert CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
        "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
        "jpeg_compression",
    )  # fmt: skip
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert ALL_CORRUPTIONS == CORRUPTIONS + EXTRA_CORRUPTIONS
    assert {k: p.size for k, p in PRESETS.items()} == {"cifar": 32, "tiny": 64, "imagenet": 224}
    for p in PRESETS.values():
        assert set(p.params) == set(ALL_CORRUPTIONS)
        assert all(len(v) == 5 for v in p.params.values())


def test_non_monotone_rows_are_kept_as_published():
    # numbers from the spec's tables of make_cifar_c.py / make_imagenet_c.py
    cifar, imnet = PRESETS["cifar"].params, PRESETS["imagenet"].params
    assert cifar["glass_blur"] == ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
    assert imnet["glass_blur"] == ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
    np.testing.assert_allclose(cifar["elastic_transform"], [(0, 0, 2.56), (1.6, 6.4, 2.24), (2.56, 1.92, 1.92),
                                                            (3.2, 1.28, 1.6), (3.2, 0.96, 0.96)])
    np.testing.assert_allclose(imnet["elastic_transform"], [(488, 170.8, 24.4), (488, 19.52, 48.8), (12.2, 2.44, 4.88),
                                                            (17.08, 2.44, 4.88), (29.28, 2.44, 4.88)])
    assert [p[2] for p in cifar["snow"]] == [1, 1, 1.75, 2.25, 1.25]
    assert cifar["frost"] == ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
    assert [len(z) for z in cifar["zoom_blur"]] == [len(np.arange(1, e, 0.01)) for e in (1.06, 1.11, 1.16, 1.21, 1.26)]
    assert (PRESETS["cifar"].frost_scale, PRESETS["tiny"].frost_scale, PRESETS["imagenet"].frost_scale) == (0.2, 0.3, 1)
    assert (PRESETS["cifar"].fog_mapsize, PRESETS["imagenet"].fog_mapsize) == (32, 256)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_corruption_is_seeded_and_chunk_independent(name):
    x = _mixed(6)
    full = corrupt(x, name, 3, seed=7)
    assert full.dtype == np.uint8 and full.shape == x.shape
    assert not np.array_equal(full, x)
    np.testing.assert_array_equal(corrupt(x, name, 3, seed=7), full)
    # the same images as part of a different batch, given their global indices
    part = corrupt(x[2:5], name, 3, seed=7, indices=np.arange(2, 5))
    np.testing.assert_array_equal(part, full[2:5])
    shuffled = corrupt(x[::-1].copy(), name, 3, seed=7, indices=np.arange(6)[::-1].copy())
    np.testing.assert_array_equal(shuffled[::-1], full)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur",
                                  "snow", "frost", "fog", "elastic_transform", "speckle_noise", "spatter"])
def test_random_corruptions_change_with_seed(name):
    x = _mixed(4)
    assert not np.array_equal(corrupt(x, name, 4, seed=0), corrupt(x, name, 4, seed=1))


@pytest.mark.parametrize("preset", ["tiny", "imagenet"])
@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_larger_presets_shape_and_dtype(preset, name):
    size = PRESETS[preset].size
    x = _mixed(1, size)
    y = corrupt(x, name, 5, preset=preset)
    assert y.shape == x.shape and y.dtype == np.uint8


def test_torch_tensor_in_torch_tensor_out():
    x = _mixed(3)
    t = torch.from_numpy(x)
    y = corrupt(t, "fog", 2, seed=3)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.uint8 and y.device == t.device
    np.testing.assert_array_equal(y.numpy(), corrupt(x, "fog", 2, seed=3))


@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise", "impulse_noise", "contrast", "brightness",
                                  "saturate", "fog"])
def test_torch_path_gives_the_numpy_bytes(name):
    from tta.corruptions.torch_ops import TORCH_FUNCTIONS

    assert name in TORCH_FUNCTIONS  # these run in torch, on the tensor's device
    x = _mixed(5)
    for severity in (1, 5):
        got = corrupt(torch.from_numpy(x), name, severity, seed=2, indices=np.arange(10, 15))
        np.testing.assert_array_equal(got.numpy(), corrupt(x, name, severity, seed=2, indices=np.arange(10, 15)))


def _grey(n=64, v=128, size=32):
    return np.full((n, size, size, 3), v, np.uint8)


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_noise_std(severity):
    c = PRESETS["cifar"].param("gaussian_noise", severity)
    y = corrupt(_grey(), "gaussian_noise", severity).astype(np.float64)
    # truncation shifts the mean by half a level and adds 1/12 level^2 of variance
    assert abs(y.mean() - (128 - 0.5)) < 0.3
    assert abs(np.sqrt(y.var() - 1 / 12) / 255 - c) < 0.02 * c


@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_poisson_mean_and_variance(severity):
    c = PRESETS["cifar"].param("shot_noise", severity)
    lam = 128 / 255 * c
    y = corrupt(_grey(), "shot_noise", severity).astype(np.float64)
    # y = trunc(255 k / c) with k ~ Poisson(lam): mean 128 - ~0.5, variance (255/c)^2 lam + quantisation
    assert abs(y.mean() - (128 - 0.5)) < 0.5
    expected_var = (255 / c) ** 2 * lam
    assert abs(y.var() - expected_var) < 0.05 * expected_var + 0.2


def test_shot_noise_of_black_is_black():
    np.testing.assert_array_equal(corrupt(_grey(4, 0), "shot_noise", 5), 0)


@pytest.mark.parametrize("severity", [1, 5])
def test_impulse_noise_salt_and_pepper_fractions(severity):
    c = PRESETS["cifar"].param("impulse_noise", severity)
    y = corrupt(_grey(), "impulse_noise", severity)
    n = y.size
    salt, pepper = (y == 255).mean(), (y == 0).mean()
    tol = 4 * np.sqrt(c / 2 / n)
    assert abs(salt - c / 2) < tol and abs(pepper - c / 2) < tol
    assert set(np.unique(y)) <= {0, 127, 128, 255}


def test_speckle_noise_std_scales_with_intensity():
    c = PRESETS["cifar"].param("speckle_noise", 2)
    for v in (64, 128):
        y = corrupt(_grey(v=v), "speckle_noise", 2).astype(np.float64)
        assert abs(np.sqrt(y.var() - 1 / 12) - c * v) < 0.03 * c * v


def test_fog_range_on_constant_image_and_frost_weights():
    x = _grey(16, 60)
    c = PRESETS["cifar"].param("fog", 3)[0]
    v = 60 / 255
    fog = corrupt(x, "fog", 3).astype(float)
    # (v + c * plasma) * v / (v + c) with plasma in [0, 1]: from v^2/(v+c) up to v, each image spanning it
    assert fog.max() <= 60 and fog.min() >= np.floor(255 * v * v / (v + c)) - 1
    assert (fog.reshape(16, -1).max(1) - fog.reshape(16, -1).min(1) > 30).all()
    frost = corrupt(x, "frost", 1).astype(float)  # (1, 0.2): image plus 0.2 * texture
    assert (frost >= 60).all() and frost.max() <= 60 + 0.2 * 255


# ---- errors ----

def test_error_wrong_dtype():
    with pytest.raises(InputError, match="uint8"):
        corrupt(np.zeros((2, 32, 32, 3), np.float32), "fog", 1)
    with pytest.raises(InputError, match="uint8"):
        corrupt(torch.zeros((2, 32, 32, 3)), "fog", 1)


@pytest.mark.parametrize("shape", [(32, 32, 3), (2, 3, 32, 32), (2, 32, 32, 4)])
def test_error_wrong_shape(shape):
    with pytest.raises(InputError, match=r"\(N, H, W, 3\)"):
        corrupt(np.zeros(shape, np.uint8), "fog", 1)


def test_error_unknown_name_and_preset():
    with pytest.raises(UnknownNameError, match="gaussian_noise"):
        corrupt(_grey(1), "gausian_noise", 1)
    with pytest.raises(UnknownNameError, match="cifar"):
        corrupt(_grey(1), "fog", 1, preset="cifar10")


@pytest.mark.parametrize("severity", [0, 6, 2.0, True])
def test_error_severity(severity):
    with pytest.raises(InputError, match="1 to 5"):
        corrupt(_grey(1), "fog", severity)


def test_error_image_smaller_than_preset():
    with pytest.raises(InputError, match="smaller than the 'tiny'"):
        corrupt(_grey(1, size=32), "fog", 1, preset="tiny")


def test_error_bad_indices_and_seed():
    with pytest.raises(InputError, match="indices"):
        corrupt(_grey(2), "fog", 1, indices=[0])
    with pytest.raises(InputError, match="seed"):
        corrupt(_grey(2), "fog", 1, seed=-1)


def test_error_missing_frost_dir(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        corrupt(_grey(1), "frost", 1, frost_dir=tmp_path / "nope")
    (tmp_path / "frost1.png").write_bytes(b"")
    with pytest.raises(DataError, match="lacks frost2.png"):
        find_frost_dir(tmp_path)
    monkeypatch.delenv("TTA_FROST_DIR")
    monkeypatch.setattr("tta.corruptions.frost._from_wheel", lambda: None)
    with pytest.raises(DataError, match="pip install --no-deps imagecorruptions"):
        find_frost_dir()


def test_frost_textures_found_in_an_installed_wheel_without_importing_it(tmp_path, monkeypatch):
    import shutil
    import sys

    from tta.corruptions.frost import FROST_FILES, _from_wheel

    site = tmp_path / "site"
    pkg = site / "imagecorruptions" / "frost"
    pkg.mkdir(parents=True)
    for f in FROST_FILES:
        shutil.copy(shared_path("data", "frost", f), pkg / f)
    info = site / "imagecorruptions-1.1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: imagecorruptions\nVersion: 1.1.2\n")
    (info / "RECORD").write_text("".join(f"imagecorruptions/frost/{f},,\n" for f in FROST_FILES))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("TTA_FROST_DIR")
    assert _from_wheel() == pkg
    assert find_frost_dir() == pkg
    assert "imagecorruptions" not in sys.modules


def test_frost_dir_lookup_order(tmp_path, monkeypatch):
    env_dir = shared_path("data", "frost")
    assert find_frost_dir() == env_dir  # from $TTA_FROST_DIR
    monkeypatch.setenv("TTA_FROST_DIR", str(tmp_path))  # an explicit argument wins over the variable
    assert find_frost_dir(env_dir) == env_dir
    monkeypatch.delenv("TTA_FROST_DIR")
    monkeypatch.setattr("tta.corruptions.frost._from_wheel", lambda: env_dir)
    assert find_frost_dir() == env_dir


@pytest.mark.realdata
def test_severity_order_on_real_images(cifar10_test):
    images, _ = cifar10_test
    x = np.ascontiguousarray(images[::100])  # 100 images, 10 per class
    monotone = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "motion_blur",
                "zoom_blur", "gaussian_blur", "pixelate", "jpeg_compression", "contrast", "brightness"]
    for name in monotone:
        change = [np.abs(corrupt(x, name, s).astype(np.int16) - x).mean() for s in range(1, 6)]
        assert all(b >= a for a, b in zip(change, change[1:])), (name, change)
