/* AVX-512 kernels (compiled with -mavx512f -mfma): 32 vector registers hold an
 * 8 x 3 tile of accumulators plus the three B vectors and one broadcast. Eight
 * rows divide the channel counts networks use (16, 32, 64, ...), so no row of
 * a tile is wasted where a 12-row tile would waste up to a tenth. */
#include "kernels.h"

#include <immintrin.h>

#define MR 8
#define NV 3

#define KERNEL_NAME kernel_avx512_f32
#define REAL float
#define VEC __m512
#define VLEN 16
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps()
#define VFMA _mm512_fmadd_ps
#define VADD _mm512_add_ps
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

#define KERNEL_NAME kernel_avx512_f64
#define REAL double
#define VEC __m512d
#define VLEN 8
#define VLOAD _mm512_loadu_pd
#define VSTORE _mm512_storeu_pd
#define VSET1 _mm512_set1_pd
#define VZERO _mm512_setzero_pd()
#define VFMA _mm512_fmadd_pd
#define VADD _mm512_add_pd
#include "kernel_template.h"

const ptc_kernel_set ptc_kernels_avx512 = {
    "avx512", MR, NV * 16, kernel_avx512_f32, MR, NV * 8, kernel_avx512_f64,
};
