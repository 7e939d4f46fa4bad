# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin Cython bridge to the C core: fills a ptc_problem from a checked
`Problem`, releases the GIL for the whole computation and turns statuses into
Python exceptions. Arguments arrive validated (pytconv._args); arrays arrive
C-contiguous with the problem's shapes and one dtype."""

cimport numpy as cnp
import numpy as np
from cpython.buffer cimport PyBUF_FORMAT
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "Python.h":
    # Declared without an exception clause: the callback below leaves the
    # exception set for the caller to raise once the C call has returned.
    int PyErr_CheckSignals()
    void *PyErr_Occurred()

cdef extern from "pytconv.h" nogil:
    enum: PTC_MAX_NDIM
    ctypedef enum ptc_status:
        PTC_OK
        PTC_ERR_INVALID_ARGUMENT
        PTC_ERR_OVERFLOW
        PTC_ERR_NO_MEMORY
        PTC_ERR_INTERRUPTED
        PTC_ERR_THREAD
    ctypedef enum ptc_dtype:
        PTC_FLOAT32
        PTC_FLOAT64
    ctypedef enum ptc_padding_mode:
        PTC_PAD_ZEROS
        PTC_PAD_REFLECT
        PTC_PAD_REPLICATE
        PTC_PAD_CIRCULAR
    ctypedef struct ptc_problem:
        int ndim
        int64_t batch, in_channels, out_channels, groups
        int64_t in_size[PTC_MAX_NDIM]
        int64_t out_size[PTC_MAX_NDIM]
        int64_t kernel[PTC_MAX_NDIM]
        int64_t stride[PTC_MAX_NDIM]
        int64_t dilation[PTC_MAX_NDIM]
        int64_t pad_low[PTC_MAX_NDIM]
        int64_t pad_high[PTC_MAX_NDIM]
        ptc_padding_mode padding_mode
    ctypedef struct ptc_options:
        int (*should_stop)(void *data) noexcept
        void *should_stop_data

    ptc_status ptc_conv_forward(const ptc_problem *p, ptc_dtype dtype, const void *x,
                                const void *w, const void *bias, void *y, const ptc_options *opt)
    ptc_status ptc_conv_backward_data(const ptc_problem *p, ptc_dtype dtype, const void *dy,
                                      const void *w, void *dx, const ptc_options *opt)
    ptc_status ptc_conv_backward_filter(const ptc_problem *p, ptc_dtype dtype, const void *x,
                                        const void *dy, void *dw, const ptc_options *opt)
    ptc_status ptc_bias_backward(int64_t batch, int64_t channels, int64_t spatial,
                                 ptc_dtype dtype, const void *dy, void *db)
    void ptc_set_num_threads(int n)
    int ptc_get_num_threads()
    const char *ptc_simd_level()
    const char *ptc_status_message(ptc_status s)

MAX_NDIM = PTC_MAX_NDIM

cdef dict _MODES = {
    "zeros": PTC_PAD_ZEROS,
    "reflect": PTC_PAD_REFLECT,
    "replicate": PTC_PAD_REPLICATE,
    "circular": PTC_PAD_CIRCULAR,
}

cdef int _fill(ptc_problem *p, object obj) except -1:
    # A Problem is a NamedTuple: (batch, in_channels, out_channels, groups,
    # in_size, out_size, kernel, stride, dilation, pad_low, pad_high,
    # padding_mode). Indexing it as a tuple skips attribute lookups, which
    # are a good part of a tiny call's cost.
    if not isinstance(obj, tuple) or len(<tuple>obj) != 12:
        raise TypeError("pytconv: internal error, expected a Problem")
    cdef tuple problem = <tuple>obj
    cdef tuple in_size = problem[4], out_size = problem[5], kernel = problem[6]
    cdef tuple stride = problem[7], dilation = problem[8], pad_low = problem[9]
    cdef tuple pad_high = problem[10]
    cdef int d, n = len(kernel)
    if n < 1 or n > PTC_MAX_NDIM:
        raise ValueError(f"pytconv: {n} spatial dimensions, 1..{PTC_MAX_NDIM} supported")
    p.ndim = n
    p.batch = problem[0]
    p.in_channels = problem[1]
    p.out_channels = problem[2]
    p.groups = problem[3]
    for d in range(n):
        p.in_size[d] = in_size[d]
        p.out_size[d] = out_size[d]
        p.kernel[d] = kernel[d]
        p.stride[d] = stride[d]
        p.dilation[d] = dilation[d]
        p.pad_low[d] = pad_low[d]
        p.pad_high[d] = pad_high[d]
    p.padding_mode = _MODES[problem[11]]
    return 0

cdef int _stop_on_signal(void *data) noexcept nogil:
    # Runs on the calling thread every ~20 ms: lets Ctrl-C interrupt a long call.
    with gil:
        return PyErr_CheckSignals() != 0

cdef int _raise_pending() except -1:
    return -1

