/* float64 instantiation of the convolution drivers. */
#include "internal.h"
#include "kernels.h"

#define SUFFIX f64
#define REAL double
#define KERNEL(ks) ((ks)->f64)
#define KERNEL_MR(ks) ((int64_t)(ks)->mr_f64)
#define KERNEL_NR(ks) ((int64_t)(ks)->nr_f64)
#include "conv_template.h"
