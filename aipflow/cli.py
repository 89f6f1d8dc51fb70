"""The ``aipflow`` command: LightningCLI (fit/validate/test/predict) plus ``plugins``, ``recipes`` and ``env``.

Imports stay lazy: ``aipflow plugins|recipes|env`` never import Lightning, and a bad config is reported before
the heavy imports where possible.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys
import traceback
from pathlib import Path

INFO_COMMANDS = ("plugins", "plugin", "recipes", "env")
__all__ = ["build", "main", "run", "run_summary"]

DEBUG_ENV = "AIPFLOW_DEBUG"

_EXTRA_HELP = """\
aipflow: training recipes for sharpness-aware/Bayesian optimizers, noisy and weak labels.

  aipflow fit --config quickstart       train a recipe (name or path), then test the best checkpoint
  aipflow recipes                       list shipped recipes (core and plugins)
  aipflow plugins                       list discovered plugins and their status
  aipflow plugins --check [NAME]        import every component and parse every recipe of the plugins now
  aipflow plugin new NAME [--dir D]     write a complete plugin to start from (docs/plugins.md)
  aipflow env                           versions and devices, for bug reports
  aipflow COMMAND ...                   a command a plugin adds (aipflow plugins lists them), e.g. compress
  add --debug (or AIPFLOW_DEBUG=1) for full tracebacks

LightningCLI's own help follows.
"""


def _build_cli_class():
    from aipflow._lightning_cli import AipflowCLI

    return AipflowCLI


def _has_test_data(datamodule) -> bool:
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


def _info_command(argv: list[str]) -> int:
    from aipflow import envinfo

    command, rest = argv[0], argv[1:]
    if rest and rest[0] in ("-h", "--help"):
        print(f"usage: aipflow {command}\n\n{_EXTRA_HELP}")
        return 0
    if command == "plugin":
        return _plugin_command(rest)
    if command == "plugins" and rest and rest[0] == "--check":
        return _check_plugins(rest[1:])
    if rest:
        raise _UsageError(f"'aipflow {command}' takes no arguments, got {rest}")
    text = {"plugins": envinfo.plugins_report, "recipes": envinfo.recipes_report, "env": envinfo.env_report}
    print(text[command]())
    return 0


def _check_plugins(names: list[str]) -> int:
    """``aipflow plugins --check [NAME ...]``: one line per problem, exit 1 when there is any."""
    from aipflow.plugins import get_registry
    from aipflow.testing import check_plugin

    registry = get_registry()
    names = names or [record.name for record in registry.records]
    if not names:
        print("no plugins installed")
        return 0
    problems = [line for name in names for line in check_plugin(name)]
    for line in problems:
        print(f"aipflow plugins --check: {line}")
    if not problems:
        print(f"aipflow plugins --check: {', '.join(names)}: ok")
    return 1 if problems else 0


def _plugin_command(rest: list[str]) -> int:
    """``aipflow plugin new NAME [--dir D]``."""
    from aipflow._template import write_plugin

    if len(rest) not in (2, 4) or rest[0] != "new" or (len(rest) == 4 and rest[2] != "--dir"):
        raise _UsageError("usage: aipflow plugin new NAME [--dir DIR]")
    folder = write_plugin(rest[1], Path(rest[3]) if len(rest) == 4 else Path.cwd())
    print(f"aipflow plugin new: wrote {folder}; next: pip install -e {folder} && pytest {folder}")
    return 0


class _UsageError(Exception):
    pass


def _plugin_command_for(name: str):
    """The plugin command ``aipflow NAME`` runs, if a plugin declares one (plugin api 1.1)."""
    if name.startswith("-") or name in ("fit", "validate", "test", "predict"):
        return None
    from aipflow.plugins import get_registry

    return get_registry().command(name)


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_EXTRA_HELP)
    try:
        if argv and argv[0] in INFO_COMMANDS:
            return _info_command(argv)
        command = _plugin_command_for(argv[0]) if argv else None
        if command is not None:
            return int(command.load()(argv[1:]) or 0)
        run(argv)
        return 0
    except SystemExit as exc:  # argparse/jsonargparse already printed their message
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("aipflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"aipflow: error: {_describe(exc)}", file=sys.stderr)
        if not debug:
            print("(add --debug or set AIPFLOW_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2 if _is_input_error(exc) else 1
    finally:
        _release_process_group()


def _release_process_group() -> None:
    """Lightning leaves the process group of a multi-process run open; left to interpreter exit, its communication
    threads were sometimes destroyed while running ("terminate called without an active exception", SIGABRT,
    exit -6 after a successful run under torchrun). Destroyed here, once the run is over."""
    if "torch" not in sys.modules:  # info commands never import torch
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _is_input_error(exc: Exception) -> bool:
    from aipflow.config import ConfigError
    from aipflow.plugins import PluginError

    return isinstance(exc, (ConfigError, PluginError, _UsageError, ValueError, TypeError, argparse.ArgumentError))


def _describe(exc: BaseException) -> str:
    from aipflow.config import ConfigError
    from aipflow.plugins import PluginError

    if isinstance(exc, (ConfigError, PluginError, _UsageError)):
        return str(exc)
    if getattr(exc, "aipflow_message", None):  # set by a callback that knows what the error means for the run
        return exc.aipflow_message
    if isinstance(exc, argparse.ArgumentError):
        return condense_parser_error(str(exc))
    # jsonargparse wraps errors raised in a component's __init__; the innermost one says what is wrong
    inner = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    message = str(inner)
    if message.startswith("Caught ") and "Original Traceback" in message:
        # a DataLoader worker's error comes back as its whole traceback; its last line is the error itself
        last = [line for line in message.splitlines() if line.strip()][-1]
        return last if ": " in last else f"{type(inner).__name__}: {last}"
    return f"{type(inner).__name__}: {message}"


_KEY_LINES = re.compile(
    r"unrecognized arguments|does not accept|not accepted|Expected a|Given value:|Problem with|Parser key|"
    r"required|Import path|Not a valid|must be|invalid choice|Does not validate"
)


#: the keys a LightningCLI subcommand takes at the top level of a config
_TOP_LEVEL_KEYS = (
    "seed_everything",
    "trainer",
    "model",
    "data",
    "optimizer",
    "lr_scheduler",
    "ckpt_path",
    "test_after_fit",
    "config",
    "print_config",
)


def condense_parser_error(message: str) -> str:
    """jsonargparse explains a nested error over dozens of lines; keep the ones that name the field, the value
    and what was expected, and suggest the closest valid key for a misspelt one (a ``trainer.*`` option, a
    top-level key, or a key of a component's ``init_args``)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    keep = lines[:1] + [
        ln
        for ln in lines[1:]
        if _KEY_LINES.search(ln) and not ln.startswith("Given value: {") and "Expected a <class 'NoneType'>" not in ln
    ]
    seen: list[str] = []
    for line in keep:
        if line not in seen:
            seen.append(line)
    text = "\n  ".join(seen[:8])
    unknown = _unknown_component_key(message)
    if unknown:
        return unknown  # one line says it all
    hint = _did_you_mean(message)
    return f"{text}\n  {hint}" if hint else text


