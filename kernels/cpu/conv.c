/* conv.c - 2-d convolution on the CPU.
 *
 * Three kernels: im2col + GEMM for the general case, a plain GEMM for
 * pointwise (1x1) convolutions, and direct loops for depthwise ones, whose
 * GEMMs would be too thin to pay.  OpenMP splits the batch between threads;
 * each thread builds the columns of a few images at a time in its own slice
 * of the workspace and multiplies them with a single-threaded GEMM, so the
 * columns stay in its core's L2 cache from im2col to GEMM.  Weight gradients
 * are summed per thread in the slice and reduced at the end.
 */
#include "config.h"
#include "cpu/conv.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Floats of columns and GEMM output per thread: 1 MiB, half the L2 of the
 * Zen 5 cores this was tuned on (the timing diag of
 * tests/unit/test_grad_compute.c prints the chunk sizes side by side). */
#define SLICE_FLOATS ((int64_t)1 << 18)
#define CHUNK_MAX 16

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

static int thread_id(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

static int thread_count(void)
{
#ifdef _OPENMP
	return omp_get_num_threads();
#else
	return 1;
#endif
}

/* Output positions x in [lo, hi) whose input x * stride + off is inside
 * [0, size); the others read padding. */
static void valid_range(int64_t out, int64_t size, int64_t stride, int64_t off, int64_t *lo,
			int64_t *hi)
{
	int64_t l = off < 0 ? (-off + stride - 1) / stride : 0;
	int64_t h = size - off > 0 ? (size - off + stride - 1) / stride : 0;

	*lo = min64(l, out);
	*hi = max64(*lo, min64(h, out));
}

ds_conv2d_kind ds_conv2d_kind_of(const ds_conv2d_dims *d)
{
	if (d->groups > 1 && d->groups == d->c)
		return DS_CONV2D_DEPTHWISE;
	if (d->groups == 1 && d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 &&
	    d->pw == 0)
		return DS_CONV2D_POINTWISE;
	return DS_CONV2D_IM2COL;
}

int64_t ds_conv2d_chunk(const ds_conv2d_dims *d)
{
	int64_t per = (d->c * d->kh * d->kw + d->o) * d->oh * d->ow;

	if (per <= 0)
		return 1;
	return max64(1, min64(CHUNK_MAX, SLICE_FLOATS / per));
}

/* A thread's slice: columns [k, chunk * p], GEMM output [o, chunk * p],
 * then its partial weight gradient. */
static int64_t slice_floats(const ds_conv2d_dims *d, int64_t chunk)
{
	int64_t p = d->oh * d->ow, k = d->c * d->kh * d->kw;

	return chunk * (k + d->o) * p + d->o * (k / d->groups);
}

size_t ds_conv2d_workspace_chunk(const ds_conv2d_dims *d, int64_t chunk)
{
	return (size_t)(ds_kernel_threads() * slice_floats(d, chunk));
}

size_t ds_conv2d_workspace(const ds_conv2d_dims *d)
{
	switch (ds_conv2d_kind_of(d)) {
	case DS_CONV2D_IM2COL:
		return ds_conv2d_workspace_chunk(d, ds_conv2d_chunk(d));
	case DS_CONV2D_POINTWISE:
		return ds_conv2d_workspace_chunk(d, 0);
	case DS_CONV2D_DEPTHWISE:
		break;
	}
	return 0;
}

/* Columns of bc images: row (ch, ki, kj), column (image, oy, ox), ld floats
 * apart; rows are in channel order, so group g's rows are contiguous. */
static void im2col(const ds_conv2d_dims *d, const float *x, int64_t bc, float *col, int64_t ld)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;

	for (int64_t ic = 0; ic < bc * d->c; ic++) {
		int64_t i = ic / d->c, ch = ic % d->c;
		const float *xin = x + ic * plane;

		for (int64_t ki = 0; ki < d->kh; ki++) {
			for (int64_t kj = 0; kj < d->kw; kj++) {
				float *dst = col + ((ch * d->kh + ki) * d->kw + kj) * ld + i * p;
				int64_t offx = kj * d->dw - d->pw, lo, hi;

				valid_range(d->ow, d->w, d->sw, offx, &lo, &hi);
				for (int64_t oy = 0; oy < d->oh; oy++, dst += d->ow) {
					int64_t iy = oy * d->sh - d->ph + ki * d->dh;
					const float *row;

					if (iy < 0 || iy >= d->h || lo >= hi) {
						memset(dst, 0, (size_t)d->ow * sizeof *dst);
						continue;
					}
					row = xin + iy * d->w;
					memset(dst, 0, (size_t)lo * sizeof *dst);
					if (d->sw == 1)
						memcpy(dst + lo, row + lo + offx, (size_t)(hi - lo) * sizeof *dst);
					else
						for (int64_t ox = lo; ox < hi; ox++)
							dst[ox] = row[ox * d->sw + offx];
					memset(dst + hi, 0, (size_t)(d->ow - hi) * sizeof *dst);
				}
			}
		}
	}
}

