"""LAME's solver against an independent transcription of fiveai/LAME ``src/adaptation/lame.py``.

Features and logits are the shared ResNet-20's on real noisy CIFAR-10 test images.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tta
from tta.errors import InputError
from tta.methods import method_defaults
from tta.methods.lame import affinity, features_and_logits, lame, laplacian_optimization

from conftest import to_tensor


# ---------------------------------------------------------------------------------------------
# Reference transcription
# ---------------------------------------------------------------------------------------------
def ref_knn_affinity(X, knn):
    N = X.size(0)
    dist = torch.norm(X.unsqueeze(0) - X.unsqueeze(1), dim=-1, p=2)
    n_neighbors = min(knn + 1, N)
    knn_index = dist.topk(n_neighbors, -1, largest=False).indices[:, 1:]
    W = torch.zeros(N, N, device=X.device)
    W.scatter_(dim=-1, index=knn_index, value=1.0)
    return W


def ref_rbf_affinity(X, knn):
    N = X.size(0)
    dist = torch.norm(X.unsqueeze(0) - X.unsqueeze(1), dim=-1, p=2)
    n_neighbors = min(knn, N)
    kth_dist = dist.topk(k=n_neighbors, dim=-1, largest=False).values[:, -1]
    sigma = kth_dist.mean()
    return torch.exp(-dist**2 / (2 * sigma**2))


def ref_linear_affinity(X, knn):
    return torch.matmul(X, X.t())


REF_AFFINITY = {"kNN": ref_knn_affinity, "rbf": ref_rbf_affinity, "linear": ref_linear_affinity}


def ref_entropy_energy(Y, unary, pairwise, bound_lambda):
    return (unary * Y - bound_lambda * pairwise * Y + Y * torch.log(Y.clip(1e-20))).sum()


def ref_laplacian_optimization(unary, kernel, bound_lambda=1, max_steps=100):
    oldE = float("inf")
    Y = (-unary).softmax(-1)
    iterations = 0
    for i in range(max_steps):
        iterations = i + 1
        pairwise = bound_lambda * kernel.matmul(Y)
        exponent = -unary + pairwise
        Y = exponent.softmax(-1)
        E = ref_entropy_energy(Y, unary, pairwise, bound_lambda).item()
        if i > 1 and (abs(E - oldE) <= 1e-8 * abs(oldE)):
            break
        oldE = E
    return Y, iterations


def ref_lame(logits, feats, kind, knn, force_symmetry=False):
    unary = -torch.log(logits.softmax(dim=1) + 1e-10)
    feats = F.normalize(feats, p=2, dim=-1)
    kernel = REF_AFFINITY[kind](feats, knn)
    if force_symmetry:
        kernel = 1 / 2 * (kernel + kernel.t())
    return ref_laplacian_optimization(unary, kernel)


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def feats_logits(cifar10_test, resnet20_checkpoint):
    images, _ = cifar10_test
    x = to_tensor(images[:64])
    x = (x + torch.randn(x.shape, generator=torch.Generator().manual_seed(2)) * 0.1).clamp(0, 1)
    model = tta.load_model("resnet20", checkpoint=resnet20_checkpoint)
    feats, logits = features_and_logits(model, x)
    return feats, logits, model, x


@pytest.mark.realdata
@pytest.mark.parametrize("kind", ["rbf", "kNN", "linear"])
@pytest.mark.parametrize("knn", [1, 3, 5])
def test_lame_matches_official(feats_logits, kind, knn):
    feats, logits, *_ = feats_logits
    want, iterations = ref_lame(logits, feats, kind, knn)
    got = lame(logits, feats, kind, knn, False)
    if kind == "rbf" and knn == 1:
        # the 1st nearest distance is the self-distance 0, so sigma = 0: the official output
        # is NaN; here the source probabilities come back
        assert torch.isnan(want).all()
        torch.testing.assert_close(got, logits.softmax(1))
        return
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert 2 < iterations  # the stopping rule ran past its i > 1 guard
    torch.testing.assert_close(got.sum(1), torch.ones(len(got)))


@pytest.mark.realdata
def test_lame_changes_predictions_and_force_symmetry(feats_logits):
    feats, logits, *_ = feats_logits
    want, _ = ref_lame(logits, feats, "kNN", 5, force_symmetry=True)
    got = lame(logits, feats, "kNN", 5, force_symmetry=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    opts = method_defaults("lame", "cifar10")
    default = lame(logits, feats, opts["affinity"], opts["knn"], opts["force_symmetry"])  # rbf, knn 5
    assert (default.argmax(1) != logits.argmax(1)).any()  # the Laplacian term moved some decisions


@pytest.mark.realdata
def test_affinity_structure(feats_logits):
    feats, *_ = feats_logits
    phi = F.normalize(feats, dim=-1)
    w = affinity(phi, "kNN", 5)
    assert torch.equal(w.sum(1), torch.full((64,), 5.0)) and torch.equal(w.diagonal(), torch.zeros(64))
    rbf = affinity(phi, "rbf", 5)
    torch.testing.assert_close(rbf.diagonal(), torch.ones(64))  # the diagonal is kept, as official
    torch.testing.assert_close(rbf, rbf.t())


@pytest.mark.realdata
def test_zero_affinity_returns_source_probabilities(feats_logits):
    _, logits, *_ = feats_logits
    p = logits.softmax(1)
    unary = -torch.log(p + 1e-10)
    y = laplacian_optimization(unary, torch.zeros(64, 64))
    torch.testing.assert_close(y, p, atol=1e-7, rtol=1e-5)


@pytest.mark.realdata
def test_batch_of_one(feats_logits):
    feats, logits, *_ = feats_logits
    p = logits[:1].softmax(1)
    # the official rbf gives sigma = 0 and NaN; here the source probabilities come back
    assert torch.isnan(ref_lame(logits[:1], feats[:1], "rbf", 5)[0]).all()
    torch.testing.assert_close(lame(logits[:1], feats[:1], "rbf", 5, False), p)
    # kNN with one sample has no neighbour: W = 0, so Y = p (as official)
    torch.testing.assert_close(lame(logits[:1], feats[:1], "kNN", 5, False), p, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(lame(logits[:1], feats[:1], "kNN", 5, False),
                               ref_lame(logits[:1], feats[:1], "kNN", 5)[0])
    # linear is defined at N = 1 and follows the official iterations
    torch.testing.assert_close(lame(logits[:1], feats[:1], "linear", 5, False),
                               ref_lame(logits[:1], feats[:1], "linear", 5)[0])


@pytest.mark.realdata
def test_features_are_the_classifier_input(feats_logits):
    feats, logits, model, x = feats_logits
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
        torch.testing.assert_close(model.linear(feats), logits)
        h = model.layer3(model.layer2(model.layer1(F.relu(model.bn1(model.conv1(model.normalize(x)))))))
        torch.testing.assert_close(feats, h.mean((2, 3)))
    assert feats.shape == (64, 64)


def test_features_of_wide_resnet_and_resnext():
    from tta.models.resnext import CifarResNeXt
    from tta.models.wide_resnet import WideResNet

    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    wrn = WideResNet(depth=10, widen_factor=1).eval()
    feats, logits = features_and_logits(wrn, x)
    with torch.no_grad():
        h = F.relu(wrn.bn1(wrn.block3(wrn.block2(wrn.block1(wrn.conv1(x))))))
        torch.testing.assert_close(feats, h.mean((2, 3)))  # after the final BN + ReLU, as mdb's split
        torch.testing.assert_close(wrn.fc(feats), logits)
    rx = CifarResNeXt(depth=11, cardinality=2, base_width=4, num_classes=100).eval()
    feats, logits = features_and_logits(rx, x)
    assert feats.shape == (3, 1024) and logits.shape == (3, 100)
    torch.testing.assert_close(rx.classifier(feats), logits)


def test_bad_inputs():
    with pytest.raises(InputError, match="unknown LAME affinity"):
        lame(torch.randn(4, 3), torch.randn(4, 8), "cosine", 5, False)
    with pytest.raises(InputError, match="same N"):
        lame(torch.randn(4, 3), torch.randn(5, 8), "rbf", 5, False)
