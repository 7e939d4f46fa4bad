/* float32 instantiation of the convolution drivers. */
#include "internal.h"
#include "kernels.h"

#define SUFFIX f32
#define REAL float
#define KERNEL(ks) ((ks)->f32)
#define KERNEL_MR(ks) ((int64_t)(ks)->mr_f32)
#define KERNEL_NR(ks) ((int64_t)(ks)->nr_f32)
#include "conv_template.h"
