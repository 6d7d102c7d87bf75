"""The registered defaults of SAR ... CoTTA per dataset are the reference scripts' values that the
parts modules record with their sources (``DATASET_DEFAULTS`` and friends), key by key."""
from __future__ import annotations

import pytest

from tta.methods import method_defaults
from tta.methods.cotta_step import COTTA_DEFAULTS
from tta.methods.deyo_step import DATASET_DEFAULTS as DEYO
from tta.methods.eata_step import EATA_DEFAULTS, ETA_DEFAULTS
from tta.methods.rdumb_step import DATASET_DEFAULTS as RDUMB
from tta.methods.roid_step import ROID_DEFAULTS
from tta.methods.sar_step import DATASET_DEFAULTS as SAR
from tta.methods.shot_im_step import DATASET_DEFAULTS as SHOT_IM

TABLES = {"sar": SAR, "eta": ETA_DEFAULTS, "eata": EATA_DEFAULTS, "deyo": DEYO, "shot-im": SHOT_IM,
          "rdumb": RDUMB, "roid": ROID_DEFAULTS, "cotta": COTTA_DEFAULTS}
NOT_OPTIONS = {"batch_size"}  # the run's batch size, not a method option


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagenet"])
def test_registered_defaults_equal_the_recorded_reference_values(name, dataset):
    resolved = method_defaults(name, dataset)
    expected = {k: v for k, v in TABLES[name][dataset].items() if k not in NOT_OPTIONS}
    if name == "sar":
        assert expected.pop("optimizer") == "sam-sgd"  # SAR's optimizer is always SAM over SGD
    assert set(expected) <= set(resolved)  # every recorded value is an option
    assert {k: resolved[k] for k in expected} == expected
    assert resolved["stats"] == "tbn"


def test_unmix_tns_protocol_on_roid_and_cotta_keeps_the_policys_shift_defaults():
    from tta.methods import get_method

    for name, optimizer in (("roid", "adam"), ("cotta", "adam")):
        r = get_method(name).resolve({"stats": "unmix-tns"}, {"dataset": "cifar10", "shift": "mixed"})
        assert (r["optimizer"], r["lr"], r["stats_options"]["K"]) == (optimizer, 1e-5, 128)
        r = get_method(name).resolve({"stats": "unmix-tns"}, {"dataset": "imagenet", "shift": "continual"})
        assert (r["optimizer"], r["lr"], r["nesterov"], r["stats_options"]["K"]) == ("sgd", 2.5e-6, True, 16)
