"""Planted bugs kept as a suite: each mutation is one source edit and the tests that must fail with it in place.

A test that cannot fail is a defect; this keeps the proof that the important ones can. Every mutation is applied
alone to one temporary copy of the tracked tree (then reverted), and its tests run against that copy with the
installed environment (the copy's packages first on the path). The tests first run without any bug and must pass; a
mutation its tests do not catch is reported and the exit code is 1.

    python scripts/mutation_check.py             # every mutation (by hand, a few minutes)
    python scripts/mutation_check.py --fast      # the subset CI runs (tests/test_mutations.py)
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py NAME ...    # the named ones

Adding one: append a :class:`Mutation` to :data:`MUTATIONS`: a name, the file, the exact text to replace (it must
occur exactly once: the tool refuses an ambiguous or stale edit), its replacement, the pytest ids that must fail,
and ``fast=True`` if its tests take seconds. Plant the bug by hand first and watch the tests fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    fast: bool = False


MUTATIONS = (
    Mutation(
        "ddp-evidence-not-gathered",
        "aipflow/lightning/cross_fit.py",
        "    if rank_and_world()[1] == 1:\n        return\n    dist = torch.distributed\n",
        "    return\n    dist = torch.distributed\n",
        (
            "tests/lightning/test_ddp_label_issues.py::"
            "test_folds_and_runs_are_shared_out_and_gathered_once_to_what_one_process_computes",
        ),
        fast=True,
    ),
    Mutation(
        "aum-margin-counts-the-assigned-logit",
        "aipflow/lightning/area_under_margin.py",
        '    others = logits.scatter(1, targets[:, None], float("-inf"))\n',
        "    others = logits\n",
        (
            "tests/test_area_under_margin.py::"
            "test_the_margin_is_the_assigned_logit_minus_the_largest_other_even_at_extreme_logits",
        ),
        fast=True,
    ),
    Mutation(
        "aum-threshold-samples-keep-their-label",
        "aipflow/lightning/area_under_margin.py",
        "            targets[sets[r]] = k\n",
        "            pass\n",
        (
            "tests/test_area_under_margin.py::"
            "test_with_frozen_weights_the_aum_and_thresholds_are_the_papers_equations_at_the_initial_weights",
        ),
        fast=True,
    ),
    Mutation(
        "mwn-meta-step-ascends",
        "plugins/bilevel/aipflow_bilevel/reweighting.py",
        "            p.grad = g\n",
        "            p.grad = -g\n",
        ("plugins/bilevel/tests/test_reweighting.py::test_the_meta_weight_net_step_descends_its_clean_meta_objective",),
    ),
    Mutation(
        "hyper-step-ascends",
        "plugins/bilevel/aipflow_bilevel/tuning.py",
        "            tensor.grad = grad.to(tensor.dtype)\n",
        "            tensor.grad = -grad.to(tensor.dtype)\n",
        (
            "plugins/bilevel/tests/test_tuning.py::test_the_hyper_step_moves_each_hyperparameter_against_its_hypergradient",
        ),
    ),
    Mutation(
        "reweighted-loss-mean",
        "plugins/bilevel/aipflow_bilevel/reweighting.py",
        "        return (weights.to(per_row.dtype) * per_row).sum()\n",
        "        return (weights.to(per_row.dtype) * per_row).mean()\n",
        (
            "plugins/bilevel/tests/test_reweighting.py::test_the_reweighted_training_loss_is_the_weighted_sum_of_the_row_losses",
        ),
        fast=True,
    ),
    Mutation(
        "hooi-never-refines",
        "plugins/compress/aipflow_compress/tucker.py",
        "    for _ in range(iterations):  # HOOI",
        "    for _ in range(0):  # HOOI",
        ("plugins/compress/tests/test_tucker.py::test_hooi_improves_on_hosvd_where_hosvd_is_not_optimal",),
        fast=True,
    ),
    Mutation(
        "low-rank-drops-the-bias",
        "plugins/compress/aipflow_compress/lowrank.py",
        "        layer[1].bias.copy_(linear.bias)\n",
        "        pass\n",
        ("plugins/compress/tests/test_lowrank.py::test_low_rank_replaces_only_the_layers_it_shrinks",),
        fast=True,
    ),
    Mutation(
        "langevin-noise-halved",
        "aipflow/optim/_langevin.py",
        'return 2.0 * group["lr"] * self.temperature / float(self.train_size)',
        'return 1.0 * group["lr"] * self.temperature / float(self.train_size)',
        ("tests/optim/test_langevin.py::test_sgld_samples_the_gaussian_posterior_within_monte_carlo_error",),
    ),
    Mutation(
        "qkv-row-offset",
        "plugins/compress/aipflow_compress/heads.py",
        "torch.cat([block * self.heads * self.head_dim + dims for block in range(self.blocks)])",
        "torch.cat([block * self.head_dim + dims for block in range(self.blocks)])",
        (
            "plugins/compress/tests/test_heads.py::"
            "test_vit_keeps_its_largest_heads_by_l1_and_computes_the_original_without_the_others",
        ),
    ),
    Mutation(
        "int8-nonzero-on-torchao-tensors",
        "plugins/compress/aipflow_compress/command.py",
        '"nonzero": sum(_nonzero(w) for w in weights if w.is_floating_point()),',
        '"nonzero": sum(int((w != 0).sum()) for w in weights if w.is_floating_point()),',
        (
            "plugins/compress/tests/test_command.py::test_every_method_and_scheme_runs_through_the_command[int8_dynamic]",
        ),
    ),
    Mutation(
        "fold-copy-blanket-reset",
        "aipflow/models.py",
        "        if callable(declared):\n",
        "        if False:\n",
        (
            "plugins/finetune/tests/test_cross_fit.py::"
            "test_a_fold_copy_keeps_the_pretrained_encoder_and_redraws_head_and_adapters",
        ),
    ),
    Mutation(
        "benchmark-edits-sys-path",
        "benchmarks/kernel_throughput.py",
        "from benchmarks._provenance import provenance_markdown\n",
        "import sys  # noqa: E402\n\nsys.path.insert(0, str(Path(__file__).resolve().parent))\n"
        "from benchmarks._provenance import provenance_markdown  # noqa: E402\n",
        ("tests/test_import_path.py",),
        fast=True,
    ),
    Mutation(
        "import-circle",
        "aipflow/plugins/contract.py",
        "        what = f\"plugin '{self.name}' from distribution {self.distribution} {self.version}\"\n",
        "        from aipflow.plugins.registry import get_registry  # noqa: F401\n\n"
        "        what = f\"plugin '{self.name}' from distribution {self.distribution} {self.version}\"\n",
        ("tests/test_import_graph.py::test_no_import_circle_inside_aipflow",),
        fast=True,
    ),
    Mutation(
        "tensor-train-drops-the-bias",
        "plugins/compress/aipflow_compress/tensor_train.py",
        "        layer = TTLinear(factors, None if linear.bias is None else linear.bias.detach().double())\n",
        "        layer = TTLinear(factors, None)\n",
        (
            "plugins/compress/tests/test_tensor_train.py::"
            "test_a_models_linear_layers_are_replaced_where_that_saves_weights",
        ),
    ),
    Mutation(
        "task-relists-its-parents-arguments",
        "aipflow/tasks/coteaching.py",
        "        peer_seed: int = 1,\n        **kwargs,\n",
        "        peer_seed: int = 1,\n        ece_bins: int = 15,\n        **kwargs,\n",
        ("tests/test_task_base.py::test_a_task_declares_only_what_it_adds",),
        fast=True,
    ),
    Mutation(
        "compress-ignores-the-layer-filter",
        "plugins/compress/aipflow_compress/api.py",
        "        include, exclude = config.layers.include, config.layers.exclude\n",
        "        pass\n",
        ("plugins/compress/tests/test_api.py::test_every_layer_wise_method_touches_only_the_filtered_layers",),
    ),
)


def tracked_copy(destination: Path) -> None:
    """The files git tracks (and the untracked ones it does not ignore), as they are in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source, target = ROOT / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # aipflow/recipes -> ../recipes: the link, as git keeps it
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)


