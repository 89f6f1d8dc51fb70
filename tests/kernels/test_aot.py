"""Every kernel specialisation the ops launch, compiled ahead of time by Triton's real compiler for sm_80, sm_90
and sm_100 (no GPU needed): a compile error or a register spill fails CI. The specialisations are recorded while the
ops run in the interpreter with the default launch configuration (BLOCK 1024, 4 warps), so they are the ones the
dispatcher chooses, flag by flag, for fp32 / fp16 / bf16 and aligned / unaligned tensors.

Compiling them all takes minutes on 2 cores (about 150 specialisations x 3 targets), so the results are kept with
the code in ``aot_results.json``, each under the key of everything it depends on (the specialisation, the target,
the source of every kernel module, Triton's version, the CUDA tools' contents): a result is read back only where
all of these are unchanged, and whatever changed is compiled here for real. ``AIPFLOW_UPDATE_AOT=1`` rewrites the
file from this run (after a kernel change: the run compiles, then records)."""

import json
import os
import warnings
from pathlib import Path

import pytest

from tests.kernels._requirements import require_triton_interpreter

require_triton_interpreter()

from aipflow.kernels import _multi_tensor as mt  # noqa: E402
from aipflow.kernels.aot import (  # noqa: E402
    TARGETS,
    Specialization,
    compile_in_subprocess,
    exercise_dispatch,
    recorded_launches,
    result_keys,
)

RECORDED = Path(__file__).with_name("aot_results.json")

KERNELS = {
    "_sum_of_squares_kernel",
    "_perturb_kernel",
    "_sgd_kernel",
    "_adam_kernel",
    "_perturbed_point_kernel",
    "_update_kernel",
    "_accumulate_kernel",
    "_sample_kernel",
    "_normal_kernel",
    "_langevin_kernel",
}


@pytest.fixture(scope="module")
def compiled():
    defaults = mt.LaunchConfig()
    with mt.launch_config(defaults.chunk_size, defaults.block, defaults.num_warps), recorded_launches() as seen:
        exercise_dispatch()
    specs = sorted(seen, key=lambda s: (s.module, s.label))
    recorded = json.loads(RECORDED.read_text()) if RECORDED.is_file() else {}
    keys = result_keys(specs, TARGETS)
    stale = sum(key not in recorded for key in keys.values())
    results = compile_in_subprocess(specs, TARGETS, recorded=recorded)
    if os.environ.get("AIPFLOW_UPDATE_AOT"):
        ordered = [keys[(i, arch)] for i in range(len(specs)) for arch in TARGETS]
        kept = {key: result for key, result in zip(ordered, results) if "error" not in result}
        RECORDED.write_text(json.dumps(kept, sort_keys=True, separators=(",", ":")) + "\n")
    elif stale:
        warnings.warn(
            f"{stale} of {len(keys)} kernel compile results were not in {RECORDED.name} (a kernel, Triton or the CUDA "
            "tools changed) and were compiled here; AIPFLOW_UPDATE_AOT=1 records them",
            stacklevel=1,
        )
    return specs, results


def test_the_dispatch_reaches_every_kernel_with_each_flag_both_ways(compiled):
    specs, _ = compiled
    assert {(s.module.rsplit(".", 1)[1], s.kernel) for s in specs} >= {
        ("ivon", "_update_kernel"),
        ("bsam", "_update_kernel"),
    }
    assert {s.kernel for s in specs} == KERNELS
    for module, kernel in {(s.module, s.kernel) for s in specs}:
        flags: dict[str, set] = {}
        for s in specs:
            if (s.module, s.kernel) == (module, kernel):
                for name, value in s.constexprs:
                    if isinstance(value, bool):
                        flags.setdefault(name, set()).add(value)
        one_way = {name: values for name, values in flags.items() if len(values) < 2}
        if kernel == "_normal_kernel":  # normal_like allocates its outputs: aligned by construction
            one_way.pop("ALIGNED", None)
        assert not one_way, f"{module}.{kernel}: flags only ever launched one way: {one_way}"
    assert all(dict(s.constexprs).get("BLOCK") in (None, 1024) for s in specs)


def test_every_specialisation_compiles_for_each_target(compiled):
    specs, results = compiled
    errors = [f"{r['label']} sm_{r['arch']}: {r['error']}" for r in results if "error" in r]
    assert not errors, "\n".join(errors)
    assert len(results) == len(specs) * len(TARGETS)


