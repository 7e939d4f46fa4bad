/* Minimal filtering for 1-d convolutions whose kernel spans two or four
 * strides (kernel = J * stride, J = 2 or 4: the upsampling layers of audio
 * generators), for one element type: included by conv_template.h after
 * winograd_template.h, whose kernel helpers it shares.
 *
 * Cut into rows of `stride` elements (the polyphase view), x becomes a
 * sequence of rows X[q][(ci, r)] = x[ci][q * stride + r - pad_low] and the
 * kernel J taps W_a[co][(ci, r)] = w[co][ci][a * stride + r]; the convolution
 * is then a stride-1 correlation of J taps over rows,
 *
 *   y[co][p] = sum_a W_a[co] . X[p + a],
 *
 * whose "channels" are the rows (cin * stride of them) on one side and the
 * output channels on the other. J outputs of a J-tap correlation take 3 (J =
 * 2) or 9 (J = 4) products instead of J * J by Karatsuba's split, nested
 * for 4 taps: with window rows d0..d(2J-2) and m the point products,
 *
 *   J = 2   points  v = (d1, d0 - d1, d2 - d1)
 *           weights u = (w0 + w1, w0, w1)
 *           outputs y0 = m0 + m1, y1 = m0 + m2
 *   J = 4   points  v = (d3, d1 - d3, d5 - d3, d2 - d3, (d0 - d1) - (d2 - d3),
 *                        (d4 - d5) - (d2 - d3), d4 - d3, (d2 - d1) - (d4 - d3),
 *                        (d6 - d5) - (d4 - d3))
 *           weights u = ((w0 + w1) + (w2 + w3), w0 + w1, w2 + w3, w0 + w2, w0,
 *                        w2, w1 + w3, w1, w3)
 *           outputs y0 = m0 + m1 + m3 + m4, y1 = m0 + m1 + m6 + m7,
 *                   y2 = m0 + m2 + m3 + m5, y3 = m0 + m2 + m6 + m8
 *
 * every coefficient 0 or +-1, and the outputs' matrix the transpose of the
 * weights' (so one transform serves the weights and the weight gradient's
 * output gradients, and its transpose the weight gradient's taps). Each
 * point is one GEMM over the rows' width: with 1026 channels at stride 256
 * (the kernel of 1024 taps of the benchmarks), 9/16 of the direct path's
 * multiplications, the transforms a few additions per element of operands
 * 256 or 1026 deep.
 *
 * The input gradient (the transposed convolution) is the same correlation
 * seen from dx's side: dX[q] = sum_a W_a^T dy[q - a], a correlation of dy
 * (J - 1 zeros in front) with the taps reversed, whose points are dy's
 * channels and whose outputs are rows of dx; every dx element is written by
 * one tile. Both run the same block loop: the weights' points as A panels,
 * the points of a block of tiles as B rows over the tiles (built from x's
 * padded copy, or from dy's rows as they are), C[row][tile] the J outputs'
 * accumulators; for the input gradient the rows are a row of dx, so each
 * tile's column of C is written out as dx elements. (Its first version took
 * the other orientation, dy's points as A panels of tiles, whose scattered
 * writes and padded copy of dy left it a fifth slower than the forward.)
 * The weight gradient is the forward's algorithm
 * transposed: per point dU = Q V^T summed over tiles, Q the spread of a
 * tile's J output gradients, then dw_a the gathered dU.
 *
 * As for the 2-d minimal filtering, a call whose results are not all finite
 * is done again by the direct paths (differences of Inf are NaN). */

#define POLY_MAX_TAPS 4
/* Per-thread scratch the forward and input gradient's tile blocks are sized
 * for (points, a product and the J output accumulators). */
#define POLY_BLOCK_BYTES (8.0 * 1024 * 1024)
/* Tiles of the weight gradient's points held at once, by bytes. */
#define POLY_CHUNK_BYTES (32.0 * 1024 * 1024)
#define POLY_FILTER_PANELS 8 /* weight-gradient rows per GEMM task, in panels */
#define POLY_POINT_TILES 32  /* tiles per task of the weight gradient's points, at most */

static int FN(poly_points_of)(int J) { return J == 2 ? 3 : 9; }

/* The points of n windows at once: window element e of the j-th is d[e][j]
 * (the rows do not overlap v), its points v[pt * vs + j]. J a constant where
 * it is called: straight-line code for each, vectorised along j. */
static inline void FN(poly_window)(int J, const REAL *const *d, REAL *restrict v, int64_t vs,
                                   int64_t n)
{
    const REAL *restrict d0 = d[0], *restrict d1 = d[1], *restrict d2 = d[2];
    if (J == 2) {
        for (int64_t j = 0; j < n; j++) {
            REAL e0 = d0[j], e1 = d1[j], e2 = d2[j];
            v[j] = e1, v[vs + j] = e0 - e1, v[2 * vs + j] = e2 - e1;
        }
        return;
    }
    const REAL *restrict d3 = d[3], *restrict d4 = d[4], *restrict d5 = d[5], *restrict d6 = d[6];
    for (int64_t j = 0; j < n; j++) {
        REAL e0 = d0[j], e1 = d1[j], e2 = d2[j], e3 = d3[j], e4 = d4[j], e5 = d5[j], e6 = d6[j];
        REAL a = e2 - e3, b = e4 - e3;
        v[j] = e3, v[vs + j] = e1 - e3, v[2 * vs + j] = e5 - e3, v[3 * vs + j] = a;
        v[4 * vs + j] = (e0 - e1) - a, v[5 * vs + j] = (e4 - e5) - a, v[6 * vs + j] = b;
        v[7 * vs + j] = (e2 - e1) - b, v[8 * vs + j] = (e6 - e5) - b;
    }
}

