/*
 * pytconv GPU kernels: the data movement around the matrix products of an
 * N-dimensional convolution (the products themselves are cuBLAS calls made
 * through CuPy).
 *
 *   ptc_im2col     unfolded patches of a tile of output positions (columns)
 *   ptc_col2im     the adjoint of im2col as a gather: each input element sums
 *                  the column entries it contributed to, in a fixed order
 *                  (deterministic, no atomics, no zero insertion)
 *   ptc_pad        explicit padding for the non-zero padding modes
 *   ptc_fold_dim   the adjoint of that padding along one dimension
 *   ptc_bias_add   y[n, c, ...] += bias[c]
 *   ptc_bias_partial, ptc_bias_finish
 *                  bias gradient: fixed-size partial sums, then their sum
 *
 * Compiled at run time by NVRTC (through cupy.RawModule) with no headers, so
 * this file includes nothing. Every kernel is a template over the element
 * type; im2col and col2im also over the number of spatial dimensions
 * (1 to 5 unrolled; 0 = any number, read at run time). Flattened indices
 * are 64-bit; every kernel is a grid-stride loop over its outputs, each
 * output written by exactly one thread.
 *
 * A convolution's geometry is an int64 array in device memory, field-major:
 * geo[field * ndim + d] for the fields of ptc_geo_field below.
 */

#ifndef PTC_MAX_NDIM
#define PTC_MAX_NDIM 62
#endif

typedef long long ptc_i64;

/* The fields of a geometry array (pytconv/gpu/_backend.py writes them in this
 * order). For a problem on an explicitly padded input, IN is the padded size
 * and PAD_LOW is 0. */
enum ptc_geo_field {
    PTC_GEO_IN = 0,        /* input size */
    PTC_GEO_OUT,           /* output size */
    PTC_GEO_KERNEL,        /* kernel size */
    PTC_GEO_STRIDE,
    PTC_GEO_DILATION,
    PTC_GEO_PAD_LOW,
    PTC_GEO_PADDED,        /* in + pad_low + pad_high */
    PTC_GEO_IN_STRIDE,     /* elements between neighbours along d in an input plane */
    PTC_GEO_OUT_STRIDE,    /* the same in an output plane */
    PTC_GEO_KERNEL_STRIDE, /* the same in a kernel */
    PTC_GEO_GCD,           /* gcd(stride, dilation) */
    PTC_GEO_Q_STEP,        /* stride / gcd: step between kernel offsets reaching one input */
    PTC_GEO_O_STEP,        /* dilation / gcd: the matching step of the output index */
    PTC_GEO_DIL_INV,       /* inverse of dilation / gcd modulo stride / gcd (0 if that is 1) */
    PTC_GEO_FIELDS
};

#define PTC_GEO(geo, field, nd, d) ((geo)[(ptc_i64)(field) * (nd) + (d)])

/* a / b for a >= 0, b > 0; 32-bit division when both fit (much faster). */
static __device__ __forceinline__ ptc_i64 ptc_div(ptc_i64 a, ptc_i64 b)
{
    if (((a | b) >> 31) == 0) return (ptc_i64)((unsigned int)a / (unsigned int)b);
    return a / b;
}

static __device__ __forceinline__ ptc_i64 ptc_min(ptc_i64 a, ptc_i64 b) { return a < b ? a : b; }

/* a mod m in [0, m) for any a and m > 0. */
static __device__ __forceinline__ ptc_i64 ptc_mod(ptc_i64 a, ptc_i64 m)
{
    ptc_i64 r = a % m;
    return r < 0 ? r + m : r;
}

/* a * b mod m for 0 <= a, b < m < 2^62, without overflow. */
static __device__ ptc_i64 ptc_mulmod(ptc_i64 a, ptc_i64 b, ptc_i64 m)
{
    if (m <= 3037000499LL) return (a * b) % m; /* a * b < 2^63 */
    ptc_i64 r = 0;
    while (b > 0) {
        if (b & 1) {
            r += a;
            if (r >= m) r -= m;
        }
        a += a;
        if (a >= m) a -= m;
        b >>= 1;
    }
    return r;
}

