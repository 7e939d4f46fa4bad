/* Runtime choice of the micro-kernel set, made once per process. */
#include "kernels.h"

#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

static int cpu_has(const char *feature)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (strcmp(feature, "avx512") == 0) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
    }
    if (strcmp(feature, "avx2") == 0) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
#endif
    (void)feature;
    return 0;
}

static const ptc_kernel_set *choose(void)
{
    /* PYTCONV_SIMD=generic|avx2|avx512 caps the choice (tests run every path). */
    const char *cap = getenv("PYTCONV_SIMD");
    int allow_avx512 = !cap || strcmp(cap, "avx512") == 0;
    int allow_avx2 = allow_avx512 || (cap && strcmp(cap, "avx2") == 0);
    (void)allow_avx2;
#ifdef PTC_HAVE_AVX512
    if (allow_avx512 && cpu_has("avx512")) return &ptc_kernels_avx512;
#endif
#ifdef PTC_HAVE_AVX2
    if (allow_avx2 && cpu_has("avx2")) return &ptc_kernels_avx2;
#endif
    (void)cpu_has;
    return &ptc_kernels_generic;
}

static const ptc_kernel_set *_Atomic chosen;

const ptc_kernel_set *ptc_kernels(void)
{
    const ptc_kernel_set *k = atomic_load(&chosen);
    if (!k) {
        k = choose(); /* idempotent: racing threads store the same pointer */
        atomic_store(&chosen, k);
    }
    return k;
}
