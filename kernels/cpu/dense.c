/* dense.c - a dense layer whose every output is summed in one fixed order.
 *
 * OpenBLAS picks its kernel by the shape of the call: the same row of x
 * times the same weights comes out different in its last bits depending
 * on how many rows come with it (measured with Debian's 0.3.21: row 0 of
 * a 128 x 3136 layer agrees with itself alone for 4 batch sizes of 300).
 * ds-infer promises byte-identical records whatever --batch and --threads
 * are, so inference does not go through it for dense layers.
 *
 * Here each output is b + the sum over k of x[i][k] w[o][k], taken as
 * sixteen lane sums (k mod 16, k ascending) added by a fixed tree at the
 * end: nothing depends on m, on the tile an output falls in or on the
 * thread that computes it.  A tile is 4 rows by 6 outputs: per sixteen k,
 * 4 loads of x and 6 of w feed 24 FMAs; rows of x and w are contiguous in
 * k, so nothing is packed.
 */
#include "config.h"
#include "cpu/conv.h"

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_DENSE_AVX512 1
#endif

#define DENSE_MR 4
#define DENSE_NR 6
/* Multiply-adds below which one thread does it all. */
#define DENSE_SPLIT_MIN ((int64_t)1 << 17)

/* The portable form: the same lane sums and the same tree. */
static float dot_fixed(const float *a, const float *b, int64_t k)
{
	float lane[16] = { 0 };

	for (int64_t q = 0; q < k; q++)
		lane[q % 16] += a[q] * b[q];
	for (int s = 8; s > 0; s /= 2)
		for (int l = 0; l < s; l++)
			lane[l] += lane[l + s];
	return lane[0];
}

#ifdef HAVE_DENSE_AVX512
/* The tree of dot_fixed: halves added, eight lanes, four, two, one. */
static inline __attribute__((always_inline, target("avx512f"))) float tree_sum(__m512 v)
{
	__m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
	__m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
	__m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));

	return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
}

/* Sixteen k (those of on) of mr rows by nr outputs. */
static inline __attribute__((always_inline, target("avx512f"))) void
dense_step(int mr, int nr, __mmask16 on, int64_t k, const float *x, const float *w, __m512 acc[][DENSE_NR])
{
	__m512 xv[DENSE_MR];

#pragma GCC unroll 4
	for (int i = 0; i < mr; i++)
		xv[i] = _mm512_maskz_loadu_ps(on, x + i * k);
#pragma GCC unroll 6
	for (int j = 0; j < nr; j++) {
		__m512 wv = _mm512_maskz_loadu_ps(on, w + j * k);

#pragma GCC unroll 4
		for (int i = 0; i < mr; i++)
			acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
	}
}

/* mr rows by nr outputs, constant after inlining.  The FMAs differ from
 * dot_fixed's separate multiply and add only in rounding: a CPU without
 * AVX-512 gets its own, equally fixed, results. */
static inline __attribute__((always_inline, target("avx512f"))) void
dense_tile(int mr, int nr, int64_t k, const float *x, const float *w, const float *b, float *y, int64_t out)
{
	__m512 acc[DENSE_MR][DENSE_NR];
	const int64_t whole = k / 16 * 16;
	const __mmask16 tail = (__mmask16)((1u << (k - whole)) - 1);

#pragma GCC unroll 4
	for (int i = 0; i < mr; i++)
#pragma GCC unroll 6
		for (int j = 0; j < nr; j++)
			acc[i][j] = _mm512_setzero_ps();
	for (int64_t q = 0; q < whole; q += 16)
		dense_step(mr, nr, (__mmask16)0xffff, k, x + q, w + q, acc);
	if (tail)
		dense_step(mr, nr, tail, k, x + whole, w + whole, acc);
#pragma GCC unroll 4
	for (int i = 0; i < mr; i++)
#pragma GCC unroll 6
		for (int j = 0; j < nr; j++)
			y[i * out + j] = (b ? b[j] : 0.0f) + tree_sum(acc[i][j]);
}

static __attribute__((target("avx512f"))) void dense_columns(int64_t m, int64_t k, int64_t out, int64_t o0,
							     int64_t o1, const float *x, const float *w,
							     const float *b, float *y)
{
	int64_t o = o0;

	for (; o + DENSE_NR <= o1; o += DENSE_NR) {
		int64_t i = 0;

		for (; i + DENSE_MR <= m; i += DENSE_MR)
			dense_tile(DENSE_MR, DENSE_NR, k, x + i * k, w + o * k, b ? b + o : NULL, y + i * out + o, out);
		for (; i < m; i++)
			dense_tile(1, DENSE_NR, k, x + i * k, w + o * k, b ? b + o : NULL, y + i * out + o, out);
	}
	for (; o < o1; o++) {
		int64_t i = 0;

		for (; i + DENSE_MR <= m; i += DENSE_MR)
			dense_tile(DENSE_MR, 1, k, x + i * k, w + o * k, b ? b + o : NULL, y + i * out + o, out);
		for (; i < m; i++)
			dense_tile(1, 1, k, x + i * k, w + o * k, b ? b + o : NULL, y + i * out + o, out);
	}
}
#endif

static void columns(int64_t m, int64_t k, int64_t out, int64_t o0, int64_t o1, const float *x, const float *w,
		    const float *b, float *y)
{
#ifdef HAVE_DENSE_AVX512
	if (__builtin_cpu_supports("avx512f")) {
		dense_columns(m, k, out, o0, o1, x, w, b, y);
		return;
	}
#endif
	for (int64_t i = 0; i < m; i++)
		for (int64_t o = o0; o < o1; o++)
			y[i * out + o] = (b ? b[o] : 0.0f) + dot_fixed(x + i * k, w + o * k, k);
}

/* The threads take runs of whole tiles of outputs: their weights stay in
 * their own cache from one call to the next. */
void ds_linear_forward_fixed(int64_t m, int64_t in, int64_t out, const float *x, const float *w,
			     const float *b, float *y)
{
	const int64_t tiles = (out + DENSE_NR - 1) / DENSE_NR;
	int threads = ds_kernel_threads();

#ifdef _OPENMP
	if (omp_in_parallel())
		threads = 1;
#endif
	if (m * in * out < DENSE_SPLIT_MIN || tiles < threads)
		threads = 1;
#pragma omp parallel num_threads(threads)
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size();
		int64_t o0 = tiles * t / nt * DENSE_NR, o1 = tiles * (t + 1) / nt * DENSE_NR;

		columns(m, in, out, o0, o1 < out ? o1 : out, x, w, b, y);
	}
}
