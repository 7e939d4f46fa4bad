/* Problem validation, status messages and the geometry every driver shares. */
#include "internal.h"

#include <stdlib.h>

int ptc_mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) return 0;
    if (a != 0 && b > INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

const char *ptc_status_message(ptc_status s)
{
    switch (s) {
    case PTC_OK: return "success";
    case PTC_ERR_INVALID_ARGUMENT: return "inconsistent convolution problem";
    case PTC_ERR_OVERFLOW: return "array sizes overflow 64-bit arithmetic";
    case PTC_ERR_NO_MEMORY: return "out of memory for working buffers";
    case PTC_ERR_INTERRUPTED: return "interrupted";
    case PTC_ERR_THREAD: return "could not start a worker thread";
    }
    return "unknown status";
}

int64_t ptc_max_out_size(const ptc_problem *p, int d)
{
    int64_t padded = p->in_size[d] + p->pad_low[d] + p->pad_high[d];
    int64_t span = p->dilation[d] * (p->kernel[d] - 1) + 1;
    if (padded < span) return -1;
    return (padded - span) / p->stride[d] + 1;
}

ptc_status ptc_problem_check(const ptc_problem *p)
{
    if (!p || p->ndim < 1 || p->ndim > PTC_MAX_NDIM) return PTC_ERR_INVALID_ARGUMENT;
    if (p->batch < 0 || p->in_channels < 1 || p->out_channels < 1 || p->groups < 1)
        return PTC_ERR_INVALID_ARGUMENT;
    if (p->in_channels % p->groups || p->out_channels % p->groups) return PTC_ERR_INVALID_ARGUMENT;
    if ((unsigned)p->padding_mode > PTC_PAD_CIRCULAR) return PTC_ERR_INVALID_ARGUMENT;
    /* Every element count and byte count below must fit: x, y, w and the
     * padded copy of x, times the size of a double. */
    int64_t in_vol = 1, out_vol = 1, k_vol = 1, pad_vol = 1;
    for (int d = 0; d < p->ndim; d++) {
        if (p->in_size[d] < 1 || p->out_size[d] < 1 || p->kernel[d] < 1 || p->stride[d] < 1 ||
            p->dilation[d] < 1 || p->pad_low[d] < 0 || p->pad_high[d] < 0)
            return PTC_ERR_INVALID_ARGUMENT;
        if (p->in_size[d] > INT64_MAX / 8 || p->kernel[d] > INT64_MAX / 8 ||
            p->pad_low[d] > INT64_MAX / 8 || p->pad_high[d] > INT64_MAX / 8 ||
            p->dilation[d] > INT64_MAX / 8 / p->kernel[d])
            return PTC_ERR_OVERFLOW;
        int64_t m = ptc_max_out_size(p, d);
        if (m < 1 || p->out_size[d] > m) return PTC_ERR_INVALID_ARGUMENT;
        if (!ptc_mul_ok(in_vol, p->in_size[d], &in_vol) ||
            !ptc_mul_ok(out_vol, p->out_size[d], &out_vol) ||
            !ptc_mul_ok(k_vol, p->kernel[d], &k_vol) ||
            !ptc_mul_ok(pad_vol, p->in_size[d] + p->pad_low[d] + p->pad_high[d], &pad_vol))
            return PTC_ERR_OVERFLOW;
    }
    int64_t nc = 0, t = 0;
    int64_t chans = p->in_channels > p->out_channels ? p->in_channels : p->out_channels;
    if (!ptc_mul_ok(p->batch > 0 ? p->batch : 1, chans, &nc)) return PTC_ERR_OVERFLOW;
    if (!ptc_mul_ok(nc, in_vol > pad_vol ? in_vol : pad_vol, &t) || !ptc_mul_ok(t, 8, &t))
        return PTC_ERR_OVERFLOW;
    if (!ptc_mul_ok(nc, out_vol, &t) || !ptc_mul_ok(t, 8, &t)) return PTC_ERR_OVERFLOW;
    if (!ptc_mul_ok(chans, k_vol, &t) || !ptc_mul_ok(t, chans, &t) || !ptc_mul_ok(t, 8, &t))
        return PTC_ERR_OVERFLOW;
    return PTC_OK;
}

ptc_status ptc_geometry_init(ptc_geometry *g, const ptc_problem *p)
{
    int nd = p->ndim;
    g->p = p;
    g->nd = nd;
    g->cin_g = p->in_channels / p->groups;
    g->cout_g = p->out_channels / p->groups;
    g->kvol = 1;
    g->in_spatial = 1;
    g->out_spatial = 1;
    for (int d = nd - 1; d >= 0; d--) {
        g->in_stride[d] = g->in_spatial;
        g->in_spatial *= p->in_size[d];
        g->out_spatial *= p->out_size[d];
        g->kvol *= p->kernel[d];
    }
    g->kdim = g->cin_g * g->kvol;
    /* One block for the per-offset tables: koff (kvol x nd), then five of kvol. */
    size_t kv = (size_t)g->kvol;
    g->koff = malloc(kv * ((size_t)nd + 5) * sizeof(int64_t));
    if (!g->koff) return PTC_ERR_NO_MEMORY;
    g->kdelta = g->koff + kv * (size_t)nd;
    g->shift = g->kdelta + kv;
    g->last_lo = g->shift + kv;
    g->last_hi = g->last_lo + kv;
    g->outer_delta = g->last_hi + kv;
    g->tiled = g->tiled_exactly = 1;
    for (int d = 0; d < nd; d++) {
        g->koff_max[d] = p->dilation[d] * (p->kernel[d] - 1);
        /* (dilated taps leave gaps: kernel 2 at dilation 2 reaches 0 and 2 of 3) */
        g->tiled &= p->stride[d] == p->kernel[d] && (p->kernel[d] == 1 || p->dilation[d] == 1) &&
                    p->pad_low[d] == 0 && p->out_size[d] * p->stride[d] <= p->in_size[d];
        g->tiled_exactly &= p->out_size[d] * p->stride[d] == p->in_size[d];
    }
    g->tiled_exactly &= g->tiled;
    int last = nd - 1;
    int64_t s = p->stride[last];
    /* Kernel offsets in row-major order of the kernel's dimensions, the order
     * of the weight's trailing axes. */
    for (int64_t q = 0; q < g->kvol; q++) {
        int64_t rest = q, delta = 0;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t kd = rest % p->kernel[d];
            rest /= p->kernel[d];
            g->koff[q * nd + d] = kd * p->dilation[d];
            delta += kd * p->dilation[d] * g->in_stride[d];
        }
        g->kdelta[q] = delta;
        g->outer_delta[q] = delta - g->koff[q * nd + last];
        /* 0 <= o * s + shift < in  <=>  ceil(-shift / s) <= o <= floor((in - 1 - shift) / s) */
        int64_t shift = g->koff[q * nd + last] - p->pad_low[last];
        int64_t first = shift >= 0 ? 0 : (-shift + s - 1) / s;
        int64_t top = p->in_size[last] - 1 - shift;
        int64_t end = top < 0 ? 0 : top / s + 1;
        if (end > p->out_size[last]) end = p->out_size[last];
        g->shift[q] = shift;
        g->last_lo[q] = first;
        g->last_hi[q] = end > first ? end : first;
    }
    return PTC_OK;
}

