/* pool.c - max, average and global average pooling on the CPU.
 *
 * Windows follow PyTorch: a window starts at o * stride - pad and is cut to
 * the input; with count_include_pad the divisor counts the padding (but not
 * what ceil_mode adds past it).  Planes (image, channel) run in parallel;
 * backward writes only into its own plane, so there are no races.
 */
#include "config.h"
#include "cpu/conv.h"

#include <float.h>
#include <stdint.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_POOL_AVX512 1
#endif

/* Outputs below which a pool runs on one thread (a batch-1 pool of the
 * reference CNN is 6,272: the fork and join would cost more). */
#define POOL_PAR_MIN 32768

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* Outputs [ox0, ox1) of one output row of the 2x2, stride-2 pool, from
 * input rows r0 and r1 (base: r0's offset in its plane). */
static void max_pool_2x2_row(const float *r0, const float *r1, int64_t w, int64_t ox0,
			     int64_t ox1, float *out, int32_t *idx, int32_t base)
{
	for (int64_t ox = ox0; ox < ox1; ox++) {
		float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], e = r1[2 * ox + 1];
		/* Selects, not branches: on real activations the comparisons are
		 * coin flips the predictor loses.  Strict comparisons keep the
		 * first of equal maxima, as PyTorch does. */
		int i01 = b > a, i23 = e > c;
		float m01 = i01 ? b : a, m23 = i23 ? e : c;
		int hi = m23 > m01;
		float best = hi ? m23 : m01;
		int32_t at = hi ? (int32_t)w + i23 : i01;

		if ((a != a) | (b != b) | (c != c) | (e != e)) {
			/* NaN propagates: the first NaN wins. */
			at = a != a ? 0 : b != b ? 1 : c != c ? (int32_t)w : (int32_t)w + 1;
			best = a != a ? a : b != b ? b : c != c ? c : e;
		}
		out[ox] = best;
		if (idx)
			idx[ox] = base + (int32_t)(2 * ox) + at;
	}
}

#ifdef HAVE_POOL_AVX512
/* The same selects on 16 outputs at once: the even and odd columns of each
 * row pair come apart with one two-source permute.  A vector holding a NaN
 * goes through the scalar row, so the results match it bit for bit. */
static __attribute__((target("avx512f"))) void max_pool_2x2_row_avx512(
	const float *r0, const float *r1, int64_t w, int64_t ow, float *out, int32_t *idx,
	int32_t base)
{
	const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
	const __m512i lane2 = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i one = _mm512_set1_epi32(1), wv = _mm512_set1_epi32((int32_t)w);

	for (int64_t ox = 0; ox < ow; ox += 16) {
		int64_t left = ow - ox < 16 ? ow - ox : 16;
		__mmask16 mo = (__mmask16)((1u << left) - 1);
		__mmask16 mlo = (__mmask16)(left >= 8 ? 0xffff : (1u << (2 * left)) - 1);
		__mmask16 mhi = (__mmask16)(left >= 16 ? 0xffff : left > 8 ? (1u << (2 * left - 16)) - 1 : 0);
		__m512 x0 = _mm512_maskz_loadu_ps(mlo, r0 + 2 * ox);
		__m512 x1 = _mm512_maskz_loadu_ps(mhi, r0 + 2 * ox + 16);
		__m512 y0 = _mm512_maskz_loadu_ps(mlo, r1 + 2 * ox);
		__m512 y1 = _mm512_maskz_loadu_ps(mhi, r1 + 2 * ox + 16);
		__m512 a = _mm512_permutex2var_ps(x0, even, x1), b = _mm512_permutex2var_ps(x0, odd, x1);
		__m512 c = _mm512_permutex2var_ps(y0, even, y1), e = _mm512_permutex2var_ps(y0, odd, y1);
		__mmask16 nan = _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, e, _CMP_UNORD_Q);
		__mmask16 i01, i23, hi;
		__m512 m01, m23;

		if (nan & mo) {
			max_pool_2x2_row(r0, r1, w, ox, ox + left, out, idx, base);
			continue;
		}
		i01 = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ);
		i23 = _mm512_cmp_ps_mask(e, c, _CMP_GT_OQ);
		m01 = _mm512_mask_blend_ps(i01, a, b);
		m23 = _mm512_mask_blend_ps(i23, c, e);
		hi = _mm512_cmp_ps_mask(m23, m01, _CMP_GT_OQ);
		_mm512_mask_storeu_ps(out + ox, mo, _mm512_mask_blend_ps(hi, m01, m23));
		if (idx) {
			__m512i at = _mm512_maskz_mov_epi32(i01, one);
			__m512i at23 = _mm512_add_epi32(wv, _mm512_maskz_mov_epi32(i23, one));

			at = _mm512_mask_blend_epi32(hi, at, at23);
			at = _mm512_add_epi32(at, _mm512_add_epi32(lane2,
								   _mm512_set1_epi32(base + (int32_t)(2 * ox))));
			_mm512_mask_storeu_epi32(idx + ox, mo, at);
		}
	}
}
#endif

