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
 * gdot[r,j]  = e[r] . W[idx[r,j]]
 * The k decoder rows are gathered once per row: the dots find them in cache. Four rows at a
 * time, so four independent multiply-add chains hide the gathers' latency. */
static void residual_range(const float *x, const float *W, const float *b_dec,
                           const int64_t *idx, const float *vals, int64_t d, int64_t k,
                           int64_t r0, int64_t r1, float *e, float *sse, float *gdot) {
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * d;
        float *restrict er = e + r * d;
        const int64_t *ir = idx + r * k;
        const float *vr = vals + r * k;
        float *go = gdot + r * k;
        for (int64_t t = 0; t < d; t++) er[t] = b_dec[t] - xr[t];
        int64_t j = 0;
        for (; j + 4 <= k; j += 4) {
            const float v0 = vr[j], v1 = vr[j + 1], v2 = vr[j + 2], v3 = vr[j + 3];
            const float *restrict w0 = W + ir[j] * d, *restrict w1 = W + ir[j + 1] * d;
            const float *restrict w2 = W + ir[j + 2] * d, *restrict w3 = W + ir[j + 3] * d;
            for (int64_t t = 0; t < d; t++)
                er[t] += (v0 * w0[t] + v1 * w1[t]) + (v2 * w2[t] + v3 * w3[t]);
        }
        for (; j < k; j++) {
            const float v = vr[j];
            const float *restrict w = W + ir[j] * d;
            for (int64_t t = 0; t < d; t++) er[t] += v * w[t];
        }
        float s = 0.0f;
        for (int64_t t = 0; t < d; t++) s += er[t] * er[t];
        sse[r] = s;
        j = 0;
        for (; j + 4 <= k; j += 4) {
            const float *restrict w0 = W + ir[j] * d, *restrict w1 = W + ir[j + 1] * d;
            const float *restrict w2 = W + ir[j + 2] * d, *restrict w3 = W + ir[j + 3] * d;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (int64_t t = 0; t < d; t++) {
                const float q = er[t];
                a0 += q * w0[t];
                a1 += q * w1[t];
                a2 += q * w2[t];
                a3 += q * w3[t];
            }
            go[j] = a0;
            go[j + 1] = a1;
            go[j + 2] = a2;
            go[j + 3] = a3;
        }
        for (; j < k; j++) {
            const float *restrict w = W + ir[j] * d;
            float a = 0.0f;
            for (int64_t t = 0; t < d; t++) a += er[t] * w[t];
            go[j] = a;
        }
    }
}

/* ---- The backward's grouping of the sparse entries by latent (a counting sort) -------------
 * Entries are the main latents (B, k), then the AuxK ones (B, ka). For latent j, positions
 * offsets[j] .. offsets[j+1]-1 receive its entries in entry order (the order of a stable sort,
 * so the sums over them have a fixed order): the entry's row in x (enc_rows), its row in the
 * decoder's dense operand (dec_rows: r for main entries, B + r for AuxK ones) and its two values;
 * also enc_sums[j], the sum of latent j's enc values (the encoder bias gradient). Returns 0, -1 for an index out of range, -2 if memory could not be allocated. */
int group_by_latent(const int64_t *idx, const float *dec, const float *enc, int64_t k,
                    const int64_t *a_idx, const float *a_dec, const float *a_enc, int64_t ka,
                    int64_t B, int64_t n, int64_t *offsets, int64_t *enc_rows,
                    int64_t *dec_rows, float *dec_out, float *enc_out, float *enc_sums) {
    for (int64_t j = 0; j <= n; j++) offsets[j] = 0;
    for (int64_t j = 0; j < n; j++) enc_sums[j] = 0.0f;
    for (int64_t q = 0; q < B * k; q++) {
        if (idx[q] < 0 || idx[q] >= n) return -1;
        offsets[idx[q] + 1]++;
    }
    for (int64_t q = 0; q < B * ka; q++) {
        if (a_idx[q] < 0 || a_idx[q] >= n) return -1;
        offsets[a_idx[q] + 1]++;
    }
    for (int64_t j = 0; j < n; j++) offsets[j + 1] += offsets[j];
    int64_t *next = malloc(sizeof(int64_t) * (n > 0 ? n : 1));
    if (!next) return -2;
    for (int64_t j = 0; j < n; j++) next[j] = offsets[j];
    for (int64_t r = 0; r < B; r++)
        for (int64_t j = 0; j < k; j++) {
            const int64_t q = r * k + j, p = next[idx[q]]++;
            enc_rows[p] = dec_rows[p] = r;
            dec_out[p] = dec[q];
            enc_out[p] = enc[q];
            enc_sums[idx[q]] += enc[q];
        }
    for (int64_t r = 0; r < B; r++)
        for (int64_t j = 0; j < ka; j++) {
            const int64_t q = r * ka + j, p = next[a_idx[q]]++;
            enc_rows[p] = r;
            dec_rows[p] = B + r;
            dec_out[p] = a_dec[q];
            enc_out[p] = a_enc[q];
            enc_sums[a_idx[q]] += a_enc[q];
        }
    free(next);
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
#define RESIDUAL_BODY(a, b) residual_range(x, W, b_dec, idx, vals, d, k, a, b, e, sse, gdot);
    FOR_ROW_RANGES(B, 64, RESIDUAL_BODY)
}
