"""Where a benchmark's numbers came from: every results file records it (git commit and whether the tree was dirty,
the command line, library versions, CPU model and thread count, GPU)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _checkout() -> str:
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return f"{commit}{' (dirty: uncommitted changes)' if dirty else ''}"


#: the checkout when the benchmark started (this module is imported first): the code the numbers came from, not
#: whatever was committed while it ran
STARTED_AT = _checkout()


def provenance() -> dict[str, str]:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("lightning", "numpy", "triton", "timm", "transformers", "sklearn"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - not installed, or fails to import: not recorded
            pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "git commit": STARTED_AT,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        "gpu": gpu,
    }


def provenance_markdown() -> str:
    """A section to end a results .md file with."""
    lines = ["## Provenance", ""]
    lines += [f"- {key}: `{value}`" for key, value in provenance().items()]
    return "\n".join(lines) + "\n"


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` over seeds (the sample standard deviation; 0 for one value), scaled (100: percent)."""
    import statistics

    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def write_results(name: str, lines: list[str]) -> Path:
    """``lines`` and the provenance written to ``benchmarks/results/<name>``; prints and returns the path."""
    folder = Path(__file__).resolve().parent / "results"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("\n".join([*lines, "", provenance_markdown()]) + "\n")
    print(f"written {path}")
    return path
