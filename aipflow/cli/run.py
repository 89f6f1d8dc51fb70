"""Running LightningCLI for the command: recipe names and short names resolved, the checkpoint checked before
LightningCLI opens it, strict parsing. Lightning is imported only when a run is built."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["build", "run"]


def _build_cli_class():
    from aipflow.cli.lightning_cli import AipflowCLI

    return AipflowCLI


def build(argv: list[str]):
    """Parse ``argv`` (a config and overrides, no subcommand) and build the model, data module and trainer without
    running anything: for tools that work on a trained run (exports, reports). Returns the CLI object."""
    return run(argv, subcommand=False)


def run(argv: list[str], subcommand: bool = True):
    """Parse ``argv`` (recipe names and short names resolved) and run LightningCLI; returns the CLI object
    (``.trainer``, ``.model``, ``.datamodule``); raises on errors. ``subcommand=False``: :func:`build`."""
    from aipflow.config import rewrite_argv

    for ckpt_path in _option_values(argv, "--ckpt_path"):
        # LightningCLI opens the file while parsing (for its hyperparameters): check it first, one clear line
        from aipflow.lightning.checkpoint import check_checkpoint_file

        check_checkpoint_file(ckpt_path)
    configs = _option_values(argv, "--config") + _option_values(argv, "-c")
    command_line = list(argv)
    argv = rewrite_argv(argv)
    saved_argv = sys.argv
    # LightningCLI reads sys.argv (args= beside a real command line warns). argv[0] stays the real program: DDP's
    # subprocess launcher re-runs `python <argv[0]> <argv[1:]>` for the other ranks ("aipflow" alone is no file)
    sys.argv = [saved_argv[0] if saved_argv else "aipflow", *argv]
    try:
        cli_class = _build_cli_class()
        cli_class.recipe = Path(configs[0]).stem if configs and "\n" not in configs[0] else None
        cli_class.command_line = command_line
        return cli_class(
            model_class=None,
            datamodule_class=None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=_parser_kwargs(),
            run=subcommand,
        )
    finally:
        sys.argv = saved_argv


def _option_values(argv: list[str], option: str) -> list[str]:
    """The values given to ``option`` on the command line (``--opt=v`` or ``--opt v``)."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(option + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == option and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def _parser_kwargs() -> dict:
    # errors come back as exceptions so that main() prints one short message; no prefix-matching of options,
    # so a typo like --trainer.max_epoch is an error rather than silently --trainer.max_epochs
    strict = {"exit_on_error": False, "allow_abbrev": False}
    return {**strict, **{sub: dict(strict) for sub in ("fit", "validate", "test", "predict")}}
