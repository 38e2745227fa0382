/* prunekit's own sparse kernels: y = x W^T + b for a weight stored as CSR with 16- or 32-bit
 * column indices, CSR with 8-bit column steps (delta8), a bitmask with the kept values, or
 * packed N:M (kept values + 4-bit positions within each group of M).
 *
 * Why our own: at batch 1 a sparse layer is bound by the bytes it reads. torch's CSR (MKL) reads
 * 32-bit column indices and row pointers; 16-bit indices read a third less, and packed N:M reads
 * half a byte per kept value and no row pointers. No maintained CPU library runs N:M.
 *
 * x is (batch, in) and y (batch, out), both row-major. At batch 1 each output row is a dot
 * product gathering from x, which sits in L1/L2. Above, x is first copied into tiles of W
 * batch rows, each tile stored column-major ((in, W), contiguous), and the weight is swept once
 * per tile: each kept weight multiplies W contiguous floats (one or a few AVX registers) while
 * the tile stays in L2. W is the widest of 32, 16, 8 whose tile fits in 128 KiB, so the
 * random accesses of a sweep hit L2, not L3 (a tile of the whole batch did not).
 * Rows are split between threads in equal shares of kept values, not of rows.
 *
 * Built by prunekit/deploy/build.py with -O3 -march=native -fopenmp; called through ctypes.
 */
#include <limits.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXW 64
#define TILE_BYTES (1024 * 1024)

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* acc[0:W] += v * xr[0:W], W a multiple of 8, written out: the compiler's own vectorisation of
 * this loop was 3x slower with 32-bit indices than with 16-bit ones (measured). */
static inline __attribute__((always_inline)) void axpy(float *acc, float v, const float *xr, const int W) {
    const __m256 vv = _mm256_set1_ps(v);
    for (int b = 0; b < W; b += 8)
        _mm256_storeu_ps(acc + b, _mm256_fmadd_ps(vv, _mm256_loadu_ps(xr + b), _mm256_loadu_ps(acc + b)));
}
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
static inline __m256i load_index8_u16(const uint16_t *p) { return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256i load_index8_i32(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
/* sum of vals[k] * x[cols[k]] over [k, end), eight at a time with AVX2 gathers */
#define GATHER_DOT(SUFFIX) \
static inline float gather_dot_##SUFFIX(const float *vals, const void *cols_, const float *x, int64_t k, int64_t end) { \
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(); \
    for (; k + 16 <= end; k += 16) { \
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + k), _mm256_i32gather_ps(x, load_index8_##SUFFIX(COLS_##SUFFIX + k), 4), a0); \
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(vals + k + 8), _mm256_i32gather_ps(x, load_index8_##SUFFIX(COLS_##SUFFIX + k + 8), 4), a1); \
    } \
    float s = hsum(_mm256_add_ps(a0, a1)); \
    for (; k < end; k++) s += vals[k] * x[COLS_##SUFFIX[k]]; \
    return s; \
}
#define COLS_u16 ((const uint16_t *)cols_)
#define COLS_i32 ((const int32_t *)cols_)
GATHER_DOT(u16)
GATHER_DOT(i32)
#define AXPY(acc, v, xr, W) do { if ((W) % 8 == 0) axpy(acc, v, xr, W); \
                                 else for (int b = 0; b < (W); b++) (acc)[b] += (v) * (xr)[b]; } while (0)
#else
#define AXPY(acc, v, xr, W) do { for (int b = 0; b < (W); b++) (acc)[b] += (v) * (xr)[b]; } while (0)
#endif

/* First row of thread t's share, by kept values (rowptr is nondecreasing). */
static int64_t row_split(const int64_t *rowptr, int64_t rows, int t, int nt) {
    if (t <= 0) return 0;
    if (t >= nt) return rows;
    int64_t target = rowptr[rows] / nt * t, lo = 0, hi = rows;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (rowptr[mid] < target) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static int tile_width(int64_t in, int64_t batch) {
    int w = MAXW;
    while (w > 8 && in * w * (int64_t)sizeof(float) > TILE_BYTES) w /= 2;
    return batch < w ? (int)batch : w;
}

/* x (batch, in) -> tiles: tile t holds rows [t*w, t*w + w) as (in, w); the last may be narrower. */
static float *pack_tiles(const float *x, int64_t batch, int64_t in, int w, int threads) {
    float *tiles = malloc(sizeof(float) * batch * in);
    if (!tiles) return NULL;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b0 = 0; b0 < batch; b0 += w) {
        int64_t nb = batch - b0 < w ? batch - b0 : w;
        float *tile = tiles + b0 * in;
        for (int64_t b = 0; b < nb; b++)
            for (int64_t c = 0; c < in; c++) tile[c * nb + b] = x[(b0 + b) * in + c];
    }
    return tiles;
}

#if defined(__AVX2__) && defined(__FMA__)
#define ROW_DOT(GS, vals, cols, x, k, end) gather_dot_##GS(vals, cols, x, k, end)
#else
#define ROW_DOT(GS, vals, cols, x, k, end) scalar_dot_##GS(vals, cols, x, k, end)
#endif
#define SCALAR_DOT(GS, INDEX)                                                                   \
static inline float scalar_dot_##GS(const float *vals, const INDEX *cols, const float *x,        \
                                    int64_t k, int64_t end) {                                   \
    float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;                                               \
    for (; k + 4 <= end; k += 4) {                                                              \
        a0 += vals[k] * x[cols[k]];                                                             \
        a1 += vals[k + 1] * x[cols[k + 1]];                                                     \
        a2 += vals[k + 2] * x[cols[k + 2]];                                                     \
        a3 += vals[k + 3] * x[cols[k + 3]];                                                     \
    }                                                                                           \
    for (; k < end; k++) a0 += vals[k] * x[cols[k]];                                            \
    return (a0 + a1) + (a2 + a3);                                                               \
}
SCALAR_DOT(u16, uint16_t)
SCALAR_DOT(i32, int32_t)

#define CSR_KERNELS(SUFFIX, INDEX, GS)                                                          \
static void csr_rows_##SUFFIX(const int64_t *rowptr, const INDEX *cols, const float *vals,      \
                              const float *x, const float *bias, float *y, int64_t r0,           \
                              int64_t r1) {                                                     \
    for (int64_t r = r0; r < r1; r++)                                                           \
        y[r] = ROW_DOT(GS, vals, cols, x, rowptr[r], rowptr[r + 1]) + (bias ? bias[r] : 0.f);   \
}                                                                                               \
                                                                                                \
