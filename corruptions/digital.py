"""Digital corruptions: brightness, contrast, saturate, elastic, pixelate, JPEG."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from . import torch_ops
from .context import Context
from .filters import gaussian
from .resample import bilinear, pil_box_resize
from .rng import Draws


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def brightness(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """Add c to the HSV value channel (skimage rgb2hsv / hsv2rgb arithmetic), clip to [0, 1].

    Runs the torch implementation (the same float64 operations; faster on the CPU).
    """
    return torch_ops.brightness(_tensor(x), c, draws, ctx).numpy()


def saturate(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """HSV saturation ``s * c0 + c1``, clipped to [0, 1] (torch implementation, as brightness)."""
    return torch_ops.saturate(_tensor(x), c, draws, ctx).numpy()


def contrast(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """``(x - mean) * c + mean`` with the per-image, per-channel mean."""
    xf = x / 255.0
    means = np.mean(xf, axis=(1, 2), keepdims=True)
    return np.clip((xf - means) * c + means, 0, 1) * 255


def pixelate(x: np.ndarray, c: float, draws: Draws, ctx: Context) -> np.ndarray:
    """Pillow BOX resize to ``int(size * c)`` and BOX back; uint8 out.

    The original uses the preset size (``int(32 * c)``), not the image's.
    """
    n, h, w, _ = x.shape
    small = int(ctx.preset.size * c) if h == ctx.preset.size else int(h * c)
    small_w = int(ctx.preset.size * c) if w == ctx.preset.size else int(w * c)
    return pil_box_resize(pil_box_resize(x, small, small_w), h, w)


def jpeg_compression(x: np.ndarray, c: int, draws: Draws, ctx: Context) -> np.ndarray:
    """Pillow JPEG encode at quality c (its default 4:2:0 subsampling) and decode; uint8 out.

    The codec has no batch interface, so this runs one C call per image.
    """
    out = np.empty_like(x)
    for i in range(len(x)):
        buf = io.BytesIO()
        Image.fromarray(x[i]).save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


_AFFINE_SCALE = 32  # OpenCV INTER_TAB_SIZE: warpAffine quantises coordinates to 1/32 px


def elastic_transform(x: np.ndarray, c: tuple, draws: Draws, ctx: Context) -> np.ndarray:
    """Random affine warp then a smooth random displacement field (float32 as the original).

    Affine: three points ``centre +- size//3`` jittered by U(-c2, c2)
    (``cv2.getAffineTransform``), applied by ``cv2.warpAffine`` (bilinear, coordinates
    rounded to 1/32 px like OpenCV, BORDER_REFLECT_101). Displacements:
    ``gaussian(U(-1, 1), c1, mode='reflect', truncate=3) * c0`` for x and y, then
    ``map_coordinates(order=1, mode='reflect')`` (scipy's half-sample reflection).
    """
    alpha, sigma, jitter = c
    n, h, w, _ = x.shape
    img = x.astype(np.float32) / np.float32(255)

    center = np.float32([h, w]) // 2
    square = min(h, w) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    pts2 = pts1[None] + draws.uniform(0, (3, 2), -jitter, jitter).astype(np.float32)
    # M maps src (x, y) -> dst; warpAffine samples src at M^-1 (x, y) for every dst pixel
    a = np.concatenate([pts1.astype(np.float64), np.ones((3, 1))], axis=1)
    m = np.linalg.solve(a[None], pts2.astype(np.float64)).transpose(0, 2, 1)  # (N, 2, 3)
    lin = np.linalg.inv(m[:, :, :2])
    shift = -np.einsum("nij,nj->ni", lin, m[:, :, 2])
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    sx = lin[:, 0, 0, None, None] * xx + lin[:, 0, 1, None, None] * yy + shift[:, 0, None, None]
    sy = lin[:, 1, 0, None, None] * xx + lin[:, 1, 1, None, None] * yy + shift[:, 1, None, None]
    sx = np.floor(sx * _AFFINE_SCALE + 0.5) / _AFFINE_SCALE
    sy = np.floor(sy * _AFFINE_SCALE + 0.5) / _AFFINE_SCALE
    img = bilinear(img, sy, sx, border="reflect101")

    dx = (gaussian(draws.uniform(1, (h, w), -1.0, 1.0), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (gaussian(draws.uniform(2, (h, w), -1.0, 1.0), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    out = bilinear(img, yy[None] + dy, xx[None] + dx, border="reflect")
    return np.clip(out, 0, 1) * np.float32(255)
