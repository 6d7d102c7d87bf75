"""Deterministic corruptions against straightforward per-image reference computations."""
from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tta.corruptions import corrupt
from tta.corruptions.presets import PRESETS


def _images(n: int = 6, size: int = 32, seed: int = 1) -> np.ndarray:
    """Smooth random images with edges and saturated pixels (a harder case than noise)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, size // 4, size // 4, 3)).astype(np.float64)
    up = ndimage.zoom(base, (1, 4, 4, 1), order=1)
    up[:, : size // 8] = 255  # a saturated band
    up[:, -2:] = 0
    return np.clip(up + rng.normal(0, 8, up.shape), 0, 255).astype(np.uint8)


def _close(a: np.ndarray, b: np.ndarray, tol: int = 1, frac: float = 1.0) -> None:
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    assert (diff <= tol).mean() >= frac, f"max diff {diff.max()}, {(diff > tol).mean():.4%} beyond {tol}"


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_brightness_matches_colorsys(severity):
    x = _images(3)
    c = PRESETS["cifar"].param("brightness", severity)
    ref = np.empty(x.shape)
    for i, px in np.ndenumerate(x[..., 0]):
        r, g, b = x[i][:3] / 255.0
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        ref[i] = colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))
    ref = (np.clip(ref, 0, 1) * 255).astype(np.uint8)
    _close(corrupt(x, "brightness", severity), ref)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_saturate_matches_colorsys(severity):
    x = _images(3)
    c0, c1 = PRESETS["cifar"].param("saturate", severity)
    ref = np.empty(x.shape)
    for i, _ in np.ndenumerate(x[..., 0]):
        h, s, v = colorsys.rgb_to_hsv(*(x[i][:3] / 255.0))
        ref[i] = colorsys.hsv_to_rgb(h, min(max(s * c0 + c1, 0.0), 1.0), v)
    ref = (np.clip(ref, 0, 1) * 255).astype(np.uint8)
    _close(corrupt(x, "saturate", severity), ref)


@pytest.mark.parametrize("severity", [1, 5])
def test_contrast_matches_per_image_formula(severity):
    x = _images()
    c = PRESETS["cifar"].param("contrast", severity)
    for i in range(len(x)):
        img = x[i] / 255.0
        m = img.reshape(-1, 3).mean(0)
        ref = (np.clip((img - m) * c + m, 0, 1) * 255).astype(np.uint8)
        _close(corrupt(x, "contrast", severity)[i], ref)


@pytest.mark.parametrize("preset,severity", [("cifar", 1), ("cifar", 5), ("tiny", 3)])
def test_pixelate_matches_pillow_box(preset, severity):
    size = PRESETS[preset].size
    x = _images(4, size)
    c = PRESETS[preset].param("pixelate", severity)
    out = corrupt(x, "pixelate", severity, preset=preset)
    for i in range(len(x)):
        im = Image.fromarray(x[i]).resize((int(size * c), int(size * c)), Image.BOX).resize((size, size), Image.BOX)
        np.testing.assert_array_equal(out[i], np.asarray(im))


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_matches_pillow(severity):
    x = _images(4)
    q = PRESETS["cifar"].param("jpeg_compression", severity)
    out = corrupt(x, "jpeg_compression", severity)
    for i in range(len(x)):
        buf = io.BytesIO()
        Image.fromarray(x[i]).save(buf, "JPEG", quality=q)
        np.testing.assert_array_equal(out[i], np.asarray(Image.open(buf)))
    assert np.abs(out.astype(int) - x).mean() > 0.5  # it did compress


def _naive_correlate_reflect101(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    r = k.shape[0] // 2
    p = np.pad(img, r, mode="reflect")  # numpy 'reflect' == OpenCV BORDER_REFLECT_101
    out = np.zeros(img.shape)
    for dy in range(k.shape[0]):
        for dx in range(k.shape[1]):
            out += k[dy, dx] * p[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return out


def _reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    ks = 3 if radius <= 8 else 5
    X, Y = np.meshgrid(grid, grid)
    d = ((X**2 + Y**2) <= radius**2).astype(np.float64)
    d /= d.sum()
    t = np.arange(ks) - (ks - 1) / 2
    g = np.exp(-t**2 / (2 * alias_blur**2))
    g /= g.sum()
    return _naive_correlate_reflect101(d, np.outer(g, g))


@pytest.mark.parametrize("preset,severity", [("cifar", 1), ("cifar", 4), ("cifar", 5), ("tiny", 5)])
def test_defocus_blur_matches_disk_filter(preset, severity):
    size = PRESETS[preset].size
    x = _images(2, size)
    radius, alias = PRESETS[preset].param("defocus_blur", severity)
    k = _reference_disk(radius, alias)
    out = corrupt(x, "defocus_blur", severity, preset=preset)
    for i in range(len(x)):
        ref = np.stack([_naive_correlate_reflect101(x[i, :, :, ch] / 255.0, k) for ch in range(3)], -1)
        _close(out[i], (np.clip(ref, 0, 1) * 255).astype(np.uint8), frac=1.0)


def _skimage_gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, radius int(4 sigma + 0.5), replicated border (skimage's defaults)."""
    r = int(4.0 * sigma + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-0.5 * t**2 / sigma**2)
    g /= g.sum()
    p = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    rows = sum(g[j] * p[j : j + img.shape[0]] for j in range(2 * r + 1))
    return sum(g[j] * rows[:, j : j + img.shape[1]] for j in range(2 * r + 1))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_blur_matches_separable_reference(severity):
    x = _images(3)
    sigma = PRESETS["cifar"].param("gaussian_blur", severity)
    out = corrupt(x, "gaussian_blur", severity)
    for i in range(len(x)):
        ref = (np.clip(_skimage_gaussian(x[i] / 255.0, sigma), 0, 1) * 255).astype(np.uint8)
        _close(out[i], ref)


def _clipped_zoom_reference(img: np.ndarray, z: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    zoomed = ndimage.zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim : trim + h, trim : trim + h]


@pytest.mark.parametrize("preset,severity", [("cifar", 1), ("cifar", 5), ("tiny", 2)])
def test_zoom_blur_matches_scipy_zoom(preset, severity):
    size = PRESETS[preset].size
    x = _images(2, size)
    zooms = PRESETS[preset].param("zoom_blur", severity)
    out = corrupt(x, "zoom_blur", severity, preset=preset)
    for i in range(len(x)):
        img = (x[i] / 255.0).astype(np.float32)
        acc = np.zeros_like(img)
        for z in zooms:
            acc += _clipped_zoom_reference(img, z)
        ref = (np.clip((img + acc) / (len(zooms) + 1), 0, 1) * 255).astype(np.uint8)
        _close(out[i], ref)
