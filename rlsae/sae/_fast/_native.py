"""Native kernels for the TopK training step (``_kernels.c``), built on first use.

The C source ships with the package. The first call compiles it with the system C compiler
(``$CC`` or ``cc``; ``-O3 -march=native``) into a per-user cache
(``$RLSAE_CACHE/kernels`` or ``~/.cache/rlsae/kernels``), keyed by the source, the compiler, the
flags and the CPU, and loads it with ctypes. Where that fails (no compiler, an unsupported
platform) or ``RLSAE_NATIVE=0`` is set, ``lib()`` returns None and rlsae uses its numba and
pure-torch paths: the same results, slower. ``status()`` says which and why.

Kernels take float32 CPU tensors (contiguous). They split rows across OpenMP threads, in torch's
own OpenMP runtime (see ``_kernels.c``); each row is done by one thread, so results do not
depend on the thread count.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("_kernels.c")
_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "rlsae_openmp": ([], ctypes.c_int),
    "select_rows": ([_P, _P, _I, _I, _I, _I, _I, _P, _P, _P], ctypes.c_int),
    "residual_rows": ([_P, _P, _P, _P, _P, _I, _I, _I, _P, _P, _P], None),
    "group_by_latent": (
        [_P, _P, _P, _I, _P, _P, _P, _I, _I, _I, _P, _P, _P, _P, _P, _P],
        ctypes.c_int,
    ),
    "gather_ge_rows": ([_P, _P, _I, _P, _I, _I, ctypes.c_float, _P, _P, _P], None),
    "kth_largest": ([_P, _I, _P, _P, _I, _I, _I, _P], ctypes.c_int),
    "batchtopk_assemble": (
        [_P, _P, _I, _P, _P, _P, _P, _I, ctypes.c_float, _I, _I, _I, _P, _P, _P],
        ctypes.c_int,
    ),
    "jumprelu_candidates": ([_P, _P, _I, _P, _I, _I, _I, _P, _P, _P, _P], ctypes.c_int),
    "jumprelu_residual_rows": ([_P, _P, _P, _P, _P, _P, _I, _I, _I, _P, _P, _P], None),
}
# tried in order; the first that compiles is used. The vector-width hint is x86-only (GCC's
# default for AMD Zen is 128-bit vectors; see docs/benchmarks.md). Without -fopenmp the kernels run
# on one thread.
_FLAG_SETS = (
    ["-O3", "-march=native", "-mprefer-vector-width=256", "-fopenmp"],
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3"],
)
_COMMON = [
    "-shared",
    "-fPIC",
    "-std=c99",
    "-fno-math-errno",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_status: str | None = None


def _cpu_key() -> str:
    """What -march=native depends on: a library built on one CPU may not run on another that
    shares the cache (a cluster's home directory)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _cache_dir() -> Path | None:
    """$RLSAE_CACHE/kernels or ~/.cache/rlsae/kernels; where that cannot be created or written
    (a read-only home), a private per-user directory under the system's temporary directory;
    None if neither can be had."""
    root = os.environ.get("RLSAE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rlsae"
    )
    path = Path(root) / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK | os.X_OK):
            return path
    except OSError:
        pass
    if not hasattr(os, "getuid"):
        return None
    # a shared temporary directory: only one that is ours and closed to others (a library
    # someone else could have put there is never loaded)
    path = Path(tempfile.gettempdir()) / f"rlsae-kernels-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    return path


