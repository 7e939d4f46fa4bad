/* The three convolution primitives for one element type, included by
 * conv_float.c and conv_double.c with these defined:
 *   SUFFIX            f32 / f64 (names: ptc_forward_f32, ...)
 *   REAL              float / double
 *   KERNELS(ks)       the micro-kernels of set ks for REAL, by width
 *   ROWS_KERNELS(ks)  the same reading B through row pointers
 *   KERNEL_MR(ks), KERNEL_VLEN(ks), KERNEL_NV(ks)
 *   DOT_KERNEL(ks)    the dot kernel of set ks for REAL
 *
 * All three are GEMMs over unfolded patches, done tile by tile so that no
 * full im2col matrix is ever built:
 *   forward          Y[co, p]  = sum_kk W[co, kk] * cols[kk, p]
 *   backward data    cols[kk, p] = sum_co W[co, kk] * dY[co, p], then col2im
 *   backward filter  dW[co, kk] = sum_{n, p} dY[co, p] * cols[kk, p]
 * with kk = (input channel in group, kernel offset) and p the flat output
 * position. Tile shapes depend on the problem and the kernel set only, never
 * on the thread count, so results are the same bits for any thread count.
 * Fast paths: stride-1 convolutions in 3 or more dimensions read B from the
 * padded input in place (implicit GEMM, no unfolding); stride-1 transposed
 * ones gather with the flipped kernel; depthwise ones run directly; 1-d ones
 * with long kernels compute the transposed product (windows x taps), added
 * straight into dx, and read the windows in place for the weight gradient.
 */
#include <stdlib.h>
#include <string.h>

#define PTC_CAT2(a, b) a##_##b
#define PTC_CAT(a, b) PTC_CAT2(a, b)
#define FN(name) PTC_CAT(name, SUFFIX)

typedef void (*FN(rows_fn))(int64_t, const REAL *, const REAL *const *, int64_t, REAL *,
                            int64_t, int, int64_t, int64_t);
typedef void (*FN(kernel_fn))(int64_t, const REAL *, const REAL *, int64_t, REAL *, int64_t,
                               int, int64_t, int64_t);
typedef void (*FN(zipadd_fn))(int64_t, const REAL *, const REAL *, REAL *);
typedef void (*FN(gather_fn))(int64_t, const REAL *, int64_t, REAL *);

