"""``aipflow compress``: compress a trained run after training and report what it cost and saved.

    aipflow compress --config RECIPE --ckpt_path CKPT --method METHOD [method options] [--out DIR]
                     [--repeats 7] [recipe overrides, e.g. --data.init_args.batch_size=64]

Methods and their options:

- ``prune``: unstructured magnitude pruning, ``--sparsity 0.5`` ``--scope global|layer``
- ``channels``: structured channel pruning, ``--ratio 0.5`` ``--importance l1|l2|bn_scale``
- ``heads``: structured pruning of attention heads, ``--ratio 0.5`` ``--importance l1|l2|sensitivity``
  (sensitivity: Michel et al.'s score on ``--calibration_batches`` training batches) ``--scope layer|global``
- ``quantize``: int8 through torchao, ``--scheme int8_dynamic|int8_weight_only|int8_static`` (static: PT2E,
  calibrated on ``--calibration_batches`` training batches, saved as an exported program ``model.pt2``)
- ``low_rank``: truncated SVD of Linear layers, one of ``--energy`` / ``--ratio`` / ``--rank``
- ``tucker``: Tucker-2 convolutions, one of ``--energy`` / ``--ratio`` / ``--rank``
- ``cp``: CP convolutions (CP-ALS with a cost guard), ``--rank`` or ``--ratio``
- ``tensor_train``: tensor-train Linear layers, ``--epsilon 0.1`` (relative error), ``--rank`` (the largest TT rank)

The model is built from the recipe, loaded from the checkpoint, tested on the data module's test split before and
after, and measured on CPU: parameters, non-zero weights, multiply-accumulates, the size of its saved state dict,
and latency at batch 1 and 32 (median of ``--repeats``, before and after interleaved, same threads). ``--out``
(default ``compressed/<method>``) gets the compressed state dict (``model.pt``, loads with ``weights_only=True``
through the method's loader), ``report.md``; the folder above it gets a row in ``report.csv`` per run and a Pareto
plot (``pareto.png``: test accuracy against size and against latency, every run in the CSV).
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
from pathlib import Path

import torch
from torch import nn

__all__ = ["METHODS", "compress_network", "main", "measure"]

METHODS = ("prune", "channels", "heads", "quantize", "low_rank", "tucker", "cp", "tensor_train")
COLUMNS = (
    "method",
    "settings",
    "params",
    "nonzero",
    "macs",
    "state_bytes",
    "latency_1_ms",
    "latency_32_ms",
    "test_acc",
    "test_nll",
    "test_ece",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aipflow compress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the recipe or config the model was trained with")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of that run")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", default=None, help="folder for the model and report (default compressed/METHOD)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per batch size")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--scope", default="global", choices=("global", "layer"))
    parser.add_argument("--ratio", type=float, default=None)
    parser.add_argument("--importance", default="l1")
    parser.add_argument("--scheme", default="int8_dynamic")
    parser.add_argument("--calibration_batches", type=int, default=8)
    parser.add_argument("--energy", type=float, default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--epsilon", type=float, default=0.1)
    return parser


def compress_network(
    network: nn.Module, method: str, options: argparse.Namespace, example: torch.Tensor, calibration=()
) -> tuple[nn.Module, str]:
    """Apply ``method`` to ``network`` with the config the options describe (:func:`~aipflow_compress.api.compress_`:
    in place, except static int8, which returns a new graph); returns the compressed network and its settings as
    text. ``calibration``: training batches (inputs and labels) for static int8 and head sensitivity."""
    from aipflow_compress.api import compress_, config_from_options

    config = config_from_options(method, options)
    if method == "quantize":  # static int8 calibrates on the inputs alone
        calibration = [_inputs(batch) for batch in calibration]
    inputs = _rows(example, slice(0, 1) if method == "channels" else slice(0, 2))
    report = compress_(network, config, example_inputs=inputs, calibration=calibration)
    return report.model, report.settings


def _state_bytes(network: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.tell()


def _rows(example: torch.Tensor | dict[str, torch.Tensor], index) -> torch.Tensor | dict[str, torch.Tensor]:
    """Rows ``index`` of a batch's inputs: a tensor, or a dict of them (a text model's ``input_ids``, ...)."""
    if isinstance(example, dict):
        return {key: value[index] for key, value in example.items()}
    return example[index]


def _size(example: torch.Tensor | dict[str, torch.Tensor]) -> int:
    return len(next(iter(example.values()))) if isinstance(example, dict) else example.shape[0]


def _macs(network: nn.Module, example) -> int | None:
    from aipflow_compress.structured import count_macs_and_params

    try:
        return count_macs_and_params(network, _rows(example, slice(0, 1)))[0]
    except Exception:  # noqa: BLE001 - the counter does not know every layer (quantized ones): reported as unknown
        return None


def measure(networks: dict[str, nn.Module], example, repeats: int) -> dict[str, dict[str, float]]:
    """Latency (ms, median) at batch 1 and 32 of each network on CPU, the networks interleaved round by round;
    ``example``: a batch's inputs (a tensor, or a dict of tensors for a text model)."""
    batches = {1: _rows(example, slice(0, 1)), 32: _rows(example, torch.arange(32) % _size(example))}
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in networks for b in batches}
    with torch.inference_mode():
        for network in networks.values():
            network.eval()  # (an exported graph's eval returns None: not chained)
            network(batches[32])  # warm-up
        for round_ in range(repeats):
            order = list(networks) if round_ % 2 == 0 else list(reversed(networks))
            for name in order:
                for size, batch in batches.items():
                    start = time.perf_counter()
                    networks[name](batch)
                    times[(name, size)].append(time.perf_counter() - start)
    return {
        name: {f"latency_{size}_ms": 1000 * statistics.median(times[(name, size)]) for size in batches}
        for name in networks
    }


