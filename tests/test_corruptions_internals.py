"""Building blocks checked against naive loops, closed forms and scipy itself."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tta.corruptions import blur
from tta.corruptions.context import Context
from tta.corruptions.motion import motion_blur, motion_kernel
from tta.corruptions.presets import PRESETS
from tta.corruptions.resample import bilinear, cv2_linear_resize
from tta.corruptions.rng import Draws
from tta.corruptions.spatter import canny, chamfer_distance, equalize_hist
from tta.corruptions.weather import plasma_fractal


def _naive_motion(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage written per pixel, edge-replicated."""
    width = int(2 * math.ceil(radius) + 1)
    k = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(width)]
    k = [v / sum(k) for v in k]
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(px, py)
    h, w = img.shape[:2]
    out = np.zeros(img.shape)
    for y in range(h):
        for x in range(w):
            for i in range(width):
                ox = math.ceil(i * py / hyp - 0.5)
                oy = math.ceil(i * px / hyp - 0.5)
                out[y, x] += k[i] * img[min(max(y + oy, 0), h - 1), min(max(x + ox, 0), w - 1)]
    return np.floor(out + 0.5)


@pytest.mark.parametrize("angle", [-45.0, -7.3, 0.0, 31.0, -100.0])
def test_motion_blur_matches_per_pixel_imagemagick_kernel(angle):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(1, 12, 14, 3)).astype(np.uint8)
    out = motion_blur(img, 6, 2.0, np.array([angle]))
    ref = _naive_motion(img[0].astype(np.float64), 6, 2.0, angle)
    assert np.abs(out[0].astype(int) - ref).max() <= 1


def test_motion_kernel_is_one_sided_gaussian():
    k = motion_kernel(6, 1.0)
    assert len(k) == 13 and k[0] == k.max() and abs(k.sum() - 1) < 1e-12
    np.testing.assert_allclose(k[1] / k[0], math.exp(-0.5))


def test_motion_blur_of_constant_image_is_constant():
    img = np.full((3, 10, 10, 3), 77, np.uint8)
    np.testing.assert_array_equal(motion_blur(img, 9, 2.5, np.array([-40.0, 3.0, 44.0])), img)


def _original_glass_shuffle(img: np.ndarray, d: int, offsets: list[np.ndarray]) -> np.ndarray:
    """The published loop, statement for statement, with given (dx, dy) per visit."""
    x = img.copy()
    h, w = x.shape[:2]
    for it, off in enumerate(offsets):
        t = 0
        for hh in range(h - d, d, -1):
            for ww in range(w - d, d, -1):
                dx, dy = off[t]
                t += 1
                hp, wp = hh + dy, ww + dx
                x[hh, ww], x[hp, wp] = x[hp, wp], x[hh, ww]  # noqa: the view aliasing is the point
    return x


@pytest.mark.parametrize("d,iterations", [(1, 2), (2, 1), (3, 2), (4, 1)])
def test_glass_blur_reproduces_published_pixel_loop(d, iterations):
    rng = np.random.default_rng(d)
    n, size = 3, 18
    x = rng.integers(0, 256, size=(n, size, size, 3)).astype(np.uint8)
    draws = Draws(5, 4, np.arange(n))
    sigma = 0.05  # radius int(0.2 + 0.5) = 0: both blurs are the identity, isolating the shuffle
    out = blur.glass_blur(x, (sigma, d, iterations), draws, Context(PRESETS["cifar"]))
    npos = (size - 2 * d) ** 2
    for i in range(n):
        offs = [draws.integers(it, -d, d, (npos, 2))[i] for it in range(iterations)]
        ref = _original_glass_shuffle((x[i] / 255.0 * 255).astype(np.uint8), d, offs)
        np.testing.assert_array_equal(out[i].astype(np.uint8), ref)


