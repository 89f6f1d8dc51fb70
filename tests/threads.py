"""Torch's intra-op threads in the test processes. README's test command runs the suite on pytest-xdist workers, one
per core; each worker keeps to one thread (two workers of two threads on two cores spin against each other: the
suite took 1.6 times as long), and so do the processes a test starts. :data:`DEFAULT` is torch's own choice for this
machine, read before any change: what the golden runs were recorded with."""

import os

import torch

DEFAULT = torch.get_num_threads()


def one_per_worker() -> None:
    """Under an xdist worker: one intra-op thread here and in every process a test starts."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
