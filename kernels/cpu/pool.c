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

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* The 2x2 window with stride 2 and no padding, the pool of most CNNs: no
 * clamping and no index arithmetic per tap.  It was 18% of a training step
 * of the reference CNN through the general loop. */
static void max_pool_2x2(const ds_pool_dims *d, const float *x, float *y, int32_t *argmax)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;

#pragma omp parallel for schedule(static)
	for (int64_t pc = 0; pc < d->n * d->c; pc++) {
		const float *xin = x + pc * plane;
		float *out = y + pc * p;
		int32_t *idx = argmax ? argmax + pc * p : NULL;

		for (int64_t oy = 0; oy < d->oh; oy++) {
			const float *r0 = xin + 2 * oy * d->w, *r1 = r0 + d->w;
			int32_t base = (int32_t)(2 * oy * d->w);

			for (int64_t ox = 0; ox < d->ow; ox++) {
				float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], e = r1[2 * ox + 1];
				/* Selects, not branches: on real activations the
				 * comparisons are coin flips the predictor loses.  Strict
				 * comparisons keep the first of equal maxima, as PyTorch
				 * does. */
				int i01 = b > a, i23 = e > c;
				float m01 = i01 ? b : a, m23 = i23 ? e : c;
				int hi = m23 > m01;
				float best = hi ? m23 : m01;
				int32_t at = hi ? (int32_t)d->w + i23 : i01;

				if ((a != a) | (b != b) | (c != c) | (e != e)) {
					/* NaN propagates: the first NaN wins. */
					at = a != a ? 0 : b != b ? 1 : c != c ? (int32_t)d->w : (int32_t)d->w + 1;
					best = a != a ? a : b != b ? b : c != c ? c : e;
				}
				out[oy * d->ow + ox] = best;
				if (idx)
					idx[oy * d->ow + ox] = base + (int32_t)(2 * ox) + at;
			}
		}
	}
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
