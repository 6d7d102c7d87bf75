"""Random views of a batch: CoTTA's test-time augmentation (``COTTA_AUGMENT``) and ROID's (``ROID_AUGMENT``).

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
an explicit ``torch.Generator``: no Python loop over samples, and on CPU one over views (each
view's work vectorized over the batch, for cache locality; ``augment_views``).

Exact shortcuts (equal to torchvision within float rounding): the affine warp is only
evaluated on the pixels the crop (plus the blur's 2-pixel border) keeps; with edge padding it
reads the unpadded image with border clamping whenever no sample reaches the fill (always for
CoTTA's ranges); the blur is a separable valid convolution on that window (two banded matrix
products), which equals torchvision's reflect-padded blur followed by the centre crop because
the window never reaches the padded image's border.

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

    def rows(self, start: int, stop: int) -> "ViewParams":
        """Views start..stop-1."""
        return ViewParams(self.order[start:stop], self.jitter[start:stop], self.angle[start:stop],
                          self.translate[start:stop], self.scale[start:stop],
                          None if self.sigma is None else self.sigma[start:stop], self.flip[start:stop])


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


def _hsv_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h, s, v) of RGB ``x`` along dim -3, each without that dim: the hexcone model torchvision uses."""
    r, g, b = x.unbind(dim=-3)
    maxc = torch.maximum(torch.maximum(r, g), b)  # the values amax/amin over the 3 channels give, elementwise
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    flat = chroma == 0
    s = chroma / torch.where(flat, torch.ones_like(maxc), maxc)
    div = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    h = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _rgb_from_parts(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """RGB stacked along dim -3 from (h, s, v): channel n (5, 3, 1 for r, g, b) is
    v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6, the closed form of torchvision's
    six-sector table (equal to it within float rounding), without building the table."""
    h6 = h * 6.0
    vs = v * s
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        out.append(torch.addcmul(v, vs, k, value=-1.0))
    return torch.stack(out, dim=-3)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] to HSV (hue in [0, 1)) along dim -3, the hexcone model torchvision uses."""
    return torch.stack(_hsv_parts(x), dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (see ``_rgb_from_parts``)."""
    return _rgb_from_parts(*x.unbind(dim=-3))


def _colour_op(op: int, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, *([1] * (x.dim() - 1)))
    if op == BRIGHTNESS:
        return (f * x).clamp(0.0, 1.0)
    if op == CONTRAST:
        return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), f)
    if op == SATURATION:
        return _blend(x, _gray(x), f)
    if op == HUE:  # through HSV without stacking it: the channels stay separate tensors
        h, sat, val = _hsv_parts(x)
        return _rgb_from_parts(torch.remainder(h + f.squeeze(-3), 1.0), sat, val)
    # gamma (gain 1); the official op clamps to [1e-8, 1] first to keep gradients finite
    return x.clamp(1e-8, 1.0).pow(f).clamp(0.0, 1.0)


