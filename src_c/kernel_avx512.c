/* AVX-512 kernels (compiled with -mavx512f -mfma). The widest tile is 8 x 3
 * vectors: 24 accumulators plus the three B vectors and one broadcast fill the
 * 32 vector registers. Eight rows divide the channel counts networks use (16,
 * 32, 64, ...), where a 12-row tile would waste up to a tenth. The dot tile is
 * 4 x 6 accumulators plus the 4 A vectors and one B vector. */
#include "kernels.h"
#include <immintrin.h>
#define DMR 4
#define DNR 6

#define REAL float
#define VEC __m512
#define VLEN 16
#define MR 8
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VLOADN(p, r) _mm512_maskz_loadu_ps((__mmask16)((1u << (r)) - 1), p)
#define VSTOREN(p, r, v) _mm512_mask_storeu_ps(p, (__mmask16)((1u << (r)) - 1), v)
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps()
#define VFMA _mm512_fmadd_ps
#define VADD _mm512_add_ps
#define VSTREAM _mm512_stream_ps
#define NV 1
#define KERNEL_NAME kernel_avx512_f32_1
#include "kernel_template.h"
#define NV 2
#define KERNEL_NAME kernel_avx512_f32_2
#include "kernel_template.h"
#define NV 3
#define KERNEL_NAME kernel_avx512_f32_3
#define DOT_NAME dot_avx512_f32
#define AXPY_NAME axpy_avx512_f32
#define TAPS_NAME taps_avx512_f32
#define TAPDOT_NAME tapdot_avx512_f32
#define STREAM_NAME stream_avx512_f32
#define ZIP_NAME zip_avx512_f32
#define ZIPADD_NAME zipadd_avx512_f32
#define GATHER_NAME gather_avx512_f32
#define PACK_NAME pack_avx512_f32
#define VUNZIP(a, b) _mm512_permutex2var_ps((a), _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), (b))
#define VZIPLO(a, b) _mm512_permutex2var_ps((a), _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), (b))
#define VZIPHI(a, b) _mm512_permutex2var_ps((a), _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), (b))
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
#define VEC __m512d
#define VLEN 8
#define MR 8
#define VLOAD _mm512_loadu_pd
#define VSTORE _mm512_storeu_pd
#define VLOADN(p, r) _mm512_maskz_loadu_pd((__mmask8)((1u << (r)) - 1), p)
#define VSTOREN(p, r, v) _mm512_mask_storeu_pd(p, (__mmask8)((1u << (r)) - 1), v)
#define VSET1 _mm512_set1_pd
#define VZERO _mm512_setzero_pd()
#define VFMA _mm512_fmadd_pd
#define VADD _mm512_add_pd
#define VSTREAM _mm512_stream_pd
#define NV 1
#define KERNEL_NAME kernel_avx512_f64_1
#include "kernel_template.h"
#define NV 2
#define KERNEL_NAME kernel_avx512_f64_2
#include "kernel_template.h"
#define NV 3
#define KERNEL_NAME kernel_avx512_f64_3
#define DOT_NAME dot_avx512_f64
#define AXPY_NAME axpy_avx512_f64
#define TAPS_NAME taps_avx512_f64
#define TAPDOT_NAME tapdot_avx512_f64
#define STREAM_NAME stream_avx512_f64
#define ZIP_NAME zip_avx512_f64
#define ZIPADD_NAME zipadd_avx512_f64
#define GATHER_NAME gather_avx512_f64
#define PACK_NAME pack_avx512_f64
#define VUNZIP(a, b) _mm512_permutex2var_pd((a), _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), (b))
#define VZIPLO(a, b) _mm512_permutex2var_pd((a), _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), (b))
#define VZIPHI(a, b) _mm512_permutex2var_pd((a), _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), (b))
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

static void stream_fence_avx512(void) { _mm_sfence(); }

const ptc_kernel_set ptc_kernels_avx512 = {
    "avx512",
    8, 16, 3, {kernel_avx512_f32_1, kernel_avx512_f32_2, kernel_avx512_f32_3},
    {kernel_avx512_f32_1_rows, kernel_avx512_f32_2_rows, kernel_avx512_f32_3_rows},
    8, 8, 3, {kernel_avx512_f64_1, kernel_avx512_f64_2, kernel_avx512_f64_3},
    {kernel_avx512_f64_1_rows, kernel_avx512_f64_2_rows, kernel_avx512_f64_3_rows},
    DMR, DNR, dot_avx512_f32, dot_avx512_f64,
    axpy_avx512_f32, axpy_avx512_f64,
    taps_avx512_f32, taps_avx512_f64, tapdot_avx512_f32, tapdot_avx512_f64,
    stream_avx512_f32, stream_avx512_f64, zip_avx512_f32, zip_avx512_f64,
    zipadd_avx512_f32, zipadd_avx512_f64, gather_avx512_f32, gather_avx512_f64,
    pack_avx512_f32, pack_avx512_f64,
    stream_fence_avx512,
};
