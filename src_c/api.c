/* Public entry points: check the problem, then run the driver of the dtype. */
#include "internal.h"
#include "kernels.h"

#define DISPATCH(dtype, call32, call64)                                  \
    do {                                                                 \
        if ((dtype) == PTC_FLOAT32) return call32;                       \
        if ((dtype) == PTC_FLOAT64) return call64;                       \
        return PTC_ERR_INVALID_ARGUMENT;                                 \
    } while (0)

ptc_status ptc_conv_forward(const ptc_problem *p, ptc_dtype dtype, const void *x,
                            const void *w, const void *bias, void *y, const ptc_options *opt)
{
    ptc_status st = ptc_problem_check(p);
    if (st != PTC_OK) return st;
    DISPATCH(dtype, ptc_forward_f32(p, x, w, bias, y, opt),
             ptc_forward_f64(p, x, w, bias, y, opt));
}

ptc_status ptc_conv_backward_data(const ptc_problem *p, ptc_dtype dtype, const void *dy,
                                  const void *w, void *dx, const ptc_options *opt)
{
    ptc_status st = ptc_problem_check(p);
    if (st != PTC_OK) return st;
    DISPATCH(dtype, ptc_backward_data_f32(p, dy, w, dx, opt),
             ptc_backward_data_f64(p, dy, w, dx, opt));
}

ptc_status ptc_conv_backward_filter(const ptc_problem *p, ptc_dtype dtype, const void *x,
                                    const void *dy, void *dw, const ptc_options *opt)
{
    ptc_status st = ptc_problem_check(p);
    if (st != PTC_OK) return st;
    DISPATCH(dtype, ptc_backward_filter_f32(p, x, dy, dw, opt),
             ptc_backward_filter_f64(p, x, dy, dw, opt));
}

ptc_status ptc_bias_backward(int64_t batch, int64_t channels, int64_t spatial, ptc_dtype dtype,
                             const void *dy, void *db)
{
    int64_t t;
    if (batch < 0 || channels < 1 || spatial < 1) return PTC_ERR_INVALID_ARGUMENT;
    if (!ptc_mul_ok(batch, channels, &t) || !ptc_mul_ok(t, spatial, &t) || !ptc_mul_ok(t, 8, &t))
        return PTC_ERR_OVERFLOW;
    DISPATCH(dtype, ptc_bias_backward_f32(batch, channels, spatial, dy, db),
             ptc_bias_backward_f64(batch, channels, spatial, dy, db));
}

const char *ptc_simd_level(void) { return ptc_kernels()->name; }