static int64_t FN(min64)(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t FN(round_up)(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
static int64_t FN(ceil_div)(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Zeroed buffer of n elements, or NULL (also when the byte count overflows). */
static REAL *FN(alloc)(int64_t n)
{
    if (n < 1) n = 1;
    if ((uint64_t)n > SIZE_MAX / sizeof(REAL)) return NULL;
    return (REAL *)calloc((size_t)n, sizeof(REAL));
}

/* Non-zero when every element is finite: x * 0 is NaN iff x is NaN or Inf.
 * Eight sums, which the compiler keeps in one vector register instead of a
 * chain of dependent scalar adds. */
static int FN(all_finite)(const REAL *x, int64_t n)
{
    REAL acc[8] = {0}, sum = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j] * 0;
    for (; i < n; i++) sum += x[i] * 0;
    for (int j = 0; j < 8; j++) sum += acc[j];
    return sum == 0;
}

/* A row stride of at least n elements, a multiple of nr, and not a multiple of
 * 256 bytes, so that the rows of a micro-panel do not fall into the same L1
 * cache sets. */
static int64_t FN(leading_dim)(int64_t n, int64_t nr)
{
    int64_t ld = FN(round_up)(n, nr);
    if ((ld * (int64_t)sizeof(REAL)) % 256 == 0) ld += 64 / (int64_t)sizeof(REAL);
    return ld;
}

/* Rows bound for consecutive addresses of dx, gathered in a small buffer
 * and written out with the kernels' streaming stores: whole cache lines,
 * none of them read first (see tiled_rows). */
typedef struct {
    const ptc_kernel_set *ks;
    REAL *buf;
    int64_t cap, n;
    REAL *dst; /* where buf[0] goes */
} FN(stage);

static void FN(stage_flush)(FN(stage) *st)
{
    if (st->n) STREAM(st->ks)(st->n, st->buf, st->dst);
    st->n = 0;
}

/* Room for the n (<= cap) elements of dx from d on: staged after the others
 * where they follow on from them, else after a flush. */
static REAL *FN(stage_room)(FN(stage) *st, REAL *d, int64_t n)
{
    if (st->n && (d != st->dst + st->n || st->n + n > st->cap)) FN(stage_flush)(st);
    if (!st->n) st->dst = d;
    st->n += n;
    return st->buf + st->n - n;
}

/* One row of x, n positions of kl kernel offsets each, unfolded into (or
 * folded from) kl rows of the patches rs apart: the inner copies of
 * tiled_rows, whose operands never overlap. */
static inline void FN(unfold_row)(REAL *restrict m, int64_t rs, const REAL *restrict x,
                                  int64_t kl, int64_t n)
{
    if (kl == 2) {
        REAL *restrict m1 = m + rs;
        for (int64_t j = 0; j < n; j++) {
            m[j] = x[2 * j];
            m1[j] = x[2 * j + 1];
        }
    } else if (kl == 1) {
        memcpy(m, x, (size_t)n * sizeof(REAL));
    } else {
        for (int64_t ql = 0; ql < kl; ql++)
            for (int64_t j = 0; j < n; j++) m[ql * rs + j] = x[j * kl + ql];
    }
}

static inline void FN(fold_row)(REAL *restrict x, const REAL *restrict m, int64_t rs,
                                int64_t kl, int64_t n)
{
    if (kl == 2) {
        const REAL *restrict m1 = m + rs;
        for (int64_t j = 0; j < n; j++) {
            x[2 * j] = m[j];
            x[2 * j + 1] = m1[j];
        }
    } else if (kl == 1) {
        memcpy(x, m, (size_t)n * sizeof(REAL));
    } else {
        for (int64_t ql = 0; ql < kl; ql++)
            for (int64_t j = 0; j < n; j++) x[j * kl + ql] = m[ql * rs + j];
    }
}

/* Bytes ahead of the current row of x that the unfolding prefetches. */
#define TILED_PREFETCH 2048

/* im2col and col2im where the windows tile the input (g->tiled: 2x2
 * stride-2 downsampling and 2x2 upsampling, any N): a space-to-depth
 * (to_x = 0: rows k0..k0+kc-1 of the patches, mat[r * rs + c], unfolded from
 * xg) or a depth-to-space (to_x = 1: those rows stored into xg, each of its
 * elements receiving one term; g->tiled_exactly). Each kernel offset's row
 * then lives on a strided lattice of x. Taken offset by offset, the rows
 * would sweep the tile's part of x kvol / kernel[last] times, each time every
 * other row; here x is visited in address order within each plane of the
 * last two dimensions: for a run of segments in one such plane, for the
 * offsets of the outer dimensions, each segment's rows for the offsets of
 * the next-to-last dimension, each row interleaving the offsets of the last.
 * Such inputs are often far larger than the caches (17 MB for the 4-d cases
 * of the benchmarks). Reading, a fixed distance ahead is prefetched (the 4-d
 * unfolding: 35% faster on one core); writing, the rows follow on and leave
 * as whole lines with streaming stores, none read in first: rows of whole
 * lines straight from the kernels' zip, others gathered in `stage` (NULL:
 * nothing streamed). The 4-d float64 transposed convolution: 4.2 -> 2.7 ms
 * on one core. */
static inline void FN(tiled_rows)(const ptc_geometry *g, const ptc_kernel_set *ks, REAL *xg,
                                  int to_x, int64_t k0, int64_t kc, const ptc_segment *segs,
                                  int64_t nseg, REAL *mat, int64_t rs, FN(stage) *stage)
{
    const ptc_problem *p = g->p;
    int last = g->nd - 1, mid = g->nd - 2;
    int64_t kl = p->kernel[last]; /* == stride */
    int64_t km = mid >= 0 ? p->kernel[mid] : 1;
    int64_t plane_rows = mid >= 0 ? p->out_size[mid] : 1;
    int64_t nouter = g->kvol / (km * kl); /* offsets of the outer dimensions */
    int64_t chunk = stage ? stage->cap / kl : INT64_MAX; /* positions per staged piece */
    int64_t rowstep = mid >= 0 ? g->in_stride[mid] : 0;   /* x's rows along dimension mid */
    /* Pairs of offsets interleaved by the kernels' zip, which streams rows of
     * whole lines itself where each starts on a line: no staging. Where x
     * does not start on a line (only a caller's own buffer: the Python
     * layer's results start on one), its rows go through the stage, since
     * the zip's plain stores would read every line in first (3-d float32
     * upsampling, one core: 3.24 against 2.96 ms staged). */
    int zip = to_x && kl == 2;
    int zip_streams = zip && stage && (p->in_size[last] * (int64_t)sizeof(REAL)) % 64 == 0 &&
                      (uintptr_t)xg % 64 == 0;
    for (int64_t c = k0 / g->kvol; c * g->kvol < k0 + kc; c++) {
        REAL *xc = xg + c * g->in_spatial;
        REAL *matc = mat + (c * g->kvol - k0) * rs; /* row q of channel c */
        /* the channel's offsets among rows k0..k0+kc-1: [qa, qb) */
        int64_t qa = k0 > c * g->kvol ? k0 - c * g->kvol : 0;
        int64_t qb = FN(min64)(g->kvol, k0 + kc - c * g->kvol);
        for (int64_t s0 = 0, s1; s0 < nseg; s0 = s1) {
            for (s1 = s0 + 1; s1 < nseg && segs[s1].outer / plane_rows == segs[s0].outer / plane_rows;)
                s1++;
            /* Whole rows: each offset qm of the next-to-last dimension zips
             * the run's segments in one call (consecutive columns of mat, rows
             * of x km apart), into x or, where it is staged, into the stage,
             * which then holds the run's whole block of x. */
            int64_t block = (s1 - s0) * km * rowstep;
            int whole = zip && qa == 0 && qb == g->kvol && segs[s0].o_last == 0 &&
                        segs[s1 - 1].len == p->out_size[last] &&
                        (s1 - s0 == 1 || segs[s0].len == p->out_size[last]) &&
                        (zip_streams || !stage || block <= stage->cap);
            for (int64_t qo = 0; qo < nouter; qo++) {
                if ((qo + 1) * km * kl <= qa || qo * km * kl >= qb) continue;
                int64_t q0 = qo * km * kl;
                REAL *xq = xc + g->outer_delta[q0], *mq = matc + q0 * rs;
                if (whole) {
                    int64_t len = segs[s0].len;
                    REAL *d = xq + segs[s0].base;
                    if (stage && !zip_streams) d = FN(stage_room)(stage, d, block);
                    for (int64_t qm = 0; qm < km; qm++)
                        ZIP(ks)(s1 - s0, len, mq + qm * kl * rs + segs[s0].col, len, rs,
                                d + qm * rowstep, km * rowstep, zip_streams);
                    continue;
                }
                for (int64_t si = s0; si < s1; si++) {
                    const ptc_segment *sg = &segs[si];
                    int64_t len = sg->len;
                    /* offset qm of the next-to-last dimension: one row of x on */
                    REAL *row = xq + sg->base + sg->o_last * kl, *m = mq + sg->col;
                    for (int64_t q = q0; q < q0 + km * kl; q += kl, row += rowstep, m += kl * rs) {
                        int64_t la = qa > q ? qa - q : 0, lb = FN(min64)(kl, qb - q);
                        if (la >= lb) continue;
                        if (la > 0 || lb < kl) { /* a block edge inside the row's offsets */
                            for (int64_t ql = la; ql < lb; ql++)
                                for (int64_t j = 0; j < len; j++) {
                                    if (to_x)
                                        row[j * kl + ql] = m[ql * rs + j];
                                    else
                                        m[ql * rs + j] = row[j * kl + ql];
                                }
                        } else if (!to_x) {
                            ptc_prefetch_bytes((const char *)row + TILED_PREFETCH,
                                               len * kl * (int64_t)sizeof(REAL));
                            FN(unfold_row)(m, rs, row, kl, len);
                        } else if (zip && (zip_streams || !stage)) {
                            ZIP(ks)(1, len, m, 0, rs, row, 0, zip_streams);
                        } else if (!stage) {
                            FN(fold_row)(row, m, rs, kl, len);
                        } else {
                            for (int64_t j0 = 0; j0 < len; j0 += chunk) {
                                int64_t n = FN(min64)(chunk, len - j0);
                                FN(fold_row)(FN(stage_room)(stage, row + j0 * kl, n * kl), m + j0,
                                             rs, kl, n);
                            }
                        }
                    }
                }
            }
        }
    }
    if (stage) FN(stage_flush)(stage);
}

/* The two directions, each compiled with its own copy of the loops. */
static void FN(space_to_depth)(const ptc_geometry *g, const REAL *xg, int64_t k0, int64_t kc,
                               const ptc_segment *segs, int64_t nseg, REAL *dst, int64_t rs)
{
    FN(tiled_rows)(g, NULL, (REAL *)xg, 0, k0, kc, segs, nseg, dst, rs, NULL); /* reads xg */
}

static void FN(depth_to_space)(const ptc_geometry *g, const ptc_kernel_set *ks, REAL *dxg,
                               int64_t k0, int64_t kc, const ptc_segment *segs, int64_t nseg,
                               const REAL *src, int64_t rs, FN(stage) *stage)
{
    FN(tiled_rows)(g, ks, dxg, 1, k0, kc, segs, nseg, (REAL *)src, rs, stage); /* reads src */
}

/* Rows k0..k0+kc-1 of the unfolded patches of one image and group, for the
 * output positions of `segs`, into dst[r * rs + c] (c: column in tile). */
static void FN(im2col)(const ptc_geometry *g, const REAL *xg, int64_t k0, int64_t kc,
                       const ptc_segment *segs, int64_t nseg, REAL *dst, int64_t rs)
{
    if (g->tiled) {
        FN(space_to_depth)(g, xg, k0, kc, segs, nseg, dst, rs);
        return;
    }
    int64_t s = g->p->stride[g->nd - 1], out_last = g->p->out_size[g->nd - 1];
    FN(gather_fn) gather = GATHER(ptc_kernels());
    int interior = 1;
    for (int64_t si = 0; si < nseg && interior; si++) interior = segs[si].interior;
    for (int64_t r = 0; r < kc; r++) {
        int64_t kk = k0 + r, ci = kk / g->kvol, q = kk % g->kvol;
        const REAL *xc = xg + ci * g->in_spatial;
        int64_t shift = g->shift[q];
        REAL *drow = dst + r * rs;
        if (interior && g->last_lo[q] <= 0 && g->last_hi[q] >= out_last) {
            /* No segment of the tile touches the padding for this offset (the
             * rule once x is padded first): plain row copies. */
            const REAL *xq = xc + g->outer_delta[q] + shift;
            for (int64_t si = 0; si < nseg; si++)
                gather(segs[si].len, xq + segs[si].base + segs[si].o_last * s, s,
                       drow + segs[si].col);
            continue;
        }
        for (int64_t si = 0; si < nseg; si++) {
            const ptc_segment *sg = &segs[si];
            REAL *d = drow + sg->col;
            int64_t off = ptc_row_offset(g, sg, q), lo = 0, hi = 0;
            if (off >= 0) ptc_last_dim_range(g, q, sg->o_last, sg->len, &lo, &hi);
            int64_t a = hi > lo ? lo - sg->o_last : sg->len, b = hi > lo ? hi - sg->o_last : sg->len;
            for (int64_t j = 0; j < a; j++) d[j] = 0;
            if (b > a) gather(b - a, xc + off + lo * s + shift, s, d + a);
            for (int64_t j = b; j < sg->len; j++) d[j] = 0;
        }
    }
}

/* The adjoint of im2col: adds rows k0..k0+kc-1 of src (src[r * rs + c]) into
 * the input-shaped dxg, dropping what falls into the padding. */
static void FN(col2im)(const ptc_geometry *g, REAL *dxg, int64_t k0, int64_t kc,
                       const ptc_segment *segs, int64_t nseg, const REAL *src, int64_t rs)
{
    int last = g->nd - 1;
    int64_t s = g->p->stride[last], kl = g->p->kernel[last];
    FN(zipadd_fn) zipadd = ZIPADD(ptc_kernels());
    /* Stride 2 along the last dimension, no dilation (2x upsampling): the rows
     * of offsets 2m and 2m + 1 of that dimension interleave into one
     * contiguous run, added as pairs, a vector of each at a time. */
    int pairs = s == 2 && kl >= 2 && g->p->dilation[last] == 1;
    for (int64_t r = 0; r < kc; r++) {
        int64_t kk = k0 + r, ci = kk / g->kvol, q = kk % g->kvol;
        REAL *dxc = dxg + ci * g->in_spatial;
        int64_t shift = g->shift[q];
        const REAL *srow = src + r * rs;
        if (pairs && q % kl % 2 == 0 && q % kl + 1 < kl && r + 1 < kc) {
            const REAL *srow1 = srow + rs;
            for (int64_t si = 0; si < nseg; si++) {
                const ptc_segment *sg = &segs[si];
                int64_t off = ptc_row_offset(g, sg, q), lo0, hi0, lo1, hi1;
                if (off < 0) continue; /* offset q + 1 has the same outer rows */
                ptc_last_dim_range(g, q, sg->o_last, sg->len, &lo0, &hi0);
                ptc_last_dim_range(g, q + 1, sg->o_last, sg->len, &lo1, &hi1);
                int64_t lo = lo0 > lo1 ? lo0 : lo1, hi = hi0 < hi1 ? hi0 : hi1;
                REAL *row = dxc + off + shift; /* row[2 * o] <- offset 0, row[2 * o + 1] <- 1 */
                const REAL *c0 = srow + sg->col - sg->o_last, *c1 = srow1 + sg->col - sg->o_last;
                for (int64_t o = lo0; o < hi0 && o < lo; o++) row[2 * o] += c0[o];
                for (int64_t o = lo1; o < hi1 && o < lo; o++) row[2 * o + 1] += c1[o];
                if (hi > lo) zipadd(hi - lo, c0 + lo, c1 + lo, row + 2 * lo);
                for (int64_t o = hi > lo0 ? hi : lo0; o < hi0; o++) row[2 * o] += c0[o];
                for (int64_t o = hi > lo1 ? hi : lo1; o < hi1; o++)
                    row[2 * o + 1] += c1[o];
            }
            r++;
            continue;
        }
        for (int64_t si = 0; si < nseg; si++) {
            const ptc_segment *sg = &segs[si];
            int64_t off = ptc_row_offset(g, sg, q), lo, hi;
            if (off < 0) continue;
            ptc_last_dim_range(g, q, sg->o_last, sg->len, &lo, &hi);
            if (hi <= lo) continue;
            REAL *d = dxc + off + lo * s + shift;
            const REAL *c = srow + sg->col + (lo - sg->o_last);
            int64_t len = hi - lo;
            if (s == 1)
                for (int64_t j = 0; j < len; j++) d[j] += c[j];
            else
                for (int64_t j = 0; j < len; j++) d[j * s] += c[j];
        }
    }
}

/* Per-thread scratch, allocated by each thread on its first task. */
typedef struct {
    REAL *buf_b;         /* B operand block */
    REAL *buf_c;         /* C tile, or dY rows and partial sums (backward filter) */
    ptc_segment *segs;
    void **ptrs;         /* row pointers (backward filter) */
} FN(scratch);

typedef struct {
    const ptc_geometry *g;
    const ptc_kernel_set *ks;
    FN(kernel_fn) const *kerns; /* kerns[v - 1]: v vectors wide */
    int64_t mr, nr, vlen;
    const REAL *in;      /* x (forward, filter) or dy (data) */
    const REAL *aux;     /* bias (forward) or dy (filter) */
    const REAL *apack;   /* packed weights */
    REAL *out;
    int64_t kc, nc, ntiles, nblocks, block, ldb, ldc, npanels;
    int64_t tile_tasks;  /* backward data: tiles run as tasks of their own (1: not) */
    int assign;          /* backward data: each dx element gets one term, stored */
    int stream;          /* the output is large: streamed (forward: by the kernels;
                            backward data, where assigned: tiled_rows) */
    int b_in_place;      /* forward: the patches are x's rows, read where they are */
    int64_t b_elems, c_elems, seg_cap, ptr_cap;
    FN(scratch) *scratch;
} FN(job);

static ptc_status FN(scratch_get)(FN(job) *job, int tid, FN(scratch) **out)
{
    FN(scratch) *s = &job->scratch[tid];
    if (!s->segs) {
        s->buf_b = FN(alloc)(job->b_elems);
        s->buf_c = job->c_elems ? FN(alloc)(job->c_elems) : NULL;
        s->segs = (ptc_segment *)calloc((size_t)job->seg_cap, sizeof(ptc_segment));
        s->ptrs = (void **)calloc((size_t)(job->ptr_cap > 0 ? job->ptr_cap : 1), sizeof(void *));
        if (!s->buf_b || (job->c_elems && !s->buf_c) || !s->segs || !s->ptrs)
            return PTC_ERR_NO_MEMORY;
    }
    *out = s;
    return PTC_OK;
}

static ptc_status FN(job_start)(FN(job) *job, int nthreads)
{
    job->scratch = (FN(scratch) *)calloc((size_t)nthreads, sizeof(FN(scratch)));
    return job->scratch ? PTC_OK : PTC_ERR_NO_MEMORY;
}

static void FN(job_end)(FN(job) *job, int nthreads)
{
    if (job->scratch)
        for (int t = 0; t < nthreads; t++) {
            free(job->scratch[t].buf_b);
            free(job->scratch[t].buf_c);
            free(job->scratch[t].segs);
            free(job->scratch[t].ptrs);
        }
    free(job->scratch);
    free((void *)job->apack);
}

/* The kernel set of this CPU for REAL. */
static void FN(job_init)(FN(job) *job, const ptc_geometry *g)
{
    memset(job, 0, sizeof(*job));
    job->g = g;
    job->ks = ptc_kernels();
    job->kerns = KERNELS(job->ks);
    job->mr = KERNEL_MR(job->ks);
    job->vlen = KERNEL_VLEN(job->ks);
    job->nr = KERNEL_NV(job->ks) * job->vlen;
}

/* The narrowest kernel that covers ncols (<= nr) columns. */
static FN(kernel_fn) FN(kernel_for)(const FN(job) *job, int64_t ncols)
{
    return job->kerns[(ncols + job->vlen - 1) / job->vlen - 1];
}

/* Bytes of a kc x nr micro-panel of B: k-blocks of ~340 rows. Larger than L1
 * (the panel streams from L2, which keeps up), because each k-block costs a
 * load and store of the C tile: measured one thread, 16 KiB -> 64 KiB gave
 * +6% on 3x3 convolutions, 128 KiB nothing more. */
#define KC_BYTES 65536
/* Outputs streamed past the caches from this size (see tiled_rows), and
 * the elements staged to make whole lines of them. */
#define STREAM_BYTES (8.0 * 1024 * 1024)
#define STAGE_ELEMS 2048

/* A k-block length near `target` that splits k into equal blocks. */
static int64_t FN(block_len)(int64_t k, int64_t target)
{
    if (k <= target) return k < 1 ? 1 : k;
    return FN(ceil_div)(k, FN(ceil_div)(k, target));
}

/* ---- forward ------------------------------------------------------------ */

static ptc_status FN(forward_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)par;
    FN(job) *job = (FN(job) *)vjob;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(scratch) *s;
    ptc_status st = FN(scratch_get)(job, tid, &s);
    if (st != PTC_OK) return st;

    int64_t tile = t % job->ntiles, grp = (t / job->ntiles) % p->groups;
    int64_t n = t / job->ntiles / p->groups;
    int64_t P = g->out_spatial, p0 = tile * job->nc, nc = FN(min64)(job->nc, P - p0);
    int64_t nseg = ptc_segments(g, p0, nc, s->segs);
    const REAL *xg = job->in + (n * p->in_channels + grp * g->cin_g) * g->in_spatial;
    REAL *yg = job->out + (n * p->out_channels + grp * g->cout_g) * P + p0;
    const REAL *ag = job->apack + grp * job->npanels * job->mr * g->kdim;

    for (int64_t k0 = 0; k0 < g->kdim; k0 += job->kc) {
        int64_t kc = FN(min64)(job->kc, g->kdim - k0);
        int flags = (k0 > 0 ? PTC_TILE_ADD : 0) |
                    (job->stream && k0 + kc == g->kdim ? PTC_TILE_STREAM : 0);
        if (!job->b_in_place) FN(im2col)(g, xg, k0, kc, s->segs, nseg, s->buf_b, job->ldb);
        for (int64_t j0 = 0; j0 < nc; j0 += job->nr) {
            int64_t ncols = FN(min64)(job->nr, nc - j0);
            FN(kernel_fn) kern = FN(kernel_for)(job, ncols);
            const REAL *b = s->buf_b + j0;
            int64_t ldb = job->ldb;
            if (job->b_in_place) {
                /* whole strips read from x; a last, narrower one copied, since
                 * the kernel reads all nr columns */
                b = xg + k0 * P + p0 + j0;
                ldb = P;
                if (ncols < job->nr) {
                    for (int64_t k = 0; k < kc; k++)
                        memcpy(s->buf_b + k * job->ldb, b + k * P, (size_t)ncols * sizeof(REAL));
                    b = s->buf_b;
                    ldb = job->ldb;
                }
            }
            /* Read in place, a strip is kc short pieces of rows a whole
             * plane apart, each on a page of its own, which the hardware's
             * prefetchers do not follow: the first panel's call over it would
             * wait on memory for each of them. The next strip's pieces are
             * asked for ahead, a share of its rows before each panel's call
             * (pointwise 1x1 on 2 threads: forward +3-6%, its input gradient
             * +9%, the next strip's kc x nr staying in L2). */
            int64_t share = 0, ahead_bytes = 0;
            const char *ahead = NULL;
            if (job->b_in_place && j0 + job->nr < nc) {
                share = FN(ceil_div)(kc, FN(ceil_div)(g->cout_g, job->mr));
                ahead = (const char *)(xg + k0 * P + p0 + j0 + job->nr);
                ahead_bytes = FN(min64)(job->nr, nc - j0 - job->nr) * (int64_t)sizeof(REAL);
            }
            for (int64_t i0 = 0, r = 0; i0 < g->cout_g; i0 += job->mr) {
                for (int64_t r_end = FN(min64)(r + share, kc); r < r_end; r++)
                    ptc_prefetch_bytes(ahead + r * P * (int64_t)sizeof(REAL), ahead_bytes);
                kern(kc, ag + (i0 / job->mr) * job->mr * g->kdim + k0 * job->mr, b, ldb,
                     yg + i0 * P + j0, P, flags, FN(min64)(job->mr, g->cout_g - i0), ncols);
            }
        }
    }
    if (job->stream) job->ks->stream_fence();
    if (job->aux)
        for (int64_t co = 0; co < g->cout_g; co++) {
            REAL b = job->aux[grp * g->cout_g + co];
            REAL *row = yg + co * P;
            for (int64_t j = 0; j < nc; j++) row[j] += b;
        }
    return PTC_OK;
}

/* Rows 0..nb-1 of src (row r at src + r * lds), columns 0..len-1, into columns
 * col.. of panels of mr rows and kc columns: a[(r / mr) * mr * kc + (col + j) *
 * mr + r % mr]; a last panel's rows past nb are zeros. */
static void FN(pack_columns)(const ptc_kernel_set *ks, const REAL *src, int64_t lds, int64_t nb,
                             int64_t len, REAL *a, int64_t kc, int64_t col)
{
    int64_t mr = KERNEL_MR(ks);
    for (int64_t i0 = 0; i0 < nb; i0 += mr)
        PACK(ks)(len, src + i0 * lds, lds, FN(min64)(mr, nb - i0), a + i0 * kc + col * mr);
}

/* Weights as mr-row panels, panel-major: a[((grp * npanels + pi) * k + kk) * mr + i]
 * = rows[grp * group_stride + (pi * mr + i) * row_stride + kk], zero past nrows
 * (the panel kernel of ks, whose tile height is mr). */
static REAL *FN(pack_panels)(const ptc_kernel_set *ks, const REAL *rows, int64_t groups,
                             int64_t nrows, int64_t k, int64_t row_stride,
                             int64_t group_stride, int64_t *npanels)
{
    int64_t mr = KERNEL_MR(ks), np = FN(ceil_div)(nrows, mr);
    REAL *a = FN(alloc)(groups * np * mr * k);
    if (!a) return NULL;
    for (int64_t grp = 0; grp < groups; grp++)
        FN(pack_columns)(ks, rows + grp * group_stride, row_stride, nrows, k,
                         a + grp * np * mr * k, k, 0);
    *npanels = np;
    return a;
}

static ptc_status FN(forward_zero_padded)(const ptc_problem *p, const REAL *x, const REAL *w,
                                          const REAL *bias, REAL *y, const ptc_options *opt)
{
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, p);
    if (st != PTC_OK) return st;
    FN(job) job;
    FN(job_init)(&job, &g);
    job.in = x;
    job.aux = bias;
    job.out = y;
    /* The kc x nc block of B stays in L2 while every weight panel passes over
     * it (see KC_BYTES for kc). */
    job.kc = FN(block_len)(g.kdim, KC_BYTES / (job.nr * (int64_t)sizeof(REAL)));
    int64_t P = g.out_spatial;
    int64_t nc_cap = FN(round_up)(393216 / (job.kc * (int64_t)sizeof(REAL)), job.nr);
    double flops = 2.0 * (double)p->batch * (double)p->out_channels * (double)g.kdim * (double)P;
    int nthreads = ptc_threads_for_work(flops);
    job.ntiles = FN(ceil_div)(P, nc_cap);
    /* Enough tiles for every thread when the batch is small (tile widths do
     * not change any sum, so this may depend on the thread count). */
    int64_t want = FN(ceil_div)(4 * (int64_t)nthreads, p->batch * p->groups);
    if (job.ntiles < want) job.ntiles = FN(min64)(want, FN(ceil_div)(P, 2 * job.nr));
    job.nc = FN(round_up)(FN(ceil_div)(P, job.ntiles), job.nr);
    job.ntiles = FN(ceil_div)(P, job.nc);
    job.ldb = FN(leading_dim)(job.nc, job.nr);
    job.b_elems = job.kc * job.ldb;
    job.seg_cap = job.nc / p->out_size[p->ndim - 1] + 2;
    /* A y well beyond the last-level cache leaves the last k-block's tiles
     * with streaming stores: no read for ownership of lines that are then
     * written whole, and no eviction of B and the weights for lines not read
     * again here. Needs every tile row on a line: y, its rows (P) and the
     * tile columns (nr) in whole lines; and no bias, which is added to y
     * afterwards. Pointwise 1x1 (y 51 MB float64): 80 -> 93 GFLOP/s on 2
     * threads, float32 (26 MB) 159 -> 176; a 3x3 convolution's y of 13 MB
     * (float64) took the same time either way, and the next layer finds such
     * a y in the cache if it is not streamed: hence twice STREAM_BYTES. */
    job.stream = !bias && (uintptr_t)y % 64 == 0 && (P * (int64_t)sizeof(REAL)) % 64 == 0 &&
                 (job.nr * (int64_t)sizeof(REAL)) % 64 == 0 &&
                 (double)p->batch * (double)p->out_channels * (double)P * sizeof(REAL) >=
                     2 * STREAM_BYTES;
    /* A pointwise convolution's patches are the channels of x themselves (as
     * in the weight gradient): the kernels read them in place, with no copy
     * into B (pointwise 1x1 on 2 threads: float64 -6%, float32 -8%; its
     * input gradient, a flipped pointwise forward, -14%). */
    job.b_in_place = ptc_patches_are_channels(&g);
    job.apack = FN(pack_panels)(job.ks, w, p->groups, g.cout_g, g.kdim, g.kdim,
                                g.cout_g * g.kdim, &job.npanels);
    if (!job.apack) st = PTC_ERR_NO_MEMORY;
    if (st == PTC_OK) st = FN(job_start)(&job, nthreads);
    if (st == PTC_OK)
        st = ptc_parallel_for(p->batch * p->groups * job.ntiles, nthreads, FN(forward_task),
                              &job, opt);
    FN(job_end)(&job, nthreads);
    ptc_geometry_free(&g);
    return st;
}

/* ---- backward data (transposed convolution) ----------------------------- */

