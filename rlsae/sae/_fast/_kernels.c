/* Native (C) kernels of rlsae's TopK training step, float32 only.
 *
 * Compiled on first use by rlsae/sae/_fast/_native.py with the system C compiler
 * (cc -O3 -march=native -fopenmp) and called through ctypes. Rows are split across OpenMP
 * threads in fixed ranges, each row done by one thread, so results never depend on the number
 * of threads. The OpenMP runtime is the one torch has already loaded (libgomp.so.1): the kernels
 * run on torch's own worker threads, with torch.set_num_threads' count, instead of competing
 * with them for the cores. Every kernel has a pure-torch twin in rlsae/sae/_fast/ (topk.py,
 * loss.py); the tests check them against each other and against a dense reference with plain
 * autograd.
 *
 * Compiled with -fassociative-math (sums may be reordered, as BLAS does) but not
 * -ffinite-math-only: NaN and inf propagate as usual. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Run BODY(a, b) over [0, B) split into one contiguous range per thread (rows below min_rows
 * per thread are not worth a parallel region). */
#ifdef _OPENMP
#define FOR_ROW_RANGES(B, min_rows, BODY)                                                  \
    const int parallel_ = (B) >= 2 * (min_rows);                                             \
    _Pragma("omp parallel if (parallel_)") {                                                 \
        const int64_t nt_ = omp_get_num_threads(), t_ = omp_get_thread_num();             \
        const int64_t step_ = ((B) + nt_ - 1) / nt_;                                         \
        const int64_t a_ = t_ * step_, b_ = a_ + step_ < (B) ? a_ + step_ : (B);             \
        if (a_ < b_) BODY(a_, b_);                                                           \
    }
#else
#define FOR_ROW_RANGES(B, min_rows, BODY) BODY(0, (B))
#endif

int rlsae_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#ifndef PF
#define PF 16
#endif

/* ---- TopK selection ------------------------------------------------------------------------
 * The exact top k of each row of pre (B, n) from its m = n/g strided group maxima
 * (group s = columns s, s+m, s+2m, ...): every top-k entry is >= the k-th largest group maximum,
 * so it lies in a group whose maximum is >= any threshold t1 that at least k maxima reach.
 *   0. (optional) pre[b] + bias into scratch (pre is only read); the group maxima, elementwise
 *      over g contiguous slices of the row while it is in cache.
 *   1. bisect for t1 with k <= count(gm >= t1) (stop once <= 1.5 k).
 *   2. gather the entries >= t1 of the groups whose maximum is >= t1 (about k to 2k).
 *   3. bisect on them for a threshold with exactly k values >= it; where ties make that
 *      impossible, take everything above the tie and fill up with tied values (any choice among
 *      equal values is a valid top k, as with torch.topk).
 * Rows holding NaN or inf get failed[b] = 1 and are left to torch.topk by the caller.
 * Returns 0, or -1 if scratch memory could not be allocated. */
