/* Minimal filtering for 2-d convolutions with 3x3 and 4x4 kernels at stride
 * 2 and 3x3 kernels at stride 1, for one element type: included by
 * conv_template.h, whose FN, REAL and kernel macros it uses. The forward of
 * an N-d convolution whose last two dimensions are such filters over them
 * and sums over the offsets of the others directly, as rows of its GEMMs
 * (3x3x3 at stride 1: 48 products per 2x2 outputs of a plane instead of
 * 108).
 *
 * Along one axis, a stride splits a correlation into phases: at stride 2,
 * the even taps on the even window elements and the odd taps on the odd
 * ones, each a stride-1 correlation of its own. Two outputs of a phase of two
 * taps (t0, t1) over (s0, s1, s2) take three products by Toom-Cook at 0, 1
 * and infinity, (s0 - s1) t0, s1 (t0 + t1), (s2 - s1) t1, added in pairs;
 * a phase of one tap takes two. So two outputs of a 3-tap stride-2
 * correlation, y0 = w0 d0 + w1 d1 + w2 d2 and y1 = w0 d2 + w1 d3 + w2 d4,
 * are
 *
 *   points   v = (d0 - d2, d2, d4 - d2, d1, d3)
 *   weights  u = (w0, w0 + w2, w2, w1, w1)
 *   outputs  y0 = m0 + m1 + m3, y1 = m1 + m2 + m4    (m = u * v)
 *
 * 5 products instead of 6, and of a 4-tap one (window d0..d5)
 *
 *   points   v = (d0 - d2, d2, d4 - d2, d1 - d3, d3, d5 - d3)
 *   weights  u = (w0, w0 + w2, w2, w1, w1 + w3, w3)
 *   outputs  y0 = m0 + m1 + m3 + m4, y1 = m1 + m2 + m4 + m5
 *
 * 6 instead of 8; every coefficient is 0 or +-1 (no rounding beyond that of
 * the direct sum's own order). In 2-d, the tensor product of an axis with
 * itself: 25 points per 2x2 outputs instead of 36 (3x3), 36 instead of 64
 * (4x4), each point one GEMM over channels on the micro-kernels, M[pt] =
 * U[pt] V[pt] (output channels x input channels times input channels x
 * tiles).
 *
 * The input gradient (the transposed convolution) is computed from the side
 * of dx, so that each dx element is written by one tile and nothing is
 * scattered: dx has phases too (with padding 1, dx[2u] = w1 dy[u] and
 * dx[2u + 1] = w2 dy[u] + w0 dy[u + 1] for 3 taps; other paddings shift
 * them), so four dx from a dy window e0..e2 (3 taps) or e0..e3 (4 taps) are
 *
 *   3 taps   v = (e0 - e1, e1, e2 - e1, e0, e1), u = (w2, w0 + w2, w0, w1, w1),
 *            dx0 = m3, dx1 = m0 + m1, dx2 = m4, dx3 = m1 + m2
 *   4 taps   v = (e0 - e1, e1, e2 - e1, e1 - e2, e2, e3 - e2),
 *            u = (w3, w1 + w3, w1, w2, w0 + w2, w0),
 *            dx0 = m0 + m1, dx1 = m3 + m4, dx2 = m1 + m2, dx3 = m4 + m5
 *
 * the same products per element as the forward's, with the taps reversed.
 * Points that repeat (or, e1 - e2, repeat negated) are transformed once.
 *
 * The weight gradient is the forward's algorithm transposed: per point, dU =
 * Q V^T summed over tiles, with Q of a tile's two output gradients (dy0,
 * dy0 + dy1, dy1) at the points each output is made of, V the forward's
 * points, then each tap's dw the sum of the dU of the points whose weight
 * holds it (3 taps: dw0 = dU0 + dU1, dw1 = dU3 + dU4, dw2 = dU1 + dU2).
 *
 * At stride 1 (3x3 kernels, the forward; the input gradient of a stride-1
 * convolution is a stride-1 convolution with the kernel flipped, which the
 * dispatch hands to the forward) the 3-tap correlation has no phases, and two
 * outputs take four products by Toom-Cook at 0, 1, -1 and infinity:
 *
 *   points   v = (d0 - d2, d1 + d2, d2 - d1, d3 - d1)
 *   weights  u = (w0, (w0 + w1 + w2) / 2, (w0 - w1 + w2) / 2, w2)
 *   outputs  y0 = m0 + m1 + m2, y1 = m1 - m2 + m3
 *
 * 16 products per 2x2 outputs instead of 36. The halves are exact; the one
 * sign is the second target's of point 2 (and, in 2-d, the product of the
 * two axes' signs), and points with one target have none, so they still go
 * straight from the kernels into their output. Rounding: the weights' two
 * sums and the outputs' three-term sums differ from the direct sum's order,
 * within a few units in the last place of the terms' magnitudes.
 *
 * Differences of Inf are NaN where the direct sum has an Inf: a call whose
 * results hold anything but finite numbers is run again by the direct
 * method, which gives what it would have given (the check costs nothing
 * next to the call; such a call costs two). */

#define WINO_MAX_AXIS 6 /* points along one axis, at most */
#define WINO_MAX_POINTS (WINO_MAX_AXIS * WINO_MAX_AXIS)
/* Working set per thread the tile blocks are sized for: transformed
 * windows, a point's product and the output accumulators. */
#define WINO_BLOCK_BYTES (1536.0 * 1024)

/* One axis's algorithm (see above): a kernel of 3 or 4 taps at stride 2, or
 * of 3 at stride 1 (its forward side only). [side]: 0 the forward's windows
 * (forward and weight gradient), 1 the input gradient's. */
typedef struct {
    int points;
    int wlen[2];                      /* window elements per tile */
    int dy_origin;                    /* input gradient: tile s's window starts at 2s + this */
    int8_t targets[2][WINO_MAX_AXIS][2]; /* the outputs a point is added into, -1 for none */
    int8_t negated[WINO_MAX_AXIS];    /* forward side: bit i, point subtracted from target i */
    int nv[2];                        /* distinct window points */
    int8_t vmap[2][WINO_MAX_AXIS];    /* point -> its distinct window point */
    int nu;                           /* distinct weight points */
    int8_t umap[WINO_MAX_AXIS];       /* point -> its distinct weight point */
    int8_t qmap[WINO_MAX_AXIS];       /* weight gradient: point -> dy point (of 3) */
} FN(wino_rule);

/* The rules, by wino_rule_index: 3 and 4 taps at stride 2, 3 at stride 1. */
static const FN(wino_rule) FN(wino_rules)[3] = {
    {5, {5, 3}, 0,
     {{{0, -1}, {0, 1}, {1, -1}, {0, -1}, {1, -1}}, {{1, -1}, {1, 3}, {3, -1}, {0, -1}, {2, -1}}},
     {0},
     {5, 4}, {{0, 1, 2, 3, 4}, {0, 1, 2, 3, 1}},
     4, {0, 1, 2, 3, 3},
     {0, 1, 2, 0, 2}},
    {6, {6, 4}, -1,
     {{{0, -1}, {0, 1}, {1, -1}, {0, -1}, {0, 1}, {1, -1}},
      {{0, -1}, {0, 2}, {2, -1}, {1, -1}, {1, 3}, {3, -1}}},
     {0},
     {6, 5}, {{0, 1, 2, 3, 4, 5}, {0, 1, 2, 2, 3, 4}},
     6, {0, 1, 2, 3, 4, 5},
     {0, 1, 2, 0, 1, 2}},
    {4, {4, 0}, 0,
     {{{0, -1}, {0, 1}, {0, 1}, {1, -1}}},
     {0, 0, 2, 0},
     {4, 0}, {{0, 1, 2, 3}},
     4, {0, 1, 2, 3},
     {0}},
};