static ptc_status FN(backward_data_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(job) *job = (FN(job) *)vjob;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(scratch) *s;
    ptc_status st = FN(scratch_get)(job, tid, &s);
    if (st != PTC_OK) return st;

    /* Task: one image, one group, one block of input channels, which owns the
     * rows kk of those channels and so the matching part of dx alone; and
     * where windows do not overlap, one tile of positions, which owns its
     * windows' part of dx (cleared beforehand, or fully stored). */
    int64_t tile0 = 0, tile1 = job->ntiles;
    if (job->tile_tasks > 1) {
        tile0 = t % job->tile_tasks;
        tile1 = tile0 + 1;
        t /= job->tile_tasks;
    }
    int64_t blk = t % job->nblocks, grp = (t / job->nblocks) % p->groups;
    int64_t n = t / job->nblocks / p->groups;
    int64_t c0 = blk * job->block, cb = FN(min64)(job->block, g->cin_g - c0);
    int64_t r0 = c0 * g->kvol, rows = cb * g->kvol, P = g->out_spatial;
    const REAL *dyg = job->in + (n * p->out_channels + grp * g->cout_g) * P;
    REAL *dxg = job->out + (n * p->in_channels + grp * g->cin_g) * g->in_spatial;
    const REAL *ablk = job->apack + (grp * job->nblocks + blk) * job->npanels * job->mr * g->cout_g;

    if (job->tile_tasks == 1)
        memset(dxg + c0 * g->in_spatial, 0, (size_t)(cb * g->in_spatial) * sizeof(REAL));
    for (int64_t tile = tile0; tile < tile1; tile++) {
        int64_t p0 = tile * job->nc, nc = FN(min64)(job->nc, P - p0);
        int64_t nseg = ptc_segments(g, p0, nc, s->segs);
        for (int64_t k0 = 0; k0 < g->cout_g; k0 += job->kc) {
            int64_t kc = FN(min64)(job->kc, g->cout_g - k0);
            for (int64_t k = 0; k < kc; k++)
                memcpy(s->buf_b + k * job->ldb, dyg + (k0 + k) * P + p0, (size_t)nc * sizeof(REAL));
            for (int64_t j0 = 0; j0 < nc; j0 += job->nr) {
                int64_t ncols = FN(min64)(job->nr, nc - j0);
                FN(kernel_fn) kern = FN(kernel_for)(job, ncols);
                for (int64_t i0 = 0; i0 < rows; i0 += job->mr)
                    kern(kc, ablk + (i0 / job->mr) * job->mr * g->cout_g + k0 * job->mr,
                         s->buf_b + j0, job->ldb, s->buf_c + i0 * job->ldc + j0, job->ldc,
                         k0 > 0 ? PTC_TILE_ADD : 0, FN(min64)(job->mr, rows - i0), ncols);
            }
        }
        if (job->assign) {
            /* buf_b, free once the tile's products are done, stages the rows */
            FN(stage) stage = {job->ks, s->buf_b, job->b_elems, 0, NULL};
            FN(depth_to_space)(g, job->ks, dxg, r0, rows, s->segs, nseg, s->buf_c, job->ldc,
                               job->stream ? &stage : NULL);
        } else {
            FN(col2im)(g, dxg, r0, rows, s->segs, nseg, s->buf_c, job->ldc);
        }
        if (ptc_poll(par, tid)) break;
    }
    if (job->stream) job->ks->stream_fence();
    return PTC_OK;
}

typedef struct {
    REAL *base;
    int64_t plane;
} FN(zero_job);

static ptc_status FN(zero_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(zero_job) *job = (FN(zero_job) *)vjob;
    memset(job->base + t * job->plane, 0, (size_t)job->plane * sizeof(REAL));
    return PTC_OK;
}

/* Clears `planes` planes of `plane` elements, in parallel. */
static ptc_status FN(zero_planes)(REAL *base, int64_t planes, int64_t plane,
                                  const ptc_options *opt)
{
    FN(zero_job) job = {base, plane};
    return ptc_parallel_for(planes, ptc_threads_for_work((double)planes * (double)plane),
                            FN(zero_task), &job, opt);
}

static ptc_status FN(backward_data_zero_padded)(const ptc_problem *p, const REAL *dy,
                                                const REAL *w, REAL *dx,
                                                const ptc_options *opt)
{
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, p);
    if (st != PTC_OK) return st;
    FN(job) job;
    FN(job_init)(&job, &g);
    job.in = dy;
    job.out = dx;
    int64_t P = g.out_spatial;
    job.kc = FN(block_len)(g.cout_g, KC_BYTES / (job.nr * (int64_t)sizeof(REAL)));
    /* Blocks of about 256 rows (channels x kernel offsets) per task; tiles of
     * output positions sized so the C tile stays within 256 KiB. Both depend
     * on the problem alone: the order of the scatter-adds follows them. */
    job.block = FN(min64)(g.cin_g, g.kvol >= 256 ? 1 : 256 / g.kvol);
    job.nblocks = FN(ceil_div)(g.cin_g, job.block);
    int64_t rows = job.block * g.kvol;
    int64_t nc_cap = FN(round_up)(262144 / (rows * (int64_t)sizeof(REAL)) + 1, job.nr);
    job.ntiles = FN(ceil_div)(P, nc_cap);
    job.nc = FN(round_up)(FN(ceil_div)(P, job.ntiles), job.nr);
    job.ntiles = FN(ceil_div)(P, job.nc);
    job.ldb = FN(leading_dim)(job.nc, job.nr);
    job.ldc = FN(leading_dim)(job.nc, job.nr);
    job.b_elems = job.kc * job.ldb;
    job.c_elems = FN(round_up)(rows, job.mr) * job.ldc;
    job.seg_cap = job.nc / p->out_size[p->ndim - 1] + 2;

    /* Packed W^T: for each (group, channel block), panels of mr patch rows
     * over the cout_g output channels. */
    job.npanels = FN(ceil_div)(rows, job.mr);
    REAL *a = FN(alloc)(p->groups * job.nblocks * job.npanels * job.mr * g.cout_g);
    if (a) {
        for (int64_t grp = 0; grp < p->groups; grp++)
            for (int64_t blk = 0; blk < job.nblocks; blk++) {
                int64_t r0 = blk * job.block * g.kvol;
                int64_t nrows = FN(min64)(rows, g.kdim - r0);
                REAL *dst = a + (grp * job.nblocks + blk) * job.npanels * job.mr * g.cout_g;
                for (int64_t r = 0; r < nrows; r++) {
                    REAL *panel = dst + (r / job.mr) * job.mr * g.cout_g;
                    const REAL *src = w + grp * g.cout_g * g.kdim + r0 + r;
                    for (int64_t co = 0; co < g.cout_g; co++)
                        panel[co * job.mr + r % job.mr] = src[co * g.kdim];
                }
            }
    }
    job.apack = a;
    double flops = 2.0 * (double)p->batch * (double)p->out_channels * (double)g.kdim * (double)P;
    int nthreads = ptc_threads_for_work(flops);
    /* Windows that do not overlap (extent <= stride in every dimension: 2x2
     * stride-2 upsampling) give each dx element at most one term, so tiles of
     * positions can run side by side; and where they tile the input exactly,
     * every element gets its one term stored, with no clearing first. */
    int disjoint = 1;
    for (int d = 0; d < p->ndim; d++)
        disjoint &= p->dilation[d] * (p->kernel[d] - 1) + 1 <= p->stride[d];
    job.tile_tasks = disjoint ? job.ntiles : 1;
    job.assign = g.tiled_exactly;
    /* A dx well beyond the last-level cache would pass through it only to be
     * evicted: stream it (rows not of whole lines through a staging buffer of
     * STAGE_ELEMS). Not where its rows are shorter than a cache line: there
     * the streaming saved less than the staging cost (measured row by row,
     * before the zip kernel: 5-d float32 upsampling, rows of 48 bytes, 25%
     * slower on 2 threads with dx in the cache, 5% faster with it cold). Rows
     * of one line broke even with dx in the cache and gained 15-25% with it
     * cold, as it is in practice (4-d float32); longer ones gained either way
     * (5-d float64, rows of 96 bytes: 18%; 2-d and 3-d, 256 bytes: 10-17%). */
    int64_t row_bytes = p->in_size[p->ndim - 1] * (int64_t)sizeof(REAL);
    job.stream = job.assign && row_bytes >= 64 &&
                 (double)p->batch * (double)p->in_channels * (double)g.in_spatial *
                         sizeof(REAL) >= STREAM_BYTES;
    if (job.stream) job.b_elems = job.b_elems > STAGE_ELEMS ? job.b_elems : STAGE_ELEMS;
    if (!a) st = PTC_ERR_NO_MEMORY;
    if (st == PTC_OK && disjoint && !job.assign)
        st = FN(zero_planes)(dx, p->batch * p->in_channels, g.in_spatial, opt);
    if (st == PTC_OK) st = FN(job_start)(&job, nthreads);
    if (st == PTC_OK)
        st = ptc_parallel_for(p->batch * p->groups * job.nblocks * job.tile_tasks, nthreads,
                              FN(backward_data_task), &job, opt);
    FN(job_end)(&job, nthreads);
    ptc_geometry_free(&g);
    return st;
}

/* ---- 1-d transposed convolution with a long kernel ------------------------ */

/* A 1-d transposed convolution with a long kernel (audio upsampling: 1024
 * taps at stride 256) spends the path above scattering: each row of C (one
 * tap, all positions) is added into dx at stride s, one cache line per term.
 * Computed transposed, C^T = dY^T W (positions x taps), row p of C^T is the
 * window of position p, contiguous in dx from p * s - pad_low: the
 * micro-kernel adds its tiles straight into dx (ldc = s; rows of a tile
 * overlap where the windows do, and are added one after another), and W's
 * rows, packed once, are the B panels. A task owns one image, group and
 * input channel, and adds its terms in a fixed order. */

/* Kernels at least as long as the widest micro-kernel tile (shorter ones would
 * leave tiles part empty), whose windows overlap (else the tiles of the path
 * above run in parallel), and padding that does not dwarf the row (these
 * paths build the padded row; the path above never does). */
static int FN(long_kernel_ok)(const ptc_problem *p)
{
    const ptc_kernel_set *ks = ptc_kernels();
    int64_t in = p->in_size[0];
    return p->ndim == 1 && p->dilation[0] == 1 &&
           p->kernel[0] >= KERNEL_NV(ks) * KERNEL_VLEN(ks) && p->kernel[0] > p->stride[0] &&
           p->pad_low[0] + p->pad_high[0] <= 3 * in + 65536;
}

/* The long-kernel paths' jobs: the kernels and per-thread scratch of FN(job)
 * (buf_b: a packed block of dY; buf_c: a zero-padded row of dx or x), and: */
typedef struct {
    FN(job) base;
    int64_t mc;   /* positions (data) or output channels (filter) per block */
    int64_t span; /* the padded row: every window, and the columns a tile reads past them */
    int direct;   /* data: the windows lie inside dx, added into it with no buffer */
} FN(long_job);

/* Starts a long-kernel job on geometry g: its kernels, and per-thread buffers
 * of a_elems (buf_b) and row_elems (buf_c, none when 0). */
static ptc_status FN(long_job_start)(FN(long_job) *job, const ptc_geometry *g, int64_t a_elems,
                                     int64_t row_elems, int nthreads)
{
    FN(job_init)(&job->base, g);
    job->base.b_elems = a_elems;
    job->base.c_elems = row_elems;
    job->base.seg_cap = 1;
    return FN(job_start)(&job->base, nthreads);
}

/* Rows ahead of the one being packed that a strided packing walk prefetches. */
#define PACK_AHEAD 16

static ptc_status FN(long_data_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(long_job) *job = (FN(long_job) *)vjob;
    const FN(job) *base = &job->base;
    const ptc_geometry *g = base->g;
    const ptc_problem *p = g->p;
    FN(scratch) *sc;
    ptc_status st = FN(scratch_get)(&job->base, tid, &sc);
    if (st != PTC_OK) return st;
    int64_t ci = t % g->cin_g, grp = t / g->cin_g % p->groups, n = t / g->cin_g / p->groups;
    int64_t P = g->out_spatial, K = g->cout_g, k = p->kernel[0], s = p->stride[0];
    int64_t in = p->in_size[0], mr = base->mr, nr = base->nr;
    REAL *a = sc->buf_b;
    REAL *dxrow = base->out + (n * p->in_channels + grp * g->cin_g + ci) * in;
    REAL *target = job->direct ? dxrow : sc->buf_c;
    memset(target, 0, (size_t)(job->direct ? in : job->span) * sizeof(REAL));
    const REAL *dyg = base->in + (n * p->out_channels + grp * K) * P;
    const REAL *bch = base->apack + (grp * g->cin_g + ci) * base->npanels * K * nr;
    FN(gather_fn) gather = GATHER(base->ks);
    for (int64_t p0 = 0; p0 < P; p0 += job->mc) {
        int64_t mc = FN(min64)(job->mc, P - p0);
        /* A block: panels of mr positions, a[(i0 / mr) * mr * K + co * mr + i],
         * each a walk down dY's channels, one line per row P apart: the rows
         * PACK_AHEAD channels on are prefetched, as such strides outrun the
         * hardware's prefetch (kernel 1024, stride 256, float64, one thread:
         * the packing took 5.7% of the pass, 3.1% so). */
        for (int64_t i0 = 0; i0 < mc; i0 += mr) {
            REAL *panel = a + i0 * K;
            int64_t rows = FN(min64)(mr, mc - i0);
            for (int64_t co = 0; co < K; co++) {
                const REAL *src = dyg + co * P + p0 + i0;
                if (co + PACK_AHEAD < K) __builtin_prefetch(src + PACK_AHEAD * P);
                gather(rows, src, 1, panel + co * mr);
                for (int64_t i = rows; i < mr; i++) panel[co * mr + i] = 0;
            }
        }
        for (int64_t k0 = 0; k0 < K; k0 += base->kc) {
            int64_t kc = FN(min64)(base->kc, K - k0);
            for (int64_t jp = 0; jp < base->npanels; jp++) {
                int64_t j0 = jp * nr, ncols = FN(min64)(nr, k - j0);
                FN(kernel_fn) kern = FN(kernel_for)(base, ncols);
                const REAL *b = bch + (jp * K + k0) * nr;
                for (int64_t i0 = 0; i0 < mc; i0 += mr)
                    kern(kc, a + i0 * K + k0 * mr, b, nr, target + (p0 + i0) * s + j0, s,
                         PTC_TILE_ADD, FN(min64)(mr, mc - i0), ncols);
            }
        }
        if (ptc_poll(par, tid)) return PTC_OK;
    }
    if (!job->direct) {
        /* dx[i] is the windows' sum at i + pad_low; past their extent, 0. */
        int64_t lo = p->pad_low[0], have = FN(min64)(in, job->span - lo);
        if (have < 0) have = 0;
        if (have > 0) memcpy(dxrow, target + lo, (size_t)have * sizeof(REAL));
        memset(dxrow + have, 0, (size_t)(in - have) * sizeof(REAL));
    }
    return PTC_OK;
}

static ptc_status FN(backward_data_long)(const ptc_problem *p, const REAL *dy, const REAL *w,
                                         REAL *dx, const ptc_options *opt)
{
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, p);
    if (st != PTC_OK) return st;
    const ptc_kernel_set *ks = ptc_kernels();
    int64_t K = g.cout_g, k = p->kernel[0], P = g.out_spatial;
    int64_t mr = KERNEL_MR(ks), nr = KERNEL_NV(ks) * KERNEL_VLEN(ks);
    FN(long_job) job;
    /* A block of at most 256 positions and 1 MiB, a multiple of mr */
    int64_t mc = FN(min64)(256, (1 << 20) / (K * (int64_t)sizeof(REAL)));
    job.mc = FN(round_up)(mc > mr ? mc : mr, mr);
    job.span = (P - 1) * p->stride[0] + k;
    job.direct = p->pad_low[0] == 0 && job.span <= p->in_size[0];
    double flops = 2.0 * (double)p->batch * (double)p->out_channels * (double)g.kdim * (double)P;
    int nthreads = ptc_threads_for_work(flops);
    st = FN(long_job_start)(&job, &g, job.mc * K, job.direct ? 0 : job.span, nthreads);
    job.base.in = dy;
    job.base.out = dx;
    job.base.kc = FN(block_len)(K, KC_BYTES / (nr * (int64_t)sizeof(REAL)));
    job.base.npanels = FN(ceil_div)(k, nr);
    /* W per (group, input channel) as panels of nr taps: [panel][co][nr] */
    REAL *b = FN(alloc)(p->groups * g.cin_g * job.base.npanels * K * nr);
    if (b)
        for (int64_t grp = 0; grp < p->groups; grp++)
            for (int64_t ci = 0; ci < g.cin_g; ci++) {
                REAL *dst = b + (grp * g.cin_g + ci) * job.base.npanels * K * nr;
                for (int64_t jp = 0; jp < job.base.npanels; jp++)
                    for (int64_t co = 0; co < K; co++) {
                        const REAL *src = w + ((grp * K + co) * g.cin_g + ci) * k + jp * nr;
                        REAL *panel = dst + (jp * K + co) * nr;
                        int64_t j = 0, ncols = FN(min64)(nr, k - jp * nr);
                        for (; j < ncols; j++) panel[j] = src[j];
                        for (; j < nr; j++) panel[j] = 0;
                    }
            }
    job.base.apack = b;
    if (st == PTC_OK && !b) st = PTC_ERR_NO_MEMORY;
    if (st == PTC_OK)
        st = ptc_parallel_for(p->batch * p->groups * g.cin_g, nthreads, FN(long_data_task), &job,
                              opt);
    FN(job_end)(&job.base, nthreads);
    ptc_geometry_free(&g);
    return st;
}

