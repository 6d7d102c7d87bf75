"""A generated board of result documents for the report's tests: many variants × settings × seeds.

Errors are drawn per variant and setting (seeded), curves are flat around the domain errors, so the
layout, labels and flags can be checked at full board size without running anything.
"""
from __future__ import annotations

import statistics

import numpy as np

from tta.pipeline.results import build_result

DOMAINS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
           "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
           "jpeg_compression"]
SETTINGS = [("continual", None), ("continual", 0.1), ("mixed", 0.1)]
# 28 variants: registered methods, some composed over UnMix-TNS, some with a changed option
VARIANTS = [("source", {}), ("tbn", {}), ("tbn-ema", {}), ("alpha-bn", {}), ("adab2n", {}), ("rbn", {}),
            ("momentum-decay", {}), ("iabn", {}), ("unmix-tns", {}), ("tent", {}), ("eta", {}), ("deyo", {}),
            ("sar", {}), ("shot-im", {}), ("rdumb", {}), ("roid", {}), ("rotta", {}), ("note", {}), ("lame", {}),
            ("cotta", {}), ("alpha-bn-mcc", {}), ("tent", {"stats": "unmix-tns"}), ("lame", {"stats": "unmix-tns"}),
            ("roid", {"stats": "unmix-tns"}), ("note", {"stats": "unmix-tns"}), ("rotta", {"stats": "unmix-tns"}),
            ("cotta", {"stats": "unmix-tns"}), ("tent", {"lr": 0.0001})]
PER_DOMAIN = 4  # batches per domain


def doc(method: str, options: dict, shift: str, delta, seed: int, errors, curve, *, hparams=None, ips=100.0,
        peak=500.0) -> dict:
    from tta.methods import get_method  # noqa: PLC0415

    if hparams is None:
        hparams = dict(get_method(method).resolve(dict(options), {"dataset": "cifar10", "shift": shift}))
    n = len(curve)
    batch_domains = [0] * n if shift == "mixed" else [min(i // PER_DOMAIN, len(DOMAINS) - 1) for i in range(n)]
    return build_result(
        method=method, hparams=hparams,
        model={"name": "resnet20", "checkpoint": "m.th", "checkpoint_sha256": "cd" * 32, "norm": "bn"},
        data={"dataset": "cifar10", "label": "CIFAR-10-C", "demo": False},
        stream={"fingerprint": f"fp-{shift}-{delta}-{seed}", "seed": seed, "shift": shift, "severity": 5,
                "batch_size": 64, "n_examples": 256, "delta": delta, "sorted": False},
        metrics={"domain_keys": DOMAINS, "domain_errors": dict(zip(DOMAINS, map(float, errors))),
                 "mean_domain_error": statistics.fmean(map(float, errors)),
                 "overall_error": statistics.fmean(map(float, errors)), "ece": 2.0, "images_per_s": ips,
                 "wall_time_s": 1.0,
                 "peak_memory_mb": peak, "memory_kind": "process_peak_rss", "batch_errors": [float(x) for x in curve],
                 "batch_domains": batch_domains, "collapsed_at": None},
        runtime={"threads": 1, "device": "cpu",
                 "config": {"method": method, "shift": shift, "seed": seed, "delta": delta, "options": options}},
        versions={"tta": "0.1.0", "torch": "2", "numpy": "2", "python": "3.11"},
    )


def board(n_variants: int = 28, settings=SETTINGS, seeds=(2020, 2021, 2022)) -> list[dict]:
    """Result documents for ``n_variants`` × ``settings`` × ``seeds``."""
    rng = np.random.default_rng(0)
    docs = []
    for v, (method, options) in enumerate(VARIANTS[:n_variants]):
        for s, (shift, delta) in enumerate(settings):
            base = 20 + 60 * rng.random()
            for seed in seeds:
                errors = np.clip(base + 8 * rng.standard_normal(len(DOMAINS)), 1, 99)
                curve = np.clip(np.repeat(errors, PER_DOMAIN) + 3 * rng.standard_normal(len(DOMAINS) * PER_DOMAIN),
                                0, 100)
                docs.append(doc(method, options, shift, delta, seed, errors, curve, ips=50 + 10 * v,
                                peak=400 + 5 * v))
    return docs