/* The rule of an eligible problem (wino_ok). */
static int FN(wino_rule_index)(const ptc_problem *p)
{
    int a = p->ndim - 2; /* the first of the two dimensions filtered */
    return p->stride[a] == 1 ? 2 : (int)p->kernel[a] - 3;
}

/* Eligible for op (0 forward, 1 input gradient, 2 weight gradient): 2-d
 * (the forward: N-d, the last two dimensions as these), a 3x3 or 4x4 kernel
 * at stride 2 or, for the forward, a 3x3 kernel at stride 1, no dilation,
 * zero padding (other modes come here padded already), and enough work in
 * the GEMMs for them to outweigh the transforms: channels on both sides
 * (each point's GEMM is as deep as the input channels times the outer
 * offsets and as tall as the output channels; the transforms' cost per
 * element is fixed) and tiles (the weights' transform is paid once per
 * call). The bounds are measured (benchmarks/README.md, entries 12 and 16):
 * at stride 2, with 32 channels every pass was slower than the direct one,
 * with 64 the weight gradient still was, and below some 200 tiles the
 * forward; at stride 1 (16 products for 36, not 25), 32 channels gain
 * 10-20%, 16 lose, and 64 or fewer tiles lose (1 x 512 x 7 x 7: 2.5 times
 * the direct time). */
static int FN(wino_ok)(const ptc_problem *p, int op)
{
    int a = p->ndim - 2;
    if (p->ndim < 2 || (p->ndim > 2 && op != 0) || p->padding_mode != PTC_PAD_ZEROS ||
        p->kernel[a] != p->kernel[a + 1] || (p->kernel[a] != 3 && p->kernel[a] != 4))
        return 0;
    int64_t stride = p->stride[a];
    if (stride == 1 ? op != 0 || p->kernel[a] != 3 : stride != 2) return 0;
    for (int d = a; d < a + 2; d++)
        if (p->stride[d] != stride || p->dilation[d] != 1 || p->out_size[d] < 2) return 0;
    /* the outer dimensions' offsets deepen the GEMMs like channels */
    int64_t cin_g = p->in_channels / p->groups, cout_g = p->out_channels / p->groups;
    double depth = (double)cin_g;
    double tiles = (double)p->batch * (double)FN(ceil_div)(p->out_size[a], 2) *
                   (double)FN(ceil_div)(p->out_size[a + 1], 2);
    double sources = 1; /* entries of wino_outer_sources' table: 8 MiB at most */
    for (int d = 0; d < a; d++) {
        depth *= (double)p->kernel[d];
        tiles *= (double)p->out_size[d];
        sources *= (double)p->kernel[d] * (double)p->out_size[d];
    }
    int64_t least = op == 2 ? 96 : stride == 1 ? 32 : 64;
    return depth >= (double)least && cout_g >= least && tiles >= 256 && sources <= 1 << 20;
}

