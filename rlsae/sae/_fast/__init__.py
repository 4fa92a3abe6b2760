"""The fast TopK path of the SAE core (private): selection, training loss, native kernels.

The one entry used by the rest of ``rlsae.sae``:

- ``topk_select(pre, k, bias=None)``: the k largest pre-activations per row (``topk.py``);
- ``topk_loss(...)`` and ``Workspace``: the TopK training step's loss terms with a sparse
  backward (``loss.py``), and ``prefix_sse(...)``: Matryoshka's inner-prefix terms on the
  same sparse path;
- ``jumprelu_loss(...)``: JumpReLU's training terms on the same sparse path where few entries
  are near or above their thresholds, else on a dense block (``jumprelu_loss.py``);
- ``kernel_status()``: whether the native kernels were built and used, and why not.

Behind it, three back-ends with the same results: native C kernels (``_kernels.c``, built on
first use by ``_native.py``), a numba kernel for the selection (``_numba.py``), and plain torch.
"""

from __future__ import annotations

from rlsae.sae._fast import _native
from rlsae.sae._fast.jumprelu_loss import jumprelu_loss
from rlsae.sae._fast.loss import Workspace, prefix_sse, topk_loss
from rlsae.sae._fast.topk import topk_select

__all__ = [
    "Workspace",
    "jumprelu_loss",
    "kernel_status",
    "prefix_sse",
    "topk_loss",
    "topk_select",
]


def kernel_status() -> str:
    """'on (compiler, flags, threads, library)' or 'off (why)'; builds the kernels if needed."""
    return _native.status()
