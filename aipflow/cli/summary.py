"""The lines ``aipflow fit`` prints after its test: metrics, which weights were tested, where things were written."""

from __future__ import annotations

__all__ = ["has_test_data", "run_summary", "tested_on"]


def has_test_data(datamodule) -> bool:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return is_overridden("test_dataloader", datamodule)


def run_summary(trainer, model, datamodule, ckpt_path: str | None, log_dir: str | None = None) -> str:
    """The lines printed at the end of ``aipflow fit``. ``log_dir``: ``trainer.log_dir``, read by the caller on
    every rank (it is a collective under DDP) before printing on rank 0."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    lines = ["", "=" * 60, "aipflow run summary"]
    for key in ("test/acc", "test/nll", "test/ece"):
        if key in metrics:
            lines.append(f"  {key:<12} {metrics[key]:.4f}")
    for key, value in sorted(metrics.items()):
        if key not in ("test/acc", "test/nll", "test/ece"):
            lines.append(f"  {key:<12} {value:.4f}")
    described = getattr(model, "probabilities_description", None)
    if described and "test/ece" in metrics:
        lines.append(f"  acc / nll / ece from: {described}")
        if "test/pp_ece" in metrics:
            samples = model.hparams.get("posterior_samples") if hasattr(model, "hparams") else None
            lines.append(f"  pp_*: the posterior predictive over {samples} samples of the optimizer's posterior")
    report = getattr(datamodule, "noise_report", None)
    if report is not None and report.kind != "none":
        lines.append(f"  training labels: {report.summary()}")
    lines.append(f"  tested on:  {tested_on(trainer, ckpt_path)}")
    ckpt = trainer.checkpoint_callback
    last = getattr(ckpt, "last_model_path", "") if ckpt else ""
    if last:
        lines.append(f"  last:       {last}  (resume with --ckpt_path)")
    if log_dir:
        lines.append(f"  logs:       {log_dir}")
    diagram = getattr(model, "reliability_diagram_path", None)
    if diagram:
        lines.append(f"  reliability diagram: {diagram}")
    lines.append("=" * 60)
    return "\n".join(lines)


def tested_on(trainer, ckpt_path: str | None) -> str:
    """Which weights the test after fit used, truthfully: a monitored best, or the last epoch's checkpoint when the
    checkpoint callback monitors nothing (its "best" is then the latest), or the weights in memory."""
    ckpt = trainer.checkpoint_callback
    if ckpt_path != "best" or ckpt is None:
        return "the final weights in memory"
    path = ckpt.best_model_path
    if ckpt.monitor:
        score = ckpt.best_model_score
        value = f" = {float(score):.4f}" if score is not None else ""
        return f"best checkpoint by {ckpt.monitor}{value}: {path}"
    return f"last epoch's checkpoint (the recipe monitors no metric): {path}"
