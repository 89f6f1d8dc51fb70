"""Ahead-of-time compilation of aipflow's Triton kernels for real GPUs, on any machine (no GPU, no driver).

The interpreter (``TRITON_INTERPRET=1``) accepts code that Triton's compiler rejects, and says nothing about
registers, spills or memory instructions. This module

1. records the specialisations the ops launch (:func:`recorded_launches`, in the interpreter): each kernel with the
   dtype of every pointer, the type of every scalar, its constexpr flags and ``num_warps``, exactly as the
   dispatch code chose them; :func:`exercise_dispatch` drives every op through its options (each flag on and off
   from a base call, for fp32 / fp16 / bf16 parameters, aligned and unaligned tensors);
2. compiles each specialisation with Triton's real compiler for a ``GPUTarget`` (sm_80, sm_90, sm_100) to PTX and cubin,
   and reads the cubin with the ``cuobjdump`` shipped in the triton wheel: registers, stack / local memory
   (spills), shared memory, and the width of every global load and store in the SASS.

Compilation needs a process where ``TRITON_INTERPRET`` is unset or 0 before triton is imported::

    python -m aipflow.kernels.aot SPECS.json OUT.json [--arch 80 90]

``benchmarks/kernel_static.py`` writes the report; ``tests/kernels/test_aot.py`` fails CI on a compile error or
a spill.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "TARGETS",
    "Specialization",
    "compile_in_subprocess",
    "compile_specialization",
    "exercise_dispatch",
    "recorded_launches",
    "result_keys",
]

TARGETS = (80, 90, 100)  # A100, H100, B200 (ptxas-blackwell, bundled with triton)
_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int64": "i64", "int32": "i32", "uint8": "u8"}


@dataclass(frozen=True)
class Specialization:
    module: str
    kernel: str
    signature: tuple[tuple[str, str], ...]  # parameter -> "*fp32", "fp32", "i32", ..., "constexpr"
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int
    divisible: tuple[str, ...] = ()  # arguments Triton's JIT specialises as divisible by 16 (pointers, integers)

    @property
    def label(self) -> str:
        pointers = sorted({t for _, t in self.signature if t.startswith("*") and t != "*i64"})
        flags = [k for k, v in self.constexprs if v is True]
        return f"{self.kernel}[{','.join(pointers)}]{{{','.join(flags)}}}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Specialization:
        return cls(
            data["module"],
            data["kernel"],
            tuple(tuple(p) for p in data["signature"]),
            tuple(tuple(p) for p in data["constexprs"]),
            int(data["num_warps"]),
            tuple(data.get("divisible", ())),
        )


def _type_of(value) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return "*" + _TYPES[str(value.dtype).removeprefix("torch.")]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type kernel argument {value!r}")


def _divisible_by_16(value) -> bool:
    """As Triton's JIT specialises an argument (``tt.divisibility = 16``): a 16-byte-aligned tensor, an integer
    multiple of 16."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.data_ptr() % 16 == 0
    return isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0


@contextlib.contextmanager
def recorded_launches() -> Iterator[set[Specialization]]:
    """Inside the block every kernel launch (in Triton's interpreter) is recorded, then run as usual."""
    from triton.runtime.interpreter import InterpretedFunction

    from aipflow.kernels import interpreting

    if not interpreting():
        raise RuntimeError("recording launches needs Triton's interpreter (TRITON_INTERPRET=1 before importing triton)")
    seen: set[Specialization] = set()
    original = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        params = inspect.signature(self.fn).parameters
        names = list(params)
        values = dict(zip(names, args, strict=False))
        values.update({k: v for k, v in kwargs.items() if k in params})
        signature, constexprs, divisible = [], [], []
        for name in names:
            if "constexpr" in str(params[name].annotation):
                signature.append((name, "constexpr"))
                constexprs.append((name, values[name]))
            else:
                signature.append((name, _type_of(values[name])))
                if _divisible_by_16(values[name]):
                    divisible.append(name)
        warps = int(kwargs.get("num_warps", 4))
        seen.add(
            Specialization(
                self.fn.__module__, self.fn.__name__, tuple(signature), tuple(constexprs), warps, tuple(divisible)
            )
        )
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = run
    try:
        yield seen
    finally:
        InterpretedFunction.run = original


