"""Peak memory of label-issue detection on synthetic out-of-sample probabilities too large to hold densely.

Rows x 100 classes of float32 probabilities are written to a memory-mapped file in blocks (each row a softmax of
Gaussian logits with the true class raised; 20 % of the given labels flipped at random), then each configuration
runs in a fresh process: ``aipflow.label_issues.find_label_issues`` with ``batch_size`` (cleanlab's batched
``LabelInspector`` over the memory map) or without it (the dense path: the whole matrix in float64 and cleanlab's
``find_label_issues``). Memory is the peak of Python and numpy allocations (``tracemalloc``; the memory-mapped
file's pages are the page cache's, not the process's heap), and the process's peak resident set for reference.

    python -m benchmarks.label_issues_memory [--rows 250000 1000000] [--classes 100] [--batch 100000]

Writes benchmarks/results/label_issues_memory.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._provenance import provenance_markdown

RESULTS = Path(__file__).resolve().parent / "results"


def write_probabilities(folder: Path, rows: int, classes: int, seed: int = 0, block: int = 50_000) -> None:
    """``probs.f32`` (rows x classes), ``given.npy`` (noisy labels), ``flipped.npy`` (which were flipped)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, rows)
    flipped = rng.random(rows) < 0.2
    given = np.where(flipped, (truth + rng.integers(1, classes, rows)) % classes, truth)
    probs = np.lib.format.open_memmap(folder / "probs.npy", mode="w+", dtype=np.float32, shape=(rows, classes))
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        logits = rng.normal(0.0, 1.0, (stop - start, classes))
        logits[np.arange(stop - start), truth[start:stop]] += 4.0
        logits -= logits.max(1, keepdims=True)
        e = np.exp(logits)
        probs[start:stop] = e / e.sum(1, keepdims=True)
    probs.flush()
    np.save(folder / "given.npy", given)
    np.save(folder / "flipped.npy", flipped)


def measure(folder: Path, batch: int | None) -> dict:
    """In this process: the detection's wall time, peak traced allocation and peak RSS, and its recall / precision
    against the flipped rows."""
    import tracemalloc

    from aipflow.label_issues import find_label_issues

    probs = np.load(folder / "probs.npy", mmap_mode="r")
    given = np.load(folder / "given.npy")
    flipped = np.load(folder / "flipped.npy")
    tracemalloc.start()
    start = time.perf_counter()
    issues = find_label_issues(probs, given, batch_size=batch)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    flagged = issues.is_issue
    hits = float((flagged & flipped).sum())
    return {
        "rows": int(probs.shape[0]),
        "classes": int(probs.shape[1]),
        "batch": batch,
        "seconds": seconds,
        "peak_traced_mb": peak / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision": hits / max(1, flagged.sum()),
        "recall": hits / max(1, flipped.sum()),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--dense_up_to", type=int, default=250_000, help="the dense path only up to this many rows")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        folder, batch = args.child
        print(json.dumps(measure(Path(folder), None if batch == "dense" else int(batch))))
        return Path(folder)
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            folder = Path(tmp) / str(rows)
            folder.mkdir()
            write_probabilities(folder, rows, args.classes)
            modes = [str(args.batch)] + (["dense"] if rows <= args.dense_up_to else [])
            for mode in modes:
                command = [sys.executable, "-m", "benchmarks.label_issues_memory", "--child", str(folder), mode]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(result, flush=True)
                rows_out.append(result)
    lines = [
        "# Label-issue detection: peak memory on synthetic probabilities",
        "",
        f"`{' '.join(['python -m benchmarks.label_issues_memory', *(argv if argv is not None else sys.argv[1:])])}`",
        "",
        "Rows x classes of float32 out-of-sample probabilities in a memory-mapped `.npy` (20 % of labels flipped at "
        "random); each line a fresh process. *Peak traced*: Python and numpy allocations (`tracemalloc`), what "
        "the detection holds; the memory map's pages belong to the page cache. *Peak RSS* counts those mapped "
        "pages too (and torch, cleanlab and scikit-learn's imports).",
        "",
        "| rows | classes | path | probabilities on disk (MB) | wall (s) | peak traced (MB) | peak RSS (MB) "
        "| precision | recall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows_out:
        path = "dense (float64 in memory)" if r["batch"] is None else f"batched, {r['batch']:,} rows per batch"
        disk = r["rows"] * r["classes"] * 4 / 2**20
        lines.append(
            f"| {r['rows']:,} | {r['classes']} | {path} | {disk:.0f} | {r['seconds']:.1f} | {r['peak_traced_mb']:.0f} "
            f"| {r['peak_rss_mb']:.0f} | {r['precision']:.3f} | {r['recall']:.3f} |"
        )
    lines += [
        "",
        "What grows with the rows on the batched path is the per-row result (labels, scores, predictions, flags, "
        "the ranking: about 45 bytes a row), not the rows x classes matrix, which is read a batch at a time.",
        "",
        provenance_markdown(),
    ]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "label_issues_memory.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)
    return out


if __name__ == "__main__":
    main()
