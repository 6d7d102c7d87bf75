"""CoTTA's test-time augmentation, batched over views.

The official ``get_tta_transforms`` (qinenergy/cotta ``cifar/cotta.py`` and mariodoebler/
test-time-adaptation ``augmentations/transforms_cotta.py``) is a torchvision pipeline
applied to the whole batch tensor, so every random parameter except the additive noise
is drawn once per call and shared by all samples of that view:

    Clip(0, 1) -> ColorJitterPro (brightness, contrast, saturation, hue, gamma in a random
    order) -> Pad(n/2, edge) -> RandomAffine(+-15 deg, translate 1/16, scale 0.9-1.1,
    bilinear, fill 0) -> GaussianBlur(5, sigma 0.001-0.5) -> CenterCrop(n) -> HFlip(0.5)
    -> + N(0, 0.005^2) per pixel -> Clip(0, 1)

CoTTA calls it 32 times per batch. Here ``V`` views of a ``(B, C, H, W)`` batch come out
as one ``(V*B, C, H, W)`` tensor (view-major), with one parameter set per view drawn from
an explicit ``torch.Generator``: no Python loop over views or samples.

Two exact shortcuts: the affine warp is only evaluated on the pixels the crop (plus the
blur's 2-pixel border) keeps, and the blur is a separable valid convolution on that
window, which equals torchvision's reflect-padded blur followed by the centre crop
because the window never reaches the padded image's border.

ROID uses the same pipeline with reflect padding and without blur and noise
(``ROID_AUGMENT``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError

# Index of each colour op in ViewParams.jitter / ViewParams.order.
BRIGHTNESS, CONTRAST, SATURATION, HUE, GAMMA = range(5)
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of CoTTA's augmentation; defaults are ``get_tta_transforms(soft=False)``."""

    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: tuple[float, float] = (-0.06, 0.06)
    gamma: tuple[float, float] = (0.7, 1.3)
    degrees: tuple[float, float] = (-15.0, 15.0)
    translate: float = 1 / 16  # fraction of the padded image size, rounded to whole pixels
    scale: tuple[float, float] = (0.9, 1.1)
    padding_mode: str = "edge"  # "edge" (CoTTA) or "reflect" (ROID)
    blur_sigma: tuple[float, float] | None = (0.001, 0.5)  # None: no blur (ROID)
    blur_kernel: int = 5
    hflip_p: float = 0.5
    noise_std: float | None = 0.005  # None: no noise (ROID)


COTTA_AUGMENT = AugmentConfig()
COTTA_AUGMENT_SOFT = AugmentConfig(
    brightness=(0.8, 1.2), contrast=(0.85, 1.15), saturation=(0.75, 1.25), hue=(-0.03, 0.03),
    gamma=(0.85, 1.15), degrees=(-8.0, 8.0), scale=(0.95, 1.05), blur_sigma=(0.001, 0.25),
)
ROID_AUGMENT = AugmentConfig(padding_mode="reflect", blur_sigma=None, noise_std=None)


@dataclass
class ViewParams:
    """One row per view; every sample of a view shares its row (as in the official code).

    ``order[v]`` is the permutation in which view v applies the five colour ops and
    ``jitter[v, k]`` the factor of op k (BRIGHTNESS..GAMMA). ``translate`` holds whole
    pixels (torchvision rounds them). ``sigma`` is None when the config has no blur.
    """

    order: torch.Tensor  # (V, 5) int64
    jitter: torch.Tensor  # (V, 5) float
    angle: torch.Tensor  # (V,) degrees
    translate: torch.Tensor  # (V, 2) whole pixels (x, y)
    scale: torch.Tensor  # (V,)
    sigma: torch.Tensor | None  # (V,)
    flip: torch.Tensor  # (V,) bool

    def __len__(self) -> int:
        return int(self.order.shape[0])


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    lo, hi = bounds
    return torch.rand(n, generator=generator, dtype=torch.float64) * (hi - lo) + lo