def _test(network: nn.Module, datamodule, num_classes: int) -> dict[str, float]:
    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    task = ClassificationTask(network, num_classes=num_classes, reliability_diagram=False)
    metrics = quiet_trainer().test(task, datamodule=datamodule, verbose=False)[0]
    return {f"test_{k.split('/')[1]}": float(metrics[k]) for k in ("test/acc", "test/nll", "test/ece")}


def _row(method: str, settings: str, network: nn.Module, example, metrics: dict, latency: dict) -> dict:
    state = network.state_dict()
    weights = [p for name, p in state.items() if name.endswith("weight")]
    return {
        "method": method,
        "settings": settings,
        "params": sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor)),  # stored entries
        "nonzero": sum(_nonzero(w) for w in weights if w.is_floating_point()),
        "macs": _macs(network, example),
        "state_bytes": _state_bytes(network),
        **latency,
        **metrics,
    }


def _nonzero(weight: torch.Tensor) -> int:
    """Non-zero entries of a weight. torchao's quantized tensors implement no comparison: they are counted on their
    dequantized values (their non-zero integer codes; a weight that rounded to 0 counts as 0)."""
    if type(weight) not in (torch.Tensor, nn.Parameter) and hasattr(weight, "dequantize"):
        weight = weight.dequantize()
    return int((weight != 0).sum())


