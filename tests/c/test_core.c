/*
 * C-level test driver for the pytconv core, meant to run under AddressSanitizer
 * and UndefinedBehaviorSanitizer (scripts/sanitize.sh) but correct without them.
 *
 * Every primitive of pytconv.h is compared with a direct evaluation of its
 * definition over many random problems:
 *
 *     y[n, co, o]     = bias[co] + sum_{ci in group(co), k} w[co, ci, k] * xpad[n, ci, o * s + k * dl]
 *     dx              = the adjoint of the map x -> y above (bias excluded)
 *     dw[co, ci, k]   = sum_{n, o} dy[n, co, o] * xpad[n, ci, o * s + k * dl]
 *     db[c]           = sum_{n, o} dy[n, c, o]
 *
 * where xpad is x padded by pad_low/pad_high with the problem's padding mode.
 * The reference sums in long double and counts the terms of each element, so
 * the tolerance is the classical bound of a floating-point sum: 2 * (terms + 2)
 * * unit roundoff * sum of |terms|. Outputs are pre-filled with NaN, so an
 * element the core leaves unwritten fails too. Arrays are separate heap blocks
 * of exactly their size, so a sanitizer sees any access outside them.
 *
 * Also checked: bitwise equality between 1 and 2 threads, invalid problems
 * (an error status, never an access to the NULL arrays passed with them), and
 * interruption through ptc_options.should_stop.
 *
 * Usage: test_core [--cases N] [--seed S] [--verbose]
 * Prints "N passed, M failed" last; exits 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include "pytconv.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long passed, failed;
static int verbose;

/* ---- random numbers (splitmix64: reproducible on every platform) -------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform integer in [lo, hi]. */
static int64_t rnd(int64_t lo, int64_t hi)
{
    if (hi <= lo) return lo;
    return lo + (int64_t)(rng_next() % (uint64_t)(hi - lo + 1));
}

/* Uniform in [-1, 1), exactly representable in float32. */
static double rnd_value(void) { return (double)(int32_t)(rng_next() >> 40) / (double)(1 << 23); }

/* ---- reporting ----------------------------------------------------------- */

static const char *mode_name(ptc_padding_mode m)
{
    switch (m) {
    case PTC_PAD_ZEROS: return "zeros";
    case PTC_PAD_REFLECT: return "reflect";
    case PTC_PAD_REPLICATE: return "replicate";
    case PTC_PAD_CIRCULAR: return "circular";
    }
    return "?";
}

static void describe(const ptc_problem *p, char *buf, size_t len)
{
    int at = snprintf(buf, len, "ndim=%d batch=%lld cin=%lld cout=%lld groups=%lld mode=%s", p->ndim,
                      (long long)p->batch, (long long)p->in_channels, (long long)p->out_channels,
                      (long long)p->groups, mode_name(p->padding_mode));
    static const char *names[] = {"in", "out", "k", "s", "dl", "lo", "hi"};
    const int64_t *fields[] = {p->in_size, p->out_size, p->kernel, p->stride,
                               p->dilation, p->pad_low, p->pad_high};
    for (int f = 0; f < 7 && at > 0 && (size_t)at < len; f++) {
        at += snprintf(buf + at, len - (size_t)at, " %s=(", names[f]);
        for (int d = 0; d < p->ndim && d < 8 && (size_t)at < len; d++)
            at += snprintf(buf + at, len - (size_t)at, d ? ",%lld" : "%lld", (long long)fields[f][d]);
        if ((size_t)at < len) at += snprintf(buf + at, len - (size_t)at, ")");
    }
}

static void fail(const ptc_problem *p, const char *fmt, ...)
{
    char desc[1024] = "";
    if (p) describe(p, desc, sizeof desc);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s%s\n", p ? "\n      problem: " : "", desc);
    failed++;
}