/* The reverse of im2col, adding into gx. */
static void col2im_add(const ds_conv2d_dims *d, const float *col, int64_t ld, int64_t bc, float *gx)
{
	const int64_t plane = d->h * d->w, p = d->oh * d->ow;

	for (int64_t ic = 0; ic < bc * d->c; ic++) {
		int64_t i = ic / d->c, ch = ic % d->c;
		float *gin = gx + ic * plane;

		for (int64_t ki = 0; ki < d->kh; ki++) {
			for (int64_t kj = 0; kj < d->kw; kj++) {
				const float *src = col + ((ch * d->kh + ki) * d->kw + kj) * ld + i * p;
				int64_t offx = kj * d->dw - d->pw, lo, hi;

				valid_range(d->ow, d->w, d->sw, offx, &lo, &hi);
				for (int64_t oy = 0; oy < d->oh; oy++, src += d->ow) {
					int64_t iy = oy * d->sh - d->ph + ki * d->dh;
					float *row;

					if (iy < 0 || iy >= d->h)
						continue;
					row = gin + iy * d->w + offx + lo * d->sw;
					if (d->sw == 1)
						for (int64_t ox = lo; ox < hi; ox++)
							row[ox - lo] += src[ox];
					else
						for (int64_t ox = lo; ox < hi; ox++)
							row[(ox - lo) * d->sw] += src[ox];
				}
			}
		}
	}
}

/* Add the threads' partial weight gradients into gw; called by every
 * thread of the team after its own partial is complete. */
static void reduce_partials(const float *ws, int64_t slice, int64_t at, int64_t count, int threads,
			    float *gw)
{
#pragma omp barrier
#pragma omp for schedule(static)
	for (int64_t e = 0; e < count; e++) {
		float s = 0;

		for (int t = 0; t < threads; t++)
			s += ws[t * slice + at + e];
		gw[e] += s;
	}
}

void ds_conv2d_forward_chunked(const ds_conv2d_dims *d, int64_t chunk, const float *x,
			       const float *w, const float *b, float *y, float *ws)
{
	const int64_t k = d->c * d->kh * d->kw, p = d->oh * d->ow, in_img = d->c * d->h * d->w;
	const int64_t og = d->o / d->groups, kg = k / d->groups, slice = slice_floats(d, chunk);

#pragma omp parallel num_threads(ds_kernel_threads())
	{
		int t = thread_id(), nt = thread_count();
		int64_t i0 = d->n * t / nt, i1 = d->n * (t + 1) / nt;
		float *col = ws + t * slice, *tmp = col + k * chunk * p;

		for (int64_t b0 = i0; b0 < i1; b0 += chunk) {
			int64_t bc = min64(chunk, i1 - b0), cols = bc * p;
			/* One image writes its output in place; more need a transpose. */
			float *out = bc == 1 ? y + b0 * d->o * p : tmp;

			im2col(d, x + b0 * in_img, bc, col, cols);
			for (int64_t g = 0; g < d->groups; g++)
				ds_gemm_f32(0, 0, og, cols, kg, 1.0f, w + g * og * kg, kg, col + g * kg * cols,
					    cols, 0.0f, out + g * og * cols, cols);
			for (int64_t i = 0; i < bc; i++)
				for (int64_t oc = 0; oc < d->o; oc++) {
					const float *src = out + oc * cols + i * p;
					float *dst = y + (b0 + i) * d->o * p + oc * p, bias = b ? b[oc] : 0.0f;

					if (src == dst && !b)
						continue;
					for (int64_t q = 0; q < p; q++)
						dst[q] = src[q] + bias;
				}
		}
	}
}