def _build() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("RLSAE_NATIVE", "1") == "0":
        return None, "off (RLSAE_NATIVE=0)"
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        return None, f"off (no C compiler: {cc!r} not found)"
    src = _SOURCE.read_bytes()
    cache = _cache_dir()
    if cache is None:
        return None, "off (no writable cache directory for the compiled kernels)"
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(
            b"\0".join([src, cc.encode(), " ".join(flags + _COMMON).encode(), _cpu_key().encode()])
        ).hexdigest()[:16]
        path = cache / f"rlsae_kernels_{key}.so"
        if not path.exists():
            tmp = None
            try:
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
                os.close(fd)
                proc = subprocess.run(
                    [cc, *flags, *_COMMON, str(_SOURCE), "-o", tmp],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if proc.returncode != 0:
                    errors.append(proc.stderr.strip().splitlines()[-1:] or ["failed"])
                    continue
                os.replace(tmp, path)  # atomic: another process may be building the same
                tmp = None
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append([str(exc)])
                continue
            finally:
                if tmp is not None and os.path.exists(tmp):
                    os.unlink(tmp)  # nothing half-written is left in the cache
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            errors.append([str(exc)])
            continue
        try:
            for name, (args, res) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, res
            _self_test(lib)
        except (AttributeError, AssertionError) as exc:
            errors.append([f"{path.name}: {exc or 'self-test failed'}"])
            continue
        threads = "OpenMP" if lib.rlsae_openmp() else "one thread"
        return lib, f"on ({cc} {' '.join(flags)}; {threads}; {path})"
    return None, f"off (compiling {_SOURCE.name} failed: {errors[-1][0] if errors else '?'})"


def _self_test(lib: ctypes.CDLL) -> None:
    """A tiny known answer for each kernel, so a miscompiled library is never used."""
    g = torch.Generator().manual_seed(0)
    x, W, b = torch.randn(3, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(8)
    idx, vals = torch.tensor([[0, 4], [1, 1], [3, 2]]), torch.rand(3, 2, generator=g)
    e, sse, gdot = (torch.empty(3, 8), torch.empty(3), torch.empty(3, 2))
    lib.residual_rows(*map(_ptr, (x, W, b, idx, vals)), 3, 8, 2, *map(_ptr, (e, sse, gdot)))
    e_ref = (vals.unsqueeze(-1) * W[idx]).sum(1) + b - x
    assert torch.allclose(e, e_ref, atol=1e-5), "residual_rows self-test failed"
    assert torch.allclose(sse, (e_ref**2).sum(1), atol=1e-4), "residual_rows self-test failed"
    gd_ref = (W[idx] * e_ref.unsqueeze(1)).sum(-1)
    assert torch.allclose(gdot, gd_ref, atol=1e-4), "residual_rows self-test failed"
    pre = torch.randn(4, 512, generator=g)
    sv, si, failed = (
        torch.empty(4, 6),
        torch.empty(4, 6, dtype=torch.long),
        torch.zeros(4, dtype=torch.uint8),
    )
    rc = lib.select_rows(_ptr(pre), _ptr(pre), 0, 4, 512, 6, 8, _ptr(sv), _ptr(si), _ptr(failed))
    assert rc == 0 and not failed.any(), "select_rows self-test failed"
    ref = pre.topk(6, dim=-1).indices.sort(-1).values
    assert torch.equal(si.sort(-1).values, ref), "select_rows self-test failed"
    # BatchTopK: the short rows' entries >= t0, the k-th largest, the compacted kept entries
    rows, bias = torch.tensor([2, 0]), torch.zeros(512)
    gv, gi, gc = (
        torch.empty(2, 512),
        torch.empty(2, 512, dtype=torch.long),
        torch.empty(2, dtype=torch.long),
    )
    lib.gather_ge_rows(_ptr(pre), _ptr(bias), 1, _ptr(rows), 2, 512, 1.0, *map(_ptr, (gv, gi, gc)))
    for s, r in enumerate(rows.tolist()):
        want = (pre[r] >= 1.0).nonzero().reshape(-1)
        assert torch.equal(gi[s, : gc[s]], want), "gather_ge_rows self-test failed"
    t = torch.empty(1)
    assert lib.kth_largest(_ptr(sv), 24, _ptr(gv), _ptr(gc), 2, 512, 30, _ptr(t)) == 0
    every = torch.cat([sv.reshape(-1), gv[0, : gc[0]], gv[1, : gc[1]]])
    assert float(t) == float(every.sort(descending=True).values[29]), "kth_largest self-test failed"
    src, cnt = torch.tensor([1, -1, 0, -1]), torch.empty(4, dtype=torch.long)
    ov, oi = torch.empty(4, 40), torch.empty(4, 40, dtype=torch.long)
    args = (_ptr(sv), _ptr(si), 6, _ptr(src), _ptr(gv), _ptr(gi), _ptr(gc), 512, 2.0, 4, 512)
    assert lib.batchtopk_assemble(*args, 40, _ptr(ov), _ptr(oi), _ptr(cnt)) == 0
    for r in range(4):
        v, i = (
            (sv[r], si[r]) if src[r] < 0 else (gv[src[r], : gc[src[r]]], gi[src[r], : gc[src[r]]])
        )
        want = i[v >= 2.0]
        ok = torch.equal(oi[r, : cnt[r]], want) and not ov[r, cnt[r] :].any()
        ok = ok and len(set(oi[r].tolist())) == 40
        assert ok, "batchtopk_assemble self-test failed"


def lib() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot be built (see ``status``)."""
    global _lib, _status
    if _status is None:
        with _lock:
            if _status is None:
                _lib, _status = _build()
    return _lib


def status() -> str:
    """'on (...)' or 'off (why)'; builds the kernels if that was not tried yet."""
    lib()
    return str(_status)


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels are built and can take these tensors (CPU, float32). A build without
    OpenMP runs on one thread, so it is used only where torch runs on one thread too."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return False
    native = lib()
    return native is not None and (torch.get_num_threads() == 1 or bool(native.rlsae_openmp()))


def _loaded() -> ctypes.CDLL:
    """The kernels, for callers that checked ``usable`` first."""
    native = lib()
    if native is None:
        raise RuntimeError(f"rlsae's native kernels are not available: {status()}")
    return native


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def select(
    pre: torch.Tensor, k: int, g: int, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, indices, failed) of the top k of each row of the contiguous float32 block
    ``pre`` (B, n), strided groups of ``g``; ``pre += bias`` in place first when given. Rows
    with ``failed`` set (NaN or inf) are left for the caller."""
    B, n = pre.shape
    vals = torch.empty(B, k, dtype=pre.dtype)
    idx = torch.empty(B, k, dtype=torch.long)
    failed = torch.zeros(B, dtype=torch.uint8)
    b = bias.detach().contiguous() if bias is not None else pre
    rc = _loaded().select_rows(
        _ptr(pre), _ptr(b), int(bias is not None), B, n, int(k), int(g),
        _ptr(vals), _ptr(idx), _ptr(failed),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("rlsae's TopK selection could not allocate its scratch memory")
    return vals, idx, failed


def residual(
    x: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    idx: torch.Tensor,
    vals: torch.Tensor,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e, sse, gdot): e = b_dec + sum_j vals W_dec[idx] - x (rows, d), sse = |e|^2 per row,
    gdot[r, j] = e[r] . W_dec[idx[r, j]] where vals[r, j] != 0 and 0 where it is 0 (entries of
    value 0 are skipped: every consumer masks gdot by vals > 0). All inputs contiguous; e goes
    into ``out`` if given."""
    B, k = idx.shape
    d = x.shape[1]
    e = torch.empty_like(x) if out is None else out
    sse = torch.empty(B, dtype=x.dtype)
    gdot = torch.empty(B, k, dtype=x.dtype)
    _loaded().residual_rows(
        _ptr(x), _ptr(W_dec), _ptr(b_dec), _ptr(idx), _ptr(vals), B, d, k,
        _ptr(e), _ptr(sse), _ptr(gdot),
    )  # fmt: skip
    return e, sse, gdot


def group_by_latent(
    idx: torch.Tensor,
    dec: torch.Tensor,
    enc: torch.Tensor,
    n: int,
    aux: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The entries of latents ``idx`` (B, k) with values ``dec`` and ``enc`` (B, k), and of
    ``aux = (a_idx, a_dec, a_enc)`` (B, ka), grouped by latent (one counting sort): (offsets,
    enc_rows, dec_rows, dec_vals, enc_vals, enc_sums), latent j's entries at
    offsets[j]:offsets[j+1] in entry order (AuxK entries' dec_rows are B + row), enc_sums[j] the
    sum of latent j's enc values. Entries whose dec and enc values are both 0 contribute nothing
    and are left out: the four entry arrays hold offsets[n] entries. All inputs contiguous."""
    B, k = idx.shape
    if aux is not None:
        a_idx, a_dec, a_enc = aux
    else:
        a_idx = torch.empty(B, 0, dtype=torch.long)
        a_dec = a_enc = dec.new_empty(0)
    nnz = B * (k + a_idx.shape[1])
    offsets = torch.empty(n + 1, dtype=torch.long)
    enc_rows = torch.empty(nnz, dtype=torch.long)
    dec_rows = torch.empty(nnz, dtype=torch.long)
    dec_vals = torch.empty(nnz, dtype=dec.dtype)
    enc_vals = torch.empty(nnz, dtype=enc.dtype)
    enc_sums = torch.empty(n, dtype=enc.dtype)
    rc = _loaded().group_by_latent(
        _ptr(idx), _ptr(dec), _ptr(enc), k, _ptr(a_idx), _ptr(a_dec), _ptr(a_enc),
        a_idx.shape[1], B, n, _ptr(offsets), _ptr(enc_rows), _ptr(dec_rows),
        _ptr(dec_vals), _ptr(enc_vals), _ptr(enc_sums),
    )  # fmt: skip
    if rc == -1:
        raise ValueError("a latent index is out of range")
    if rc != 0:
        raise MemoryError("rlsae's latent grouping could not allocate memory")
    nnz = int(offsets[n])
    return offsets, enc_rows[:nnz], dec_rows[:nnz], dec_vals[:nnz], enc_vals[:nnz], enc_sums


def gather_ge(
    pre: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor, t0: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BatchTopK's short rows: (vals, idx, counts) with row s of vals/idx (len(rows), n) holding,
    in its first counts[s] columns, the entries v >= t0 and v > 0 of row rows[s] of the
    contiguous float32 block ``pre`` (+ ``bias`` when given; ``pre`` is only read), in column
    order."""
    B, n = pre.shape
    S = rows.shape[0]
    vals = torch.empty(S, n, dtype=pre.dtype)
    idx = torch.empty(S, n, dtype=torch.long)
    counts = torch.empty(S, dtype=torch.long)
    b = bias.detach().contiguous() if bias is not None else pre
    rows = rows.contiguous()
    if S:
        _loaded().gather_ge_rows(
            _ptr(pre), _ptr(b), int(bias is not None), _ptr(rows), S, n, float(t0),
            _ptr(vals), _ptr(idx), _ptr(counts),
        )  # fmt: skip
    return vals, idx, counts


def kth_largest(
    a: torch.Tensor,
    k: int,
    g: torch.Tensor | None = None,
    g_counts: torch.Tensor | None = None,
) -> float:
    """The k-th largest of the values of the contiguous float32 ``a`` (no NaN) and, where given,
    of the first g_counts[s] of each row s of the contiguous ``g`` (S, stride) (an exact radix
    select; 1 <= k <= their number)."""
    S, gn, gp, cp = 0, 0, None, None
    if g is not None and g_counts is not None and g.shape[0]:
        S, gn, gp, cp = g.shape[0], g.shape[1], _ptr(g), _ptr(g_counts)
    out = torch.empty(1, dtype=torch.float32)
    rc = _loaded().kth_largest(_ptr(a), a.numel(), gp, cp, S, gn, int(k), _ptr(out))
    if rc != 0:
        raise MemoryError("rlsae's BatchTopK threshold search could not allocate memory")
    return float(out)


def batchtopk_assemble(
    cand_vals: torch.Tensor,
    cand_idx: torch.Tensor,
    src: torch.Tensor,
    g_vals: torch.Tensor,
    g_idx: torch.Tensor,
    g_counts: torch.Tensor,
    t: float,
    n: int,
    w: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BatchTopK's kept entries v >= t, v > 0 of every row: row r's entries are its candidates
    ``cand_vals``/``cand_idx`` (B, m), or where src[r] >= 0 the first g_counts[src[r]] of row
    src[r] of ``g_vals``/``g_idx`` (S, stride). (vals, idx, counts): counts (B,) how many each
    row keeps; with ``w`` (>= every count), vals/idx (B, w) hold each row's kept entries in
    source order, then value-0 entries at distinct latents the row does not keep (n - 1 down);
    without, vals/idx are empty. All inputs contiguous."""
    B, m = cand_vals.shape
    counts = torch.empty(B, dtype=torch.long)
    out_v = torch.empty(B, w or 0, dtype=cand_vals.dtype)
    out_i = torch.empty(B, w or 0, dtype=torch.long)
    gn = g_vals.shape[1] if g_vals.ndim == 2 else 0
    rc = _loaded().batchtopk_assemble(
        _ptr(cand_vals), _ptr(cand_idx), m, _ptr(src), _ptr(g_vals), _ptr(g_idx),
        _ptr(g_counts), gn, float(t), B, int(n), int(w or 0),
        _ptr(out_v) if w else None, _ptr(out_i) if w else None, _ptr(counts),
    )  # fmt: skip
    if rc == -2:
        raise ValueError("a row keeps more entries than the output width")
    if rc != 0:
        raise MemoryError("rlsae's BatchTopK assembly could not allocate memory")
    return out_v, out_i, counts


def jumprelu_candidates(
    pre: torch.Tensor,
    bias: torch.Tensor | None,
    lo: torch.Tensor,
    cap: int,
    z: torch.Tensor | None = None,
    idx: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, idx, counts, bad) for the contiguous float32 block ``pre`` (B, n), ``pre += bias``
    in place first when given: each row's entries above ``lo`` (n,), in column order, the first
    ``cap`` of them as values ``z`` (B, cap) and columns ``idx`` (B, cap) (entries past a row's
    count are left as they were), ``counts`` (B,) how many each row has in all (may exceed
    ``cap``), ``bad`` (B,) set where the row holds NaN or inf. ``z`` and ``idx`` are written
    into when given."""
    B, n = pre.shape
    z = torch.empty(B, cap, dtype=pre.dtype) if z is None else z
    idx = torch.empty(B, cap, dtype=torch.long) if idx is None else idx
    counts = torch.empty(B, dtype=torch.long)
    bad = torch.zeros(B, dtype=torch.uint8)
    b = bias.detach().contiguous() if bias is not None else pre
    lo = lo.detach().contiguous()
    rc = _loaded().jumprelu_candidates(
        _ptr(pre), _ptr(b), int(bias is not None), _ptr(lo), B, n, int(cap),
        _ptr(z), _ptr(idx), _ptr(counts), _ptr(bad),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("rlsae's JumpReLU candidate selection could not allocate memory")
    return z, idx, counts, bad


def jumprelu_residual(
    x: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    idx: torch.Tensor,
    vals: torch.Tensor,
    counts: torch.Tensor,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e, sse, gdot) over the first ``counts[r]`` entries of each row of ``idx``/``vals``
    (B, w): e = b_dec + sum vals W_dec[idx] - x, sse = |e|^2 per row, gdot[r, j] =
    e[r] . W_dec[idx[r, j]] at every one of them, value 0 or not (0 past the count). All inputs
    contiguous; e goes into ``out`` if given."""
    B, k = idx.shape
    d = x.shape[1]
    e = torch.empty_like(x) if out is None else out
    sse = torch.empty(B, dtype=x.dtype)
    gdot = torch.empty(B, k, dtype=x.dtype)
    _loaded().jumprelu_residual_rows(
        _ptr(x), _ptr(W_dec), _ptr(b_dec), _ptr(idx), _ptr(vals), _ptr(counts), B, d, k,
        _ptr(e), _ptr(sse), _ptr(gdot),
    )  # fmt: skip
    return e, sse, gdot
