"""The batched CoTTA/ROID augmentation against torchvision applied view by view, and closed forms."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from tta.methods._view_augment import (COTTA_AUGMENT, AugmentConfig, COTTA_AUGMENT_SOFT, ROID_AUGMENT, ViewParams,
                                       augment, augment_views, hsv_to_rgb, rgb_to_hsv, sample_view_params)
from tta.errors import InputError

_JITTER = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue,
           lambda im, f: TF.adjust_gamma(im.clamp(1e-8, 1.0), f)]  # ColorJitterPro's gamma clamps first


def official_view(x, p: ViewParams, v: int, cfg, noise=None):
    """One view as the official pipeline computes it: torchvision ops on the whole batch, one parameter set."""
    n = x.shape[-1]
    im = x.clamp(0, 1)
    for op in p.order[v].tolist():
        im = _JITTER[op](im, float(p.jitter[v, op]))
    im = TF.pad(im, n // 2, padding_mode=cfg.padding_mode)
    im = TF.affine(im, angle=float(p.angle[v]), translate=[int(p.translate[v, 0]), int(p.translate[v, 1])],
                   scale=float(p.scale[v]), shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR,
                   fill=[0.0] * 3)
    if p.sigma is not None:
        im = TF.gaussian_blur(im, [cfg.blur_kernel] * 2, [float(p.sigma[v])] * 2)
    im = TF.center_crop(im, n)
    if p.flip[v]:
        im = TF.hflip(im)
    if noise is not None:
        im = im + noise
    return im.clamp(0, 1)


def neutral(n_views: int = 1, flip: bool = False, sigma: float | None = 0.001, translate=(0.0, 0.0)) -> ViewParams:
    return ViewParams(order=torch.arange(5).repeat(n_views, 1),
                      jitter=torch.tensor([[1.0, 1.0, 1.0, 0.0, 1.0]] * n_views),
                      angle=torch.zeros(n_views), translate=torch.tensor([translate] * n_views),
                      scale=torch.ones(n_views), sigma=None if sigma is None else torch.full((n_views,), sigma),
                      flip=torch.full((n_views,), flip))


#: ranges wide enough that warped samples reach the fill: the padded path instead of the border-clamped one
WIDE_AUGMENT = AugmentConfig(degrees=(-45.0, 45.0), scale=(0.5, 0.6), translate=0.25)


@pytest.mark.parametrize("cfg", [COTTA_AUGMENT, COTTA_AUGMENT_SOFT, ROID_AUGMENT, WIDE_AUGMENT],
                         ids=["cotta", "soft", "roid", "wide"])
@pytest.mark.parametrize("views_at_once", [None, 5, 12])  # CPU default one view at a time; chunks; all at once
def test_batched_views_equal_torchvision_view_by_view(cfg, views_at_once):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=g)
    p = sample_view_params(12, 32, cfg, g)
    noise = None if cfg.noise_std is None else torch.randn(12 * 5, 3, 32, 32, generator=g) * cfg.noise_std
    out = augment_views(x, p, cfg, noise=noise, views_at_once=views_at_once).view(12, 5, 3, 32, 32)
    for v in range(12):
        nv = None if noise is None else noise[v * 5:(v + 1) * 5]
        # 1e-5: the edge-padded warp is read from the unpadded image at re-normalized positions (3e-6 apart)
        assert torch.allclose(out[v], official_view(x, p, v, cfg, nv), atol=1e-5, rtol=0), v


def test_sampled_parameters_follow_the_official_ranges():
    p = sample_view_params(4000, 32, COTTA_AUGMENT, torch.Generator().manual_seed(0))
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(5).expand(4000, 5))
    lo = torch.tensor([0.6, 0.7, 0.5, -0.06, 0.7])
    hi = torch.tensor([1.4, 1.3, 1.5, 0.06, 1.3])
    assert ((p.jitter >= lo) & (p.jitter <= hi)).all()
    assert (p.jitter.min(0).values - lo).abs().max() < 0.01 and (hi - p.jitter.max(0).values).abs().max() < 0.01
    assert p.angle.abs().max() <= 15 and p.angle.abs().max() > 14.9
    assert set(p.translate.unique().tolist()) == {-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0}  # 64/16 = 4 px
    assert p.scale.min() >= 0.9 and p.scale.max() <= 1.1
    assert p.sigma.min() >= 0.001 and p.sigma.max() <= 0.5
    assert 0.45 < p.flip.float().mean() < 0.55
    # every op is first in about a fifth of the views (uniform random order)
    first = torch.bincount(p.order[:, 0], minlength=5).float() / 4000
    assert (first - 0.2).abs().max() < 0.03


def test_neutral_view_is_identity_flip_and_noise_closed_forms():
    g = torch.Generator().manual_seed(1)
    x = 0.1 + 0.8 * torch.rand(3, 3, 32, 32, generator=g)  # away from the clip bounds
    cfg = COTTA_AUGMENT
    zero = torch.zeros(3, 3, 32, 32)
    assert torch.allclose(augment_views(x, neutral(), cfg, noise=zero), x, atol=1e-6)
    assert torch.allclose(augment_views(x, neutral(flip=True), cfg, noise=zero), x.flip(-1), atol=1e-6)
    noise = torch.randn(3, 3, 32, 32, generator=g) * 0.005
    assert torch.allclose(augment_views(x, neutral(), cfg, noise=noise) - x, noise, atol=1e-6)
    # an integer translation of (2, -1) pixels moves the image by exactly that much (edge padding fills in)
    shifted = augment_views(x, neutral(sigma=None, translate=(2.0, -1.0)), ROID_AUGMENT)
    padded = torch.nn.functional.pad(x, (16, 16, 16, 16), mode="reflect")
    assert torch.allclose(shifted, padded[..., 17:49, 14:46], atol=1e-6)
    # brightness alone: clamp(f * x)
    p = neutral()
    p.jitter[0, 0] = 1.3
    assert torch.allclose(augment_views(x, p, cfg, noise=zero), (1.3 * x).clamp(0, 1), atol=1e-6)


def test_samples_of_a_view_share_parameters_and_views_differ():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(1, 3, 32, 32, generator=g)
    out = augment(img.expand(4, -1, -1, -1), 6, ROID_AUGMENT, g).view(6, 4, 3, 32, 32)  # ROID: no noise
    assert torch.equal(out[:, 0], out[:, 3])  # same image, same view -> same output
    assert (out[0, 0] - out[1, 0]).abs().max() > 1e-2  # different views differ
    with_noise = augment(img.expand(4, -1, -1, -1), 2, COTTA_AUGMENT, g).view(2, 4, 3, 32, 32)
    assert not torch.equal(with_noise[0, 0], with_noise[0, 1])  # noise is per sample


def test_generator_reproducibility_hsv_round_trip_and_bad_input():
    x = torch.rand(2, 3, 32, 32)
    a = augment(x, 3, generator=torch.Generator().manual_seed(9))
    b = augment(x, 3, generator=torch.Generator().manual_seed(9))
    c = augment(x, 3, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (6, 3, 32, 32)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6)
    with pytest.raises(InputError, match="expected a"):
        augment(torch.rand(2, 1, 32, 32), 2)