/* The weight gradient of the same problems as a GEMM with no unfolding:
 * dW[co, j] = sum_p dY[co, p] * x[p * s - pad_low + j], whose B row p is the
 * window of position p, read in place from a zero-padded copy of the input row
 * (ldb = s). A task owns one group, input channel and block of output
 * channels, and adds the images and blocks of positions in a fixed order. */
static ptc_status FN(long_filter_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(long_job) *job = (FN(long_job) *)vjob;
    const FN(job) *base = &job->base;
    const ptc_geometry *g = base->g;
    const ptc_problem *p = g->p;
    FN(scratch) *sc;
    ptc_status st = FN(scratch_get)(&job->base, tid, &sc);
    if (st != PTC_OK) return st;
    int64_t nmblocks = FN(ceil_div)(g->cout_g, job->mc);
    int64_t mb = t % nmblocks, ci = t / nmblocks % g->cin_g, grp = t / nmblocks / g->cin_g;
    int64_t P = g->out_spatial, k = p->kernel[0], s = p->stride[0], in = p->in_size[0];
    int64_t mr = base->mr, nr = base->nr, co0 = mb * job->mc;
    int64_t mrows = FN(min64)(job->mc, g->cout_g - co0), ldc = g->cin_g * k;
    REAL *a = sc->buf_b, *xp = sc->buf_c;
    REAL *c = base->out + (grp * g->cout_g + co0) * ldc + ci * k;
    memset(xp, 0, (size_t)job->span * sizeof(REAL));
    for (int64_t n = 0; n < p->batch; n++) {
        memcpy(xp + p->pad_low[0], base->in + (n * p->in_channels + grp * g->cin_g + ci) * in,
               (size_t)in * sizeof(REAL));
        const REAL *dyb = base->aux + (n * p->out_channels + grp * g->cout_g + co0) * P;
        for (int64_t p0 = 0; p0 < P; p0 += base->kc) {
            int64_t kc = FN(min64)(base->kc, P - p0);
            /* A: panels of mr output channels over the block's positions */
            FN(pack_columns)(base->ks, dyb + p0, P, mrows, kc, a, base->kc, 0);
            int first = n == 0 && p0 == 0;
            for (int64_t j0 = 0; j0 < k; j0 += nr) {
                int64_t ncols = FN(min64)(nr, k - j0);
                FN(kernel_fn) kern = FN(kernel_for)(base, ncols);
                for (int64_t i0 = 0; i0 < mrows; i0 += mr)
                    kern(kc, a + i0 * base->kc, xp + p0 * s + j0, s, c + i0 * ldc + j0, ldc,
                         first ? 0 : PTC_TILE_ADD, FN(min64)(mr, mrows - i0), ncols);
            }
        }
        if (ptc_poll(par, tid)) return PTC_OK;
    }
    return PTC_OK;
}

static ptc_status FN(backward_filter_long)(const ptc_problem *p, const REAL *x, const REAL *dy,
                                           REAL *dw, const ptc_options *opt)
{
    if (p->batch == 0) {
        memset(dw, 0, (size_t)(p->out_channels * (p->in_channels / p->groups) * p->kernel[0]) *
                          sizeof(REAL));
        return PTC_OK;
    }
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, p);
    if (st != PTC_OK) return st;
    const ptc_kernel_set *ks = ptc_kernels();
    int64_t P = g.out_spatial, k = p->kernel[0], nr = KERNEL_NV(ks) * KERNEL_VLEN(ks);
    FN(long_job) job;
    job.mc = 8 * KERNEL_MR(ks);
    /* Every window, and the nr columns the widest kernel reads of the last. */
    int64_t windows = (P - 1) * p->stride[0] + k + nr, row = p->pad_low[0] + p->in_size[0];
    job.span = windows > row ? windows : row;
    job.direct = 0;
    int64_t kc = FN(block_len)(P, 256);
    double flops = 2.0 * (double)p->batch * (double)p->out_channels * (double)g.kdim * (double)P;
    int nthreads = ptc_threads_for_work(flops);
    st = FN(long_job_start)(&job, &g, job.mc * kc, job.span, nthreads);
    job.base.in = x;
    job.base.aux = dy;
    job.base.out = dw;
    job.base.kc = kc;
    if (st == PTC_OK)
        st = ptc_parallel_for(p->groups * g.cin_g * FN(ceil_div)(g.cout_g, job.mc), nthreads,
                              FN(long_filter_task), &job, opt);
    FN(job_end)(&job.base, nthreads);
    ptc_geometry_free(&g);
    return st;
}

/* ---- backward filter ---------------------------------------------------- */

/* dW[co, kk] = sum over images and positions of dY[co, p] * cols[kk, p]: a
 * reduction along positions, done by the dot kernel on rows contiguous along
 * p in their natural layout (dY's rows, and the patches unfolded exactly as
 * for the forward pass), so nothing is transposed. A task owns a block of kk
 * of one group and adds every image and chunk of positions in one fixed
 * order; the lanes of the partial sums are added last, in a fixed order too. */

typedef void (*FN(dot_fn))(int64_t, const ptc_dot_run *, const REAL *, int64_t,
                            const REAL *const *, REAL *, int64_t, int);

typedef struct {
    FN(job) base;
    FN(dot_fn) dot;
    int64_t dmr, dnr, vlen, ldk, ldv, cout_pad;
    const REAL *xp;  /* shifted path: the padded input, planes of pvol */
    const REAL *dyv; /* shifted path: dY on the padded grid, run by run */
    int64_t pvol;
    int64_t runs, run_span, run_ld; /* shifted path: runs, their positions, dY's layout */
    ptc_dot_run *pieces;            /* shifted path: the runs in pieces of at most kc, ... */
    int64_t *chunk_start, nchunks;  /* ... taken a chunk of about kc positions at a time */
    const REAL *dy_rows;            /* unfolded path: dY, or its copy on whole vectors, */
    int64_t dy_ld;                  /* ... rows dy_ld apart, ... */
    int dy_direct;                  /* ... read by the dot tiles (else copied per chunk) */
    int64_t imgs;                   /* unfolded path: images summed per chunk */
} FN(filter_job);

/* Positions per chunk of the weight gradient's reduction, and the most images
 * one chunk takes. */
#define FILTER_CHUNK 512
#define FILTER_IMAGES 64

/* dW[co, kk] of rows kk0..kk0+nb-1 = the lanes of sums added in order. With
 * shifted rows the block's rows are ordered (offset, channel), the weight's
 * are (channel, offset). */
static void FN(sum_lanes)(const FN(filter_job) *fj, const REAL *sums, int64_t grp, int64_t kk0,
                          int64_t nb, int offset_major)
{
    const ptc_geometry *g = fj->base.g;
    REAL *dwg = fj->base.out + grp * g->cout_g * g->kdim;
    for (int64_t co = 0; co < g->cout_g; co++)
        for (int64_t r = 0; r < nb; r++) {
            const REAL *lanes = sums + co * fj->ldv + r * fj->vlen;
            REAL total = 0;
            for (int64_t l = 0; l < fj->vlen; l++) total += lanes[l];
            int64_t kk = kk0 + r;
            if (offset_major) kk = (kk % g->cin_g) * g->kvol + kk / g->cin_g;
            dwg[co * g->kdim + kk] = total;
        }
}

/* The task split of every weight gradient; returns the thread count. Tasks
 * own blocks of about 128 of the `len` rows they split (patch rows, or a
 * pointwise gradient's output channels), a multiple of `unit`, as many as a
 * multiple of the thread count (block widths do not change any sum). */
static int FN(filter_blocks)(FN(job) *job, const ptc_geometry *g, int64_t len, int64_t unit)
{
    const ptc_problem *p = g->p;
    double flops = 2.0 * (double)p->batch * (double)p->out_channels * (double)g->kdim *
                   (double)g->out_spatial;
    int nthreads = ptc_threads_for_work(flops);
    int64_t nblocks = FN(ceil_div)(len, 128);
    if (nthreads > 1 && p->groups < nthreads) nblocks = FN(round_up)(nblocks, nthreads);
    job->block = FN(round_up)(FN(ceil_div)(len, nblocks), unit);
    job->nblocks = FN(ceil_div)(len, job->block);
    return nthreads;
}

/* Task t of a split by filter_blocks of `len` rows: its group, and its block
 * of rows [*kk0, *kk0 + returned count). */
static int64_t FN(filter_block_of)(const FN(job) *job, int64_t t, int64_t len, int64_t *grp,
                                   int64_t *kk0)
{
    *grp = t / job->nblocks;
    *kk0 = t % job->nblocks * job->block;
    return FN(min64)(job->block, len - *kk0);
}

static ptc_status FN(backward_filter_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(filter_job) *fj = (FN(filter_job) *)vjob;
    FN(job) *job = &fj->base;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(scratch) *s;
    ptc_status st = FN(scratch_get)(job, tid, &s);
    if (st != PTC_OK) return st;

    int64_t grp, kk0, nb = FN(filter_block_of)(job, t, g->kdim, &grp, &kk0);
    int64_t nb_pad = FN(round_up)(nb, fj->dnr), P = g->out_spatial;
    int64_t imgs = fj->imgs, ldk = fj->ldk, ldr = imgs * ldk;
    int64_t x_image = p->in_channels * g->in_spatial, dy_image = p->out_channels * fj->dy_ld;
    REAL *cols = s->buf_b;                       /* nb rows of ldr: imgs parts of ldk */
    REAL *dys = s->buf_c;                        /* cout_pad rows of ldr */
    REAL *sums = s->buf_c + fj->cout_pad * ldr;  /* [co][kk][lane], rows of ldv */
    const REAL **rows = (const REAL **)s->ptrs;  /* nb_pad row pointers into cols */
    for (int64_t r = 0; r < nb_pad; r++) rows[r] = cols + r * ldr;
    /* A pointwise convolution's patches are the channels of x themselves: read
     * in place (rows past nb repeat the last, for sums that are never read). */
    int in_place = ptc_patches_are_channels(g);
    ptc_dot_run runs[FILTER_IMAGES];

    for (int64_t n0 = 0; n0 < p->batch; n0 += imgs) {
        int64_t nimg = FN(min64)(imgs, p->batch - n0);
        const REAL *xg0 = job->in + (n0 * p->in_channels + grp * g->cin_g) * g->in_spatial;
        const REAL *dyg0 = fj->dy_rows + (n0 * p->out_channels + grp * g->cout_g) * fj->dy_ld;
        for (int64_t p0 = 0; p0 < P; p0 += job->kc) {
            int64_t kc = FN(min64)(job->kc, P - p0);
            int64_t nseg = in_place ? 0 : ptc_segments(g, p0, kc, s->segs);
            if (in_place)
                for (int64_t r = 0; r < nb_pad; r++)
                    rows[r] = xg0 + (kk0 + FN(min64)(r, nb - 1)) * g->in_spatial + p0;
            /* dY's rows are read where they are (see dy_direct), or copied here
             * when the group's channels do not fill the dot tile's rows. A
             * chunk that ends inside a vector has its last one read masked:
             * nothing past the chunk is added. */
            for (int64_t m = 0; m < nimg; m++) {
                runs[m].kv = FN(ceil_div)(kc, fj->vlen);
                runs[m].tail = kc % fj->vlen;
                runs[m].boff = in_place ? m * x_image : m * ldk;
                runs[m].aoff = fj->dy_direct ? m * dy_image : m * ldk;
                if (!in_place)
                    FN(im2col)(g, xg0 + m * x_image, kk0, nb, s->segs, nseg, cols + m * ldk,
                               ldr);
                if (!fj->dy_direct)
                    for (int64_t co = 0; co < g->cout_g; co++)
                        memcpy(dys + co * ldr + m * ldk,
                               dyg0 + m * dy_image + co * fj->dy_ld + p0,
                               (size_t)kc * sizeof(REAL));
            }
            const REAL *a = fj->dy_direct ? dyg0 + p0 : dys;
            int64_t lda = fj->dy_direct ? fj->dy_ld : ldr;
            /* Rows past nb and cout_g hold stale data: they only feed sums that
             * are never read. */
            int acc = n0 > 0 || p0 > 0;
            for (int64_t i0 = 0; i0 < fj->cout_pad; i0 += fj->dmr)
                for (int64_t j0 = 0; j0 < nb_pad; j0 += fj->dnr)
                    fj->dot(nimg, runs, a + i0 * lda, lda, rows + j0,
                            sums + i0 * fj->ldv + j0 * fj->vlen, fj->ldv, acc);
            if (ptc_poll(par, tid)) return PTC_OK;
        }
    }
    FN(sum_lanes)(fj, sums, grp, kk0, nb, 0);
    return PTC_OK;
}

/* The kernels and the task split shared by both dot-kernel weight-gradient
 * drivers; returns the thread count. */
static int FN(filter_plan)(FN(filter_job) *fj, const ptc_geometry *g)
{
    FN(job) *job = &fj->base;
    FN(job_init)(job, g);
    fj->dot = DOT_KERNEL(job->ks);
    fj->dmr = job->ks->dmr;
    fj->dnr = job->ks->dnr;
    fj->vlen = job->vlen;
    int nthreads = FN(filter_blocks)(job, g, g->kdim, fj->dnr);
    fj->cout_pad = FN(round_up)(g->cout_g, fj->dmr);
    fj->ldv = FN(round_up)(job->block, fj->dnr) * fj->vlen;
    job->ptr_cap = FN(round_up)(job->block, fj->dnr);
    return nthreads;
}

/* ---- backward filter as a GEMM ------------------------------------------- */

/* With many output channels and patch rows per group, the weight gradient
 * runs on the GEMM micro-kernels instead of the dot kernel, transposed:
 * dW^T (kdim x cout_g) = cols (kdim x positions) dY^T (positions x cout_g).
 * The patches' rows are packed into panels of mr rows (each element once),
 * and dY is transposed into rows of channels, the B strips, a span of the
 * positions of all images (image after image) at a time. A task owns a block
 * of kk of one group and adds the chunks of positions in a fixed order, as
 * the dot path does. */

typedef struct {
    FN(job) base;
    REAL *dyt;         /* dY^T of the span in hand: row q - q_lo of ldt channels for the
                          positions q = image * P + position in [q_lo, q_hi) */
    int64_t ldt, q_lo, q_hi;
    REAL *dwt;         /* dW^T, [grp][kk][co], rows ldw apart */
    int64_t ldw;
    const REAL *dy;
    REAL *dw;
} FN(gemm_filter_job);

/* Bytes of dY^T transposed at a time (at least one chunk of positions), and
 * the positions per task of the transpose. */
#define FILTER_DYT_BYTES (8.0 * 1024 * 1024)
#define FILTER_DYT_PIECE 512
/* Flops per transposed element from which the GEMM form runs (below). */
#define FILTER_GEMM_FLOPS 300.0

/* Columns per piece of a transpose (mr rows of them in L1). */
#define TRANSPOSE_SPAN 256

/* dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: mr rows at a
 * time packed by the panel kernel into a piece in L1, then copied out a
 * column (mr elements) at a time. */
static void FN(transpose)(const ptc_kernel_set *ks, const REAL *src, int64_t lds, int64_t rows,
                          int64_t cols, REAL *dst, int64_t ldd)
{
    int64_t mr = KERNEL_MR(ks);
    REAL piece[TRANSPOSE_SPAN * PTC_MAX_MR];
    for (int64_t i0 = 0; i0 < rows; i0 += mr) {
        int64_t live = FN(min64)(mr, rows - i0);
        for (int64_t j0 = 0; j0 < cols; j0 += TRANSPOSE_SPAN) {
            int64_t n = FN(min64)(TRANSPOSE_SPAN, cols - j0);
            PACK(ks)(n, src + i0 * lds + j0, lds, live, piece);
            REAL *d = dst + j0 * ldd + i0;
            if (live == PTC_MAX_MR) /* a fixed size: inline moves, not a call */
                for (int64_t j = 0; j < n; j++)
                    memcpy(d + j * ldd, piece + j * PTC_MAX_MR, PTC_MAX_MR * sizeof(REAL));
            else
                for (int64_t j = 0; j < n; j++)
                    memcpy(d + j * ldd, piece + j * mr, (size_t)live * sizeof(REAL));
        }
    }
}