def environment(copy: Path) -> dict[str, str]:
    """The copy's packages (core and every in-tree plugin) ahead of the installed ones."""
    paths = [str(copy), *(str(p) for p in sorted((copy / "plugins").iterdir()) if (p / "pyproject.toml").exists())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.update({"TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return env


def check(mutation: Mutation, copy: Path) -> tuple[bool, str]:
    """Apply ``mutation`` to ``copy``, run its tests there, revert; (caught, a line saying how)."""
    path = copy / mutation.path
    text = path.read_text()
    if text.count(mutation.old) != 1:
        return False, f"stale: {mutation.path} holds the text to replace {text.count(mutation.old)} times, not once"
    path.write_text(text.replace(mutation.old, mutation.new))
    try:
        start = time.perf_counter()
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests]
        done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        path.write_text(text)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else done.stderr.strip().splitlines()[-1:]
    if done.returncode == 1 and " failed" in str(summary):  # a test failed (an error in set-up is no catch)
        return True, f"caught in {seconds:.0f} s ({summary})"
    if done.returncode == 0:
        return False, f"NOT caught: its tests pass with the bug in place ({summary})"
    return False, f"its tests did not run (pytest exit {done.returncode}): {summary}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to check (default: all)")
    parser.add_argument("--fast", action="store_true", help="only the fast subset (CI's)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {sorted(known)}")
    chosen = [known[n] for n in args.names] if args.names else [m for m in MUTATIONS if m.fast or not args.fast]
    if args.list:
        for m in chosen:
            print(f"{m.name:34} {m.path}  ->  {', '.join(m.tests)}{'  (fast)' if m.fast else ''}")
        return 0
    missed = 0
    with tempfile.TemporaryDirectory(prefix="aipflow-mutations-") as folder:
        copy = Path(folder)
        tracked_copy(copy)
        # the same tests without any bug must pass here, or a "catch" would mean nothing
        tests = sorted({t for m in chosen for t in m.tests})
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
        baseline = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True)
        if baseline.returncode != 0:
            print(f"the tests fail without any planted bug:\n{baseline.stdout[-3000:]}{baseline.stderr[-1000:]}")
            return 2
        for mutation in chosen:
            caught, how = check(mutation, copy)
            missed += not caught
            print(f"{'ok  ' if caught else 'MISS'} {mutation.name}: {how}", flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} planted bugs caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