/* J values g[0], g[gs], .. spread to the points, u[pt * us] (the weights'
 * transform, and the weight gradient's of a tile's output gradients). */
static inline void FN(poly_spread)(int J, const REAL *g, int64_t gs, REAL *u, int64_t us)
{
    REAL g0 = g[0], g1 = g[gs];
    if (J == 2) {
        u[0] = g0 + g1, u[us] = g0, u[2 * us] = g1;
        return;
    }
    REAL g2 = g[2 * gs], g3 = g[3 * gs], s01 = g0 + g1, s23 = g2 + g3;
    u[0] = s01 + s23, u[us] = s01, u[2 * us] = s23, u[3 * us] = g0 + g2, u[4 * us] = g0;
    u[5 * us] = g2, u[6 * us] = g1 + g3, u[7 * us] = g1, u[8 * us] = g3;
}

/* poly_spread of n values at once: g[i][j] into u[pt * us + j]. */
static inline void FN(poly_spread_n)(int J, const REAL *const *g, REAL *restrict u, int64_t us,
                                     int64_t n)
{
    const REAL *restrict g0 = g[0], *restrict g1 = g[1];
    if (J == 2) {
        for (int64_t j = 0; j < n; j++) {
            REAL a = g0[j], b = g1[j];
            u[j] = a + b, u[us + j] = a, u[2 * us + j] = b;
        }
        return;
    }
    const REAL *restrict g2 = g[2], *restrict g3 = g[3];
    for (int64_t j = 0; j < n; j++) {
        REAL a = g0[j], b = g1[j], c = g2[j], d = g3[j], s01 = a + b, s23 = c + d;
        u[j] = s01 + s23, u[us + j] = s01, u[2 * us + j] = s23, u[3 * us + j] = a + c;
        u[4 * us + j] = a, u[5 * us + j] = c, u[6 * us + j] = b + d, u[7 * us + j] = b;
        u[8 * us + j] = d;
    }
}

/* The transpose of poly_spread: points m[pt * ms] gathered into J values
 * o[i * os] (the weight gradient's taps). */
static inline void FN(poly_gather)(int J, const REAL *m, int64_t ms, REAL *o, int64_t os)
{
    REAL m0 = m[0], m1 = m[ms], m2 = m[2 * ms];
    if (J == 2) {
        o[0] = m0 + m1, o[os] = m0 + m2;
        return;
    }
    REAL a = m0 + m1, b = m0 + m2;
    o[0] = a + (m[3 * ms] + m[4 * ms]), o[os] = a + (m[6 * ms] + m[7 * ms]);
    o[2 * os] = b + (m[3 * ms] + m[5 * ms]), o[3 * os] = b + (m[6 * ms] + m[8 * ms]);
}

/* The outputs (of J) point pt is added into, as bits: the columns of
 * poly_spread's matrix. */
static int FN(poly_targets)(int J, int pt)
{
    static const unsigned char t2[3] = {3, 1, 2};
    static const unsigned char t4[9] = {15, 3, 12, 5, 1, 4, 10, 2, 8};
    return J == 2 ? t2[pt] : t4[pt];
}

/* Eligible (every pass alike): 1-d, a
 * kernel of 2 or 4 strides, no dilation, zero padding (other modes come here
 * padded already), and GEMMs deep and tall enough for the transforms to be
 * small beside them: 128 on both sides (rows of the polyphase view, output
 * channels), and 16 tiles or more (bounds set from the 2-d path's, where 64
 * channels were about even; only the benchmarks' case is measured here). */
static int FN(poly_ok)(const ptc_problem *p)
{
    if (p->ndim != 1 || p->padding_mode != PTC_PAD_ZEROS || p->dilation[0] != 1) return 0;
    int64_t s = p->stride[0], k = p->kernel[0];
    if (k % s || (k / s != 2 && k / s != 4)) return 0;
    int64_t J = k / s, cin_g = p->in_channels / p->groups, cout_g = p->out_channels / p->groups;
    double tiles = (double)p->batch * (double)FN(ceil_div)(p->out_size[0], J);
    return (double)cin_g * (double)s >= 128 && cout_g >= 128 && tiles >= 16 &&
           p->pad_low[0] + p->pad_high[0] <= 3 * p->in_size[0] + 65536;
}

typedef struct {
    int op, J, npoints;
    const ptc_problem *p;
    FN(wino_kernels) gk;
    int64_t s, cin_g, cout_g;
    int64_t kl;         /* cin_g * s: a row of the polyphase view */
    int64_t rows, depth; /* forward, input gradient: the point GEMMs' rows and depth
                          * (cout_g and kl, or kl and cout_g) */
    int64_t tiles_img;  /* tiles per image (J outputs, or J rows of dx, each) */
    int64_t ntiles;
    int64_t q0, qend;   /* input gradient: the dx rows the tiles give, [q0, qend) */
    int64_t plane, planes; /* elements per plane of the padded copy; planes (none: 0) */
    int64_t phase_len;  /* forward: tiles_img + 1, a phase's length */
    int64_t lead;       /* input gradient: dy's zeros in front, as poly_phases's `at` */
    const REAL *source; /* x (what padded copies), or dy (input gradient) */
    const REAL *w, *bias;
    REAL *padded;
    REAL *extra;        /* the caller's part of the padded copy's workspace */
    void *workspace;    /* that workspace (NULL: none held) */
    REAL *out;
    REAL *wpack;        /* the weights' points (per group and point) */
    int64_t w_pt;       /* elements per point of wpack */
    int64_t nb, nblocks, ld, kc; /* tiles per block; leading dimension of its buffers */
    int64_t v_pt, acc_elems, scratch_elems;
    REAL *scratch;
    atomic_int nonfinite;
} FN(poly_job);

