"""Linear filters with the boundary, truncation and sigma conventions of the originals.

Boundary-mode names used by the original libraries and their equivalents here:

- ``skimage.filters.gaussian`` calls ``scipy.ndimage.gaussian_filter`` with
  ``mode='nearest'`` and ``truncate=4.0`` unless told otherwise; the kernel radius
  is ``int(truncate * sigma + 0.5)``. We call scipy directly with the same values.
- OpenCV's default border ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``) is
  scipy's ``'mirror'``, numpy's ``np.pad(mode='reflect')`` and torch's ``'reflect'``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage, signal, sparse


def gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """skimage ``gaussian`` on each image of a batch: (N,H,W) or (N,H,W,C), float64 out.

    Only the two spatial axes are filtered (skimage's ``multichannel=True``).
    """
    sig = [0.0] * x.ndim
    sig[1] = sig[2] = float(sigma)
    return ndimage.gaussian_filter(np.asarray(x, dtype=np.float64), sig, mode=mode, truncate=truncate)


def correlate_reflect101(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.filter2D`` (anchor at the centre, BORDER_REFLECT_101) on (N,H,W,C) float64.

    The kernel must have odd sides. Small kernels run as one sparse (H*W, H*W)
    operator on the whole batch; larger ones through the FFT, as OpenCV itself does
    for kernels of 11x11 and more.
    """
    n, h, w, c = x.shape
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    if kh * kw <= 49:
        return apply_operator(_correlation_operator(h, w, kernel.tobytes(), kh, kw), x, np.float64)
    p = np.pad(x, ((0, 0), (ry, ry), (rx, rx), (0, 0)), mode="reflect")
    flipped = kernel[::-1, ::-1][None, :, :, None]  # correlation = convolution with the flipped kernel
    return signal.fftconvolve(p, flipped, mode="valid", axes=(1, 2))


@lru_cache(maxsize=64)
def _correlation_operator(h: int, w: int, kernel_bytes: bytes, kh: int, kw: int) -> sparse.csr_matrix:
    """(H*W, H*W) sparse matrix of a centred correlation with BORDER_REFLECT_101 taps."""
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(kh, kw)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows, cols, vals = [], [], []
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j] != 0:
                sy = _reflect101(yy + i - kh // 2, h)
                sx = _reflect101(xx + j - kw // 2, w)
                rows.append((yy * w + xx).ravel())
                cols.append((sy * w + sx).ravel())
                vals.append(np.full(h * w, kernel[i, j]))
    # duplicate (row, col) pairs near the border are summed, as the taps coincide there
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))


def _reflect101(i: np.ndarray, n: int) -> np.ndarray:
    period = 2 * n - 2
    i = np.abs(i) % period
    return np.where(i >= n, period - i, i)


def apply_operator(op: sparse.csr_matrix, x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Apply an (H*W, H*W) operator to every channel of every image of (N,H,W,C)."""
    n, h, w, c = x.shape
    cols = np.ascontiguousarray(x.reshape(n, h * w, c).transpose(1, 0, 2), dtype=np.float64).reshape(h * w, n * c)
    return (op @ cols).reshape(h * w, n, c).transpose(1, 0, 2).reshape(n, h, w, c).astype(dtype, copy=False)


def opencv_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, sigma)`` for sigma > 0 (computed in double, normalised)."""
    t = np.arange(ksize) - (ksize - 1) * 0.5
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


@lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The original ``disk()``: an aliased disk, normalised, then ``cv2.GaussianBlur``.

    Grid -8..8 (3x3 blur) for radius <= 8, else -radius..radius (5x5 blur), float32,
    the blur using BORDER_REFLECT_101. Cropped to its non-zero support, which leaves
    a centred correlation unchanged.
    """
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    g = opencv_gaussian_kernel(ksize, alias_blur)
    out = ndimage.correlate1d(disk.astype(np.float64), g, axis=0, mode="mirror")
    out = ndimage.correlate1d(out, g, axis=1, mode="mirror").astype(np.float32)
    centre = out.shape[0] // 2
    ys, xs = np.nonzero(out)
    r = int(max(np.abs(ys - centre).max(), np.abs(xs - centre).max()))
    out = out[centre - r : centre + r + 1, centre - r : centre + r + 1]
    out.setflags(write=False)
    return out


@lru_cache(maxsize=512)
def clipped_zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """(size, size) linear map of the original ``clipped_zoom`` along one axis.

    Central crop of ``ceil(size / zoom)`` pixels, ``scipy.ndimage.zoom(order=1)``
    (corner-aligned: output o samples input ``o * (ch - 1) / (out - 1)``, output
    length ``round(ch * zoom)``), then the central ``size`` pixels.
    """
    ch = int(np.ceil(size / zoom))
    top = (size - ch) // 2
    out_len = int(round(ch * zoom))
    trim = (out_len - size) // 2
    o = np.arange(trim, trim + size, dtype=np.float64)
    coord = o * ((ch - 1) / (out_len - 1)) if out_len > 1 else np.zeros(size)
    i0 = np.clip(np.floor(coord).astype(np.int64), 0, ch - 1)
    i1 = np.minimum(i0 + 1, ch - 1)
    frac = coord - i0
    m = np.zeros((size, size))
    rows = np.arange(size)
    np.add.at(m, (rows, top + i0), 1.0 - frac)
    np.add.at(m, (rows, top + i1), frac)
    m.setflags(write=False)
    return m


@lru_cache(maxsize=32)
def _zoom_operator(h: int, w: int, zooms: tuple[float, ...]) -> sparse.csr_matrix:
    """(H*W, H*W) sparse map of ``sum_z clipped_zoom(img, z)`` on a raveled channel.

    Each zoom is separable (``A_h img A_w^T``, i.e. ``kron(A_h, A_w)`` on the raveled
    image) with two non-zeros per row and axis, so the sum has at most 4 Z per row.
    """
    op = sparse.csr_matrix((h * w, h * w))
    for z in zooms:
        op = op + sparse.kron(sparse.csr_matrix(clipped_zoom_matrix(h, z)), sparse.csr_matrix(clipped_zoom_matrix(w, z)))
    return op.tocsr()


def clipped_zoom_sum(x: np.ndarray, zooms: np.ndarray | list[float], dtype=np.float64) -> np.ndarray:
    """Sum over ``zooms`` of ``clipped_zoom(x, z)`` for a batch (N,H,W) or (N,H,W,C).

    One sparse product over the whole batch, accumulated in float64, returned in ``dtype``.
    """
    squeeze = x.ndim == 3
    if squeeze:
        x = x[..., None]
    n, h, w, c = x.shape
    out = apply_operator(_zoom_operator(h, w, tuple(float(z) for z in zooms)), x, dtype)
    return out[..., 0] if squeeze else out
