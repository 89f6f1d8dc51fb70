import pytest

from aipflow.optim._functional import triton_available

# The kernels run through Triton's CPU interpreter in CI (TRITON_INTERPRET=1, set in tests/conftest.py).
collect_ignore_glob = [] if triton_available() else ["test_*.py"]


@pytest.fixture(autouse=True)
def small_chunks():
    """Tiny chunks and blocks: tensors of a few hundred elements span several programs and ragged tails, and the
    interpreter stays fast."""
    from aipflow.kernels._multi_tensor import launch_config

    with launch_config(chunk_size=64, block=16):
        yield
