"""The ``switching`` shifts: continual over the domains, label order i.i.d. and Dirichlet-correlated in turn."""
from __future__ import annotations

import numpy as np
import pytest

from tta.errors import InputError
from tta.pipeline.config import RunConfig
from tta.pipeline.prepare import prepare_stream
from tta.streams import build_order, get_shift
from tta.streams.shifts import listing
from tta.sweep import parse_shift

LABELS = [np.arange(400) % 10, (np.arange(400) * 3) % 10, (np.arange(400) * 7) % 10, np.arange(400) // 40]


def _blocks(shift: str, **kw):
    spec = get_shift(shift)
    block_domains = [[d] for d in range(len(LABELS))]
    flags = [spec.correlated(b) for b in range(len(block_domains))]
    return build_order(LABELS, block_domains, 2020, n_examples=300, correlated=flags, **kw)


def _same(a, b) -> bool:
    return np.array_equal(a.domain, b.domain) and np.array_equal(a.index, b.index)


def _runs(labels: np.ndarray) -> int:
    """Number of maximal runs of equal consecutive labels."""
    return int(1 + np.count_nonzero(labels[1:] != labels[:-1]))


@pytest.mark.parametrize("protocol", ["tta", "reference"])
def test_switching_alternates_continual_and_correlated_blocks_exactly(protocol):
    iid = build_order(LABELS, [[d] for d in range(4)], 2020, n_examples=300, protocol=protocol)
    corr = build_order(LABELS, [[d] for d in range(4)], 2020, n_examples=300, delta=0.1, protocol=protocol)
    flags = [get_shift("switching").correlated(b) for b in range(4)]
    assert flags == [False, True, False, True]
    switching = build_order(LABELS, [[d] for d in range(4)], 2020, n_examples=300, delta=0.1, protocol=protocol,
                            correlated=flags)
    reverse = build_order(LABELS, [[d] for d in range(4)], 2020, n_examples=300, delta=0.1, protocol=protocol,
                          correlated=[not f for f in flags])
    for b in range(4):
        assert _same(switching[b], (corr if b % 2 else iid)[b])
        assert _same(reverse[b], (iid if b % 2 else corr)[b])
    # the correlated blocks really are correlated: far fewer label runs than the i.i.d. ones
    for b in range(4):
        y = LABELS[b][switching[b].index]
        runs = _runs(y)
        assert (runs < 60) if b % 2 else (runs > 200), (b, runs)


def test_switching_reverse_starts_correlated():
    assert [get_shift("switching-reverse").correlated(b) for b in range(4)] == [True, False, True, False]
    assert all(get_shift("continual").correlated(b) for b in range(4))


def test_switching_needs_a_label_correlation(small_cifar_c_dir):
    cfg = RunConfig(method="source", shift="switching", dataset="cifar10", data_dir=str(small_cifar_c_dir),
                    domains=["noise_low", "noise_high"], n_examples=100, batch_size=20)
    with pytest.raises(InputError, match="switching@0.1"):
        prepare_stream(cfg)


def test_switching_stream_is_fingerprinted_apart_from_continual_and_records_its_shift(small_cifar_c_dir):
    common = dict(method="source", dataset="cifar10", data_dir=str(small_cifar_c_dir),
                  domains=["noise_low", "noise_high"], n_examples=200, batch_size=20, delta=1.0)
    streams = {s: prepare_stream(RunConfig(shift=s, **common))[2] for s in ("continual", "switching",
                                                                             "switching-reverse")}
    prints = {s: st.fingerprint() for s, st in streams.items()}
    assert len(set(prints.values())) == 3
    assert streams["switching"].describe()["shift"] == "switching"
    assert streams["switching"].describe()["delta"] == 1.0
    # block 1 of switching is continual@0.1's block 1, block 0 is not correlated
    sw, cont = streams["switching"].order.blocks, streams["continual"].order.blocks
    assert _same(sw[1], cont[1]) and not _same(sw[0], cont[0])
    again = prepare_stream(RunConfig(shift="switching", **common))[2]
    assert again.fingerprint() == prints["switching"]


def test_switching_parses_in_sweep_grids_and_is_listed():
    assert parse_shift("switching@0.1") == ("switching", 0.1, False)
    assert parse_shift("switching-reverse@0.1") == ("switching-reverse", 0.1, False)
    text = "\n".join(listing())
    assert "switching " in text and "switching-reverse" in text


def test_build_order_checks_the_number_of_correlation_flags():
    with pytest.raises(InputError, match="one per block"):
        build_order(LABELS, [[0], [1]], 2020, delta=0.1, correlated=[True])
