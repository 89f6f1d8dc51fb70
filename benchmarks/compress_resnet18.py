"""Structured compression of a ResNet-18 on CPU: channel pruning against Tucker-2 factorisation, with and without
a short fine-tune, and what each buys in MACs, parameters and latency.

A timm ResNet-18 (11.2 M parameters, one input channel, ten classes) reads the digits upscaled to 64 x 64
(bilinear, inside the network, so every method sees the same 8 x 8 batches) and trains ``--epochs`` epochs on the
clean training split (SGD, lr 0.05, momentum 0.9, weight decay 5e-4, cosine), seeds ``--seeds``. Each trained
network is then compressed:

- ``channels`` at 30 and 50 %: torch-pruning's DepGraph removes that share of every layer's output channels
  (L1 of the filters, Li et al. 2017), residual branches kept aligned, the classifier's outputs kept;
- ``tucker`` at 50 and 25 % of the convolution weights (Tucker-2, HOSVD + HOOI);

and tested before and after ``--ft_epochs`` epochs of fine-tuning (SGD, lr 0.01, momentum 0.9, cosine; the
compressed architecture fixed). Latency is measured on CPU at batch 1 and 32 (``--threads`` threads), the median
of ``--repeats`` repeats with every network of a seed interleaved round by round, as a ratio to the dense network
in the same round. The table is mean ± std over seeds; the plot puts accuracy after fine-tuning against batch-32
latency and against parameters (a Pareto view across methods).

    python -m benchmarks.compress_resnet18 [--seeds 0 1 2] [--epochs 15] [--ft_epochs 10] [--repeats 15]

Writes benchmarks/results/compress_resnet18.md and compress_resnet18.png.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import warnings
from pathlib import Path

from benchmarks._provenance import mean_std, write_results

METHODS = (("channels", 0.3), ("channels", 0.5), ("tucker", 0.5), ("tucker", 0.25))


def build(seed: int):
    import timm
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Upsample(size=(64, 64), mode="bilinear", align_corners=False),
        timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=10),
    )


def train(network, datamodule, epochs: int, lr: float):
    import torch

    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    task = ClassificationTask(
        network,
        optimizer=functools.partial(torch.optim.SGD, lr=lr, momentum=0.9, weight_decay=5e-4),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs),
        num_classes=10,
        reliability_diagram=False,
    )
    quiet_trainer(max_epochs=epochs, limit_val_batches=0).fit(task, datamodule)
    return network.eval()


def accuracy(network, datamodule) -> float:
    from aipflow.tasks import ClassificationTask
    from aipflow.testing import quiet_trainer

    task = ClassificationTask(network, num_classes=10, reliability_diagram=False)
    return float(quiet_trainer().test(task, datamodule=datamodule, verbose=False)[0]["test/acc"])


def compress(network, method: str, amount: float, example):
    from aipflow_compress.structured import prune_channels
    from aipflow_compress.tucker import tucker_convs

    if method == "channels":
        prune_channels(network, example[:1], ratio=amount, importance="l1")
    else:
        tucker_convs(network, ratio=amount)
    return network


def one_seed(seed: int, epochs: int, ft_epochs: int, repeats: int) -> dict[str, dict[str, float]]:
    import lightning as L
    from aipflow_compress.command import measure
    from aipflow_compress.structured import count_macs_and_params

    from aipflow.data import DigitsDataModule

    L.seed_everything(seed, verbose=False)
    datamodule = DigitsDataModule(batch_size=64, shuffle_seed=seed)
    datamodule.setup("fit")
    example = next(iter(datamodule.test_dataloader()))["x"]
    dense = train(build(seed), datamodule, epochs, lr=0.05)
    networks = {"dense": dense}
    out = {"dense": {"acc": accuracy(dense, datamodule)}}
    for method, amount in METHODS:
        name = f"{method} {amount:.0%}"
        compressed = compress(copy.deepcopy(dense), method, amount, example).eval()
        out[name] = {"acc": accuracy(compressed, datamodule)}
        networks[name] = compressed
    for name, network in networks.items():  # MACs and parameters at the 8 x 8 input (upsampled inside)
        macs, params = count_macs_and_params(network, example[:1])
        out[name].update(macs=macs, params=params)
    latency = measure(networks, example, repeats)
    for name in networks:
        out[name].update(latency[name])
    for name, network in networks.items():
        if name != "dense":
            out[name]["acc_ft"] = accuracy(train(network, datamodule, ft_epochs, lr=0.01), datamodule)
    print(seed, {n: {k: round(v, 4) for k, v in r.items()} for n, r in out.items()}, flush=True)
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in (
        (axes[0], "latency_32_ms", "CPU latency at batch 32 (ms)"),
        (axes[1], "params", "parameters (millions)"),
    ):
        for name in results[0]:
            scale = 1e6 if key == "params" else 1
            xs = np.array([r[name][key] / scale for r in results])
            ys = np.array([100 * r[name]["acc_ft" if name != "dense" else "acc"] for r in results])
            ax.errorbar(
                xs.mean(),
                ys.mean(),
                xerr=xs.std(ddof=1) if len(results) > 1 else None,
                yerr=ys.std(ddof=1) if len(results) > 1 else None,
                marker="s" if name == "dense" else "o",
                capsize=3,
                label=name + ("" if name == "dense" else " + FT"),
            )
        ax.set_xlabel(label)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("clean test accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle("ResNet-18 on digits (64 x 64): accuracy against latency and size, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--ft_epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results_json", default=None, help="render from saved per-seed results, no runs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.results_json:  # re-render the table and plot from a run's saved per-seed results
        results = json.loads(Path(args.results_json).read_text())
    else:
        results = [one_seed(seed, args.epochs, args.ft_epochs, args.repeats) for seed in args.seeds]
        raw = Path(__file__).parent / "results" / "compress_resnet18.json"
        raw.write_text(json.dumps(results, indent=1))

    write_table(results, args)


def write_table(results: list[dict], args: argparse.Namespace) -> None:
    def cell(name: str, key: str, scale: float = 1.0, relative: bool = False, digits: int = 2) -> str:
        values = [r[name][key] / (r["dense"][key] if relative else 1) for r in results]
        return mean_std(values, scale, digits)

    rows = []
    for name in results[0]:
        drops = [r["dense"]["acc"] - r[name]["acc"] for r in results]
        drops_ft = [r["dense"]["acc"] - r[name].get("acc_ft", r[name]["acc"]) for r in results]
        drop = "-" if name == "dense" else mean_std(drops)
        drop_ft = "-" if name == "dense" else mean_std(drops_ft)
        rows.append(
            f"| {name} | {cell(name, 'params', 1e-6)} | {cell(name, 'macs', relative=True)} | "
            f"{cell(name, 'latency_1_ms', relative=True)} | {cell(name, 'latency_32_ms', relative=True)} | "
            f"{cell(name, 'latency_32_ms', digits=1)} | {cell(name, 'acc', 100.0, digits=1)} | {drop} | {drop_ft} |"
        )
    png = Path(__file__).parent / "results" / "compress_resnet18.png"
    plot(results, png)
    lines = [
        "# Structured compression of ResNet-18 (digits at 64 x 64, CPU)",
        "",
        f"timm ResNet-18 trained {args.epochs} epochs on clean digits (upsampled to 64 x 64 inside the network), "
        f"seeds {', '.join(map(str, args.seeds))}; {args.threads} threads, latency the median of {args.repeats} "
        "repeats with all networks of a seed interleaved. Ratios are to the dense network of the same seed; "
        f"accuracy drops in points (positive: worse), without and after {args.ft_epochs} epochs of fine-tuning (SGD, "
        "lr 0.01, cosine); "
        "mean ± std over seeds. Channels: torch-pruning, L1 filter norm, per layer; Tucker-2: HOSVD + HOOI at a "
        "share of the convolution weights.",
        "",
        "| network | params (M) | MACs ratio | latency ratio b1 | latency ratio b32 | b32 (ms) | test acc (%) | "
        "drop | drop after FT |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "![accuracy against latency and size](compress_resnet18.png)",
    ]
    if args.results_json:
        lines[2:2] = [f"(Rendered from the per-seed results saved in `{Path(args.results_json).name}`.)", ""]
    write_results("compress_resnet18.md", lines)


if __name__ == "__main__":
    main()