/* One tile (in, W) of x into W rows of y (row stride out). Inlined with W a constant, the     \
 * accumulators live in registers. */                                                           \
static inline __attribute__((always_inline)) void csr_tile_##SUFFIX(                            \
        const int64_t *rowptr, const INDEX *cols, const float *vals, const float *tile,         \
        const float *bias, float *y, int64_t out, int64_t r0, int64_t r1, const int W) {        \
    for (int64_t r = r0; r < r1; r++) {                                                         \
        float acc[MAXW], start = bias ? bias[r] : 0.f;                                          \
        for (int b = 0; b < W; b++) acc[b] = start;                                             \
        for (int64_t k = rowptr[r]; k < rowptr[r + 1]; k++) {                                   \
            AXPY(acc, vals[k], tile + (int64_t)cols[k] * W, W);                                 \
        }                                                                                       \
        for (int b = 0; b < W; b++) y[b * out + r] = acc[b];                                    \
    }                                                                                           \
}                                                                                               \
                                                                                                \
int pk_csr_##SUFFIX(const int64_t *rowptr, const INDEX *cols, const float *vals,                \
                    const float *x, const float *bias, float *y,                                \
                    int64_t batch, int64_t in, int64_t out, int threads) {                      \
    int w = tile_width(in, batch);                                                              \
    float *tiles = batch > 1 ? pack_tiles(x, batch, in, w, threads) : NULL;                              \
    if (batch > 1 && !tiles) return 1;                                                          \
    _Pragma("omp parallel num_threads(threads)")                                                \
    {                                                                                           \
        int t = omp_get_thread_num(), nt = omp_get_num_threads();                               \
        int64_t r0 = row_split(rowptr, out, t, nt), r1 = row_split(rowptr, out, t + 1, nt);     \
        if (batch == 1)                                                                         \
            csr_rows_##SUFFIX(rowptr, cols, vals, x, bias, y, r0, r1);                          \
        for (int64_t b0 = 0; batch > 1 && b0 < batch; b0 += w) {                                \
            const float *tile = tiles + b0 * in;                                                \
            float *yb = y + b0 * out;                                                           \
            int64_t nb = batch - b0 < w ? batch - b0 : w;                                       \
            if (nb == 64) csr_tile_##SUFFIX(rowptr, cols, vals, tile, bias, yb, out, r0, r1, 64); \
            else if (nb == 32) csr_tile_##SUFFIX(rowptr, cols, vals, tile, bias, yb, out, r0, r1, 32); \
            else if (nb == 16) csr_tile_##SUFFIX(rowptr, cols, vals, tile, bias, yb, out, r0, r1, 16); \
            else if (nb == 8) csr_tile_##SUFFIX(rowptr, cols, vals, tile, bias, yb, out, r0, r1, 8); \
            else csr_tile_##SUFFIX(rowptr, cols, vals, tile, bias, yb, out, r0, r1, (int)nb);   \
        }                                                                                       \
    }                                                                                           \
    free(tiles);                                                                                \
    return 0;                                                                                   \
}