/* Positions [q_lo + t * FILTER_DYT_PIECE, ...) of the span in hand into dY^T,
 * image by image: row q - q_lo of dyt holds dY[:, q]. */
static ptc_status FN(transpose_dy_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(gemm_filter_job) *fj = (FN(gemm_filter_job) *)vjob;
    const ptc_geometry *g = fj->base.g;
    int64_t P = g->out_spatial, C = g->p->out_channels;
    int64_t q = fj->q_lo + t * FILTER_DYT_PIECE;
    int64_t end = FN(min64)(fj->q_hi, q + FILTER_DYT_PIECE);
    while (q < end) {
        int64_t n = q / P, pp = q % P, len = FN(min64)(P - pp, end - q);
        FN(transpose)(fj->base.ks, fj->dy + n * C * P + pp, P, C, len,
                      fj->dyt + (q - fj->q_lo) * fj->ldt, fj->ldt);
        q += len;
    }
    return PTC_OK;
}

static ptc_status FN(gemm_filter_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(gemm_filter_job) *fj = (FN(gemm_filter_job) *)vjob;
    FN(job) *job = &fj->base;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(scratch) *s;
    ptc_status st = FN(scratch_get)(job, tid, &s);
    if (st != PTC_OK) return st;
    int64_t grp, kk0, nb = FN(filter_block_of)(job, t, g->kdim, &grp, &kk0);
    int64_t P = g->out_spatial, mr = job->mr;
    int in_place = ptc_patches_are_channels(g);
    REAL *cols = s->buf_b, *panels = s->buf_c;
    REAL *c = fj->dwt + (grp * g->kdim + kk0) * fj->ldw;
    for (int64_t q0 = fj->q_lo; q0 < fj->q_hi; q0 += job->kc) {
        int64_t kc = FN(min64)(job->kc, fj->q_hi - q0);
        for (int64_t q = q0; q < q0 + kc;) {
            int64_t n = q / P, pp = q % P, len = FN(min64)(P - pp, q0 + kc - q);
            const REAL *xg = job->in + (n * p->in_channels + grp * g->cin_g) * g->in_spatial;
            if (in_place) {
                FN(pack_columns)(job->ks, xg + kk0 * g->in_spatial + pp, g->in_spatial, nb, len,
                                 panels, kc, q - q0);
            } else {
                int64_t nseg = ptc_segments(g, pp, len, s->segs);
                FN(im2col)(g, xg, kk0, nb, s->segs, nseg, cols + (q - q0), job->ldb);
            }
            q += len;
        }
        if (!in_place) FN(pack_columns)(job->ks, cols, job->ldb, nb, kc, panels, kc, 0);
        int flags = q0 > 0 ? PTC_TILE_ADD : 0;
        const REAL *b = fj->dyt + (q0 - fj->q_lo) * fj->ldt + grp * g->cout_g;
        for (int64_t i0 = 0; i0 < nb; i0 += mr)
            for (int64_t j0 = 0; j0 < g->cout_g; j0 += job->nr) {
                int64_t ncols = FN(min64)(job->nr, g->cout_g - j0);
                FN(kernel_for)(job, ncols)(kc, panels + i0 * kc, b + j0, fj->ldt,
                                           c + i0 * fj->ldw + j0, fj->ldw, flags,
                                           FN(min64)(mr, nb - i0), ncols);
            }
        if (ptc_poll(par, tid)) return PTC_OK;
    }
    if (fj->q_hi == p->batch * P) /* the block's columns of dW, from its rows of dW^T */
        FN(transpose)(job->ks, c, fj->ldw, nb, g->cout_g,
                      fj->dw + grp * g->cout_g * g->kdim + kk0, g->kdim);
    return PTC_OK;
}

/* The transposes cost about the same per element whatever the shape, kdim +
 * cout_g of them per position, against 2 kdim cout_g flops: the GEMM form
 * runs where the flops per transposed element reach FILTER_GEMM_FLOPS
 * (measured: 419 for a 3x3 stride-2 convolution of 128 -> 256 channels and
 * 455 for a 4x4 one gained 5-19%; pointwise 1x1 128 -> 256 and 2x2 stride-2
 * 64 -> 128, 171 each, lost 3-28%). */
static int FN(filter_gemm_ok)(const ptc_geometry *g)
{
    double k = (double)g->kdim, c = (double)g->cout_g;
    return 2.0 * k * c >= FILTER_GEMM_FLOPS * (k + c);
}

static ptc_status FN(backward_filter_gemm)(const ptc_geometry *g, const REAL *x, const REAL *dy,
                                           REAL *dw, const ptc_options *opt)
{
    const ptc_problem *p = g->p;
    FN(gemm_filter_job) fj;
    memset(&fj, 0, sizeof(fj));
    FN(job) *job = &fj.base;
    FN(job_init)(job, g);
    job->in = x;
    fj.dy = dy;
    fj.dw = dw;
    int nthreads = FN(filter_blocks)(job, g, g->kdim, job->mr);
    int64_t P = g->out_spatial;
    fj.ldt = FN(leading_dim)(p->out_channels, job->vlen);
    fj.ldw = FN(leading_dim)(g->cout_g, job->vlen);
    /* Chunks of about 256 positions over all images, the reduction's fixed
     * order; spans of whole chunks, FILTER_DYT_BYTES of dY^T each. */
    int64_t Q = p->batch * P;
    job->kc = FN(block_len)(Q, 256);
    int64_t chunks = (int64_t)(FILTER_DYT_BYTES / ((double)job->kc * (double)fj.ldt * sizeof(REAL)));
    int64_t span = FN(min64)(Q, (chunks < 1 ? 1 : chunks) * job->kc);
    job->ldb = FN(leading_dim)(job->kc, job->vlen);
    job->b_elems = job->block * job->ldb;
    job->c_elems = FN(round_up)(job->block, job->mr) * job->kc;
    job->seg_cap = job->kc / p->out_size[p->ndim - 1] + 2;
    fj.dyt = FN(alloc)(span * fj.ldt);
    fj.dwt = FN(alloc)(p->groups * g->kdim * fj.ldw);
    ptc_status st = fj.dyt && fj.dwt ? FN(job_start)(job, nthreads) : PTC_ERR_NO_MEMORY;
    for (int64_t q_lo = 0; q_lo < Q && st == PTC_OK; q_lo += span) {
        fj.q_lo = q_lo;
        fj.q_hi = FN(min64)(Q, q_lo + span);
        st = ptc_parallel_for(FN(ceil_div)(fj.q_hi - q_lo, FILTER_DYT_PIECE), nthreads,
                              FN(transpose_dy_task), &fj, opt);
        if (st == PTC_OK)
            st = ptc_parallel_for(p->groups * job->nblocks, nthreads, FN(gemm_filter_task), &fj,
                                  opt);
    }
    FN(job_end)(job, nthreads);
    free(fj.dyt);
    free(fj.dwt);
    return st;
}

/* ---- pointwise weight gradient as a GEMM -------------------------------- */

/* A pointwise convolution's weight gradient dW (cout_g x cin_g) = dY X^T
 * sums over every position of every image. Both operands are brought into
 * the micro-kernels' layout a chunk of positions at a time, within the task's
 * own L2: dY's rows packed into A panels (each element once), x's rows
 * transposed into B rows over the input channels (once per task). A task
 * owns a block of output channels of one group and adds the chunks in a
 * fixed order (image after image), into dW itself. The dot kernel reads
 * both rows where they are, but keeps lane-wise partial sums of its whole
 * block (1 MiB for 256 x 64 float64, swept once per chunk) and runs below
 * the forward's tiles (about 48 against 57 GFLOP/s a core, float64, all in
 * L1, measured); here packing costs two element moves per 2 cout_g cin_g /
 * (cout_g + cin_g) flops. */

typedef struct {
    FN(job) base;
    const REAL *dy;
    REAL *dw;
    int64_t ldt; /* B rows: the chunk's positions, each a row of the group's channels */
} FN(pointwise_filter_job);

/* Flops per packed element from which this form runs. Measured on
 * pointwise 1x1, 128 -> 256 channels (171 flops per element), 2 threads:
 * float64 76-80 -> 88 GFLOP/s, float32 130-150 -> 143-161; the bound
 * lies below that one case, where the packing still costs under a fifth. */
#define POINTWISE_FILTER_FLOPS 100.0

static int FN(pointwise_filter_ok)(const ptc_geometry *g)
{
    double ci = (double)g->cin_g, co = (double)g->cout_g;
    return ptc_patches_are_channels(g) && g->out_spatial > 0 &&
           2.0 * ci * co >= POINTWISE_FILTER_FLOPS * (ci + co);
}

static ptc_status FN(pointwise_filter_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(pointwise_filter_job) *fj = (FN(pointwise_filter_job) *)vjob;
    FN(job) *job = &fj->base;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(scratch) *s;
    ptc_status st = FN(scratch_get)(job, tid, &s);
    if (st != PTC_OK) return st;
    int64_t grp, co0, nco = FN(filter_block_of)(job, t, g->cout_g, &grp, &co0);
    int64_t P = g->out_spatial, K = g->cin_g;
    int64_t mr = job->mr, nr = job->nr;
    REAL *bt = s->buf_b, *panels = s->buf_c;
    REAL *c = fj->dw + (grp * g->cout_g + co0) * K;
    for (int64_t k = 0; k < job->kc; k++)
        memset(bt + k * fj->ldt + K, 0, (size_t)(fj->ldt - K) * sizeof(REAL));
    /* the chunks in their fixed order, image after image */
    for (int64_t n = 0; n < p->batch; n++) {
        const REAL *xg = job->in + (n * p->in_channels + grp * K) * P;
        const REAL *dyg = fj->dy + (n * p->out_channels + grp * g->cout_g + co0) * P;
        for (int64_t p0 = 0; p0 < P; p0 += job->kc) {
            int64_t kc = FN(min64)(job->kc, P - p0);
            FN(pack_columns)(job->ks, dyg + p0, P, nco, kc, panels, kc, 0);
            FN(transpose)(job->ks, xg + p0, P, K, kc, bt, fj->ldt);
            int flags = n > 0 || p0 > 0 ? PTC_TILE_ADD : 0;
            for (int64_t j0 = 0; j0 < K; j0 += nr) {
                int64_t ncols = FN(min64)(nr, K - j0);
                FN(kernel_fn) kern = FN(kernel_for)(job, ncols);
                for (int64_t i0 = 0; i0 < nco; i0 += mr)
                    kern(kc, panels + i0 * kc, bt + j0, fj->ldt, c + i0 * K + j0, K, flags,
                         FN(min64)(mr, nco - i0), ncols);
            }
            if (ptc_poll(par, tid)) return PTC_OK;
        }
    }
    return PTC_OK;
}

static ptc_status FN(backward_filter_pointwise)(const ptc_geometry *g, const REAL *x,
                                                const REAL *dy, REAL *dw,
                                                const ptc_options *opt)
{
    const ptc_problem *p = g->p;
    FN(pointwise_filter_job) fj;
    memset(&fj, 0, sizeof(fj));
    FN(job) *job = &fj.base;
    FN(job_init)(job, g);
    job->in = x;
    fj.dy = dy;
    fj.dw = dw;
    /* blocks of output channels, whole panels; chunks of positions as the
     * forward's k-blocks, so that a strip of B stays in L2 */
    int nthreads = FN(filter_blocks)(job, g, g->cout_g, job->mr);
    job->kc = FN(block_len)(g->out_spatial, KC_BYTES / (job->nr * (int64_t)sizeof(REAL)));
    /* every row readable to a whole strip of nr (columns past cin_g are
     * zeros, and their products never stored) */
    fj.ldt = FN(leading_dim)(g->cin_g, job->nr);
    job->b_elems = job->kc * fj.ldt;
    job->c_elems = job->block * job->kc;
    job->seg_cap = 1;
    ptc_status st = FN(job_start)(job, nthreads);
    if (st == PTC_OK)
        st = ptc_parallel_for(p->groups * job->nblocks, nthreads, FN(pointwise_filter_task),
                              &fj, opt);
    FN(job_end)(job, nthreads);
    return st;
}

static ptc_status FN(backward_filter_zero_padded)(const ptc_problem *p, const REAL *x,
                                                  const REAL *dy, REAL *dw,
                                                  const ptc_options *opt)
{
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, p);
    if (st != PTC_OK) return st;
    if (p->batch == 0) {
        memset(dw, 0, (size_t)(p->out_channels * g.kdim) * sizeof(REAL));
        ptc_geometry_free(&g);
        return PTC_OK;
    }
    if (FN(pointwise_filter_ok)(&g)) {
        st = FN(backward_filter_pointwise)(&g, x, dy, dw, opt);
        ptc_geometry_free(&g);
        return st;
    }
    if (FN(filter_gemm_ok)(&g)) {
        st = FN(backward_filter_gemm)(&g, x, dy, dw, opt);
        ptc_geometry_free(&g);
        return st;
    }
    FN(filter_job) fj;
    memset(&fj, 0, sizeof(fj));
    FN(job) *job = &fj.base;
    int nthreads = FN(filter_plan)(&fj, &g);
    job->in = x;
    job->out = dw;
    /* Chunks of about FILTER_CHUNK positions are the reduction's fixed order,
     * whatever the threads: parts of an image (whole vectors, so that only an
     * image's last chunk can end inside one), or whole images, as many as fit.
     * Each chunk passes once over the lanes of the partial sums (2 MB for 256
     * x 128 float32 or float64), so small images take several at a time. */
    int64_t P = g.out_spatial;
    fj.imgs = FN(min64)(FN(min64)(p->batch, FILTER_IMAGES),
                        P < FILTER_CHUNK ? FILTER_CHUNK / P : 1);
    job->kc = fj.imgs > 1 ? P : FN(round_up)(FN(block_len)(P, FILTER_CHUNK), job->vlen);
    fj.ldk = FN(leading_dim)(job->kc, fj.vlen);
    /* The dot tiles read dY's rows in place where the group's channels fill
     * their rows and the rows are whole vectors long; rows that are not (3x3
     * stride 2: 14 x 14 positions) are copied once onto whole vectors, since
     * split loads cost such a gradient a tenth, and a copy per task and chunk
     * as much again (measured). A dY whose first row does not start on a
     * vector boundary (NumPy's large arrays start 16 bytes into a cache
     * line) is read in place all the same: its copy costs more than the split
     * loads (pointwise 1x1, float64: 28 against 23 ms). */
    fj.dy_direct = g.cout_g == fj.cout_pad;
    fj.dy_rows = dy;
    fj.dy_ld = P;
    if (fj.dy_direct && P % fj.vlen) {
        int64_t rows = p->batch * p->out_channels, ld = FN(round_up)(P, fj.vlen);
        size_t bytes = (size_t)(rows * ld) * sizeof(REAL) + 64;
        char *raw = (uint64_t)rows * (uint64_t)ld > (SIZE_MAX - 64) / sizeof(REAL)
                        ? NULL
                        : (char *)ptc_workspace_acquire(1, bytes);
        if (!raw) {
            ptc_geometry_free(&g);
            return PTC_ERR_NO_MEMORY;
        }
        REAL *copy = (REAL *)(raw + (64 - (uintptr_t)raw % 64) % 64);
        for (int64_t r = 0; r < rows; r++)
            memcpy(copy + r * ld, dy + r * P, (size_t)P * sizeof(REAL));
        fj.dy_rows = copy;
        fj.dy_ld = ld;
    }
    job->b_elems = FN(round_up)(job->block, fj.dnr) * fj.imgs * fj.ldk;
    job->c_elems = fj.cout_pad * fj.imgs * fj.ldk + fj.cout_pad * fj.ldv;
    job->seg_cap = job->kc / p->out_size[p->ndim - 1] + 2;
    st = FN(job_start)(job, nthreads);
    if (st == PTC_OK)
        st = ptc_parallel_for(p->groups * job->nblocks, nthreads, FN(backward_filter_task), &fj,
                              opt);
    FN(job_end)(job, nthreads);
    if (fj.dy_rows != dy) ptc_workspace_release(1);
    ptc_geometry_free(&g);
    return st;
}

