"""Order policies of tta.streams, checked on synthetic in-memory domains."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tta.data.domain import ArrayDomain
from tta.data.domain_source import DomainSource
from tta.errors import InputError, UnknownNameError
from tta.streams import dirichlet_order, make_stream, mean_run_length


class ToySource(DomainSource):
    """Domains of n tiny images whose pixel value encodes (domain, index) so batches can be traced."""

    dataset = "toy"

    def __init__(self, n: int = 200, classes: int = 10, names=("a", "b", "c")) -> None:
        super().__init__("toy", list(names), classes)
        self.n = n
        rng = np.random.default_rng(123)
        self.y = rng.integers(0, classes, size=n)

    def _make(self, name, severity):
        d = self.corruptions.index(name)
        img = np.zeros((self.n, 2, 2, 3), dtype=np.uint8)
        img[..., 0] = d * 10 + severity
        img[..., 1] = np.arange(self.n)[:, None, None] % 256
        img[..., 2] = np.arange(self.n)[:, None, None] // 256
        return ArrayDomain(img, self.y, name, severity, f"toy:{name}")


def _collect(stream):
    return [(b.domain.numpy().copy(), b.index.numpy().copy(), b.y.numpy().copy(), b.reset, b.x) for b in stream]


def test_iid_blocks_are_permutations_with_reset_each_domain():
    src = ToySource()
    stream = make_stream(src, "iid", batch_size=32, seed=1)
    assert len(stream.order.blocks) == 3
    for d, block in enumerate(stream.order.blocks):
        assert np.all(block.domain == d)
        assert np.array_equal(np.sort(block.index), np.arange(src.n))
        assert not np.array_equal(block.index, np.arange(src.n))  # actually shuffled
    batches = _collect(stream)
    starts = [i for i, b in enumerate(batches) if b[3]]
    assert starts == [0, 7, 14]  # 200 / 32 -> 7 batches per domain, reset before each domain


def test_batches_carry_the_pixels_of_their_indices():
    src = ToySource()
    for dom, idx, y, _, x in _collect(make_stream(src, "mixed", batch_size=50, seed=3)):
        raw = (x * 255).round().to(torch.int64)
        assert torch.equal(raw[:, 0, 0, 0], torch.from_numpy(dom * 10 + 5))
        assert torch.equal(raw[:, 1, 0, 0] + 256 * raw[:, 2, 0, 0], torch.from_numpy(idx))
        assert np.array_equal(y, src.y[idx])


def test_mixed_is_one_shuffled_permutation_of_all_domains():
    src = ToySource()
    stream = make_stream(src, "mixed", batch_size=20, seed=2)
    assert len(stream.order.blocks) == 1
    block = stream.order.blocks[0]
    pairs = block.domain * src.n + block.index
    assert np.array_equal(np.sort(pairs), np.arange(3 * src.n))
    # domains interleave: far more switches than the 2 of a blocked order
    assert np.count_nonzero(block.domain[1:] != block.domain[:-1]) > 100
    batches = _collect(stream)
    assert [b[3] for b in batches].count(True) == 1


def test_continual_keeps_domain_blocks_in_order_without_reset():
    src = ToySource()
    stream = make_stream(src, "continual", domains=["c", "a"], batch_size=64, seed=5)
    doms = np.concatenate([b[0] for b in _collect(stream)])
    # domain list is [c, a] -> ids 0 then 1, as contiguous blocks in that order
    assert [d["name"] for d in stream.order.domains] == ["c", "a"]
    assert np.array_equal(doms, np.repeat([0, 1], src.n))
    assert [b.reset for b in stream].count(True) == 1


def test_gradual_ramps_severity_up_and_down():
    src = ToySource(names=("a", "b"))
    stream = make_stream(src, "gradual", batch_size=50, seed=0)
    seq = [(stream.domains[int(b.domain[0])].name, stream.domains[int(b.domain[0])].severity) for b in stream.order.blocks]
    assert seq == [("a", s) for s in (1, 2, 3, 4, 5, 4, 3, 2, 1)] + [("b", s) for s in (1, 2, 3, 4, 5, 4, 3, 2, 1)]


def test_sorted_gives_single_class_batches():
    src = ToySource(n=500)
    stream = make_stream(src, "continual", domains=["a"], batch_size=10, seed=0, sort_labels=True)
    labels = np.concatenate([b.y.numpy() for b in stream])
    assert np.all(np.diff(labels) >= 0)
    counts = np.bincount(src.y, minlength=10)
    # a batch mixes classes only where a class boundary falls inside it
    mixed = [b for b in stream if len(np.unique(b.y.numpy())) > 1]
    boundaries = np.cumsum(counts)[:-1]
    assert len(mixed) <= np.count_nonzero(boundaries % 10)


def test_n_examples_subsamples_each_domain():
    src = ToySource()
    stream = make_stream(src, "continual", batch_size=16, seed=0, n_examples=40)
    for block in stream.order.blocks:
        assert len(block) == 40 and len(np.unique(block.index)) == 40


def _labels_uniform(n_per_class: int = 1000, classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(classes), n_per_class)


def test_dirichlet_is_a_permutation_and_respects_chunk_minimum():
    y = _labels_uniform()
    order = dirichlet_order(y, 0.1, np.random.default_rng(0))
    assert np.array_equal(np.sort(order), np.arange(len(y)))


def test_dirichlet_small_delta_gives_long_single_class_runs_large_delta_mixes_like_iid():
    y = _labels_uniform()
    rng = np.random.default_rng(0)
    iid = y[rng.permutation(len(y))]
    small = y[dirichlet_order(y, 0.01, np.random.default_rng(1))]
    large = y[dirichlet_order(y, 1e6, np.random.default_rng(2))]
    # delta=0.01: almost every class sits whole in one chunk -> runs of hundreds of images
    assert mean_run_length(small) > 300
    assert mean_run_length(iid) < 1.3

    # label mixing at the chunk scale (N/C = 1000 samples): distance of each chunk's
    # class histogram from uniform. delta -> inf matches an i.i.d. stream; 0.01 is far off.
    def chunk_tv(seq):
        h = np.stack([np.bincount(c, minlength=10) / len(c) for c in np.split(seq, 10)])
        return float(np.abs(h - 0.1).sum(axis=1).mean() / 2)

    assert chunk_tv(large) < 0.02
    assert chunk_tv(iid) < 0.05
    assert chunk_tv(small) > 0.6
    # inside a chunk the classes stay contiguous (NOTE's construction): runs of about N/C^2
    assert 80 < mean_run_length(large) < 120


def test_same_seed_same_fingerprint_different_seed_different():
    src = ToySource()
    a = make_stream(src, "mixed", batch_size=10, seed=7, delta=0.1)
    b = make_stream(src, "mixed", batch_size=10, seed=7, delta=0.1)
    c = make_stream(src, "mixed", batch_size=10, seed=8, delta=0.1)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    # the fingerprint covers the order itself: swapping two samples changes it
    b.order.blocks[0].index[[0, 1]] = b.order.blocks[0].index[[1, 0]]
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.parametrize("suffix", [".json", ".npy"])
def test_exported_order_replays_to_identical_predictions(tmp_path, suffix):
    from tta import adapt
    from tta.pipeline.evaluate import evaluate

    src = ToySource(n=120)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 10)
    ).eval()
    with torch.no_grad():  # non-trivial running statistics
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    first = make_stream(src, "continual", batch_size=16, seed=11, delta=0.5)
    path = tmp_path / f"order{suffix}"
    first.export_order(path)
    replay = make_stream(src, "continual", batch_size=16, seed=999, order_file=path)
    assert replay.fingerprint() == first.fingerprint()
    runs = []
    for stream in (first, replay):
        adapted = adapt(net, method="tbn")
        per_batch = []
        for batch in stream:
            per_batch.append(adapted(batch.x).argmax(1))
        runs.append(per_batch)
    assert len(runs[0]) == len(runs[1])
    assert all(torch.equal(p, q) for p, q in zip(*runs))
    # and the evaluation loop's predictions agree with the hand-made loop
    m = evaluate(adapt(net, method="tbn"), replay, progress=False, keep_predictions=True)
    assert np.array_equal(m.predictions, torch.cat(runs[0]).numpy())


def test_order_file_for_other_domains_is_rejected(tmp_path):
    src = ToySource()
    make_stream(src, "continual", domains=["a", "b"], batch_size=10).export_order(tmp_path / "o.json")
    with pytest.raises(InputError, match="same --domains"):
        make_stream(src, "continual", domains=["b", "c"], batch_size=10, order_file=tmp_path / "o.json")
    np.save(tmp_path / "bad.npy", np.array([[0, 5, 0]]))
    with pytest.raises(InputError, match="domain 5"):
        make_stream(src, "continual", domains=["a"], batch_size=1, order_file=tmp_path / "bad.npy")


def test_bad_stream_settings_raise_clear_errors():
    src = ToySource(n=30)
    with pytest.raises(InputError, match="larger than the stream"):
        make_stream(src, "iid", batch_size=31)
    with pytest.raises(UnknownNameError, match="unknown shift"):
        make_stream(src, "sideways")
    with pytest.raises(UnknownNameError, match="unknown corruption"):
        make_stream(src, "iid", domains=["nope"])
    with pytest.raises(InputError, match="only one"):
        make_stream(src, "iid", delta=0.1, sort_labels=True)
    # batch size 1 is a valid stream
    assert len(make_stream(src, "iid", batch_size=1)) == 90
