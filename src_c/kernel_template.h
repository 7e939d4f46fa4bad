/* One micro-kernel, instantiated per ISA and type by defining before inclusion:
 *   KERNEL_NAME, REAL, VEC, VLEN (elements per vector), NV (vectors per row),
 *   MR (rows), VLOAD, VSTORE, VSET1, VZERO, VFMA(a, b, c) = a * b + c, VADD.
 * NR = NV * VLEN. The accumulator tile MR x NV lives in registers. */

#define NR (NV * VLEN)

static void KERNEL_NAME(int64_t kc, const REAL *a, const REAL *b, int64_t ldb, REAL *c,
                        int64_t ldc, int accumulate, int64_t mr, int64_t nr)
{
    VEC acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[i][v] = VZERO;

    for (int64_t k = 0; k < kc; k++) {
        VEC bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) bv[v] = VLOAD(b + v * VLEN);
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            VEC ai = VSET1(a[i]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[i][v] = VFMA(ai, bv[v], acc[i][v]);
        }
        a += MR;
        b += ldb;
    }

    if (mr == MR && nr == NR) {
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) {
                REAL *ci = c + i * ldc + v * VLEN;
                VSTORE(ci, accumulate ? VADD(VLOAD(ci), acc[i][v]) : acc[i][v]);
            }
        return;
    }
    REAL tile[MR * NR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) VSTORE(tile + i * NR + v * VLEN, acc[i][v]);
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++)
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
}

#undef NR