#define PTC_GRID_LOOP(e, total)                                                  \
    for (ptc_i64 e = (ptc_i64)blockIdx.x * blockDim.x + threadIdx.x; e < (total); \
         e += (ptc_i64)blockDim.x * gridDim.x)

/* ---- im2col ------------------------------------------------------------- */

/* Columns of the output positions p0 .. p0 + tile - 1 of `images` images.
 * Column m is image m / tile, position p0 + m % tile; row r = c * kvol + q is
 * input channel c (of all groups) and flat kernel offset q. Two layouts of
 * cols (G = groups, K = channels / groups * kvol, M = images * tile):
 *   layout 0: cols[G][K][M], i.e. cols[r * M + m]   (forward)
 *   layout 1: cols[G][M][K]                          (weight gradient)
 * x points at the first image's first element. Entries that fall into the
 * zero padding are 0. */
template <typename T, int NDIM>
__global__ void ptc_im2col(const T *__restrict__ x, T *__restrict__ cols,
                           const ptc_i64 *__restrict__ geo, int ndim, ptc_i64 channels,
                           ptc_i64 groups, ptc_i64 in_vol, ptc_i64 kvol, ptc_i64 p0,
                           ptc_i64 tile, ptc_i64 ncols, ptc_i64 total, int layout)
{
    const int nd = NDIM > 0 ? NDIM : ndim;
    const ptc_i64 kdim = ptc_div(channels, groups) * kvol;
    PTC_GRID_LOOP(e, total)
    {
        ptc_i64 r, m;
        if (layout == 0) {
            r = ptc_div(e, ncols);
            m = e - r * ncols;
        } else {
            ptc_i64 t = ptc_div(e, kdim);
            ptc_i64 kk = e - t * kdim;
            ptc_i64 g = ptc_div(t, ncols);
            m = t - g * ncols;
            r = g * kdim + kk;
        }
        ptc_i64 c = ptc_div(r, kvol), q = r - c * kvol;
        ptc_i64 img = ptc_div(m, tile), p = p0 + (m - img * tile);
        ptc_i64 off = 0;
        bool inside = true;
#pragma unroll
        for (int d = nd - 1; d >= 0; d--) {
            ptc_i64 osz = PTC_GEO(geo, PTC_GEO_OUT, nd, d);
            ptc_i64 ksz = PTC_GEO(geo, PTC_GEO_KERNEL, nd, d);
            ptc_i64 prest = ptc_div(p, osz), qrest = ptc_div(q, ksz);
            ptc_i64 o = p - prest * osz, k = q - qrest * ksz;
            p = prest;
            q = qrest;
            ptc_i64 i = o * PTC_GEO(geo, PTC_GEO_STRIDE, nd, d) +
                        k * PTC_GEO(geo, PTC_GEO_DILATION, nd, d) -
                        PTC_GEO(geo, PTC_GEO_PAD_LOW, nd, d);
            inside = inside && i >= 0 && i < PTC_GEO(geo, PTC_GEO_IN, nd, d);
            off += i * PTC_GEO(geo, PTC_GEO_IN_STRIDE, nd, d);
        }
        cols[e] = inside ? x[(img * channels + c) * in_vol + off] : T(0);
    }
}

/* ---- col2im (gather) ---------------------------------------------------- */

/* The adjoint of im2col (layout 0) for the same tile: for the input elements
 * first .. first + count - 1 (flat, within each plane) of every channel of
 * `images` images,
 *     dx[e] = (accumulate ? dx[e] : 0) + sum of the column entries it feeds.
 * Along dimension d, input index i is reached by kernel offsets k and output
 * indices o with  i + pad_low = o * stride + k * dilation : for t = i + pad_low
 * these k form an arithmetic progression (step stride / gcd), found in O(1),
 * so no work is spent on offsets that miss (no zero insertion). The sum runs
 * over the offsets in increasing flat order, the same for every launch. */
