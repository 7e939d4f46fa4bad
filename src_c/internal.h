/* Internal declarations shared by the C core's translation units. */
#ifndef PYTCONV_INTERNAL_H
#define PYTCONV_INTERNAL_H

#include "pytconv.h"

#include <stdatomic.h>

/* A hint to fetch the line at p into the caches; no fault if p is invalid. */
#if defined(__GNUC__) || defined(__clang__)
#define PTC_PREFETCH(p) __builtin_prefetch(p)
#else
#define PTC_PREFETCH(p) ((void)(p))
#endif

/* Asks for every cache line that holds a byte of [p, p + bytes). */
static inline void ptc_prefetch_bytes(const void *p, int64_t bytes)
{
    const char *c = (const char *)p;
    for (const char *line = c - (uintptr_t)c % 64; line < c + bytes; line += 64) PTC_PREFETCH(line);
}

/* ---- geometry shared by every driver (type independent) ---------------- */

/* Precomputed, read-only description of a zero-padded problem. */
typedef struct {
    const ptc_problem *p;
    int nd;
    int64_t cin_g, cout_g;       /* channels per group */
    int64_t kvol;                /* number of kernel offsets */
    int64_t kdim;                /* cin_g * kvol: rows of the unfolded patches */
    int64_t in_spatial, out_spatial;
    int64_t in_stride[PTC_MAX_NDIM];  /* element strides of x's spatial dims */
    int64_t *koff;               /* kvol x nd: k_d * dilation_d of each offset */
    int64_t *kdelta;             /* kvol: linear offset sum_d koff * in_stride */
    /* Per kernel offset q, for the last dimension: the input index is
     * o * stride + shift[q], valid for o in [last_lo[q], last_hi[q]). And the
     * offset of the outer dimensions' displacement, sum_{d<last} koff * in_stride. */
    int64_t *shift, *last_lo, *last_hi, *outer_delta;
    int64_t koff_max[PTC_MAX_NDIM]; /* dilation * (kernel - 1) */
    /* The windows lie side by side, none overlapping or leaving a gap, all
     * inside the input (kernel == stride, consecutive taps, no padding: 2x2
     * stride-2 downsampling and its N-d kin); tiled_exactly: and they cover
     * the whole input. */
    int tiled, tiled_exactly;
} ptc_geometry;

/* A pointwise convolution (kernel 1, stride 1, no padding): row kk of its
 * unfolded patches is channel kk of the input itself, read where it is. */
static inline int ptc_patches_are_channels(const ptc_geometry *g)
{
    return g->kvol == 1 && g->tiled_exactly;
}

ptc_status ptc_geometry_init(ptc_geometry *g, const ptc_problem *p);
int64_t ptc_geometry_in_volume(const ptc_problem *p); /* prod(in_size) */
/* Share of output rows (all dimensions but the last) whose windows lie inside
 * the input in every one of those dimensions: the rest take the slow border
 * path of the unfolding. */
double ptc_interior_share(const ptc_problem *p);
void ptc_geometry_free(ptc_geometry *g);

/* A run of consecutive output positions along the last spatial dimension. */
typedef struct {
    int64_t col;      /* column of its first position inside the tile */
    int64_t len;
    int64_t o_last;   /* last-dimension output index of its first position */
    int64_t outer;    /* index of the row: flat output index / out_size[last] */
    int64_t base;     /* sum over outer dims of (o * stride - pad_low) * in_stride */
    int interior;     /* every kernel offset's outer coordinates are inside the input */
} ptc_segment;

/* Splits output positions [p0, p0 + n) into row segments; returns their count.
 * segs must hold n / out_size[last] + 2 entries. */
int64_t ptc_segments(const ptc_geometry *g, int64_t p0, int64_t n, ptc_segment *segs);

/* For kernel offset q and the output row of segment sg, the offset of the
 * input row the window reads (the last dimension's part excluded), or -1 when
 * some outer dimension falls into the zero padding. */
static inline int64_t ptc_row_offset(const ptc_geometry *g, const ptc_segment *sg, int64_t q)
{
    extern int64_t ptc_row_offset_border(const ptc_geometry *g, int64_t outer, int64_t q);
    return sg->interior ? sg->base + g->outer_delta[q] : ptc_row_offset_border(g, sg->outer, q);
}

/* Range [*lo, *hi) of last-dimension output indices o in [o0, o0 + len) whose
 * input index o * stride + shift[q] lands inside the input (empty: lo == hi). */
static inline void ptc_last_dim_range(const ptc_geometry *g, int64_t q, int64_t o0, int64_t len,
                                      int64_t *lo, int64_t *hi)
{
    int64_t a = g->last_lo[q] > o0 ? g->last_lo[q] : o0;
    int64_t b = g->last_hi[q] < o0 + len ? g->last_hi[q] : o0 + len;
    *lo = a;
    *hi = b > a ? b : a;
}

/* The calling thread's reusable buffer `slot` (0 or 1) of at least `bytes`,
 * uninitialised, or NULL; valid until ptc_workspace_release(slot) or the next
 * acquire of that slot on this thread (workspace.c). */
void *ptc_workspace_acquire(int slot, size_t bytes);
void ptc_workspace_release(int slot);

/* Checked 64-bit arithmetic: returns 0 on overflow. */
int ptc_mul_ok(int64_t a, int64_t b, int64_t *out);

/* ---- threads ------------------------------------------------------------ */

typedef struct ptc_parallel ptc_parallel;

/* A task may call ptc_poll between chunks of long work: non-zero means stop. */
typedef ptc_status (*ptc_task_fn)(void *ctx, int64_t task, int thread_id, ptc_parallel *par);

/* Runs fn for tasks 0..ntasks-1 on up to max_threads threads, whose ids are
 * 0..max_threads-1 (0 is the calling thread). Returns the first error a task returned, or
 * PTC_ERR_INTERRUPTED when opt->should_stop asked to stop. */
ptc_status ptc_parallel_for(int64_t ntasks, int max_threads, ptc_task_fn fn, void *ctx,
                            const ptc_options *opt);
int ptc_poll(ptc_parallel *par, int thread_id);

/* Threads a call of `flops` floating-point operations is worth, within the
 * global setting. Read it once per call and size per-thread scratch by it. */
int ptc_threads_for_work(double flops);

/* ---- typed drivers (conv_template.h) ----------------------------------- */

#define PTC_DECLARE_DRIVERS(SUFFIX, REAL)                                              \
    ptc_status ptc_forward_##SUFFIX(const ptc_problem *p, const REAL *x, const REAL *w,  \
                                    const REAL *bias, REAL *y, const ptc_options *opt); \
    ptc_status ptc_backward_data_##SUFFIX(const ptc_problem *p, const REAL *dy,          \
                                          const REAL *w, REAL *dx,                      \
                                          const ptc_options *opt);                      \
    ptc_status ptc_backward_filter_##SUFFIX(const ptc_problem *p, const REAL *x,         \
                                            const REAL *dy, REAL *dw,                   \
                                            const ptc_options *opt);                    \
    ptc_status ptc_bias_backward_##SUFFIX(int64_t batch, int64_t channels,               \
                                          int64_t spatial, const REAL *dy, REAL *db);

PTC_DECLARE_DRIVERS(f32, float)
PTC_DECLARE_DRIVERS(f64, double)

#endif
