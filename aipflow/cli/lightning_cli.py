"""The ``aipflow`` command's LightningCLI subclass. A module-level class in a module of its own: ``ddp_spawn`` pickles
the trainer's run and everything it reaches (a class defined inside a function cannot be pickled), and
``aipflow plugins | recipes | env`` never import this module, so they never import Lightning."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningCLI

from aipflow.cli.summary import has_test_data, run_summary

__all__ = ["AipflowCLI"]


class AipflowCLI(LightningCLI):
    """LightningCLI with aipflow's defaults: model and data in subclass mode, optimizers injected into the
    model (so wrappers like SAM take their base optimizer from YAML), and a test + summary after ``fit``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after fit, test the best checkpoint (or the final weights) and print a summary",
        )
        parser.add_argument(
            "--predictions_file",
            type=str | None,
            default=None,
            help="predict: where to write the predictions (.csv or .parquet); predictions.csv in the log folder "
            "when omitted",
        )

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if not add_subcommands:
            # a tool that builds a trained run (aipflow compress, find-issues, exports) is handed the config the run
            # saved, which holds its subcommand's own options (the Trainer method's, as LightningCLI adds them):
            # accepted here and left to the tool (its --ckpt_path)
            for name in _subcommand_options(self.trainer_class):
                self.parser.add_argument(f"--{name}", type=Any, default=None, help="a saved run's; not used here")

    _sized_datamodule = None  # the data module set up to size the model, reused for the run

    def before_instantiate_classes(self) -> None:
        """Fill the model's null sizes from the data and compare the given ones with it (:mod:`aipflow.sizes`),
        before anything is built."""
        from aipflow.sizes import DATA_SIZED_ARGUMENTS, check_against_data, data_sizes, fill_from_data

        config = self.config[self.subcommand] if self.subcommand else self.config
        model, data = config.get("model"), config.get("data")
        if data is None or not _has_key(model, tuple(DATA_SIZED_ARGUMENTS)):
            return
        self._sized_datamodule = _instantiate(data)
        sizes = data_sizes(self._sized_datamodule)
        filled = check_against_data(model, sizes) + fill_from_data(model, sizes)
        if filled:
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(f"aipflow: sizes from the data: {', '.join(filled)}")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self._sized_datamodule is not None:  # the same class and arguments, already set up: not read twice
            self.datamodule = self._sized_datamodule

    def instantiate_trainer(self, **kwargs):
        from aipflow.lightning.defaults import command_callbacks

        trainer_config = self._get(self.config_init, "trainer", default={})
        configured = trainer_config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        kwargs.setdefault("callbacks", command_callbacks(configured, trainer_config.get("enable_checkpointing")))
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "predict":
            from aipflow.lightning.predictions import PredictionWriter

            trainer.callbacks.append(PredictionWriter(self.config["predict"].get("predictions_file")))
        return trainer

    def after_predict(self) -> None:
        from aipflow.lightning.predictions import PredictionWriter

        for callback in self.trainer.callbacks:
            if isinstance(callback, PredictionWriter) and callback.written is not None:
                print(f"aipflow predict: {callback.rows} rows written to {callback.written}")

    recipe: str | None = None  # the --config given, to name the run in plots and summaries
    command_line: list[str] = []  # the arguments as the user gave them (before recipes were inlined)

    def _check_before_data(self) -> None:
        # bad optimizer options and impossible combinations are refused before any data is read
        from aipflow.tasks.base import check_optimizer_options

        if self.recipe and hasattr(self.model, "run_label"):
            self.model.run_label = self.recipe

        check = getattr(self.model, "check_configuration", None)
        if callable(check):
            check()
        else:
            check_optimizer_options(self.model)

    def before_fit(self) -> None:
        self._check_before_data()

    def before_validate(self) -> None:
        self._check_before_data()

    def before_test(self) -> None:
        self._check_before_data()

    def before_predict(self) -> None:
        self._check_before_data()

    def _run_subcommand(self, subcommand: str) -> None:
        # a bad --ckpt_path gets one line naming the file and what is wrong, before and during the restore
        from aipflow.lightning.checkpoint import check_checkpoint_file, explain_restore_error

        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path:
            check_checkpoint_file(ckpt_path)
        try:
            super()._run_subcommand(subcommand)
        except Exception as exc:
            explained = explain_restore_error(exc, ckpt_path, self.model) if ckpt_path else None
            if explained is None:
                raise
            raise explained from exc

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.interrupted:
            return
        datamodule = self.datamodule
        if datamodule is None or not has_test_data(datamodule):
            return
        from aipflow.lightning.multi_pass import _shards_parameters

        ckpt = self.trainer.checkpoint_callback
        ckpt_path = "best" if ckpt is not None and getattr(ckpt, "best_model_path", "") else None
        if _shards_parameters(self.trainer.strategy):
            self._test_in_a_new_run(ckpt)
            return
        self.trainer.test(self.model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank reads it
        if self.trainer.is_global_zero:
            print(run_summary(self.trainer, self.model, datamodule, ckpt_path, log_dir))

    def _test_in_a_new_run(self, ckpt) -> None:
        """Lightning cannot test a model that it sharded in the same process: it wraps the already-sharded module
        again and loads the checkpoint into shard-shaped parameters (Lightning issue #20373). The test runs in a
        new process instead; this prints its command."""
        if not self.trainer.is_global_zero:
            return
        path = (getattr(ckpt, "best_model_path", "") or getattr(ckpt, "last_model_path", "")) if ckpt else ""
        args, skip = [], False
        for arg in self.command_line:
            if skip:
                skip = False
                continue
            if arg in ("--ckpt_path", "--test_after_fit"):
                skip = True
                continue
            if arg.startswith(("--ckpt_path=", "--test_after_fit=")):
                continue
            args.append("test" if arg == "fit" and "test" not in args else arg)
        command = " ".join(["aipflow", *args, f"--ckpt_path={path}"] if path else ["aipflow", *args])
        strategy = type(self.trainer.strategy).__name__
        print(
            f"aipflow: the test after fit runs in a new process under {strategy} (Lightning cannot re-shard a model "
            f"it sharded in this one): {command}"
        )


def _subcommand_options(trainer_class) -> list[str]:
    """The options ``fit`` / ``validate`` / ``test`` / ``predict`` take from the Trainer's methods (``ckpt_path``,
    ``weights_only``, ``verbose``, ...): what a run's saved config holds beside the components."""
    import inspect

    names: dict[str, None] = {}
    for subcommand, skipped in LightningCLI.subcommands().items():
        for name in inspect.signature(getattr(trainer_class, subcommand)).parameters:
            if name != "self" and name not in skipped:
                names[name] = None
    return list(names)


def _has_key(node, keys: tuple[str, ...]) -> bool:
    """Whether an entry named one of ``keys`` is anywhere in a component config (cheap: no data is read)."""
    if isinstance(node, list):
        return any(_has_key(item, keys) for item in node)
    if not hasattr(node, "__dict__") and not isinstance(node, dict):
        return False
    items = node.items() if isinstance(node, dict) else vars(node).items()
    return any(key in keys or _has_key(value, keys) for key, value in items)


def _instantiate(component):
    """A ``class_path`` / ``init_args`` config (a namespace or a dict, components nested in it too) made into its
    object, as the parser would: the data module that sizes the model."""
    import importlib

    if hasattr(component, "as_dict"):
        component = component.as_dict()
    if isinstance(component, list):
        return [_instantiate(item) for item in component]
    if not isinstance(component, dict) or "class_path" not in component:
        return component
    arguments = {key: _instantiate(value) for key, value in (component.get("init_args") or {}).items()}
    module, _, name = component["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**arguments)
