"""Does the image loader keep up with training? HFDataModule over an image folder (PNG, decoded per row, timm's
training transform for ResNet-18 at 64 px) against a timm ResNet-18 training step (AdamW, batch 64, 10 classes,
one channel), on this machine's CPU, same process, same threads.

Measured: the loader's images/s alone with 0, 1 and 2 workers; the training step's images/s on a batch already in
memory; and the training loop fed by the loader (the worker shares the CPU with the step). Peak memory (RSS of the
process, heap and file-backed) after a setup and 40 batches, in fresh processes, at 10k and 60k rows.

    python -m benchmarks.image_loading [--rows 10000 60000] [--batches 40]

Writes benchmarks/results/data_loading.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._provenance import write_results

BATCH = 64


def data_module(source: Path, workers: int | None):
    from aipflow.data import HFDataModule, ImageOptions

    dm = HFDataModule(
        str(source),
        images=ImageOptions(model="resnet18", size=64, mode="L", crop_scale=(0.35, 1.0)),
        batch_size=BATCH,
        num_workers=workers,
    )
    dm.setup()
    return dm


def loader_rate(dm, batches: int) -> float:
    loader = iter(dm.train_dataloader())
    next(loader)  # workers started, first batch out
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * BATCH / (time.perf_counter() - start)


def step_rate(dm, batches: int, fed: bool) -> float:
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10, in_chans=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = iter(dm.train_dataloader())
    fixed = next(loader)

    def step(batch) -> None:
        loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(fixed)
    start = time.perf_counter()
    for _ in range(batches):
        step(next(loader) if fed else fixed)
    return batches * BATCH / (time.perf_counter() - start)


def peak_memory(source: Path, batches: int) -> dict:
    """In a fresh process: set up and read ``batches`` batches in that process (no worker, so that one process
    holds everything); its peak RSS, and now its anonymous (heap) and file-backed (memory-mapped Arrow) parts."""
    code = (
        "import json; from benchmarks import image_loading as d; "
        f"dm = d.data_module({str(source)!r}, 0); d.loader_rate(dm, {batches}); "
        "status = dict(l.split(':', 1) for l in open('/proc/self/status')); "
        "kib = lambda k: int(status[k].split()[0]); "
        "print(json.dumps({'peak': kib('VmHWM'), 'anon': kib('RssAnon'), 'file': kib('RssFile')}))"
    )
    root = Path(__file__).resolve().parent.parent  # `python -c` puts its working folder first on the path
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 60_000])
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    import torch

    from aipflow.data.examples import write_digits_image_folder

    folder = Path(tempfile.mkdtemp(prefix="aipflow-loading-"))
    sources = {}
    for rows in args.rows:
        start = time.perf_counter()
        sources[rows] = write_digits_image_folder(folder / f"rows{rows}", size=64, rows=rows)
        print(f"{rows} PNG files (64 px) written in {time.perf_counter() - start:.0f} s", flush=True)
    small = sources[min(args.rows)]
    rates = {}
    for workers in (0, 1, 2):
        dm = data_module(small, workers)
        rates[workers] = loader_rate(dm, args.batches)
        print(f"loader, {workers} workers: {rates[workers]:.0f} images/s", flush=True)
    default = data_module(small, None)
    compute = step_rate(default, args.batches // 2, fed=False)
    fed = step_rate(default, args.batches // 2, fed=True)
    print(f"step on a batch in memory: {compute:.0f} images/s; fed by the loader: {fed:.0f} images/s", flush=True)
    memory = {rows: peak_memory(source, args.batches) for rows, source in sources.items()}
    for rows, m in memory.items():
        print(
            f"{rows} rows: peak RSS {m['peak'] / 1024:.0f} MiB (now: heap {m['anon'] / 1024:.0f}, files "
            f"{m['file'] / 1024:.0f})",
            flush=True,
        )
    lines = [
        "# Image loading against a training step (HFDataModule, ResNet-18 at 64 px, CPU)",
        "",
        f"Image folder of 64 px greyscale PNGs ({min(args.rows)} rows for the rates); timm's training transform "
        "for resnet18 at 64 px (random resized crop 0.35-1, flip, colour jitter, normalisation); batch "
        f"{BATCH}; {args.batches} batches after the first; torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} cores. Default workers here: {default.num_workers} (cores - 1, 1 to 4).",
        "",
        "| measured | images / s | vs the step |",
        "| --- | --- | --- |",
        *[
            f"| loader alone, {w} workers{' (default)' if w == default.num_workers else ''} | {r:.0f} | "
            f"{r / compute:.2f}x |"
            for w, r in rates.items()
        ],
        f"| training step, batch in memory | {compute:.0f} | 1.00x |",
        f"| training step fed by the loader (default workers) | {fed:.0f} | {fed / compute:.2f}x |",
        "",
        f"Memory: a fresh process sets up the data module and reads {args.batches} training batches itself (no "
        "worker, so one process holds everything); peak RSS, and after reading, its heap (anonymous) and its "
        "file-backed pages (the memory-mapped Arrow table and the libraries: shared, reclaimable).",
        "",
        "| rows | peak RSS (MiB) | heap after reading (MiB) | file-backed after reading (MiB) |",
        "| --- | --- | --- | --- |",
        *[
            f"| {rows} | {m['peak'] / 1024:.0f} | {m['anon'] / 1024:.0f} | {m['file'] / 1024:.0f} |"
            for rows, m in memory.items()
        ],
    ]
    write_results("data_loading.md", lines)


if __name__ == "__main__":
    main()
