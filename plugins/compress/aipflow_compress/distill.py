"""Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015): a student
learns from a trained teacher's softened outputs,

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * hard_loss(z_s, y)

with the ``T^2`` keeping the soft term's gradient scale independent of ``T`` (its gradient in ``z_s`` is
``T (softmax(z_s / T) - softmax(z_t / T)) / N``). ``hard_loss`` is the task's configured loss: every core loss
(CE, GCE, NCE+RCE, forward correction, ...) combines with distillation, and every core optimizer trains it.
Defaults ``T = 4``, ``alpha = 0.9``: Hinton et al. put a considerably lower weight on the hard term and used ``T``
from 2 to 20; 4 and 0.9 are the common settings since.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from aipflow.passes import in_extra_pass
from aipflow.tasks import ClassificationTask

__all__ = ["DistillationTask", "distillation_loss", "load_teacher"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0):
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, the mean over rows (computed in float32 at least)."""
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"distillation: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ (do the two networks have the same classes?)"
        )
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="sum", log_target=True) / max(student_logits.shape[0], 1)
    return temperature**2 * kl


def load_teacher(teacher: nn.Module, checkpoint: str, field: str = "model.teacher_checkpoint") -> nn.Module:
    """Load an aipflow checkpoint's network (its ``model.*`` entries) into ``teacher``; one line when they differ."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ValueError(f"{field}: no checkpoint at {checkpoint!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    network = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if not network:
        raise ValueError(f"{field}={checkpoint!r} holds no network weights (no 'model.*' entries)")
    missing, unexpected = teacher.load_state_dict(network, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{field}={checkpoint!r} does not fit model.teacher ({type(teacher).__name__}): missing "
            f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}"
        )
    return teacher


class DistillationTask(ClassificationTask):
    """A classification task whose network (the student) also learns from a frozen teacher's softened outputs.

    Args:
        model: the student network.
        teacher: the teacher network (any module with the same classes), in YAML a ``class_path`` / ``init_args``.
        teacher_checkpoint: an aipflow checkpoint whose network loads into ``teacher`` (null: ``teacher`` as
            built, e.g. a pretrained timm or fine-tuning model).
        temperature: ``T`` (4).
        alpha: the soft term's weight (0.9); ``1 - alpha`` weighs the configured ``loss`` on the labels.
        features: feature distillation (FitNets' hints, Romero et al., ICLR 2015): student module name -> teacher
            module name; each student output goes through a learned regressor (a 1x1 convolution for feature
            maps, a Linear layer for vectors) to the teacher's width, and ``feature_weight`` times the mean squared
            error to the teacher's output is added to the loss (FitNets trains the hints in a first stage; here they
            join the distillation loss, as later work does). The regressors are built from the data module's
            ``input_shape`` before the optimizer, and are saved with the student.
        feature_weight: the weight of the hint term (1).
        **kwargs: the rest of :class:`aipflow.tasks.ClassificationTask`'s options (``loss`` weighs the labels).

    The teacher stays in eval mode (no dropout, its batch-norm statistics unchanged), gets no gradient and is
    not in the optimizer. Its outputs are computed in each pass (bSAM's passes see different slices of the batch).
    """

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        teacher_checkpoint: str | None = None,
        temperature: float = 4.0,
        alpha: float = 0.9,
        features: dict[str, str] | None = None,
        feature_weight: float = 1.0,
        **kwargs,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"model.temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"model.alpha must lie in [0, 1], got {alpha}")
        if feature_weight < 0:
            raise ValueError(f"model.feature_weight must be >= 0, got {feature_weight}")
        super().__init__(model, **kwargs)
        if teacher_checkpoint is not None:
            load_teacher(teacher, teacher_checkpoint)
        self.teacher = teacher.eval().requires_grad_(False)
        self.features = dict(features or {})
        self.regressors = nn.ModuleDict()
        self._captured: dict[str, torch.Tensor] = {}
        for student_name, teacher_name in self.features.items():
            for network, name, field in ((model, student_name, "student"), (teacher, teacher_name, "teacher")):
                try:
                    module = network.get_submodule(name)
                except AttributeError:
                    raise ValueError(
                        f"model.features: the {field} has no module {name!r} (its modules: "
                        f"{[n for n, _ in network.named_modules() if n][:8]} ...)"
                    ) from None
                module.register_forward_hook(self._capture(f"{field}:{name}"))

    def _capture(self, key: str):
        def hook(module, inputs, output):
            self._captured[key] = output

        return hook

    def configure_model(self) -> None:
        """The hint regressors, sized by one forward pass of zeros shaped like the data (before the optimizer is
        built and before a checkpoint is restored)."""
        if not self.features or len(self.regressors):
            return
        shape = getattr(getattr(self._trainer, "datamodule", None), "input_shape", None)
        if shape is None:
            raise ValueError("model.features needs a data module with an input_shape (tensor inputs)")
        probe = torch.zeros(2, *shape, device=self.device)
        was_training = self.model.training
        with torch.no_grad():
            self.model.eval()(probe)
            self.teacher(probe)
        self.model.train(was_training)
        for student_name, teacher_name in self.features.items():
            s, t = self._captured[f"student:{student_name}"], self._captured[f"teacher:{teacher_name}"]
            if s.ndim != t.ndim or s.shape[2:] != t.shape[2:]:
                raise ValueError(
                    f"model.features: student {student_name} gives {tuple(s.shape[1:])}, teacher {teacher_name} "
                    f"{tuple(t.shape[1:])}: only the channel / feature width may differ"
                )
            regressor = nn.Conv2d(s.shape[1], t.shape[1], 1) if s.ndim == 4 else nn.Linear(s.shape[-1], t.shape[-1])
            self.regressors[_key(student_name)] = regressor.to(self.device)

    def hint_loss(self) -> torch.Tensor:
        """The mean over feature pairs of the squared error between the regressed student features and the
        teacher's, from the last forward passes of both."""
        terms = []
        for student_name, teacher_name in self.features.items():
            student = self._captured[f"student:{student_name}"]
            teacher = self._captured[f"teacher:{teacher_name}"].detach()
            terms.append(F.mse_loss(self.regressors[_key(student_name)](student), teacher))
        return torch.stack(terms).mean()

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # Lightning sets every submodule's mode; the teacher's must not change
        return self

    def training_loss(self, logits: torch.Tensor, y: torch.Tensor, batch) -> torch.Tensor:
        """``alpha`` times the distillation term on this batch plus ``1 - alpha`` times the configured loss."""
        x = batch["x"] if isinstance(batch, dict) else batch[0]
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        soft = distillation_loss(logits, teacher_logits, self.hparams.temperature)
        hard = super().training_loss(logits, y, batch)
        loss = self.hparams.alpha * soft + (1.0 - self.hparams.alpha) * hard
        logged = {"train/distill": soft.detach(), "train/hard": hard.detach()}
        if self.features:  # the student's forward (for logits) and the teacher's (above) captured the features
            hint = self.hint_loss()
            loss = loss + self.hparams.feature_weight * hint
            logged["train/hint"] = hint.detach()
        if self._trainer is not None and self._trainer.training and not in_extra_pass():  # (also used outside fit)
            self.log_dict(logged, on_step=False, on_epoch=True)
        return loss


def _key(name: str) -> str:
    return name.replace(".", "__")
