"""Label-noise generators: each returns the noisy labels with the clean ones kept, the realised noise rate and
the realised (empirical) transition matrix ``T[i, j] = P(noisy = j | clean = i)``.

Conventions for symmetric noise (papers differ, so it is a flag, never implicit):

- ``"exact"``: exactly ``round(rate * n)`` samples, chosen uniformly, get a label drawn uniformly from the
  *other* K-1 classes, so the realised noise rate equals ``rate`` (up to rounding). Expected
  ``T = (1 - rate) I + rate / (K - 1) (1 - I)`` (Patrini et al. 2017; Han et al. 2018).
- ``"uniform"``: each sample, with probability ``rate``, is resampled uniformly over *all* K classes, so a
  resampled label can stay correct and the realised noise rate is about ``rate * (K - 1) / K``
  (the convention of e.g. Zhang & Sabuncu 2018's code and of "noise level" in several CIFAR papers).

Pair-flip noise (Han et al. 2018) moves exactly ``round(rate * n)`` samples of class ``i`` to ``(i + 1) mod K``.

Class-map (asymmetric) noise moves exactly ``round(rate * n_c)`` samples of each mapped class c to ``map[c]``
(for digits, in the spirit of the MNIST convention of Patrini et al. 2017: 2->7, 3->8, 5<->6, 7->1).

Instance-dependent noise (Xia et al., NeurIPS 2020, "Part-dependent label noise", their generation algorithm):
per-sample flip rates ``q_i ~ N(rate, 0.1^2)`` truncated to [0, 1], class projections ``W_c ~ N(0, 1)`` of
shape (d, K); ``p = softmax(x_i W_{y_i})`` with the true class masked out, scaled by ``q_i``, and
``p_{y_i} = 1 - q_i``; the noisy label is drawn from p. Needs the features x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

SYMMETRIC_CONVENTIONS = ("exact", "uniform")
NOISE_KINDS = ("symmetric", "pair", "classmap", "instance")
DIGITS_CLASS_MAP = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


@dataclass
class NoisyLabels:
    noisy: torch.Tensor
    clean: torch.Tensor
    kind: str
    rate: float  # the requested rate
    realised_rate: float  # fraction of samples whose label changed
    transition_matrix: torch.Tensor  # realised, rows sum to 1 for classes present

    def summary(self) -> str:
        if self.kind == "none":
            return "clean (no label noise)"
        if self.kind == "column":
            return f"a noisy label column, realised rate {self.realised_rate:.4f} against the clean labels"
        return f"{self.kind} noise: requested {self.rate:.3f}, realised {self.realised_rate:.4f}"


def _check(labels: torch.Tensor, num_classes: int, rate: float, max_rate: float = 1.0) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} dtype {labels.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], got range [{int(labels.min())}, {int(labels.max())}]"
        )
    if not (0.0 <= rate < max_rate):
        raise ValueError(f"noise rate must lie in [0, {max_rate:g}), got {rate}")
    return labels.long()


@dataclass(frozen=True)
class LabelNoise:
    """Synthetic noise on a data module's training labels (validation and test keep the clean ones), as one
    settings object that every data module takes as ``label_noise``.

    Args:
        kind: ``None`` (no noise), ``"symmetric"``, ``"pair"``, ``"classmap"`` or ``"instance"`` (see the module).
        rate: fraction of training labels to corrupt, in [0, 1).
        convention: for symmetric noise, ``"exact"`` (exactly that fraction wrong) or ``"uniform"`` (that fraction
            resampled over all K classes).
        seed: seed of the noise draw.
        class_map: for ``classmap`` noise, ``{source: target}`` (digits: 2->7, 3->8, 5<->6, 7->1 when omitted).

    In YAML ``data.init_args.label_noise: {kind: symmetric, rate: 0.4}``; the earlier flat options
    (``noise``, ``noise_rate``, ``noise_convention``, ``noise_seed``, ``noise_class_map``) are still read by the
    command and mean the same fields.
    """

    kind: str | None = None
    rate: float = 0.0
    convention: Literal["exact", "uniform"] = "exact"
    seed: int = 0
    class_map: dict[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind in ("None", "null"):  # jsonargparse 4.53 hands `--data.label_noise.kind=null` on as a string
            object.__setattr__(self, "kind", None)
        if self.kind is not None and self.kind not in NOISE_KINDS:
            raise ValueError(f"data.label_noise.kind must be one of {NOISE_KINDS} or null, got {self.kind!r}")
        if self.convention not in SYMMETRIC_CONVENTIONS:
            raise ValueError(
                f"data.label_noise.convention must be one of {SYMMETRIC_CONVENTIONS}, got {self.convention!r}"
            )
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"data.label_noise.rate must lie in [0, 1), got {self.rate}")
        if self.kind == "pair" and self.rate >= 0.5:  # past 0.5 the flipped class outnumbers the true one
            raise ValueError(f"data.label_noise.rate must lie in [0, 0.5) for pair noise, got {self.rate}")

    @classmethod
    def of(cls, value: LabelNoise | dict | None, legacy: dict | None = None, owner: str = "") -> LabelNoise:
        """``value`` as settings: a dict (saved hyper-parameters, Python callers) or ``None`` (no noise) too.
        ``legacy``: a data module's other keyword arguments, where the earlier flat options (``noise_rate=0.4``)
        are read as fields; any other name is refused as Python would (``owner`` names the class)."""
        settings = cls() if value is None else value if isinstance(value, cls) else cls(**value)
        legacy = dict(legacy or {})
        unknown = sorted(set(legacy) - set(LEGACY_NOISE_OPTIONS))
        if unknown:
            raise TypeError(f"{owner or cls.__name__}.__init__() got an unexpected keyword argument {unknown[0]!r}")
        if not legacy:
            return settings
        fields = {**settings.as_dict(), **{LEGACY_NOISE_OPTIONS[k]: v for k, v in legacy.items()}}
        return cls(**fields)

    @property
    def active(self) -> bool:
        return self.kind is not None

    def apply(self, labels: torch.Tensor, num_classes: int, features: torch.Tensor | None = None) -> NoisyLabels:
        """The noisy labels of ``labels`` (with their realised rate and transition matrix)."""
        return apply_label_noise(
            labels, num_classes, self.kind, self.rate, self.convention, self.seed, features, self.class_map
        )

    def as_dict(self) -> dict:
        """Plain types, for saved hyper-parameters (a checkpoint then loads with ``weights_only=True``)."""
        return {
            "kind": self.kind,
            "rate": self.rate,
            "convention": self.convention,
            "seed": self.seed,
            "class_map": None if self.class_map is None else dict(self.class_map),
        }


def empirical_transition_matrix(clean: torch.Tensor, noisy: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((clean, noisy), torch.ones_like(clean, dtype=torch.float64), accumulate=True)
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def _result(clean, noisy, num_classes, kind, rate) -> NoisyLabels:
    realised = float((noisy != clean).double().mean()) if clean.numel() else 0.0
    return NoisyLabels(noisy, clean, kind, rate, realised, empirical_transition_matrix(clean, noisy, num_classes))


def symmetric_noise(
    labels: torch.Tensor,
    num_classes: int,
    rate: float,
    convention: str = "exact",
    generator: torch.Generator | None = None,
) -> NoisyLabels:
    """Symmetric (uniform) label noise; see the module docstring for the two conventions."""
    clean = _check(labels, num_classes, rate)
    if convention not in SYMMETRIC_CONVENTIONS:
        raise ValueError(f"convention must be one of {SYMMETRIC_CONVENTIONS}, got {convention!r}")
    n = clean.numel()
    noisy = clean.clone()
    if convention == "exact":
        idx = torch.randperm(n, generator=generator)[: round(rate * n)]
        # an offset in 1..K-1 added mod K is uniform over the other K-1 classes
        offset = torch.randint(1, num_classes, (idx.numel(),), generator=generator)
        noisy[idx] = (clean[idx] + offset) % num_classes
    else:
        resample = torch.rand(n, generator=generator) < rate
        noisy[resample] = torch.randint(0, num_classes, (int(resample.sum()),), generator=generator)
    return _result(clean, noisy, num_classes, f"symmetric/{convention}", rate)


def pair_flip_noise(
    labels: torch.Tensor, num_classes: int, rate: float, generator: torch.Generator | None = None
) -> NoisyLabels:
    """Pair-flip noise: exactly ``round(rate * n)`` samples move from class i to (i + 1) mod K (rate < 0.5)."""
    clean = _check(labels, num_classes, rate, max_rate=0.5)
    n = clean.numel()
    noisy = clean.clone()
    idx = torch.randperm(n, generator=generator)[: round(rate * n)]
    noisy[idx] = (clean[idx] + 1) % num_classes
    return _result(clean, noisy, num_classes, "pair", rate)


def class_map_noise(
    labels: torch.Tensor,
    num_classes: int,
    rate: float,
    class_map: dict[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> NoisyLabels:
    """Asymmetric noise: exactly ``round(rate * n_c)`` samples of each mapped class c become ``class_map[c]``."""
    clean = _check(labels, num_classes, rate)
    class_map = DIGITS_CLASS_MAP if class_map is None else {int(k): int(v) for k, v in class_map.items()}
    for src, dst in class_map.items():
        if not (0 <= src < num_classes and 0 <= dst < num_classes) or src == dst:
            raise ValueError(
                f"class_map entries must map a class in [0, {num_classes - 1}] to another, got {src}->{dst}"
            )
    noisy = clean.clone()
    for src, dst in class_map.items():
        members = torch.nonzero(clean == src).squeeze(1)
        chosen = members[torch.randperm(members.numel(), generator=generator)[: round(rate * members.numel())]]
        noisy[chosen] = dst
    return _result(clean, noisy, num_classes, "classmap", rate)


def instance_dependent_noise(
    labels: torch.Tensor,
    features: torch.Tensor,
    num_classes: int,
    rate: float,
    generator: torch.Generator | None = None,
) -> NoisyLabels:
    """Instance-dependent noise (Xia et al. 2020); see the module docstring."""
    clean = _check(labels, num_classes, rate)
    x = torch.as_tensor(features, dtype=torch.float64).reshape(clean.numel(), -1)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n, d = x.shape
    # truncated normal by rejection: redraw the out-of-range ones
    q = rate + 0.1 * torch.randn(n, generator=generator, dtype=torch.float64)
    while ((q < 0) | (q > 1)).any():
        bad = (q < 0) | (q > 1)
        q[bad] = rate + 0.1 * torch.randn(int(bad.sum()), generator=generator, dtype=torch.float64)
    w = torch.randn(num_classes, d, num_classes, generator=generator, dtype=torch.float64)
    logits = torch.einsum("nd,ndk->nk", x, w[clean])
    logits[torch.arange(n), clean] = float("-inf")
    probs = q[:, None] * logits.softmax(1)
    probs[torch.arange(n), clean] = 1 - q
    noisy = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return _result(clean, noisy, num_classes, "instance", rate)


def apply_label_noise(
    labels: torch.Tensor,
    num_classes: int,
    kind: str | None,
    rate: float,
    convention: str = "exact",
    seed: int = 0,
    features: torch.Tensor | None = None,
    class_map: dict[int, int] | None = None,
) -> NoisyLabels:
    """Dispatch by name; ``kind=None`` or ``rate=0`` returns the labels unchanged (with the same report)."""
    generator = torch.Generator().manual_seed(seed)
    if kind is None or rate == 0.0:
        clean = _check(labels, num_classes, rate)
        return _result(clean, clean.clone(), num_classes, "none", 0.0)
    if kind == "symmetric":
        return symmetric_noise(labels, num_classes, rate, convention, generator)
    if kind == "pair":
        return pair_flip_noise(labels, num_classes, rate, generator)
    if kind == "classmap":
        return class_map_noise(labels, num_classes, rate, class_map, generator)
    if kind == "instance":
        if features is None:
            raise ValueError("instance-dependent noise needs the features of the samples")
        return instance_dependent_noise(labels, features, num_classes, rate, generator)
    raise ValueError(f"noise kind must be one of {NOISE_KINDS} or None, got {kind!r}")


#: the flat label-noise options data modules took before :class:`LabelNoise`, and the field each is (still read
#: from Python keyword arguments, configs and the command line)
LEGACY_NOISE_OPTIONS = {
    "noise": "kind",
    "noise_rate": "rate",
    "noise_convention": "convention",
    "noise_seed": "seed",
    "noise_class_map": "class_map",
}

#: the default of every data module's ``label_noise``: clean labels
NO_LABEL_NOISE = LabelNoise()
