"""Fused Triton kernels vs foreach vs a per-tensor loop, for the optimizer side of a SAM step (no forward/backward),
plus bSAM's optimizer side and an end-to-end ResNet-50 step. Meant for a GPU (scripts/gpu_check.sh runs it).

Parameter sets: 100 M parameters over 256 tensors of mixed sizes, and the parameter shapes of timm's resnet50 and
vit_base_patch16_224. For each: SAM (SGD-momentum base) with

- loop: the per-tensor design of davda54/sam (norm per tensor, a cloned backup, an add per tensor, restore by
  assignment) around torch's per-tensor SGD (``foreach=False``);
- foreach: aipflow's SAM with ``impl="foreach"``;
- triton: aipflow's SAM with ``impl="triton"``;
- and ``torch.optim.AdamW(fused=True)``, one step, as a same-traffic yardstick.

Reported: time (``triton.testing.do_bench``, p20/p50/p80 in ms), effective GB/s (bytes a fused design must move
divided by the time: SAM with SGD-momentum 36 bytes per fp32 parameter — norm reads g (4); perturb reads w, g and
writes w + e (12); the descent reads w, g, m and writes w, m (20) — and AdamW 28), % of the bandwidth floor (the
time those bytes take at the copy bandwidth measured in this run), and kernel launches per step (profiler).
bSAM: optimizer side of one step (M = 1, the closure only hands back fixed gradients) relative to SAM's.
End-to-end: ResNet-50, batch 128, bf16 autocast, SAM step / plain SGD step.

    python -m benchmarks.kernel_throughput --out DIR        (GPU)
    TRITON_INTERPRET=1 python -m benchmarks.kernel_throughput --smoke --out DIR   (tiny sizes on CPU: checks it runs)

Writes DIR/kernels.csv and DIR/kernels_<card>.md, and copies the markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import csv
import functools
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from aipflow.optim import BSAM, SAM
from benchmarks._provenance import provenance_markdown
from benchmarks.optim_step import Davda54StyleSAM  # the same baseline as the CPU benchmark

RESULTS = Path(__file__).resolve().parent / "results"
SAM_BYTES = 36  # per fp32 parameter, SGD-momentum base (see the module docstring)
ADAMW_BYTES = 28  # read w, g, m, v; write w, m, v


def bench(fn, device: torch.device, smoke: bool) -> tuple[float, float, float]:
    """p20/p50/p80 in milliseconds."""
    if device.type == "cuda":
        import triton.testing

        return tuple(triton.testing.do_bench(fn, quantiles=[0.2, 0.5, 0.8], warmup=25, rep=200))
    fn()
    times = []
    for _ in range(1 if smoke else 5):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return q(0.2), q(0.5), q(0.8)


def copy_bandwidth(device: torch.device, smoke: bool) -> float:
    """GB/s of a device-to-device copy (read + write counted)."""
    n = 2**16 if smoke else 2**28
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), device, smoke)[1]
    return 2 * 4 * n / (ms * 1e-3) / 1e9


def shapes_for(name: str, smoke: bool) -> list[tuple[int, ...]]:
    if smoke:
        return [(37,), (64, 3), (5, 5, 3, 3), (1000,)] * 3
    if name == "100M-256":
        g = torch.Generator().manual_seed(0)
        sizes = torch.randint(1, 100, (256,), generator=g).float()
        sizes = (sizes / sizes.sum() * 100_000_000).long()
        return [(int(s),) for s in sizes]
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return [tuple(p.shape) for p in model.parameters()]


def make_params(shapes, device) -> list[nn.Parameter]:
    params = [nn.Parameter(torch.randn(s, device=device) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    return params


def loop_sam_step_fn(params):
    """davda54/sam's per-tensor design (optim_step.py's re-implementation) around torch's per-tensor SGD."""
    sam = Davda54StyleSAM(params, torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=False))

    def run():
        sam.first_step()
        sam.second_step()

    return run


def sam_step_fn(params, impl):
    opt = SAM(params, functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), impl=impl)

    def run():
        opt.first_step()
        opt.second_step()

    return run