/* Elements J * u + c - at of a row of `len` (zero outside it) for u in
 * [u0, u0 + n), split by c = position mod J: dst[c * ds + u - u0]. The
 * input gradient's windows over dy, a row segment at a time: read in
 * order, written to J short rows. */
static inline void FN(poly_phases)(int64_t J, const REAL *src, int64_t len, int64_t at,
                                   int64_t u0, int64_t n, REAL *dst, int64_t ds)
{
    /* u in [ulo, uhi) lies wholly inside the row */
    int64_t u1 = u0 + n;
    int64_t ulo = FN(min64)(u1, at > 0 ? FN(ceil_div)(at, J) : 0);
    int64_t uhi = FN(min64)(u1, len + at > 0 ? (len + at) / J : 0);
    if (ulo < u0) ulo = u0;
    if (uhi < ulo) uhi = ulo;
    for (int64_t u = u0; u < u1; u++) {
        if (u == ulo && ulo < uhi) {
            const REAL *from = src + J * u - at;
            REAL *to = dst + u - u0;
            int64_t m = uhi - ulo;
            if (J == 2)
                for (int64_t i = 0; i < m; i++) to[i] = from[2 * i], to[ds + i] = from[2 * i + 1];
            else
                for (int64_t i = 0; i < m; i++)
                    to[i] = from[4 * i], to[ds + i] = from[4 * i + 1],
                    to[2 * ds + i] = from[4 * i + 2], to[3 * ds + i] = from[4 * i + 3];
            u = uhi;
            if (u == u1) break;
        }
        for (int64_t c = 0; c < J; c++) {
            int64_t i = J * u + c - at;
            dst[c * ds + u - u0] = i >= 0 && i < len ? src[i] : 0;
        }
    }
}

/* The zero-padded copy of one plane of x, laid out so that a window
 * element's values for consecutive tiles lie side by side:
 *   forward          the polyphase rows transposed and split by row mod J:
 *                    [r][q % J][q / J] = x[q * s + r - pad_low]
 *   weight gradient  the polyphase rows as they are: [q][r] = x[q * s + r - pad_low]
 * (the forward's points are rows over tiles, the weight gradient's rows
 * over a row's elements). The input gradient reads dy as it is, by
 * poly_phases. */
static ptc_status FN(poly_pad_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(poly_job) *job = (FN(poly_job) *)vjob;
    const ptc_problem *p = job->p;
    int64_t len = p->in_size[0], at = p->pad_low[0];
    int64_t J = job->J, s = job->s, U = job->phase_len;
    const REAL *src = job->source + t * len;
    REAL *dst = job->padded + t * job->plane;
    if (job->op == 2) {
        /* source elements [lo, hi) land inside the plane, at [at + lo, at + hi) */
        int64_t lo = at < 0 ? -at : 0, hi = FN(min64)(len, job->plane - at);
        if (hi <= lo) {
            memset(dst, 0, (size_t)job->plane * sizeof(REAL));
            return PTC_OK;
        }
        memset(dst, 0, (size_t)(at + lo) * sizeof(REAL));
        memcpy(dst + at + lo, src + lo, (size_t)(hi - lo) * sizeof(REAL));
        memset(dst + at + hi, 0, (size_t)(job->plane - at - hi) * sizeof(REAL));
        return PTC_OK;
    }
    /* blocks of 8 rows by 8 row elements, read along rows, written along
     * the columns of the transposed plane */
    int64_t rows = J * U;
    for (int64_t q0 = 0; q0 < rows; q0 += 8)
        for (int64_t r0 = 0; r0 < s; r0 += 8)
            for (int64_t q = q0; q < q0 + 8 && q < rows; q++) {
                REAL *col = dst + (q % J) * U + q / J;
                for (int64_t r = r0; r < r0 + 8 && r < s; r++) {
                    int64_t i = q * s + r - at;
                    col[r * J * U] = i >= 0 && i < len ? src[i] : 0;
                }
            }
    return PTC_OK;
}

/* The weights' points for one panel of mr rows of the point GEMMs, as A
 * panels [grp][pt][panel][depth][mr] (rows past the last zero): forward,
 * rows the output channels, depth a row of the polyphase view; input
 * gradient, rows a row of dx and depth the output channels, the taps
 * reversed. Each panel written in address order. */
