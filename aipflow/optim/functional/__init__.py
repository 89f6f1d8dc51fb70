"""Step functions over lists of tensors, one module per optimizer: the public functional form of aipflow's
optimizers and the one seam between them and their backends (``_backend.py`` decides which runs).

Each public function takes plain lists (parameters, gradients, state buffers) and an ``impl``:

- ``"reference"``: a per-tensor loop written to read like the paper's equations;
- ``"foreach"``: the same arithmetic with ``torch._foreach_*`` (one kernel per op over all tensors; default);
- ``"triton"``: fused kernels (``aipflow.kernels``), where available.

Both backends compute in the parameters' dtype for fp32 and in fp32 for fp16/bf16 state-free updates; the
restore of a perturbation always copies the saved weights back (exact), it never subtracts.
"""

from aipflow.optim.functional._backend import (
    IMPLS,
    check_impl,
    compute_dtype,
    fused_ops,
    groups,
    resolve_impl,
    restore,
    triton_available,
)
from aipflow.optim.functional.bsam import bsam_noisy_point, bsam_perturbed_point, bsam_update, gaussian_like
from aipflow.optim.functional.ivon import ivon_update
from aipflow.optim.functional.langevin import langevin_update
from aipflow.optim.functional.sam import (
    base_step_fusable,
    fused_base_step,
    owns_storage,
    sam_perturb,
    sam_perturb_swap,
    sam_scale_norm,
    sam_squared_norm,
    swap_back,
)

__all__ = [
    "IMPLS",
    "base_step_fusable",
    "bsam_noisy_point",
    "bsam_perturbed_point",
    "bsam_update",
    "check_impl",
    "compute_dtype",
    "fused_base_step",
    "fused_ops",
    "gaussian_like",
    "groups",
    "ivon_update",
    "langevin_update",
    "owns_storage",
    "resolve_impl",
    "restore",
    "sam_perturb",
    "sam_perturb_swap",
    "sam_scale_norm",
    "sam_squared_norm",
    "swap_back",
    "triton_available",
]
