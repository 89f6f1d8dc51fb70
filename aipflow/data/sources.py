"""Where a data module's rows come from: any Hugging Face ``datasets`` source, opened one way for the whole project
(the core's data modules and the plugins'). Offline-friendly: a hub name resolves from the local cache when
``HF_DATASETS_OFFLINE=1``; files and folders never touch the network."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = [
    "FILE_FORMATS",
    "IMAGE_SUFFIXES",
    "SKLEARN_SOURCES",
    "TEXT_SUFFIXES",
    "open_dataset",
    "package_path",
    "sklearn_dataset",
]

#: file suffix -> the ``datasets`` builder that reads it
FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}
#: what makes a folder of class sub-folders an image folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: what makes a folder of class sub-folders a text folder (one document per file)
TEXT_SUFFIXES = (".txt",)
#: how a source names a folder or file inside an installed Python package (data that installs offline)
PACKAGE_PREFIX = "package:"
#: scikit-learn's bundled datasets as sources (``sklearn:digits`` is images; the others are tables)
SKLEARN_SOURCES = ("digits", "digits_table", "wine", "breast_cancer", "iris")


def open_dataset(source: str, field: str = "data.dataset") -> dict:
    """Every split of ``source`` as ``{name: datasets.Dataset}``: a ``save_to_disk`` folder (a ``Dataset`` is the
    ``train`` split; a ``DatasetDict`` keeps its splits), an image folder (one sub-folder of images per class,
    optionally under ``train/`` / ``validation/`` / ``test/``; ``datasets``' ``imagefolder``, decoded lazily), a
    text folder (one sub-folder of ``.txt`` documents per class: columns ``text``, ``label``), a ``.csv`` /
    ``.json`` / ``.jsonl`` / ``.parquet`` / ``.arrow`` file, or a hub name. Any of the paths may be given inside an
    installed package as ``package:<module>/<path>``; ``sklearn:<name>`` is one of scikit-learn's bundled datasets
    (:data:`SKLEARN_SOURCES`: ``digits`` as 8x8 greyscale images, the others as tables). Errors name ``field``."""
    import datasets as hf

    if source.startswith("sklearn:"):
        return {"train": sklearn_dataset(source[len("sklearn:") :], field)}
    path = package_path(source, field) if source.startswith(PACKAGE_PREFIX) else Path(source)
    if path.is_dir():
        if _is_saved_dataset(path):
            data = hf.load_from_disk(str(path))
        elif _has_images(path):
            data = _image_folder(path)
        elif _has_texts(path):
            data = _text_folder(path)
        else:
            raise ValueError(
                f"{field}={source!r} is a folder but neither a saved dataset (save_to_disk), an image folder nor a "
                "text folder (class sub-folders of images or of .txt files)"
            )
    elif path.suffix.lower() in FILE_FORMATS:
        if not path.is_file():
            raise ValueError(f"{field}: no file at {source!r}")
        builder = FILE_FORMATS[path.suffix.lower()]
        if path.is_file() and path.stat().st_size == 0:
            raise ValueError(f"{field}={source!r} is an empty file (no header, no rows)")
        try:
            data = hf.load_dataset(builder, data_files=str(path))
        except Exception as err:  # noqa: BLE001 - a malformed or empty file, said in one line
            if builder == "csv" and _caused_by(err, UnicodeDecodeError):
                # a CSV with a few bytes that are not UTF-8 (scraped text): read it, each bad byte as U+FFFD
                warnings.warn(f"{field}={source!r}: bytes that are not UTF-8 read as U+FFFD", stacklevel=2)
                data = hf.load_dataset(builder, data_files=str(path), encoding_errors="replace")
            else:
                raise ValueError(
                    f"{field}={source!r} could not be read as {builder}: {type(err).__name__}: {err}"
                ) from err
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


def _caused_by(err: BaseException, kind: type) -> bool:
    while err is not None:
        if isinstance(err, kind):
            return True
        err = err.__cause__ or err.__context__
    return False


def package_path(source: str, field: str) -> Path:
    """``package:<module>/<path>`` as a path inside the installed package, found without importing it (some
    data packages print or compute on import)."""
    import importlib.util

    module, _, inner = source[len(PACKAGE_PREFIX) :].partition("/")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"{field}={source!r}: no installed package {module!r} (pip install {module.replace('_', '-')})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.exists():
        raise ValueError(f"{field}={source!r}: the package has no {inner!r}")
    return path


def sklearn_dataset(name: str, field: str = "data.source"):
    """scikit-learn's bundled ``name`` as a ``datasets.Dataset``: ``digits`` as PNG images (an ``image`` column,
    8x8 greyscale on 0-255) with a ``ClassLabel`` ``label``; ``digits_table``, ``wine``, ``breast_cancer``,
    ``iris`` as numeric columns ``f0 ...`` and ``label``."""
    import io

    import datasets as hf
    import numpy as np
    import sklearn.datasets as sk

    if name not in SKLEARN_SOURCES:
        raise ValueError(
            f"{field}='sklearn:{name}': scikit-learn sources are {['sklearn:' + n for n in SKLEARN_SOURCES]}"
        )
    raw = getattr(sk, f"load_{name.removesuffix('_table')}")()
    names = [str(c) for c in getattr(raw, "target_names", range(int(raw.target.max()) + 1))]
    label = hf.ClassLabel(names=names)
    if name == "digits":
        from PIL import Image

        cells = []
        for pixels in raw.images:
            buffer = io.BytesIO()
            Image.fromarray((pixels * 255 / 16).astype(np.uint8), "L").save(buffer, format="PNG")
            cells.append({"bytes": buffer.getvalue(), "path": None})
        features = hf.Features({"image": hf.Image(), "label": label})
        return hf.Dataset.from_dict({"image": cells, "label": raw.target.tolist()}, features=features)
    columns = {f"f{i}": raw.data[:, i].astype(np.float32).tolist() for i in range(raw.data.shape[1])}
    features = hf.Features({**{c: hf.Value("float32") for c in columns}, "label": label})
    return hf.Dataset.from_dict({**columns, "label": raw.target.tolist()}, features=features)


_SPLIT_FOLDERS = ("train", "validation", "valid", "val", "dev", "test")


def _image_folder(path: Path):
    """Class sub-folders of images (optionally under ``train/``, ``validation/``, ``test/``) as a ``DatasetDict``
    of file paths (an ``image`` column, decoded on access) and a ``ClassLabel`` ``label`` with the class names
    sorted. Only the paths are held: 60,000 files cost a few MB (``datasets``' own ``imagefolder`` builder kept
    about 1.8 KB per file and took seconds per thousand files to list them).

    A ``metadata.csv`` in a split's folder adds columns per image, as in ``datasets``' image folders: a
    ``file_name`` column (the image's path relative to that folder) and any others (a noisy label column, a weight);
    every image needs its row and every row its image (one line names the first that does not)."""
    import datasets as hf

    splits = [d for d in _SPLIT_FOLDERS if (path / d).is_dir()]
    roots = {("train" if d == "train" else "test" if d == "test" else "validation"): path / d for d in splits}
    roots = roots or {"train": path}
    names = sorted({c.name for root in roots.values() for c in root.iterdir() if c.is_dir() and c.name[0] not in "._"})
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=names)})
    out = {}
    for split, root in roots.items():
        files, labels = [], []
        for label, name in enumerate(names):
            folder = root / name
            if folder.is_dir():
                found = sorted(e.path for e in os.scandir(folder) if e.is_file() and _is_image(e.name))
                files += found
                labels += [label] * len(found)
        columns = _folder_metadata(root, files)
        if columns:
            out[split] = hf.Dataset.from_dict({"image": files, "label": labels, **columns})
            out[split] = out[split].cast_column("image", hf.Image()).cast_column("label", features["label"])
        else:
            out[split] = hf.Dataset.from_dict({"image": files, "label": labels}, features=features)
    return hf.DatasetDict(out)


def _folder_metadata(root: Path, files: list[str]) -> dict[str, list]:
    """The columns of ``root/metadata.csv`` in the order of ``files`` (none without the file)."""
    meta = root / "metadata.csv"
    if not meta.is_file():
        return {}
    import pandas as pd

    table = pd.read_csv(meta)
    if "file_name" not in table.columns:
        raise ValueError(f"data.source: {meta} has no file_name column (each image's path relative to {root})")
    clash = [c for c in ("image", "label") if c in table.columns]
    if clash:
        raise ValueError(f"data.source: {meta}'s column {clash[0]!r} clashes with the folder's own; rename it")
    names = table["file_name"].astype(str).map(lambda n: os.path.normpath(n))
    duplicated = names[names.duplicated()]
    if len(duplicated):
        raise ValueError(
            f"data.source: {meta} has {len(duplicated)} repeated file_name rows, e.g. {duplicated.iloc[0]!r}"
        )
    rows = {name: row for row, name in enumerate(names)}
    relative = [os.path.normpath(os.path.relpath(f, root)) for f in files]
    missing = [r for r in relative if r not in rows]
    if missing:
        raise ValueError(f"data.source: {meta} has no row for {len(missing)} image(s), e.g. {missing[0]!r}")
    unused = sorted(set(rows) - set(relative))
    if unused:
        raise ValueError(f"data.source: {meta} has {len(unused)} row(s) for no image of the folder, e.g. {unused[0]!r}")
    order = [rows[r] for r in relative]
    return {c: table[c].iloc[order].tolist() for c in table.columns if c != "file_name"}


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _has_texts(path: Path) -> bool:
    return any(p.suffix.lower() in TEXT_SUFFIXES for p in path.glob("*/*") if p.is_file())


def _text_folder(path: Path):
    """Class sub-folders of text files as one ``train`` split: ``text`` and a ``ClassLabel`` ``label`` with the
    sub-folder names sorted (ids never depend on the order the file system lists them in)."""
    import datasets as hf

    names = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    texts, labels = [], []
    for label, name in enumerate(names):
        for file in sorted((path / name).iterdir()):
            if file.is_file() and file.suffix.lower() in TEXT_SUFFIXES:
                raw = file.read_bytes()
                try:
                    texts.append(raw.decode("utf-8"))
                except UnicodeDecodeError:  # older corpora: latin-1 decodes any byte
                    texts.append(raw.decode("latin-1"))
                labels.append(label)
    features = hf.Features({"text": hf.Value("string"), "label": hf.ClassLabel(names=names)})
    return hf.Dataset.from_dict({"text": texts, "label": labels}, features=features)


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _has_images(path: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file())