static ptc_status FN(poly_weight_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(poly_job) *job = (FN(poly_job) *)vjob;
    int64_t mr = job->gk.mr, npanels = FN(ceil_div)(job->rows, mr);
    int64_t grp = t / npanels, pi = t % npanels, s = job->s, k = job->J * s;
    int64_t rows = FN(min64)(mr, job->rows - pi * mr), wp = job->w_pt, cin_g = job->cin_g;
    const REAL *wg = job->w + grp * job->cout_g * cin_g * k;
    REAL *panel = job->wpack + grp * job->npoints * wp + pi * job->depth * mr;
    /* the taps of row i at depth kd start at wg + row_at[i] + depth_at(kd):
     * forward, row co and depth (ci, r); input gradient, row (ci, r) and
     * depth co (the last tap first) */
    int64_t row_at[PTC_MAX_MR], co_step = cin_g * k;
    for (int64_t i = 0; i < rows; i++) {
        int64_t row = pi * mr + i;
        row_at[i] = job->op == 0 ? row * co_step : (row / s) * k + row % s + (k - s);
    }
    int64_t ts = job->op == 0 ? s : -s;
    for (int64_t kd = 0; kd < job->depth; kd++) {
        REAL *dst = panel + kd * mr;
        const REAL *taps = wg + (job->op == 0 ? (kd / s) * k + kd % s : kd * co_step);
        int64_t i = 0;
        if (job->J == 2)
            for (; i < rows; i++) FN(poly_spread)(2, taps + row_at[i], ts, dst + i, wp);
        else
            for (; i < rows; i++) FN(poly_spread)(4, taps + row_at[i], ts, dst + i, wp);
        for (; i < mr; i++)
            for (int pt = 0; pt < job->npoints; pt++) dst[pt * wp + i] = 0;
    }
    return PTC_OK;
}

/* C (rows x cols) = A B: A panels of mr rows [panel][depth][mr], each lda
 * elements after the last (depth * mr, or more where the panels were sized
 * for a longer depth), B rows ldb apart (every row readable to a whole strip
 * of nr), C rows ldc apart, added to when `add`. Strips of B outer, so that
 * one stays in L2 while the panels pass over it. */
static void FN(poly_gemm)(const FN(wino_kernels) *gk, int64_t kc_max, int64_t rows, int64_t cols,
                          int64_t depth, const REAL *a, int64_t lda, const REAL *b, int64_t ldb,
                          REAL *c, int64_t ldc, int add)
{
    int64_t mr = gk->mr, nr = gk->nr;
    for (int64_t k0 = 0; k0 < depth; k0 += kc_max) {
        int64_t kc = FN(min64)(kc_max, depth - k0);
        int flags = add || k0 > 0 ? PTC_TILE_ADD : 0;
        for (int64_t j0 = 0; j0 < cols; j0 += nr) {
            int64_t ncols = FN(min64)(nr, cols - j0);
            FN(kernel_fn) kern = FN(wino_kernel_for)(gk, ncols);
            for (int64_t i0 = 0; i0 < rows; i0 += mr)
                kern(kc, a + (i0 / mr) * lda + k0 * mr, b + k0 * ldb + j0, ldb,
                     c + i0 * ldc + j0, ldc, flags, FN(min64)(mr, rows - i0), ncols);
        }
    }
}

/* The points of block tiles [t0, t0 + nt), one group, as B rows over the
 * tiles: v[pt * v_pt + kd * ld + j], kd along the GEMMs' depth (forward: kd
 * = ci * s + r, padded plane ci's column r; input gradient: dy's channel kd,
 * split into `phases` first); columns nt .. up to a whole strip are zeros.
 * Each image's run of tiles at once, a window element's values side by
 * side. */
static inline void FN(poly_points)(int J, const FN(poly_job) *job, int64_t grp, int64_t t0,
                                   int64_t nt, REAL *v, REAL *phases)
{
    const ptc_problem *p = job->p;
    int64_t s = job->s, ld = job->ld, vp = job->v_pt, U = job->phase_len, P = p->out_size[0];
    int64_t jend = FN(round_up)(nt, job->gk.nr), ps = job->nb + 1;
    for (int64_t j0 = 0; j0 < nt;) {
        int64_t n = (t0 + j0) / job->tiles_img, tt = (t0 + j0) % job->tiles_img;
        int64_t run = FN(min64)(nt - j0, job->tiles_img - tt);
        const REAL *plane = job->padded + (n * p->in_channels + grp * job->cin_g) * job->plane;
        const REAL *dyg = job->source + (n * p->out_channels + grp * job->cout_g) * P;
        for (int64_t kd = 0; kd < job->depth; kd++) {
            /* the window's J phase rows, `cs` apart, from its first tile */
            const REAL *col = phases;
            int64_t cs = ps;
            if (job->op == 0)
                col = plane + (kd / s) * job->plane + (kd % s) * J * U + tt, cs = U;
            else
                FN(poly_phases)(J, dyg + kd * P, P, job->lead, tt, run + 1, phases, ps);
            const REAL *d[2 * POLY_MAX_TAPS - 1] = {0};
            for (int e = 0; e < 2 * J - 1; e++) d[e] = col + (e % J) * cs + e / J;
            FN(poly_window)(J, d, v + kd * ld + j0, vp, run);
        }
        j0 += run;
    }
    for (int64_t kd = 0; kd < job->depth; kd++)
        for (int pt = 0; pt < job->npoints; pt++)
            for (int64_t j = nt; j < jend; j++) v[pt * vp + kd * ld + j] = 0;
}

/* A block of tiles of one group: points, one GEMM per point into the J
 * output accumulators, outputs. */