static int select_range(const float *pre, const float *bias, int64_t add_bias, int64_t n, int64_t k,
                        int64_t g, int64_t r0, int64_t r1, float *vals, int64_t *idx,
                        uint8_t *failed) {
    const int64_t m = n / g, half = k / 2;
    float *gm = malloc(sizeof(float) * m), *bad = malloc(sizeof(float) * m);
    float *buf_v = malloc(sizeof(float) * n), *row = malloc(sizeof(float) * n);
    int64_t *sel = malloc(sizeof(int64_t) * m), *buf_i = malloc(sizeof(int64_t) * n);
    int status = 0;
    if (!gm || !bad || !buf_v || !row || !sel || !buf_i) {
        status = -1;
        goto done;
    }
    for (int64_t b = r0; b < r1; b++) {
        const float *p = pre + b * n;
        float *vo = vals + b * k;
        int64_t *io = idx + b * k;
        if (add_bias) { /* the biased row goes to scratch (in cache); pre is only read */
            for (int64_t t = 0; t < n; t++) row[t] = p[t] + bias[t];
            p = row;
        }
        for (int64_t s = 0; s < m; s++) {
            gm[s] = p[s];
            bad[s] = p[s] - p[s]; /* 0, or NaN where the group holds NaN or inf */
        }
        for (int64_t i = 1; i < g; i++) {
            const float *q = p + i * m;
            for (int64_t s = 0; s < m; s++) {
                const float v = q[s];
                gm[s] = v > gm[s] ? v : gm[s];
                bad[s] += v - v;
            }
        }
        /* 1 */
        float lo = gm[0], hi = gm[0];
        int finite = 1;
        for (int64_t s = 0; s < m; s++) {
            finite &= bad[s] == 0.0f;
            lo = gm[s] < lo ? gm[s] : lo;
            hi = gm[s] > hi ? gm[s] : hi;
        }
        if (!finite) {
            failed[b] = 1;
            continue;
        }
        for (int it = 0; it < 64; it++) {
            const float mid = lo + (hi - lo) * 0.5f;
            if (!(lo < mid && mid < hi)) break;
            int64_t c = 0;
            for (int64_t s = 0; s < m; s++) c += gm[s] >= mid;
            if (c >= k) {
                lo = mid;
                if (c <= k + half) break;
            } else {
                hi = mid;
            }
        }
        const float t1 = lo;
        /* 2 */
        int64_t ns = 0, cnt = 0;
        for (int64_t s = 0; s < m; s++) {
            sel[ns] = s;
            ns += gm[s] >= t1;
        }
        for (int64_t q = 0; q < ns; q++) {
            int64_t j = sel[q];
            for (int64_t i = 0; i < g; i++, j += m) {
                const float v = p[j];
                buf_v[cnt] = v;
                buf_i[cnt] = j;
                cnt += v >= t1;
            }
        }
        /* 3 */
        float lo_t = t1, hi_t = buf_v[0];
        for (int64_t q = 0; q < cnt; q++) hi_t = buf_v[q] > hi_t ? buf_v[q] : hi_t;
        int64_t cur = cnt;
        if (cur > k) {
            for (int it = 0; it < 200; it++) {
                const float mid = lo_t + (hi_t - lo_t) * 0.5f;
                if (!(lo_t < mid && mid < hi_t)) break;
                int64_t c = 0;
                for (int64_t q = 0; q < cnt; q++) c += buf_v[q] >= mid;
                if (c >= k) {
                    lo_t = mid;
                    cur = c;
                    if (c == k) break;
                } else {
                    hi_t = mid;
                }
            }
        }
        int64_t o = 0;
        if (cur == k) {
            for (int64_t q = 0; q < cnt; q++)
                if (buf_v[q] >= lo_t) {
                    vo[o] = buf_v[q];
                    io[o++] = buf_i[q];
                }
            continue;
        }
        const float mid = lo_t + (hi_t - lo_t) * 0.5f;
        if (lo_t < mid && mid < hi_t) { /* not resolved (cannot happen for finite values) */
            failed[b] = 1;
            continue;
        }
        /* ties at the k-th value: no float lies strictly between lo_t and hi_t, so the values
         * in [lo_t, hi_t) are all equal: everything >= hi_t first, then as many ties as needed */
        for (int64_t q = 0; q < cnt && o < k; q++)
            if (buf_v[q] >= hi_t) {
                vo[o] = buf_v[q];
                io[o++] = buf_i[q];
            }
        for (int64_t q = 0; q < cnt && o < k; q++)
            if (lo_t <= buf_v[q] && buf_v[q] < hi_t) {
                vo[o] = buf_v[q];
                io[o++] = buf_i[q];
            }
    }
done:
    free(gm);
    free(bad);
    free(buf_v);
    free(row);
    free(sel);
    free(buf_i);
    return status;
}

/* ---- Decoder, residual and the latents' gradient dots, row by row --------------------------
 * e[r]       = b_dec + sum_j vals[r,j] W[idx[r,j]] - x[r]       (reconstruction minus input)
 * sse[r]     = |e[r]|^2
 * gdot[r,j]  = e[r] . W[idx[r,j]]   where vals[r,j] != 0; 0 where vals[r,j] == 0
 * Entries of value 0 (a ReLU'd latent, BatchTopK's padding) decode to nothing and are skipped:
 * every consumer of gdot multiplies it by a mask of vals > 0. The k decoder rows are gathered
 * once per row: the dots find them in cache. Four entries at a time, so four independent
 * multiply-add chains hide the gathers' latency (without zeros, entries 4i..4i+3 together). */
static inline int next4(const float *vr, int64_t m, int64_t *j, int64_t p[4], int skip_zero) {
    int c = 0;
    while (c < 4 && *j < m) {
        const int64_t q = (*j)++;
        if (!skip_zero || vr[q] != 0.0f) p[c++] = q;
    }
    return c;
}

