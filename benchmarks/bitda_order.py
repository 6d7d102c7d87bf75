"""Write RoTTA's own stream order (BIT-DA/RoTTA's "temporal" sampler) as a tta order file.

RoTTA's framework (BIT-DA/RoTTA at 67e34c9, ``core/data/ttasampler.py``, ``LabelDirichletDomainSequence``)
orders CIFAR-10-C differently from the mariodoebler/UnMix-TNS framework that ``--protocol reference``
reproduces. For each domain in turn (its configured order, ``configs/dataset/cifar10.yaml``):

* the domain's images are split by class (each class's positions in dataset order);
* one Dirichlet(gamma) draw per class over ``slots`` = number of classes splits that class's
  positions into consecutive chunks, chunk s going to slot s;
* each slot's chunks (one per class, some empty) are concatenated in a random order, and the
  slots follow one another. Within a chunk the images keep their dataset order.

The draws use numpy's global generator in that order (the Dirichlet for a domain, then one
permutation per slot), seeded here with ``--seed`` (the framework's default seed, -1, leaves it
unseeded). Replay the order with ``tta run --shift continual --domains <printed list> --order FILE``:

    python benchmarks/bitda_order.py --labels ../shared/data/cifar10/test_labels.npy --out bitda.npy
"""
from __future__ import annotations

import argparse

import numpy as np

#: RoTTA's CIFAR-10-C domain order (BIT-DA/RoTTA configs/dataset/cifar10.yaml)
BITDA_DOMAINS = [
    "motion_blur", "snow", "fog", "shot_noise", "defocus_blur", "contrast", "zoom_blur", "brightness", "frost",
    "elastic_transform", "glass_blur", "gaussian_noise", "pixelate", "jpeg_compression", "impulse_noise",
]


def domain_order(labels: np.ndarray, gamma: float, slots: int, num_classes: int) -> np.ndarray:
    """Positions 0..len(labels)-1 in the sampler's order for one domain (global numpy RNG)."""
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    shares = np.random.dirichlet([gamma] * slots, num_classes)  # (classes, slots)
    slot_chunks: list[list[np.ndarray]] = [[] for _ in range(slots)]
    for positions, share in zip(by_class, shares):
        cuts = (np.cumsum(share)[:-1] * len(positions)).astype(int)
        for s, chunk in enumerate(np.split(positions, cuts)):
            slot_chunks[s].append(chunk)
    out = []
    for chunks in slot_chunks:
        for i in np.random.permutation(len(chunks)):
            out.append(chunks[i])
    return np.concatenate(out)


def bitda_rows(labels: np.ndarray, n_domains: int, gamma: float, seed: int, n_examples: int | None) -> np.ndarray:
    """(T, 3) int64 rows (block 0, domain id, sample index) of the whole continual stream."""
    num_classes = int(labels.max()) + 1
    subset = np.arange(len(labels))
    if n_examples is not None and n_examples < len(labels):
        # the same seeded subset in every domain, kept in dataset order (the sampler's input order)
        subset = np.sort(np.random.default_rng(seed).choice(len(labels), n_examples, replace=False))
    np.random.seed(seed)
    rows = []
    for d in range(n_domains):
        pos = domain_order(labels[subset], gamma, num_classes, num_classes)
        rows.append(np.stack([np.zeros(len(pos), np.int64), np.full(len(pos), d, np.int64), subset[pos]], axis=1))
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, help="the test set's labels (.npy), e.g. test_labels.npy")
    parser.add_argument("--out", required=True, help="order file to write (.npy)")
    parser.add_argument("--gamma", type=float, default=0.1, help="Dirichlet concentration (RoTTA's 0.1)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--n-examples", type=int, default=None, help="a seeded subset of each domain")
    args = parser.parse_args()
    labels = np.load(args.labels, allow_pickle=False).astype(np.int64)
    rows = bitda_rows(labels, len(BITDA_DOMAINS), args.gamma, args.seed, args.n_examples)
    np.save(args.out, rows)
    print(f"wrote {len(rows)} samples to {args.out}; replay with --shift continual --domains {','.join(BITDA_DOMAINS)}"
          + " (the order names images of the full domains: do not pass --n-examples)")


if __name__ == "__main__":
    main()