def launches(fn, device) -> int | str:
    if device.type != "cuda":
        return "-"
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def optimizer_rows(name, device, bandwidth, smoke) -> list[dict]:
    shapes = shapes_for(name, smoke)
    n = sum(int(torch.Size(s).numel()) for s in shapes)
    rows = []
    cases = {
        "loop": loop_sam_step_fn,
        "foreach": lambda ps: sam_step_fn(ps, "foreach"),
        "triton": lambda ps: sam_step_fn(ps, "triton"),
    }
    if device.type == "cuda":
        cases["AdamW(fused=True)"] = lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True).step
    for method, build in cases.items():
        params = make_params(shapes, device)
        fn = build(params)
        p20, p50, p80 = bench(fn, device, smoke)
        nbytes = (ADAMW_BYTES if method.startswith("AdamW") else SAM_BYTES) * n
        floor_ms = nbytes / (bandwidth * 1e9) * 1e3
        rows.append(
            dict(
                params=name,
                tensors=len(shapes),
                numel=n,
                method=method,
                p20_ms=p20,
                p50_ms=p50,
                p80_ms=p80,
                GBps=nbytes / (p50 * 1e-3) / 1e9,
                pct_of_floor=100 * floor_ms / p50,
                launches=launches(fn, device),
            )
        )
        del params, fn
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bsam_vs_sam(device, smoke) -> dict:
    return {name: _one_step_time(name, device, smoke) for name in ("SAM", "bSAM")}


def _one_step_time(name: str, device, smoke) -> float:
    params = make_params(shapes_for("100M-256", smoke), device)
    grads = [p.grad for p in params]

    def closure(k=None):
        for p, g in zip(params, grads, strict=True):
            p.grad = g  # no forward/backward: the optimizer side only
        return torch.zeros((), device=device)

    if name == "SAM":
        opt = SAM(params, functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), impl="triton")
    else:
        opt = BSAM(params, lr=0.1, train_size=50_000, num_subbatches=1, seed=0, impl="triton")
    return bench(lambda: opt.step(closure), device, smoke)[1]


def end_to_end(device) -> dict:
    import timm

    model = (
        timm.create_model("resnet50", pretrained=False, num_classes=1000)
        .to(device)
        .to(memory_format=torch.channels_last)
    )
    x = torch.randn(128, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (128,), device=device)
    plain = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sam = SAM(model.parameters(), functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), impl="auto")

    def loss():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return nn.functional.cross_entropy(model(x), y)

    def plain_step():
        plain.zero_grad()
        loss().backward()
        plain.step()

    def sam_step():
        def closure():
            sam.zero_grad()
            out = loss()
            out.backward()
            return out

        sam.step(closure)

    return {"plain": bench(plain_step, device, False)[1], "SAM": bench(sam_step, device, False)[1]}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_results")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU through the interpreter): checks only")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    slug = card.replace(" ", "_").replace("/", "_")
    bandwidth = copy_bandwidth(device, args.smoke)
    sets = ["smoke"] if args.smoke else ["100M-256", "resnet50", "vit_base_patch16_224"]
    rows = [r for name in sets for r in optimizer_rows(name, device, bandwidth, args.smoke)]
    bsam = bsam_vs_sam(device, args.smoke)
    e2e = end_to_end(device) if device.type == "cuda" and not args.smoke else None

    with open(out / "kernels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Fused SAM kernels: {card}",
        "",
        f"torch {torch.__version__}; copy bandwidth measured in this run: {bandwidth:.0f} GB/s. Optimizer side of",
        "a SAM step (SGD-momentum base, fp32, fixed gradients); AdamW(fused=True) is one plain AdamW step, a",
        "same-traffic yardstick. GB/s and % of floor use the bytes a fused design must move (36 B/param for SAM,",
        "28 for AdamW) at the copy bandwidth above. Written by benchmarks/kernel_throughput.py.",
        "",
        "| params | tensors | method | p20 ms | p50 ms | p80 ms | GB/s | % of floor | launches/step | vs loop | "
        "vs foreach |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = {x["method"]: x["p50_ms"] for x in rows if x["params"] == r["params"]}
        lines.append(
            f"| {r['params']} | {r['tensors']} | {r['method']} | {r['p20_ms']:.3f} | {r['p50_ms']:.3f} | "
            f"{r['p80_ms']:.3f} | {r['GBps']:.0f} | {r['pct_of_floor']:.0f} % | {r['launches']} | "
            f"{same['loop'] / r['p50_ms']:.2f}x | {same['foreach'] / r['p50_ms']:.2f}x |"
        )
    lines += ["", f"bSAM optimizer side / SAM's (M = 1, triton, 100M-256): {bsam['bSAM'] / bsam['SAM']:.2f}"]
    if e2e:
        lines.append(
            f"End-to-end ResNet-50, batch 128, bf16 autocast: plain {e2e['plain']:.1f} ms, SAM {e2e['SAM']:.1f} ms, "
            f"ratio {e2e['SAM'] / e2e['plain']:.2f}"
        )
    md = out / f"kernels_{slug}.md"
    lines += ["", provenance_markdown()]
    md.write_text("\n".join(lines) + "\n")
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        shutil.copy(md, RESULTS / md.name)
    print("\n".join(lines))
    return md


if __name__ == "__main__":
    main()