def test_no_kernel_spills_registers(compiled):
    _, results = compiled
    spilled = [r for r in results if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, [(r["label"], r["arch"], r["spill_stores"], r["spill_loads"]) for r in spilled]
    assert all(0 < r["registers"] <= 255 for r in results)
    assert all(any(op.startswith("STG") for op in r["global_memory"]) for r in results)  # the SASS was read


def test_a_compile_error_is_reported_not_swallowed():
    # the check above must be able to fail: a specialisation the compiler rejects comes back with its error
    good = Specialization(
        "aipflow.kernels.noise",
        "_normal_kernel",
        (
            ("out_ptr", "*fp32"),
            ("table_ptr", "*i64"),
            ("seed", "i32"),
            ("NCOL", "constexpr"),
            ("ALIGNED", "constexpr"),
            ("BLOCK", "constexpr"),
        ),
        (("NCOL", 3), ("ALIGNED", True), ("BLOCK", 1000)),  # not a power of two: tl.arange refuses it
        4,
    )
    (result,) = compile_in_subprocess([good], (90,), processes=1)
    assert "error" in result and result["error"].startswith("CompilationError")


def test_compile_results_are_read_back_only_for_the_same_specialisation_and_target(tmp_path, monkeypatch):
    import aipflow.kernels.aot as aot

    monkeypatch.setenv("AIPFLOW_AOT_CACHE", str(tmp_path))
    signature = (("out_ptr", "*fp32"), ("table_ptr", "*i64"), ("seed", "i32"))
    signature += (("NCOL", "constexpr"), ("ALIGNED", "constexpr"), ("BLOCK", "constexpr"))
    spec = Specialization(
        "aipflow.kernels.noise", "_normal_kernel", signature, (("NCOL", 3), ("ALIGNED", True), ("BLOCK", 1024)), 4
    )
    (first,) = compile_in_subprocess([spec], (90,), processes=1)
    assert "error" not in first and len(list(tmp_path.glob("*.json"))) == 1

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again although the result is cached")

    monkeypatch.setattr(aot, "_compile_fresh", no_compiler)
    assert compile_in_subprocess([spec], (90,), processes=1) == [first]
    with pytest.raises(AssertionError, match="compiled again"):  # another target is another result
        compile_in_subprocess([spec], (80,), processes=1)
    other = Specialization(
        spec.module, spec.kernel, spec.signature, (("NCOL", 2), ("ALIGNED", True), ("BLOCK", 1024)), 4
    )
    with pytest.raises(AssertionError, match="compiled again"):  # and another specialisation
        compile_in_subprocess([other], (90,), processes=1)


def test_the_fp32_steady_state_uses_128_bit_accesses(compiled):
    # whole blocks run unmasked (block_indices), so aligned fp32 tensors move 16 bytes per instruction; before, every
    # element access was a 32-bit LDG.E / STG.E (the mask idx < n gave the compiler nothing to vectorise on)
    _, results = compiled
    checked = 0
    for r in results:
        pointers, flags = r["label"].split("[", 1)[1].split("]", 1)
        if pointers != "*fp32" or "ALIGNED" not in flags:
            continue
        memory = r["global_memory"]
        if r["kernel"] != "noise._normal_kernel":  # it loads no tensor
            assert "LDG.E.128" in memory, (r["label"], r["arch"], memory)
        if r["kernel"] != "norm._sum_of_squares_kernel":  # it stores one partial sum per program
            assert "STG.E.128" in memory, (r["label"], r["arch"], memory)
        checked += 1
    assert checked >= 40


def test_a_recording_is_read_back_only_under_the_same_kernel_sources_triton_and_tools(tmp_path, monkeypatch):
    import aipflow.kernels.aot as aot

    signature = (("out_ptr", "*fp32"), ("table_ptr", "*i64"), ("seed", "i32"))
    signature += (("NCOL", "constexpr"), ("ALIGNED", "constexpr"), ("BLOCK", "constexpr"))
    spec = Specialization(
        "aipflow.kernels.noise", "_normal_kernel", signature, (("NCOL", 3), ("ALIGNED", True), ("BLOCK", 1024)), 4
    )
    result = {"label": spec.label, "arch": 90, "registers": 1}

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(aot, "_compile_fresh", no_compiler)
    (key,) = result_keys([spec], (90,)).values()
    assert compile_in_subprocess([spec], (90,), cache=False, recorded={key: result}) == [result]
    # the tools count by their contents: a new install rewrites them (new times), which must not matter
    tools = {name: tmp_path / name for name in ("ptxas", "ptxas-blackwell", "cuobjdump")}
    for path in tools.values():
        path.write_bytes(b"tool v1")
    monkeypatch.setattr(aot, "_tool", lambda name: str(tools[name]))
    before = aot._toolchain_digest(spec.module)
    os.utime(tools["ptxas"], (1, 1))
    assert aot._toolchain_digest(spec.module) == before
    tools["ptxas"].write_bytes(b"tool v2")
    assert aot._toolchain_digest(spec.module) != before
    (changed,) = result_keys([spec], (90,)).values()
    with pytest.raises(AssertionError, match="compiled again"):
        compile_in_subprocess([spec], (90,), cache=False, recorded={key: result})
    assert changed != key