def test_bilinear_reflect_matches_scipy_map_coordinates():
    rng = np.random.default_rng(3)
    img = rng.random((2, 9, 11, 3)).astype(np.float32)
    ys = rng.uniform(-3, 12, size=(2, 5, 6))
    xs = rng.uniform(-3, 14, size=(2, 5, 6))
    out = bilinear(img, ys, xs, border="reflect")
    for i in range(2):
        for c in range(3):
            ref = ndimage.map_coordinates(img[i, :, :, c], [ys[i], xs[i]], order=1, mode="reflect")
            np.testing.assert_allclose(out[i, :, :, c], ref, atol=1e-5)


def test_bilinear_reflect101_matches_scipy_mirror_at_integer_taps():
    rng = np.random.default_rng(4)
    img = rng.random((1, 7, 8, 1))
    ys, xs = np.meshgrid(np.arange(-3, 10) + 0.25, np.arange(-2, 9) + 0.5, indexing="ij")
    out = bilinear(img, ys[None], xs[None], border="reflect101")
    # scipy 'mirror' is BORDER_REFLECT_101 for each integer tap
    ref = ndimage.map_coordinates(img[0, :, :, 0], [ys, xs], order=1, mode="mirror")
    np.testing.assert_allclose(out[0, :, :, 0], ref, atol=1e-12)


def test_cv2_linear_resize_halving_averages_pixel_pairs():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(8, 10, 3)).astype(np.uint8)
    out = cv2_linear_resize(img, 0.5)
    ref = img.astype(float).reshape(4, 2, 5, 2, 3).mean(axis=(1, 3))
    assert out.shape == (4, 5, 3)
    assert np.abs(out - ref).max() <= 0.5 + 1e-9


def test_plasma_fractal_range_and_batch_independence():
    d = Draws(0, 9, np.arange(4))
    m = plasma_fractal(d, 32, 2.0)
    assert m.shape == (4, 32, 32)
    np.testing.assert_allclose(m.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(m.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(plasma_fractal(Draws(0, 9, np.arange(2, 4)), 32, 2.0), m[2:])
    # a smaller wibble decay keeps more high-frequency energy
    rough = np.abs(np.diff(plasma_fractal(d, 32, 1.5), axis=2)).mean()
    smooth = np.abs(np.diff(plasma_fractal(d, 32, 3.0), axis=2)).mean()
    assert rough > smooth


def test_chamfer_distance_closed_form_for_one_edge_pixel():
    edges = np.zeros((1, 25, 25), bool)
    edges[0, 12, 12] = True
    dist = chamfer_distance(edges, 20.0)
    a, b, c = 1.0, 1.4, 2.1969
    for y in range(25):
        for x in range(25):
            p, q = sorted((abs(y - 12), abs(x - 12)), reverse=True)  # p >= q
            ref = c * q + a * (p - 2 * q) if p >= 2 * q else c * (p - q) + b * (2 * q - p)
            if ref < 20:
                assert abs(dist[0, y, x] - ref) < 1e-4, (y, x, dist[0, y, x], ref)


def test_canny_finds_a_step_edge_and_nothing_in_flat_regions():
    img = np.zeros((2, 16, 16), np.uint8)
    img[0, :, 8:] = 200
    edges = canny(img, 50, 150)
    assert not edges[1].any()
    cols = np.nonzero(edges[0].any(axis=0))[0]
    assert set(cols) <= {7, 8} and edges[0].sum() == 16  # one pixel-wide line


def test_equalize_hist_matches_opencv_formula():
    rng = np.random.default_rng(6)
    img = rng.integers(3, 40, size=(2, 6, 7)).astype(np.uint8)
    out = equalize_hist(img)
    for i in range(2):
        v = img[i].ravel()
        hist = np.bincount(v, minlength=256)
        first = np.nonzero(hist)[0][0]
        scale = 255.0 / (v.size - hist[first])
        lut = np.zeros(256)
        acc = 0
        for k in range(first + 1, 256):
            acc += hist[k]
            lut[k] = round(acc * scale)
        np.testing.assert_array_equal(out[i].ravel(), lut[v])