static int pool_avx512(void)
{
#ifdef HAVE_POOL_AVX512
	/* libgcc fills the CPU model in a constructor: reading it is cheap
	 * and race-free. */
	return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
	return 0;
#endif
}

/* The 2x2 window with stride 2 and no padding, the pool of most CNNs: no
 * clamping and no index arithmetic per tap.  It was 18% of a training step
 * of the reference CNN through the general loop, and still 24% of an
 * inference batch before the AVX-512 rows. */
static void max_pool_2x2(const ds_pool_dims *d, const float *x, float *y, int32_t *argmax)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;
	const int vec = pool_avx512();

#pragma omp parallel for schedule(static) if (d->n * d->c * p >= POOL_PAR_MIN)
	for (int64_t pc = 0; pc < d->n * d->c; pc++) {
		const float *xin = x + pc * plane;
		float *out = y + pc * p;
		int32_t *idx = argmax ? argmax + pc * p : NULL;

		for (int64_t oy = 0; oy < d->oh; oy++) {
			const float *r0 = xin + 2 * oy * d->w, *r1 = r0 + d->w;
			int32_t base = (int32_t)(2 * oy * d->w);
			int32_t *io = idx ? idx + oy * d->ow : NULL;

#ifdef HAVE_POOL_AVX512
			if (vec) {
				max_pool_2x2_row_avx512(r0, r1, d->w, d->ow, out + oy * d->ow, io, base);
				continue;
			}
#endif
			(void)vec;
			max_pool_2x2_row(r0, r1, d->w, 0, d->ow, out + oy * d->ow, io, base);
		}
	}
}

void ds_max_pool_2x2_plane(const float *x, int64_t ld, int64_t oh, int64_t ow, float *y)
{
	const int vec = pool_avx512();

	for (int64_t oy = 0; oy < oh; oy++) {
		const float *r0 = x + 2 * oy * ld;

#ifdef HAVE_POOL_AVX512
		if (vec) {
			max_pool_2x2_row_avx512(r0, r0 + ld, ld, ow, y + oy * ow, NULL, 0);
			continue;
		}
#endif
		(void)vec;
		max_pool_2x2_row(r0, r0 + ld, ld, 0, ow, y + oy * ow, NULL, 0);
	}
}