/* Floor of a / b for b > 0. */
static int64_t FN(floor_div)(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* The tiles along one axis: tile t reads the window [t * wstep + w0, + wlen)
 * of its input and writes [t * ostep + o0, + olen) of its output. */
typedef struct {
    int64_t count, wstep, w0, ostep, o0;
} FN(wino_axis);

static FN(wino_axis) FN(wino_axis_of)(int op, const ptc_problem *p, int d)
{
    FN(wino_axis) a;
    int64_t pad = p->pad_low[d];
    if (op == 1) {
        /* dx tile s covers [4s + 1 - pad, + 4) from dy from 2s + dy_origin:
         * the first tile reaching dx[0] to the last one starting inside dx */
        int64_t s0 = FN(floor_div)(pad - 5, 4) + 1, s1 = FN(floor_div)(p->in_size[d] - 2 + pad, 4);
        a.count = s1 - s0 + 1;
        a.wstep = 2;
        a.w0 = 2 * s0 + FN(wino_rules)[p->kernel[d] - 3].dy_origin;
        a.ostep = 4;
        a.o0 = 4 * s0 + 1 - pad;
    } else {
        /* outputs 2t, 2t + 1 from x[2t * stride - pad ..] */
        a.count = FN(ceil_div)(p->out_size[d], 2);
        a.wstep = 2 * p->stride[d];
        a.w0 = -pad;
        a.ostep = 2;
        a.o0 = 0;
    }
    return a;
}

/* One axis's distinct points of a window (elements d[0], d[ds], ...) into
 * v[0], v[vs], ...: kind 0 the 3-tap forward's, 1 the 3-tap input
 * gradient's, 2 and 3 the 4-tap ones (the distinct ones of the rules'
 * vmap), 4 the stride-1 3-tap forward's. A constant where it is called, so
 * that each kind compiles to its own straight-line code. */
static inline void FN(wino_axis_points)(int kind, const REAL *d, int64_t ds, REAL *v, int64_t vs)
{
    REAL d0 = d[0], d1 = d[ds], d2 = d[2 * ds];
    switch (kind) {
    case 0: {
        REAL d3 = d[3 * ds], d4 = d[4 * ds];
        v[0] = d0 - d2, v[vs] = d2, v[2 * vs] = d4 - d2, v[3 * vs] = d1, v[4 * vs] = d3;
        break;
    }
    case 1:
        v[0] = d0 - d1, v[vs] = d1, v[2 * vs] = d2 - d1, v[3 * vs] = d0;
        break;
    case 2: {
        REAL d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
        v[0] = d0 - d2, v[vs] = d2, v[2 * vs] = d4 - d2;
        v[3 * vs] = d1 - d3, v[4 * vs] = d3, v[5 * vs] = d5 - d3;
        break;
    }
    case 3: {
        REAL d3 = d[3 * ds];
        v[0] = d0 - d1, v[vs] = d1, v[2 * vs] = d2 - d1, v[3 * vs] = d2, v[4 * vs] = d3 - d2;
        break;
    }
    default: {
        REAL d3 = d[3 * ds];
        v[0] = d0 - d2, v[vs] = d1 + d2, v[2 * vs] = d2 - d1, v[3 * vs] = d3 - d1;
        break;
    }
    }
}

/* The distinct points of a wlen x wlen window (rows ds apart) into
 * v[(a * nv + b) * vs]: the axis's points of each row, then of each column
 * of those. Written out in scalars, which the compiler keeps in registers
 * (through arrays and loops of unknown length, the transforms cost three
 * times the loads and stores). */
static inline void FN(wino_points2d)(int kind, const REAL *d, int64_t ds, REAL *v, int64_t vs)
{
    const FN(wino_rule) *rule = &FN(wino_rules)[kind / 2]; /* constants: kind is one */
    int wlen = rule->wlen[kind % 2], nv = rule->nv[kind % 2];
    REAL r[WINO_MAX_AXIS][WINO_MAX_AXIS];
#pragma GCC unroll 6
    for (int i = 0; i < wlen; i++) FN(wino_axis_points)(kind, d + i * ds, 1, r[i], 1);
#pragma GCC unroll 6
    for (int b = 0; b < nv; b++)
        FN(wino_axis_points)(kind, &r[0][b], WINO_MAX_AXIS, v + b * vs, nv * vs);
}

/* One axis's distinct weight points of taps w[0], w[ws], ... into u[0],
 * u[us], ... (kinds as for the window points). */
static inline void FN(wino_axis_weights)(int kind, const REAL *w, int64_t ws, REAL *u, int64_t us)
{
    REAL w0 = w[0], w1 = w[ws], w2 = w[2 * ws];
    switch (kind) {
    case 0:
        u[0] = w0, u[us] = w0 + w2, u[2 * us] = w2, u[3 * us] = w1;
        break;
    case 1:
        u[0] = w2, u[us] = w0 + w2, u[2 * us] = w0, u[3 * us] = w1;
        break;
    case 2: {
        REAL w3 = w[3 * ws];
        u[0] = w0, u[us] = w0 + w2, u[2 * us] = w2, u[3 * us] = w1, u[4 * us] = w1 + w3;
        u[5 * us] = w3;
        break;
    }
    case 3: {
        /* the fourth point's window value is the third's negated (e1 - e2):
         * the sign goes to its weight */
        REAL w3 = w[3 * ws];
        u[0] = w3, u[us] = w1 + w3, u[2 * us] = w1, u[3 * us] = -w2, u[4 * us] = w0 + w2;
        u[5 * us] = w0;
        break;
    }
    default: {
        REAL half = (REAL)0.5, outer = w0 + w2;
        u[0] = w0, u[us] = (outer + w1) * half, u[2 * us] = (outer - w1) * half, u[3 * us] = w2;
        break;
    }
    }
}

/* Elements between two points' blocks: a whole number of pages and one
 * line more, so that the 25 blocks, written and read side by side, fall into
 * different cache sets (page-multiple strides put them all in one, and the
 * transforms ran at a fifth of their speed). */
static int64_t FN(wino_skewed)(int64_t elems)
{
    return FN(round_up)(elems, 4096 / (int64_t)sizeof(REAL)) + 64 / (int64_t)sizeof(REAL);
}

/* Where the wlen x wlen window at (y0, x0) of an h x w plane reads, the
 * same for every channel: inside the plane, its corner (off[0]); at the
 * border, the offset of each element (a valid one, 0, for those outside) and
 * a bit for each that is inside. Worked out once per tile, so that no
 * channel repeats the bounds arithmetic. */
typedef struct {
    int64_t off[WINO_MAX_POINTS];
    uint64_t inside; /* bit i * wlen + k: element (i, k) lies in the plane */
    int interior;
} FN(wino_window);

static void FN(wino_window_at)(FN(wino_window) *win, int64_t h, int64_t w, int64_t y0,
                               int64_t x0, int64_t wlen)
{
    win->interior = y0 >= 0 && x0 >= 0 && y0 + wlen <= h && x0 + wlen <= w;
    win->off[0] = y0 * w + x0;
    win->inside = 0;
    if (win->interior) return;
    for (int64_t i = 0; i < wlen; i++)
        for (int64_t k = 0; k < wlen; k++) {
            int64_t yy = y0 + i, xx = x0 + k;
            int in = yy >= 0 && yy < h && xx >= 0 && xx < w;
            win->off[i * wlen + k] = in ? yy * w + xx : 0;
            win->inside |= (uint64_t)in << (i * wlen + k);
        }
}

/* The distinct points of a window (zeros outside the plane) into
 * v[pt * vs]; w is the plane's row length. */
static inline void FN(wino_window_points)(int kind, const REAL *plane, int64_t w,
                                          const FN(wino_window) *win, REAL *v, int64_t vs)
{
    int wlen = FN(wino_rules)[kind / 2].wlen[kind % 2];
    REAL copy[WINO_MAX_POINTS];
    const REAL *base = plane + win->off[0];
    int64_t bs = w;
    if (!win->interior) {
        for (int e = 0; e < wlen * wlen; e++) {
            REAL val = plane[win->off[e]];
            copy[e] = win->inside >> e & 1 ? val : 0;
        }
        base = copy;
        bs = wlen;
    }
    FN(wino_points2d)(kind, base, bs, v, vs);
}

/* The micro-kernels of this CPU for REAL and their tile shape. */
typedef struct {
    const ptc_kernel_set *ks;
    FN(kernel_fn) const *kerns; /* kerns[v - 1]: v vectors wide */
    int64_t mr, nr, vlen;
} FN(wino_kernels);

static FN(wino_kernels) FN(wino_kernels_of_cpu)(void)
{
    FN(wino_kernels) k;
    k.ks = ptc_kernels();
    k.kerns = KERNELS(k.ks);
    k.mr = KERNEL_MR(k.ks);
    k.vlen = KERNEL_VLEN(k.ks);
    k.nr = KERNEL_NV(k.ks) * k.vlen;
    return k;
}

/* The narrowest kernel that covers ncols (<= nr) columns. */
static FN(kernel_fn) FN(wino_kernel_for)(const FN(wino_kernels) *k, int64_t ncols)
{
    return k->kerns[(ncols + k->vlen - 1) / k->vlen - 1];
}

typedef struct {
    int op; /* 0 forward (x -> y), 1 input gradient (dy -> dx) */
    const ptc_problem *p;
    FN(wino_kernels) gk;
    int64_t ca, cb;           /* channels per group: the GEMMs' k, and their rows */
    int64_t in_channels, out_channels, in_h, in_w, out_h, out_w, wlen, olen;
    FN(wino_axis) ay, ax;
    int64_t ntiles, nb, nblocks, ldb, kc, npanels;
    int64_t a_pt, v_pt, acc_pt; /* elements per point (weights, points), per output */
    /* The forward of an N-d problem filters its last two dimensions and sums
     * over the offsets of the others directly: the GEMMs' k runs over (input
     * channel, outer offset), the weights' own order, and the tiles over
     * (image, outer output position, tile of the plane). outer_src[o * outer_k
     * + q]: the outer input position offset q of outer output o reads, or -1
     * in the padding. 2-d: one of each. */
    int64_t cin; /* channels of `in` per group */
    int64_t outer_k, outer_in, outer_out;
    int64_t *outer_src;
    const FN(wino_rule) *rule;  /* both axes' */
    int kind;                   /* of the points (wino_axis_points) */
    int npoints;                /* points per tile */
    int8_t order[WINO_MAX_POINTS]; /* the order they are done in */
    const REAL *in, *w, *bias;
    REAL *out;
    REAL *apack;              /* [grp][distinct weight point][panel][ca][mr] */
    REAL *scratch;            /* per thread: V, the product, the accumulators */
    int64_t scratch_elems, v_elems, m_elems;
    atomic_int nonfinite;
} FN(wino_job);

/* Weight transform of one panel of mr GEMM rows for every distinct point. */
static ptc_status FN(wino_weight_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(wino_job) *job = (FN(wino_job) *)vjob;
    const ptc_problem *p = job->p;
    int64_t grp = t / job->npanels, pi = t % job->npanels, mr = job->gk.mr;
    int64_t k = p->kernel[p->ndim - 1];
    int64_t cin_g = p->in_channels / p->groups, cout_g = p->out_channels / p->groups;
    int64_t per_co = cin_g * job->outer_k; /* a forward's rows kk: (ci, outer offset) */
    int nu = job->rule->nu;
    REAL *a = job->apack + grp * nu * nu * job->a_pt + pi * job->ca * mr;
    for (int64_t kk = 0; kk < job->ca; kk++)
        for (int64_t i = 0; i < mr; i++) {
            int64_t row = pi * mr + i, co = job->op ? kk : row, ci = job->op ? row : kk;
            REAL *dst = a + kk * mr + i;
            if (row >= job->cb) {
                for (int pt = 0; pt < nu * nu; pt++) dst[pt * job->a_pt] = 0;
                continue;
            }
            const REAL *wk = job->w + ((grp * cout_g + co) * per_co + ci) * k * k;
            REAL r[4][WINO_MAX_AXIS];
            for (int64_t ky = 0; ky < k; ky++)
                FN(wino_axis_weights)(job->kind, wk + k * ky, 1, r[ky], 1);
            for (int b = 0; b < nu; b++)
                FN(wino_axis_weights)(job->kind, &r[0][b], WINO_MAX_AXIS, dst + b * job->a_pt,
                                      nu * job->a_pt);
        }
    return PTC_OK;
}

/* Tiles per run of wino_run_points. */
#define WINO_RUN 64

/* Stride 1: the points of n <= WINO_RUN interior tiles side by side along a
 * row of tiles (windows 2 apart, the first at base; rows w apart) into
 * v[pt * vs + t]: each window row's points for all n tiles, then the
 * columns', as loops over the tiles that the compiler vectorises. The
 * arithmetic is wino_points2d's, in its order: the same bits. Its formulas
 * are wino_axis_points' kind 4 written out on restrict pointers: called
 * through wino_axis_points, whose stores take a stride, the loops were left
 * scalar (no packed instruction in the build). */
static inline void FN(wino_run_points)(const REAL *base, int64_t w, int64_t n, REAL *v,
                                       int64_t vs)
{
    REAL r[4][4][WINO_RUN]; /* [window row][axis point][tile] */
    for (int i = 0; i < 4; i++) {
        const REAL *d = base + i * w;
        for (int64_t t = 0; t < n; t++) {
            REAL d0 = d[2 * t], d1 = d[2 * t + 1], d2 = d[2 * t + 2], d3 = d[2 * t + 3];
            r[i][0][t] = d0 - d2, r[i][1][t] = d1 + d2, r[i][2][t] = d2 - d1, r[i][3][t] = d3 - d1;
        }
    }
    for (int b = 0; b < 4; b++) {
        REAL *restrict v0 = v + b * vs, *restrict v1 = v + (4 + b) * vs;
        REAL *restrict v2 = v + (8 + b) * vs, *restrict v3 = v + (12 + b) * vs;
        for (int64_t t = 0; t < n; t++) {
            REAL e0 = r[0][b][t], e1 = r[1][b][t], e2 = r[2][b][t], e3 = r[3][b][t];
            v0[t] = e0 - e2, v1[t] = e1 + e2, v2[t] = e2 - e1, v3[t] = e3 - e1;
        }
    }
}

/* The input windows of tiles [t0, t0 + nt) of group grp as points:
 * v[pt * v_pt + c * ldb + j]; columns nt .. up to a whole strip are zeros,
 * and so are the points of a row c whose outer offset lies in the padding.
 * A row at a time, tile after tile: each of the 25 lines being written
 * then fills before the next row's (tile by tile, every store missed L1).
 * tile[], outer[] and win[] take nt entries: the images' offsets, the
 * tiles' rows of outer_src, the windows. */
static inline void FN(wino_points_block)(int kind, const FN(wino_job) *job, int64_t grp,
                                         int64_t t0, int64_t nt, REAL *v, int64_t *tile,
                                         int64_t *outer, FN(wino_window) *win)
{
    int64_t per_plane = job->ay.count * job->ax.count, plane = job->in_h * job->in_w;
    int64_t jend = FN(round_up)(nt, job->gk.nr), nv = job->rule->nv[job->op];
    for (int64_t j = 0; j < nt; j++) {
        int64_t t = t0 + j, r = t % per_plane, o = t / per_plane % job->outer_out;
        int64_t n = t / per_plane / job->outer_out;
        FN(wino_window_at)(&win[j], job->in_h, job->in_w,
                           job->ay.w0 + (r / job->ax.count) * job->ay.wstep,
                           job->ax.w0 + (r % job->ax.count) * job->ax.wstep, job->wlen);
        tile[j] = (n * job->in_channels + grp * job->cin) * job->outer_in * plane;
        outer[j] = o * job->outer_k;
    }
    for (int64_t c = 0; c < job->ca; c++) {
        REAL *dst = v + c * job->ldb;
        int64_t ci = c / job->outer_k, q = c % job->outer_k;
        for (int64_t j = 0, j1; j < nt; j = j1) {
            int64_t src = job->outer_src[outer[j] + q];
            j1 = j + 1;
            if (src < 0) {
                for (int64_t pt = 0; pt < nv * nv; pt++) dst[pt * job->v_pt + j] = 0;
                continue;
            }
            const REAL *in = job->in + tile[j] + (ci * job->outer_in + src) * plane;
            if (kind == 4 && win[j].interior) {
                /* the interior tiles that follow in the same plane's row */
                while (j1 < nt && j1 - j < WINO_RUN && win[j1].interior && tile[j1] == tile[j] &&
                       outer[j1] == outer[j] && win[j1].off[0] == win[j1 - 1].off[0] + 2)
                    j1++;
                FN(wino_run_points)(in + win[j].off[0], job->in_w, j1 - j, dst + j, job->v_pt);
            } else {
                FN(wino_window_points)(kind, in, job->in_w, &win[j], dst + j, job->v_pt);
            }
        }
        for (int64_t j = nt; j < jend; j++)
            for (int64_t pt = 0; pt < nv * nv; pt++) dst[pt * job->v_pt + j] = 0;
    }
}

/* The accumulators of a block's tiles (olen x olen outputs each) into the
 * output of group grp, plus the bias, inside the output's bounds; non-zero
 * when a result is not finite. The tiles come in runs along an output row
 * (run_j[r], run_n[r]; off[j], lim[j]: tile j's offset and bounds): a run
 * of whole tiles is rows of consecutive outputs, stored by loops of constant
 * length (olen is a constant where this is called) that the compiler
 * vectorises; a tile cut by the output's edge is a run of its own. */
static inline int FN(wino_store)(const FN(wino_job) *job, const REAL *acc, int64_t grp,
                                 int64_t nruns, const int64_t *run_j, const int64_t *run_n,
                                 const int64_t *off, const int64_t *lim, int olen)
{
    int64_t plane = job->outer_out * job->out_h * job->out_w; /* a channel of the output */
    int64_t ow = job->out_w, cb = job->cb, ps = job->acc_pt;
    int64_t whole = olen << 8 | (int64_t)olen << 24;
    REAL fin[16] = {0}; /* one sum per output position: no chain of dependent adds */
    for (int64_t c = 0; c < cb; c++) {
        REAL bias = job->bias ? job->bias[grp * cb + c] : 0, *dc = job->out + c * plane;
        const REAL *src = acc + c * job->ldb;
        for (int64_t r = 0; r < nruns; r++) {
            int64_t j0 = run_j[r], n = run_n[r];
            REAL *dst = dc + off[j0];
            if (lim[j0] == whole) {
                for (int iy = 0; iy < olen; iy++) {
                    REAL *drow = dst + iy * ow;
                    const REAL *srow = src + iy * olen * ps + j0;
                    for (int64_t t = 0; t < n; t++)
                        for (int ix = 0; ix < olen; ix++) {
                            REAL val = srow[ix * ps + t];
                            fin[ix] += val * 0;
                            drow[t * olen + ix] = val + bias;
                        }
                }
                continue;
            }
            int64_t ylo = lim[j0] & 255, yhi = lim[j0] >> 8 & 255;
            int64_t xlo = lim[j0] >> 16 & 255, xhi = lim[j0] >> 24 & 255;
            for (int64_t iy = ylo; iy < yhi; iy++)
                for (int64_t ix = xlo; ix < xhi; ix++) {
                    REAL val = src[(iy * olen + ix) * ps + j0];
                    fin[ix] += val * 0;
                    dst[iy * ow + ix] = val + bias;
                }
        }
    }
    REAL any = 0;
    for (int o = 0; o < 16; o++) any += fin[o];
    return any != 0;
}

/* A block of tiles of one group: points, 25 GEMMs, outputs. */
static ptc_status FN(wino_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)par;
    FN(wino_job) *job = (FN(wino_job) *)vjob;
    int64_t grp = t / job->nblocks, t0 = (t % job->nblocks) * job->nb;
    int64_t nt = FN(min64)(job->nb, job->ntiles - t0);
    int64_t ldb = job->ldb, cb = job->cb, mr = job->gk.mr, olen = job->olen;
    REAL *v = job->scratch + tid * job->scratch_elems;
    REAL *m = v + job->v_elems, *acc = m + job->m_elems;
    int64_t acc_stride = job->acc_pt; /* elements per output position of a tile */

    int64_t *off = (int64_t *)(acc + olen * olen * acc_stride), *lim = off + job->nb;
    int64_t *outer = lim + 3 * job->nb;
    FN(wino_window) *win = (FN(wino_window) *)(outer + job->nb);
    switch (job->kind) { /* each with its own straight-line transforms */
    case 0: FN(wino_points_block)(0, job, grp, t0, nt, v, off, outer, win); break;
    case 1: FN(wino_points_block)(1, job, grp, t0, nt, v, off, outer, win); break;
    case 2: FN(wino_points_block)(2, job, grp, t0, nt, v, off, outer, win); break;
    case 3: FN(wino_points_block)(3, job, grp, t0, nt, v, off, outer, win); break;
    default: FN(wino_points_block)(4, job, grp, t0, nt, v, off, outer, win); break;
    }

    int touched[16] = {0};
    const FN(wino_rule) *rule = job->rule;
    const int8_t(*tg)[2] = rule->targets[job->op];
    int P = rule->points, nv = rule->nv[job->op], nu = rule->nu;
    const int8_t *vmap = rule->vmap[job->op];
    for (int step = 0; step < job->npoints; step++) {
        int pt = job->order[step];
        const int8_t *ty = tg[pt / P], *tx = tg[pt % P];
        int single = ty[1] < 0 && tx[1] < 0;
        int first = ty[0] * olen + tx[0];
        /* a point added into one output goes there straight from the
         * kernels; one added into several, through m */
        REAL *c = single ? acc + first * acc_stride : m;
        int add = single && touched[first];
        const REAL *a = job->apack +
                        (grp * nu * nu + rule->umap[pt / P] * nu + rule->umap[pt % P]) * job->a_pt;
        const REAL *vp = v + (vmap[pt / P] * nv + vmap[pt % P]) * job->v_pt;
        for (int64_t k0 = 0; k0 < job->ca; k0 += job->kc) {
            int64_t kc = FN(min64)(job->kc, job->ca - k0);
            int flags = add || k0 > 0 ? PTC_TILE_ADD : 0;
            for (int64_t j0 = 0; j0 < nt; j0 += job->gk.nr) {
                int64_t ncols = FN(min64)(job->gk.nr, nt - j0);
                FN(kernel_fn) kern = FN(wino_kernel_for)(&job->gk, ncols);
                for (int64_t i0 = 0; i0 < cb; i0 += mr)
                    kern(kc, a + ((i0 / mr) * job->ca + k0) * mr, vp + k0 * ldb + j0, ldb,
                         c + i0 * ldb + j0, ldb, flags, FN(min64)(mr, cb - i0), ncols);
            }
        }
        if (single) {
            touched[first] = 1;
            continue;
        }
        for (int iy = 0; iy < 2 && ty[iy] >= 0; iy++)
            for (int ix = 0; ix < 2 && tx[ix] >= 0; ix++) {
                int o = ty[iy] * olen + tx[ix];
                int minus = (rule->negated[pt / P] >> iy ^ rule->negated[pt % P] >> ix) & 1;
                REAL *dst = acc + o * acc_stride;
                if (touched[o])
                    for (int64_t r = 0; r < cb; r++)
                        AXPY(job->gk.ks)(nt, minus ? -1 : 1, m + r * ldb, 1, dst + r * ldb, 1);
                else if (!minus)
                    for (int64_t r = 0; r < cb; r++)
                        memcpy(dst + r * ldb, m + r * ldb, (size_t)nt * sizeof(REAL));
                else
                    for (int64_t r = 0; r < cb; r++)
                        for (int64_t j = 0; j < nt; j++) dst[r * ldb + j] = -m[r * ldb + j];
                touched[o] = 1;
            }
    }

    /* The accumulators into the output, inside its bounds, a channel at a
     * time (a tile at a time, every store went to another plane: a tenth of
     * the call); any non-finite result sends the call to the direct method. */
    int64_t per_plane = job->ay.count * job->ax.count, plane = job->out_h * job->out_w;
    int64_t *run_j = lim + job->nb, *run_n = run_j + job->nb, nruns = 0;
    for (int64_t j = 0; j < nt; j++) {
        int64_t tt = t0 + j, r = tt % per_plane, o = tt / per_plane % job->outer_out;
        int64_t n = tt / per_plane / job->outer_out;
        int64_t y0 = job->ay.o0 + (r / job->ax.count) * job->ay.ostep;
        int64_t x0 = job->ax.o0 + (r % job->ax.count) * job->ax.ostep;
        int64_t ylo = y0 < 0 ? -y0 : 0, yhi = FN(min64)(olen, job->out_h - y0);
        int64_t xlo = x0 < 0 ? -x0 : 0, xhi = FN(min64)(olen, job->out_w - x0);
        off[j] = ((n * job->out_channels + grp * cb) * job->outer_out + o) * plane +
                 y0 * job->out_w + x0;
        lim[j] = ylo | yhi << 8 | xlo << 16 | xhi << 24;
        /* a whole tile right of one in its run (same row, next place) joins it */
        int64_t whole = olen << 8 | olen << 24;
        if (nruns && lim[j] == whole && lim[run_j[nruns - 1]] == whole && r % job->ax.count &&
            off[j] == off[j - 1] + job->ax.ostep)
            run_n[nruns - 1]++;
        else
            run_j[nruns] = j, run_n[nruns++] = 1;
    }
    int nonfinite = olen == 2
                        ? FN(wino_store)(job, acc, grp, nruns, run_j, run_n, off, lim, 2)
                        : FN(wino_store)(job, acc, grp, nruns, run_j, run_n, off, lim, 4);
    if (nonfinite) atomic_store(&job->nonfinite, 1);
    return PTC_OK;
}