int64_t ptc_geometry_in_volume(const ptc_problem *p)
{
    int64_t v = 1;
    for (int d = 0; d < p->ndim; d++) v *= p->in_size[d];
    return v;
}

double ptc_interior_share(const ptc_problem *p)
{
    double share = 1;
    for (int d = 0; d < p->ndim - 1; d++) {
        /* Outputs o with every window element inside: o * s - pad_low >= 0 and
         * o * s - pad_low + extent < in_size. */
        int64_t s = p->stride[d], extent = p->dilation[d] * (p->kernel[d] - 1);
        int64_t lo = (p->pad_low[d] + s - 1) / s;
        int64_t top = p->in_size[d] - 1 - extent + p->pad_low[d];
        int64_t hi = top < 0 ? -1 : top / s; /* last valid o */
        if (hi > p->out_size[d] - 1) hi = p->out_size[d] - 1;
        share *= hi >= lo ? (double)(hi - lo + 1) / (double)p->out_size[d] : 0.0;
    }
    return share;
}

void ptc_geometry_free(ptc_geometry *g)
{
    free(g->koff); /* the one block of every table */
    g->koff = g->kdelta = g->shift = g->last_lo = g->last_hi = g->outer_delta = NULL;
}

int64_t ptc_segments(const ptc_geometry *g, int64_t p0, int64_t n, ptc_segment *segs)
{
    int64_t row_len = g->p->out_size[g->nd - 1];
    int64_t count = 0, col = 0;
    while (col < n) {
        int64_t pos = p0 + col;
        int64_t o_last = pos % row_len;
        int64_t len = row_len - o_last;
        if (len > n - col) len = n - col;
        ptc_segment *sg = &segs[count];
        sg->col = col;
        sg->len = len;
        sg->o_last = o_last;
        sg->outer = pos / row_len;
        sg->base = 0;
        sg->interior = 1;
        int64_t outer = sg->outer;
        for (int d = g->nd - 2; d >= 0; d--) {
            const ptc_problem *p = g->p;
            int64_t i = (outer % p->out_size[d]) * p->stride[d] - p->pad_low[d];
            outer /= p->out_size[d];
            sg->base += i * g->in_stride[d];
            if (i < 0 || i + g->koff_max[d] >= p->in_size[d]) sg->interior = 0;
        }
        count++;
        col += len;
    }
    return count;
}

int64_t ptc_row_offset_border(const ptc_geometry *g, int64_t outer, int64_t q)
{
    const ptc_problem *p = g->p;
    int last = g->nd - 1;
    int64_t offset = 0;
    for (int d = last - 1; d >= 0; d--) {
        int64_t o = outer % p->out_size[d];
        outer /= p->out_size[d];
        int64_t i = o * p->stride[d] - p->pad_low[d] + g->koff[q * g->nd + d];
        if (i < 0 || i >= p->in_size[d]) return -1;
        offset += i * g->in_stride[d];
    }
    return offset;
}