static ptc_status FN(poly_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)par;
    FN(poly_job) *job = (FN(poly_job) *)vjob;
    const ptc_problem *p = job->p;
    int64_t grp = t / job->nblocks, t0 = (t % job->nblocks) * job->nb;
    int64_t nt = FN(min64)(job->nb, job->ntiles - t0), ld = job->ld, s = job->s;
    int J = job->J;
    REAL *v = job->scratch + tid * job->scratch_elems;
    REAL *acc = v + job->npoints * job->v_pt, *m = acc + J * job->acc_elems;
    REAL *phases = m + job->acc_elems; /* input gradient: J rows of nb + 1 */
    const REAL *wg = job->wpack + grp * job->npoints * job->w_pt;
    /* C[row][tile] = U V^T: forward, rows the output channels; input
     * gradient, a row of dx */
    int64_t rows = job->rows, cols = nt, depth = job->depth;
    if (J == 2) FN(poly_points)(2, job, grp, t0, nt, v, phases);
    else FN(poly_points)(4, job, grp, t0, nt, v, phases);
    for (int pt = 0; pt < job->npoints; pt++) {
        int targets = FN(poly_targets)(J, pt), single = !(targets & (targets - 1));
        int first = 0;
        while (!(targets >> first & 1)) first++;
        /* point 0 goes into every output: straight into the first, copied to
         * the others; a point of one output is added there by the kernels;
         * others pass through m */
        REAL *c = pt == 0 || single ? acc + first * job->acc_elems : m;
        FN(poly_gemm)(&job->gk, job->kc, rows, cols, depth, wg + pt * job->w_pt,
                      depth * job->gk.mr, v + pt * job->v_pt, ld, c, ld, pt > 0 && single);
        if (pt == 0) {
            for (int o = 1; o < J; o++)
                memcpy(acc + o * job->acc_elems, acc, (size_t)(rows * ld) * sizeof(REAL));
        } else if (!single) {
            for (int o = 0; o < J; o++)
                if (targets >> o & 1)
                    for (int64_t r = 0; r < rows; r++)
                        AXPY(job->gk.ks)(cols, 1, m + r * ld, 1,
                                         acc + o * job->acc_elems + r * ld, 1);
        }
    }
    /* The accumulators into the output, inside its bounds; any non-finite
     * result sends the call to the direct paths. */
    REAL fin[8] = {0};
    if (job->op == 0) {
        int64_t P = p->out_size[0], K = job->cout_g;
        for (int64_t j = 0; j < nt; j++) {
            int64_t tt = (t0 + j) % job->tiles_img, n = (t0 + j) / job->tiles_img;
            int64_t o1 = FN(min64)(J, P - J * tt);
            REAL *yt = job->out + (n * p->out_channels + grp * K) * P + J * tt;
            for (int64_t co = 0; co < K; co++) {
                REAL bias = job->bias ? job->bias[grp * K + co] : 0;
                for (int64_t o = 0; o < o1; o++) {
                    REAL val = acc[o * job->acc_elems + co * ld + j];
                    fin[o] += val * 0;
                    yt[co * P + o] = val + bias;
                }
            }
        }
    } else {
        int64_t L = p->in_size[0], pl = p->pad_low[0];
        for (int64_t j = 0; j < nt; j++) {
            int64_t tt = (t0 + j) % job->tiles_img, n = (t0 + j) / job->tiles_img;
            REAL *dxg = job->out + (n * p->in_channels + grp * job->cin_g) * L;
            for (int o = 0; o < J; o++) {
                int64_t q = job->q0 + J * tt + o;
                if (q >= job->qend) break;
                /* dx[q * s + r - pad_low] for r in [rlo, rhi): column j of the rows */
                int64_t rlo = FN(min64)(s, pl - q * s > 0 ? pl - q * s : 0);
                int64_t rhi = FN(min64)(s, L + pl - q * s);
                const REAL *src = acc + o * job->acc_elems + j;
                for (int64_t ci = 0; ci < job->cin_g; ci++) {
                    REAL *dst = dxg + ci * L + q * s - pl;
                    const REAL *from = src + ci * s * ld;
                    for (int64_t r = rlo; r < rhi; r++) {
                        REAL val = from[r * ld];
                        fin[r & 7] += val * 0;
                        dst[r] = val;
                    }
                }
            }
        }
    }
    REAL any = 0;
    for (int o = 0; o < 8; o++) any += fin[o];
    if (any != 0) atomic_store(&job->nonfinite, 1);
    return PTC_OK;
}

/* The job's common part: sizes and tiles. */
static void FN(poly_init)(FN(poly_job) *job, int op, const ptc_problem *p)
{
    memset(job, 0, sizeof(*job));
    job->op = op;
    job->p = p;
    job->gk = FN(wino_kernels_of_cpu)();
    job->s = p->stride[0];
    job->J = (int)(p->kernel[0] / job->s);
    job->npoints = FN(poly_points_of)(job->J);
    job->cin_g = p->in_channels / p->groups;
    job->cout_g = p->out_channels / p->groups;
    job->kl = job->cin_g * job->s;
    int64_t J = job->J, P = p->out_size[0], L = p->in_size[0], pl = p->pad_low[0];
    if (op == 1) {
        /* dx's rows q hold dx[q * s - pad_low ..]: from the first touching
         * dx[0] to the last touching dx[L - 1], but none past P + J - 2,
         * beyond which every row is 0 */
        job->q0 = pl / job->s;
        job->qend = FN(min64)((L - 1 + pl) / job->s + 1, P + J - 1);
        job->tiles_img = job->qend > job->q0 ? FN(ceil_div)(job->qend - job->q0, J) : 0;
        job->lead = J - 1 - job->q0;
        job->rows = job->kl;
        job->depth = job->cout_g;
    } else {
        job->tiles_img = FN(ceil_div)(P, J);
        job->phase_len = job->tiles_img + 1;
        /* rows 0 .. J * tiles_img + J - 2 */
        job->plane = (op == 0 ? J * job->phase_len : J * job->tiles_img + J - 1) * job->s;
        job->planes = p->batch * p->in_channels;
        job->rows = job->cout_g;
        job->depth = job->kl;
    }
    job->ntiles = p->batch * job->tiles_img;
}