/* Tiles per block (block sizes change no sum: every column of the GEMMs is
 * a sum of its own): a multiple of the vector length, at most what the
 * working set allows (col_bytes a tile) but a strip at least, and of these
 * the one whose slowest thread has the fewest columns to do, counting the
 * columns of a strip narrower than the kernels' widest as a quarter dearer
 * (measured: about what the narrower kernels lose). */
static int64_t FN(wino_block_tiles)(int64_t ntiles, int64_t groups, int nthreads, int64_t nr,
                                    int64_t vlen, double col_bytes)
{
    int64_t most = (int64_t)(WINO_BLOCK_BYTES / col_bytes), best = nr;
    if (most < nr) most = nr;
    double best_cost = -1;
    for (int64_t nb = vlen; nb <= most; nb += vlen) {
        int64_t tasks = groups * FN(ceil_div)(ntiles, nb), rest = nb % nr;
        double cols = (double)(nb - rest) + 1.25 * (double)rest;
        double cost = (double)FN(ceil_div)(tasks, nthreads) * cols / (double)nb *
                      (double)FN(min64)(nb, ntiles);
        if (best_cost < 0 || cost <= best_cost) best = nb, best_cost = cost;
    }
    return FN(min64)(best, FN(round_up)(ntiles, vlen));
}