def sample_view_params(n_views: int, image_size: int, config: AugmentConfig = COTTA_AUGMENT,
                       generator: torch.Generator | None = None) -> ViewParams:
    """Draw the per-view parameters of ``n_views`` views of ``image_size``-pixel images."""
    if n_views < 1:
        raise InputError(f"n_views must be >= 1, got {n_views}")
    order = torch.argsort(torch.rand(n_views, 5, generator=generator), dim=1)
    ranges = (config.brightness, config.contrast, config.saturation, config.hue, config.gamma)
    jitter = torch.stack([_uniform(n_views, r, generator) for r in ranges], dim=1).float()
    padded = image_size + 2 * (image_size // 2)
    max_shift = config.translate * padded
    translate = torch.round(_uniform(2 * n_views, (-max_shift, max_shift), generator)).view(n_views, 2)
    angle = _uniform(n_views, config.degrees, generator)
    scale = _uniform(n_views, config.scale, generator)
    sigma = None if config.blur_sigma is None else _uniform(n_views, config.blur_sigma, generator)
    flip = torch.rand(n_views, generator=generator) < config.hflip_p
    return ViewParams(order, jitter, angle, translate, scale, sigma, flip)


# ---- colour ops on (V, B, C, H, W) with one factor per view -------------------------------

def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * a + (1.0 - f) * b).clamp(0.0, 1.0)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] to HSV (hue in [0, 1)) along dim -3, the hexcone model torchvision uses."""
    r, g, b = x.unbind(dim=-3)
    maxc, minc = x.amax(dim=-3), x.amin(dim=-3)
    chroma = maxc - minc
    flat = chroma == 0
    s = chroma / torch.where(flat, torch.ones_like(maxc), maxc)
    div = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    h = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(dim=-3)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.long() % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # channel values per sector 0..5, stacked on a new leading dim, then picked by sector
    r = torch.stack((v, q, p, p, t, v))
    g = torch.stack((t, v, v, q, p, p))
    b = torch.stack((p, p, t, v, v, q))
    idx = sector.unsqueeze(0)
    return torch.stack([c.gather(0, idx).squeeze(0) for c in (r, g, b)], dim=-3)


def _colour_op(op: int, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, *([1] * (x.dim() - 1)))
    if op == BRIGHTNESS:
        return (f * x).clamp(0.0, 1.0)
    if op == CONTRAST:
        return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), f)
    if op == SATURATION:
        return _blend(x, _gray(x), f)
    if op == HUE:
        hsv = rgb_to_hsv(x)
        h = torch.remainder(hsv[..., :1, :, :] + f, 1.0)
        return hsv_to_rgb(torch.cat((h, hsv[..., 1:, :, :]), dim=-3))
    # gamma (gain 1); the official op clamps to [1e-8, 1] first to keep gradients finite
    return x.clamp(1e-8, 1.0).pow(f).clamp(0.0, 1.0)


def colour_jitter(x: torch.Tensor, order: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """ColorJitterPro per view: x is (V, B, C, H, W); view v applies ops in ``order[v]``."""
    out = x.clone()
    for stage in range(order.shape[1]):
        for op in range(5):
            sel = torch.nonzero(order[:, stage] == op).flatten()
            if sel.numel():
                out[sel] = _colour_op(op, out[sel], jitter[sel, op].to(x))
    return out


# ---- geometry ---------------------------------------------------------------------------

def _inverse_affine(params: ViewParams) -> torch.Tensor:
    """(V, 2, 3) output->input maps in centred pixel units (torchvision's inverse matrix, no shear)."""
    rot = torch.deg2rad(params.angle.double())
    cos, sin = torch.cos(rot) / params.scale.double(), torch.sin(rot) / params.scale.double()
    tx, ty = params.translate.double().unbind(dim=1)
    row0 = torch.stack((cos, sin, -cos * tx - sin * ty), dim=1)
    row1 = torch.stack((-sin, cos, sin * tx - cos * ty), dim=1)
    return torch.stack((row0, row1), dim=1)


def _affine_window(img: torch.Tensor, params: ViewParams, lo: int, size: int) -> torch.Tensor:
    """Bilinear affine warp (fill 0) of (V, B, C, P, P) images, evaluated on rows/cols lo..lo+size-1."""
    v, b, c, pad_h, pad_w = img.shape
    theta = _inverse_affine(params).to(torch.float32)
    coords_x = torch.arange(lo, lo + size, dtype=torch.float32) - pad_w * 0.5 + 0.5
    coords_y = torch.arange(lo, lo + size, dtype=torch.float32) - pad_h * 0.5 + 0.5
    gy, gx = torch.meshgrid(coords_y, coords_x, indexing="ij")
    base = torch.stack((gx, gy, torch.ones_like(gx)), dim=-1).view(1, size * size, 3)
    grid = torch.matmul(base, theta.transpose(1, 2)) / torch.tensor([0.5 * pad_w, 0.5 * pad_h])
    grid = grid.view(v, size, size, 2).to(img)
    flat = torch.cat((img.reshape(v, b * c, pad_h, pad_w), img.new_ones(v, 1, pad_h, pad_w)), dim=1)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = out[:, -1:]
    # torchvision's fill blend: image * mask + (1 - mask) * fill, fill = 0
    return (out[:, :-1] * mask).view(v, b, c, size, size)


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size)
    pdf = torch.exp(-0.5 * (x / sigma.float().view(-1, 1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)  # (V, size)


def _blur_valid(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Per-view separable Gaussian blur of (V, B, C, h, w), valid region only."""
    k = _gaussian_kernels(sigma, size).to(x)
    kv = k.view(-1, 1, 1, size, 1, 1)  # rows
    n_out_h = x.shape[-2] - size + 1
    rows = sum(kv[:, :, :, i] * x[..., i:i + n_out_h, :] for i in range(size))
    kh = k.view(-1, 1, 1, 1, size, 1)
    n_out_w = x.shape[-1] - size + 1
    return sum(kh[:, :, :, :, i] * rows[..., i:i + n_out_w] for i in range(size))


def augment_views(x: torch.Tensor, params: ViewParams, config: AugmentConfig = COTTA_AUGMENT,
                  noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply each view's parameters to the whole batch: (B, C, H, W) -> (V*B, C, H, W), view-major.

    ``noise`` (same shape as the output, already scaled) replaces the drawn Gaussian noise,
    so a test can inject it; otherwise it is drawn from ``generator``.
    """
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != x.shape[-2]:
        raise InputError(f"expected a (B, 3, n, n) RGB batch in [0, 1], got shape {tuple(x.shape)}")
    b, c, n, _ = x.shape
    v = len(params)
    out = x.clamp(0.0, 1.0).unsqueeze(0).expand(v, b, c, n, n)
    out = colour_jitter(out, params.order, params.jitter)
    pad = n // 2
    mode = {"edge": "replicate", "reflect": "reflect"}.get(config.padding_mode)
    if mode is None:
        raise InputError(f"padding_mode must be 'edge' or 'reflect', got {config.padding_mode!r}")
    padded = F.pad(out.reshape(v, b * c, n, n), (pad, pad, pad, pad), mode=mode).view(v, b, c, n + 2 * pad, n + 2 * pad)
    crop_lo = int(round((n + 2 * pad - n) / 2.0))
    if params.sigma is not None:
        border = config.blur_kernel // 2
        window = _affine_window(padded, params, crop_lo - border, n + 2 * border)
        out = _blur_valid(window, params.sigma, config.blur_kernel)
    else:
        out = _affine_window(padded, params, crop_lo, n)
    out = torch.where(params.flip.to(out.device).view(v, 1, 1, 1, 1), out.flip(-1), out)
    out = out.reshape(v * b, c, n, n)
    if config.noise_std is not None:
        if noise is None:
            device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(out.shape, generator=generator, device=device).to(out) * config.noise_std
        out = out + noise
    return out.clamp(0.0, 1.0)


def augment(x: torch.Tensor, n_views: int, config: AugmentConfig = COTTA_AUGMENT,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n_views`` parameter sets and return the (n_views*B, C, H, W) augmented batch."""
    params = sample_view_params(n_views, x.shape[-1], config, generator)
    return augment_views(x, params, config, generator=generator)

