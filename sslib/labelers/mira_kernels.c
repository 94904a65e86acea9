/* Fused CPU kernels for MIRA's fixed point (sslib/labelers/mira.py), compiled at first use by
 * sslib.native. Plain C99, no Python or torch headers: every array is a float32 pointer with its
 * sizes, checked by the caller (contiguous, on the CPU, shapes consistent).
 *
 * q is a (rows, cols) row-major matrix. One iteration of Eq. 7 needs s = q v and then
 * mass = q^T (1 / s); as two mat-vecs that reads q twice. sslib_mira_pass reads it once: rows are
 * taken ROWS (8) at a time, their dot products with v are formed, and the same rows (now in L1 cache)
 * are added into mass, so each load of v and of mass serves ROWS rows. Partial sums are kept in
 * LANES independent accumulators per row, which lets the compiler vectorise the reductions
 * without -ffast-math.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ROWS 8
#define LANES 8

/* out[r] = sum_k a[r * ld + k] * b[k] for the ROWS rows starting at a. */
static void dot_block(const float *restrict a, int64_t ld, const float *restrict b, int64_t n,
                      float *restrict out) {
    float acc[ROWS][LANES] = {{0.0f}};
    int64_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; ++l)
            for (int r = 0; r < ROWS; ++r) acc[r][l] += a[r * ld + k + l] * b[k + l];
    for (int r = 0; r < ROWS; ++r) {
        float total = 0.0f;
        for (int64_t j = k; j < n; ++j) total += a[r * ld + j] * b[j];
        for (int l = 0; l < LANES; ++l) total += acc[r][l];
        out[r] = total;
    }
}

/* sum_k a[k] * b[k] for one row. */
static float dot_row(const float *restrict a, const float *restrict b, int64_t n) {
    float acc[LANES] = {0.0f};
    int64_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; ++l) acc[l] += a[k + l] * b[k + l];
    float total = 0.0f;
    for (; k < n; ++k) total += a[k] * b[k];
    for (int l = 0; l < LANES; ++l) total += acc[l];
    return total;
}

/* Rows [begin, end) of one pass: r_i = 1 / sum_k q_ik v_k, acc_j += sum_i q_ij r_i (float64). */
static void pass_rows(const float *restrict q, const float *restrict v, float *restrict r,
                      double *restrict acc, int64_t begin, int64_t end, int64_t cols) {
    int64_t i = begin;
    for (; i + ROWS <= end; i += ROWS) {
        const float *restrict a = q + i * cols;
        float d[ROWS];
        dot_block(a, cols, v, cols, d);
        for (int b = 0; b < ROWS; ++b) r[i + b] = d[b] = 1.0f / d[b];
        for (int64_t k = 0; k < cols; ++k) {
            float lo = a[k] * d[0], hi = a[(ROWS / 2) * cols + k] * d[ROWS / 2];
            for (int b = 1; b < ROWS / 2; ++b) {
                lo += a[b * cols + k] * d[b];
                hi += a[(b + ROWS / 2) * cols + k] * d[b + ROWS / 2];
            }
            acc[k] += (double)lo + (double)hi;
        }
    }
    for (; i < end; ++i) {
        const float *restrict a = q + i * cols;
        const float d = r[i] = 1.0f / dot_row(a, v, cols);
        for (int64_t k = 0; k < cols; ++k) acc[k] += (double)(a[k] * d);
    }
}

/* One pass of Eq. 7: r_i = 1 / sum_k q_ik v_k (rows,), mass_j = sum_i q_ij r_i (cols,).
 * Blocks of rows are split over `threads` OpenMP threads (when built with OpenMP), each summing its
 * columns into its own float64 row of acc (threads x cols); the rows are then added in thread order,
 * so the result depends on the thread count only through that order. Float64 column sums: float32
 * accumulation over the batch was the largest error in the fixed point, which beta / (1 - beta)
 * then amplifies. */
void sslib_mira_pass(const float *restrict q, const float *restrict v, float *restrict r,
                     float *restrict mass, double *restrict acc, int64_t rows, int64_t cols,
                     int threads) {
    const int64_t blocks = (rows + ROWS - 1) / ROWS;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = 0, n = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        n = omp_get_num_threads();
#endif
        double *restrict own = acc + t * cols;
        memset(own, 0, (size_t)cols * sizeof(double));
        const int64_t begin = blocks * t / n * ROWS, end = blocks * (t + 1) / n * ROWS;
        pass_rows(q, v, r, own, begin, end < rows ? end : rows, cols);
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t k = 0; k < cols; ++k) {
            double total = 0.0;
            for (int u = 0; u < n; ++u) total += acc[u * cols + k];
            mass[k] = (float)total;
        }
    }
}

/* v_j = max(mass_j / max_k mass_k, floor)^(-beta), in place: the cluster weights from the column
 * mass (the marginal relative to the largest cluster, floored so that the power stays finite). */
void sslib_mira_weights(float *restrict mass, int64_t cols, float beta, float floor, int threads) {
    float top = 0.0f; /* > 0: every row of q has an entry 1, so its largest cluster has mass > 0 */
    for (int64_t k = 0; k < cols; ++k) top = mass[k] > top ? mass[k] : top;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t k = 0; k < cols; ++k) {
        const float m = mass[k] / top;
        mass[k] = powf(m > floor ? m : floor, -beta);
    }
}