CSR_KERNELS(i16, uint16_t, u16)
CSR_KERNELS(i32, int32_t, i32)

/* Packed N:M: per output row, `kept` = in * n / m values, and positions as nibbles (two per
 * byte, the first in the low nibble); value j belongs to group j / n, column (j / n) * m + pos. */
static inline int nm_column(const uint8_t *p, int64_t j, int n, int m) {
    int q = j & 1 ? p[j >> 1] >> 4 : p[j >> 1] & 15;
    return (int)(j / n) * m + q;
}

static void nm_rows(const float *vals, const uint8_t *pos, const float *x, const float *bias,
                    float *y, int64_t kept, int n, int m, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const float *v = vals + r * kept;
        const uint8_t *p = pos + r * ((kept + 1) / 2);
        float a0 = 0.f, a1 = 0.f;
        if (n == 2) { /* the common 2:M case: one byte holds a group's two positions */
            for (int64_t g = 0; g < kept / 2; g++) {
                const float *xg = x + g * m;
                a0 += v[2 * g] * xg[p[g] & 15];
                a1 += v[2 * g + 1] * xg[p[g] >> 4];
            }
        } else {
            for (int64_t j = 0; j < kept; j++) a0 += v[j] * x[nm_column(p, j, n, m)];
        }
        y[r] = a0 + a1 + (bias ? bias[r] : 0.f);
    }
}

static inline __attribute__((always_inline)) void nm_tile(
        const float *vals, const uint8_t *pos, const float *tile, const float *bias, float *y,
        int64_t out, int64_t kept, int n, int m, int64_t r0, int64_t r1, const int W) {
    for (int64_t r = r0; r < r1; r++) {
        const float *v = vals + r * kept;
        const uint8_t *p = pos + r * ((kept + 1) / 2);
        float acc[MAXW], start = bias ? bias[r] : 0.f;
        for (int b = 0; b < W; b++) acc[b] = start;
        for (int64_t j = 0; j < kept; j++) {
            AXPY(acc, v[j], tile + (int64_t)nm_column(p, j, n, m) * W, W);
        }
        for (int b = 0; b < W; b++) y[b * out + r] = acc[b];
    }
}

int pk_nm(const float *vals, const uint8_t *pos, const float *x, const float *bias, float *y,
          int64_t batch, int64_t in, int64_t out, int64_t kept, int n, int m, int threads) {
    int w = tile_width(in, batch);
    float *tiles = batch > 1 ? pack_tiles(x, batch, in, w, threads) : NULL;
    if (batch > 1 && !tiles) return 1;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t r0 = out * t / nt, r1 = out * (t + 1) / nt; /* every row keeps the same count */
        if (batch == 1)
            nm_rows(vals, pos, x, bias, y, kept, n, m, r0, r1);
        for (int64_t b0 = 0; batch > 1 && b0 < batch; b0 += w) {
            const float *tile = tiles + b0 * in;
            float *yb = y + b0 * out;
            int64_t nb = batch - b0 < w ? batch - b0 : w;
            if (nb == 64) nm_tile(vals, pos, tile, bias, yb, out, kept, n, m, r0, r1, 64);
            else if (nb == 32) nm_tile(vals, pos, tile, bias, yb, out, kept, n, m, r0, r1, 32);
            else if (nb == 16) nm_tile(vals, pos, tile, bias, yb, out, kept, n, m, r0, r1, 16);
            else if (nb == 8) nm_tile(vals, pos, tile, bias, yb, out, kept, n, m, r0, r1, 8);
            else nm_tile(vals, pos, tile, bias, yb, out, kept, n, m, r0, r1, (int)nb);
        }
    }
    free(tiles);
    return 0;
}

/* CSR with 8-bit column deltas: within a row, each entry's column is the previous one's plus
 * its delta (the first's, plus 0); a gap over 255 is bridged by entries of value 0 and delta
 * 255. 5 bytes per kept weight against 6 for 16-bit indices: a batch-1 layer reads a sixth less. */
