/* AVX2 + FMA kernels (compiled with -mavx2 -mfma): 16 vector registers hold a
 * 6 x 2 tile of accumulators plus the two B vectors and one broadcast. */
#include "kernels.h"

#include <immintrin.h>

#define MR 6
#define NV 2

#define KERNEL_NAME kernel_avx2_f32
#define REAL float
#define VEC __m256
#define VLEN 8
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps()
#define VFMA _mm256_fmadd_ps
#define VADD _mm256_add_ps
#include "kernel_template.h"
#undef KERNEL_NAME
#undef REAL
#undef VEC
#undef VLEN
#undef VLOAD
#undef VSTORE
#undef VSET1
#undef VZERO
#undef VFMA
#undef VADD

#define KERNEL_NAME kernel_avx2_f64
#define REAL double
#define VEC __m256d
#define VLEN 4
#define VLOAD _mm256_loadu_pd
#define VSTORE _mm256_storeu_pd
#define VSET1 _mm256_set1_pd
#define VZERO _mm256_setzero_pd()
#define VFMA _mm256_fmadd_pd
#define VADD _mm256_add_pd
#include "kernel_template.h"

const ptc_kernel_set ptc_kernels_avx2 = {
    "avx2", MR, NV * 8, kernel_avx2_f32, MR, NV * 4, kernel_avx2_f64,
};