static void check(int ok, const ptc_problem *p, const char *fmt, ...)
{
    if (ok) {
        passed++;
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(p, "%s", msg);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- typed buffers --------------------------------------------------------- */

/* An array of n elements in the dtype under test, with a double copy of its
 * values for the reference. */
typedef struct {
    int64_t n;
    ptc_dtype dtype;
    void *data;     /* exactly n elements (malloc(0) for n == 0) */
    double *values; /* the same values as doubles */
} array;

static void array_alloc(array *a, int64_t n, ptc_dtype dtype)
{
    size_t elem = dtype == PTC_FLOAT32 ? sizeof(float) : sizeof(double);
    a->n = n;
    a->dtype = dtype;
    a->data = malloc((size_t)n * elem);
    a->values = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!a->data || !a->values) {
        fprintf(stderr, "test_core: out of memory for %lld elements\n", (long long)n);
        exit(2);
    }
}

static void array_random(array *a, int64_t n, ptc_dtype dtype)
{
    array_alloc(a, n, dtype);
    for (int64_t i = 0; i < n; i++) {
        double v = rnd_value();
        a->values[i] = v;
        if (dtype == PTC_FLOAT32)
            ((float *)a->data)[i] = (float)v;
        else
            ((double *)a->data)[i] = v;
    }
}

static void array_fill_nan(array *a)
{
    for (int64_t i = 0; i < a->n; i++) {
        if (a->dtype == PTC_FLOAT32)
            ((float *)a->data)[i] = NAN;
        else
            ((double *)a->data)[i] = NAN;
    }
}

static double array_get(const array *a, int64_t i)
{
    return a->dtype == PTC_FLOAT32 ? (double)((const float *)a->data)[i] : ((const double *)a->data)[i];
}

static void array_free(array *a)
{
    free(a->data);
    free(a->values);
    a->data = NULL;
    a->values = NULL;
}

static int same_bits(const array *a, const array *b)
{
    size_t elem = a->dtype == PTC_FLOAT32 ? sizeof(float) : sizeof(double);
    return a->n == b->n && (a->n == 0 || memcmp(a->data, b->data, (size_t)a->n * elem) == 0);
}

/* ---- the reference --------------------------------------------------------- */

static int64_t volume(const int64_t *sizes, int nd)
{
    int64_t v = 1;
    for (int d = 0; d < nd; d++) v *= sizes[d];
    return v;
}

/* Input coordinate that padded coordinate i (relative to the first input
 * element) reads, or -1 for a zero of the padding. Reflect and circular
 * repeat periodically, so pads wider than the input are defined too. */
static int64_t source_index(ptc_padding_mode mode, int64_t i, int64_t size)
{
    if (i >= 0 && i < size) return i;
    switch (mode) {
    case PTC_PAD_ZEROS: return -1;
    case PTC_PAD_REPLICATE: return i < 0 ? 0 : size - 1;
    case PTC_PAD_CIRCULAR: return ((i % size) + size) % size;
    case PTC_PAD_REFLECT: {
        if (size == 1) return 0;
        int64_t period = 2 * size - 2, m = ((i % period) + period) % period;
        return m < size ? m : period - m;
    }
    }
    return -1;
}

/* taps[o * kvol + k]: the flat input position that output position o reads
 * through kernel offset k, or -1 (a zero of the padding). */
static int64_t *tap_table(const ptc_problem *p, int64_t out_vol, int64_t kvol)
{
    int nd = p->ndim;
    int64_t *taps = malloc((size_t)(out_vol * kvol) * sizeof(int64_t));
    if (!taps) exit(2);
    for (int64_t o = 0; o < out_vol; o++)
        for (int64_t k = 0; k < kvol; k++) {
            int64_t orest = o, krest = k, flat = 0, scale = 1;
            for (int d = nd - 1; d >= 0; d--) {
                int64_t od = orest % p->out_size[d], kd = krest % p->kernel[d];
                orest /= p->out_size[d];
                krest /= p->kernel[d];
                int64_t i = source_index(p->padding_mode,
                                         od * p->stride[d] + kd * p->dilation[d] - p->pad_low[d],
                                         p->in_size[d]);
                if (i < 0) {
                    flat = -1;
                    break;
                }
                flat += i * scale;
                scale *= p->in_size[d];
            }
            taps[o * kvol + k] = flat;
        }
    return taps;
}

/* Expected values: exact sum, sum of |terms| and number of terms per element. */
typedef struct {
    int64_t n;
    long double *sum, *abs_sum;
    int64_t *terms;
} expected;

static void expected_alloc(expected *e, int64_t n)
{
    e->n = n;
    e->sum = calloc((size_t)(n > 0 ? n : 1), sizeof(long double));
    e->abs_sum = calloc((size_t)(n > 0 ? n : 1), sizeof(long double));
    e->terms = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t));
    if (!e->sum || !e->abs_sum || !e->terms) exit(2);
}

static void expected_free(expected *e)
{
    free(e->sum);
    free(e->abs_sum);
    free(e->terms);
}

static void add_term(expected *e, int64_t i, long double t)
{
    e->sum[i] += t;
    e->abs_sum[i] += fabsl(t);
    e->terms[i]++;
}

/* The three convolution references, on the double copies of the arrays. */
typedef enum { FORWARD, BACKWARD_DATA, BACKWARD_FILTER } primitive;

static const char *primitive_name(primitive prim)
{
    return prim == FORWARD ? "ptc_conv_forward"
           : prim == BACKWARD_DATA ? "ptc_conv_backward_data" : "ptc_conv_backward_filter";
}

/* a: x (forward, filter) or dy (data); b: w (forward, data) or dy (filter). */
static void reference(const ptc_problem *p, primitive prim, const double *a, const double *b,
                      const double *bias, expected *e)
{
    int64_t in_vol = volume(p->in_size, p->ndim), out_vol = volume(p->out_size, p->ndim);
    int64_t kvol = volume(p->kernel, p->ndim);
    int64_t cin_g = p->in_channels / p->groups, cout_g = p->out_channels / p->groups;
    int64_t *taps = tap_table(p, out_vol, kvol);
    if (prim == FORWARD && bias)
        for (int64_t n = 0; n < p->batch; n++)
            for (int64_t co = 0; co < p->out_channels; co++)
                for (int64_t o = 0; o < out_vol; o++)
                    add_term(e, (n * p->out_channels + co) * out_vol + o, bias[co]);
    for (int64_t n = 0; n < p->batch; n++)
        for (int64_t co = 0; co < p->out_channels; co++) {
            int64_t grp = co / cout_g;
            for (int64_t cig = 0; cig < cin_g; cig++) {
                int64_t ci = grp * cin_g + cig;
                for (int64_t o = 0; o < out_vol; o++)
                    for (int64_t k = 0; k < kvol; k++) {
                        int64_t i = taps[o * kvol + k];
                        if (i < 0) continue;
                        int64_t xi = (n * p->in_channels + ci) * in_vol + i;
                        int64_t yi = (n * p->out_channels + co) * out_vol + o;
                        int64_t wi = (co * cin_g + cig) * kvol + k;
                        if (prim == FORWARD)
                            add_term(e, yi, (long double)b[wi] * a[xi]);
                        else if (prim == BACKWARD_DATA)
                            add_term(e, xi, (long double)b[wi] * a[yi]);
                        else
                            add_term(e, wi, (long double)b[yi] * a[xi]);
                    }
            }
        }
    free(taps);
}

/* Compares got with the expected sums; returns the number of bad elements
 * and reports the first. */