/* For each position o of the outer dimensions of the output (all but the
 * last two; outer_out of them) and offset q of the kernel's (outer_k), the
 * linear position of the input's that they read, or -1 where it lies in the
 * padding: src[o * outer_k + q]. One entry, 0, for a 2-d problem. */
static void FN(wino_outer_sources)(const ptc_problem *p, int64_t outer_out, int64_t outer_k,
                                   int64_t *src)
{
    int a = p->ndim - 2;
    for (int64_t o = 0; o < outer_out; o++)
        for (int64_t q = 0; q < outer_k; q++) {
            int64_t lin = 0, orest = o, qrest = q, ostep = outer_out, qstep = outer_k;
            for (int d = 0; d < a && lin >= 0; d++) {
                ostep /= p->out_size[d];
                qstep /= p->kernel[d];
                int64_t od = orest / ostep, qd = qrest / qstep;
                orest %= ostep;
                qrest %= qstep;
                int64_t i = od * p->stride[d] - p->pad_low[d] + qd * p->dilation[d];
                lin = i >= 0 && i < p->in_size[d] ? lin * p->in_size[d] + i : -1;
            }
            src[o * outer_k + q] = lin;
        }
}

/* Forward (op 0) or input gradient (op 1) by minimal filtering. Sets
 * *fallback when the results are not all finite: the caller then runs the
 * direct method. */