/* counts == NULL: every row's k entries; else row r's first min(counts[r], k) (the rest is
 * padding, gdot 0). all_dots: gdot at every one of those entries, value 0 or not (JumpReLU's
 * threshold gradient needs it at inactive entries inside the band); else at non-zero ones. */
static void residual_range(const float *x, const float *W, const float *b_dec,
                           const int64_t *idx, const float *vals, const int64_t *counts,
                           int all_dots, int64_t d, int64_t k, int64_t r0, int64_t r1, float *e,
                           float *sse, float *gdot) {
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * d;
        float *restrict er = e + r * d;
        const int64_t *ir = idx + r * k;
        const float *vr = vals + r * k;
        float *go = gdot + r * k;
        const int64_t m = counts == NULL ? k : (counts[r] < k ? counts[r] : k);
        for (int64_t t = 0; t < d; t++) er[t] = b_dec[t] - xr[t];
        int64_t j = 0, p[4];
        int c;
        while ((c = next4(vr, m, &j, p, 1)) == 4) {
            const float v0 = vr[p[0]], v1 = vr[p[1]], v2 = vr[p[2]], v3 = vr[p[3]];
            const float *restrict w0 = W + ir[p[0]] * d, *restrict w1 = W + ir[p[1]] * d;
            const float *restrict w2 = W + ir[p[2]] * d, *restrict w3 = W + ir[p[3]] * d;
            for (int64_t t = 0; t < d; t++)
                er[t] += (v0 * w0[t] + v1 * w1[t]) + (v2 * w2[t] + v3 * w3[t]);
        }
        for (int q = 0; q < c; q++) {
            const float v = vr[p[q]];
            const float *restrict w = W + ir[p[q]] * d;
            for (int64_t t = 0; t < d; t++) er[t] += v * w[t];
        }
        float s = 0.0f;
        for (int64_t t = 0; t < d; t++) s += er[t] * er[t];
        sse[r] = s;
        for (int64_t q = 0; q < k; q++) go[q] = 0.0f;
        j = 0;
        while ((c = next4(vr, m, &j, p, !all_dots)) == 4) {
            const float *restrict w0 = W + ir[p[0]] * d, *restrict w1 = W + ir[p[1]] * d;
            const float *restrict w2 = W + ir[p[2]] * d, *restrict w3 = W + ir[p[3]] * d;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (int64_t t = 0; t < d; t++) {
                const float q = er[t];
                a0 += q * w0[t];
                a1 += q * w1[t];
                a2 += q * w2[t];
                a3 += q * w3[t];
            }
            go[p[0]] = a0;
            go[p[1]] = a1;
            go[p[2]] = a2;
            go[p[3]] = a3;
        }
        for (int q = 0; q < c; q++) {
            const float *restrict w = W + ir[p[q]] * d;
            float a = 0.0f;
            for (int64_t t = 0; t < d; t++) a += er[t] * w[t];
            go[p[q]] = a;
        }
    }
}

/* ---- The backward's grouping of the sparse entries by latent (a counting sort) -------------
 * Entries are the main latents (B, k), then the AuxK ones (B, ka). For latent j, positions
 * offsets[j] .. offsets[j+1]-1 receive its entries in entry order (the order of a stable sort,
 * so the sums over them have a fixed order): the entry's row in x (enc_rows), its row in the
 * decoder's dense operand (dec_rows: r for main entries, B + r for AuxK ones) and its two values;
 * also enc_sums[j], the sum of latent j's enc values (the encoder bias gradient). Entries whose
 * dec and enc values are both 0 (a ReLU'd latent, BatchTopK's padding) add nothing to any of
 * the products and are left out (their index is not read): offsets[n] is the number of entries
 * placed. Returns 0, -1 for an index out of range, -2 if memory could not be allocated. */
