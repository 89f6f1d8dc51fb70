"""The explicit export step: LoRA merged into the encoder's weights (``merge_and_unload``), written as a Hugging
Face folder with safetensors that ``AutoModel.from_pretrained`` loads (encoder, tokenizer), plus the classification
head (``head.safetensors``) and how to pool (``aipflow_head.json``), which :func:`load_exported` reads back.

From the command line, after a fit: ``aipflow-finetune-export --config <recipe> --ckpt_path <ckpt> --out <dir>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

__all__ = ["export_merged", "load_exported", "main"]

HEAD_FILE, HEAD_CONFIG = "head.safetensors", "aipflow_head.json"


def export_merged(network, folder: str | Path, tokenizer: str | None = None, class_names=None) -> Path:
    """Write ``network`` (a ``TextClassifier``) to ``folder``: the encoder with any LoRA merged in, the tokenizer
    of ``tokenizer`` (a backbone name as ``Tokenize`` takes), the head and its settings."""
    import copy

    from safetensors.torch import save_file

    from aipflow_finetune.backbones import offline, resolve_backbone

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = copy.deepcopy(network.encoder)
    if hasattr(encoder, "merge_and_unload"):
        encoder = encoder.merge_and_unload()  # W + (alpha / r) B A, the adapters gone
    encoder.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        from transformers import AutoTokenizer

        path = resolve_backbone(tokenizer, "tokenizer")
        AutoTokenizer.from_pretrained(path, local_files_only=offline()).save_pretrained(folder)
    save_file({k: v.detach().contiguous() for k, v in network.head.state_dict().items()}, str(folder / HEAD_FILE))
    settings = {
        "num_classes": network.head.out_features,
        "pooling": network.pooling,
        "class_names": list(class_names) if class_names is not None else None,
    }
    (folder / HEAD_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def load_exported(folder: str | Path):
    """A ``TextClassifier`` (every weight trainable) from an exported folder."""
    from safetensors.torch import load_file

    from aipflow_finetune.text import TextClassifier

    folder = Path(folder)
    settings = json.loads((folder / HEAD_CONFIG).read_text())
    network = TextClassifier(
        str(folder), num_classes=settings["num_classes"], method="full", pooling=settings["pooling"]
    )
    network.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    network.class_names = settings.get("class_names")
    return network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aipflow-finetune-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the recipe or config the model was trained with")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of that run (adapter-only or full)")
    parser.add_argument("--out", required=True, help="the folder to write")
    args = parser.parse_args(argv)
    try:
        folder = _export_from_run(args.config, args.ckpt_path, args.out)
    except (ValueError, OSError) as err:
        print(f"aipflow-finetune-export: error: {err}", file=sys.stderr)
        return 2
    print(f"aipflow-finetune-export: wrote {folder} (AutoModel.from_pretrained reads the encoder)")
    return 0


def _export_from_run(config: str, ckpt_path: str, out: str) -> Path:
    from aipflow.cli import build
    from aipflow_finetune.callbacks import trained_keys

    cli = build(["--config", config])
    task = cli.model
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict")
    if state is None:
        raise ValueError(f"--ckpt_path {ckpt_path!r} is not a Lightning checkpoint (no state_dict)")
    missing = sorted(trained_keys(task) - set(state))
    if missing:
        raise ValueError(f"--ckpt_path {ckpt_path!r} lacks weights the config's model trains: {missing[:5]}")
    task.load_state_dict(state, strict=False)
    datamodule = cli.datamodule
    collator = getattr(datamodule, "collator", None)
    class_names = None
    if datamodule is not None and hasattr(datamodule, "class_names"):
        datamodule.setup()
        class_names = datamodule.class_names
    return export_merged(task.model, out, getattr(collator, "tokenizer", None), class_names)


if __name__ == "__main__":
    sys.exit(main())
