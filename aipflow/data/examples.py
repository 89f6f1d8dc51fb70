"""Small sources in the shapes users bring, written from data that installs with scikit-learn (nothing is
downloaded): a table as a CSV, digits as an image folder. The tests and benchmarks train the own-data recipes on
them; they are also a way to try a recipe before pointing it at one's own files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SKLEARN_TABLES", "write_digits_image_folder", "write_table"]

#: scikit-learn datasets that :func:`write_table` writes
SKLEARN_TABLES = ("digits", "wine", "breast_cancer")


def write_table(
    name: str,
    path: str | Path,
    noisy_label_column: str | None = None,
    noise_rate: float = 0.4,
    seed: int = 0,
) -> Path:
    """scikit-learn's ``name`` as a CSV (or ``.parquet`` / ``.json``) of numeric feature columns and ``label``.
    ``noisy_label_column``: also a column of instance-dependent noisy labels (Xia et al. 2020, at ``noise_rate``):
    a stand-in for an annotator's labels, whose errors depend on the sample."""
    import datasets as hf
    import sklearn.datasets as sk
    import torch

    from aipflow.data.noise import instance_dependent_noise

    if name not in SKLEARN_TABLES:
        raise ValueError(f"name must be one of {SKLEARN_TABLES}, got {name!r}")
    raw = getattr(sk, f"load_{name}")()
    columns = {f"f{i}": raw.data[:, i].astype(np.float32).tolist() for i in range(raw.data.shape[1])}
    columns["label"] = raw.target.tolist()
    if noisy_label_column is not None:
        x = torch.as_tensor((raw.data - raw.data.mean(0)) / (raw.data.std(0) + 1e-3))
        generator = torch.Generator().manual_seed(seed)
        k = int(raw.target.max()) + 1
        noisy = instance_dependent_noise(torch.as_tensor(raw.target), x, k, noise_rate, generator).noisy
        columns[noisy_label_column] = noisy.tolist()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = hf.Dataset.from_dict(columns)
    writer = {".csv": table.to_csv, ".parquet": table.to_parquet, ".json": table.to_json, ".jsonl": table.to_json}
    if path.suffix not in writer:
        raise ValueError(f"path must end in one of {sorted(writer)}, got {path.name!r}")
    writer[path.suffix](str(path))
    return path


def write_digits_image_folder(
    root: str | Path, size: int = 8, mode: str = "L", per_class: int | None = None, rows: int | None = None
) -> Path:
    """scikit-learn's 1,797 digits as PNG files in one sub-folder per class (``root/3/0042.png``), ``size`` pixels
    square (bilinear from 8x8), greyscale (``"L"``) or with the digit in one colour channel (``"RGB"``). At most
    ``per_class`` images of each class; ``rows``: that many images in all, the digits repeated (with a one-pixel
    shift per repetition, so files differ) to make a large folder."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(root)
    counts: dict[int, int] = {}
    total = rows if rows is not None else len(digits.target)
    for n in range(total):
        i = n % len(digits.target)
        label = int(digits.target[i])
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        pixels = np.roll(digits.images[i], n // len(digits.target), axis=1)
        image = Image.fromarray((pixels * 255 / 16).astype(np.uint8), "L").resize((size, size), Image.BILINEAR)
        if mode == "RGB":
            channels = [image, Image.new("L", image.size), Image.new("L", image.size)]
            image = Image.merge("RGB", channels[label % 3 :] + channels[: label % 3])
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{n:06d}.png")
    return root
