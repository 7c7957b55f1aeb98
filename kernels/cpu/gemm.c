/* gemm.c - matrix products over OpenBLAS, and the dense layer built on them. */
#include "config.h"
#include "cpu/conv.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string.h>

int ds_kernel_threads(void)
{
#ifdef _OPENMP
	int n = omp_get_max_threads();

	return n < 1 ? 1 : n > 64 ? 64 : n;
#else
	return 1;
#endif
}

int ds_team_thread(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

int ds_team_size(void)
{
#ifdef _OPENMP
	return omp_get_num_threads();
#else
	return 1;
#endif
}

int ds_kernel_slice(void)
{
#ifdef _OPENMP
	int level = omp_get_active_level();

	return level > 0 ? omp_get_ancestor_thread_num(level) : 0;
#else
	return 0;
#endif
}

static void gemm_one(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
		     const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
		     int64_t ldc)
{
	if (m <= 0 || n <= 0)
		return;
	if (k <= 0) {
		/* The product is empty: only the beta scaling is left. */
		for (int64_t i = 0; i < m; i++)
			for (int64_t j = 0; j < n; j++)
				c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
		return;
	}
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
		    trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, alpha, a,
		    (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

/* Products below this many multiply-adds run on one thread: a few us of
 * work on one core, where a fork and join stop paying.  The reference
 * CNN's fc1 at batch 1 (0.4M, 1.6 MB of weights) is worth splitting: each
 * core then keeps its half of the weights in its own L2 from one call to
 * the next, and batch-1 latency went from 0.057 to 0.048 ms. */
#define GEMM_SPLIT_MIN ((int64_t)1 << 17)

void ds_gemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
		 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
		 int64_t ldc)
{
	int threads = ds_kernel_threads();

#ifdef _OPENMP
	if (omp_in_parallel())
		threads = 1;
#endif
	if (threads == 1 || m * n * k < GEMM_SPLIT_MIN || (m < 2 * threads && n < 32 * threads)) {
		gemm_one(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
		return;
	}
	/* Split C along its longer side, in blocks of whole 16-float (64-byte)
	 * columns so that no two threads share a cache line of C. */
	if (n >= 32 * threads) {
		int64_t step = ((n + threads - 1) / threads + 15) / 16 * 16;

#pragma omp parallel for schedule(static) num_threads(threads)
		for (int t = 0; t < threads; t++) {
			int64_t j0 = t * step, j1 = j0 + step < n ? j0 + step : n;

			if (j0 < j1)
				gemm_one(trans_a, trans_b, m, j1 - j0, k, alpha, a, lda,
					 trans_b ? b + j0 * ldb : b + j0, ldb, beta, c + j0, ldc);
		}
	} else {
		int64_t step = (m + threads - 1) / threads;

#pragma omp parallel for schedule(static) num_threads(threads)
		for (int t = 0; t < threads; t++) {
			int64_t i0 = t * step, i1 = i0 + step < m ? i0 + step : m;

			if (i0 < i1)
				gemm_one(trans_a, trans_b, i1 - i0, n, k, alpha, trans_a ? a + i0 : a + i0 * lda,
					 lda, b, ldb, beta, c + i0 * ldc, ldc);
		}
	}
}

void ds_linear_forward(int64_t m, int64_t in, int64_t out, const float *x, const float *w,
		       const float *b, float *y)
{
	/* The bias goes in first so that the GEMM adds onto it (beta 1). */
	if (b) {
#pragma omp parallel for schedule(static) if (m * out > 65536)
		for (int64_t i = 0; i < m; i++)
			memcpy(y + i * out, b, (size_t)out * sizeof *y);
	}
	ds_gemm_f32(0, 1, m, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

void ds_linear_backward(int64_t m, int64_t in, int64_t out, const float *x, const float *w,
			const float *gy, float *gx, float *gw, float *gb)
{
	if (gx)
		ds_gemm_f32(0, 0, m, in, out, 1.0f, gy, out, w, in, 1.0f, gx, in);
	if (gw)
		ds_gemm_f32(1, 0, out, in, m, 1.0f, gy, out, x, in, 1.0f, gw, in);
	if (gb) {
		for (int64_t i = 0; i < m; i++) {
			const float *row = gy + i * out;

			for (int64_t j = 0; j < out; j++)
				gb[j] += row[j];
		}
	}
}