/* ---- padding modes ------------------------------------------------------ */

/* Source index along one dimension of padded coordinate i (relative to the
 * first input element) for a non-zero padding mode. */
static int64_t FN(mode_index)(ptc_padding_mode mode, int64_t i, int64_t len)
{
    switch (mode) {
    case PTC_PAD_REPLICATE: return i < 0 ? 0 : (i >= len ? len - 1 : i);
    case PTC_PAD_CIRCULAR: return ((i % len) + len) % len;
    case PTC_PAD_REFLECT: {
        if (len == 1) return 0;
        int64_t period = 2 * len - 2, m = ((i % period) + period) % period;
        return m < len ? m : period - m;
    }
    default: return i >= 0 && i < len ? i : -1; /* zeros: -1 marks the padding */
    }
}

typedef struct {
    const ptc_problem *p;
    int64_t padded[PTC_MAX_NDIM];
    int64_t padded_vol, in_vol;
    int64_t *map[PTC_MAX_NDIM]; /* padded coordinate -> source coordinate, per dim */
    const REAL *src;
    REAL *dst;
    int fold; /* 0: pad src into dst; 1: fold padded src back into dst (the adjoint) */
} FN(pad_job);

static ptc_status FN(pad_task)(void *vjob, int64_t plane, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(pad_job) *job = (FN(pad_job) *)vjob;
    int nd = job->p->ndim, last = nd - 1;
    int64_t row_len = job->padded[last], rows = job->padded_vol / row_len;
    const REAL *src = job->src + plane * (job->fold ? job->padded_vol : job->in_vol);
    REAL *dst = job->dst + plane * (job->fold ? job->in_vol : job->padded_vol);
    if (job->fold) memset(dst, 0, (size_t)job->in_vol * sizeof(REAL));
    const int64_t *lmap = job->map[last];
    for (int64_t r = 0; r < rows; r++) {
        int64_t rest = r, off = 0, stride = job->p->in_size[last];
        for (int d = last - 1; d >= 0 && off >= 0; d--) {
            int64_t m = job->map[d][rest % job->padded[d]];
            off = m < 0 ? -1 : off + m * stride;
            rest /= job->padded[d];
            stride *= job->p->in_size[d];
        }
        /* The row's middle is the source row itself; only its ends need the map. */
        int64_t lo = job->p->pad_low[last], len = job->p->in_size[last];
        if (job->fold) {
            if (off < 0) continue;
            const REAL *s = src + r * row_len;
            REAL *d = dst + off;
            for (int64_t j = 0; j < lo; j++)
                if (lmap[j] >= 0) d[lmap[j]] += s[j];
            for (int64_t j = 0; j < len; j++) d[j] += s[lo + j];
            for (int64_t j = lo + len; j < row_len; j++)
                if (lmap[j] >= 0) d[lmap[j]] += s[j];
        } else if (off < 0) {
            memset(dst + r * row_len, 0, (size_t)row_len * sizeof(REAL));
        } else {
            const REAL *s = src + off;
            REAL *d = dst + r * row_len;
            for (int64_t j = 0; j < lo; j++) d[j] = lmap[j] >= 0 ? s[lmap[j]] : 0;
            memcpy(d + lo, s, (size_t)len * sizeof(REAL));
            for (int64_t j = lo + len; j < row_len; j++) d[j] = lmap[j] >= 0 ? s[lmap[j]] : 0;
        }
    }
    return PTC_OK;
}

/* Pads (fold = 0) or folds back (fold = 1) every (image, channel) plane. */
static ptc_status FN(pad_planes)(const ptc_problem *p, int64_t planes, const REAL *src,
                                 REAL *dst, int fold, const ptc_options *opt)
{
    FN(pad_job) job;
    memset(&job, 0, sizeof(job));
    job.p = p;
    job.src = src;
    job.dst = dst;
    job.fold = fold;
    job.padded_vol = job.in_vol = 1;
    ptc_status st = PTC_OK;
    for (int d = 0; d < p->ndim; d++) {
        job.padded[d] = p->in_size[d] + p->pad_low[d] + p->pad_high[d];
        job.padded_vol *= job.padded[d];
        job.in_vol *= p->in_size[d];
        job.map[d] = (int64_t *)malloc((size_t)job.padded[d] * sizeof(int64_t));
        if (!job.map[d]) {
            st = PTC_ERR_NO_MEMORY;
            break;
        }
        for (int64_t i = 0; i < job.padded[d]; i++)
            job.map[d][i] = FN(mode_index)(p->padding_mode, i - p->pad_low[d], p->in_size[d]);
    }
    if (st == PTC_OK)
        st = ptc_parallel_for(planes, ptc_threads_for_work((double)planes * (double)job.padded_vol),
                              FN(pad_task), &job, opt);
    for (int d = 0; d < p->ndim; d++) free(job.map[d]);
    return st;
}

/* The problem on the explicitly padded input: same shapes, no padding. */
static ptc_problem FN(padded_problem)(const ptc_problem *p, int64_t *padded_vol)
{
    ptc_problem q = *p;
    *padded_vol = 1;
    for (int d = 0; d < p->ndim; d++) {
        q.in_size[d] = p->in_size[d] + p->pad_low[d] + p->pad_high[d];
        q.pad_low[d] = q.pad_high[d] = 0;
        *padded_vol *= q.in_size[d];
    }
    q.padding_mode = PTC_PAD_ZEROS;
    return q;
}

static int FN(needs_explicit_padding)(const ptc_problem *p)
{
    if (p->padding_mode == PTC_PAD_ZEROS) return 0;
    for (int d = 0; d < p->ndim; d++)
        if (p->pad_low[d] || p->pad_high[d]) return 1;
    return 0;
}

/* ---- direct paths: one input channel per group --------------------------- */

/* Depthwise convolutions (and channel multipliers up to 4) are memory-bound
 * and their GEMMs degenerate (one row of an 8-row tile, a k-loop of 9), so
 * they run directly, one input plane at a time. The plane is first copied
 * into a zero-padded buffer (when there is padding or a stride), so that
 * every output row reads the same taps (kernel offsets) with no border left
 * to test; with stride s along the last dimension each padded row is stored
 * as its s phases (columns c with the same c % s, one after another), so
 * that a tap reads consecutive elements for consecutive outputs:
 *   forward          a block of a row's outputs stays in registers across all
 *                    taps and is stored once (TAPS kernel);
 *   weight gradient  every tap's sum stays in registers across the row
 *                    (TAPDOT kernel), as lane-wise partial sums reduced once;
 *   input gradient   (strided; stride 1 gathers through the flipped kernel)
 *                    each tap's row is added into dx (axpy).
 * Every sum runs in an order fixed by the problem alone, never by the thread
 * count. */

static int FN(direct_ok)(const ptc_problem *p)
{
    /* Not where the padding dwarfs the plane: the GEMM paths never build it. */
    int64_t pvol;
    FN(padded_problem)(p, &pvol);
    return p->in_channels == p->groups && p->out_channels / p->groups <= 4 &&
           pvol <= 4 * ptc_geometry_in_volume(p) + 65536;
}

/* Per-thread buffers of the direct paths. */
typedef struct {
    REAL *plane;        /* the zero-padded input plane */
    REAL **acc;         /* cout_g x kvol: weight gradient lane sums, ... */
    REAL *lanes;        /* ... each of vlen lanes */
    ptc_segment *segs;  /* input gradient: a tile's row segments */
} FN(direct_scratch);

typedef struct {
    const ptc_geometry *g;
    const ptc_kernel_set *ks;
    const REAL *x, *w, *bias, *dy;
    REAL *out;
    int copied;                    /* planes are copied (padded, phase-split); else read in place */
    int64_t phase_len;             /* elements of one phase of a padded row */
    int64_t pstride[PTC_MAX_NDIM]; /* element strides of the copied plane's dims */
    int64_t pvol, vlen;
    int64_t *tap_off;              /* kvol: offset of each tap from its window's origin */
    int64_t *row_off;              /* per output row: offset of its first window's origin */
    int64_t nc, ntiles, seg_cap;   /* input gradient: tiles of output positions */
    FN(direct_scratch) **scratch;  /* per thread */
} FN(direct_job);

static void FN(direct_scratch_free)(FN(direct_scratch) *sc)
{
    if (!sc) return;
    free(sc->plane);
    free(sc->acc);
    free(sc->lanes);
    free(sc->segs);
    free(sc);
}

static ptc_status FN(direct_scratch_get)(FN(direct_job) *job, int tid, FN(direct_scratch) **out)
{
    if (!job->scratch[tid]) {
        int64_t kvol = job->g->kvol, sums = job->g->cout_g * kvol;
        FN(direct_scratch) *sc = (FN(direct_scratch) *)calloc(1, sizeof(*sc));
        int ok = sc != NULL;
        if (ok) {
            sc->plane = job->copied ? FN(alloc)(job->pvol) : NULL;
            /* Its padding is cleared once: every plane copied in writes
             * the same elements. */
            if (sc->plane) memset(sc->plane, 0, (size_t)job->pvol * sizeof(REAL));
            sc->acc = (REAL **)malloc((size_t)sums * sizeof(REAL *));
            sc->lanes = FN(alloc)(sums * job->vlen);
            sc->segs = (ptc_segment *)calloc((size_t)job->seg_cap, sizeof(ptc_segment));
            ok = (sc->plane || !job->copied) && sc->acc && sc->lanes && sc->segs;
        }
        if (!ok) {
            FN(direct_scratch_free)(sc);
            return PTC_ERR_NO_MEMORY;
        }
        for (int64_t i = 0; i < sums; i++) sc->acc[i] = sc->lanes + i * job->vlen;
        job->scratch[tid] = sc;
    }
    *out = job->scratch[tid];
    return PTC_OK;
}

/* Input plane xc as the taps read it: copied into the zero-padded,
 * phase-split buffer, or xc itself (no padding, stride 1). */
static const REAL *FN(direct_plane)(const FN(direct_job) *job, FN(direct_scratch) *sc,
                                    const REAL *xc)
{
    if (!job->copied) return xc;
    const ptc_problem *p = job->g->p;
    int last = p->ndim - 1;
    int64_t row = p->in_size[last], rows = job->g->in_spatial / row, s = p->stride[last];
    int64_t lo = p->pad_low[last];
    for (int64_t r = 0; r < rows; r++) {
        int64_t rest = r, off = 0;
        for (int d = last - 1; d >= 0; d--) {
            off += (rest % p->in_size[d] + p->pad_low[d]) * job->pstride[d];
            rest /= p->in_size[d];
        }
        const REAL *src = xc + r * row;
        REAL *dst = sc->plane + off;
        if (s == 1) {
            memcpy(dst + lo, src, (size_t)row * sizeof(REAL));
        } else {
            /* Phase ph holds padded columns ph, ph + s, ...: input i = c - lo. */
            for (int64_t ph = 0; ph < s; ph++) {
                int64_t t = ph >= lo ? 0 : (lo - ph + s - 1) / s, i = ph + t * s - lo;
                REAL *d = dst + ph * job->phase_len;
                for (; i < row; i += s, t++) d[t] = src[i];
            }
        }
    }
    return sc->plane;
}

/* Offset in the plane (as direct_plane gives it) of the first window of
 * each output row, once per call: worked out row by row, its divisions took
 * a seventh of a 3x3 depthwise convolution's time (rows of 56 outputs). */
static int64_t *FN(row_offsets)(const FN(direct_job) *job)
{
    const ptc_problem *p = job->g->p;
    int64_t rows = job->g->out_spatial / p->out_size[p->ndim - 1];
    int64_t *off = (int64_t *)malloc((size_t)(rows > 0 ? rows : 1) * sizeof(int64_t));
    if (!off) return NULL;
    for (int64_t r = 0; r < rows; r++) {
        int64_t v = 0, rest = r;
        for (int d = p->ndim - 2; d >= 0; d--) {
            v += (rest % p->out_size[d]) * p->stride[d] * job->pstride[d];
            rest /= p->out_size[d];
        }
        off[r] = v;
    }
    return off;
}

static ptc_status FN(direct_forward_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)par;
    FN(direct_job) *job = (FN(direct_job) *)vjob;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(direct_scratch) *sc;
    ptc_status st = FN(direct_scratch_get)(job, tid, &sc);
    if (st != PTC_OK) return st;
    int64_t grp = t % p->groups, n = t / p->groups, P = g->out_spatial, kvol = g->kvol;
    int64_t row = p->out_size[p->ndim - 1];
    const REAL *xp = FN(direct_plane)(job, sc, job->x + (n * p->in_channels + grp) * g->in_spatial);
    for (int64_t j = 0; j < g->cout_g; j++) {
        int64_t co = grp * g->cout_g + j;
        REAL *y = job->out + (n * p->out_channels + co) * P;
        TAPS(job->ks)(P / row, row, xp, job->row_off, job->tap_off, kvol, job->w + co * kvol, y);
        if (job->bias)
            for (int64_t i = 0; i < P; i++) y[i] += job->bias[co];
    }
    return PTC_OK;
}

static ptc_status FN(direct_filter_task)(void *vjob, int64_t grp, int tid, ptc_parallel *par)
{
    FN(direct_job) *job = (FN(direct_job) *)vjob;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(direct_scratch) *sc;
    ptc_status st = FN(direct_scratch_get)(job, tid, &sc);
    if (st != PTC_OK) return st;
    int64_t P = g->out_spatial, kvol = g->kvol, sums = g->cout_g * kvol;
    int64_t row = p->out_size[p->ndim - 1];
    memset(sc->lanes, 0, (size_t)(sums * job->vlen) * sizeof(REAL));
    for (int64_t n = 0; n < p->batch; n++) {
        const REAL *xp = FN(direct_plane)(job, sc, job->x + (n * p->in_channels + grp) * g->in_spatial);
        for (int64_t j = 0; j < g->cout_g; j++) {
            int64_t co = grp * g->cout_g + j;
            const REAL *dy = job->dy + (n * p->out_channels + co) * P;
            TAPDOT(job->ks)(P / row, row, xp, job->row_off, job->tap_off, kvol, dy,
                            sc->acc + j * kvol);
        }
        if (ptc_poll(par, tid)) return PTC_OK;
    }
    REAL *dw = job->out + grp * sums;
    for (int64_t i = 0; i < sums; i++) {
        REAL total = 0;
        for (int64_t l = 0; l < job->vlen; l++) total += sc->acc[i][l];
        dw[i] = total;
    }
    return PTC_OK;
}

static ptc_status FN(direct_data_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(direct_job) *job = (FN(direct_job) *)vjob;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(direct_scratch) *sc;
    ptc_status st = FN(direct_scratch_get)(job, tid, &sc);
    if (st != PTC_OK) return st;
    int64_t grp = t % p->groups, n = t / p->groups, P = g->out_spatial;
    int64_t s = p->stride[p->ndim - 1];
    REAL *dxc = job->out + (n * p->in_channels + grp) * g->in_spatial;
    memset(dxc, 0, (size_t)g->in_spatial * sizeof(REAL));
    for (int64_t tile = 0; tile < job->ntiles; tile++) {
        int64_t p0 = tile * job->nc, nc = FN(min64)(job->nc, P - p0);
        int64_t nseg = ptc_segments(g, p0, nc, sc->segs);
        for (int64_t j = 0; j < g->cout_g; j++) {
            int64_t co = grp * g->cout_g + j;
            const REAL *dyrow = job->dy + (n * p->out_channels + co) * P + p0;
            for (int64_t q = 0; q < g->kvol; q++) {
                REAL wq = job->w[co * g->kvol + q];
                for (int64_t si = 0; si < nseg; si++) {
                    const ptc_segment *sg = &sc->segs[si];
                    int64_t off = ptc_row_offset(g, sg, q), lo, hi;
                    if (off < 0) continue;
                    ptc_last_dim_range(g, q, sg->o_last, sg->len, &lo, &hi);
                    if (hi > lo)
                        AXPY(job->ks)(hi - lo, wq, dyrow + sg->col + (lo - sg->o_last), 1,
                                      dxc + off + lo * s + g->shift[q], s);
                }
            }
        }
        if (ptc_poll(par, tid)) break;
    }
    return PTC_OK;
}

#define DIRECT_TILE 4096

