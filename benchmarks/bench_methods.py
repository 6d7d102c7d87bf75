"""Forward-time benchmark of every adaptation method, as a ratio to the source model.

For each backbone, every method wraps the same model and sees the same batch; rounds
are interleaved (source, tbn, ..., source, tbn, ...) and each method's best time over
the rounds is kept. Times are the CPU time of the (single) compute thread, which, unlike
wall time, does not count the time other processes on a shared CPU take; wall times
are printed too. Ratios are against ``source`` measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py            # both backbones
    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py --quick    # ResNet-20 only

Targets: normalization-only methods <= 1.15x source, unmix-tns (K = 16) <= 1.25x.
Gradient methods (tent, alpha-bn-mcc, momentum-decay-hbs) include their backward pass and optimizer step.
rotta and note update every 64 samples, so a batch of 200 runs 3 or 4 updates: their time is the
mean over the rounds (about 3.1 updates per batch), not the best. lame includes its bound iterations.

    OMP_NUM_THREADS=1 python benchmarks/bench_methods.py --quick --only tent rotta note lame --reference --memory

``--reference`` also times the in-test transcriptions of the official RoTTA, NOTE and LAME steps
(tests/), each as a ratio to an NCHW source forward in the same run: the target for each method
is at most its official step's ratio.

``--memory`` also prints each method's peak memory (the resident memory it adds at its peak in
a fresh process, over the loaded ResNet-20, building the adapter and running three batches;
Linux) and the cost of one memory insert (CSTU, PBRS) per sample against the source forward per sample.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time

import torch

import tta

NORM_ONLY = ["tbn", "tbn-ema", "alpha-bn", "adab2n", "momentum-decay"]
TARGETS = {**{m: 1.15 for m in NORM_ONLY}, "unmix-tns": 1.25}
METHODS: list[tuple[str, dict]] = [
    ("source", {}),
    # tbn-ema's default (the reference) runs the model twice by construction; the 1.15x target is for one pass
    *[(m, {"passes": 1} if m == "tbn-ema" else {}) for m in NORM_ONLY],
    ("unmix-tns", {"K": 16}),
    ("tent", {}),
    ("alpha-bn-mcc", {}),
    ("momentum-decay-hbs", {}),
    ("rotta", {}),
    ("note", {}),
    ("lame", {}),
]
#: the UnMix-TNS compositions (K = 16), keyed "<method>+unmix-tns"
COMPOSED = {f"{m}+unmix-tns": (m, {"stats": "unmix-tns", "stats_options": {"K": 16}})
            for m in ("tent", "rotta", "note", "lame")}
GRAD = ("tent", "alpha-bn-mcc", "momentum-decay-hbs", "rotta", "note", "tent+unmix-tns", "rotta+unmix-tns",
        "note+unmix-tns")
#: methods whose per-batch cost varies from batch to batch (an update every 64 samples): mean, not best
AVERAGED = ("rotta", "note", "rotta+unmix-tns", "note+unmix-tns")
SETTINGS = [("resnet20", 200, 32), ("resnet50", 64, 224)]


def build(model: torch.nn.Module, method: str, opts: dict) -> torch.nn.Module:
    """``method`` (or a "<method>+unmix-tns" composition) over ``model``."""
    name, composed = COMPOSED.get(method, (method, {}))
    return tta.adapt(model, name, **composed, **opts)


def bench_model(
    name: str, batch: int, size: int, rounds: int, methods: list[tuple[str, dict]], seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Best thread-CPU and best wall seconds per method."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = tta.build_model(name).eval()
    x = torch.rand(batch, 3, size, size, generator=gen)
    adapters = {m: build(model, m, opts) for m, opts in methods}
    for a in adapters.values():  # warm-up: allocator, one-time kernel selection
        a(x)
    cpu: dict[str, list[float]] = {m: [] for m in adapters}
    wall: dict[str, list[float]] = {m: [] for m in adapters}
    for _ in range(rounds):
        for m, a in adapters.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            a(x)
            cpu[m].append(time.thread_time() - c0)
            wall[m].append(time.perf_counter() - t0)
    pick = {m: (lambda v: sum(v) / len(v)) if m in AVERAGED else min for m in adapters}
    return {m: pick[m](v) for m, v in cpu.items()}, {m: pick[m](v) for m, v in wall.items()}


def peak_rss_mb(method: str, batch: int = 200, size: int = 32) -> float:
    """Peak resident memory that ``method`` adds, in a fresh process, over the loaded ResNet-20.

    After the imports and the model, the process's high-water mark is reset (Linux
    ``/proc/self/clear_refs``); the adapter is built and adapts on three batches; the result is
    the new high-water mark minus the resident size before (model copies, optimizer, memory,
    teacher and activations included).
    """
    code = (
        "import torch, tta, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from bench_methods import build\n"
        "def kb(key):\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
        "torch.set_num_threads(1); torch.manual_seed(0)\n"
        "m = tta.build_model('resnet20').eval()\n"
        f"x = torch.rand({batch}, 3, {size}, {size})\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = kb('VmRSS:')\n"
        f"a = build(m, {method!r}, {{}})\n"
        "[a(x) for _ in range(3)]\n"
        "print(kb('VmHWM:') - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(__import__("pathlib").Path(__file__).parent)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def reference_costs(batch: int = 200, rounds: int = 5) -> dict[str, float]:
    """Mean CPU seconds per batch of the in-test transcriptions of the official RoTTA, NOTE and LAME
    steps (tests/test_*_parts.py, test_lame_solver.py: the official code's structure, torch's global
    generator, NCHW as the official code runs) and of the NCHW source forward, ResNet-20."""
    tests = __import__("pathlib").Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    from test_lame_solver import ref_lame  # noqa: PLC0415
    from test_note_parts import RefNOTE, TorchRandom  # noqa: PLC0415
    from test_rotta_parts import RefRoTTA, ref_transform  # noqa: PLC0415

    torch.manual_seed(0)
    model = tta.build_model("resnet20").eval()
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rotta = RefRoTTA(copy.deepcopy(model), 10, ref_transform(32))
    note = RefNOTE(copy.deepcopy(model), 10, TorchRandom(0))
    fc = model.linear

    def lame_ref() -> None:
        feats = []
        handle = fc.register_forward_pre_hook(lambda _m, a: feats.append(a[0]))
        with torch.no_grad():
            logits = model(x)
            handle.remove()
            ref_lame(logits, feats[0], "rbf", 5)

    def source() -> None:
        with torch.no_grad():
            model(x)

    cases = {"source (NCHW)": source, "rotta reference": lambda: rotta.forward(x),
             "note reference": lambda: note.forward(x), "lame reference": lame_ref}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(rounds):
        for k, fn in cases.items():
            c0 = time.thread_time()
            fn()
            times[k].append(time.thread_time() - c0)
    return {k: (sum(v) / len(v) if "rotta" in k or "note" in k else min(v)) for k, v in times.items()}


def insert_cost(batch: int = 200, rounds: int = 5) -> dict[str, float]:
    """CPU seconds of one memory insert (CSTU, PBRS) and of the source forward, per sample."""
    from tta.memory import CSTU, PBRS

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    labels = torch.randint(10, (batch,), generator=g).tolist()
    unc = torch.rand(batch, generator=g).tolist()
    model = tta.build_model("resnet20").eval()
    best = {"source forward": float("inf"), "CSTU insert": float("inf"), "PBRS insert": float("inf")}
    for _ in range(rounds):
        c0 = time.thread_time()
        with torch.no_grad():
            model(x)
        best["source forward"] = min(best["source forward"], (time.thread_time() - c0) / batch)
        cstu, pbrs = CSTU(64, 10), PBRS(64, 10)
        c0 = time.thread_time()
        for i in range(batch):
            cstu.add(x[i], labels[i], unc[i])
        best["CSTU insert"] = min(best["CSTU insert"], (time.thread_time() - c0) / batch)
        c0 = time.thread_time()
        for i in range(batch):
            pbrs.add(x[i], labels[i], g)
        best["PBRS insert"] = min(best["PBRS insert"], (time.thread_time() - c0) / batch)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds for ResNet-20; best time is kept")
    parser.add_argument("--rounds-large", type=int, default=3, help="interleaved rounds for ResNet-50")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="ResNet-20 only")
    parser.add_argument("--skip-grad", action="store_true", help="leave out the gradient methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None,
                        help="methods to run besides source (e.g. rotta note lame); their +unmix-tns forms come along")
    parser.add_argument("--memory", action="store_true", help="also peak memory per method and memory insert cost")
    parser.add_argument("--reference", action="store_true",
                        help="also the in-test transcriptions of official RoTTA, NOTE and LAME (ResNet-20)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = METHODS + [(m, {}) for m in COMPOSED]
    if args.only:
        keep = set(args.only) | {f"{m}+unmix-tns" for m in args.only}
        methods = [m for m in methods if m[0] == "source" or m[0] in keep]
    methods = [m for m in methods if not (args.skip_grad and m[0] in GRAD)]
    settings = SETTINGS[:1] if args.quick else SETTINGS
    rounds = {name: args.rounds if i == 0 else args.rounds_large for i, (name, _, _) in enumerate(settings)}
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), float32, channels_last "
          f"(the Adapter default on CPU); best of {', '.join(f'{r} ({n})' for n, r in rounds.items())} interleaved rounds "
          f"(mean for {', '.join(AVERAGED)})")
    results = {name: bench_model(name, batch, size, rounds[name], methods, args.seed) for name, batch, size in settings}
    cols = " | ".join(f"{n} b{b} {s}px: CPU ms | ratio | wall ms | wall ratio" for n, b, s in settings)
    print(f"| method | {cols} | target |")
    print("|" + "---|" * (2 + 4 * len(settings)))
    for m, _ in methods:
        cells = []
        for name, _, _ in settings:
            cpu, wall = results[name]
            cells.append(f"{1e3 * cpu[m]:.0f} | {cpu[m] / cpu['source']:.2f}x | {1e3 * wall[m]:.0f} | {wall[m] / wall['source']:.2f}x")
        target = f"<= {TARGETS[m]:.2f}x" if m in TARGETS else "-"
        print(f"| {m} | " + " | ".join(cells) + f" | {target} |", flush=True)
    if args.reference:
        ref = reference_costs(rounds=rounds["resnet20"])
        print("\nTranscriptions of the official steps (tests/), ResNet-20 b200 32px, NCHW, CPU ms per batch "
              "(rotta/note: mean over rounds)")
        print("| reference | CPU ms | ratio to its source forward |\n|---|---|---|")
        for k, t in ref.items():
            print(f"| {k} | {1e3 * t:.0f} | {t / ref['source (NCHW)']:.2f}x |", flush=True)
    if args.memory:
        print("\nPeak resident memory added over the loaded ResNet-20 (fresh process, batch 200, three batches), MB")
        print("| method | peak MB | ratio to source |\n|---|---|---|")
        peaks = {m: peak_rss_mb(m) for m, _ in methods}
        for m, mb in peaks.items():
            print(f"| {m} | {mb:.0f} | {mb / peaks['source']:.2f}x |", flush=True)
        cost = insert_cost()
        print("\nPer-sample CPU cost (ResNet-20, 32px), best of 5")
        print("| part | us per sample | ratio to the source forward per sample |\n|---|---|---|")
        for k, t in cost.items():
            print(f"| {k} | {1e6 * t:.1f} | {t / cost['source forward']:.3f}x |")


if __name__ == "__main__":
    main()
