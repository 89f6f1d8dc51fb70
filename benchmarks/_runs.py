"""Options every benchmark's ``aipflow fit`` shares: the seeds, and a quiet run that writes nothing it keeps."""

from __future__ import annotations

from pathlib import Path


def seed_options(seed: int) -> list[str]:
    """One seed for the initialisation, the label-noise draw and the data order."""
    return [
        f"--seed_everything={seed}",
        f"--data.init_args.label_noise.seed={seed}",
        f"--data.init_args.shuffle_seed={seed}",
    ]


def quiet_fit_options(root: str | Path) -> list[str]:
    """No checkpoints, progress bar, model summary or logger; Lightning's files under ``root``; no test after fit
    (the benchmark tests the final weights itself)."""
    return [
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
        "--test_after_fit=false",
    ]