static void delta_rows(const int64_t *rowptr, const uint8_t *deltas, const float *vals, const float *x,
                       const float *bias, float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
        int64_t k = rowptr[r], end = rowptr[r + 1], col = 0;
        for (; k + 4 <= end; k += 4) {
            col += deltas[k];     a0 += vals[k] * x[col];
            col += deltas[k + 1]; a1 += vals[k + 1] * x[col];
            col += deltas[k + 2]; a2 += vals[k + 2] * x[col];
            col += deltas[k + 3]; a3 += vals[k + 3] * x[col];
        }
        for (; k < end; k++) {
            col += deltas[k];
            a0 += vals[k] * x[col];
        }
        y[r] = (a0 + a1) + (a2 + a3) + (bias ? bias[r] : 0.f);
    }
}

static inline __attribute__((always_inline)) void delta_tile(
        const int64_t *rowptr, const uint8_t *deltas, const float *vals, const float *tile,
        const float *bias, float *y, int64_t out, int64_t r0, int64_t r1, const int W) {
    for (int64_t r = r0; r < r1; r++) {
        float acc[MAXW], start = bias ? bias[r] : 0.f;
        int64_t col = 0;
        for (int b = 0; b < W; b++) acc[b] = start;
        for (int64_t k = rowptr[r]; k < rowptr[r + 1]; k++) {
            col += deltas[k];
            AXPY(acc, vals[k], tile + col * W, W);
        }
        for (int b = 0; b < W; b++) y[b * out + r] = acc[b];
    }
}

int pk_delta8(const int64_t *rowptr, const uint8_t *deltas, const float *vals, const float *x,
              const float *bias, float *y, int64_t batch, int64_t in, int64_t out, int threads) {
    int w = tile_width(in, batch);
    float *tiles = batch > 1 ? pack_tiles(x, batch, in, w, threads) : NULL;
    if (batch > 1 && !tiles) return 1;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t r0 = row_split(rowptr, out, t, nt), r1 = row_split(rowptr, out, t + 1, nt);
        if (batch == 1)
            delta_rows(rowptr, deltas, vals, x, bias, y, r0, r1);
        for (int64_t b0 = 0; batch > 1 && b0 < batch; b0 += w) {
            const float *tile = tiles + b0 * in;
            float *yb = y + b0 * out;
            int64_t nb = batch - b0 < w ? batch - b0 : w;
            if (nb == 64) delta_tile(rowptr, deltas, vals, tile, bias, yb, out, r0, r1, 64);
            else if (nb == 32) delta_tile(rowptr, deltas, vals, tile, bias, yb, out, r0, r1, 32);
            else if (nb == 16) delta_tile(rowptr, deltas, vals, tile, bias, yb, out, r0, r1, 16);
            else if (nb == 8) delta_tile(rowptr, deltas, vals, tile, bias, yb, out, r0, r1, 8);
            else delta_tile(rowptr, deltas, vals, tile, bias, yb, out, r0, r1, (int)nb);
        }
    }
    free(tiles);
    return 0;
}

/* Bitmask: per row, one bit per column (row r's bits start at byte r * ((in + 63) / 64) * 8,
 * column c at bit c % 8 of byte c / 8, padding bits zero), the kept values in row order, and
 * rowptr (offset of each row's first value). 4 bytes per kept weight plus 1/8 per weight: the
 * fewest bytes below 87.5 % sparse (2.125 per weight at 50 % and 2:4, against 2.5 for delta8).
 * At batch 1 each byte of mask expands 8 values into a vector with no gathers (a table of
 * permutations), multiplied with 8 contiguous inputs. The values array carries 8 floats of
 * padding after the last kept one, which that expansion may read and discards. */
static inline int64_t mask_stride(int64_t in) { return (in + 63) / 64 * 8; }

#if defined(__AVX2__) && defined(__FMA__)
/* EXPAND[m][i]: for a set bit i of m, the index of its value among the byte's kept ones; for a
 * clear bit, the sign bit set (blendv then takes 0 there). */
static int32_t EXPAND[256][8];
__attribute__((constructor)) static void make_expand(void) {
    for (int m = 0; m < 256; m++)
        for (int i = 0, k = 0; i < 8; i++)
            EXPAND[m][i] = (m >> i) & 1 ? k++ : INT32_MIN;
}

static inline __m256 expand8(const float *v, unsigned m) {
    __m256i idx = _mm256_loadu_si256((const __m256i *)EXPAND[m]);
    __m256 w = _mm256_permutevar8x32_ps(_mm256_loadu_ps(v), idx);
    return _mm256_blendv_ps(w, _mm256_setzero_ps(), _mm256_castsi256_ps(idx));
}

