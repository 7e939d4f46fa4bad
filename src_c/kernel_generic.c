/* Portable kernels in plain C: scalar "vectors" of one element, which any C99
 * compiler builds and most vectorise. Used where no vector ISA is available
 * and to test the drivers on a second tile shape (PYTCONV_SIMD=generic).
 * VFMA is a * b + c rounded twice where the compiler does not contract it:
 * results differ from the ISA kernels' in the last bits, never more. */
#include "kernels.h"
#define DMR 2
#define DNR 4

#define REAL float
#define VEC float
#define VLEN 1
#define MR 4
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VLOADN(p, r) ((r) != 0 ? *(p) : 0) /* one lane: r is 0 or 1 */
#define VSTOREN(p, r, v) ((r) != 0 ? (void)(*(p) = (v)) : (void)0)
#define VSET1(x) (x)
#define VZERO 0.0f
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VADD(a, b) ((a) + (b))
#define VSTREAM(p, v) (*(p) = (v))
#define NV 1
#define KERNEL_NAME kernel_generic_f32_1
#include "kernel_template.h"
#define NV 2
#define KERNEL_NAME kernel_generic_f32_2
#include "kernel_template.h"
#define NV 3
#define KERNEL_NAME kernel_generic_f32_3
#include "kernel_template.h"
#define NV 4
#define KERNEL_NAME kernel_generic_f32_4
#include "kernel_template.h"
#define NV 5
#define KERNEL_NAME kernel_generic_f32_5
#include "kernel_template.h"
#define NV 6
#define KERNEL_NAME kernel_generic_f32_6
#include "kernel_template.h"
#define NV 7
#define KERNEL_NAME kernel_generic_f32_7
#include "kernel_template.h"
#define NV 8
#define KERNEL_NAME kernel_generic_f32_8
#define DOT_NAME dot_generic_f32
#define AXPY_NAME axpy_generic_f32
#define TAPS_NAME taps_generic_f32
#define TAPDOT_NAME tapdot_generic_f32
#define STREAM_NAME stream_generic_f32
#define ZIP_NAME zip_generic_f32
#define ZIPADD_NAME zipadd_generic_f32
#define GATHER_NAME gather_generic_f32
#define PACK_NAME pack_generic_f32
#define VUNZIP(a, b) ((void)(b), (a))
#define VZIPLO(a, b) (a)
#define VZIPHI(a, b) (b)
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
#define VEC double
#define VLEN 1
#define MR 4
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VLOADN(p, r) ((r) != 0 ? *(p) : 0) /* one lane: r is 0 or 1 */
#define VSTOREN(p, r, v) ((r) != 0 ? (void)(*(p) = (v)) : (void)0)
#define VSET1(x) (x)
#define VZERO 0.0
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VADD(a, b) ((a) + (b))
#define VSTREAM(p, v) (*(p) = (v))
#define NV 1
#define KERNEL_NAME kernel_generic_f64_1
#include "kernel_template.h"
#define NV 2
#define KERNEL_NAME kernel_generic_f64_2
#include "kernel_template.h"
#define NV 3
#define KERNEL_NAME kernel_generic_f64_3
#include "kernel_template.h"
#define NV 4
#define KERNEL_NAME kernel_generic_f64_4
#include "kernel_template.h"
#define NV 5
#define KERNEL_NAME kernel_generic_f64_5
#include "kernel_template.h"
#define NV 6
#define KERNEL_NAME kernel_generic_f64_6
#include "kernel_template.h"
#define NV 7
#define KERNEL_NAME kernel_generic_f64_7
#include "kernel_template.h"
#define NV 8
#define KERNEL_NAME kernel_generic_f64_8
#define DOT_NAME dot_generic_f64
#define AXPY_NAME axpy_generic_f64
#define TAPS_NAME taps_generic_f64
#define TAPDOT_NAME tapdot_generic_f64
#define STREAM_NAME stream_generic_f64
#define ZIP_NAME zip_generic_f64
#define ZIPADD_NAME zipadd_generic_f64
#define GATHER_NAME gather_generic_f64
#define PACK_NAME pack_generic_f64
#define VUNZIP(a, b) ((void)(b), (a))
#define VZIPLO(a, b) (a)
#define VZIPHI(a, b) (b)
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

/* Ordinary stores: nothing to order. */
static void stream_fence_generic(void) {}

const ptc_kernel_set ptc_kernels_generic = {
    "generic",
    4, 1, 8, {kernel_generic_f32_1, kernel_generic_f32_2, kernel_generic_f32_3, kernel_generic_f32_4, kernel_generic_f32_5, kernel_generic_f32_6, kernel_generic_f32_7, kernel_generic_f32_8},
    {kernel_generic_f32_1_rows, kernel_generic_f32_2_rows, kernel_generic_f32_3_rows, kernel_generic_f32_4_rows, kernel_generic_f32_5_rows, kernel_generic_f32_6_rows, kernel_generic_f32_7_rows, kernel_generic_f32_8_rows},
    4, 1, 8, {kernel_generic_f64_1, kernel_generic_f64_2, kernel_generic_f64_3, kernel_generic_f64_4, kernel_generic_f64_5, kernel_generic_f64_6, kernel_generic_f64_7, kernel_generic_f64_8},
    {kernel_generic_f64_1_rows, kernel_generic_f64_2_rows, kernel_generic_f64_3_rows, kernel_generic_f64_4_rows, kernel_generic_f64_5_rows, kernel_generic_f64_6_rows, kernel_generic_f64_7_rows, kernel_generic_f64_8_rows},
    DMR, DNR, dot_generic_f32, dot_generic_f64,
    axpy_generic_f32, axpy_generic_f64,
    taps_generic_f32, taps_generic_f64, tapdot_generic_f32, tapdot_generic_f64,
    stream_generic_f32, stream_generic_f64, zip_generic_f32, zip_generic_f64,
    zipadd_generic_f32, zipadd_generic_f64, gather_generic_f32, gather_generic_f64,
    pack_generic_f32, pack_generic_f64,
    stream_fence_generic,
};