_NESTING = re.compile(r'Parser key "([\w.]+)"|class_path \'([\w.]+)\'|Option \'([\w.]+)\' is not accepted')


def _unknown_component_key(message: str) -> str | None:
    """``model.init_args.model.init_args.widht: SmallCNN takes no option 'widht'; did you mean ...width?``

    jsonargparse nests one 'Parser key "k"' / 'class_path 'C'' pair per component level above the unknown option:
    walking them in order gives the field's full path and the class that refused it."""
    parts: list[str] = []
    class_path = None
    for match in _NESTING.finditer(message):
        key, cls, option = match.groups()
        if key:
            parts.append(key)
        elif cls:
            parts.append("init_args")
            class_path = cls
        elif class_path:
            name = option.split(".")[0]
            prefix = ".".join(parts)
            valid = _init_parameters(class_path)
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
            short = class_path.rsplit(".", 1)[-1]
            hint = f"; did you mean {', '.join(f'{prefix}.{c}' for c in close)}?" if close else ""
            valid_text = f" (it takes: {', '.join(valid)})" if valid and not close else ""
            return f"{prefix}.{name}: {short} takes no option {name!r}{hint}{valid_text}"
    return None


def _did_you_mean(message: str) -> str | None:
    unknown_option = "unrecognized" in message or "accept" in message
    trainer_keys = re.findall(r"trainer\.([A-Za-z_]+)", message)
    if trainer_keys and unknown_option:
        from lightning.pytorch import Trainer

        valid = list(inspect.signature(Trainer.__init__).parameters)
        close = difflib.get_close_matches(trainer_keys[0], valid, n=3)
        if close and trainer_keys[0] not in valid:
            return f"did you mean {', '.join('trainer.' + c for c in close)}?"
    top = re.search(r"does not accept option '([A-Za-z_]+)", message)
    if top and top.group(1) not in _TOP_LEVEL_KEYS:
        close = difflib.get_close_matches(top.group(1), _TOP_LEVEL_KEYS, n=3, cutoff=0.6)
        if close:
            return f"did you mean {', '.join(close)}?"
    return None


def _init_parameters(class_path: str) -> list[str]:
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


if __name__ == "__main__":
    sys.exit(main())