template <typename T, int NDIM>
__global__ void ptc_col2im(const T *__restrict__ cols, T *__restrict__ dx,
                           const ptc_i64 *__restrict__ geo, int ndim, ptc_i64 channels,
                           ptc_i64 in_vol, ptc_i64 kvol, ptc_i64 p0, ptc_i64 tile,
                           ptc_i64 ncols, ptc_i64 first, ptc_i64 count, ptc_i64 total,
                           int accumulate)
{
    const int nd = NDIM > 0 ? NDIM : ndim;
    ptc_i64 cnt[NDIM > 0 ? NDIM : PTC_MAX_NDIM];
    ptc_i64 idx[NDIM > 0 ? NDIM : PTC_MAX_NDIM];
    PTC_GRID_LOOP(e, total)
    {
        ptc_i64 plane = ptc_div(e, count);
        ptc_i64 f = first + (e - plane * count);
        ptc_i64 img = ptc_div(plane, channels);
        ptc_i64 c = plane - img * channels;
        ptc_i64 qf = 0, of = 0; /* flat kernel offset and output position */
        bool any = true;
        ptc_i64 rest = f;
#pragma unroll
        for (int d = nd - 1; d >= 0; d--) {
            ptc_i64 isz = PTC_GEO(geo, PTC_GEO_IN, nd, d);
            ptc_i64 irest = ptc_div(rest, isz);
            ptc_i64 i = rest - irest * isz;
            rest = irest;
            ptc_i64 s = PTC_GEO(geo, PTC_GEO_STRIDE, nd, d);
            ptc_i64 dil = PTC_GEO(geo, PTC_GEO_DILATION, nd, d);
            ptc_i64 ksz = PTC_GEO(geo, PTC_GEO_KERNEL, nd, d);
            ptc_i64 osz = PTC_GEO(geo, PTC_GEO_OUT, nd, d);
            ptc_i64 g = PTC_GEO(geo, PTC_GEO_GCD, nd, d);
            ptc_i64 qstep = PTC_GEO(geo, PTC_GEO_Q_STEP, nd, d);
            ptc_i64 t = i + PTC_GEO(geo, PTC_GEO_PAD_LOW, nd, d);
            cnt[d] = 0;
            idx[d] = 0;
            if (!any) continue;
            /* k * dil <= t  and  t - k * dil <= (osz - 1) * s */
            ptc_i64 k_hi = ptc_min(ksz - 1, ptc_div(t, dil));
            ptc_i64 lo_num = t - (osz - 1) * s;
            ptc_i64 k_lo = lo_num <= 0 ? 0 : ptc_div(lo_num + dil - 1, dil);
            ptc_i64 tg = ptc_div(t, g);
            if (t - tg * g != 0 || k_lo > k_hi) {
                any = false;
                continue;
            }
            /* k * (dil / g) == t / g  (mod qstep) */
            ptc_i64 k_res = qstep == 1 ? 0
                                       : ptc_mulmod(tg - ptc_div(tg, qstep) * qstep,
                                                    PTC_GEO(geo, PTC_GEO_DIL_INV, nd, d), qstep);
            ptc_i64 k0 = k_lo + ptc_mod(k_res - k_lo, qstep);
            if (k0 > k_hi) {
                any = false;
                continue;
            }
            ptc_i64 o0 = ptc_div(t - k0 * dil, s);
            cnt[d] = ptc_div(k_hi - k0, qstep) + 1;
            qf += k0 * PTC_GEO(geo, PTC_GEO_KERNEL_STRIDE, nd, d);
            of += o0 * PTC_GEO(geo, PTC_GEO_OUT_STRIDE, nd, d);
        }
        T sum = T(0);
        if (any) {
            /* column of output position of: img * tile + of - p0 */
            const ptc_i64 base = c * kvol * ncols + img * tile - p0;
            const ptc_i64 p1 = p0 + tile;
            for (;;) {
                if (of >= p0 && of < p1) sum += cols[base + qf * ncols + of];
                /* next offset: an odometer over the dimensions, last fastest */
                int d = nd - 1;
                for (; d >= 0; d--) {
                    ptc_i64 qs = PTC_GEO(geo, PTC_GEO_Q_STEP, nd, d) *
                                 PTC_GEO(geo, PTC_GEO_KERNEL_STRIDE, nd, d);
                    ptc_i64 os = PTC_GEO(geo, PTC_GEO_O_STEP, nd, d) *
                                 PTC_GEO(geo, PTC_GEO_OUT_STRIDE, nd, d);
                    if (++idx[d] < cnt[d]) {
                        qf += qs;
                        of -= os;
                        break;
                    }
                    qf -= (cnt[d] - 1) * qs;
                    of += (cnt[d] - 1) * os;
                    idx[d] = 0;
                }
                if (d < 0) break;
            }
        }
        ptc_i64 dst = plane * in_vol + f;
        dx[dst] = accumulate ? dx[dst] + sum : sum;
    }
}