cdef int _check(ptc_status status) except -1:
    if status == PTC_OK:
        return 0
    if status == PTC_ERR_INTERRUPTED:
        if PyErr_Occurred() != NULL:
            _raise_pending()
        raise KeyboardInterrupt
    if status == PTC_ERR_NO_MEMORY:
        raise MemoryError("pytconv: " + ptc_status_message(status).decode())
    if status == PTC_ERR_THREAD:
        raise RuntimeError("pytconv: " + ptc_status_message(status).decode())
    raise ValueError("pytconv: " + ptc_status_message(status).decode())

cdef ptc_dtype _dtype(cnp.ndarray a) except *:
    if a.dtype.num == cnp.NPY_FLOAT32:
        return PTC_FLOAT32
    if a.dtype.num == cnp.NPY_FLOAT64:
        return PTC_FLOAT64
    raise TypeError(f"pytconv: unsupported dtype {a.dtype}")

cdef void *_data(cnp.ndarray a) except? NULL:
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError("pytconv: internal error, array is not C-contiguous")
    return cnp.PyArray_DATA(a)

cdef ptc_options _options():
    cdef ptc_options opt
    opt.should_stop = _stop_on_signal
    opt.should_stop_data = NULL
    return opt


# One runner per primitive; the array entry points and the raw-address ones
# (for adapters whose tensors are not NumPy arrays: a torch tensor's .numpy()
# view costs about a microsecond) only differ in where pointers come from.

cdef int _run_forward(problem, ptc_dtype dt, const void *x, const void *w, const void *b,
                      void *y) except -1:
    cdef ptc_problem p
    cdef ptc_status st
    cdef ptc_options opt = _options()
    _fill(&p, problem)
    with nogil:
        st = ptc_conv_forward(&p, dt, x, w, b, y, &opt)
    return _check(st)


cdef int _run_backward_data(problem, ptc_dtype dt, const void *dy, const void *w,
                            void *dx) except -1:
    cdef ptc_problem p
    cdef ptc_status st
    cdef ptc_options opt = _options()
    _fill(&p, problem)
    with nogil:
        st = ptc_conv_backward_data(&p, dt, dy, w, dx, &opt)
    return _check(st)


cdef int _run_backward_filter(problem, ptc_dtype dt, const void *x, const void *dy,
                              void *dw) except -1:
    cdef ptc_problem p
    cdef ptc_status st
    cdef ptc_options opt = _options()
    _fill(&p, problem)
    with nogil:
        st = ptc_conv_backward_filter(&p, dt, x, dy, dw, &opt)
    return _check(st)


def forward(problem, cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y):
    """y = conv(x, w) (+ bias), written into y."""
    _run_forward(problem, _dtype(x), _data(x), _data(w),
                 NULL if bias is None else _data(<cnp.ndarray>bias), _data(y))


def backward_data(problem, cnp.ndarray dy, cnp.ndarray w, cnp.ndarray dx):
    """dx = conv^T(dy), written into dx."""
    _run_backward_data(problem, _dtype(dy), _data(dy), _data(w), _data(dx))


def backward_filter(problem, cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dw):
    """dw = d<conv(x, w), dy>/dw, written into dw."""
    _run_backward_filter(problem, _dtype(x), _data(x), _data(dy), _data(dw))


def bias_backward(cnp.ndarray dy, cnp.ndarray db):
    """db[c] = sum of dy[:, c, ...]; dy is (batch, channels, *spatial)."""
    cdef int64_t batch = dy.shape[0], channels = dy.shape[1]
    cdef int64_t spatial = 1
    cdef int d
    for d in range(2, dy.ndim):
        spatial *= dy.shape[d]
    cdef ptc_dtype dt = _dtype(dy)
    cdef const void *pdy = _data(dy)
    cdef void *pdb = _data(db)
    cdef ptc_status st
    with nogil:
        st = ptc_bias_backward(batch, channels, spatial, dt, pdy, pdb)
    _check(st)


# The raw-address variants: the caller passes the addresses of C-contiguous
# buffers of the problem's shapes and keeps them alive for the call; dtype is
# 0 (float32) or 1 (float64).

cdef ptc_dtype _dtype_code(int code) except *:
    if code == 0:
        return PTC_FLOAT32
    if code == 1:
        return PTC_FLOAT64
    raise TypeError(f"pytconv: unsupported dtype code {code}")


def forward_raw(problem, int dtype, size_t x, size_t w, size_t bias, size_t y):
    """forward() on raw addresses (bias 0: none)."""
    _run_forward(problem, _dtype_code(dtype), <const void *>x, <const void *>w,
                 <const void *>bias if bias else NULL, <void *>y)


def backward_data_raw(problem, int dtype, size_t dy, size_t w, size_t dx):
    """backward_data() on raw addresses."""
    _run_backward_data(problem, _dtype_code(dtype), <const void *>dy, <const void *>w,
                       <void *>dx)