def colour_jitter(x: torch.Tensor, order: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """ColorJitterPro per view: x is (V, B, C, H, W); view v applies ops in ``order[v]``."""
    if x.shape[0] == 1:  # one view: its five ops in turn, without gathering and scattering views
        y = x[0]
        for op in order[0].tolist():
            y = _colour_op(op, y, jitter[0, op:op + 1].to(x))
        return y.unsqueeze(0)
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


def _window_grid(params: ViewParams, lo: int, size: int, padded: int) -> torch.Tensor:
    """(V, size, size, 2) sampling grid, normalized to the ``padded``-pixel image, of rows/cols lo..lo+size-1."""
    theta = _inverse_affine(params).to(torch.float32)
    coords = torch.arange(lo, lo + size, dtype=torch.float32) - padded * 0.5 + 0.5
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    base = torch.stack((gx, gy, torch.ones_like(gx)), dim=-1).view(1, size * size, 3)
    grid = torch.matmul(base, theta.transpose(1, 2)) / torch.tensor([0.5 * padded, 0.5 * padded])
    return grid.view(len(params), size, size, 2)


def _affine_window_edge(img: torch.Tensor, params: ViewParams, lo: int, size: int, pad: int) -> torch.Tensor | None:
    """The warp of the edge-padded images, read from the (V, B, C, n, n) images themselves: where every
    sample's four neighbours lie inside the padded image (always, for CoTTA's ranges), bilinear sampling
    of the edge-padded image is border-clamped sampling of the unpadded one and torchvision's fill mask is
    1, so neither the padding nor the mask is built. None when some sample reaches the fill."""
    v, b, c, n, _ = img.shape
    padded = n + 2 * pad
    grid = _window_grid(params, lo, size, padded)
    if float(grid.abs().amax()) > 1.0 - 1.0 / padded:
        return None
    grid = (grid * (padded / n)).to(img)  # the same pixel positions, normalized to the unpadded image
    out = F.grid_sample(img.reshape(v, b * c, n, n), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.view(v, b, c, size, size)


def _affine_window(img: torch.Tensor, params: ViewParams, lo: int, size: int) -> torch.Tensor:
    """Bilinear affine warp (fill 0) of (V, B, C, P, P) images, evaluated on rows/cols lo..lo+size-1."""
    v, b, c, pad_h, pad_w = img.shape
    grid = _window_grid(params, lo, size, pad_w).to(img)
    out = F.grid_sample(img.reshape(v, b * c, pad_h, pad_w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    # torchvision warps a ones channel with the image (the same per-channel arithmetic, sampled here on its own)
    mask = F.grid_sample(img.new_ones(v, 1, pad_h, pad_w), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)
    # torchvision's fill blend: image * mask + (1 - mask) * fill, fill = 0
    return out.mul_(mask).view(v, b, c, size, size)


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size)
    pdf = torch.exp(-0.5 * (x / sigma.float().view(-1, 1)) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)  # (V, size)


def _band(k: torch.Tensor, n_out: int) -> torch.Tensor:
    """(V, n_out + size - 1, n_out) matrices M with M[v, j + i, j] = k[v, i]: a valid correlation as a product."""
    size = k.shape[1]
    band = k.new_zeros(k.shape[0], n_out + size - 1, n_out)
    cols = torch.arange(n_out, device=k.device)
    for i in range(size):
        band[:, cols + i, cols] = k[:, i:i + 1]
    return band


def _blur_valid(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Per-view separable Gaussian blur of (V, B, C, h, w), valid region only.

    Each pass is a matrix product with a banded (V, in, out) matrix: the horizontal one a batched GEMM over
    all rows of a view, the vertical one a product per image; five times faster on CPU than ten shifted
    multiply-adds over the whole tensor, equal within float rounding.
    """
    k = _gaussian_kernels(sigma, size).to(x)
    v, b, c, h, w = x.shape
    n_out_h, n_out_w = h - size + 1, w - size + 1
    rows = torch.bmm(x.reshape(v, b * c * h, w), _band(k, n_out_w)).view(v, b * c, h, n_out_w)
    out = torch.matmul(_band(k, n_out_h).transpose(1, 2).unsqueeze(1), rows)
    return out.view(v, b, c, n_out_h, n_out_w)


def augment_views(x: torch.Tensor, params: ViewParams, config: AugmentConfig = COTTA_AUGMENT,
                  noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, views_at_once: int | None = None) -> torch.Tensor:
    """Apply each view's parameters to the whole batch: (B, C, H, W) -> (V*B, C, H, W), view-major.

    ``noise`` (same shape as the output, already scaled) replaces the drawn Gaussian noise,
    so a test can inject it; otherwise it is drawn from ``generator``, in one call for all views.
    ``views_at_once`` views go through the colour and geometry steps together (default: one on CPU,
    where one view of a batch stays in cache through its dozens of elementwise steps, about twice as fast
    as streaming all views through memory at every step; all of them on an accelerator, where fewer, larger
    launches win). The result does not depend on it beyond float rounding.
    """
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != x.shape[-2]:
        raise InputError(f"expected a (B, 3, n, n) RGB batch in [0, 1], got shape {tuple(x.shape)}")
    mode = {"edge": "replicate", "reflect": "reflect"}.get(config.padding_mode)
    if mode is None:
        raise InputError(f"padding_mode must be 'edge' or 'reflect', got {config.padding_mode!r}")
    b, c, n, _ = x.shape
    v = len(params)
    step = views_at_once or (1 if x.device.type == "cpu" else v)
    clipped = x.clamp(0.0, 1.0).contiguous().unsqueeze(0)  # one layout, one rounding, whatever the caller's
    pad = n // 2
    crop_lo = int(round((n + 2 * pad - n) / 2.0))
    border = config.blur_kernel // 2 if params.sigma is not None else 0
    lo, size = crop_lo - border, n + 2 * border
    out = x.new_empty(v, b, c, n, n)
    for start in range(0, v, step):
        part = params.rows(start, min(start + step, v))
        k = len(part)
        y = colour_jitter(clipped.expand(k, b, c, n, n), part.order, part.jitter)
        window = _affine_window_edge(y, part, lo, size, pad) if mode == "replicate" else None
        if window is None:
            padded = F.pad(y.reshape(k, b * c, n, n), (pad, pad, pad, pad), mode=mode)
            window = _affine_window(padded.view(k, b, c, n + 2 * pad, n + 2 * pad), part, lo, size)
        y = window if part.sigma is None else _blur_valid(window, part.sigma, config.blur_kernel)
        if k == 1:  # one view: flip it or not, without computing both
            out[start] = y[0].flip(-1) if bool(part.flip[0]) else y[0]
        else:
            out[start:start + k] = torch.where(part.flip.to(y.device).view(k, 1, 1, 1, 1), y.flip(-1), y)
    out = out.view(v * b, c, n, n)
    if config.noise_std is not None:
        if noise is None:
            device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(out.shape, generator=generator, device=device).to(out).mul_(config.noise_std)
        out.add_(noise)
    return out.clamp_(0.0, 1.0)


def augment(x: torch.Tensor, n_views: int, config: AugmentConfig = COTTA_AUGMENT,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n_views`` parameter sets and return the (n_views*B, C, H, W) augmented batch."""
    params = sample_view_params(n_views, x.shape[-1], config, generator)
    return augment_views(x, params, config, generator=generator)