/* op: 0 forward, 1 backward data, 2 backward filter. */
static ptc_status FN(direct)(int op, const ptc_problem *p, const REAL *a, const REAL *b,
                             const REAL *bias, REAL *out, const ptc_options *opt)
{
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, p);
    if (st != PTC_OK) return st;
    FN(direct_job) job;
    memset(&job, 0, sizeof(job));
    job.g = &g;
    job.ks = ptc_kernels();
    job.vlen = KERNEL_VLEN(job.ks);
    job.out = out;
    job.bias = bias;
    if (op == 0) { job.x = a; job.w = b; }
    if (op == 1) { job.dy = a; job.w = b; }
    if (op == 2) { job.x = a; job.dy = b; }
    int64_t P = g.out_spatial;
    job.nc = FN(min64)(P, DIRECT_TILE);
    job.ntiles = FN(ceil_div)(P, job.nc);
    job.seg_cap = op == 1 ? job.nc / p->out_size[p->ndim - 1] + 2 : 1;
    /* The plane as the forward pass and the weight gradient read it. */
    int last = p->ndim - 1;
    int64_t s = p->stride[last];
    job.copied = s > 1;
    for (int d = 0; d < p->ndim; d++) job.copied |= p->pad_low[d] || p->pad_high[d];
    int64_t wp = p->in_size[last] + p->pad_low[last] + p->pad_high[last];
    job.phase_len = job.copied ? FN(ceil_div)(wp, s) : p->in_size[last];
    job.pstride[last] = 1;
    int64_t extent = job.copied ? s * job.phase_len : p->in_size[last];
    for (int d = last - 1; d >= 0; d--) {
        job.pstride[d] = job.pstride[d + 1] * extent;
        extent = job.copied ? p->in_size[d] + p->pad_low[d] + p->pad_high[d] : p->in_size[d];
    }
    job.pvol = job.pstride[0] * extent;
    job.tap_off = (int64_t *)malloc((size_t)g.kvol * sizeof(int64_t));
    if (!job.tap_off) st = PTC_ERR_NO_MEMORY;
    if (st == PTC_OK && op != 1) {
        job.row_off = FN(row_offsets)(&job);
        if (!job.row_off) st = PTC_ERR_NO_MEMORY;
    }
    for (int64_t q = 0; st == PTC_OK && q < g.kvol; q++) {
        int64_t c = g.koff[q * g.nd + last]; /* padded column of the tap, from the origin */
        job.tap_off[q] = c % s * job.phase_len + c / s;
        for (int d = 0; d < last; d++) job.tap_off[q] += g.koff[q * g.nd + d] * job.pstride[d];
    }
    double work = 2.0 * (double)p->batch * (double)p->out_channels * (double)g.kvol * (double)P;
    int nthreads = ptc_threads_for_work(work);
    job.scratch = (FN(direct_scratch) **)calloc((size_t)nthreads, sizeof(FN(direct_scratch) *));
    if (!job.scratch) st = PTC_ERR_NO_MEMORY;
    if (st == PTC_OK) {
        if (op == 0)
            st = ptc_parallel_for(p->batch * p->groups, nthreads, FN(direct_forward_task), &job, opt);
        else if (op == 1)
            st = ptc_parallel_for(p->batch * p->groups, nthreads, FN(direct_data_task), &job, opt);
        else
            st = ptc_parallel_for(p->groups, nthreads, FN(direct_filter_task), &job, opt);
        for (int i = 0; i < nthreads; i++) FN(direct_scratch_free)(job.scratch[i]);
    }
    free(job.scratch);
    free(job.tap_off);
    free(job.row_off);
    ptc_geometry_free(&g);
    return st;
}

/* ---- stride 1: shifted windows of the padded input ----------------------- */

/* With stride 1 the patch of kernel offset q at output position o is the
 * padded input read at (origin of o) + delta_q, so the unfolded matrix need not
 * be built: its rows are the padded input shifted by delta_q. Both the forward
 * pass's implicit GEMM and the weight gradient's shifted path work on runs:
 * one plane of the last two output dimensions, laid out on the padded grid,
 * (Ho - 1) * Wp + Wo positions of which the Wp - Wo at each row's end are
 * computed and dropped (the forward pass) or meet zeros of dY laid out on the
 * same grid (the weight gradient). */

/* Padded-grid positions of a run per output: the work the runs waste. */
static double FN(run_waste)(const ptc_problem *p)
{
    int nd = p->ndim;
    double ho = (double)p->out_size[nd - 2], wo = (double)p->out_size[nd - 1];
    double wp = (double)(p->in_size[nd - 1] + p->pad_low[nd - 1] + p->pad_high[nd - 1]);
    return ((ho - 1) * wp + wo) / (ho * wo);
}

/* Where reading shifted windows beats unfolding (measured, one thread): from 3
 * spatial dimensions on, where output rows are short and unfolding them is
 * many small copies (3-d: +15..25%, 5-d 8^5: x3). In 1-d and 2-d unfolding
 * copies long rows at memory speed (1-d: -6..14%, 2-d: even). And only while
 * the runs waste little. */
static int FN(shifted_ok)(const ptc_problem *p)
{
    if (p->ndim < 3 || p->padding_mode != PTC_PAD_ZEROS) return 0;
    for (int d = 0; d < p->ndim; d++)
        if (p->stride[d] != 1) return 0;
    return FN(run_waste)(p) <= 1.5;
}

/* Offset on the padded grid of geometry g of the first position of run r. */
static int64_t FN(run_origin)(const ptc_geometry *g, int64_t r)
{
    const ptc_problem *q = g->p;
    int64_t v = 0;
    for (int d = q->ndim - 3; d >= 0; d--) {
        v += (r % q->out_size[d]) * g->in_stride[d];
        r /= q->out_size[d];
    }
    return v;
}

/* A zero-padded copy of every plane of x, with `slack` zeros after the last,
 * in the calling thread's workspace slot 0. */
static REAL *FN(padded_copy)(const ptc_problem *p, int64_t planes, const REAL *x, int64_t slack,
                             int64_t *pvol, const ptc_options *opt, ptc_status *st)
{
    ptc_problem z = FN(padded_problem)(p, pvol);
    (void)z;
    int64_t n = planes * *pvol + slack;
    REAL *xp = (uint64_t)n > SIZE_MAX / sizeof(REAL)
                   ? NULL
                   : (REAL *)ptc_workspace_acquire(0, (size_t)n * sizeof(REAL));
    if (!xp) {
        *st = PTC_ERR_NO_MEMORY;
        return NULL;
    }
    memset(xp + planes * *pvol, 0, (size_t)slack * sizeof(REAL));
    ptc_problem zeros = *p;
    zeros.padding_mode = PTC_PAD_ZEROS;
    *st = FN(pad_planes)(&zeros, planes, x, xp, 0, opt);
    return xp;
}

/* Stride-1 forward as an implicit GEMM: the B operand's row for (kernel
 * offset q, channel ci) is the padded input itself, read at a shift, so
 * nothing is unfolded; C is computed run by run. The whole reduction (every
 * offset and channel) is summed in registers for each tile of C, in k-blocks,
 * in the same order for every tiling: the rounding does not depend on the
 * thread count. */
typedef struct {
    const ptc_geometry *g;    /* of the padded problem: pad 0, stride 1 */
    const ptc_problem *p;     /* the caller's */
    FN(rows_fn) const *kerns; /* kerns[v - 1]: v vectors wide */
    int64_t mr, nr, vlen, kc, npanels;
    const REAL *xp, *bias, *apack;
    REAL *y;
    int64_t pvol, runs, run_span, runs_per_task, ntasks_img;
    int64_t ho, wo, wp;
    REAL **ctile;             /* per thread: round_up(cout_g, mr) x nr */
    const REAL ***brows;      /* per thread: kdim row pointers */
} FN(implicit_job);

static ptc_status FN(forward_implicit_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(implicit_job) *job = (FN(implicit_job) *)vjob;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = job->p;
    int nd = p->ndim;
    if (!job->ctile[tid]) {
        job->ctile[tid] = FN(alloc)(job->npanels * job->mr * job->nr);
        job->brows[tid] = (const REAL **)malloc((size_t)g->kdim * sizeof(REAL *));
        if (!job->ctile[tid] || !job->brows[tid]) return PTC_ERR_NO_MEMORY;
    }
    REAL *ct = job->ctile[tid];
    const REAL **brows = job->brows[tid];
    int64_t chunk = t % job->ntasks_img, grp = (t / job->ntasks_img) % p->groups;
    int64_t n = t / job->ntasks_img / p->groups;
    const REAL *xg = job->xp + (n * p->in_channels + grp * g->cin_g) * job->pvol;
    for (int64_t q = 0; q < g->kvol; q++)
        for (int64_t ci = 0; ci < g->cin_g; ci++)
            brows[q * g->cin_g + ci] = xg + ci * job->pvol + g->kdelta[q];
    const REAL *ag = job->apack + grp * job->npanels * job->mr * g->kdim;
    int64_t P = g->out_spatial, plane = job->ho * job->wo;
    REAL *yg = job->y + (n * p->out_channels + grp * g->cout_g) * P;

    int64_t r0 = chunk * job->runs_per_task, r1 = FN(min64)(r0 + job->runs_per_task, job->runs);
    for (int64_t run = r0; run < r1; run++) {
        /* The run's origin in the padded input: its outer output coordinates
         * (pad 0, stride 1) times the padded strides. */
        int64_t vb = 0, rest = run;
        for (int d = nd - 3; d >= 0; d--) {
            vb += (rest % p->out_size[d]) * g->in_stride[d];
            rest /= p->out_size[d];
        }
        for (int64_t j0 = 0; j0 < job->run_span; j0 += job->nr) {
            int64_t ncols = FN(min64)(job->nr, job->run_span - j0);
            FN(rows_fn) kern = job->kerns[(ncols + job->vlen - 1) / job->vlen - 1];
            for (int64_t k0 = 0; k0 < g->kdim; k0 += job->kc) {
                int64_t kc = FN(min64)(job->kc, g->kdim - k0);
                for (int64_t i0 = 0; i0 < g->cout_g; i0 += job->mr)
                    kern(kc, ag + (i0 / job->mr) * job->mr * g->kdim + k0 * job->mr, brows + k0,
                         vb + j0, ct + i0 * job->nr, job->nr, k0 > 0 ? PTC_TILE_ADD : 0,
                         FN(min64)(job->mr, g->cout_g - i0), ncols);
            }
            /* Keep the columns that are outputs: padded column v is output row
             * v / wp, column v % wp when that is below wo. */
            REAL *yrun = yg + run * plane;
            for (int64_t v = j0; v < j0 + ncols;) {
                int64_t h = v / job->wp, w = v % job->wp;
                int64_t len = FN(min64)(job->wo - w, j0 + ncols - v);
                if (len > 0)
                    for (int64_t co = 0; co < g->cout_g; co++) {
                        const REAL *src = ct + co * job->nr + (v - j0);
                        REAL *dst = yrun + co * P + h * job->wo + w;
                        REAL b = job->bias ? job->bias[grp * g->cout_g + co] : 0;
                        for (int64_t j = 0; j < len; j++) dst[j] = src[j] + b;
                    }
                v += len > 0 ? len + (job->wp - job->wo) : job->wp - w;
            }
        }
        if (ptc_poll(par, tid)) break;
    }
    return PTC_OK;
}

static ptc_status FN(forward_implicit)(const ptc_problem *p, const REAL *x, const REAL *w,
                                       const REAL *bias, REAL *y, const ptc_options *opt)
{
    int64_t pvol;
    ptc_problem q = FN(padded_problem)(p, &pvol);
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, &q);
    if (st != PTC_OK) return st;
    const ptc_kernel_set *ks = ptc_kernels();
    FN(implicit_job) job;
    memset(&job, 0, sizeof(job));
    job.g = &g;
    job.p = p;
    job.kerns = ROWS_KERNELS(ks);
    job.mr = KERNEL_MR(ks);
    job.vlen = KERNEL_VLEN(ks);
    job.nr = KERNEL_NV(ks) * job.vlen;
    job.bias = bias;
    job.y = y;
    int nd = p->ndim;
    job.ho = p->out_size[nd - 2];
    job.wo = p->out_size[nd - 1];
    job.wp = q.in_size[nd - 1];
    job.run_span = (job.ho - 1) * job.wp + job.wo;
    job.runs = g.out_spatial / (job.ho * job.wo);
    /* The last tile of the last run reads up to nr - 1 columns past it. */
    job.xp = FN(padded_copy)(p, p->batch * p->in_channels, x, job.nr, &pvol, opt, &st);
    job.pvol = pvol;
    job.kc = FN(block_len)(g.kdim, KC_BYTES / (job.nr * (int64_t)sizeof(REAL)));
    double flops = 2.0 * (double)p->batch * (double)p->out_channels * (double)g.kdim *
                   (double)g.out_spatial;
    int nthreads = ptc_threads_for_work(flops);
    /* Tasks of about 4096 padded columns, at least four per thread. */
    job.runs_per_task = FN(ceil_div)(4096, job.run_span);
    int64_t want = FN(ceil_div)(4 * (int64_t)nthreads, p->batch * p->groups);
    if (FN(ceil_div)(job.runs, job.runs_per_task) < want)
        job.runs_per_task = FN(ceil_div)(job.runs, want);
    job.ntasks_img = FN(ceil_div)(job.runs, job.runs_per_task);
    /* Weights in (offset, channel) order: a[(grp, panel)][q * cin_g + ci][i]. */
    job.npanels = FN(ceil_div)(g.cout_g, job.mr);
    REAL *a = FN(alloc)(p->groups * job.npanels * job.mr * g.kdim);
    if (a)
        for (int64_t grp = 0; grp < p->groups; grp++)
            for (int64_t co = 0; co < g.cout_g; co++) {
                REAL *panel = a + (grp * job.npanels + co / job.mr) * job.mr * g.kdim;
                const REAL *src = w + (grp * g.cout_g + co) * g.kdim;
                for (int64_t ci = 0; ci < g.cin_g; ci++)
                    for (int64_t k = 0; k < g.kvol; k++)
                        panel[(k * g.cin_g + ci) * job.mr + co % job.mr] = src[ci * g.kvol + k];
            }
    job.apack = a;
    job.ctile = (REAL **)calloc((size_t)nthreads, sizeof(REAL *));
    job.brows = (const REAL ***)calloc((size_t)nthreads, sizeof(REAL **));
    if (st == PTC_OK && (!a || !job.ctile || !job.brows)) st = PTC_ERR_NO_MEMORY;
    if (st == PTC_OK)
        st = ptc_parallel_for(p->batch * p->groups * job.ntasks_img, nthreads,
                              FN(forward_implicit_task), &job, opt);
    for (int t = 0; job.ctile && t < nthreads; t++) free(job.ctile[t]);
    for (int t = 0; job.brows && t < nthreads; t++) free((void *)job.brows[t]);
    free(job.ctile);
    free((void *)job.brows);
    free(a);
    ptc_workspace_release(0);
    ptc_geometry_free(&g);
    return st;
}

/* Elements of the weights: out_channels x in_channels / groups x kernel. */
static int64_t FN(weight_elems)(const ptc_problem *p)
{
    int64_t n = p->out_channels * (p->in_channels / p->groups);
    for (int d = 0; d < p->ndim; d++) n *= p->kernel[d];
    return n;
}

/* Stride 1 makes the transposed convolution a convolution of dY with the
 * kernel flipped and its channel axes exchanged: each dx element gathers its
 * terms instead of receiving scattered adds. Needs the padding to be at most
 * the kernel's extent (else the equivalent padding would be negative). */
static int FN(flip_ok)(const ptc_problem *p)
{
    for (int d = 0; d < p->ndim; d++) {
        int64_t extent = p->dilation[d] * (p->kernel[d] - 1);
        if (p->stride[d] != 1 || p->pad_low[d] > extent ||
            p->in_size[d] - p->out_size[d] + p->pad_low[d] < 0)
            return 0;
    }
    return 1;
}

static ptc_status FN(forward_dispatch)(const ptc_problem *p, const REAL *x, const REAL *w,
                                       const REAL *bias, REAL *y, const ptc_options *opt);