/* The padded copy of `src` (x; none of dy for the input gradient, whose
 * planes are 0), followed by `extra` elements for the caller (job->extra),
 * from the calling thread's second workspace: kept between calls, where
 * fresh pages would cost a fault each (the copy is as large as its source,
 * the weights' points 9 / 4 of the weights). */
static ptc_status FN(poly_pad)(FN(poly_job) *job, const REAL *src, int64_t extra, int nthreads,
                               const ptc_options *opt)
{
    int64_t elems;
    if (!ptc_mul_ok(job->planes, job->plane, &elems) ||
        (double)elems + (double)extra + 64 > (double)(SIZE_MAX / sizeof(REAL) / 2))
        return PTC_ERR_OVERFLOW;
    elems = FN(round_up)(elems, 64 / (int64_t)sizeof(REAL));
    char *raw = (char *)ptc_workspace_acquire(1, (size_t)(elems + extra + 64) * sizeof(REAL));
    if (!raw) return PTC_ERR_NO_MEMORY;
    job->workspace = raw;
    job->padded = (REAL *)(raw + (64 - (uintptr_t)raw % 64) % 64);
    job->extra = job->padded + elems;
    job->source = src;
    return ptc_parallel_for(job->planes, nthreads, FN(poly_pad_task), job, opt);
}

/* Forward (op 0: x -> y) or input gradient (op 1: dy -> dx) by minimal
 * filtering; *fallback set when the results must be computed again by the
 * direct paths (some are not finite). */
static ptc_status FN(poly_run)(int op, const ptc_problem *p, const REAL *in, const REAL *w,
                               const REAL *bias, REAL *out, const ptc_options *opt, int *fallback)
{
    *fallback = 0;
    int64_t J = p->kernel[0] / p->stride[0], np = FN(poly_points_of)((int)J);
    double flops = 2.0 * (double)np / (double)J * (double)p->batch * (double)p->out_size[0] *
                   (double)p->out_channels * (double)(p->in_channels / p->groups) *
                   (double)p->stride[0];
    int nthreads = ptc_threads_for_work(flops);
    FN(poly_job) job;
    FN(poly_init)(&job, op, p);
    job.w = w;
    job.bias = bias;
    job.out = out;
    int64_t mr = job.gk.mr, nr = job.gk.nr;
    /* Blocks of tiles of equal sizes, as many as a multiple of the threads,
     * each within POLY_BLOCK_BYTES of scratch (block sizes change no sum):
     * every block streams all the weights' points once. */
    double per_tile = (double)(np * job.depth + (J + 1) * job.rows) * sizeof(REAL);
    int64_t cap = (int64_t)(POLY_BLOCK_BYTES / per_tile);
    if (cap < nr) cap = nr;
    int64_t nblk = FN(ceil_div)(job.ntiles, cap);
    if (p->groups == 1) nblk = FN(round_up)(nblk, nthreads);
    job.nb = FN(ceil_div)(job.ntiles, nblk);
    if (job.nb < 1) job.nb = 1;
    job.nblocks = FN(ceil_div)(job.ntiles, job.nb);
    job.ld = FN(leading_dim)(job.nb, nr);
    job.v_pt = FN(wino_skewed)(job.depth * job.ld);
    job.acc_elems = FN(wino_skewed)(FN(round_up)(job.rows, mr) * job.ld);
    job.w_pt = FN(wino_skewed)(FN(round_up)(job.rows, mr) * job.depth);
    job.kc = FN(block_len)(job.depth, KC_BYTES / (nr * (int64_t)sizeof(REAL)));
    job.scratch_elems = FN(round_up)(np * job.v_pt + (J + 1) * job.acc_elems + J * (job.nb + 1),
                                     64 / (int64_t)sizeof(REAL));
    int64_t total, wpack_elems;
    char *raw = NULL;
    ptc_status st = PTC_OK;
    if (!ptc_mul_ok(job.scratch_elems, nthreads, &total) ||
        (uint64_t)total > (SIZE_MAX - 64) / sizeof(REAL) ||
        !ptc_mul_ok(p->groups * np, job.w_pt, &wpack_elems))
        st = PTC_ERR_OVERFLOW;
    if (st == PTC_OK) st = FN(poly_pad)(&job, in, wpack_elems, nthreads, opt);
    if (st == PTC_OK) {
        job.wpack = job.extra;
        raw = (char *)ptc_workspace_acquire(0, (size_t)total * sizeof(REAL) + 64);
        if (!raw) st = PTC_ERR_NO_MEMORY;
    }
    if (st == PTC_OK) {
        job.scratch = (REAL *)(raw + (64 - (uintptr_t)raw % 64) % 64);
        st = ptc_parallel_for(p->groups * FN(ceil_div)(job.rows, mr), nthreads,
                              FN(poly_weight_task), &job, opt);
    }
    if (st == PTC_OK && op == 1) {
        /* dx past the last row the tiles give (P + J - 2) is 0 */
        int64_t L = p->in_size[0], from = job.qend * job.s - p->pad_low[0];
        if (from < 0) from = 0;
        if (from < L)
            for (int64_t c = 0; c < p->batch * p->in_channels; c++)
                memset(out + c * L + from, 0, (size_t)(L - from) * sizeof(REAL));
    }
    if (st == PTC_OK && job.ntiles > 0)
        st = ptc_parallel_for(p->groups * job.nblocks, nthreads, FN(poly_task), &job, opt);
    if (job.workspace) ptc_workspace_release(1);
    if (raw) ptc_workspace_release(0);
    *fallback = st == PTC_OK && atomic_load(&job.nonfinite);
    return st;
}

