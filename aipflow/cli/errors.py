"""How the command reports an error: one line (or a few) naming the field, the value and what was expected; which
errors are the user's input (exit 2) rather than a failure (exit 1)."""

from __future__ import annotations

import argparse
import difflib
import inspect
import re

__all__ = ["UsageError", "condense_parser_error", "describe", "is_input_error"]


class UsageError(Exception):
    """A command used the wrong way (its arguments); the message is the usage line."""


def is_input_error(exc: Exception) -> bool:
    from aipflow.config import ConfigError
    from aipflow.plugins import PluginError

    return isinstance(exc, (ConfigError, PluginError, UsageError, ValueError, TypeError, argparse.ArgumentError))


def describe(exc: BaseException) -> str:
    from aipflow.config import ConfigError
    from aipflow.plugins import PluginError

    if isinstance(exc, (ConfigError, PluginError, UsageError)):
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
    except (ImportError, AttributeError):
        return []
    try:  # as the command reads them: a task's **kwargs resolved to the options it hands to its base
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, "c", fail_untyped=False)
        names = [a.dest.split(".")[1] for a in parser._actions if a.dest.startswith("c.")]
        return list(dict.fromkeys(n for n in names if n != "help"))
    except Exception:  # noqa: BLE001 - an error message must not fail on a signature jsonargparse cannot read
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
