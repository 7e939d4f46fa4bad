/* float32 instantiation of the convolution drivers. */
#include "internal.h"
#include "kernels.h"

#define SUFFIX f32
#define REAL float
#define KERNELS(ks) ((ks)->f32)
#define ROWS_KERNELS(ks) ((ks)->f32_rows)
#define KERNEL_MR(ks) ((int64_t)(ks)->mr_f32)
#define KERNEL_VLEN(ks) ((int64_t)(ks)->vlen_f32)
#define KERNEL_NV(ks) ((int64_t)(ks)->nv_f32)
#define DOT_KERNEL(ks) ((ks)->dot_f32)
#define AXPY(ks) ((ks)->axpy_f32)
#define TAPS(ks) ((ks)->taps_f32)
#define TAPDOT(ks) ((ks)->tapdot_f32)
#define STREAM(ks) ((ks)->stream_f32)
#define ZIP(ks) ((ks)->zip_f32)
#define ZIPADD(ks) ((ks)->zipadd_f32)
#define GATHER(ks) ((ks)->gather_f32)
#define PACK(ks) ((ks)->pack_f32)
#include "conv_template.h"
