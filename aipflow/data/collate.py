"""How rows become a batch: the data modules' seam for what a model needs done in the loader's workers
(tokenising text, padding, ...). A plugin subclasses :class:`Collator`; a recipe names it in
``data.init_args.collator``."""

from __future__ import annotations

from typing import Any

from torch.utils.data import default_collate

__all__ = ["Collator"]


class Collator:
    """Rows (dicts) to a batch. The base class is torch's default collate: tensors stacked, strings listed.

    Subclasses override ``__call__`` (it runs in the loader's workers: keep what it loads out of ``__getstate__``
    and load it lazily) and may override :meth:`check`, which the data module calls once after its setup with the
    training split's first row, to refuse what cannot work (a column of numbers to a tokenizer) in one line."""

    def check(self, row: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the field when ``row`` is not what this collator takes."""

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return default_collate(rows)