/* ---- weight gradient ---------------------------------------------------- */

typedef struct {
    FN(poly_job) base;
    const REAL *dy;
    REAL *dw;
    int64_t npanels, ldv, tc, t0, nt; /* tiles per chunk; the chunk being reduced */
    int64_t q_pt, u_pt;
    REAL *vt;   /* x's points, [grp][pt][tile][ldv] */
    REAL *qp;   /* dy's points as A panels, [grp][pt][panel][tile][mr] */
    REAL *du;   /* [grp][pt][cout_g][ldv] */
    REAL *rows; /* per thread: dy's points for mr channels, [pt][mr][rows_ld], and J rows */
    int64_t rows_ld, rows_elems;
    int64_t point_tasks, row_blocks;
} FN(poly_filter_job);

/* x's and dy's points of tiles [j0, j1) of the chunk, one group. */
static ptc_status FN(poly_filter_points_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)par;
    FN(poly_filter_job) *fj = (FN(poly_filter_job) *)vjob;
    const FN(poly_job) *job = &fj->base;
    const ptc_problem *p = job->p;
    int64_t per = FN(ceil_div)(fj->nt, fj->point_tasks), grp = t / fj->point_tasks;
    int64_t j0 = (t % fj->point_tasks) * per, j1 = FN(min64)(j0 + per, fj->nt);
    int64_t s = job->s, mr = job->gk.mr, tc = fj->tc, P = p->out_size[0], K = job->cout_g;
    int J = job->J, np = job->npoints;
    REAL *vt = fj->vt + grp * np * job->v_pt, *qp = fj->qp + grp * np * fj->q_pt;
    int64_t strip_end = FN(round_up)(job->kl, job->gk.nr);
    for (int64_t j = j0; j < j1; j++) {
        int64_t tg = fj->t0 + j, n = tg / job->tiles_img, tt = tg % job->tiles_img;
        const REAL *xw = job->padded + (n * p->in_channels + grp * job->cin_g) * job->plane +
                         J * tt * s;
        REAL *vj = vt + j * fj->ldv;
        for (int64_t ci = 0; ci < job->cin_g; ci++) {
            const REAL *d[2 * POLY_MAX_TAPS - 1] = {0};
            for (int e = 0; e < 2 * J - 1; e++) d[e] = xw + ci * job->plane + e * s;
            FN(poly_window)(J, d, vj + ci * s, job->v_pt, s);
        }
        /* the columns a last strip of the kernels reads past kl */
        for (int pt = 0; pt < np; pt++)
            for (int64_t c = job->kl; c < strip_end; c++) vj[pt * job->v_pt + c] = 0;
    }
    /* dy's J outputs of each tile (zero past the end), spread to the points:
     * rows along the tiles for mr output channels at a time, then packed
     * into their A panel by the kernels' packer */
    REAL *rows = fj->rows + tid * fj->rows_elems;
    int64_t lr = fj->rows_ld;
    for (int64_t c0 = 0; c0 < K; c0 += mr) {
        int64_t nrow = FN(min64)(mr, K - c0);
        for (int64_t i = 0; i < nrow; i++) {
            REAL *g = rows + np * mr * lr; /* the J outputs' rows along the tiles */
            for (int64_t j = j0; j < j1; j++) {
                int64_t tg = fj->t0 + j, n = tg / job->tiles_img, tt = tg % job->tiles_img;
                const REAL *src = fj->dy + (n * p->out_channels + grp * K + c0 + i) * P + J * tt;
                int64_t o1 = FN(min64)(J, P - J * tt);
                for (int64_t o = 0; o < J; o++) g[o * lr + j - j0] = o < o1 ? src[o] : 0;
            }
            const REAL *gp[POLY_MAX_TAPS];
            for (int o = 0; o < J; o++) gp[o] = g + o * lr;
            REAL *qrow = rows + i * lr;
            if (J == 2) FN(poly_spread_n)(2, gp, qrow, mr * lr, j1 - j0);
            else FN(poly_spread_n)(4, gp, qrow, mr * lr, j1 - j0);
        }
        for (int pt = 0; pt < np; pt++)
            PACK(job->gk.ks)(j1 - j0, rows + pt * mr * lr, lr, nrow,
                             qp + pt * fj->q_pt + ((c0 / mr) * tc + j0) * mr);
    }
    return PTC_OK;
}

/* dU[pt] += Q[pt] V[pt] over the chunk's tiles, for a block of output
 * channels of one group and point. */
static ptc_status FN(poly_filter_gemm_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(poly_filter_job) *fj = (FN(poly_filter_job) *)vjob;
    const FN(poly_job) *job = &fj->base;
    int64_t rb = t % fj->row_blocks, gp = t / fj->row_blocks, mr = job->gk.mr;
    int64_t p0 = rb * POLY_FILTER_PANELS, p1 = FN(min64)(p0 + POLY_FILTER_PANELS, fj->npanels);
    int64_t rows = FN(min64)(p1 * mr, job->cout_g) - p0 * mr;
    /* A's panels are [panel][tile][mr] over the chunk: depth tc apart */
    const REAL *a = fj->qp + gp * fj->q_pt + p0 * fj->tc * mr;
    const REAL *b = fj->vt + gp * job->v_pt;
    REAL *c = fj->du + gp * fj->u_pt + p0 * mr * fj->ldv;
    FN(poly_gemm)(&job->gk, job->kc, rows, job->kl, fj->nt, a, fj->tc * mr, b, fj->ldv, c,
                  fj->ldv, fj->t0 > 0);
    return PTC_OK;
}

