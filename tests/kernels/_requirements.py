"""What the kernel tests need, checked at the top of each module so that a missing requirement shows as a skip
with its reason rather than as tests that silently vanish."""

import pytest


def require_triton_interpreter() -> None:
    pytest.importorskip("triton", reason="aipflow's kernels need the triton package (Linux x86-64)")
    from aipflow.kernels import interpreting

    if not interpreting():
        pytest.skip(
            "these tests run the kernels on CPU tensors through Triton's interpreter: set TRITON_INTERPRET=1 before "
            "triton is imported (tests/conftest.py does); tests/gpu runs them compiled",
            allow_module_level=True,
        )