def exercise_dispatch() -> None:
    """Call every fused op with small tensors through its options: a base call per parameter dtype (fp32, fp16,
    bf16; fp32 state), then each option changed alone, and fp32 with unaligned tensors."""
    import torch

    from aipflow.kernels import bsam, descent, ivon, langevin, noise, norm, sam

    def tensors(dtype, aligned=True, n=3):
        if aligned:
            return [torch.randn(5, dtype=torch.float32).to(dtype) for _ in range(n)]
        return [torch.randn(6, dtype=torch.float32).to(dtype)[1:] for _ in range(n)]  # 4 or 2 bytes off

    def state(like):
        return [torch.zeros(t.shape, dtype=torch.float32) for t in like]

    one = torch.ones(1)
    for dtype, aligned in (
        (torch.float32, True),
        (torch.float16, True),
        (torch.bfloat16, True),
        (torch.float32, False),
    ):

        def w(dtype=dtype, aligned=aligned):
            return tensors(dtype, aligned, 1)

        grads = w()
        norm.sum_of_squares(grads, w(), False, 0.0)
        norm.sum_of_squares(grads, w(), True, 0.01)
        norm.sum_of_squares(grads, w(), False, 0.0, grad_scale=one)
        for options in ({}, {"adaptive": True, "eta": 0.01}, {"mode": "copy"}, {"grad_scale": one}):
            sam.sam_perturb(w(), grads, w(), 0.05, **{"squared_norm": one, **options})

        # the descent steps: a base call, then each option alone ("copy": fresh tensors like the parameters)
        amp = ({"grad_scale": one}, {"found_inf": torch.zeros(1)}, {"clip_coef": one})
        sgd = ({}, {"momentum": 0.0}, {"nesterov": True}, {"maximize": True}, {"first": True}, {"backups": "copy"})
        adam = ({}, {"decoupled": False}, {"maximize": True}, {"backups": "copy"})
        for step, base, variants in (
            (descent.sgd_step, {"lr": 0.1, "momentum": 0.9}, sgd + amp),
            (descent.adam_step, {"lr": 1e-3, "step": 1, "weight_decay": 0.01}, adam + amp),
        ):
            for variant in variants:
                options = {**base, **variant}
                if options.get("backups") == "copy":
                    options["backups"] = w()
                params = w()
                if step is descent.sgd_step:
                    step(params, w(), state(params) if options["momentum"] else None, **options)
                else:
                    step(params, w(), state(params), state(params), **options)

        noise.normal_like(w(), seed=1)
        params = w()
        bsam.bsam_noisy_point(params, w(), state(params), 100.0, seed=1)
        for options in ({}, {"grad_scale": one}):
            bsam.bsam_perturbed_point(params, w(), w(), state(params), state(params), 0.01, **options)
        for options in ({}, {"means": "copy"}, {"found_inf": torch.zeros(1)}):
            if options.get("means") == "copy":
                options["means"] = w()
            bsam.bsam_update(
                params, w(), state(params), state(params), state(params), 0.1, 0.9, 0.999, 0.1, 0.1, **options
            )

        ivon.ivon_sample(params, w(), state(params), 100.0, 1e-4, seed=1)
        for options in ({}, {"g_sums": "state"}, {"grad_scale": one}):
            if options.get("g_sums") == "state":
                options["g_sums"] = state(params)
            ivon.ivon_accumulate(w(), state(params), state(params), 100.0, 1e-4, seed=1, **options)
        update = {
            "lr": 0.1,
            "beta1": 0.9,
            "beta2": 0.99999,
            "weight_decay": 1e-4,
            "step": 1,
            "clip_radius": float("inf"),
        }
        for options in (
            {"ess": 100.0, "seed": 1},
            {"h_hats": "state"},
            {"ess": 100.0, "seed": 1, "means": "copy"},
            {"ess": 100.0, "seed": 1, "clip_radius": 1.0},
            {"ess": 100.0, "seed": 1, "grad_scale": one},
            {"ess": 100.0, "seed": 1, "found_inf": torch.zeros(1)},
        ):
            options = {**update, **options}
            if options.get("h_hats") == "state":
                options["h_hats"] = state(params)
            if options.get("means") == "copy":
                options["means"] = w()
            ivon.ivon_update(params, w(), state(params), state(params), **options)

        for averages in (None, state(params)):  # SGLD, then pSGLD's preconditioned step
            langevin.langevin_step(params, w(), averages, 0.01, 1e-4, 1e-3, seed=1)