/* dw of one output channel: each tap the gathered dU. */
static ptc_status FN(poly_filter_out_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(poly_filter_job) *fj = (FN(poly_filter_job) *)vjob;
    const FN(poly_job) *job = &fj->base;
    int64_t grp = t / job->cout_g, co = t % job->cout_g, s = job->s, k = job->J * s;
    const REAL *u = fj->du + grp * job->npoints * fj->u_pt + co * fj->ldv;
    REAL *dst = fj->dw + (grp * job->cout_g + co) * job->cin_g * k;
    REAL fin = 0;
    for (int64_t ci = 0; ci < job->cin_g; ci++)
        for (int64_t r = 0; r < s; r++) {
            REAL *d = dst + ci * k + r;
            if (job->J == 2) FN(poly_gather)(2, u + ci * s + r, fj->u_pt, d, s);
            else FN(poly_gather)(4, u + ci * s + r, fj->u_pt, d, s);
            for (int a = 0; a < job->J; a++) fin += d[a * s] * 0;
        }
    if (fin != 0) atomic_store(&((FN(poly_filter_job) *)vjob)->base.nonfinite, 1);
    return PTC_OK;
}

/* Weight gradient by minimal filtering; *fallback as for poly_run. */
static ptc_status FN(poly_filter)(const ptc_problem *p, const REAL *x, const REAL *dy, REAL *dw,
                                  const ptc_options *opt, int *fallback)
{
    *fallback = 0;
    int64_t J = p->kernel[0] / p->stride[0], np = FN(poly_points_of)((int)J);
    double flops = 2.0 * (double)np / (double)J * (double)p->batch * (double)p->out_size[0] *
                   (double)p->out_channels * (double)(p->in_channels / p->groups) *
                   (double)p->stride[0];
    int nthreads = ptc_threads_for_work(flops);
    FN(poly_filter_job) fj;
    FN(poly_job) *job = &fj.base;
    FN(poly_init)(job, 2, p);
    ptc_status st = FN(poly_pad)(job, x, 0, nthreads, opt);
    fj.dy = dy;
    fj.dw = dw;
    int64_t mr = job->gk.mr, K = job->cout_g;
    fj.npanels = FN(ceil_div)(K, mr);
    fj.ldv = FN(leading_dim)(job->kl, job->gk.nr);
    job->kc = KC_BYTES / (job->gk.nr * (int64_t)sizeof(REAL));
    /* Chunks of tiles by bytes alone (their order fixes the sums' order) */
    double per_tile = (double)p->groups * (double)np * (double)(fj.ldv + fj.npanels * mr) *
                      sizeof(REAL);
    int64_t tc = (int64_t)(POLY_CHUNK_BYTES / per_tile);
    if (tc < 32) tc = 32;
    fj.tc = tc = FN(min64)(tc, job->ntiles);
    job->v_pt = FN(wino_skewed)(tc * fj.ldv);
    fj.q_pt = FN(wino_skewed)(fj.npanels * tc * mr);
    fj.u_pt = FN(wino_skewed)(K * fj.ldv);
    fj.row_blocks = FN(ceil_div)(fj.npanels, POLY_FILTER_PANELS);
    fj.rows_ld = POLY_POINT_TILES + 64 / (int64_t)sizeof(REAL);
    fj.rows_elems = (np * mr + J) * fj.rows_ld;
    int64_t gpts = p->groups * np, align = 64 / (int64_t)sizeof(REAL);
    double elems = (double)gpts * (double)(job->v_pt + fj.q_pt + fj.u_pt) +
                   (double)nthreads * (double)fj.rows_elems;
    char *raw = NULL;
    if (st == PTC_OK && (elems + (double)align) * sizeof(REAL) > (double)(SIZE_MAX / 2))
        st = PTC_ERR_OVERFLOW;
    if (st == PTC_OK) {
        raw = (char *)ptc_workspace_acquire(0, (size_t)(elems + align) * sizeof(REAL));
        if (!raw) st = PTC_ERR_NO_MEMORY;
    }
    if (st == PTC_OK) {
        fj.vt = (REAL *)(raw + (64 - (uintptr_t)raw % 64) % 64);
        fj.qp = fj.vt + gpts * job->v_pt;
        fj.du = fj.qp + gpts * fj.q_pt;
        fj.rows = fj.du + gpts * fj.u_pt;
    }
    for (fj.t0 = 0; st == PTC_OK && fj.t0 < job->ntiles; fj.t0 += tc) {
        fj.nt = FN(min64)(tc, job->ntiles - fj.t0);
        fj.point_tasks = FN(ceil_div)(fj.nt, POLY_POINT_TILES);
        if (p->groups == 1) fj.point_tasks = FN(round_up)(fj.point_tasks, nthreads);
        fj.point_tasks = FN(ceil_div)(fj.nt, FN(ceil_div)(fj.nt, fj.point_tasks));
        st = ptc_parallel_for(p->groups * fj.point_tasks, nthreads, FN(poly_filter_points_task),
                              &fj, opt);
        if (st == PTC_OK)
            st = ptc_parallel_for(gpts * fj.row_blocks, nthreads, FN(poly_filter_gemm_task), &fj,
                                  opt);
    }
    if (st == PTC_OK)
        st = ptc_parallel_for(p->groups * K, nthreads, FN(poly_filter_out_task), &fj, opt);
    if (job->workspace) ptc_workspace_release(1);
    if (raw) ptc_workspace_release(0);
    *fallback = st == PTC_OK && atomic_load(&job->nonfinite);
    return st;
}
