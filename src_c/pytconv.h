/*
 * pytconv C core: N-dimensional convolution, transposed convolution and their
 * gradients, for float32 and float64, in plain C with no Python dependency.
 *
 * Every operation is described by one ptc_problem: the *convolution*
 *     y = conv(x, w)   x: (batch, in_channels, *in_size)
 *                      w: (out_channels, in_channels / groups, *kernel)
 *                      y: (batch, out_channels, *out_size)
 * and three primitives act on it:
 *     ptc_conv_forward          y  = conv(x, w) (+ bias)
 *     ptc_conv_backward_data    dx = conv^T(dy, w)   (= transposed convolution)
 *     ptc_conv_backward_filter  dw = d<conv(x, w), dy>/dw
 * A transposed convolution is ptc_conv_backward_data of the convolution it is
 * the transpose of; its gradients are ptc_conv_forward and
 * ptc_conv_backward_filter with the roles of the arrays exchanged.
 *
 * All arrays are dense and C-contiguous. Spatial index i of x and o of y are
 * linked by  padded_i = o * stride + k * dilation  with  padded_i = i + pad_low.
 * out_size may be smaller than the largest size the padded input allows (a
 * transposed convolution with output_padding >= stride asks for that); it is
 * never larger.
 *
 * Results are bitwise identical for every thread count: the work is split into
 * tiles whose shape depends on the problem only, and each output element is
 * summed in one fixed order.
 */
#ifndef PYTCONV_H
#define PYTCONV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* As many spatial dimensions as NumPy arrays can hold besides (batch, channels). */
#define PTC_MAX_NDIM 62

typedef enum {
    PTC_OK = 0,
    PTC_ERR_INVALID_ARGUMENT, /* the problem description is inconsistent */
    PTC_ERR_OVERFLOW,         /* a size or byte count does not fit in 64 bits */
    PTC_ERR_NO_MEMORY,        /* a working buffer could not be allocated */
    PTC_ERR_INTERRUPTED,      /* the cancel callback asked to stop */
    PTC_ERR_THREAD            /* a worker thread could not be started */
} ptc_status;

typedef enum { PTC_FLOAT32 = 0, PTC_FLOAT64 = 1 } ptc_dtype;

typedef enum {
    PTC_PAD_ZEROS = 0,
    PTC_PAD_REFLECT,   /* mirror without repeating the edge (needs pad < size) */
    PTC_PAD_REPLICATE, /* repeat the edge value */
    PTC_PAD_CIRCULAR   /* wrap around (needs pad <= size) */
} ptc_padding_mode;

typedef struct {
    int ndim; /* number of spatial dimensions, 1..PTC_MAX_NDIM */
    int64_t batch, in_channels, out_channels, groups;
    int64_t in_size[PTC_MAX_NDIM];
    int64_t out_size[PTC_MAX_NDIM];
    int64_t kernel[PTC_MAX_NDIM];
    int64_t stride[PTC_MAX_NDIM];
    int64_t dilation[PTC_MAX_NDIM];
    int64_t pad_low[PTC_MAX_NDIM];
    int64_t pad_high[PTC_MAX_NDIM];
    ptc_padding_mode padding_mode;
} ptc_problem;

/* Optional per-call settings; pass NULL for the defaults. */
typedef struct {
    /* Polled by the calling thread about every 20 ms while a call runs; a
     * non-zero return stops the call with PTC_ERR_INTERRUPTED (outputs are then
     * unspecified). NULL: never stop. */
    int (*should_stop)(void *data);
    void *should_stop_data;
} ptc_options;

/* Checks a problem; PTC_OK or PTC_ERR_INVALID_ARGUMENT / PTC_ERR_OVERFLOW. */
ptc_status ptc_problem_check(const ptc_problem *p);

/* Largest out_size[d] the padded input allows, or -1 if the kernel does not fit. */
int64_t ptc_max_out_size(const ptc_problem *p, int d);

/* y = conv(x, w) + bias (bias may be NULL). */
ptc_status ptc_conv_forward(const ptc_problem *p, ptc_dtype dtype, const void *x,
                            const void *w, const void *bias, void *y,
                            const ptc_options *opt);

/* dx = conv^T(dy): the gradient of <conv(x), dy> with respect to x. */
ptc_status ptc_conv_backward_data(const ptc_problem *p, ptc_dtype dtype,
                                  const void *dy, const void *w, void *dx,
                                  const ptc_options *opt);

/* dw = the gradient of <conv(x, w), dy> with respect to w. */
ptc_status ptc_conv_backward_filter(const ptc_problem *p, ptc_dtype dtype,
                                    const void *x, const void *dy, void *dw,
                                    const ptc_options *opt);

/* db[c] = sum of dy[n, c, ...] over the batch and every spatial position. */
ptc_status ptc_bias_backward(int64_t batch, int64_t channels, int64_t spatial,
                             ptc_dtype dtype, const void *dy, void *db);

/* Threads used by the calls above. The default is the number of online CPUs,
 * or the environment variable PYTCONV_NUM_THREADS where it is set. */
void ptc_set_num_threads(int n);
int ptc_get_num_threads(void);

/* Name of the vector instruction set the kernels use ("avx512", "avx2", "generic"). */
const char *ptc_simd_level(void);

/* A sentence describing a status. */
const char *ptc_status_message(ptc_status s);

#ifdef __cplusplus
}
#endif
#endif