#ifdef HAVE_POOL_AVX512
static __attribute__((target("avx512f"))) void max_pool_relu_2x2_avx512(const float *x, int64_t ld,
									 int64_t oh, int64_t ow, float *y)
{
	const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));

	for (int64_t oy = 0; oy < oh; oy++) {
		const float *r0 = x + 2 * oy * ld, *r1 = r0 + ld;

		for (int64_t ox = 0; ox < ow; ox += 16) {
			int64_t left = ow - ox < 16 ? ow - ox : 16;
			__mmask16 mo = (__mmask16)((1u << left) - 1);
			__mmask16 mlo = (__mmask16)(left >= 8 ? 0xffff : (1u << (2 * left)) - 1);
			__mmask16 mhi = (__mmask16)(left >= 16 ? 0xffff : left > 8 ? (1u << (2 * left - 16)) - 1 : 0);
			__m512 lo = _mm512_max_ps(_mm512_maskz_loadu_ps(mlo, r0 + 2 * ox),
						  _mm512_maskz_loadu_ps(mlo, r1 + 2 * ox));
			__m512 hi = _mm512_max_ps(_mm512_maskz_loadu_ps(mhi, r0 + 2 * ox + 16),
						  _mm512_maskz_loadu_ps(mhi, r1 + 2 * ox + 16));
			__m512 m = _mm512_max_ps(_mm512_permutex2var_ps(lo, even, hi),
						 _mm512_permutex2var_ps(lo, odd, hi));

			_mm512_mask_storeu_ps(y + oy * ow + ox, mo, m);
		}
	}
}
#endif

void ds_max_pool_2x2_plane_idx(const float *x, int64_t ld, int64_t width, int64_t oh, int64_t ow, float *y,
			       int32_t *argmax)
{
	const int vec = pool_avx512();

	for (int64_t oy = 0; oy < oh; oy++) {
		const float *r0 = x + 2 * oy * ld;
		const int32_t base = (int32_t)(2 * oy * width);

#ifdef HAVE_POOL_AVX512
		if (vec) {
			max_pool_2x2_row_avx512(r0, r0 + ld, width, ow, y + oy * ow, argmax + oy * ow, base);
			continue;
		}
#endif
		(void)vec;
		max_pool_2x2_row(r0, r0 + ld, width, 0, ow, y + oy * ow, argmax + oy * ow, base);
	}
}

/* After a ReLU no NaN is left (its max turned them into 0) and no -0, so
 * plain maxima give max_pool's values without its NaN checks and index
 * selects: rows first, then column pairs. */
void ds_max_pool_relu_2x2_plane(const float *x, int64_t ld, int64_t oh, int64_t ow, float *y)
{
#ifdef HAVE_POOL_AVX512
	if (pool_avx512()) {
		max_pool_relu_2x2_avx512(x, ld, oh, ow, y);
		return;
	}
#endif
	ds_max_pool_2x2_plane(x, ld, oh, ow, y);
}

void ds_max_pool_forward(const ds_pool_dims *d, const float *x, float *y, int32_t *argmax)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;

	if (d->kh == 2 && d->kw == 2 && d->sh == 2 && d->sw == 2 && d->ph == 0 && d->pw == 0 &&
	    2 * d->oh <= d->h && 2 * d->ow <= d->w && plane <= INT32_MAX) {
		max_pool_2x2(d, x, y, argmax);
		return;
	}

#pragma omp parallel for schedule(static)
	for (int64_t pc = 0; pc < d->n * d->c; pc++) {
		const float *xin = x + pc * plane;
		float *out = y + pc * p;
		int32_t *idx = argmax ? argmax + pc * p : NULL;

		for (int64_t oy = 0; oy < d->oh; oy++) {
			int64_t y0 = oy * d->sh - d->ph;
			int64_t ys = clamp64(y0, 0, d->h), ye = clamp64(y0 + d->kh, 0, d->h);

			for (int64_t ox = 0; ox < d->ow; ox++) {
				int64_t x0 = ox * d->sw - d->pw;
				int64_t xs = clamp64(x0, 0, d->w), xe = clamp64(x0 + d->kw, 0, d->w);
				float best = -FLT_MAX;
				int64_t at = ys * d->w + xs;

				/* The first maximum wins, as in PyTorch; NaN propagates. */
				for (int64_t iy = ys; iy < ye; iy++)
					for (int64_t ix = xs; ix < xe; ix++) {
						float v = xin[iy * d->w + ix];

						if (v > best || v != v) {
							best = v;
							at = iy * d->w + ix;
							if (v != v)
								goto found;
						}
					}
found:
				out[oy * d->ow + ox] = best;
				if (idx)
					idx[oy * d->ow + ox] = (int32_t)at;
			}
		}
	}
}

