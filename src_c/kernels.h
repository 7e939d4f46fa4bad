/* GEMM micro-kernels: one register-blocked tile C[mr x nr] += A * B.
 *
 *   a: packed panel, a[k * MR + i] for k < kc, i < MR (rows past mr are zero)
 *   b: b[k * ldb + j] for k < kc, j < NR (all NR columns must be readable)
 *   c: c[i * ldc + j] for i < mr, j < nr is written. With PTC_TILE_ADD in
 *      `flags` the tile is added to c, otherwise it overwrites it; with
 *      PTC_TILE_STREAM a whole tile (mr = MR, nr = NR) goes out with
 *      non-temporal stores, which neither read c's lines nor keep them in
 *      the caches (every row of c must then start on a 64-byte line, and the
 *      caller fences with stream_fence before c is read).
 *
 * Each element is summed over k in increasing order, whatever the ISA tile
 * shape, so a given kernel gives the same bits for every tiling of C. */
#ifndef PYTCONV_KERNELS_H
#define PYTCONV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define PTC_TILE_ADD 1
#define PTC_TILE_STREAM 2

typedef void (*ptc_kernel_f32_fn)(int64_t kc, const float *a, const float *b, int64_t ldb,
                                  float *c, int64_t ldc, int flags, int64_t mr,
                                  int64_t nr);
typedef void (*ptc_kernel_f64_fn)(int64_t kc, const double *a, const double *b,
                                  int64_t ldb, double *c, int64_t ldc, int flags,
                                  int64_t mr, int64_t nr);

/* The same tiles with B row k read at b_rows[k] + boff (implicit GEMM). */
typedef void (*ptc_rows_f32_fn)(int64_t kc, const float *a, const float *const *b_rows,
                                int64_t boff, float *c, int64_t ldc, int flags,
                                int64_t mr, int64_t nr);
typedef void (*ptc_rows_f64_fn)(int64_t kc, const double *a, const double *const *b_rows,
                                int64_t boff, double *c, int64_t ldc, int flags,
                                int64_t mr, int64_t nr);

/* Dot kernels (weight gradients): a DMR x DNR tile of VLEN-lane partial sums
 * of products of rows contiguous along the reduction, over nruns runs of it
 * (kv vectors read at a + aoff in each row of A and at b_rows[j] + boff; of
 * the last, only the first `tail` lanes when tail > 0), summed in registers
 * across the runs; see kernel_template.h. */
typedef struct {
    int64_t kv, aoff, boff, tail;
} ptc_dot_run;
typedef void (*ptc_dot_f32_fn)(int64_t nruns, const ptc_dot_run *runs, const float *a,
                               int64_t lda, const float *const *b_rows, float *c, int64_t ldc,
                               int accumulate);
typedef void (*ptc_dot_f64_fn)(int64_t nruns, const ptc_dot_run *runs, const double *a,
                               int64_t lda, const double *const *b_rows, double *c, int64_t ldc,
                               int accumulate);

/* Vector helpers of the direct paths (one input channel per group). */
typedef void (*ptc_axpy_f32_fn)(int64_t n, float a, const float *x, int64_t incx, float *y,
                                int64_t incy);
typedef void (*ptc_axpy_f64_fn)(int64_t n, double a, const double *x, int64_t incx, double *y,
                                int64_t incy);

/* Depthwise kernels over a plane's rows of outputs and their taps
 * (kernel_template.h). */
typedef void (*ptc_taps_f32_fn)(int64_t rows, int64_t n, const float *x, const int64_t *row_off,
                                const int64_t *tap_off, int64_t ntaps, const float *w, float *y);
typedef void (*ptc_taps_f64_fn)(int64_t rows, int64_t n, const double *x, const int64_t *row_off,
                                const int64_t *tap_off, int64_t ntaps, const double *w,
                                double *y);
typedef void (*ptc_tapdot_f32_fn)(int64_t rows, int64_t n, const float *x,
                                  const int64_t *row_off, const int64_t *tap_off, int64_t ntaps,
                                  const float *dy, float *const *acc);
typedef void (*ptc_tapdot_f64_fn)(int64_t rows, int64_t n, const double *x,
                                  const int64_t *row_off, const int64_t *tap_off, int64_t ntaps,
                                  const double *dy, double *const *acc);

/* dst[i] = src[i] for i < n, with non-temporal stores for the whole 64-byte
 * lines of dst (kernel_template.h); stream_fence orders them before others
 * read dst. */
