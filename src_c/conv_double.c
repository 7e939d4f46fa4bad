/* float64 instantiation of the convolution drivers. */
#include "internal.h"
#include "kernels.h"

#define SUFFIX f64
#define REAL double
#define KERNELS(ks) ((ks)->f64)
#define ROWS_KERNELS(ks) ((ks)->f64_rows)
#define KERNEL_MR(ks) ((int64_t)(ks)->mr_f64)
#define KERNEL_VLEN(ks) ((int64_t)(ks)->vlen_f64)
#define KERNEL_NV(ks) ((int64_t)(ks)->nv_f64)
#define DOT_KERNEL(ks) ((ks)->dot_f64)
#define AXPY(ks) ((ks)->axpy_f64)
#define TAPS(ks) ((ks)->taps_f64)
#define TAPDOT(ks) ((ks)->tapdot_f64)
#define STREAM(ks) ((ks)->stream_f64)
#define ZIP(ks) ((ks)->zip_f64)
#define ZIPADD(ks) ((ks)->zipadd_f64)
#define GATHER(ks) ((ks)->gather_f64)
#define PACK(ks) ((ks)->pack_f64)
#include "conv_template.h"