static ptc_status FN(backward_data_flipped)(const ptc_problem *p, const REAL *dy, const REAL *w,
                                            REAL *dx, const ptc_options *opt)
{
    ptc_problem f = *p;
    f.in_channels = p->out_channels;
    f.out_channels = p->in_channels;
    int64_t kvol = 1;
    for (int d = 0; d < p->ndim; d++) {
        int64_t extent = p->dilation[d] * (p->kernel[d] - 1);
        f.in_size[d] = p->out_size[d];
        f.out_size[d] = p->in_size[d];
        f.pad_low[d] = extent - p->pad_low[d];
        f.pad_high[d] = p->in_size[d] - p->out_size[d] + p->pad_low[d];
        kvol *= p->kernel[d];
    }
    int64_t cin_g = p->in_channels / p->groups, cout_g = p->out_channels / p->groups;
    /* wf[grp * cin_g + ci][co][kvol - 1 - k] = w[grp * cout_g + co][ci][k] */
    REAL *wf = FN(alloc)(p->out_channels * cin_g * kvol);
    if (!wf) return PTC_ERR_NO_MEMORY;
    for (int64_t grp = 0; grp < p->groups; grp++)
        for (int64_t co = 0; co < cout_g; co++)
            for (int64_t ci = 0; ci < cin_g; ci++) {
                const REAL *src = w + ((grp * cout_g + co) * cin_g + ci) * kvol;
                REAL *dst = wf + ((grp * cin_g + ci) * cout_g + co) * kvol;
                for (int64_t k = 0; k < kvol; k++) dst[kvol - 1 - k] = src[k];
            }
    ptc_status st = FN(forward_dispatch)(&f, dy, wf, NULL, dx, opt);
    free(wf);
    return st;
}

static ptc_status FN(filter_shifted_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    FN(filter_job) *fj = (FN(filter_job) *)vjob;
    FN(job) *job = &fj->base;
    const ptc_geometry *g = job->g;
    const ptc_problem *p = g->p;
    FN(scratch) *s;
    ptc_status st = FN(scratch_get)(job, tid, &s);
    if (st != PTC_OK) return st;

    /* Rows kk' = q * cin_g + ci of the block, shifted rows of the padded input. */
    int64_t grp, kk0, nb = FN(filter_block_of)(job, t, g->kdim, &grp, &kk0);
    int64_t nb_pad = FN(round_up)(nb, fj->dnr);
    REAL *sums = s->buf_c;
    const REAL **rows = (const REAL **)s->ptrs;
    const REAL *dyv = fj->dyv; /* dY on the padded grid, channels ldk apart, zero between rows */

    for (int64_t n = 0; n < p->batch; n++) {
        const REAL *xg = fj->xp + (n * p->in_channels + grp * g->cin_g) * fj->pvol;
        const REAL *ag = dyv + (n * p->out_channels + grp * g->cout_g) * fj->ldk;
        for (int64_t r = 0; r < nb_pad; r++) {
            int64_t kk = kk0 + FN(min64)(r, nb - 1), q = kk / g->cin_g, ci = kk % g->cin_g;
            rows[r] = xg + ci * fj->pvol + g->kdelta[q];
        }
        for (int64_t c = 0; c < fj->nchunks; c++) {
            const ptc_dot_run *pieces = fj->pieces + fj->chunk_start[c];
            int64_t npieces = fj->chunk_start[c + 1] - fj->chunk_start[c];
            int acc = n > 0 || c > 0;
            for (int64_t i0 = 0; i0 < fj->cout_pad; i0 += fj->dmr)
                for (int64_t j0 = 0; j0 < nb_pad; j0 += fj->dnr)
                    fj->dot(npieces, pieces, ag + i0 * fj->ldk, fj->ldk, rows + j0,
                            sums + i0 * fj->ldv + j0 * fj->vlen, fj->ldv, acc);
            if (ptc_poll(par, tid)) return PTC_OK;
        }
    }
    FN(sum_lanes)(fj, sums, grp, kk0, nb, 1);
    return PTC_OK;
}

static ptc_status FN(backward_filter_shifted)(const ptc_problem *p, const REAL *x, const REAL *dy,
                                              REAL *dw, const ptc_options *opt)
{
    int64_t pvol;
    ptc_problem q = FN(padded_problem)(p, &pvol);
    ptc_geometry g;
    ptc_status st = ptc_geometry_init(&g, &q);
    if (st != PTC_OK) return st;
    FN(filter_job) fj;
    memset(&fj, 0, sizeof(fj));
    FN(job) *job = &fj.base;
    int nthreads = FN(filter_plan)(&fj, &g);
    job->out = dw;
    int64_t P = g.out_spatial;
    int nd = q.ndim;
    int64_t ho = q.out_size[nd - 2], row = q.out_size[nd - 1];
    fj.runs = P / (ho * row);
    fj.run_span = (ho - 1) * g.in_stride[nd - 2] + row;
    fj.run_ld = FN(leading_dim)(fj.run_span, fj.vlen);
    fj.ldk = fj.runs * fj.run_ld;
    job->kc = 512;
    /* The reduction in pieces (a run, or a part of at most kc of a long one),
     * taken in chunks of about kc positions: a chunk's rows of x and dY stay
     * in cache while every tile of the block sums over them, and a tile sums
     * all the chunk's pieces in its registers (short runs: 4-d and 5-d). */
    int64_t per_run = FN(ceil_div)(fj.run_span, job->kc);
    int64_t piece_len = FN(round_up)(FN(ceil_div)(fj.run_span, per_run), fj.vlen);
    fj.pieces = (ptc_dot_run *)malloc((size_t)(fj.runs * per_run) * sizeof(ptc_dot_run));
    fj.chunk_start = (int64_t *)malloc((size_t)(fj.runs * per_run + 1) * sizeof(int64_t));
    if (fj.pieces && fj.chunk_start) {
        int64_t np = 0, in_chunk = 0;
        fj.nchunks = 0;
        for (int64_t run = 0; run < fj.runs; run++) {
            int64_t origin = FN(run_origin)(&g, run);
            for (int64_t v0 = 0; v0 < fj.run_span; v0 += piece_len) {
                int64_t len = FN(min64)(piece_len, fj.run_span - v0);
                if (in_chunk == 0 || in_chunk + len > job->kc) {
                    fj.chunk_start[fj.nchunks++] = np;
                    in_chunk = 0;
                }
                fj.pieces[np].kv = FN(ceil_div)(len, fj.vlen);
                fj.pieces[np].aoff = run * fj.run_ld + v0;
                fj.pieces[np].boff = origin + v0;
                fj.pieces[np++].tail = 0; /* whole vectors: dY is zero past the run */
                in_chunk += len;
            }
        }
        fj.chunk_start[fj.nchunks] = np;
    } else {
        st = PTC_ERR_NO_MEMORY;
    }
    /* The dot kernel reads whole vectors: up to run_ld past a run's origin. */
    if (st == PTC_OK)
        fj.xp = FN(padded_copy)(p, p->batch * p->in_channels, x, fj.run_ld + fj.vlen, &pvol, opt,
                                &st);
    fj.pvol = pvol;
    /* dY scattered onto the padded grid, run by run: zero at the origins
     * between rows, so they add nothing (x is finite there: checked by the
     * caller). */
    int64_t dyv_elems = (p->batch * p->out_channels + fj.dmr) * fj.ldk;
    REAL *dyv = (uint64_t)dyv_elems > SIZE_MAX / sizeof(REAL)
                    ? NULL
                    : (REAL *)ptc_workspace_acquire(1, (size_t)dyv_elems * sizeof(REAL));
    if (st == PTC_OK && !dyv) st = PTC_ERR_NO_MEMORY;
    if (st == PTC_OK) {
        memset(dyv, 0, (size_t)dyv_elems * sizeof(REAL));
        for (int64_t c = 0; c < p->batch * p->out_channels; c++)
            for (int64_t r = 0; r < P / row; r++)
                memcpy(dyv + c * fj.ldk + r / ho * fj.run_ld + r % ho * g.in_stride[nd - 2],
                       dy + c * P + r * row, (size_t)row * sizeof(REAL));
    }
    job->b_elems = 1;
    job->c_elems = fj.cout_pad * fj.ldv;
    job->seg_cap = 1;
    fj.dyv = dyv;
    if (st == PTC_OK) st = FN(job_start)(job, nthreads);
    if (st == PTC_OK)
        st = ptc_parallel_for(p->groups * job->nblocks, nthreads, FN(filter_shifted_task), &fj, opt);
    FN(job_end)(job, nthreads);
    free(fj.pieces);
    free(fj.chunk_start);
    ptc_workspace_release(0);
    ptc_workspace_release(1);
    ptc_geometry_free(&g);
    return st;
}

/* Zero padding that most output rows reach into (small N-d volumes: 8^5 with
 * padding 1 has a third of its rows clear of it) sends the unfolding down its
 * per-row border path almost everywhere: measured, a 5-d 3^5 convolution spent
 * half its time there. An explicitly padded copy of x costs one pass and
 * leaves no border; the sums are unchanged, the padding's zeros included. */
static int FN(pad_first)(const ptc_problem *p)
{
    if (p->padding_mode != PTC_PAD_ZEROS || p->ndim < 2) return 0;
    int padded = 0;
    for (int d = 0; d < p->ndim; d++) padded |= p->pad_low[d] || p->pad_high[d];
    return padded && ptc_interior_share(p) < 0.75;
}

#include "winograd_template.h"
#include "polyphase_template.h"

static ptc_status FN(backward_data_dispatch)(const ptc_problem *p, const REAL *dy, const REAL *w,
                                             REAL *dx, const ptc_options *opt);
static ptc_status FN(backward_filter_dispatch)(const ptc_problem *p, const REAL *x,
                                               const REAL *dy, REAL *dw, const ptc_options *opt);

/* Primitive op (0 forward, 1 backward data, 2 backward filter; a and b its
 * two operands) on an explicitly padded x (dx): x padded with p's mode, the
 * problem run with no padding, and dx folded back (the adjoint of padding). */
static ptc_status FN(on_padded)(int op, const ptc_problem *p, const REAL *a, const REAL *b,
                                const REAL *bias, REAL *out, const ptc_options *opt)
{
    int64_t vol, planes = p->batch * p->in_channels;
    ptc_problem q = FN(padded_problem)(p, &vol);
    REAL *buf = FN(alloc)(planes * vol);
    if (!buf) return PTC_ERR_NO_MEMORY;
    ptc_status st;
    if (op == 1) {
        st = FN(backward_data_dispatch)(&q, a, b, buf, opt);
        if (st == PTC_OK) st = FN(pad_planes)(p, planes, buf, out, 1, opt);
    } else {
        st = FN(pad_planes)(p, planes, a, buf, 0, opt);
        if (st == PTC_OK)
            st = op == 0 ? FN(forward_dispatch)(&q, buf, b, bias, out, opt)
                         : FN(backward_filter_dispatch)(&q, buf, b, out, opt);
    }
    free(buf);
    return st;
}

static ptc_status FN(forward_dispatch)(const ptc_problem *p, const REAL *x, const REAL *w,
                                       const REAL *bias, REAL *y, const ptc_options *opt)
{
    /* Minimal filtering where it pays; a call whose results it cannot give
     * as the direct sums would (non-finite numbers) goes on to the others,
     * as in the two dispatches below. */
    int fallback;
    if (FN(wino_ok)(p, 0)) {
        ptc_status st = FN(wino_run)(0, p, x, w, bias, y, opt, &fallback);
        if (st != PTC_OK || !fallback) return st;
    }
    if (FN(poly_ok)(p)) {
        ptc_status st = FN(poly_run)(0, p, x, w, bias, y, opt, &fallback);
        if (st != PTC_OK || !fallback) return st;
    }
    if (FN(direct_ok)(p)) return FN(direct)(0, p, x, w, bias, y, opt);
    if (FN(shifted_ok)(p)) return FN(forward_implicit)(p, x, w, bias, y, opt);
    if (FN(pad_first)(p)) return FN(on_padded)(0, p, x, w, bias, y, opt);
    return FN(forward_zero_padded)(p, x, w, bias, y, opt);
}

static ptc_status FN(backward_data_dispatch)(const ptc_problem *p, const REAL *dy, const REAL *w,
                                             REAL *dx, const ptc_options *opt)
{
    int fallback;
    if (FN(wino_ok)(p, 1)) {
        ptc_status st = FN(wino_run)(1, p, dy, w, NULL, dx, opt, &fallback);
        if (st != PTC_OK || !fallback) return st;
    }
    if (FN(poly_ok)(p)) {
        ptc_status st = FN(poly_run)(1, p, dy, w, NULL, dx, opt, &fallback);
        if (st != PTC_OK || !fallback) return st;
    }
    /* The flipped problem of a depthwise one is depthwise again: both gather.
     * A flipped forward also multiplies the weights by the zeros around dy,
     * which only the scatter leaves out: only exact when the weights hold no
     * Inf or NaN (0 * Inf is NaN where the sum is finite). */
    if (FN(flip_ok)(p) && FN(all_finite)(w, FN(weight_elems)(p)))
        return FN(backward_data_flipped)(p, dy, w, dx, opt);
    if (FN(direct_ok)(p)) return FN(direct)(1, p, dy, w, NULL, dx, opt);
    if (FN(long_kernel_ok)(p)) return FN(backward_data_long)(p, dy, w, dx, opt);
    if (FN(pad_first)(p)) return FN(on_padded)(1, p, dy, w, NULL, dx, opt);
    return FN(backward_data_zero_padded)(p, dy, w, dx, opt);
}

static ptc_status FN(backward_filter_dispatch)(const ptc_problem *p, const REAL *x,
                                               const REAL *dy, REAL *dw, const ptc_options *opt)
{
    int fallback;
    if (FN(wino_ok)(p, 2)) {
        ptc_status st = FN(wino_filter)(p, x, dy, dw, opt, &fallback);
        if (st != PTC_OK || !fallback) return st;
    }
    if (FN(poly_ok)(p)) {
        ptc_status st = FN(poly_filter)(p, x, dy, dw, opt, &fallback);
        if (st != PTC_OK || !fallback) return st;
    }
    /* The shifted path also multiplies x by the zeros of dY between rows: only
     * exact when x holds no Inf or NaN (0 * Inf is NaN). */
    if (FN(direct_ok)(p)) return FN(direct)(2, p, x, dy, NULL, dw, opt);
    if (FN(long_kernel_ok)(p)) return FN(backward_filter_long)(p, x, dy, dw, opt);
    if (p->batch > 0 && FN(shifted_ok)(p) &&
        FN(all_finite)(x, p->batch * p->in_channels * ptc_geometry_in_volume(p)))
        return FN(backward_filter_shifted)(p, x, dy, dw, opt);
    if (FN(pad_first)(p)) return FN(on_padded)(2, p, x, dy, NULL, dw, opt);
    return FN(backward_filter_zero_padded)(p, x, dy, dw, opt);
}

/* ---- public typed entry points ----------------------------------------- */

ptc_status FN(ptc_forward)(const ptc_problem *p, const REAL *x, const REAL *w, const REAL *bias,
                           REAL *y, const ptc_options *opt)
{
    if (p->batch == 0) return PTC_OK;
    if (FN(needs_explicit_padding)(p)) return FN(on_padded)(0, p, x, w, bias, y, opt);
    return FN(forward_dispatch)(p, x, w, bias, y, opt);
}

ptc_status FN(ptc_backward_data)(const ptc_problem *p, const REAL *dy, const REAL *w, REAL *dx,
                                 const ptc_options *opt)
{
    if (p->batch == 0) return PTC_OK;
    if (FN(needs_explicit_padding)(p)) return FN(on_padded)(1, p, dy, w, NULL, dx, opt);
    return FN(backward_data_dispatch)(p, dy, w, dx, opt);
}

ptc_status FN(ptc_backward_filter)(const ptc_problem *p, const REAL *x, const REAL *dy, REAL *dw,
                                   const ptc_options *opt)
{
    if (p->batch > 0 && FN(needs_explicit_padding)(p))
        return FN(on_padded)(2, p, x, dy, NULL, dw, opt);
    return FN(backward_filter_dispatch)(p, x, dy, dw, opt);
}

typedef struct {
    int64_t batch, channels, spatial;
    const REAL *dy;
    REAL *db;
} FN(bias_job);

static ptc_status FN(bias_task)(void *vjob, int64_t c, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(bias_job) *job = (FN(bias_job) *)vjob;
    double sum = 0.0; /* a double accumulator: float32 sums of long rows drift */
    for (int64_t n = 0; n < job->batch; n++) {
        const REAL *row = job->dy + (n * job->channels + c) * job->spatial;
        for (int64_t j = 0; j < job->spatial; j++) sum += row[j];
    }
    job->db[c] = (REAL)sum;
    return PTC_OK;
}

ptc_status FN(ptc_bias_backward)(int64_t batch, int64_t channels, int64_t spatial,
                                 const REAL *dy, REAL *db)
{
    FN(bias_job) job = {batch, channels, spatial, dy, db};
    double work = (double)batch * (double)channels * (double)spatial;
    return ptc_parallel_for(channels, ptc_threads_for_work(work), FN(bias_task), &job, NULL);
}

#undef FN
#undef PTC_CAT
#undef PTC_CAT2