static int64_t compare(const ptc_problem *p, const char *what, const array *got, const expected *e)
{
    double u = got->dtype == PTC_FLOAT32 ? 0x1p-24 : 0x1p-53;
    int64_t bad = 0;
    for (int64_t i = 0; i < got->n; i++) {
        double v = array_get(got, i);
        long double tol = 2.0L * (long double)(e->terms[i] + 2) * u * e->abs_sum[i];
        long double err = fabsl((long double)v - e->sum[i]);
        if (!(err <= tol)) { /* NaN fails too */
            if (!bad)
                fail(p, "%s (%s): element %lld is %.17g, expected %.17Lg (tolerance %.3Lg)", what,
                     got->dtype == PTC_FLOAT32 ? "float32" : "float64", (long long)i, v, e->sum[i],
                     tol);
            bad++;
        }
    }
    if (bad) fprintf(stderr, "      %lld of %lld elements wrong\n", (long long)bad, (long long)got->n);
    return bad;
}

/* ---- random problems ------------------------------------------------------- */

typedef struct {
    int max_ndim;
    int64_t max_size;     /* per spatial dimension, 1-d */
    int64_t max_channels; /* per group */
    int64_t max_groups, max_batch, max_kernel, max_stride, max_dilation, max_pad;
} problem_limits;

static const problem_limits SMALL = {4, 12, 3, 3, 2, 4, 3, 3, 3};

static void random_problem(ptc_problem *p, const problem_limits *lim)
{
    for (;;) {
        memset(p, 0, sizeof *p);
        p->ndim = (int)rnd(1, lim->max_ndim);
        /* Keep the volume small: sizes shrink with the number of dimensions. */
        int64_t max_size = p->ndim == 1 ? lim->max_size : p->ndim == 2 ? (lim->max_size + 1) / 2 + 1
                                                                        : (lim->max_size + 3) / 4 + 1;
        p->groups = rnd(1, lim->max_groups);
        p->in_channels = p->groups * rnd(1, lim->max_channels);
        p->out_channels = p->groups * rnd(1, lim->max_channels);
        p->batch = rnd(0, 9) == 0 ? 0 : rnd(1, lim->max_batch);
        p->padding_mode = (ptc_padding_mode)rnd(0, 3);
        int ok = 1;
        for (int d = 0; d < p->ndim; d++) {
            int64_t in = rnd(1, max_size);
            p->in_size[d] = in;
            p->kernel[d] = rnd(1, p->ndim <= 2 ? lim->max_kernel : 3);
            p->stride[d] = rnd(1, lim->max_stride);
            p->dilation[d] = rnd(1, lim->max_dilation);
            int64_t max_pad = lim->max_pad;
            if (p->padding_mode == PTC_PAD_REFLECT && max_pad > in - 1) max_pad = in - 1;
            if (p->padding_mode == PTC_PAD_CIRCULAR && max_pad > in) max_pad = in;
            p->pad_low[d] = rnd(0, max_pad);
            p->pad_high[d] = rnd(0, max_pad);
            int64_t m = ptc_max_out_size(p, d);
            if (m < 1) {
                ok = 0;
                break;
            }
            /* Mostly the largest output; sometimes a smaller one (as a
             * transposed convolution with output_padding asks for). */
            p->out_size[d] = rnd(0, 2) ? m : rnd(1, m);
        }
        if (ok) return;
    }
}

/* A problem of 5..40 MFLOP: enough for the core to use two threads, and to
 * cut the work into several tiles and blocks along every axis: either many
 * output positions, or many channels (patch rows) on fewer positions. */
static void medium_problem(ptc_problem *p)
{
    memset(p, 0, sizeof *p);
    p->ndim = (int)rnd(1, 3);
    p->batch = rnd(1, 2);
    p->groups = rnd(1, 2);
    int wide = (int)rnd(0, 1);
    p->in_channels = p->groups * (wide ? rnd(24, 40) : rnd(8, 16));
    p->out_channels = p->groups * (wide ? rnd(24, 40) : rnd(8, 16));
    p->padding_mode = (ptc_padding_mode)rnd(0, 3);
    /* About 4000 (or, wide, 600) output positions and 9 kernel offsets
     * whatever the rank. */
    static const int64_t long_sizes[3][2] = {{3000, 5000}, {50, 70}, {14, 18}};
    static const int64_t wide_sizes[3][2] = {{400, 800}, {20, 28}, {7, 10}};
    const int64_t(*sizes)[2] = wide ? wide_sizes : long_sizes;
    static const int64_t kernels[3][2] = {{7, 11}, {3, 3}, {2, 2}};
    for (int d = 0; d < p->ndim; d++) {
        p->in_size[d] = rnd(sizes[p->ndim - 1][0], sizes[p->ndim - 1][1]);
        p->kernel[d] = rnd(kernels[p->ndim - 1][0], kernels[p->ndim - 1][1]);
        p->stride[d] = rnd(1, 2) == 2 && d == 0 ? 2 : 1;
        p->dilation[d] = rnd(1, 2);
        p->pad_low[d] = rnd(0, 3);
        p->pad_high[d] = rnd(0, 3);
        p->out_size[d] = ptc_max_out_size(p, d);
    }
}

/* A strided 2-d problem with many channels and few positions (some 20-60
 * MFLOP), whose weight gradient runs as a GEMM on packed panels of the
 * patches and a transposed dY (conv_template.h: filter_gemm_ok). */