void ds_conv2d_backward_chunked(const ds_conv2d_dims *d, int64_t chunk, const float *x,
				const float *w, const float *gy, float *gx, float *gw, float *gb,
				float *ws)
{
	const int64_t k = d->c * d->kh * d->kw, p = d->oh * d->ow, in_img = d->c * d->h * d->w;
	const int64_t og = d->o / d->groups, kg = k / d->groups, slice = slice_floats(d, chunk);
	const int64_t gw_at = chunk * (k + d->o) * p;

	if (gb) {
#pragma omp parallel for schedule(static)
		for (int64_t oc = 0; oc < d->o; oc++) {
			double s = 0;

			for (int64_t i = 0; i < d->n; i++) {
				const float *src = gy + (i * d->o + oc) * p;
				float part = 0;

				for (int64_t q = 0; q < p; q++)
					part += src[q];
				s += part;
			}
			gb[oc] += (float)s;
		}
	}
	if (!gx && !gw)
		return;
#pragma omp parallel num_threads(ds_kernel_threads())
	{
		int t = thread_id(), nt = thread_count();
		int64_t i0 = d->n * t / nt, i1 = d->n * (t + 1) / nt;
		float *col = ws + t * slice, *gt = col + k * chunk * p, *gwp = ws + t * slice + gw_at;

		if (gw)
			memset(gwp, 0, (size_t)(d->o * kg) * sizeof *gwp);
		for (int64_t b0 = i0; b0 < i1; b0 += chunk) {
			int64_t bc = min64(chunk, i1 - b0), cols = bc * p;
			const float *g_o = gy + b0 * d->o * p;

			/* [image, o, pixel] to [o, image, pixel]; one image is already so. */
			if (bc > 1) {
				for (int64_t i = 0; i < bc; i++)
					for (int64_t oc = 0; oc < d->o; oc++)
						memcpy(gt + oc * cols + i * p, gy + (b0 + i) * d->o * p + oc * p,
						       (size_t)p * sizeof *gt);
				g_o = gt;
			}
			if (gw) {
				im2col(d, x + b0 * in_img, bc, col, cols);
				for (int64_t g = 0; g < d->groups; g++)
					ds_gemm_f32(0, 1, og, kg, cols, 1.0f, g_o + g * og * cols, cols,
						    col + g * kg * cols, cols, 1.0f, gwp + g * og * kg, kg);
			}
			if (gx) {
				/* The columns are spent: their buffer takes the column gradient. */
				for (int64_t g = 0; g < d->groups; g++)
					ds_gemm_f32(1, 0, kg, cols, og, 1.0f, w + g * og * kg, kg,
						    g_o + g * og * cols, cols, 0.0f, col + g * kg * cols, cols);
				col2im_add(d, col, cols, bc, gx + b0 * in_img);
			}
		}
		if (gw)
			reduce_partials(ws, slice, gw_at, d->o * kg, nt, gw);
	}
}

/* 1x1: each image is [c, p], so y_i = w x_i with no columns to build. */
static void pointwise_forward(const ds_conv2d_dims *d, const float *x, const float *w,
			      const float *b, float *y)
{
	const int64_t p = d->oh * d->ow;

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t i = 0; i < d->n; i++) {
		float *yi = y + i * d->o * p;

		for (int64_t oc = 0; b && oc < d->o; oc++)
			for (int64_t q = 0; q < p; q++)
				yi[oc * p + q] = b[oc];
		ds_gemm_f32(0, 0, d->o, p, d->c, 1.0f, w, d->c, x + i * d->c * p, p, b ? 1.0f : 0.0f,
			    yi, p);
	}
}