static ptc_status FN(wino_run)(int op, const ptc_problem *p, const REAL *in, const REAL *w,
                               const REAL *bias, REAL *out, const ptc_options *opt, int *fallback)
{
    FN(wino_job) job;
    memset(&job, 0, sizeof(job));
    job.op = op;
    job.p = p;
    job.gk = FN(wino_kernels_of_cpu)();
    int64_t cin_g = p->in_channels / p->groups, cout_g = p->out_channels / p->groups;
    int a = p->ndim - 2; /* op 1: a = 0 (wino_ok) */
    job.outer_k = job.outer_in = job.outer_out = 1;
    for (int d = 0; d < a; d++) {
        job.outer_k *= p->kernel[d];
        job.outer_in *= p->in_size[d];
        job.outer_out *= p->out_size[d];
    }
    job.cin = op ? cout_g : cin_g;
    job.ca = job.cin * job.outer_k;
    job.cb = op ? cin_g : cout_g;
    job.in_channels = op ? p->out_channels : p->in_channels;
    job.out_channels = op ? p->in_channels : p->out_channels;
    job.in_h = op ? p->out_size[a] : p->in_size[a];
    job.in_w = op ? p->out_size[a + 1] : p->in_size[a + 1];
    job.out_h = op ? p->in_size[a] : p->out_size[a];
    job.out_w = op ? p->in_size[a + 1] : p->out_size[a + 1];
    job.rule = &FN(wino_rules)[FN(wino_rule_index)(p)];
    job.kind = 2 * FN(wino_rule_index)(p) + op;
    job.wlen = job.rule->wlen[op];
    job.olen = op ? 4 : 2;
    int P = job.rule->points, nv = job.rule->nv[op], nu = job.rule->nu;
    job.npoints = P * P;
    /* the points sharing weights one after the other, so that the second
     * finds them in L2 */
    for (int u = 0, n = 0; u < nu * nu; u++)
        for (int pt = 0; pt < P * P; pt++)
            if (job.rule->umap[pt / P] * nu + job.rule->umap[pt % P] == u) job.order[n++] = (int8_t)pt;
    job.ay = FN(wino_axis_of)(op, p, a);
    job.ax = FN(wino_axis_of)(op, p, a + 1);
    job.ntiles = p->batch * job.outer_out * job.ay.count * job.ax.count;
    job.outer_src = (int64_t *)malloc((size_t)(job.outer_out * job.outer_k) * sizeof(int64_t));
    if (!job.outer_src) return PTC_ERR_NO_MEMORY;
    FN(wino_outer_sources)(p, job.outer_out, job.outer_k, job.outer_src);
    job.in = in;
    job.w = w;
    job.bias = bias;
    job.out = out;
    job.kc = FN(block_len)(job.ca, KC_BYTES / (job.gk.nr * (int64_t)sizeof(REAL)));
    job.npanels = FN(ceil_div)(job.cb, job.gk.mr);

    double flops = 2.0 * job.npoints * (double)job.ntiles * (double)job.ca * (double)job.cb *
                   (double)p->groups;
    int nthreads = ptc_threads_for_work(flops);
    job.nb = FN(wino_block_tiles)(job.ntiles, p->groups, nthreads, job.gk.nr, job.gk.vlen,
                                  (double)(nv * nv * job.ca +
                                           (job.olen * job.olen + 1) * job.cb) *
                                      sizeof(REAL));
    job.nblocks = FN(ceil_div)(job.ntiles, job.nb);
    job.ldb = FN(leading_dim)(job.nb, job.gk.nr);
    job.a_pt = FN(wino_skewed)(job.npanels * job.gk.mr * job.ca);
    job.v_pt = FN(wino_skewed)(job.ca * job.ldb);
    job.acc_pt = FN(wino_skewed)(job.cb * job.ldb);
    job.v_elems = nv * nv * job.v_pt;
    job.m_elems = FN(round_up)(FN(round_up)(job.cb, job.gk.mr) * job.ldb, 64 / (int64_t)sizeof(REAL));
    /* and the tiles' offsets, bounds, runs and outer rows (5 nb int64) and
     * windows */
    job.scratch_elems = job.v_elems + job.m_elems + job.olen * job.olen * job.acc_pt +
                        FN(ceil_div)(job.nb * (int64_t)(5 * sizeof(int64_t) + sizeof(FN(wino_window))),
                                     (int64_t)sizeof(REAL));
    job.scratch_elems = FN(round_up)(job.scratch_elems, 64 / (int64_t)sizeof(REAL));

    /* The per-thread scratch from the calling thread's workspace, which is
     * kept between calls (fresh pages cost a fault each). */
    int64_t total;
    if (!ptc_mul_ok(job.scratch_elems, nthreads, &total) ||
        (uint64_t)total > (SIZE_MAX - 64) / sizeof(REAL)) {
        free(job.outer_src);
        return PTC_ERR_OVERFLOW;
    }
    char *raw = (char *)ptc_workspace_acquire(0, (size_t)total * sizeof(REAL) + 64);
    job.apack = FN(alloc)(p->groups * nu * nu * job.a_pt);
    ptc_status st = raw && job.apack ? PTC_OK : PTC_ERR_NO_MEMORY;
    if (st == PTC_OK) {
        job.scratch = (REAL *)(raw + (64 - (uintptr_t)raw % 64) % 64);
        st = ptc_parallel_for(p->groups * job.npanels, nthreads, FN(wino_weight_task), &job, opt);
    }
    if (st == PTC_OK)
        st = ptc_parallel_for(p->groups * job.nblocks, nthreads, FN(wino_task), &job, opt);
    free(job.apack);
    free(job.outer_src);
    if (raw) ptc_workspace_release(0);
    *fallback = st == PTC_OK && atomic_load(&job.nonfinite);
    return st;
}