# ------------------------------------------------------------------------------------------------- compiling
def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def compile_specialization(spec: Specialization, arch: int) -> dict:
    """Compile one specialisation for ``sm_<arch>``; what ptxas and the cubin say (needs a non-interpreter
    process): registers, spill stores / loads, stack frame, shared memory, global memory instructions by width."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(spec.module), spec.kernel)
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in spec.divisible}
    source = ASTSource(fn=fn, signature=dict(spec.signature), constexprs=dict(spec.constexprs), attrs=attrs)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": spec.num_warps})
    with tempfile.TemporaryDirectory() as folder:
        cubin, ptx = Path(folder) / "kernel.cubin", Path(folder) / "kernel.ptx"
        cubin.write_bytes(kernel.asm["cubin"])
        ptx.write_text(kernel.asm["ptx"])
        ptxas = _tool("ptxas-blackwell" if arch >= 100 else "ptxas")
        verbose = subprocess.run(
            [ptxas, f"-arch=sm_{arch}a" if arch >= 90 else f"-arch=sm_{arch}", "-v", str(ptx), "-o", os.devnull],
            capture_output=True,
            text=True,
        ).stderr
        sass = subprocess.run([_tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True).stdout
    number = {
        key: int(m.group(1)) if (m := re.search(pattern, verbose)) else -1
        for key, pattern in (
            ("registers", r"Used (\d+) registers"),
            ("spill_stores", r"(\d+) bytes spill stores"),
            ("spill_loads", r"(\d+) bytes spill loads"),
            ("stack", r"(\d+) bytes stack frame"),
        )
    }
    memory: dict[str, int] = {}
    for op in re.findall(r"\b((?:LDG|STG)(?:\.[A-Z0-9_]+)*)", sass):
        memory[op] = memory.get(op, 0) + 1
    return {
        "label": spec.label,
        "kernel": f"{spec.module.rsplit('.', 1)[-1]}.{spec.kernel}",
        "arch": arch,
        "num_warps": spec.num_warps,
        **number,
        "shared": int(kernel.metadata.shared),
        "global_memory": memory,
        "instructions": len(re.findall(r"/\*[0-9a-f]{4}\*/", sass)),
    }


def compile_all(specs: list[Specialization], archs: tuple[int, ...] = TARGETS) -> list[dict]:
    """Every specialisation for every target; a compile error is recorded (``error``), not raised."""
    out = []
    for spec in specs:
        for arch in archs:
            try:
                out.append(compile_specialization(spec, arch))
            except Exception as exc:  # noqa: BLE001 - reported per specialisation
                out.append({"label": spec.label, "arch": arch, "error": f"{type(exc).__name__}: {exc}"[:2000]})
    return out


def _cache_folder() -> Path:
    """Where compile results are kept between runs: ``$AIPFLOW_AOT_CACHE``, else ``~/.cache/aipflow/aot``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aipflow" / "aot"
    return Path(os.environ.get("AIPFLOW_AOT_CACHE", default))