/* ---- padding modes ------------------------------------------------------ */

enum { PTC_MODE_ZEROS = 0, PTC_MODE_REFLECT = 1, PTC_MODE_REPLICATE = 2, PTC_MODE_CIRCULAR = 3 };

/* Source index of padded coordinate i (relative to the first input element)
 * in an input of length len. */
static __device__ __forceinline__ ptc_i64 ptc_mode_index(int mode, ptc_i64 i, ptc_i64 len)
{
    if (i >= 0 && i < len) return i;
    if (mode == PTC_MODE_REPLICATE) return i < 0 ? 0 : len - 1;
    if (mode == PTC_MODE_CIRCULAR) return ptc_mod(i, len);
    /* reflect: mirror without repeating the edge, period 2 * len - 2 */
    if (len == 1) return 0;
    ptc_i64 m = ptc_mod(i, 2 * len - 2);
    return m < len ? m : 2 * len - 2 - m;
}

/* dst (planes of the padded shape) = src (planes of the input shape) padded
 * with `mode` (reflect, replicate or circular). */
template <typename T>
__global__ void ptc_pad(const T *__restrict__ src, T *__restrict__ dst,
                        const ptc_i64 *__restrict__ geo, int ndim, ptc_i64 in_vol,
                        ptc_i64 padded_vol, ptc_i64 total, int mode)
{
    const int nd = ndim;
    PTC_GRID_LOOP(e, total)
    {
        ptc_i64 plane = ptc_div(e, padded_vol);
        ptc_i64 rest = e - plane * padded_vol, off = 0;
        for (int d = nd - 1; d >= 0; d--) {
            ptc_i64 len = PTC_GEO(geo, PTC_GEO_PADDED, nd, d);
            ptc_i64 urest = ptc_div(rest, len);
            ptc_i64 u = rest - urest * len;
            rest = urest;
            ptc_i64 i = ptc_mode_index(mode, u - PTC_GEO(geo, PTC_GEO_PAD_LOW, nd, d),
                                       PTC_GEO(geo, PTC_GEO_IN, nd, d));
            off += i * PTC_GEO(geo, PTC_GEO_IN_STRIDE, nd, d);
        }
        dst[e] = src[plane * in_vol + off];
    }
}

/* The adjoint of padding along one dimension: src is (outer, padded, inner),
 * dst is (outer, len, inner) with padded = pad_low + len + pad_high, and
 *     dst[a, i, b] = sum of src[a, u, b] over the u that padding maps to i,
 * in increasing u. With the limits on padding of each mode (reflect: pad <
 * len; circular: pad <= len) every i has at most three such u. */