static void deep_problem(ptc_problem *p)
{
    memset(p, 0, sizeof *p);
    p->ndim = 2;
    p->batch = rnd(1, 2);
    p->groups = 1;
    p->in_channels = rnd(64, 80);
    p->out_channels = rnd(250, 280);
    p->padding_mode = (ptc_padding_mode)rnd(0, 3);
    for (int d = 0; d < 2; d++) {
        p->in_size[d] = rnd(9, 14);
        p->kernel[d] = 3;
        p->stride[d] = 2;
        p->dilation[d] = 1;
        p->pad_low[d] = rnd(0, 1);
        p->pad_high[d] = rnd(0, 1);
        p->out_size[d] = ptc_max_out_size(p, d);
    }
}

/* A 3x3 or 4x4 stride-2 problem of about 100 channels on both sides and 256
 * tiles of 2x2 outputs or more (some 100-200 MFLOP a pass), which all three
 * passes run by minimal filtering (winograd_template.h: wino_ok); or a 3-d
 * one, 3x3 at stride 1 in its last two dimensions, whose forward and input
 * gradient (a flipped forward) do, the first dimension summed directly. */
static void minimal_filtering_problem(ptc_problem *p, int64_t k, int64_t stride)
{
    memset(p, 0, sizeof *p);
    p->ndim = stride == 1 ? 3 : 2;
    p->batch = 2;
    p->groups = 1;
    p->in_channels = stride == 1 ? rnd(32, 40) : rnd(96, 104);
    p->out_channels = stride == 1 ? rnd(32, 40) : rnd(96, 104);
    p->padding_mode = (ptc_padding_mode)rnd(0, 3);
    for (int d = 0; d < p->ndim; d++) {
        int outer = d < p->ndim - 2;
        p->in_size[d] = outer ? rnd(3, 5) : stride == 1 ? rnd(24, 28) : rnd(48, 52);
        p->kernel[d] = outer ? rnd(1, 3) : k;
        p->stride[d] = outer ? 1 : stride;
        p->dilation[d] = 1;
        p->pad_low[d] = rnd(0, 2);
        p->pad_high[d] = rnd(0, 2);
        p->out_size[d] = ptc_max_out_size(p, d);
    }
}

/* A 1-d problem whose kernel spans J = 2 or 4 strides, 128 or more rows of
 * the polyphase view and output channels, and 16 tiles or more, which all
 * three passes run by minimal filtering (polyphase_template.h: poly_ok). */
static void polyphase_problem(ptc_problem *p, int64_t J)
{
    memset(p, 0, sizeof *p);
    p->ndim = 1;
    p->batch = 2;
    p->groups = rnd(1, 2);
    p->in_channels = p->groups * rnd(1, 2);
    p->out_channels = p->groups * rnd(128, 136);
    p->padding_mode = (ptc_padding_mode)rnd(0, 3);
    p->stride[0] = 128;
    p->kernel[0] = J * 128;
    p->dilation[0] = 1;
    p->in_size[0] = rnd(2600, 3000);
    p->pad_low[0] = rnd(0, 130);
    p->pad_high[0] = rnd(0, 130);
    p->out_size[0] = ptc_max_out_size(p, 0);
}

/* A pointwise (1x1, stride 1, unpadded) problem with channels enough on
 * both sides that its weight gradient runs on the GEMM tiles
 * (conv_template.h: pointwise_filter_ok), over several chunks of positions. */
static void pointwise_problem(ptc_problem *p)
{
    memset(p, 0, sizeof *p);
    p->ndim = 2;
    p->batch = 2;
    p->groups = rnd(1, 2);
    p->in_channels = p->groups * rnd(100, 140);
    p->out_channels = p->groups * rnd(100, 140);
    for (int d = 0; d < 2; d++) {
        p->stride[d] = p->kernel[d] = p->dilation[d] = 1;
        p->in_size[d] = p->out_size[d] = rnd(30, 40);
    }
}

/* ---- one problem through every primitive ----------------------------------- */

typedef struct {
    ptc_problem p;
    array x, w, bias, dy;
    int with_bias;
} instance;

static void instance_make(instance *t, const ptc_problem *p, ptc_dtype dtype)
{
    t->p = *p;
    int64_t in_vol = volume(p->in_size, p->ndim), out_vol = volume(p->out_size, p->ndim);
    int64_t kvol = volume(p->kernel, p->ndim);
    array_random(&t->x, p->batch * p->in_channels * in_vol, dtype);
    array_random(&t->w, p->out_channels * (p->in_channels / p->groups) * kvol, dtype);
    array_random(&t->bias, p->out_channels, dtype);
    array_random(&t->dy, p->batch * p->out_channels * out_vol, dtype);
    t->with_bias = (int)rnd(0, 1);
}

static void instance_free(instance *t)
{
    array_free(&t->x);
    array_free(&t->w);
    array_free(&t->bias);
    array_free(&t->dy);
}

static ptc_status run_primitive(const instance *t, primitive prim, array *out, const ptc_options *opt)
{
    const ptc_problem *p = &t->p;
    ptc_dtype dt = t->x.dtype;
    if (prim == FORWARD)
        return ptc_conv_forward(p, dt, t->x.data, t->w.data, t->with_bias ? t->bias.data : NULL,
                                out->data, opt);
    if (prim == BACKWARD_DATA) return ptc_conv_backward_data(p, dt, t->dy.data, t->w.data, out->data, opt);
    return ptc_conv_backward_filter(p, dt, t->x.data, t->dy.data, out->data, opt);
}

static int64_t output_size(const instance *t, primitive prim)
{
    return prim == FORWARD ? t->dy.n : prim == BACKWARD_DATA ? t->x.n : t->w.n;
}

/* Runs prim with `threads` threads into a fresh NaN-filled array and, if
 * asked, checks it against the reference; the result is left in *out for
 * bitwise comparisons. Returns 0 if the call failed. */