static void pointwise_backward(const ds_conv2d_dims *d, const float *x, const float *w,
			       const float *gy, float *gx, float *gw, float *ws)
{
	const int64_t p = d->oh * d->ow, slice = slice_floats(d, 0);

#pragma omp parallel num_threads(ds_kernel_threads())
	{
		int t = thread_id(), nt = thread_count();
		int64_t i0 = d->n * t / nt, i1 = d->n * (t + 1) / nt;
		float *gwp = ws + t * slice;

		if (gw)
			memset(gwp, 0, (size_t)(d->o * d->c) * sizeof *gwp);
		for (int64_t i = i0; i < i1; i++) {
			const float *gyi = gy + i * d->o * p;

			if (gw)
				ds_gemm_f32(0, 1, d->o, d->c, p, 1.0f, gyi, p, x + i * d->c * p, p, 1.0f,
					    gwp, d->c);
			if (gx)
				ds_gemm_f32(1, 0, d->c, p, d->o, 1.0f, w, d->c, gyi, p, 1.0f,
					    gx + i * d->c * p, p);
		}
		if (gw)
			reduce_partials(ws, slice, 0, d->o * d->c, nt, gw);
	}
}

/* Depthwise: output channel oc reads input channel oc / m.  Each filter tap
 * is one pass over an output row (dst[ox] += wv * src[ox * sw]), with the
 * padding cut off by valid_range rather than tested per pixel: branch-free
 * and vectorized for stride 1. */
static void depthwise_forward(const ds_conv2d_dims *d, const float *x, const float *w,
			      const float *b, float *y)
{
	const int64_t m = d->o / d->c, plane = d->h * d->w, p = d->oh * d->ow;

#pragma omp parallel for schedule(static)
	for (int64_t io = 0; io < d->n * d->o; io++) {
		int64_t i = io / d->o, oc = io % d->o;
		const float *xin = x + (i * d->c + oc / m) * plane, *wk = w + oc * d->kh * d->kw;
		float *out = y + io * p, bias = b ? b[oc] : 0.0f;

		for (int64_t q = 0; q < p; q++)
			out[q] = bias;
		for (int64_t kj = 0; kj < d->kw; kj++) {
			int64_t offx = kj * d->dw - d->pw, lo, hi;

			valid_range(d->ow, d->w, d->sw, offx, &lo, &hi);
			for (int64_t oy = 0; oy < d->oh; oy++) {
				float *dst = out + oy * d->ow;

				for (int64_t ki = 0; ki < d->kh; ki++) {
					int64_t iy = oy * d->sh - d->ph + ki * d->dh;
					const float *src;
					float wv = wk[ki * d->kw + kj];

					if (iy < 0 || iy >= d->h)
						continue;
					src = xin + iy * d->w;
					if (d->sw == 1)
						for (int64_t ox = lo; ox < hi; ox++)
							dst[ox] += wv * src[ox + offx];
					else
						for (int64_t ox = lo; ox < hi; ox++)
							dst[ox] += wv * src[ox * d->sw + offx];
				}
			}
		}
	}
}