template <typename T>
__global__ void ptc_fold_dim(const T *__restrict__ src, T *__restrict__ dst, ptc_i64 padded,
                             ptc_i64 len, ptc_i64 inner, ptc_i64 pad_low, ptc_i64 total,
                             int mode)
{
    PTC_GRID_LOOP(e, total)
    {
        ptc_i64 a = ptc_div(e, inner);
        ptc_i64 b = e - a * inner;
        ptc_i64 outer = ptc_div(a, len);
        ptc_i64 i = a - outer * len;
        const T *s = src + outer * padded * inner + b;
        T sum = T(0);
        if (mode == PTC_MODE_REPLICATE) {
            ptc_i64 u_lo = i == 0 ? 0 : i + pad_low;
            ptc_i64 u_hi = i == len - 1 ? padded - 1 : i + pad_low;
            for (ptc_i64 u = u_lo; u <= u_hi; u++) sum += s[u * inner];
        } else if (mode == PTC_MODE_CIRCULAR) {
            for (int j = -1; j <= 1; j++) {
                ptc_i64 u = i + pad_low + j * len;
                if (u >= 0 && u < padded) sum += s[u * inner];
            }
        } else if (mode == PTC_MODE_REFLECT) {
            ptc_i64 u = pad_low - i; /* mirrored below the first element */
            if (i >= 1 && u >= 0) sum += s[u * inner];
            sum += s[(pad_low + i) * inner];
            u = pad_low + 2 * (len - 1) - i; /* mirrored above the last element */
            if (i <= len - 2 && u < padded) sum += s[u * inner];
        } else {
            sum = s[(pad_low + i) * inner];
        }
        dst[e] = sum;
    }
}

/* ---- bias --------------------------------------------------------------- */

/* y[n, c, j] += bias[c] for y of shape (batch, channels, spatial). */
template <typename T>
__global__ void ptc_bias_add(T *__restrict__ y, const T *__restrict__ bias, ptc_i64 channels,
                             ptc_i64 spatial, ptc_i64 total)
{
    PTC_GRID_LOOP(e, total)
    {
        ptc_i64 c = ptc_div(e, spatial);
        c -= ptc_div(c, channels) * channels;
        y[e] += bias[c];
    }
}

/* partial[c * nchunks + k] = sum of dy[n, c, j] over the flat (n, j) indices
 * k * chunk .. (k + 1) * chunk - 1 (in that order, in double precision). */
template <typename T>
__global__ void ptc_bias_partial(const T *__restrict__ dy, double *__restrict__ partial,
                                 ptc_i64 batch, ptc_i64 channels, ptc_i64 spatial,
                                 ptc_i64 chunk, ptc_i64 nchunks, ptc_i64 total)
{
    PTC_GRID_LOOP(e, total)
    {
        ptc_i64 c = ptc_div(e, nchunks);
        ptc_i64 k = e - c * nchunks;
        ptc_i64 f0 = k * chunk, f1 = ptc_min(f0 + chunk, batch * spatial);
        ptc_i64 n = ptc_div(f0, spatial), j = f0 - n * spatial;
        const T *row = dy + (n * channels + c) * spatial;
        double sum = 0.0;
        for (ptc_i64 f = f0; f < f1; f++) {
            sum += (double)row[j];
            if (++j == spatial) {
                j = 0;
                row += channels * spatial;
            }
        }
        partial[e] = sum;
    }
}

/* db[c] = the sum of partial[c, :] in order. */
template <typename T>
__global__ void ptc_bias_finish(const double *__restrict__ partial, T *__restrict__ db,
                                ptc_i64 channels, ptc_i64 nchunks)
{
    PTC_GRID_LOOP(c, channels)
    {
        double sum = 0.0;
        const double *row = partial + c * nchunks;
        for (ptc_i64 k = 0; k < nchunks; k++) sum += row[k];
        db[c] = (T)sum;
    }
}
