/* The micro-kernels, instantiated per ISA and type by defining before inclusion:
 *   KERNEL_NAME, DOT_NAME (optional), REAL, VEC, VLEN (elements per vector), NV (vectors
 *   per row), MR (rows), DMR x DNR (the dot kernel's tile), VLOAD, VSTORE,
 *   VLOADN / VSTOREN (the first r lanes; a load zeroes the others), VSET1,
 *   VZERO, VFMA(a, b, c) = a * b + c, VADD, VSTREAM (a non-temporal store
 *   to an address aligned to the vector), with ZIP_NAME VZIPLO / VZIPHI (the
 *   first and second halves of the lanes of a and b interleaved; also for
 *   ZIPADD_NAME, and PACK_NAME where MR is 8), with GATHER_NAME VUNZIP (the even
 *   lanes of a followed by those of b).
 * NR = NV * VLEN. Accumulator tiles live in registers. KERNEL_NAME_rows is the
 * same kernel reading B row k at b_rows[k] + boff (implicit GEMM: rows of the
 * padded input, no unfolded copy). The names that belong to one inclusion (NV,
 * the *_NAME ones, VZIPLO, VZIPHI, VUNZIP) are undefined at its end; the
 * type's macros are the includer's to undefine. */

#define NR (NV * VLEN)
#define PTC_KCAT2(a, b) a##b
#define PTC_KCAT(a, b) PTC_KCAT2(a, b)

static inline __attribute__((always_inline)) void PTC_KCAT(KERNEL_NAME, _body)(
    int64_t kc, const REAL *a, const REAL *b, int64_t ldb, const REAL *const *b_rows,
    int64_t boff, REAL *c, int64_t ldc, int flags, int64_t mr, int64_t nr)
{
    VEC acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[i][v] = VZERO;

    for (int64_t k = 0; k < kc; k++) {
        const REAL *bk = b_rows ? b_rows[k] + boff : b + k * ldb;
        VEC bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) bv[v] = VLOAD(bk + v * VLEN);
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            VEC ai = VSET1(a[i]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[i][v] = VFMA(ai, bv[v], acc[i][v]);
        }
        a += MR;
    }

    if (mr == MR && nr == NR) {
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) {
                REAL *ci = c + i * ldc + v * VLEN;
                VEC r = flags & PTC_TILE_ADD ? VADD(VLOAD(ci), acc[i][v]) : acc[i][v];
                if (flags & PTC_TILE_STREAM)
                    VSTREAM(ci, r);
                else
                    VSTORE(ci, r);
            }
        return;
    }
    REAL tile[MR * NR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) VSTORE(tile + i * NR + v * VLEN, acc[i][v]);
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++)
            c[i * ldc + j] = flags & PTC_TILE_ADD ? c[i * ldc + j] + tile[i * NR + j]
                                                  : tile[i * NR + j];
}

static void KERNEL_NAME(int64_t kc, const REAL *a, const REAL *b, int64_t ldb, REAL *c,
                        int64_t ldc, int flags, int64_t mr, int64_t nr)
{
    PTC_KCAT(KERNEL_NAME, _body)(kc, a, b, ldb, NULL, 0, c, ldc, flags, mr, nr);
}

static void PTC_KCAT(KERNEL_NAME, _rows)(int64_t kc, const REAL *a, const REAL *const *b_rows,
                                          int64_t boff, REAL *c, int64_t ldc, int flags,
                                          int64_t mr, int64_t nr)
{
    PTC_KCAT(KERNEL_NAME, _body)(kc, a, NULL, 0, b_rows, boff, c, ldc, flags, mr, nr);
}