/* ---- weight gradient ---------------------------------------------------- */

/* Bytes of the points of one chunk of tiles (of x and of dy), reduced over in
 * turn: bounded whatever the batch. */
#define WINO_CHUNK_BYTES (32.0 * 1024 * 1024)
#define WINO_POINT_TILES 32 /* tiles per task of the points' pass, at most */
#define WINO_FILTER_PANELS 8 /* weight-gradient rows per GEMM task, in panels */
/* dy's points along an axis are 3 distinct ones, dy0, dy0 + dy1 and dy1
 * (the rules' qmap): the A operands of the GEMMs are 9. */
#define WINO_DY_POINTS 9

typedef struct {
    const ptc_problem *p;
    FN(wino_kernels) gk;
    int64_t cin_g, cout_g, npanels, ldv, kc;
    FN(wino_axis) ay, ax;
    int64_t ntiles, t0, nt, chunk_tiles; /* all tiles; the chunk being reduced */
    int64_t v_pt, q_pt, u_pt;            /* elements per point of vt, qpack, du */
    const FN(wino_rule) *rule;           /* both axes' */
    int kind, npoints;                   /* of the forward's points (wino_axis_points) */
    const REAL *x, *dy;
    REAL *dw;
    REAL *vt;    /* x's points, [grp][point][tile][ldv] */
    REAL *qpack; /* dy's distinct points as A panels, [grp][9][panel][tile][mr] */
    REAL *du;    /* [grp][point][cout_g][ldv] */
    int64_t row_blocks;
    int64_t point_tasks; /* per group, of the chunk's points */
    atomic_int nonfinite;
} FN(wino_filter_job);

/* x's and dy's points of tiles [j0, j1) of the chunk, one group. */
static ptc_status FN(wino_filter_points_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(wino_filter_job) *job = (FN(wino_filter_job) *)vjob;
    const ptc_problem *p = job->p;
    int64_t nblk = job->point_tasks, per = FN(ceil_div)(job->nt, nblk);
    int64_t grp = t / nblk, j0 = (t % nblk) * per;
    int64_t j1 = FN(min64)(j0 + per, job->nt), mr = job->gk.mr, tc = job->chunk_tiles;
    int64_t per_image = job->ay.count * job->ax.count;
    int64_t H = p->in_size[0], W = p->in_size[1], OH = p->out_size[0], OW = p->out_size[1];
    int64_t cend = FN(round_up)(job->cin_g, job->gk.nr);
    REAL *vt = job->vt + grp * job->npoints * job->v_pt;
    REAL *qp = job->qpack + grp * WINO_DY_POINTS * job->q_pt;
    int64_t wlen = job->rule->wlen[0];
    /* Eight channels (one line of each point) at a time over the task's
     * tiles: the lines written fill at once, and the planes read stay in L1
     * (a tile at a time over all channels, neither did). */
    int64_t xoff[WINO_POINT_TILES], yoff[WINO_POINT_TILES], ny[WINO_POINT_TILES],
        nx[WINO_POINT_TILES];
    FN(wino_window) win[WINO_POINT_TILES];
    for (int64_t j = j0; j < j1; j++) {
        int64_t tt = job->t0 + j, n = tt / per_image, r = tt % per_image, l = j - j0;
        int64_t ty = r / job->ax.count, tx = r % job->ax.count;
        FN(wino_window_at)(&win[l], H, W, job->ay.w0 + ty * 4, job->ax.w0 + tx * 4, wlen);
        xoff[l] = (n * p->in_channels + grp * job->cin_g) * H * W;
        yoff[l] = (n * p->out_channels + grp * job->cout_g) * OH * OW + 2 * ty * OW + 2 * tx;
        ny[l] = FN(min64)(2, OH - 2 * ty);
        nx[l] = FN(min64)(2, OW - 2 * tx);
    }
    for (int64_t c0 = 0; c0 < cend; c0 += 8)
        for (int64_t j = j0; j < j1; j++) {
            int64_t l = j - j0;
            REAL *vj = vt + j * job->ldv;
            for (int64_t c = c0; c < c0 + 8 && c < cend; c++) {
                const REAL *plane = job->x + xoff[l] + c * H * W;
                if (c >= job->cin_g)
                    for (int pt = 0; pt < job->npoints; pt++) vj[pt * job->v_pt + c] = 0;
                else if (job->kind == 0) /* each kind with its own straight-line code */
                    FN(wino_window_points)(0, plane, W, &win[l], vj + c, job->v_pt);
                else
                    FN(wino_window_points)(2, plane, W, &win[l], vj + c, job->v_pt);
            }
        }
    /* dy's two by two outputs of each tile (zero past the edge) as the 9
     * distinct points, along an axis (dy0, dy0 + dy1, dy1); a panel of
     * channels at a time, as above */
    for (int64_t pi = 0; pi < job->npanels; pi++)
        for (int64_t j = j0; j < j1; j++) {
            int64_t l = j - j0;
            REAL *dst = qp + (pi * tc + j) * mr;
            for (int64_t i = 0; i < mr; i++) {
                int64_t co = pi * mr + i;
                /* written out: as loops, the compiler made calls of memcpy */
                const REAL *gc = job->dy + yoff[l] + FN(min64)(co, job->cout_g - 1) * OH * OW;
                int in = co < job->cout_g, wide = nx[l] > 1, tall = ny[l] > 1;
                REAL d00 = in ? gc[0] : 0, d01 = in && wide ? gc[1] : 0;
                REAL d10 = in && tall ? gc[OW] : 0, d11 = in && tall && wide ? gc[OW + 1] : 0;
                REAL r[2][3] = {{d00, d00 + d01, d01}, {d10, d10 + d11, d11}};
#pragma GCC unroll 3
                for (int b = 0; b < 3; b++) {
                    REAL *db = dst + i + b * job->q_pt;
                    db[0] = r[0][b];
                    db[3 * job->q_pt] = r[0][b] + r[1][b];
                    db[6 * job->q_pt] = r[1][b];
                }
            }
        }
    return PTC_OK;
}

/* dU[point] += Q[point] V[point]^T over the chunk's tiles, for a block of
 * rows (output channels) of one group and point. */
static ptc_status FN(wino_filter_gemm_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(wino_filter_job) *job = (FN(wino_filter_job) *)vjob;
    int64_t rb = t % job->row_blocks, gp = t / job->row_blocks; /* gp: group x point */
    int64_t mr = job->gk.mr, tc = job->chunk_tiles;
    int64_t p0 = rb * WINO_FILTER_PANELS, p1 = FN(min64)(p0 + WINO_FILTER_PANELS, job->npanels);
    int pt = (int)(gp % job->npoints), P = job->rule->points;
    const int8_t *qmap = job->rule->qmap;
    const REAL *a = job->qpack +
                    ((gp / job->npoints) * WINO_DY_POINTS + qmap[pt / P] * 3 + qmap[pt % P]) *
                        job->q_pt;
    const REAL *b = job->vt + gp * job->v_pt;
    REAL *c = job->du + gp * job->u_pt;
    for (int64_t k0 = 0; k0 < job->nt; k0 += job->kc) {
        int64_t kc = FN(min64)(job->kc, job->nt - k0);
        int flags = job->t0 > 0 || k0 > 0 ? PTC_TILE_ADD : 0;
        for (int64_t j0 = 0; j0 < job->cin_g; j0 += job->gk.nr) {
            int64_t ncols = FN(min64)(job->gk.nr, job->cin_g - j0);
            FN(kernel_fn) kern = FN(wino_kernel_for)(&job->gk, ncols);
            for (int64_t pi = p0; pi < p1; pi++)
                kern(kc, a + (pi * tc + k0) * mr, b + k0 * job->ldv + j0, job->ldv,
                     c + pi * mr * job->ldv + j0, job->ldv, flags,
                     FN(min64)(mr, job->cout_g - pi * mr), ncols);
        }
    }
    return PTC_OK;
}

