import pytest

from aipflow.kernels import interpreting
from aipflow.optim._functional import triton_available

# These tests run the kernels on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1, set in
# tests/conftest.py); the compiled kernels are checked on a GPU by tests/gpu/test_kernels_cuda.py.
collect_ignore_glob = [] if triton_available() and interpreting() else ["test_*.py"]


@pytest.fixture(autouse=True)
def small_chunks():
    """Tiny chunks and blocks: tensors of a few hundred elements span several programs and ragged tails, and the
    interpreter stays fast."""
    from aipflow.kernels._multi_tensor import launch_config

    with launch_config(chunk_size=64, block=16):
        yield
