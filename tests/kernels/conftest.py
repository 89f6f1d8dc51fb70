import pytest

# The test modules skip themselves, with the reason shown, when triton is missing or not interpreting (each starts
# with pytest.importorskip("triton")); the compiled kernels are checked on a GPU by tests/gpu/test_kernels_cuda.py.


@pytest.fixture(autouse=True)
def small_chunks():
    """Tiny chunks and blocks: tensors of a few hundred elements span several programs and ragged tails, and the
    interpreter stays fast."""
    from aipflow.kernels._multi_tensor import launch_config

    with launch_config(chunk_size=64, block=16):
        yield