#ifdef DOT_NAME
/* The dot kernel: for i < DMR, j < DNR, the VLEN lane-wise partial sums
 *   c[i * ldc + j * VLEN + l] (+)= sum over runs r, k < kv_r of
 *       a[i * lda + aoff_r + k * VLEN + l] * b[j][boff_r + k * VLEN + l],
 * lanes l >= tail_r of a run's last vector (tail_r > 0) neither read nor added.
 * Both operands are rows contiguous along the reduction, as dY and unfolded
 * patches (or shifted rows of the padded input) are, so nothing is
 * transposed; the runs (one for unfolded patches, the planes of the padded
 * grid for shifted rows) share the tile's registers, and the lanes are summed
 * once, by the caller, at the end. */
static void DOT_NAME(int64_t nruns, const ptc_dot_run *runs, const REAL *a, int64_t lda,
                     const REAL *const *b, REAL *c, int64_t ldc, int accumulate)
{
    VEC acc[DMR][DNR];
#pragma GCC unroll 8
    for (int i = 0; i < DMR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < DNR; j++) acc[i][j] = VZERO;
    for (int64_t r = 0; r < nruns; r++) {
        const REAL *ar = a + runs[r].aoff;
        const REAL *br[DNR];
#pragma GCC unroll 8
        for (int j = 0; j < DNR; j++) br[j] = b[j] + runs[r].boff;
        int64_t tail = runs[r].tail, kv = runs[r].kv - (tail > 0);
        for (int64_t k = 0; k < kv; k++) {
            VEC av[DMR];
#pragma GCC unroll 8
            for (int i = 0; i < DMR; i++) av[i] = VLOAD(ar + i * lda + k * VLEN);
#pragma GCC unroll 8
            for (int j = 0; j < DNR; j++) {
                VEC bj = VLOAD(br[j] + k * VLEN);
#pragma GCC unroll 8
                for (int i = 0; i < DMR; i++) acc[i][j] = VFMA(av[i], bj, acc[i][j]);
            }
        }
        if (tail > 0) { /* lanes past the end are zeros in both: whatever lies there */
            VEC av[DMR];
#pragma GCC unroll 8
            for (int i = 0; i < DMR; i++) av[i] = VLOADN(ar + i * lda + kv * VLEN, tail);
#pragma GCC unroll 8
            for (int j = 0; j < DNR; j++) {
                VEC bj = VLOADN(br[j] + kv * VLEN, tail);
#pragma GCC unroll 8
                for (int i = 0; i < DMR; i++) acc[i][j] = VFMA(av[i], bj, acc[i][j]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < DMR; i++)
#pragma GCC unroll 8
        for (int j = 0; j < DNR; j++) {
            REAL *cij = c + i * ldc + j * VLEN;
            VSTORE(cij, accumulate ? VADD(VLOAD(cij), acc[i][j]) : acc[i][j]);
        }
}
#endif

#ifdef AXPY_NAME
/* y[i * incy] += a * x[i * incx] for i < n: vectorised when both are contiguous. */
static void AXPY_NAME(int64_t n, REAL a, const REAL *x, int64_t incx, REAL *y, int64_t incy)
{
    int64_t i = 0;
    if (incx == 1 && incy == 1) {
        VEC va = VSET1(a);
        for (; i + VLEN <= n; i += VLEN) VSTORE(y + i, VFMA(va, VLOAD(x + i), VLOAD(y + i)));
    }
    for (; i < n; i++) y[i * incy] += a * x[i * incx];
}
#endif

#ifdef TAPS_NAME
/* Direct kernels of depthwise convolutions, a plane at a time: `rows` rows of
 * n outputs, row j's taps (kernel offsets) reading the input rows x +
 * row_off[j] + tap_off[t], each contiguous. A row's last partial vector is
 * loaded and stored masked (VLOADN/VSTOREN: r lanes). The rows loop here,
 * not in the caller: a 3x3 kernel's row of 56 outputs is some 40 FMAs, no
 * more than a call and the row's tap pointers cost.
 *
 * TAPS_NAME: y[j * n + i] = sum_t w[t] * x[row_off[j] + tap_off[t] + i],
 * summed over t in order. A block of up to TAPS_U vectors of outputs stays
 * in registers across all taps and is stored once: each output costs ntaps
 * loads, and the block's independent sums hide the latency of the FMAs. */
#define TAPS_U 4
static inline __attribute__((always_inline)) void PTC_KCAT(TAPS_NAME, _block)(
    int u, int64_t r, int64_t i, int64_t ntaps, const REAL *x, const int64_t *tap_off,
    const REAL *w, REAL *y)
{
    /* u whole vectors from i, then one of r lanes (0 <= r < VLEN) */
    VEC acc[TAPS_U + 1];
#pragma GCC unroll 5
    for (int v = 0; v <= u; v++) acc[v] = VZERO;
    for (int64_t t = 0; t < ntaps; t++) {
        VEC wt = VSET1(w[t]);
        const REAL *s = x + tap_off[t] + i;
#pragma GCC unroll 4
        for (int v = 0; v < u; v++) acc[v] = VFMA(wt, VLOAD(s + v * VLEN), acc[v]);
        if (r) acc[u] = VFMA(wt, VLOADN(s + u * VLEN, r), acc[u]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < u; v++) VSTORE(y + i + v * VLEN, acc[v]);
    if (r) VSTOREN(y + i + u * VLEN, r, acc[u]);
}

static void TAPS_NAME(int64_t rows, int64_t n, const REAL *x, const int64_t *row_off,
                      const int64_t *tap_off, int64_t ntaps, const REAL *w, REAL *y)
{
    int64_t body = n - n % (TAPS_U * VLEN), r = (n - body) % VLEN, u = (n - body) / VLEN;
    for (int64_t j = 0; j < rows; j++, y += n) {
        const REAL *xj = x + row_off[j];
        for (int64_t i = 0; i < body; i += TAPS_U * VLEN)
            PTC_KCAT(TAPS_NAME, _block)(TAPS_U, 0, i, ntaps, xj, tap_off, w, y);
        switch (u) {
        case 0: if (r) PTC_KCAT(TAPS_NAME, _block)(0, r, body, ntaps, xj, tap_off, w, y); break;
        case 1: PTC_KCAT(TAPS_NAME, _block)(1, r, body, ntaps, xj, tap_off, w, y); break;
        case 2: PTC_KCAT(TAPS_NAME, _block)(2, r, body, ntaps, xj, tap_off, w, y); break;
        default: PTC_KCAT(TAPS_NAME, _block)(3, r, body, ntaps, xj, tap_off, w, y); break;
        }
    }
}

/* TAPDOT_NAME: acc[t][l] += sum over rows j, then i < n with i % VLEN == l,
 * of dy[j * n + i] * x[row_off[j] + tap_off[t] + i], the lane-wise partial
 * sums of the weight gradient's dot products, which the caller reduces once
 * at the end. Up to TAPDOT_MAX taps share each load of dy, their sums held in
 * registers across the plane's rows; a row's last partial vector is read
 * masked, its missing lanes zero in both operands. */
#define TAPDOT_MAX 12
static inline __attribute__((always_inline)) void PTC_KCAT(TAPDOT_NAME, _chunk)(
    int nt, int64_t rows, int64_t n, const REAL *x, const int64_t *row_off,
    const int64_t *tap_off, const REAL *dy, REAL *const *acc)
{
    VEC a[TAPDOT_MAX];
    int64_t r = n % VLEN, body = n - r;
#pragma GCC unroll 12
    for (int t = 0; t < nt; t++) a[t] = VLOAD(acc[t]);
    for (int64_t j = 0; j < rows; j++, dy += n) {
        const REAL *xj = x + row_off[j];
        for (int64_t i = 0; i < body; i += VLEN) {
            VEC d = VLOAD(dy + i);
#pragma GCC unroll 12
            for (int t = 0; t < nt; t++) a[t] = VFMA(VLOAD(xj + tap_off[t] + i), d, a[t]);
        }
        if (r) {
            VEC d = VLOADN(dy + body, r);
#pragma GCC unroll 12
            for (int t = 0; t < nt; t++)
                a[t] = VFMA(VLOADN(xj + tap_off[t] + body, r), d, a[t]);
        }
    }
#pragma GCC unroll 12
    for (int t = 0; t < nt; t++) VSTORE(acc[t], a[t]);
}

static void TAPDOT_NAME(int64_t rows, int64_t n, const REAL *x, const int64_t *row_off,
                        const int64_t *tap_off, int64_t ntaps, const REAL *dy, REAL *const *acc)
{
    /* Even chunks: 9 taps are one chunk, 27 three of 9, not 12 + 12 + 3. */
    int64_t chunks = (ntaps + TAPDOT_MAX - 1) / TAPDOT_MAX;
    for (int64_t t0 = 0; t0 < ntaps; chunks--) {
        int64_t nt = (ntaps - t0 + chunks - 1) / chunks;
#define PTC_TAPDOT_CASE(k)                                                                     \
    case k:                                                                                    \
        PTC_KCAT(TAPDOT_NAME, _chunk)(k, rows, n, x, row_off, tap_off + t0, dy, acc + t0);    \
        break;
        switch (nt) {
            PTC_TAPDOT_CASE(1) PTC_TAPDOT_CASE(2) PTC_TAPDOT_CASE(3) PTC_TAPDOT_CASE(4)
            PTC_TAPDOT_CASE(5) PTC_TAPDOT_CASE(6) PTC_TAPDOT_CASE(7) PTC_TAPDOT_CASE(8)
            PTC_TAPDOT_CASE(9) PTC_TAPDOT_CASE(10) PTC_TAPDOT_CASE(11) PTC_TAPDOT_CASE(12)
        }
#undef PTC_TAPDOT_CASE
        t0 += nt;
    }
}
#undef TAPS_U
#undef TAPDOT_MAX
#endif

#ifdef STREAM_NAME
/* dst[i] = src[i] for i < n: the whole 64-byte lines of dst with VSTREAM,
 * non-temporal stores, which neither read the line first nor keep it in the
 * caches; the partial lines at either end (all of dst if its elements are
 * not aligned) with ordinary stores. For outputs far larger than the caches,
 * whose lines would otherwise each be read in, written, and evicted. */
static void STREAM_NAME(int64_t n, const REAL *src, REAL *dst)
{
    const int64_t line = 64 / (int64_t)sizeof(REAL);
    int64_t head = (int64_t)((64 - (uintptr_t)dst % 64) % 64);
    int64_t i = head % (int64_t)sizeof(REAL) ? n : head / (int64_t)sizeof(REAL);
    if (i > n) i = n;
    for (int64_t j = 0; j < i; j++) dst[j] = src[j];
    for (; i + line <= n; i += line)
#pragma GCC unroll 16
        for (int64_t v = 0; v < line; v += VLEN) VSTREAM(dst + i + v, VLOAD(src + i + v));
    for (; i < n; i++) dst[i] = src[i];
}
#endif

#ifdef ZIP_NAME
/* For each of `rows` rows i (a_i = a + i * lda, b_i = a_i + boff, d_i = dst +
 * i * ldd): d_i[2j] = a_i[j], d_i[2j + 1] = b_i[j] for j < n. Two rows
 * interleaved: the last dimension's two kernel offsets of a 2x2 stride-2
 * upsampling. VLEN positions at a time make two vectors, VZIPLO and VZIPHI;
 * a row's last r < VLEN positions are loaded and stored masked, so that rows
 * shorter than a vector (6 or 8 positions in 5-d and 4-d) stay vectors too,
 * and many rows per call keep the short ones' latencies overlapping. With
 * `stream`, a vector that fills a 64-byte line goes out with VSTREAM: the
 * line written whole, not read first. */
static void ZIP_NAME(int64_t rows, int64_t n, const REAL *a, int64_t lda, int64_t boff,
                     REAL *dst, int64_t ldd, int stream)
{
    int64_t r = n % VLEN, body = n - r;
    for (int64_t i = 0; i < rows; i++, a += lda, dst += ldd) {
        const REAL *b = a + boff;
        int nt = stream && (uintptr_t)dst % 64 == 0;
        for (int64_t j = 0; j < body; j += VLEN) {
            VEC va = VLOAD(a + j), vb = VLOAD(b + j);
            if (nt) {
                VSTREAM(dst + 2 * j, VZIPLO(va, vb));
                VSTREAM(dst + 2 * j + VLEN, VZIPHI(va, vb));
            } else {
                VSTORE(dst + 2 * j, VZIPLO(va, vb));
                VSTORE(dst + 2 * j + VLEN, VZIPHI(va, vb));
            }
        }
        if (r) {
            REAL *d = dst + 2 * body;
            VEC va = VLOADN(a + body, r), vb = VLOADN(b + body, r);
            VEC lo = VZIPLO(va, vb), hi = VZIPHI(va, vb);
            if (2 * r >= VLEN) {
                if (stream && (uintptr_t)d % 64 == 0)
                    VSTREAM(d, lo);
                else
                    VSTORE(d, lo);
                if (2 * r > VLEN) VSTOREN(d + VLEN, 2 * r - VLEN, hi);
            } else {
                VSTOREN(d, 2 * r, lo);
            }
        }
    }
}
#endif

#ifdef ZIPADD_NAME
/* d[2j] += a[j], d[2j + 1] += b[j] for j < n: two rows of C added into one
 * row of dx, interleaved (a 2x upsampling's pair of kernel offsets), a
 * vector of each at a time, the last r < VLEN masked. */
static void ZIPADD_NAME(int64_t n, const REAL *a, const REAL *b, REAL *d)
{
    int64_t r = n % VLEN, body = n - r;
    for (int64_t j = 0; j < body; j += VLEN) {
        VEC va = VLOAD(a + j), vb = VLOAD(b + j);
        REAL *dj = d + 2 * j;
        VSTORE(dj, VADD(VLOAD(dj), VZIPLO(va, vb)));
        VSTORE(dj + VLEN, VADD(VLOAD(dj + VLEN), VZIPHI(va, vb)));
    }
    if (r) {
        REAL *dj = d + 2 * body;
        VEC va = VLOADN(a + body, r), vb = VLOADN(b + body, r);
        VEC lo = VZIPLO(va, vb), hi = VZIPHI(va, vb);
        if (2 * r >= VLEN) {
            VSTORE(dj, VADD(VLOAD(dj), lo));
            if (2 * r > VLEN)
                VSTOREN(dj + VLEN, 2 * r - VLEN, VADD(VLOADN(dj + VLEN, 2 * r - VLEN), hi));
        } else {
            VSTOREN(dj, 2 * r, VADD(VLOADN(dj, 2 * r), lo));
        }
    }
}
#endif

#ifdef GATHER_NAME
/* dst[j] = src[j * s] for j < n. Stride 1 a vector at a time, the last r <
 * VLEN masked (rows as short as 8 or 12 in N-d volumes: one or two vector
 * moves). Stride 2 too: two vectors of src, their even lanes (VUNZIP); the
 * last 1..VLEN outputs through masked loads of the 2r - 1 elements they need,
 * so that nothing past src[2 (n - 1)] is read (it may lie past the input).
 * Other strides element by element. */
static void GATHER_NAME(int64_t n, const REAL *src, int64_t s, REAL *dst)
{
    if (s == 1) {
        int64_t j = 0;
        for (; j + VLEN <= n; j += VLEN) VSTORE(dst + j, VLOAD(src + j));
        if (j < n) VSTOREN(dst + j, n - j, VLOADN(src + j, n - j));
        return;
    }
    if (s != 2) {
        for (int64_t j = 0; j < n; j++) dst[j] = src[j * s];
        return;
    }
    if (n < 1) return;
    int64_t j = 0;
    for (; j + VLEN < n; j += VLEN)
        VSTORE(dst + j, VUNZIP(VLOAD(src + 2 * j), VLOAD(src + 2 * j + VLEN)));
    int64_t r = n - j, m = 2 * r - 1; /* 1 <= r <= VLEN */
    VEC a = VLOADN(src + 2 * j, m < VLEN ? m : VLEN);
    VEC b = m > VLEN ? VLOADN(src + 2 * j + VLEN, m - VLEN) : VZERO;
    VSTOREN(dst + j, r, VUNZIP(a, b));
}
#endif

#ifdef PACK_NAME
/* dst[j * MR + i] = src[i * lds + j] for j < n and i < rows (<= MR), zero for
 * rows <= i < MR: MR rows transposed into a panel of the micro-kernels' A
 * side (weights, patches, dY), or into a piece of a larger transpose. With
 * MR = 8, VLEN columns at a time: three rounds of VZIPLO /
 * VZIPHI, row i with row i + 4, the results i with i + 2, then 0 with 1, put
 * the lanes in the panel's order; the last columns loaded masked and stored
 * in part. Other tile heights (AVX2's 6, the portable 4) element by element. */
static void PACK_NAME(int64_t n, const REAL *src, int64_t lds, int64_t rows, REAL *dst)
{
    int64_t j = 0;
#if MR == 8
    for (; j < n; j += VLEN) {
        int64_t w = n - j < VLEN ? n - j : VLEN, left = 8 * w;
        VEC v[8], t[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            v[i] = i >= rows      ? VZERO
                   : w == VLEN ? VLOAD(src + i * lds + j)
                               : VLOADN(src + i * lds + j, w);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) { /* rows i and i + 4: the pair (t[2i], t[2i + 1]) */
            t[2 * i] = VZIPLO(v[i], v[i + 4]);
            t[2 * i + 1] = VZIPHI(v[i], v[i + 4]);
        }
#pragma GCC unroll 2
        for (int i = 0; i < 2; i++) /* pairs i and i + 2: the quad v[4i .. 4i + 3] */
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                v[4 * i + 2 * h] = VZIPLO(t[2 * i + h], t[2 * i + 4 + h]);
                v[4 * i + 2 * h + 1] = VZIPHI(t[2 * i + h], t[2 * i + 4 + h]);
            }
#pragma GCC unroll 4
        for (int h = 0; h < 4; h++) { /* quads 0 and 1: the panel's 8 * w elements */
            t[2 * h] = VZIPLO(v[h], v[4 + h]);
            t[2 * h + 1] = VZIPHI(v[h], v[4 + h]);
        }
        REAL *d = dst + j * 8;
#pragma GCC unroll 8
        for (int h = 0; h < 8; h++, left -= VLEN) {
            if (left >= VLEN)
                VSTORE(d + h * VLEN, t[h]);
            else if (left > 0)
                VSTOREN(d + h * VLEN, left, t[h]);
        }
    }
#endif
    for (; j < n; j++) {
        int64_t i = 0;
        for (; i < rows; i++) dst[j * MR + i] = src[i * lds + j];
        for (; i < MR; i++) dst[j * MR + i] = 0;
    }
}
#endif

/* The names of this inclusion are used up; the type's macros (REAL, VEC,
 * VLEN, MR, VLOAD, ...) stay for the next one. */
#undef NR
#undef PTC_KCAT
#undef PTC_KCAT2
#undef NV
#undef KERNEL_NAME
#undef DOT_NAME
#undef AXPY_NAME
#undef TAPS_NAME
#undef TAPDOT_NAME
#undef STREAM_NAME
#undef ZIP_NAME
#undef ZIPADD_NAME
#undef GATHER_NAME
#undef PACK_NAME
#undef VZIPLO
#undef VZIPHI
#undef VUNZIP
