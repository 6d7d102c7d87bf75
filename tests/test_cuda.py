"""Every method and composition on a CUDA device: the registry contract, and a short real stream equal to
the CPU result. Marked ``cuda``; skipped with a reason where no GPU is visible (``benchmarks/device_check.sh``
runs them on one).

Equality with CPU: cuDNN's TF32 convolutions are switched off for the comparison (they round inputs to
10-bit mantissas), so the two devices differ only in summation order: logits within 2e-3 absolute (5e-3 for
methods that take gradient steps, whose updates compound the difference over batches) and at least 98 %
of predictions the same over two batches of 32 noisy CIFAR-10 test images through the shared ResNet-20 (on a
device machine without ../shared: smooth random images through a random-weight ResNet-20, which exercises
the same code).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import tta
from conftest import SHARED, to_tensor
from tta.methods import METHODS, get_method

#: the device under test; TTA_TEST_DEVICE=cpu runs the same checks on CPU (the device script's --quick proof)
DEVICE = os.environ.get("TTA_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA GPU visible; benchmarks/device_check.sh runs these tests on one"),
]

#: compositions of a gradient method with a statistics policy, as the board runs them
COMPOSED = [(m, {"stats": "unmix-tns", "stats_options": {"K": 16}}) for m in ("tent", "rotta", "note", "lame", "roid",
                                                                            "cotta")]
CASES = [(m, {}) for m in sorted(METHODS)] + COMPOSED
IDS = [m + (" +unmix" if o else "") for m, o in CASES]
#: options that keep a case short
FAST = {"cotta": {"n_augmentations": 4}}


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _images() -> np.ndarray:
    """The shared CIFAR-10 test images, or (on a device machine without ../shared) smooth random ones."""
    path = SHARED / "data" / "cifar10" / "test_images.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    g = torch.Generator().manual_seed(0)
    low = torch.rand(10000, 3, 8, 8, generator=g)
    up = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
    return (up.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def resnet20():
    """The shared ResNet-20, or random weights with the same architecture where ../shared is absent."""
    path = SHARED / "models" / "cifar10" / "resnet20.th"
    if path.exists():
        return tta.load_model("resnet20", checkpoint=path)
    torch.manual_seed(0)
    return tta.build_model("resnet20").eval()


@pytest.fixture(scope="module")
def source_npy(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("eata") / "source.npy"
    np.save(path, np.asarray(_images()[:64]))
    return str(path)


@pytest.fixture(scope="module")
def stream() -> list[torch.Tensor]:
    images = _images()
    x = to_tensor(images[np.arange(0, len(images), 157)[:64]])
    x = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp_(0, 1)
    return list(x.split(32))


def _options(name: str, opts: dict, source_npy: str) -> dict:
    extra = {"source_data": source_npy, "fisher_samples": 64} if name == "eata" else {}
    return {**FAST.get(name, {}), **extra, **opts}


def _build(model, name: str, opts: dict, device: str, **kw):
    torch.manual_seed(0)
    return tta.adapt(model.to(device), name, **opts, **kw)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_contract_on_cuda_state_stays_on_the_device_and_reset_replays(name, opts, stream, source_npy,
                                                                        resnet20):
    model = resnet20
    a = _build(model, name, _options(name, opts, source_npy), DEVICE)
    xs = [x.to(DEVICE) for x in stream]
    first = [a(x) for x in xs]
    assert all(o.device.type == DEVICE and bool(torch.isfinite(o).all()) for o in first)
    placed = {k: v.device.type for k, v in a.state_dict().items() if isinstance(v, torch.Tensor)}
    assert set(placed.values()) == {DEVICE}, {k: d for k, d in placed.items() if d != DEVICE}
    opt = a.optimizer.state_dict()["state"] if a.optimizer is not None else {}
    assert all(t.device.type == DEVICE for s in opt.values() for t in s.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0)
    a.reset()
    again = [a(x) for x in xs]
    for u, v in zip(first, again):
        torch.testing.assert_close(u, v, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name,opts", CASES, ids=IDS)
def test_cuda_equals_cpu_on_a_real_stream(name, opts, stream, source_npy, resnet20):
    model = resnet20
    options = _options(name, opts, source_npy)
    # CoTTA's views: one per call on both devices, so that only the device differs
    if name == "cotta":
        options["views_per_call"] = 1
    cpu = _build(model, name, options, "cpu")
    gpu = _build(model, name, options, DEVICE)
    want = torch.cat([cpu(x) for x in stream])
    got = torch.cat([gpu(x.to(DEVICE)) for x in stream]).cpu()
    atol = 5e-3 if get_method(name).needs_grad else 2e-3
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-3)
    assert float((got.argmax(1) == want.argmax(1)).float().mean()) >= 0.98


def test_cotta_views_in_one_call_on_cuda_equal_one_call_per_view(stream, resnet20):
    """The accelerator default (all views in one grouped forward) against the official one call per view."""
    model = resnet20
    outs = {}
    for k in (1, 8):
        a = _build(model, "cotta", {"n_augmentations": 8, "views_per_call": k}, DEVICE)
        outs[k] = torch.cat([a(x.to(DEVICE)) for x in stream])
    torch.testing.assert_close(outs[8], outs[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["tent", "tbn", "unmix-tns"])
def test_fp16_with_grad_scaler_and_bf16_on_cuda_stay_close_to_fp32(name, stream, resnet20):
    model = resnet20
    opts = {"K": 16} if name == "unmix-tns" else {}
    reference = _build(model, name, opts, DEVICE)
    full = torch.cat([reference(x.to(DEVICE)) for x in stream])
    for precision in ("fp16", "bf16") if DEVICE == "cuda" else ("bf16",):
        a = _build(model, name, opts, DEVICE, precision=precision)
        assert (a.grad_scaler is not None) == (precision == "fp16" and a.optimizer is not None)
        half = torch.cat([a(x.to(DEVICE)) for x in stream])
        rel = float((half - full).abs().mean() / full.abs().mean())
        assert half.dtype == torch.float32 and rel <= 0.06, (precision, rel)