void ds_max_pool_backward(const ds_pool_dims *d, const int32_t *argmax, const float *gy, float *gx)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;

#pragma omp parallel for schedule(static)
	for (int64_t pc = 0; pc < d->n * d->c; pc++) {
		const int32_t *idx = argmax + pc * p;
		const float *g = gy + pc * p;
		float *gin = gx + pc * plane;

		for (int64_t q = 0; q < p; q++)
			gin[idx[q]] += g[q];
	}
}

/* The window of output (oy, ox) inside the input, and its divisor. */
static float avg_window(const ds_pool_dims *d, int64_t oy, int64_t ox, int64_t *ys, int64_t *ye,
			int64_t *xs, int64_t *xe)
{
	int64_t y0 = oy * d->sh - d->ph, x0 = ox * d->sw - d->pw;
	int64_t y1 = y0 + d->kh, x1 = x0 + d->kw;
	int64_t count;

	*ys = clamp64(y0, 0, d->h);
	*ye = clamp64(y1, 0, d->h);
	*xs = clamp64(x0, 0, d->w);
	*xe = clamp64(x1, 0, d->w);
	if (d->count_include_pad)
		count = (clamp64(y1, y0, d->h + d->ph) - y0) * (clamp64(x1, x0, d->w + d->pw) - x0);
	else
		count = (*ye - *ys) * (*xe - *xs);
	return count > 0 ? 1.0f / (float)count : 0.0f;
}

void ds_avg_pool_forward(const ds_pool_dims *d, const float *x, float *y)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;

#pragma omp parallel for schedule(static)
	for (int64_t pc = 0; pc < d->n * d->c; pc++) {
		const float *xin = x + pc * plane;
		float *out = y + pc * p;

		for (int64_t oy = 0; oy < d->oh; oy++)
			for (int64_t ox = 0; ox < d->ow; ox++) {
				int64_t ys, ye, xs, xe;
				float scale = avg_window(d, oy, ox, &ys, &ye, &xs, &xe), s = 0;

				for (int64_t iy = ys; iy < ye; iy++)
					for (int64_t ix = xs; ix < xe; ix++)
						s += xin[iy * d->w + ix];
				out[oy * d->ow + ox] = s * scale;
			}
	}
}

void ds_avg_pool_backward(const ds_pool_dims *d, const float *gy, float *gx)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;

#pragma omp parallel for schedule(static)
	for (int64_t pc = 0; pc < d->n * d->c; pc++) {
		const float *g = gy + pc * p;
		float *gin = gx + pc * plane;

		for (int64_t oy = 0; oy < d->oh; oy++)
			for (int64_t ox = 0; ox < d->ow; ox++) {
				int64_t ys, ye, xs, xe;
				float v = g[oy * d->ow + ox] * avg_window(d, oy, ox, &ys, &ye, &xs, &xe);

				for (int64_t iy = ys; iy < ye; iy++)
					for (int64_t ix = xs; ix < xe; ix++)
						gin[iy * d->w + ix] += v;
			}
	}
}

void ds_global_avg_pool_forward(int64_t planes, int64_t size, const float *x, float *y)
{
	const float scale = size > 0 ? 1.0f / (float)size : 0.0f;

#pragma omp parallel for schedule(static)
	for (int64_t pc = 0; pc < planes; pc++) {
		const float *xin = x + pc * size;
		float s = 0;

		for (int64_t q = 0; q < size; q++)
			s += xin[q];
		y[pc] = s * scale;
	}
}

void ds_global_avg_pool_backward(int64_t planes, int64_t size, const float *gy, float *gx)
{
	const float scale = size > 0 ? 1.0f / (float)size : 0.0f;

#pragma omp parallel for schedule(static)
	for (int64_t pc = 0; pc < planes; pc++) {
		float *gin = gx + pc * size, v = gy[pc] * scale;

		for (int64_t q = 0; q < size; q++)
			gin[q] += v;
	}
}