static int run_and_check(const instance *t, primitive prim, int threads, int with_reference, array *out)
{
    const ptc_problem *p = &t->p;
    array_alloc(out, output_size(t, prim), t->x.dtype);
    array_fill_nan(out);
    ptc_set_num_threads(threads);
    ptc_status st = run_primitive(t, prim, out, NULL);
    if (st != PTC_OK) {
        fail(p, "%s returned %d (%s) on a valid problem", primitive_name(prim), (int)st,
             ptc_status_message(st));
        return 0;
    }
    if (!with_reference) return 1;
    expected e;
    expected_alloc(&e, out->n);
    if (prim == FORWARD)
        reference(p, prim, t->x.values, t->w.values, t->with_bias ? t->bias.values : NULL, &e);
    else if (prim == BACKWARD_DATA)
        reference(p, prim, t->dy.values, t->w.values, NULL, &e);
    else
        reference(p, prim, t->x.values, t->dy.values, NULL, &e);
    char what[96];
    snprintf(what, sizeof what, "%s, %d thread%s", primitive_name(prim), threads, threads > 1 ? "s" : "");
    int ok = compare(p, what, out, &e) == 0;
    if (ok) passed++;
    expected_free(&e);
    return ok;
}

static void check_bias_backward(const instance *t)
{
    const ptc_problem *p = &t->p;
    int64_t out_vol = volume(p->out_size, p->ndim);
    array db;
    array_alloc(&db, p->out_channels, t->x.dtype);
    array_fill_nan(&db);
    ptc_status st = ptc_bias_backward(p->batch, p->out_channels, out_vol, t->x.dtype, t->dy.data, db.data);
    if (st != PTC_OK) {
        fail(p, "ptc_bias_backward returned %d (%s)", (int)st, ptc_status_message(st));
    } else {
        expected e;
        expected_alloc(&e, db.n);
        for (int64_t n = 0; n < p->batch; n++)
            for (int64_t c = 0; c < p->out_channels; c++)
                for (int64_t o = 0; o < out_vol; o++)
                    add_term(&e, c, t->dy.values[(n * p->out_channels + c) * out_vol + o]);
        if (compare(p, "ptc_bias_backward", &db, &e) == 0) passed++;
        expected_free(&e);
    }
    array_free(&db);
}

/* Every primitive on one problem and dtype, with 1 thread and, where asked,
 * 2 threads (which must give the same bits). */
static void check_problem(const ptc_problem *p, ptc_dtype dtype, int two_threads)
{
    instance t;
    instance_make(&t, p, dtype);
    for (int prim = FORWARD; prim <= BACKWARD_FILTER; prim++) {
        array one, two;
        /* The 2-thread result is checked against the verified 1-thread one. */
        if (run_and_check(&t, (primitive)prim, 1, 1, &one) && two_threads) {
            if (run_and_check(&t, (primitive)prim, 2, 0, &two))
                check(same_bits(&one, &two), p, "%s: 1 and 2 threads give different bits",
                      primitive_name((primitive)prim));
            array_free(&two);
        }
        array_free(&one);
    }
    check_bias_backward(&t);
    instance_free(&t);
    if (verbose) {
        char desc[1024];
        describe(p, desc, sizeof desc);
        printf("ok %s %s\n", dtype == PTC_FLOAT32 ? "float32" : "float64", desc);
    }
}

/* ---- invalid problems ------------------------------------------------------- */

/* Every primitive on p with NULL arrays: the problem must be rejected before
 * any array is touched, with status `want` (for want < 0: INVALID_ARGUMENT or
 * OVERFLOW, where either describes the problem). */
static void check_rejected(const ptc_problem *p, int want, const char *why)
{
    ptc_status got[4];
    got[0] = ptc_problem_check(p);
    got[1] = ptc_conv_forward(p, PTC_FLOAT32, NULL, NULL, NULL, NULL, NULL);
    got[2] = ptc_conv_backward_data(p, PTC_FLOAT64, NULL, NULL, NULL, NULL);
    got[3] = ptc_conv_backward_filter(p, PTC_FLOAT32, NULL, NULL, NULL, NULL);
    for (int i = 0; i < 4; i++) {
        int ok = want >= 0 ? got[i] == (ptc_status)want
                           : got[i] == PTC_ERR_INVALID_ARGUMENT || got[i] == PTC_ERR_OVERFLOW;
        static const char *fns[] = {"ptc_problem_check", "ptc_conv_forward", "ptc_conv_backward_data",
                                    "ptc_conv_backward_filter"};
        check(ok, p, "%s accepted an invalid problem (%s): status %d (%s)", fns[i], why, (int)got[i],
              ptc_status_message(got[i]));
    }
}

static void base_problem(ptc_problem *p)
{
    memset(p, 0, sizeof *p);
    p->ndim = 2;
    p->batch = 2;
    p->in_channels = 4;
    p->out_channels = 6;
    p->groups = 2;
    for (int d = 0; d < 2; d++) {
        p->in_size[d] = 5;
        p->kernel[d] = 3;
        p->stride[d] = 1;
        p->dilation[d] = 1;
        p->pad_low[d] = p->pad_high[d] = 1;
        p->out_size[d] = 5;
    }
    p->padding_mode = PTC_PAD_ZEROS;
}

