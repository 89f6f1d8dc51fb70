"""Where a data module's rows come from: any Hugging Face ``datasets`` source, opened one way for the whole project
(the core's data modules and the plugins'). Offline-friendly: a hub name resolves from the local cache when
``HF_DATASETS_OFFLINE=1``; files and folders never touch the network."""

from __future__ import annotations

from pathlib import Path

__all__ = ["FILE_FORMATS", "IMAGE_SUFFIXES", "open_dataset"]

#: file suffix -> the ``datasets`` builder that reads it
FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}
#: what makes a folder of class sub-folders an image folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def open_dataset(source: str, field: str = "data.dataset") -> dict:
    """Every split of ``source`` as ``{name: datasets.Dataset}``: a ``save_to_disk`` folder (a ``Dataset`` is the
    ``train`` split; a ``DatasetDict`` keeps its splits), an image folder (one sub-folder of images per class,
    optionally under ``train/`` / ``validation/`` / ``test/``; ``datasets``' ``imagefolder``, decoded lazily), a
    ``.csv`` / ``.json`` / ``.jsonl`` / ``.parquet`` / ``.arrow`` file, or a hub name. Errors name ``field``."""
    import datasets as hf

    path = Path(source)
    if path.is_dir():
        if _is_saved_dataset(path):
            data = hf.load_from_disk(str(path))
        elif _has_images(path):
            data = hf.load_dataset("imagefolder", data_dir=str(path))
        else:
            raise ValueError(
                f"{field}={source!r} is a folder but neither a saved dataset (save_to_disk) nor an image folder "
                "(class sub-folders of images)"
            )
    elif path.suffix.lower() in FILE_FORMATS:
        if not path.is_file():
            raise ValueError(f"{field}: no file at {source!r}")
        builder = FILE_FORMATS[path.suffix.lower()]
        try:
            data = hf.load_dataset(builder, data_files=str(path))
        except Exception as err:  # noqa: BLE001 - a malformed or empty file, said in one line
            raise ValueError(f"{field}={source!r} could not be read as {builder}: {type(err).__name__}: {err}") from err
    else:
        try:
            data = hf.load_dataset(source)
        except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user
            raise ValueError(
                f"{field}={source!r} is not a saved dataset folder, an image folder, a data file "
                f"({', '.join(FILE_FORMATS)}) or a loadable hub dataset ({type(err).__name__}: {err})"
            ) from err
    splits = dict(data) if isinstance(data, hf.DatasetDict) else {"train": data}
    empty = [name for name, split in splits.items() if len(split) == 0]
    if empty or not splits:
        raise ValueError(f"{field}={source!r}: empty split(s) {empty or ['train']}")
    return splits


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _has_images(path: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file())