typedef void (*ptc_stream_f32_fn)(int64_t n, const float *src, float *dst);
typedef void (*ptc_stream_f64_fn)(int64_t n, const double *src, double *dst);
/* Rows of two interleaved rows, dst[2j] = a[j], dst[2j + 1] = a[boff + j]
 * (kernel_template.h); with `stream`, whole lines stored non-temporally. */
typedef void (*ptc_zip_f32_fn)(int64_t rows, int64_t n, const float *a, int64_t lda,
                               int64_t boff, float *dst, int64_t ldd, int stream);
typedef void (*ptc_zip_f64_fn)(int64_t rows, int64_t n, const double *a, int64_t lda,
                               int64_t boff, double *dst, int64_t ldd, int stream);

/* d[2j] += a[j], d[2j + 1] += b[j] for j < n (kernel_template.h). */
typedef void (*ptc_zipadd_f32_fn)(int64_t n, const float *a, const float *b, float *d);
typedef void (*ptc_zipadd_f64_fn)(int64_t n, const double *a, const double *b, double *d);
/* dst[j] = src[j * s] for j < n, reading nothing past src[(n - 1) * s]
 * (kernel_template.h): the rows of unfolded patches, vectorised for strides 1
 * and 2. */
typedef void (*ptc_gather_f32_fn)(int64_t n, const float *src, int64_t s, float *dst);
typedef void (*ptc_gather_f64_fn)(int64_t n, const double *src, int64_t s, double *dst);

/* dst[j * mr + i] = src[i * lds + j] for j < n, i < rows (<= mr), zero for
 * the panel's rows past `rows`: mr rows packed into an A panel
 * (kernel_template.h). */
typedef void (*ptc_pack_f32_fn)(int64_t n, const float *src, int64_t lds, int64_t rows,
                                float *dst);
typedef void (*ptc_pack_f64_fn)(int64_t n, const double *src, int64_t lds, int64_t rows,
                                double *dst);

#define PTC_MAX_NV 8
#define PTC_MAX_MR 8 /* the tallest tile (mr_f32, mr_f64) of any set */

/* One ISA's kernels. f32[v - 1] computes a tile of mr_f32 rows and
 * v * vlen_f32 columns (v = 1..nv_f32): the widest for the bulk of a matrix,
 * narrower ones for its last columns, so an edge wastes less than a vector.
 * All widths sum each element in the same order. */
typedef struct {
    const char *name;
    int mr_f32, vlen_f32, nv_f32;
    ptc_kernel_f32_fn f32[PTC_MAX_NV];
    ptc_rows_f32_fn f32_rows[PTC_MAX_NV];
    int mr_f64, vlen_f64, nv_f64;
    ptc_kernel_f64_fn f64[PTC_MAX_NV];
    ptc_rows_f64_fn f64_rows[PTC_MAX_NV];
    int dmr, dnr; /* dot tile, the same for both types; lanes = vlen */
    ptc_dot_f32_fn dot_f32;
    ptc_dot_f64_fn dot_f64;
    ptc_axpy_f32_fn axpy_f32;
    ptc_axpy_f64_fn axpy_f64;
    ptc_taps_f32_fn taps_f32;
    ptc_taps_f64_fn taps_f64;
    ptc_tapdot_f32_fn tapdot_f32;
    ptc_tapdot_f64_fn tapdot_f64;
    ptc_stream_f32_fn stream_f32;
    ptc_stream_f64_fn stream_f64;
    ptc_zip_f32_fn zip_f32;
    ptc_zip_f64_fn zip_f64;
    ptc_zipadd_f32_fn zipadd_f32;
    ptc_zipadd_f64_fn zipadd_f64;
    ptc_gather_f32_fn gather_f32;
    ptc_gather_f64_fn gather_f64;
    ptc_pack_f32_fn pack_f32;
    ptc_pack_f64_fn pack_f64;
    void (*stream_fence)(void);
} ptc_kernel_set;

extern const ptc_kernel_set ptc_kernels_generic;
#ifdef PTC_HAVE_AVX2
extern const ptc_kernel_set ptc_kernels_avx2;
#endif
#ifdef PTC_HAVE_AVX512
extern const ptc_kernel_set ptc_kernels_avx512;
#endif

/* The best set this CPU runs (or the one PYTCONV_SIMD names, if it runs). */
const ptc_kernel_set *ptc_kernels(void);

#endif