static void check_invalid_problems(void)
{
    ptc_problem p;
    const int INVALID = PTC_ERR_INVALID_ARGUMENT, OVERFLOW = PTC_ERR_OVERFLOW, EITHER = -1;

    base_problem(&p);
    check(ptc_problem_check(&p) == PTC_OK, &p, "the base problem of the invalid-problem tests is invalid");
    check(ptc_problem_check(NULL) == PTC_ERR_INVALID_ARGUMENT, NULL, "ptc_problem_check(NULL) accepted");

#define MUTATE(stmt, want, why) \
    do {                        \
        base_problem(&p);       \
        stmt;                   \
        check_rejected(&p, want, why); \
    } while (0)

    MUTATE(p.ndim = 0, INVALID, "ndim 0");
    MUTATE(p.ndim = -3, INVALID, "negative ndim");
    MUTATE(p.ndim = PTC_MAX_NDIM + 1, INVALID, "ndim above PTC_MAX_NDIM");
    MUTATE(p.batch = -1, INVALID, "negative batch");
    MUTATE(p.in_channels = 0, INVALID, "no input channels");
    MUTATE(p.out_channels = 0, INVALID, "no output channels");
    MUTATE(p.in_channels = -4, INVALID, "negative input channels");
    MUTATE(p.groups = 0, INVALID, "groups 0");
    MUTATE(p.groups = -2, INVALID, "negative groups");
    MUTATE(p.groups = 3, INVALID, "groups not dividing the channels");
    MUTATE(p.in_channels = 5, INVALID, "input channels not divisible by groups");
    MUTATE(p.padding_mode = (ptc_padding_mode)4, INVALID, "unknown padding mode");
    MUTATE(p.padding_mode = (ptc_padding_mode)-1, INVALID, "negative padding mode");
    for (int d = 0; d < 2; d++) {
        MUTATE(p.in_size[d] = 0, INVALID, "empty input");
        MUTATE(p.in_size[d] = -5, INVALID, "negative input size");
        MUTATE(p.out_size[d] = 0, INVALID, "empty output");
        MUTATE(p.out_size[d] = 6, INVALID, "output larger than the padded input allows");
        MUTATE(p.kernel[d] = 0, INVALID, "empty kernel");
        MUTATE(p.kernel[d] = 8, INVALID, "kernel larger than the padded input");
        MUTATE(p.stride[d] = 0, INVALID, "stride 0");
        MUTATE(p.stride[d] = -1, INVALID, "negative stride");
        MUTATE(p.dilation[d] = 0, INVALID, "dilation 0");
        MUTATE(p.dilation[d] = 4, INVALID, "dilated kernel larger than the padded input");
        MUTATE(p.pad_low[d] = -1, INVALID, "negative pad_low");
        MUTATE(p.pad_high[d] = -1, INVALID, "negative pad_high");
        MUTATE(p.in_size[d] = INT64_MAX, EITHER, "input size INT64_MAX");
        MUTATE(p.kernel[d] = INT64_MAX, EITHER, "kernel INT64_MAX");
        MUTATE(p.dilation[d] = INT64_MAX, EITHER, "dilation INT64_MAX");
        MUTATE(p.stride[d] = INT64_MAX, EITHER, "stride INT64_MAX with output 5");
        MUTATE((p.pad_low[d] = INT64_MAX, p.pad_high[d] = INT64_MAX), EITHER, "pads INT64_MAX");
        MUTATE((p.pad_low[d] = INT64_MAX / 2, p.pad_high[d] = INT64_MAX / 2, p.out_size[d] = 1), EITHER,
               "pads summing past INT64_MAX");
        MUTATE((p.kernel[d] = (int64_t)1 << 32, p.dilation[d] = (int64_t)1 << 32), EITHER,
               "dilation * kernel past INT64_MAX");
    }
    /* Sizes each fine alone whose products overflow. */
    MUTATE((p.in_size[0] = p.in_size[1] = (int64_t)1 << 33, p.out_size[0] = p.out_size[1] = 1,
            p.kernel[0] = p.kernel[1] = 1, p.pad_low[0] = p.pad_low[1] = 0,
            p.pad_high[0] = p.pad_high[1] = 0),
           OVERFLOW, "input volume 2**66");
    MUTATE((p.in_size[0] = (int64_t)1 << 31, p.in_size[1] = (int64_t)1 << 29, p.kernel[0] = p.kernel[1] = 1,
            p.out_size[0] = p.out_size[1] = 1, p.pad_low[0] = p.pad_low[1] = 0,
            p.pad_high[0] = p.pad_high[1] = 0),
           OVERFLOW, "input bytes past INT64_MAX (2**60 elements of 8 bytes)");
    MUTATE((p.in_channels = p.groups = (int64_t)1 << 31, p.out_channels = (int64_t)1 << 31, p.batch = 1 << 30),
           OVERFLOW, "batch * channels * spatial past INT64_MAX");
    MUTATE((p.in_channels = (int64_t)1 << 31, p.out_channels = (int64_t)1 << 31, p.groups = 1,
            p.batch = 1),
           OVERFLOW, "weight volume past INT64_MAX");
    MUTATE((p.ndim = PTC_MAX_NDIM, p.batch = 1), INVALID, "62 dimensions, most of size 0");
    {
        /* 62 dimensions of size 2: 2**62 elements, 2**65 bytes. */
        base_problem(&p);
        p.ndim = PTC_MAX_NDIM;
        p.batch = p.in_channels = p.out_channels = p.groups = 1;
        for (int d = 0; d < PTC_MAX_NDIM; d++) {
            p.in_size[d] = 2;
            p.out_size[d] = p.kernel[d] = p.stride[d] = p.dilation[d] = 1;
            p.pad_low[d] = p.pad_high[d] = 0;
        }
        check_rejected(&p, OVERFLOW, "62 dimensions of size 2");
    }

    /* An invalid dtype with a valid problem. */
    base_problem(&p);
    {
        ptc_dtype bad = (ptc_dtype)2;
        check(ptc_conv_forward(&p, bad, NULL, NULL, NULL, NULL, NULL) == PTC_ERR_INVALID_ARGUMENT, &p,
              "ptc_conv_forward accepted dtype 2");
        check(ptc_conv_backward_data(&p, bad, NULL, NULL, NULL, NULL) == PTC_ERR_INVALID_ARGUMENT, &p,
              "ptc_conv_backward_data accepted dtype 2");
        check(ptc_conv_backward_filter(&p, bad, NULL, NULL, NULL, NULL) == PTC_ERR_INVALID_ARGUMENT, &p,
              "ptc_conv_backward_filter accepted dtype 2");
        check(ptc_bias_backward(1, 1, 1, bad, NULL, NULL) == PTC_ERR_INVALID_ARGUMENT, NULL,
              "ptc_bias_backward accepted dtype 2");
    }

    /* ptc_bias_backward's own arguments. */
    struct {
        int64_t batch, channels, spatial;
        int want;
        const char *why;
    } bias_cases[] = {
        {-1, 3, 4, INVALID, "negative batch"},
        {1, 0, 4, INVALID, "no channels"},
        {1, -2, 4, INVALID, "negative channels"},
        {1, 3, 0, INVALID, "no positions"},
        {1, 3, -7, INVALID, "negative positions"},
        {INT64_MAX, 2, 2, OVERFLOW, "batch INT64_MAX"},
        {(int64_t)1 << 30, (int64_t)1 << 30, (int64_t)1 << 4, OVERFLOW, "bytes past INT64_MAX"},
    };
    for (size_t i = 0; i < sizeof bias_cases / sizeof bias_cases[0]; i++) {
        ptc_status st = ptc_bias_backward(bias_cases[i].batch, bias_cases[i].channels, bias_cases[i].spatial,
                                          PTC_FLOAT64, NULL, NULL);
        check(st == (ptc_status)bias_cases[i].want, NULL, "ptc_bias_backward (%s): status %d, expected %d",
              bias_cases[i].why, (int)st, bias_cases[i].want);
    }

    /* Random valid problems with one field made invalid. */
    for (int iter = 0; iter < 2000; iter++) {
        random_problem(&p, &SMALL);
        int d = (int)rnd(0, p.ndim - 1);
        switch (rnd(0, 9)) {
        case 0: p.in_size[d] = -rnd(0, 3); break;
        case 1: p.kernel[d] = -rnd(0, 3); break;
        case 2: p.stride[d] = -rnd(0, 3); break;
        case 3: p.dilation[d] = -rnd(0, 3); break;
        case 4: p.pad_low[d] = -rnd(1, 3); break;
        case 5: p.pad_high[d] = -rnd(1, 3); break;
        case 6: p.out_size[d] = ptc_max_out_size(&p, d) + rnd(1, 3); break;
        case 7: p.out_size[d] = -rnd(0, 3); break;
        case 8: p.groups = p.in_channels + rnd(1, 3); break;
        default: p.batch = -rnd(1, 3); break;
        }
        check_rejected(&p, INVALID, "random field made invalid");
    }
#undef MUTATE
}

