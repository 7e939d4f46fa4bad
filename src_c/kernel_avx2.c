/* AVX2 + FMA kernels (compiled with -mavx2 -mfma): 16 vector registers hold a
 * 6 x 2 tile of accumulators plus the two B vectors and one broadcast; the dot
 * tile is 3 x 4 plus 3 A vectors and one B vector. */
#include "kernels.h"
#include <immintrin.h>
#define DMR 3

/* Lane masks of the first r lanes (masked loads and stores of a row's tail). */
static inline __m256i avx2_mask32(int64_t r)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i avx2_mask64(int64_t r)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(r), _mm256_setr_epi64x(0, 1, 2, 3));
}
#define DNR 4

#define REAL float
#define VEC __m256
#define VLEN 8
#define MR 6
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VLOADN(p, r) _mm256_maskload_ps(p, avx2_mask32(r))
#define VSTOREN(p, r, v) _mm256_maskstore_ps(p, avx2_mask32(r), v)
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps()
#define VFMA _mm256_fmadd_ps
#define VADD _mm256_add_ps
#define VSTREAM _mm256_stream_ps
#define NV 1
#define KERNEL_NAME kernel_avx2_f32_1
#include "kernel_template.h"
#define NV 2
#define KERNEL_NAME kernel_avx2_f32_2
#define DOT_NAME dot_avx2_f32
#define AXPY_NAME axpy_avx2_f32
#define TAPS_NAME taps_avx2_f32
#define TAPDOT_NAME tapdot_avx2_f32
#define STREAM_NAME stream_avx2_f32
#define ZIP_NAME zip_avx2_f32
#define ZIPADD_NAME zipadd_avx2_f32
#define GATHER_NAME gather_avx2_f32
#define PACK_NAME pack_avx2_f32
#define VUNZIP(a, b) _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps((a), (b), 0x88)), 0xD8))
#define VZIPLO(a, b) _mm256_permute2f128_ps(_mm256_unpacklo_ps((a), (b)), _mm256_unpackhi_ps((a), (b)), 0x20)
#define VZIPHI(a, b) _mm256_permute2f128_ps(_mm256_unpacklo_ps((a), (b)), _mm256_unpackhi_ps((a), (b)), 0x31)
#include "kernel_template.h"
#undef REAL
#undef VEC
#undef VLEN
#undef MR
#undef VLOAD
#undef VSTORE
#undef VLOADN
#undef VSTOREN
#undef VSET1
#undef VZERO
#undef VFMA
#undef VADD
#undef VSTREAM

#define REAL double
#define VEC __m256d
#define VLEN 4
#define MR 6
#define VLOAD _mm256_loadu_pd
#define VSTORE _mm256_storeu_pd
#define VLOADN(p, r) _mm256_maskload_pd(p, avx2_mask64(r))
#define VSTOREN(p, r, v) _mm256_maskstore_pd(p, avx2_mask64(r), v)
#define VSET1 _mm256_set1_pd
#define VZERO _mm256_setzero_pd()
#define VFMA _mm256_fmadd_pd
#define VADD _mm256_add_pd
#define VSTREAM _mm256_stream_pd
#define NV 1
#define KERNEL_NAME kernel_avx2_f64_1
#include "kernel_template.h"
#define NV 2
#define KERNEL_NAME kernel_avx2_f64_2
#define DOT_NAME dot_avx2_f64
#define AXPY_NAME axpy_avx2_f64
#define TAPS_NAME taps_avx2_f64
#define TAPDOT_NAME tapdot_avx2_f64
#define STREAM_NAME stream_avx2_f64
#define ZIP_NAME zip_avx2_f64
#define ZIPADD_NAME zipadd_avx2_f64
#define GATHER_NAME gather_avx2_f64
#define PACK_NAME pack_avx2_f64
#define VUNZIP(a, b) _mm256_permute4x64_pd(_mm256_unpacklo_pd((a), (b)), 0xD8)
#define VZIPLO(a, b) _mm256_permute2f128_pd(_mm256_unpacklo_pd((a), (b)), _mm256_unpackhi_pd((a), (b)), 0x20)
#define VZIPHI(a, b) _mm256_permute2f128_pd(_mm256_unpacklo_pd((a), (b)), _mm256_unpackhi_pd((a), (b)), 0x31)
#include "kernel_template.h"
#undef REAL
#undef VEC
#undef VLEN
#undef MR
#undef VLOAD
#undef VSTORE
#undef VLOADN
#undef VSTOREN
#undef VSET1
#undef VZERO
#undef VFMA
#undef VADD
#undef VSTREAM

static void stream_fence_avx2(void) { _mm_sfence(); }

const ptc_kernel_set ptc_kernels_avx2 = {
    "avx2",
    6, 8, 2, {kernel_avx2_f32_1, kernel_avx2_f32_2},
    {kernel_avx2_f32_1_rows, kernel_avx2_f32_2_rows},
    6, 4, 2, {kernel_avx2_f64_1, kernel_avx2_f64_2},
    {kernel_avx2_f64_1_rows, kernel_avx2_f64_2_rows},
    DMR, DNR, dot_avx2_f32, dot_avx2_f64,
    axpy_avx2_f32, axpy_avx2_f64,
    taps_avx2_f32, taps_avx2_f64, tapdot_avx2_f32, tapdot_avx2_f64,
    stream_avx2_f32, stream_avx2_f64, zip_avx2_f32, zip_avx2_f64,
    zipadd_avx2_f32, zipadd_avx2_f64, gather_avx2_f32, gather_avx2_f64,
    pack_avx2_f32, pack_avx2_f64,
    stream_fence_avx2,
};
