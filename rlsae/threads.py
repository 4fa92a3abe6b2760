"""Torch thread count for a block of work: the one thread setter every part uses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from rlsae.errors import RlsaeError

MAX_THREADS = 4096


def check_threads(n: int | None) -> None:
    """Refuse a thread count below 1 or above :data:`MAX_THREADS` in one line."""
    if n is not None and (isinstance(n, bool) or not 1 <= n <= MAX_THREADS):
        raise RlsaeError(f"--threads must be between 1 and {MAX_THREADS}, got {n!r}")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (``None``: leave torch's setting).

    Playing runs the network on a handful of observations at a time; on a small or shared
    CPU, one thread is several times faster there than OpenMP spreading each tiny forward.
    """
    if n is None:
        yield
        return
    check_threads(n)
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)