/* xp: x padded with zeros to the mask's width (a multiple of 64), so every byte reads 8 inputs */
static void bitmask_rows(const int64_t *rowptr, const uint8_t *mask, const float *vals, const float *xp,
                         const float *bias, float *y, int64_t in, int64_t r0, int64_t r1) {
    int64_t stride = mask_stride(in);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *mr = mask + r * stride;
        const float *v = vals + rowptr[r];
        /* four accumulators: one would wait on the FMA's latency at every byte */
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t j = 0; j < stride; j += 4) {
            const float *v1 = v + __builtin_popcount(mr[j]), *v2 = v1 + __builtin_popcount(mr[j + 1]);
            const float *v3 = v2 + __builtin_popcount(mr[j + 2]);
            a0 = _mm256_fmadd_ps(expand8(v, mr[j]), _mm256_loadu_ps(xp + 8 * j), a0);
            a1 = _mm256_fmadd_ps(expand8(v1, mr[j + 1]), _mm256_loadu_ps(xp + 8 * j + 8), a1);
            a2 = _mm256_fmadd_ps(expand8(v2, mr[j + 2]), _mm256_loadu_ps(xp + 8 * j + 16), a2);
            a3 = _mm256_fmadd_ps(expand8(v3, mr[j + 3]), _mm256_loadu_ps(xp + 8 * j + 24), a3);
            v = v3 + __builtin_popcount(mr[j + 3]);
        }
        y[r] = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + (bias ? bias[r] : 0.f);
    }
}
#else
static void bitmask_rows(const int64_t *rowptr, const uint8_t *mask, const float *vals, const float *xp,
                         const float *bias, float *y, int64_t in, int64_t r0, int64_t r1) {
    int64_t stride = mask_stride(in);
    for (int64_t r = r0; r < r1; r++) {
        const float *v = vals + rowptr[r];
        float a = 0.f;
        for (int64_t j = 0; j < stride; j++)
            for (unsigned m = mask[r * stride + j]; m; m &= m - 1) a += *v++ * xp[8 * j + __builtin_ctz(m)];
        y[r] = a + (bias ? bias[r] : 0.f);
    }
}
#endif

static inline __attribute__((always_inline)) void bitmask_tile(
        const int64_t *rowptr, const uint8_t *mask, const float *vals, const float *tile, const float *bias,
        float *y, int64_t in, int64_t out, int64_t r0, int64_t r1, const int W) {
    int64_t stride = mask_stride(in);
    for (int64_t r = r0; r < r1; r++) {
        const float *v = vals + rowptr[r];
        float acc[MAXW], start = bias ? bias[r] : 0.f;
        for (int b = 0; b < W; b++) acc[b] = start;
        for (int64_t j = 0; j < stride; j += 8) {
            uint64_t m;
            memcpy(&m, mask + r * stride + j, 8);
            for (; m; m &= m - 1) {
                AXPY(acc, *v, tile + (8 * j + __builtin_ctzll(m)) * W, W);
                v++;
            }
        }
        for (int b = 0; b < W; b++) y[b * out + r] = acc[b];
    }
}

int pk_bitmask(const int64_t *rowptr, const uint8_t *mask, const float *vals, const float *x,
               const float *bias, float *y, int64_t batch, int64_t in, int64_t out, int threads) {
    int w = tile_width(in, batch);
    float *xp = NULL, *tiles = NULL;
    if (batch == 1) {
        xp = calloc(8 * mask_stride(in), sizeof(float));
        if (xp) memcpy(xp, x, sizeof(float) * in);
    } else {
        tiles = pack_tiles(x, batch, in, w, threads);
    }
    if (!xp && !tiles) return 1;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t r0 = row_split(rowptr, out, t, nt), r1 = row_split(rowptr, out, t + 1, nt);
        if (batch == 1)
            bitmask_rows(rowptr, mask, vals, xp, bias, y, in, r0, r1);
        for (int64_t b0 = 0; batch > 1 && b0 < batch; b0 += w) {
            const float *tile = tiles + b0 * in;
            float *yb = y + b0 * out;
            int64_t nb = batch - b0 < w ? batch - b0 : w;
            if (nb == 64) bitmask_tile(rowptr, mask, vals, tile, bias, yb, in, out, r0, r1, 64);
            else if (nb == 32) bitmask_tile(rowptr, mask, vals, tile, bias, yb, in, out, r0, r1, 32);
            else if (nb == 16) bitmask_tile(rowptr, mask, vals, tile, bias, yb, in, out, r0, r1, 16);
            else if (nb == 8) bitmask_tile(rowptr, mask, vals, tile, bias, yb, in, out, r0, r1, 8);
            else bitmask_tile(rowptr, mask, vals, tile, bias, yb, in, out, r0, r1, (int)nb);
        }
    }
    free(xp);
    free(tiles);
    return 0;
}