static void depthwise_backward(const ds_conv2d_dims *d, const float *x, const float *w,
			       const float *gy, float *gx, float *gw, float *gb)
{
	const int64_t m = d->o / d->c, plane = d->h * d->w, p = d->oh * d->ow;

	/* Input planes in parallel: the m output channels of one input channel
	 * are summed by the same thread. */
	if (gx) {
#pragma omp parallel for schedule(static)
		for (int64_t ic = 0; ic < d->n * d->c; ic++) {
			int64_t i = ic / d->c, ch = ic % d->c;
			float *gin = gx + ic * plane;

			for (int64_t oc = ch * m; oc < (ch + 1) * m; oc++) {
				const float *gout = gy + (i * d->o + oc) * p, *wk = w + oc * d->kh * d->kw;

				for (int64_t kj = 0; kj < d->kw; kj++) {
					int64_t offx = kj * d->dw - d->pw, lo, hi;

					valid_range(d->ow, d->w, d->sw, offx, &lo, &hi);
					for (int64_t oy = 0; oy < d->oh; oy++) {
						const float *src = gout + oy * d->ow;

						for (int64_t ki = 0; ki < d->kh; ki++) {
							int64_t iy = oy * d->sh - d->ph + ki * d->dh;
							float *dst;
							float wv = wk[ki * d->kw + kj];

							if (iy < 0 || iy >= d->h)
								continue;
							dst = gin + iy * d->w;
							if (d->sw == 1)
								for (int64_t ox = lo; ox < hi; ox++)
									dst[ox + offx] += wv * src[ox];
							else
								for (int64_t ox = lo; ox < hi; ox++)
									dst[ox * d->sw + offx] += wv * src[ox];
						}
					}
				}
			}
		}
	}
	if (!gw && !gb)
		return;
	/* Filters in parallel, each summing over the whole batch. */
#pragma omp parallel for schedule(static)
	for (int64_t oc = 0; oc < d->o; oc++) {
		for (int64_t i = 0; i < d->n; i++) {
			const float *xin = x + (i * d->c + oc / m) * plane, *gout = gy + (i * d->o + oc) * p;

			if (gb) {
				float s = 0;

				for (int64_t q = 0; q < p; q++)
					s += gout[q];
				gb[oc] += s;
			}
			if (!gw)
				continue;
			for (int64_t ki = 0; ki < d->kh; ki++) {
				for (int64_t kj = 0; kj < d->kw; kj++) {
					int64_t offx = kj * d->dw - d->pw, lo, hi;
					float s = 0;

					valid_range(d->ow, d->w, d->sw, offx, &lo, &hi);
					for (int64_t oy = 0; oy < d->oh; oy++) {
						int64_t iy = oy * d->sh - d->ph + ki * d->dh;
						const float *src, *g = gout + oy * d->ow;

						if (iy < 0 || iy >= d->h)
							continue;
						src = xin + iy * d->w;
						if (d->sw == 1)
							for (int64_t ox = lo; ox < hi; ox++)
								s += g[ox] * src[ox + offx];
						else
							for (int64_t ox = lo; ox < hi; ox++)
								s += g[ox] * src[ox * d->sw + offx];
					}
					gw[(oc * d->kh + ki) * d->kw + kj] += s;
				}
			}
		}
	}
}

void ds_conv2d_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
		       float *y, float *ws)
{
	switch (ds_conv2d_kind_of(d)) {
	case DS_CONV2D_DEPTHWISE:
		depthwise_forward(d, x, w, b, y);
		break;
	case DS_CONV2D_POINTWISE:
		pointwise_forward(d, x, w, b, y);
		break;
	case DS_CONV2D_IM2COL:
		ds_conv2d_forward_chunked(d, ds_conv2d_chunk(d), x, w, b, y, ws);
		break;
	}
}

void ds_conv2d_backward(const ds_conv2d_dims *d, const float *x, const float *w, const float *gy,
			float *gx, float *gw, float *gb, float *ws)
{
	switch (ds_conv2d_kind_of(d)) {
	case DS_CONV2D_DEPTHWISE:
		depthwise_backward(d, x, w, gy, gx, gw, gb);
		break;
	case DS_CONV2D_POINTWISE:
		pointwise_backward(d, x, w, gy, gx, gw, ws);
		if (gb)
			ds_conv2d_backward_chunked(d, 1, x, w, gy, NULL, NULL, gb, ws);
		break;
	case DS_CONV2D_IM2COL:
		ds_conv2d_backward_chunked(d, ds_conv2d_chunk(d), x, w, gy, gx, gw, gb, ws);
		break;
	}
}

void ds_conv2d_forward_ref(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   float *y)
{
	const int64_t cg = d->c / d->groups, og = d->o / d->groups;

	for (int64_t i = 0; i < d->n; i++)
		for (int64_t oc = 0; oc < d->o; oc++)
			for (int64_t oy = 0; oy < d->oh; oy++)
				for (int64_t ox = 0; ox < d->ow; ox++) {
					double s = b ? b[oc] : 0.0;

					for (int64_t cc = 0; cc < cg; cc++)
						for (int64_t ki = 0; ki < d->kh; ki++)
							for (int64_t kj = 0; kj < d->kw; kj++) {
								int64_t ch = oc / og * cg + cc;
								int64_t iy = oy * d->sh - d->ph + ki * d->dh;
								int64_t ix = ox * d->sw - d->pw + kj * d->dw;

								if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w)
									continue;
								s += (double)x[((i * d->c + ch) * d->h + iy) * d->w + ix] *
								     w[((oc * cg + cc) * d->kh + ki) * d->kw + kj];
							}
					y[((i * d->o + oc) * d->oh + oy) * d->ow + ox] = (float)s;
				}
}
