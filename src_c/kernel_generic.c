/* Portable kernels in plain C: scalar "vectors" of one element, which any C99
 * compiler builds and most vectorise. Used where no vector ISA is available
 * and as the reference the ISA kernels are tested against (PYTCONV_SIMD). */
#include "kernels.h"

#define MR 4
#define NV 8
#define VLEN 1
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSET1(x) (x)
#define VADD(a, b) ((a) + (b))

/* a * b + c rounded twice, as the ISA kernels' fused multiply-add would not
 * be: results of the generic kernels differ in the last bits, never more. */
#define VFMA(a, b, c) ((a) * (b) + (c))

#define KERNEL_NAME kernel_generic_f32
#define REAL float
#define VEC float
#define VZERO 0.0f
#include "kernel_template.h"
#undef KERNEL_NAME
#undef REAL
#undef VEC
#undef VZERO

#define KERNEL_NAME kernel_generic_f64
#define REAL double
#define VEC double
#define VZERO 0.0
#include "kernel_template.h"

const ptc_kernel_set ptc_kernels_generic = {
    "generic", MR, NV, kernel_generic_f32, MR, NV, kernel_generic_f64,
};
