"""Images for the data modules: decoded one at a time from the Arrow rows (in the loader's workers; no split is ever
held as a tensor), converted to one channel mode, and transformed with timm's transforms for the chosen model:
its input size, interpolation, crop and normalisation (a pretrained model needs the statistics it was trained
with), or, with no model named, the image's own size and the training split's per-channel statistics."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from aipflow.models import check_timm_name

__all__ = [
    "IMAGE_MODES",
    "LEGACY_IMAGE_OPTIONS",
    "ImageInputs",
    "ImageOptions",
    "ImageSettings",
    "channel_statistics",
    "decode_image",
    "image_settings",
    "image_transform",
    "undecoded",
    "unreadable_rows",
]

#: channel modes a data module converts every image to: three channels or one (greyscale)
IMAGE_MODES = ("RGB", "L")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")
#: training images decoded to choose the mode and estimate the normalisation when no pretrained model fixes them
STATISTICS_SAMPLE = 256


#: the flat options of before :class:`ImageOptions` (``image_size=64``) and the fields they mean (still read)
LEGACY_IMAGE_OPTIONS = {
    "image_column": "column",
    "image_model": "model",
    "image_size": "size",
    "image_mode": "mode",
    "augment": "augment",
    "crop_scale": "crop_scale",
    "hflip": "hflip",
}


@dataclass(frozen=True)
class ImageOptions:
    """What a data module's image input is and how it is prepared, as one settings object (``data.images``).

    Args:
        column: the image column (an image folder's ``image``, a dataset's Image column, or file paths, relative
            to the table's folder).
        model: a timm name: its pretrained input size, interpolation, crop and normalisation (a pretrained model
            needs the statistics it was trained with); null: the first image's size and the training split's
            per-channel statistics.
        size: the side trained at (overrides the model's or the images').
        mode: ``"RGB"`` or ``"L"`` (greyscale); null: detected from the training images.
        augment: timm's random resized crop (``crop_scale``), flips (``hflip``) and colour jitter on the training
            split.
        crop_scale: the random resized crop's area range, ``0 < low <= high <= 1``.
        hflip: the probability of a horizontal flip (0 for digits and text in images: they are not symmetric).
        unreadable: what setup does with an image that does not decode (every image is decoded once before
            training, with a progress bar on a terminal): ``"error"`` stops with one line naming the split, the row
            and the file; ``"skip"`` leaves those rows out and says how many and which files (the row ids of the
            rest stay the source's own).

    In YAML ``data.init_args.images: {column: image, model: resnet18, size: 64}``; the earlier flat options
    (``image_column``, ``image_model``, ``image_size``, ``image_mode``, ``augment``, ``crop_scale``, ``hflip``) are
    still read by the command and mean the same fields (without ``image_column`` they had no effect and still
    have none). :class:`ImageSettings` is what these options resolve to once the training images are seen.
    """

    column: str = "image"
    model: str | None = None
    size: int | None = None
    mode: Literal["RGB", "L"] | None = None
    augment: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    unreadable: Literal["error", "skip"] = "error"

    def __post_init__(self) -> None:
        for name in ("model", "size", "mode"):  # jsonargparse 4.53 hands a nested `=null` on as a string
            if getattr(self, name) in ("None", "null"):
                object.__setattr__(self, name, None)
        object.__setattr__(self, "crop_scale", tuple(self.crop_scale))
        if not self.column:
            raise ValueError("data.images.column must name the image column, got an empty name")
        if self.size is not None and self.size < 1:
            raise ValueError(f"data.images.size must be >= 1, got {self.size}")
        if self.mode is not None and self.mode not in IMAGE_MODES:
            raise ValueError(f"data.images.mode must be one of {IMAGE_MODES} or null (detected), got {self.mode!r}")
        low, high = self.crop_scale if len(self.crop_scale) == 2 else (None, None)
        if low is None or not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"data.images.crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale}"
            )
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"data.images.hflip is a probability in [0, 1], got {self.hflip}")
        if self.unreadable not in ("error", "skip"):
            raise ValueError(f"data.images.unreadable must be 'error' or 'skip', got {self.unreadable!r}")

    @classmethod
    def of(cls, value: ImageOptions | dict | None, legacy: dict | None = None) -> ImageOptions | None:
        """``value`` as options (a dict from saved hyper-parameters or Python callers; ``None``: no image input),
        with the earlier flat options in ``legacy`` (``{"image_size": 64}``) read as fields. Without an
        ``image_column`` the flat options had no effect (the input was not images) and still have none."""
        options = value if value is None or isinstance(value, cls) else cls(**value)
        legacy = {k: v for k, v in (legacy or {}).items() if k in LEGACY_IMAGE_OPTIONS}
        if options is None and legacy.get("image_column") is None:
            return None
        fields = {} if options is None else options.as_dict()
        fields.update({LEGACY_IMAGE_OPTIONS[k]: v for k, v in legacy.items() if v is not None or k != "image_column"})
        return cls(**fields)

    def as_dict(self) -> dict:
        """Plain types, for saved hyper-parameters (a checkpoint then loads with ``weights_only=True``)."""
        return {
            "column": self.column,
            "model": self.model,
            "size": self.size,
            "mode": self.mode,
            "augment": self.augment,
            "crop_scale": list(self.crop_scale),
            "hflip": self.hflip,
            "unreadable": self.unreadable,
        }

    def settings(self, sample: list) -> ImageSettings:
        """What these options resolve to for ``sample`` (decoded training images): see :func:`image_settings`."""
        return image_settings(sample, self.mode, self.model, self.size)

    def transform(self, settings: ImageSettings, training: bool) -> Callable:
        """The transform of a split: augmented for training when ``augment``, else the evaluation one."""
        return image_transform(settings, training, self.augment, self.crop_scale, self.hflip)


@dataclass(frozen=True)
class ImageSettings:
    """What turns a decoded image into the model's input, resolved from :class:`ImageOptions` and the training
    images: ``input_size`` is ``(channels, height, width)``."""

    mode: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def describe(self) -> str:
        c, h, w = self.input_size
        mean = ", ".join(f"{m:.3f}" for m in self.mean)
        std = ", ".join(f"{s:.3f}" for s in self.std)
        return f"{self.mode} {h}x{w}, mean ({mean}), std ({std}), {self.interpolation}, crop {self.crop_pct:g}"


def decode_image(item: dict | Any, mode: str | None, where: str, base: Path | None = None):
    """A PIL image in ``mode`` from a ``datasets`` image cell (``{"bytes", "path"}`` undecoded, or a PIL image) or a
    file path (relative ones from ``base``: a table's own folder); a file that does not decode is one line naming
    ``where`` (the row) and the file."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return item if mode is None else item.convert(mode)
    if isinstance(item, str):
        item = {"bytes": None, "path": item}
    path = item.get("path") if isinstance(item, dict) else None
    if path and base is not None and not Path(path).is_absolute():
        path = str(base / path)
    try:
        data = item.get("bytes") if isinstance(item, dict) else None
        image = Image.open(io.BytesIO(data) if data else path)
        image.load()  # decode now: a truncated file fails here, with the row named, not later in a transform
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds; each means "not an image"
        raise ValueError(f"{where} ({path or 'embedded bytes'}) does not decode as an image: {err}") from err
    return image if mode is None else image.convert(mode)


def image_settings(sample: list, mode: str | None, model: str | None, size: int | None) -> ImageSettings:
    """The input of ``model`` (a timm name: its pretrained config's size, interpolation, crop and normalisation,
    averaged over the channels for greyscale) or, with no model, of the images themselves: the first image's size
    and the per-channel statistics of ``sample`` (decoded training images). ``size`` overrides the side; ``mode``
    is detected from the sample when None (greyscale when every sampled image is)."""
    if mode is None:
        mode = "L" if {image.mode for image in sample} <= set(_GREY_MODES) else "RGB"
    if mode not in IMAGE_MODES:
        raise ValueError(f"data.images.mode must be one of {IMAGE_MODES} or null (detected), got {mode!r}")
    channels = 3 if mode == "RGB" else 1
    if model is not None:
        cfg = _pretrained_config(model)
        _, height, width = cfg["input_size"]
        if size is not None:
            height = width = size
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        if channels == 1:  # a greyscale image is the same value in every channel of the model's statistics
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        elif len(mean) == 1:
            mean, std = mean * 3, std * 3
        return ImageSettings(mode, (channels, height, width), mean, std, cfg["interpolation"], cfg["crop_pct"])
    height, width = (size, size) if size is not None else (sample[0].height, sample[0].width)
    unscaled = ImageSettings(mode, (channels, height, width), (0.0,) * channels, (1.0,) * channels)
    mean, std = channel_statistics([image.convert(mode) for image in sample], unscaled)
    return ImageSettings(mode, (channels, height, width), mean, std)


def _pretrained_config(model: str) -> dict:
    import timm
    from timm.data import resolve_data_config

    cfg = timm.models.get_pretrained_cfg(model)
    if cfg is None:
        check_timm_name(model, "data.images.model")
        raise ValueError(f"data.images.model: timm model {model!r} has no pretrained configuration to take sizes from")
    return resolve_data_config(pretrained_cfg=cfg.to_dict())


def image_transform(
    settings: ImageSettings,
    training: bool,
    augment: bool,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
) -> Callable:
    """timm's training transform (random resized crop with ``crop_scale``, flips with ``hflip``, colour jitter)
    when ``training and augment``, else its evaluation transform (resize, centre crop by ``crop_pct``)."""
    from timm.data import create_transform

    common = dict(
        input_size=settings.input_size,
        interpolation=settings.interpolation,
        mean=settings.mean,
        std=settings.std,
    )
    if training and augment:
        return create_transform(is_training=True, scale=tuple(crop_scale), hflip=hflip, **common)
    return create_transform(is_training=False, crop_pct=settings.crop_pct, **common)


def channel_statistics(images, settings: ImageSettings) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``images`` (PIL) resized to the input size, on [0, 1]."""
    from torchvision.transforms.functional import pil_to_tensor, resize

    _, height, width = settings.input_size
    total = torch.zeros(settings.input_size[0], dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for image in images:
        x = pil_to_tensor(resize(image, [height, width], antialias=True)).double() / 255.0
        total += x.sum((1, 2))
        squares += (x * x).sum((1, 2))
        count += height * width
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


class ImageInputs:
    """``{"x": image tensor}`` for row ``i`` of an Arrow table's image column, decoded on demand."""

    def __init__(
        self, table, column: str, split: str, mode: str, transform: Callable, base: Path | None = None
    ) -> None:
        self.table = undecoded(table, column)
        self.column, self.split, self.mode, self.transform, self.base = column, split, mode, transform, base

    def __len__(self) -> int:
        return len(self.table)

    def __call__(self, i: int) -> dict[str, torch.Tensor]:
        cell = self.table[i][self.column]
        where = f"data.images.column={self.column!r}: row {i} of the {self.split} split"
        image = decode_image(cell, self.mode, where, self.base)
        return {"x": self.transform(image)}


def unreadable_rows(table, column: str, split: str, base: Path | None, progress: bool) -> list[tuple[int, str]]:
    """Every image of ``table``'s ``column`` decoded once: ``(row, "file: error")`` for each that does not."""
    from tqdm.auto import tqdm

    cells = undecoded(table, column)
    bad = []
    for row in tqdm(range(len(cells)), desc=f"checking {split} images", leave=False, disable=not progress):
        try:
            decode_image(cells[row][column], None, f"the {split} split's row {row}", base)
        except ValueError as err:
            bad.append((row, str(err)))
    return bad


def undecoded(table, column: str):
    """``table``'s ``column`` alone, as undecoded cells (``{"bytes", "path"}``) or path strings: the data module
    decodes, so that a broken file names its row and path."""
    from datasets import Image

    table = table.select_columns([column])
    if isinstance(table.features[column], Image):
        return table.cast_column(column, Image(decode=False))
    return table