/* Pads wider than the input in the periodic modes: PyTorch rejects them (and
 * so does the NumPy API), the core extends periodically. Either an error or
 * the periodic result is acceptable; memory safety is what matters. */
static void check_wide_pads(int cases)
{
    for (int iter = 0; iter < cases; iter++) {
        ptc_problem p;
        random_problem(&p, &SMALL);
        p.padding_mode = rnd(0, 1) ? PTC_PAD_REFLECT : PTC_PAD_CIRCULAR;
        for (int d = 0; d < p.ndim; d++) {
            p.pad_low[d] = rnd(0, 2 * p.in_size[d] + 2);
            p.pad_high[d] = rnd(0, 2 * p.in_size[d] + 2);
            int64_t m = ptc_max_out_size(&p, d);
            if (m < 1) p.pad_high[d] += p.dilation[d] * (p.kernel[d] - 1);
            p.out_size[d] = ptc_max_out_size(&p, d);
        }
        ptc_status st = ptc_problem_check(&p);
        if (st != PTC_OK) {
            check(st == PTC_ERR_INVALID_ARGUMENT, &p, "wide pads: status %d", (int)st);
            continue;
        }
        check_problem(&p, rnd(0, 1) ? PTC_FLOAT32 : PTC_FLOAT64, 0);
    }
}

/* ---- interruption ----------------------------------------------------------- */

typedef struct {
    int calls;
    int stop_after_calls; /* return 1 from this call on (1: at once) */
    double stop_after_s;  /* or once this much time has passed since `start` */
    double start, stopped_at;
} stop_state;

static int should_stop(void *data)
{
    stop_state *s = data;
    s->calls++;
    int stop = (s->stop_after_calls > 0 && s->calls >= s->stop_after_calls) ||
               (s->stop_after_s > 0 && now() - s->start >= s->stop_after_s);
    if (stop && s->stopped_at == 0) s->stopped_at = now();
    return stop;
}