int group_by_latent(const int64_t *idx, const float *dec, const float *enc, int64_t k,
                    const int64_t *a_idx, const float *a_dec, const float *a_enc, int64_t ka,
                    int64_t B, int64_t n, int64_t *offsets, int64_t *enc_rows,
                    int64_t *dec_rows, float *dec_out, float *enc_out, float *enc_sums) {
    for (int64_t j = 0; j <= n; j++) offsets[j] = 0;
    for (int64_t j = 0; j < n; j++) enc_sums[j] = 0.0f;
    for (int64_t q = 0; q < B * k; q++) {
        if (dec[q] == 0.0f && enc[q] == 0.0f) continue; /* left out: its index is never read */
        if (idx[q] < 0 || idx[q] >= n) return -1;
        offsets[idx[q] + 1]++;
    }
    for (int64_t q = 0; q < B * ka; q++) {
        if (a_dec[q] == 0.0f && a_enc[q] == 0.0f) continue;
        if (a_idx[q] < 0 || a_idx[q] >= n) return -1;
        offsets[a_idx[q] + 1]++;
    }
    for (int64_t j = 0; j < n; j++) offsets[j + 1] += offsets[j];
    int64_t *next = malloc(sizeof(int64_t) * (n > 0 ? n : 1));
    if (!next) return -2;
    for (int64_t j = 0; j < n; j++) next[j] = offsets[j];
    for (int64_t r = 0; r < B; r++)
        for (int64_t j = 0; j < k; j++) {
            const int64_t q = r * k + j;
            if (dec[q] == 0.0f && enc[q] == 0.0f) continue;
            const int64_t p = next[idx[q]]++;
            enc_rows[p] = dec_rows[p] = r;
            dec_out[p] = dec[q];
            enc_out[p] = enc[q];
            enc_sums[idx[q]] += enc[q];
        }
    for (int64_t r = 0; r < B; r++)
        for (int64_t j = 0; j < ka; j++) {
            const int64_t q = r * ka + j;
            if (a_dec[q] == 0.0f && a_enc[q] == 0.0f) continue;
            const int64_t p = next[a_idx[q]]++;
            enc_rows[p] = r;
            dec_rows[p] = B + r;
            dec_out[p] = a_dec[q];
            enc_out[p] = a_enc[q];
            enc_sums[a_idx[q]] += a_enc[q];
        }
    free(next);
    return 0;
}

/* ---- BatchTopK: the rest of a short row's entries ------------------------------------------
 * For each listed row r = rows[s] of pre (B, n) (plus bias where add_bias; pre is only read):
 * its entries v with v >= t0 and v > 0, in column order, into vals[s, :] and idx[s, :] (row
 * stride n), counts[s] how many. Branch-free: a write at every column, the position advancing
 * only past a taken entry. */
static void gather_ge_range(const float *pre, const float *bias, int64_t add_bias,
                            const int64_t *rows, int64_t n, float t0, int64_t s0, int64_t s1,
                            float *vals, int64_t *idx, int64_t *counts) {
    for (int64_t s = s0; s < s1; s++) {
        const float *p = pre + rows[s] * n;
        float *vo = vals + s * n;
        int64_t *io = idx + s * n;
        int64_t c = 0;
        for (int64_t j = 0; j < n; j++) {
            const float v = add_bias ? p[j] + bias[j] : p[j];
            vo[c] = v;
            io[c] = j;
            c += (v >= t0) & (v > 0.0f);
        }
        counts[s] = c;
    }
}

/* ---- BatchTopK: every row's kept entries, compacted ----------------------------------------
 * Row r's entries are its m candidates cv/ci (B, m) or, where src[r] >= 0, the gc[src[r]]
 * gathered entries of row src[r] of gv/gi (row stride gn). Kept: v >= t and v > 0. counts[r]
 * = how many row r keeps. With out_v given, row r of out_v/out_i (B, w) gets its kept entries
 * in source order, then w - counts[r] entries of value 0 at distinct latents it does not keep
 * (from n - 1 down), so a row never names a latent twice. Returns 0, -1 if scratch memory
 * could not be allocated, -2 if a row keeps more than w. */
static int assemble_range(const float *cv, const int64_t *ci, int64_t m, const int64_t *src,
                          const float *gv, const int64_t *gi, const int64_t *gc, int64_t gn,
                          float t, int64_t n, int64_t w, int64_t r0, int64_t r1, float *out_v,
                          int64_t *out_i, int64_t *counts) {
    uint8_t *mark = out_v ? calloc(n > 0 ? n : 1, 1) : NULL;
    if (out_v && !mark) return -1;
    int status = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *v = src[r] >= 0 ? gv + src[r] * gn : cv + r * m;
        const int64_t *ix = src[r] >= 0 ? gi + src[r] * gn : ci + r * m;
        const int64_t len = src[r] >= 0 ? gc[src[r]] : m;
        int64_t c = 0;
        if (!out_v) {
            for (int64_t q = 0; q < len; q++) c += (v[q] >= t) & (v[q] > 0.0f);
            counts[r] = c;
            continue;
        }
        float *vo = out_v + r * w;
        int64_t *io = out_i + r * w;
        for (int64_t q = 0; q < len; q++)
            if (v[q] >= t && v[q] > 0.0f) {
                if (c == w) {
                    status = -2;
                    break;
                }
                vo[c] = v[q];
                io[c++] = ix[q];
            }
        counts[r] = c;
        if (status) break;
        for (int64_t q = 0; q < c; q++) mark[io[q]] = 1;
        for (int64_t j = n - 1, o = c; o < w && j >= 0; j--)
            if (!mark[j]) {
                vo[o] = 0.0f;
                io[o++] = j;
            }
        for (int64_t q = 0; q < c; q++) mark[io[q]] = 0;
    }
    free(mark);
    return status;
}