def backward_filter_raw(problem, int dtype, size_t x, size_t dy, size_t dw):
    """backward_filter() on raw addresses."""
    _run_backward_filter(problem, _dtype_code(dtype), <const void *>x, <const void *>dy,
                         <void *>dw)


def set_num_threads(int n):
    ptc_set_num_threads(n)


def get_num_threads():
    return ptc_get_num_threads()


def simd_level():
    return ptc_simd_level().decode()


# ---- memory of results ------------------------------------------------------
#
# A result array's memory, fresh from the system, costs a page fault per 4 KiB
# on its first write (in a virtual machine, with the kernel zeroing each page:
# for the 17 MB output of a 4-d transposed convolution, 0.5 ms of a 2 ms call).
# So large results take their memory from a small pool of blocks that earlier
# results gave back when they were released, as framework allocators do. The
# pool holds at most POOL_BLOCKS blocks and POOL_BYTES bytes; a block is taken
# for a request no more than twice smaller. Data starts on a 64-byte line.

cdef extern from *:
    """
    /* Large blocks in transparent huge pages where Linux offers them, as NumPy
     * asks for its own: fewer TLB misses for strided access. */
    #if defined(__linux__)
    #include <sys/mman.h>
    static void pytconv_advise_huge(char *p, size_t n)
    {
        size_t skip = (4096 - (size_t)((uintptr_t)p % 4096)) % 4096;
        if (n >= ((size_t)4 << 20) && n > skip) madvise(p + skip, n - skip, MADV_HUGEPAGE);
    }
    #else
    static void pytconv_advise_huge(char *p, size_t n) { (void)p; (void)n; }
    #endif
    """
    void pytconv_advise_huge(char *p, size_t n)

cdef enum:
    POOL_BLOCKS = 4
    POOL_BYTES = 256 << 20
    LINE = 64

cdef char *_pool_raw[POOL_BLOCKS]
cdef size_t _pool_size[POOL_BLOCKS]
cdef int _pool_count = 0
cdef size_t _pool_total = 0


cdef void _pool_drop(int k):
    """Removes entry k from the pool, keeping the others oldest first."""
    global _pool_count, _pool_total
    cdef int i
    _pool_total -= _pool_size[k]
    _pool_count -= 1
    for i in range(k, _pool_count):
        _pool_raw[i] = _pool_raw[i + 1]
        _pool_size[i] = _pool_size[i + 1]


cdef char *_pool_take(size_t nbytes, size_t *size):
    """A block of at least nbytes (+ LINE for alignment), from the pool if one
    fits, else from malloc (NULL if that fails); its size into *size."""
    cdef int i, best = -1
    cdef size_t need = nbytes + LINE
    for i in range(_pool_count):
        if need <= _pool_size[i] <= 2 * need and (best < 0 or _pool_size[i] < _pool_size[best]):
            best = i
    cdef char *fresh
    if best < 0:
        size[0] = need
        fresh = <char *>malloc(need)
        if fresh != NULL:
            pytconv_advise_huge(fresh, need)
        return fresh
    cdef char *raw = _pool_raw[best]
    size[0] = _pool_size[best]
    _pool_drop(best)
    return raw


cdef void _pool_give(char *raw, size_t size):
    """Keeps a released block, the oldest ones freed to make room."""
    global _pool_count, _pool_total
    if size > POOL_BYTES:
        free(raw)
        return
    while _pool_count and (_pool_count == POOL_BLOCKS or _pool_total + size > POOL_BYTES):
        free(_pool_raw[0])
        _pool_drop(0)
    _pool_raw[_pool_count] = raw
    _pool_size[_pool_count] = size
    _pool_count += 1
    _pool_total += size


cdef class _Block:
    """The memory behind one result array (its base): exported as bytes, and
    given back to the pool when the array, and so the block, goes."""
    cdef char *raw
    cdef char *data
    cdef size_t size
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *view, int flags):
        view.buf = self.data
        view.obj = self
        view.len = self.shape[0]
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL  # NULL: unsigned bytes ("B")
        if flags & PyBUF_FORMAT:
            view.format = b"B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __dealloc__(self):
        if self.raw != NULL:
            _pool_give(self.raw, self.size)


def empty(shape, dtype, size_t nbytes):
    """An uninitialised C-contiguous array of `shape` and `dtype` (nbytes in
    all), its memory from the pool of released results."""
    cdef _Block block = _Block.__new__(_Block)
    block.raw = _pool_take(nbytes, &block.size)
    if block.raw == NULL:
        raise MemoryError(f"pytconv: cannot allocate {nbytes} bytes for a result")
    block.data = block.raw + (-<uintptr_t>block.raw) % LINE
    block.shape[0] = <Py_ssize_t>nbytes
    block.strides[0] = 1
    return np.frombuffer(block, dtype=dtype).reshape(shape)


def pooled_bytes():
    """Bytes held by the pool of released results (for tests)."""
    return _pool_total
