"""The registered ``eta`` and ``eata`` equal a transcription of mr-eggplant/EATA (in
tests/test_eata_step.py) on real noisy CIFAR-10 batches through ResNet-20: logits, parameters and
the moving average over several steps; for EATA also the Fisher from a .npy of clean source images
(the same random subset and order); EATA refuses to run without source data, naming ETA."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tta
from entropy_batch import noisy_batches
from method_twins import assert_same_parameters, reference_and_adapter
from test_eata_step import ref_fishers, ref_forward_and_adapt
from tta.errors import TTAError


def _source_file(cifar10_test, tmp_path, n=80) -> tuple[str, np.ndarray]:
    images = np.array(cifar10_test[0][-n:])  # clean images, disjoint from the test batches
    path = tmp_path / "source.npy"
    np.save(path, images)
    return str(path), images


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["eta", "eata"])
def test_registered_eta_and_eata_equal_the_reference(cifar10_test, resnet20_checkpoint, tmp_path, method):
    options, fishers, alpha = {}, None, None
    if method == "eata":
        path, images = _source_file(cifar10_test, tmp_path)
        options = {"source_data": path, "fisher_samples": 70, "fisher_batch": 32, "seed": 3}
    ref_model, adapter = reference_and_adapter(resnet20_checkpoint, method, **options)
    hp = adapter.hparams()
    assert (hp["optimizer"], hp["lr"], hp["d_margin"]) == ("adam", 1e-3, 0.4)
    if method == "eata":
        alpha = hp["fisher_alpha"]
        assert alpha == 1.0
        g = torch.Generator().manual_seed(3)  # the draw the recipe makes: a subset, then its order
        pick = torch.randperm(80, generator=g)[:70].sort().values
        source = torch.from_numpy(images[pick.numpy()]).permute(0, 3, 1, 2).double() / 255
        order = torch.randperm(70, generator=g)
        fishers = ref_fishers(ref_model, list(source[order].split(32)))
        reg = adapter.memory.regularizer(adapter.optimizer.param_groups[0]["params"])
        names = [n for n, p in ref_model.named_parameters() if p.requires_grad]
        for name, f, a in zip(names, reg.fisher, reg.anchor):
            torch.testing.assert_close(f, fishers[name][0], rtol=1e-12, atol=0)
            torch.testing.assert_close(a, fishers[name][1], rtol=0, atol=0)
    ref_opt = torch.optim.Adam([p for p in ref_model.parameters() if p.requires_grad], 1e-3, betas=(0.9, 0.999))
    ref_probs, selected = None, []
    for x in noisy_batches(cifar10_test, n_batches=3, batch_size=48):
        ref_logits, ref_probs, ids1, ids2 = ref_forward_and_adapt(
            x, ref_model, ref_opt, fishers, 0.4 * math.log(10), ref_probs, alpha, 0.4)
        logits = adapter(x)
        torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=1e-10)
        assert_same_parameters(ref_model, adapter.model)
        torch.testing.assert_close(adapter.memory.state.probs, ref_probs, rtol=0, atol=1e-12)
        selected.append((ids1.numel(), ids2.numel()))
    assert all(0 < n2 <= n1 < 48 for n1, n2 in selected) and any(n2 < n1 for n1, n2 in selected)


def test_eata_without_source_data_names_eta():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.LazyLinear(3))
    with pytest.raises(TTAError, match=r"source_data=PATH.*tta run --source-data.*'eta', the source-free"):
        tta.adapt(net, "eata")


def test_eata_refuses_source_data_that_is_not_images(tmp_path):
    bad = tmp_path / "labels.npy"
    np.save(bad, np.zeros(10, dtype=np.int64))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.LazyLinear(3))
    with pytest.raises(tta.errors.InputError, match=r"expected uint8 images of shape \(N, H, W, 3\)"):
        tta.adapt(net, "eata", source_data=str(bad))
    with pytest.raises(tta.errors.InputError, match="is not a file"):
        tta.adapt(net, "eata", source_data=str(tmp_path / "missing.npy"))


@pytest.mark.realdata
@pytest.mark.parametrize("stats", ["unmix-tns", "tbn-ema"])
def test_eata_fisher_pass_leaves_stateful_statistics_untouched(cifar10_test, resnet20_checkpoint, tmp_path, stats):
    """Over a statistics policy with state, the Fisher pass on clean source images must not fold those
    images into the statistics: EATA starts adapting from the same buffers as ETA over the same policy,
    while the Fisher itself is nonzero (the pass did run through the model)."""
    path, _ = _source_file(cifar10_test, tmp_path)
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    stats_options = {"seed": 0} if stats == "unmix-tns" else {}
    eta = tta.adapt(model, "eta", stats=stats, stats_options=stats_options)
    eata = tta.adapt(model, "eata", stats=stats, stats_options=stats_options, source_data=path,
                     fisher_samples=64, fisher_batch=32)
    eta_bufs = dict(eta.model.named_buffers())
    for name, buf in eata.model.named_buffers():
        torch.testing.assert_close(buf, eta_bufs[name], rtol=0, atol=0, msg=name)
    reg = eata.memory.regularizer(eata.optimizer.param_groups[0]["params"])
    assert all(torch.isfinite(f).all() for f in reg.fisher) and sum(float(f.sum()) for f in reg.fisher) > 0
    x = next(iter(noisy_batches(cifar10_test, n_batches=1, batch_size=48))).float()
    torch.testing.assert_close(eata(x), eta(x), rtol=0, atol=1e-5)  # same statistics, same pre-update logits
