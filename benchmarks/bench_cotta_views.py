"""CoTTA's 32-view teacher pass: one grouped forward vs one forward per view, and the augmentation.

The official step calls ``teacher(transform(x))`` 32 times. tta draws the 32 views as one
(32*B, C, H, W) tensor (``tta.methods._view_augment.augment``) and runs the teacher once on it with
per-view BatchNorm statistics (``tta.methods._view_forward.forward_views``). ``torch.func.vmap``
over views, which also keeps per-view statistics, is timed for comparison. All teacher
paths run on the teacher ``tta.adapt(resnet20, "cotta")`` builds (batch statistics) in NCHW
and in channels_last; the augmentation is timed
against torchvision applied view by view, as the official pipeline does. A control row
times a plain eval-mode forward (running statistics) of all views at once vs per view:
batching changes no number there, so its ratio isolates the cost of the batch size on
this CPU. Timings are the
median CPU time of the compute thread over round-robin rounds. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_cotta_views.py --threads 1 --batch 64 --views 32
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

import tta
from tta.methods._view_augment import COTTA_AUGMENT, augment_views, sample_view_params
from tta.methods._view_forward import forward_views

_JITTER = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue,
           lambda im, f: TF.adjust_gamma(im.clamp(1e-8, 1.0), f)]


def torchvision_views(x: torch.Tensor, p, noise: torch.Tensor) -> torch.Tensor:
    """The official pipeline's arithmetic, one torchvision call chain per view."""
    b, n = x.shape[0], x.shape[-1]
    outs = []
    for v in range(len(p)):
        im = x.clamp(0, 1)
        for op in p.order[v].tolist():
            im = _JITTER[op](im, float(p.jitter[v, op]))
        im = TF.pad(im, n // 2, padding_mode="edge")
        im = TF.affine(im, angle=float(p.angle[v]), translate=[int(t) for t in p.translate[v]],
                       scale=float(p.scale[v]), shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR,
                       fill=[0.0] * 3)
        im = TF.center_crop(TF.gaussian_blur(im, [5, 5], [float(p.sigma[v])] * 2), n)
        if p.flip[v]:
            im = TF.hflip(im)
        outs.append((im + noise[v * b:(v + 1) * b]).clamp(0, 1))
    return torch.cat(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g)
    params = sample_view_params(args.views, 32, COTTA_AUGMENT, g)
    noise = torch.randn(args.views * args.batch, 3, 32, 32, generator=g) * 0.005
    views = augment_views(x, params, COTTA_AUGMENT, noise=noise)
    fns = {}
    for fmt, label in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "channels_last")):
        teacher = tta.adapt(tta.build_model("resnet20"), "cotta", dataset="cifar10",
                            channels_last=fmt is torch.channels_last).teacher.to(memory_format=fmt)
        flat = views.contiguous(memory_format=fmt)
        stacked = flat.view(args.views, args.batch, 3, 32, 32)
        fns[f"teacher loop, {label}"] = lambda m=teacher, s=stacked: forward_views(m, s, 1)
        fns[f"teacher grouped, {label}"] = lambda m=teacher, s=stacked: forward_views(m, s, args.views)
        fns[f"teacher grouped by 4, {label}"] = lambda m=teacher, s=stacked: forward_views(m, s, 4)
        fns[f"teacher vmap, {label}"] = lambda m=teacher, s=stacked: torch.func.vmap(m)(s)
    plain = tta.build_model("resnet20").eval()  # running statistics: batching changes no number
    fns["plain eval, one batch of all"] = lambda: plain(views)
    fns["plain eval, one call per view"] = lambda: [plain(v) for v in views.split(args.batch)]
    fns["augment torchvision loop"] = lambda: torchvision_views(x, params, noise)
    fns["augment batched"] = lambda: augment_views(x, params, COTTA_AUGMENT, noise=noise)
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(args.rounds):
            for key, fn in fns.items():
                t0 = time.thread_time()
                fn()
                times[key].append(time.thread_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# {args.views} views of a batch of {args.batch} 32x32 images, ResNet-20 with batch-statistics BN, "
          f"{args.threads} torch thread(s), torch {torch.__version__}; median thread CPU time of {args.rounds} rounds")
    print(f"{'path':38s} {'ms':>9s} {'ratio':>7s}")
    for key, base in (("teacher loop, NCHW", "teacher loop, NCHW"), ("teacher grouped, NCHW", "teacher loop, NCHW"),
                      ("teacher grouped by 4, NCHW", "teacher loop, NCHW"), ("teacher vmap, NCHW", "teacher loop, NCHW"),
                      ("teacher loop, channels_last", "teacher loop, NCHW"),
                      ("teacher grouped, channels_last", "teacher loop, channels_last"),
                      ("teacher grouped by 4, channels_last", "teacher loop, channels_last"),
                      ("teacher vmap, channels_last", "teacher loop, channels_last"),
                      ("plain eval, one call per view", "plain eval, one call per view"),
                      ("plain eval, one batch of all", "plain eval, one call per view"),
                      ("augment torchvision loop", "augment torchvision loop"),
                      ("augment batched", "augment torchvision loop")):
        print(f"{key:38s} {1e3 * med[key]:9.1f} {med[key] / med[base]:7.2f}  (vs {base})")


if __name__ == "__main__":
    main()
