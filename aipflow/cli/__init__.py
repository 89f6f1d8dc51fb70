"""The ``aipflow`` command: LightningCLI (fit/validate/test/predict) plus ``plugins``, ``recipes`` and ``env``.

Imports stay lazy: ``aipflow plugins|recipes|env`` never import Lightning, and a bad config is reported before
the heavy imports where possible.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from aipflow.cli.errors import UsageError, describe, is_input_error
from aipflow.cli.run import build, run
from aipflow.cli.summary import run_summary

__all__ = ["build", "main", "run", "run_summary"]

INFO_COMMANDS = ("plugins", "plugin", "recipes", "env")

DEBUG_ENV = "AIPFLOW_DEBUG"

_EXTRA_HELP = """\
aipflow: training recipes for sharpness-aware/Bayesian optimizers, noisy and weak labels.

  aipflow fit --config quickstart       train a recipe (name or path), then test the best checkpoint
  aipflow recipes                       list shipped recipes (core and plugins)
  aipflow plugins                       list discovered plugins and their status
  aipflow plugins --check [NAME]        import every component and parse every recipe of the plugins now
  aipflow plugin new NAME [--dir D]     write a complete plugin to start from (docs/plugins.md)
  aipflow find-issues --config RECIPE   the training labels that are probably wrong (cross-fit + cleanlab):
                                        label_issues.csv, a summary and a review page (label_issues.html)
  aipflow env                           versions and devices, for bug reports
  aipflow COMMAND ...                   a command a plugin adds (aipflow plugins lists them), e.g. compress
  add --debug (or AIPFLOW_DEBUG=1) for full tracebacks

LightningCLI's own help follows.
"""


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
        raise UsageError(f"'aipflow {command}' takes no arguments, got {rest}")
    text = {"plugins": envinfo.plugins_report, "recipes": envinfo.recipes_report, "env": envinfo.env_report}
    print(text[command]())
    return 0


def _check_plugins(names: list[str]) -> int:
    """``aipflow plugins --check [NAME ...]``: one line per problem, exit 1 when there is any."""
    from aipflow.cli.check import check_plugin
    from aipflow.plugins import get_registry

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
        raise UsageError("usage: aipflow plugin new NAME [--dir DIR]")
    folder = write_plugin(rest[1], Path(rest[3]) if len(rest) == 4 else Path.cwd())
    print(f"aipflow plugin new: wrote {folder}; next: pip install -e {folder} && pytest {folder}")
    return 0


def _plugin_command_for(name: str):
    """The plugin command ``aipflow NAME`` runs, if a plugin declares one (plugin api 1.1)."""
    if name.startswith("-") or name in ("fit", "validate", "test", "predict"):
        return None
    from aipflow.plugins import get_registry

    return get_registry().command(name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_EXTRA_HELP)
    try:
        if argv and argv[0] in INFO_COMMANDS:
            return _info_command(argv)
        if argv and argv[0] == "find-issues":
            from aipflow.cli.find_issues import find_issues_command

            return find_issues_command(argv[1:])
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
        print(f"aipflow: error: {describe(exc)}", file=sys.stderr)
        if not debug:
            print("(add --debug or set AIPFLOW_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2 if is_input_error(exc) else 1
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