def _load(config: str, ckpt_path: str, overrides: list[str]):
    from aipflow.cli import build
    from aipflow.lightning import check_checkpoint_file

    check_checkpoint_file(ckpt_path)
    cli = build(["--config", config, *overrides])
    task, datamodule = cli.model, cli.datamodule
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if state is None:
        raise ValueError(f"--ckpt_path {ckpt_path!r} is not a Lightning checkpoint (no state_dict)")
    missing, unexpected = task.load_state_dict(state, strict=False)
    if unexpected or (missing and "aipflow_adapter" not in checkpoint):
        raise ValueError(
            f"--ckpt_path {ckpt_path!r} does not fit --config {config!r}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    if datamodule is None:
        raise ValueError(f"--config {config!r} has no data module to test on")
    datamodule.setup("test")
    example = _inputs(next(iter(datamodule.test_dataloader())))
    tensors = example.values() if isinstance(example, dict) else [example]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(
            "aipflow compress measures tensor inputs (or dicts of tensors); this data module's batches hold "
            f"{type(example).__name__}"
        )
    return task, datamodule, example


def _inputs(batch):
    return batch["x"] if isinstance(batch, dict) else batch[0]


def main(argv: list[str]) -> int:
    import copy

    parser = _parser()
    options, overrides = parser.parse_known_args(argv)
    task, datamodule, example = _load(options.config, options.ckpt_path, overrides)
    if isinstance(example, dict) and (options.method, options.scheme) == ("quantize", "int8_static"):
        raise ValueError(
            "aipflow compress --scheme int8_static exports a graph of tensor inputs; this model takes a dict"
        )
    num_classes = int(task.hparams.num_classes)
    original = task.model.eval()
    calibration = []
    if (options.method, options.scheme) == ("quantize", "int8_static") or (
        options.method == "heads" and options.importance == "sensitivity"
    ):
        datamodule.setup("fit")
        for batch in datamodule.train_dataloader():
            calibration.append(batch)
            if len(calibration) == options.calibration_batches:
                break
    compressed, settings = compress_network(copy.deepcopy(original), options.method, options, example, calibration)
    latency = measure({"before": original, "after": compressed}, example, options.repeats)
    rows = [
        _row("none", "-", original, example, _test(original, datamodule, num_classes), latency["before"]),
        _row(
            options.method, settings, compressed, example, _test(compressed, datamodule, num_classes), latency["after"]
        ),
    ]
    out = Path(options.out or Path("compressed") / options.method)
    out.mkdir(parents=True, exist_ok=True)
    if options.method == "quantize" and options.scheme == "int8_static":
        program = torch.export.export(compressed, (example[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        torch.export.save(program, out / "model.pt2")  # a graph, not a state dict: torch.export.load reads it
    elif options.method == "quantize":
        from aipflow_compress.quantize import save_quantized

        save_quantized(compressed, out / "model.pt")  # torchao tensors as plain inner tensors: weights_only loads
    else:
        torch.save(compressed.state_dict(), out / "model.pt")
    _write_report(out, rows, options)
    print(
        f"aipflow compress: {options.method} ({settings}): test acc {rows[0]['test_acc']:.4f} -> "
        f"{rows[1]['test_acc']:.4f}, {rows[0]['state_bytes'] / 2**20:.2f} -> {rows[1]['state_bytes'] / 2**20:.2f} "
        f"MiB, batch 32 {rows[0]['latency_32_ms']:.1f} -> {rows[1]['latency_32_ms']:.1f} ms; wrote {out}"
    )
    return 0


def _write_report(out: Path, rows: list[dict], options: argparse.Namespace) -> None:
    def cell(value) -> str:
        if value is None:
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [
        f"# aipflow compress: {options.method}",
        "",
        f"Recipe `{options.config}`, checkpoint `{options.ckpt_path}`; CPU, {torch.get_num_threads()} threads, "
        f"latency the median of {options.repeats} repeats (before and after interleaved).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
        *["| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |" for row in rows],
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    table = out.parent / "report.csv"
    new = not table.exists()
    with table.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("recipe", "ckpt_path", *COLUMNS))
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow(
                {"recipe": options.config, "ckpt_path": options.ckpt_path, **{c: row.get(c) for c in COLUMNS}}
            )
    _pareto(table, out.parent / "pareto.png")


def _pareto(table: Path, path: Path) -> None:
    """Test accuracy against state-dict size and against batch-32 latency, every run in ``table``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in (
        (axes[0], "state_bytes", "saved size (MiB)"),
        (axes[1], "latency_32_ms", "CPU latency at batch 32 (ms)"),
    ):
        for row in rows:
            x = float(row[key]) / (2**20 if key == "state_bytes" else 1)
            y = 100 * float(row["test_acc"])
            marker = "s" if row["method"] == "none" else "o"
            ax.scatter(x, y, marker=marker)
            ax.annotate(
                f"{row['method']} {row['settings']}" if row["method"] != "none" else "uncompressed",
                (x, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle("aipflow compress: accuracy against size and latency (each run in report.csv)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