static void check_interrupts(void)
{
    ptc_problem p;
    /* A callback that always asks to stop interrupts even a short call. */
    for (int iter = 0; iter < 20; iter++) {
        random_problem(&p, &SMALL);
        if (p.batch == 0) p.batch = 1;
        instance t;
        instance_make(&t, &p, iter % 2 ? PTC_FLOAT64 : PTC_FLOAT32);
        for (int prim = FORWARD; prim <= BACKWARD_FILTER; prim++) {
            stop_state s = {0, 1, 0, now(), 0};
            ptc_options opt = {should_stop, &s};
            array out;
            array_alloc(&out, output_size(&t, (primitive)prim), t.x.dtype);
            ptc_status st = run_primitive(&t, (primitive)prim, &out, &opt);
            check(st == PTC_ERR_INTERRUPTED && s.calls >= 1, &p,
                  "%s with should_stop always true: status %d after %d polls", primitive_name((primitive)prim),
                  (int)st, s.calls);
            /* A callback that never stops changes nothing. */
            s = (stop_state){0, 0, 0, now(), 0};
            array_fill_nan(&out);
            st = run_primitive(&t, (primitive)prim, &out, &opt);
            check(st == PTC_OK && s.calls >= 1, &p, "%s with should_stop always false: status %d, %d polls",
                  primitive_name((primitive)prim), (int)st, s.calls);
            array_free(&out);
        }
        instance_free(&t);
    }

    /* A long call stopped after 50 ms must return promptly. Its problem takes
     * seconds (longer under the sanitizers), so the stop comes mid-call. */
    memset(&p, 0, sizeof p);
    p.ndim = 2;
    p.batch = 2;
    p.in_channels = p.out_channels = 48;
    p.groups = 1;
    p.padding_mode = PTC_PAD_ZEROS;
    for (int d = 0; d < 2; d++) {
        p.in_size[d] = 160;
        p.kernel[d] = 5;
        p.stride[d] = p.dilation[d] = 1;
        p.pad_low[d] = p.pad_high[d] = 2;
        p.out_size[d] = 160;
    }
    for (int mode = 0; mode < 2; mode++) {
        if (mode) p.padding_mode = PTC_PAD_REFLECT; /* the explicit padding pass polls too */
        instance t;
        instance_make(&t, &p, PTC_FLOAT32);
        for (int threads = 1; threads <= 2; threads++)
            for (int prim = FORWARD; prim <= BACKWARD_FILTER; prim++) {
                ptc_set_num_threads(threads);
                stop_state s = {0, 0, 0.05, now(), 0};
                ptc_options opt = {should_stop, &s};
                array out;
                array_alloc(&out, output_size(&t, (primitive)prim), t.x.dtype);
                ptc_status st = run_primitive(&t, (primitive)prim, &out, &opt);
                double end = now(), latency = s.stopped_at > 0 ? end - s.stopped_at : -1;
                if (s.stopped_at == 0) {
                    /* Finished before the first poll after 50 ms: nothing to measure. */
                    check(st == PTC_OK, &p, "%s: status %d without a stop request",
                          primitive_name((primitive)prim), (int)st);
                } else {
                    check(st == PTC_ERR_INTERRUPTED && latency < 1.0, &p,
                          "%s (%d threads, %s): status %d, returned %.3f s after the stop request",
                          primitive_name((primitive)prim), threads, mode_name(p.padding_mode), (int)st,
                          latency);
                    if (verbose)
                        printf("interrupt %s %d threads %s: stopped after %.3f s, latency %.4f s\n",
                               primitive_name((primitive)prim), threads, mode_name(p.padding_mode),
                               s.stopped_at - s.start, latency);
                }
                array_free(&out);
            }
        instance_free(&t);
    }
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    long cases = 3000;
    uint64_t seed = 20260101;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cases") && i + 1 < argc)
            cases = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--verbose"))
            verbose = 1;
        else {
            fprintf(stderr, "usage: %s [--cases N] [--seed S] [--verbose]\n", argv[0]);
            return 2;
        }
    }
    rng_state = seed;
    const char *simd_env = getenv("PYTCONV_SIMD");
    printf("pytconv core test: kernels %s (PYTCONV_SIMD=%s), seed %llu, %ld random problems\n",
           ptc_simd_level(), simd_env ? simd_env : "unset", (unsigned long long)seed, cases);
    double t0 = now();

    /* Small random problems, both dtypes; every fourth also with 2 threads
     * (which small problems mostly run on one: the check is then cheap). */
    for (long c = 0; c < cases; c++) {
        ptc_problem p;
        random_problem(&p, &SMALL);
        check_problem(&p, PTC_FLOAT32, c % 4 == 0);
        check_problem(&p, PTC_FLOAT64, c % 4 == 0);
    }
    double t1 = now();

    /* Problems large enough that the core really runs two threads (a few
     * MFLOP each, two of many channels, five by minimal filtering, two
     * pointwise), compared bitwise between 1 and 2 threads. */
    for (int c = 0; c < 12; c++) {
        ptc_problem p;
        medium_problem(&p);
        check_problem(&p, c % 2 ? PTC_FLOAT64 : PTC_FLOAT32, 1);
    }
    for (int c = 0; c < 2; c++) {
        ptc_problem p;
        deep_problem(&p);
        check_problem(&p, c % 2 ? PTC_FLOAT64 : PTC_FLOAT32, 1);
    }
    for (int c = 0; c < 3; c++) {
        ptc_problem p;
        minimal_filtering_problem(&p, c == 1 ? 4 : 3, c == 2 ? 1 : 2);
        check_problem(&p, c % 2 ? PTC_FLOAT64 : PTC_FLOAT32, 1);
    }
    for (int c = 0; c < 2; c++) {
        ptc_problem p;
        polyphase_problem(&p, 2 + 2 * c);
        check_problem(&p, c % 2 ? PTC_FLOAT32 : PTC_FLOAT64, 1);
    }
    for (int c = 0; c < 2; c++) {
        ptc_problem p;
        pointwise_problem(&p);
        check_problem(&p, c % 2 ? PTC_FLOAT32 : PTC_FLOAT64, 1);
    }
    double t2 = now();

    check_wide_pads((int)(cases / 10 + 1));
    check_invalid_problems();
    double t3 = now();
    check_interrupts();
    double t4 = now();
    ptc_set_num_threads(0); /* back to the default */

    printf("timings: random %.1f s, two-thread %.1f s, wide pads + invalid %.1f s, interrupts %.1f s\n",
           t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    printf("%ld passed, %ld failed\n", passed, failed);
    return failed ? 1 : 0;
}
