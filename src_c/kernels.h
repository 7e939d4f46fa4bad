/* GEMM micro-kernels: one register-blocked tile C[mr x nr] += A * B.
 *
 *   a: packed panel, a[k * MR + i] for k < kc, i < MR (rows past mr are zero)
 *   b: b[k * ldb + j] for k < kc, j < NR (all NR columns must be readable)
 *   c: c[i * ldc + j] for i < mr, j < nr is written; with accumulate it is
 *      added to, otherwise overwritten.
 *
 * Each element is summed over k in increasing order, whatever the ISA tile
 * shape, so a given kernel gives the same bits for every tiling of C. */
#ifndef PYTCONV_KERNELS_H
#define PYTCONV_KERNELS_H

#include <stdint.h>

typedef void (*ptc_kernel_f32_fn)(int64_t kc, const float *a, const float *b, int64_t ldb,
                                  float *c, int64_t ldc, int accumulate, int64_t mr,
                                  int64_t nr);
typedef void (*ptc_kernel_f64_fn)(int64_t kc, const double *a, const double *b,
                                  int64_t ldb, double *c, int64_t ldc, int accumulate,
                                  int64_t mr, int64_t nr);

typedef struct {
    const char *name;
    int mr_f32, nr_f32;
    ptc_kernel_f32_fn f32;
    int mr_f64, nr_f64;
    ptc_kernel_f64_fn f64;
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