/* One axis of dw = G^T dU G: each tap the sum of the dU of the points whose
 * weights hold it (3 taps: dw0 = dU0 + dU1, dw1 = dU3 + dU4, dw2 = dU1 +
 * dU2; 4 taps also dw3 = dU4 + dU5), from u[0], u[us], ... into d[0],
 * d[ds], ...: k a constant where it is called. */
static inline void FN(wino_axis_taps)(int k, const REAL *u, int64_t us, REAL *d, int64_t ds)
{
    REAL u1 = u[us];
    d[0] = u[0] + u1;
    d[ds] = u[3 * us] + u[4 * us];
    d[2 * ds] = u1 + u[2 * us];
    if (k == 4) d[3 * ds] = u[4 * us] + u[5 * us];
}

/* dw of one output channel's k x k kernels (k a constant where it is
 * called), along x then along y; non-zero when one is not finite. */
static inline int FN(wino_filter_out)(int k, const FN(wino_filter_job) *job, const REAL *u,
                                      REAL *dst)
{
    int P = k + 2; /* the rules' points */
    int64_t ps = job->u_pt;
    REAL fin = 0;
    for (int64_t ci = 0; ci < job->cin_g; ci++) {
        REAL s[WINO_MAX_AXIS][4], *d = dst + ci * k * k;
        for (int a = 0; a < P; a++) FN(wino_axis_taps)(k, u + a * P * ps + ci, ps, s[a], 1);
        for (int x = 0; x < k; x++) FN(wino_axis_taps)(k, &s[0][x], 4, d + x, k);
        for (int e = 0; e < k * k; e++) fin += d[e] * 0;
    }
    return fin != 0;
}

static ptc_status FN(wino_filter_out_task)(void *vjob, int64_t t, int tid, ptc_parallel *par)
{
    (void)tid;
    (void)par;
    FN(wino_filter_job) *job = (FN(wino_filter_job) *)vjob;
    int64_t grp = t / job->cout_g, co = t % job->cout_g, k = job->p->kernel[0];
    const REAL *u = job->du + grp * job->npoints * job->u_pt + co * job->ldv;
    REAL *dst = job->dw + (grp * job->cout_g + co) * job->cin_g * k * k;
    if (k == 3 ? FN(wino_filter_out)(3, job, u, dst) : FN(wino_filter_out)(4, job, u, dst))
        atomic_store(&job->nonfinite, 1);
    return PTC_OK;
}

/* Weight gradient by minimal filtering; *fallback as for wino_run. */
static ptc_status FN(wino_filter)(const ptc_problem *p, const REAL *x, const REAL *dy, REAL *dw,
                                  const ptc_options *opt, int *fallback)
{
    FN(wino_filter_job) job;
    memset(&job, 0, sizeof(job));
    job.p = p;
    job.gk = FN(wino_kernels_of_cpu)();
    job.cin_g = p->in_channels / p->groups;
    job.cout_g = p->out_channels / p->groups;
    job.npanels = FN(ceil_div)(job.cout_g, job.gk.mr);
    job.ldv = FN(leading_dim)(job.cin_g, job.gk.nr);
    job.kc = KC_BYTES / (job.gk.nr * (int64_t)sizeof(REAL));
    job.ay = FN(wino_axis_of)(0, p, 0);
    job.ax = FN(wino_axis_of)(0, p, 1);
    job.ntiles = p->batch * job.ay.count * job.ax.count;
    job.rule = &FN(wino_rules)[FN(wino_rule_index)(p)];
    job.kind = 2 * FN(wino_rule_index)(p);
    job.npoints = job.rule->points * job.rule->points;
    job.x = x;
    job.dy = dy;
    job.dw = dw;
    job.row_blocks = FN(ceil_div)(job.npanels, WINO_FILTER_PANELS);
    double per_tile = (double)p->groups *
                      (double)(job.npoints * job.ldv + WINO_DY_POINTS * job.npanels * job.gk.mr) *
                      sizeof(REAL);
    int64_t tc = (int64_t)(WINO_CHUNK_BYTES / per_tile);
    if (tc < WINO_POINT_TILES) tc = WINO_POINT_TILES;
    job.chunk_tiles = tc = FN(min64)(tc, job.ntiles);
    job.v_pt = FN(wino_skewed)(tc * job.ldv);
    job.q_pt = FN(wino_skewed)(job.npanels * tc * job.gk.mr);
    job.u_pt = FN(wino_skewed)(job.cout_g * job.ldv);

    double flops = 2.0 * job.npoints * (double)job.ntiles * (double)job.cin_g *
                   (double)job.cout_g * (double)p->groups;
    int nthreads = ptc_threads_for_work(flops);
    /* The points of a chunk and dU from the calling thread's workspace: kept
     * between calls, where fresh pages would cost a fault each. Every element
     * read is written first (dU by its first chunk). */
    int64_t gpts = p->groups * job.npoints, g9 = p->groups * WINO_DY_POINTS;
    int64_t align = 64 / (int64_t)sizeof(REAL);
    double elems = (double)gpts * (double)(job.v_pt + job.u_pt) + (double)g9 * (double)job.q_pt;
    if ((elems + (double)align) * sizeof(REAL) > (double)(SIZE_MAX / 2)) return PTC_ERR_OVERFLOW;
    char *raw = (char *)ptc_workspace_acquire(
        0, (size_t)(gpts * (job.v_pt + job.u_pt) + g9 * job.q_pt + align) * sizeof(REAL));
    if (!raw) return PTC_ERR_NO_MEMORY;
    job.vt = (REAL *)(raw + (64 - (uintptr_t)raw % 64) % 64);
    job.qpack = job.vt + gpts * job.v_pt;
    job.du = job.qpack + g9 * job.q_pt;
    ptc_status st = PTC_OK;
    for (job.t0 = 0; st == PTC_OK && job.t0 < job.ntiles; job.t0 += tc) {
        job.nt = FN(min64)(tc, job.ntiles - job.t0);
        /* tasks of equal sizes, as many as a multiple of the thread count
         * (the points do not depend on how the tiles are split) */
        job.point_tasks = FN(ceil_div)(job.nt, WINO_POINT_TILES);
        if (p->groups == 1) job.point_tasks = FN(round_up)(job.point_tasks, nthreads);
        job.point_tasks = FN(ceil_div)(job.nt, FN(ceil_div)(job.nt, job.point_tasks));
        st = ptc_parallel_for(p->groups * job.point_tasks, nthreads, FN(wino_filter_points_task),
                              &job, opt);
        if (st == PTC_OK)
            st = ptc_parallel_for(gpts * job.row_blocks, nthreads, FN(wino_filter_gemm_task),
                                  &job, opt);
    }
    if (st == PTC_OK)
        st = ptc_parallel_for(p->groups * job.cout_g, nthreads, FN(wino_filter_out_task), &job,
                              opt);
    ptc_workspace_release(0);
    *fallback = st == PTC_OK && atomic_load(&job.nonfinite);
    return st;
}
