"""The registered defaults of SAR ... CoTTA per dataset are the reference scripts' values, key by key.

The tables below are transcribed here from the reference configurations (each with its source); the
library holds each default once, in the method's ``Option``/``when`` declarations, and this test is the
independent check of those declarations against the references.
"""
from __future__ import annotations

import pytest

from tta.methods import method_defaults

#: mdb cfgs/{cifar10_c,cifar100_c}/sar.yaml (SGD under SAM, batch 200); ImageNet: SAR main.py (batch 64)
SAR = {
    "cifar10": {"optimizer": "sam-sgd", "lr": 1e-3, "momentum": 0.9, "rho": 0.05, "batch_size": 200},
    "cifar100": {"optimizer": "sam-sgd", "lr": 1e-3, "momentum": 0.9, "rho": 0.05, "batch_size": 200},
    "imagenet": {"optimizer": "sam-sgd", "lr": 2.5e-4, "momentum": 0.9, "rho": 0.05, "batch_size": 64},
}
#: ETA: mdb cfgs/{cifar10_c,cifar100_c}/eta.yaml; ImageNet: EATA main.py (SGD, no nesterov)
ETA = {
    "cifar10": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "d_margin": 0.4, "batch_size": 200},
    "cifar100": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "d_margin": 0.1, "batch_size": 200},
    "imagenet": {"optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "nesterov": False, "d_margin": 0.05,
                 "batch_size": 64},
}
#: EATA adds the Fisher weight: mdb cfgs/*/eata.yaml (CIFAR alpha 1); ImageNet: EATA main.py (alpha 2000);
#: 2,000 source samples everywhere
EATA = {
    "cifar10": {**ETA["cifar10"], "fisher_alpha": 1.0, "fisher_samples": 2000},
    "cifar100": {**ETA["cifar100"], "fisher_alpha": 1.0, "fisher_samples": 2000},
    "imagenet": {**ETA["imagenet"], "fisher_alpha": 2000.0, "fisher_samples": 2000},
}
#: mdb cfgs/{cifar10_c,cifar100_c}/deyo.yaml; ImageNet: DeYO exp_deyo.sh (ResNet-50-BN), lr as SAR's
DEYO = {
    "cifar10": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "plpd_threshold": 0.2, "batch_size": 200},
    "cifar100": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "plpd_threshold": 0.2, "batch_size": 200},
    "imagenet": {"optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "nesterov": False, "plpd_threshold": 0.3,
                 "batch_size": 64},
}
#: ttab's SHOT optimizer (SGD, nesterov momentum 0.9); lr 1e-3 on CIFAR, 2.5e-4 on ImageNet
SHOT_IM = {
    "cifar10": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": True, "batch_size": 64},
    "cifar100": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "nesterov": True, "batch_size": 64},
    "imagenet": {"optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "nesterov": True, "batch_size": 64},
}
#: RDumb = ETA with resets: CCC models/rdumb.py and mdb cfgs/*/rdumb.yaml
RDUMB = {
    "cifar10": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "d_margin": 0.4, "batch_size": 200},
    "cifar100": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "d_margin": 0.4, "batch_size": 200},
    "imagenet": {"optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "nesterov": False, "d_margin": 0.05,
                 "batch_size": 64},
}
#: mdb conf.py ``_C.ROID`` and cfgs/{cifar10_c,cifar100_c,imagenet_c}/roid.yaml (SGD there is nesterov 0.9)
ROID = {
    "cifar10": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "weight_decay": 0.0, "batch_size": 200},
    "cifar100": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "weight_decay": 0.0, "batch_size": 200},
    "imagenet": {"optimizer": "sgd", "lr": 2.5e-4, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0,
                 "batch_size": 64},
}
#: qinenergy/cotta cifar/cfgs/cifar10{,0}/cotta.yaml, imagenet/cotta.py; mdb cfgs/*/cotta.yaml
COTTA = {
    "cifar10": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "weight_decay": 0.0, "batch_size": 200,
                "mt": 0.999, "rst": 0.01, "ap": 0.92, "n_augmentations": 32, "symmetric": False},
    "cifar100": {"optimizer": "adam", "lr": 1e-3, "beta": 0.9, "weight_decay": 0.0, "batch_size": 200,
                 "mt": 0.999, "rst": 0.01, "ap": 0.72, "n_augmentations": 32, "symmetric": False},
    "imagenet": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0,
                 "batch_size": 64, "mt": 0.999, "rst": 0.001, "ap": 0.1, "n_augmentations": 32,
                 "symmetric": True},
}

TABLES = {"sar": SAR, "eta": ETA, "eata": EATA, "deyo": DEYO, "shot-im": SHOT_IM, "rdumb": RDUMB, "roid": ROID,
          "cotta": COTTA}
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