/* ---- BatchTopK: the k-th largest value -----------------------------------------------------
 * Of the na values a[0..na) and, for each of S rows s, the gc[s] values g[s * gn ..]: a radix
 * select on the values' order-preserving 32-bit keys (1 <= k <= their number; no NaN), on one
 * thread (about 0.5 ms for 262,144 values; a parallel region cost more on a shared machine). The
 * top 11 bits are counted over all values, the values in the bucket holding the k-th largest
 * are collected, and the next 11 + 10 bits are counted over those only. Exact: the k-th largest
 * is one of the values. *out = it; returns 0, or -1 if memory could not be allocated. */
static inline uint32_t order_key(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

int kth_largest(const float *a, int64_t na, const float *g, const int64_t *gc, int64_t S,
                int64_t gn, int64_t k, float *out) {
    int64_t hist[2048];
    memset(hist, 0, sizeof hist);
    for (int64_t q = 0; q < na; q++) hist[order_key(a[q]) >> 21]++;
    for (int64_t s = 0; s < S; s++)
        for (int64_t q = 0; q < gc[s]; q++) hist[order_key(g[s * gn + q]) >> 21]++;
    uint32_t top = 2047;
    for (; top > 0 && hist[top] < k; top--) k -= hist[top];
    uint32_t *buf = malloc(sizeof(uint32_t) * (hist[top] > 0 ? hist[top] : 1));
    if (!buf) return -1;
    int64_t nb = 0;
    for (int64_t q = 0; q < na; q++) {
        const uint32_t u = order_key(a[q]);
        if ((u >> 21) == top) buf[nb++] = u;
    }
    for (int64_t s = 0; s < S; s++)
        for (int64_t q = 0; q < gc[s]; q++) {
            const uint32_t u = order_key(g[s * gn + q]);
            if ((u >> 21) == top) buf[nb++] = u;
        }
    uint32_t prefix = top << 21, mask = 0xffe00000u;
    static const int shifts[2] = {10, 0}, widths[2] = {11, 10};
    for (int level = 0; level < 2; level++) {
        const int sh = shifts[level];
        const uint32_t bits = (1u << widths[level]) - 1u;
        for (uint32_t b = 0; b <= bits; b++) hist[b] = 0;
        for (int64_t q = 0; q < nb; q++)
            if ((buf[q] & mask) == prefix) hist[(buf[q] >> sh) & bits]++;
        uint32_t b = bits;
        for (; b > 0 && hist[b] < k; b--) k -= hist[b];
        prefix |= b << sh;
        mask |= bits << sh;
    }
    free(buf);
    const uint32_t u = (prefix & 0x80000000u) ? (prefix & 0x7fffffffu) : ~prefix;
    memcpy(out, &u, sizeof u);
    return 0;
}

/* ---- Entry points: all B rows, in parallel -------------------------------------------------- */

/* Returns 0, or -1 if a thread could not allocate its scratch memory. */
int select_rows(const float *pre, const float *bias, int64_t add_bias, int64_t B, int64_t n, int64_t k,
                int64_t g, float *vals, int64_t *idx, uint8_t *failed) {
    int status = 0;
#define SELECT_BODY(a, b)                                                                    \
    if (select_range(pre, bias, add_bias, n, k, g, a, b, vals, idx, failed) != 0) status = -1;
    FOR_ROW_RANGES(B, 128, SELECT_BODY)
    return status;
}

void residual_rows(const float *x, const float *W, const float *b_dec, const int64_t *idx,
                   const float *vals, int64_t B, int64_t d, int64_t k, float *e, float *sse,
                   float *gdot) {
#define RESIDUAL_BODY(a, b)                                                                  \
    residual_range(x, W, b_dec, idx, vals, NULL, 0, d, k, a, b, e, sse, gdot);
    FOR_ROW_RANGES(B, 64, RESIDUAL_BODY)
}

void gather_ge_rows(const float *pre, const float *bias, int64_t add_bias, const int64_t *rows,
                    int64_t S, int64_t n, float t0, float *vals, int64_t *idx, int64_t *counts) {
#define GATHER_GE_BODY(a, b) gather_ge_range(pre, bias, add_bias, rows, n, t0, a, b, vals, idx, counts);
    FOR_ROW_RANGES(S, 16, GATHER_GE_BODY)
}

int batchtopk_assemble(const float *cv, const int64_t *ci, int64_t m, const int64_t *src,
                       const float *gv, const int64_t *gi, const int64_t *gc, int64_t gn, float t,
                       int64_t B, int64_t n, int64_t w, float *out_v, int64_t *out_i,
                       int64_t *counts) {
    int status = 0;
#define ASSEMBLE_BODY(a, b)                                                                  \
    {                                                                                        \
        const int rc_ = assemble_range(cv, ci, m, src, gv, gi, gc, gn, t, n, w, a, b, out_v, \
                                       out_i, counts);                                       \
        if (rc_ != 0) status = rc_;                                                          \
    }
    FOR_ROW_RANGES(B, 128, ASSEMBLE_BODY)
    return status;
}

#include <float.h>

/* ---- JumpReLU: the candidate entries of each row, above a per-column lower bound ------------
 * For row r of pre (B, n): with add_bias, pre[r] += bias first (in place: the block then holds
 * the pre-activations); the entries with pre[r, j] > lo[j], in column order, the first cap of
 * them into z[r, :] (values) and idx[r, :] (columns); counts[r] = how many there are in all (may
 * exceed cap: the caller runs again with a wider cap and add_bias 0); bad[r] = 1 where the row
 * holds NaN or inf. Each row is gathered branch-free into a scratch row first (a write at every
 * column, the position advancing only past a kept entry), then copied out.
 * Returns 0, or -1 if a thread could not allocate its scratch memory. */
static int candidates_range(float *pre, const float *bias, int64_t add_bias, const float *lo,
                            int64_t n, int64_t cap, int64_t r0, int64_t r1, float *z,
                            int64_t *idx, int64_t *counts, uint8_t *bad) {
    float *sv = malloc(sizeof(float) * (n + 1));
    int64_t *si = malloc(sizeof(int64_t) * (n + 1));
    if (!sv || !si) {
        free(sv);
        free(si);
        return -1;
    }
    for (int64_t r = r0; r < r1; r++) {
        float *p = pre + r * n;
        if (add_bias)
            for (int64_t j = 0; j < n; j++) p[j] += bias[j];
        int64_t c = 0, finite = 0;
        for (int64_t j = 0; j < n; j++) {
            const float v = p[j];
            finite += (v >= -FLT_MAX) & (v <= FLT_MAX); /* false for NaN and inf */
            sv[c] = v;
            si[c] = j;
            c += v > lo[j];
        }
        counts[r] = c;
        bad[r] = finite != n;
        const int64_t m = c < cap ? c : cap;
        float *zo = z + r * cap;
        int64_t *io = idx + r * cap;
        for (int64_t q = 0; q < m; q++) {
            zo[q] = sv[q];
            io[q] = si[q];
        }
    }
    free(sv);
    free(si);
    return 0;
}

int jumprelu_candidates(float *pre, const float *bias, int64_t add_bias, const float *lo,
                        int64_t B, int64_t n, int64_t cap, float *z, int64_t *idx,
                        int64_t *counts, uint8_t *bad) {
    int status = 0;
#define CANDIDATES_BODY(a, b)                                                                \
    if (candidates_range(pre, bias, add_bias, lo, n, cap, a, b, z, idx, counts, bad) != 0)     \
        status = -1;
    FOR_ROW_RANGES(B, 64, CANDIDATES_BODY)
    return status;
}

/* ---- JumpReLU: residual and the candidates' gradient dots, row by row ------------------------
 * residual_range over the first counts[r] entries of row r (the candidates; the rest is padding,
 * gdot 0), with gdot at every candidate, value 0 or not. */
void jumprelu_residual_rows(const float *x, const float *W, const float *b_dec,
                            const int64_t *idx, const float *vals, const int64_t *counts,
                            int64_t B, int64_t d, int64_t k, float *e, float *sse, float *gdot) {
#define JR_RESIDUAL_BODY(a, b)                                                               \
    residual_range(x, W, b_dec, idx, vals, counts, 1, d, k, a, b, e, sse, gdot);
    FOR_ROW_RANGES(B, 64, JR_RESIDUAL_BODY)
}