def _toolchain_digest(module: str) -> str:
    """What every compile result of ``module``'s package depends on beside its specialisation: the source of every
    kernel module (the kernel and any helper it inlines, wherever it lives), Triton's version and the contents of the
    CUDA tools (not their times: every install writes them anew)."""
    import hashlib

    import triton

    folder = Path(importlib.import_module(module).__file__).parent
    parts = [triton.__version__, *(f.read_text() for f in sorted(folder.glob("*.py")))]
    for tool in (_tool(name) for name in ("ptxas", "ptxas-blackwell", "cuobjdump")):
        if os.path.exists(tool):
            digest = hashlib.sha256()
            with open(tool, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            parts.append(f"{Path(tool).name}:{digest.hexdigest()}")
        else:
            parts.append(f"{Path(tool).name}:absent")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cache_key(spec: Specialization, arch: int, toolchain: str) -> str:
    """The specialisation, the target and :func:`_toolchain_digest`."""
    import hashlib

    text = "\n".join([json.dumps(spec.to_json(), sort_keys=True), str(arch), toolchain])
    return hashlib.sha256(text.encode()).hexdigest()


def result_keys(specs: list[Specialization], archs: tuple[int, ...] = TARGETS) -> dict[tuple[int, int], str]:
    """The key of each compile result, ``(index in specs, arch) -> key``: the specialisation, the target, and the
    kernel sources, Triton and CUDA tools (:func:`_toolchain_digest`, computed once per kernel package)."""
    digests: dict[str, str] = {}
    keys = {}
    for i, spec in enumerate(specs):
        package = spec.module.rpartition(".")[0]
        toolchain = digests.get(package) or digests.setdefault(package, _toolchain_digest(spec.module))
        for arch in archs:
            keys[(i, arch)] = _cache_key(spec, arch, toolchain)
    return keys


def compile_in_subprocess(
    specs: list[Specialization],
    archs: tuple[int, ...] = TARGETS,
    processes: int = 2,
    timeout: int = 1200,
    cache: bool = True,
    recorded: dict[str, dict] | None = None,
) -> list[dict]:
    """:func:`compile_all` in new processes without the interpreter (this one may have it on), ``processes`` at
    a time over interleaved shares of the specialisations. A result already computed for the same specialisation,
    target, kernel sources, Triton and CUDA tools (:func:`result_keys`) is read back instead: from ``recorded``
    (``{key: result}``, a recording kept with the code) and, with ``cache``, from the cache folder; only those
    results can match, so a changed kernel, Triton or toolchain is compiled again. A compile error is never
    cached."""
    keys = result_keys(specs, archs) if cache or recorded else {}
    folder = _cache_folder()
    known: dict[tuple[int, int], dict] = {}
    for where, key in keys.items():
        if recorded and key in recorded:
            known[where] = recorded[key]
        elif cache and (folder / f"{key}.json").is_file():
            known[where] = json.loads((folder / f"{key}.json").read_text())
    missing = [i for i, _ in enumerate(specs) if any((i, arch) not in known for arch in archs)]
    results = _compile_fresh([specs[i] for i in missing], archs, processes, timeout) if missing else []
    fresh = iter(results)
    out = []
    for i, _ in enumerate(specs):
        for arch in archs:
            if i in missing:
                result = next(fresh)
                if cache and "error" not in result:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{keys[(i, arch)]}.json").write_text(json.dumps(result))
            else:
                result = known[(i, arch)]
            out.append(result)
    return out


def _compile_fresh(specs: list[Specialization], archs: tuple[int, ...], processes: int, timeout: int) -> list[dict]:
    """Compile in ``processes`` new processes (process k takes ``specs[k::processes]``; :func:`compile_all` returns
    each spec's targets in turn); the results in the order of ``specs``, then ``archs``."""
    by_spec: list[list[dict]] = [[] for _ in specs]
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        running = []
        for k in range(processes):
            spec_file, out_file = Path(folder) / f"specs{k}.json", Path(folder) / f"out{k}.json"
            spec_file.write_text(json.dumps([s.to_json() for s in specs[k::processes]]))
            command = [sys.executable, "-m", "aipflow.kernels.aot", str(spec_file), str(out_file), "--arch"]
            pipe = subprocess.PIPE
            running.append((subprocess.Popen([*command, *map(str, archs)], env=env, stderr=pipe, text=True), out_file))
        for k, (process, out_file) in enumerate(running):
            _, err = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise RuntimeError(f"ahead-of-time compilation failed to run: {err[-3000:]}")
            results = json.loads(out_file.read_text())
            for j, index in enumerate(range(k, len(specs), processes)):
                by_spec[index] = results[j * len(archs) : (j + 1) * len(archs)]
    return [result for results in by_spec for result in results]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="compile recorded kernel specialisations for GPU targets")
    parser.add_argument("specs")
    parser.add_argument("out")
    parser.add_argument("--arch", type=int, nargs="+", default=list(TARGETS))
    args = parser.parse_args(argv)
    from aipflow.kernels import interpreting

    if interpreting():
        parser.error("TRITON_INTERPRET is on: compilation needs it unset or 0")
    specs = [Specialization.from_json(s) for s in json.loads(Path(args.specs).read_text())]
    Path(args.out).write_text(json.dumps(compile_all(specs, tuple(args.arch))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
