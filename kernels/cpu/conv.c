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

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_DIRECT_AVX512 1
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

/* Floats of one output plane: the pooled grid when a 2x2 max-pool is
 * fused. */
static int64_t out_plane(const ds_conv2d_dims *d)
{
	return d->pool ? (d->oh / 2) * (d->ow / 2) : d->oh * d->ow;
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

/* The epilogue of one run of outputs: dst = act(src + bias + r), the sums
 * rounded left to right as the unfused graph (a conv2d writing src + bias,
 * then an add node) rounds them; r may be NULL, dst may be src.  No bias is
 * -0.0f, which leaves every float as it is (0.0f would turn -0 into +0).  ReLU maps
 * NaN to 0 as _mm512_max_ps(v, 0) and the relu op do. */
static void epilogue(const ds_conv2d_dims *d, const float *src, float bias, const float *r, int64_t n,
		     float *dst)
{
	const float hi = d->cap > 0.0f ? d->cap : (float)INFINITY;

	if (r && d->relu) {
#pragma omp simd
		for (int64_t q = 0; q < n; q++) {
			float v = src[q] + bias + r[q];

			v = v > 0.0f ? v : 0.0f;
			dst[q] = v < hi ? v : hi;
		}
	} else if (r) {
#pragma omp simd
		for (int64_t q = 0; q < n; q++)
			dst[q] = src[q] + bias + r[q];
	} else if (d->relu) {
#pragma omp simd
		for (int64_t q = 0; q < n; q++) {
			float v = src[q] + bias;

			v = v > 0.0f ? v : 0.0f;
			dst[q] = v < hi ? v : hi;
		}
	} else {
#pragma omp simd
		for (int64_t q = 0; q < n; q++)
			dst[q] = src[q] + bias;
	}
}

static int direct_fits(const ds_conv2d_dims *d);
static int64_t direct_slice(const ds_conv2d_dims *d);
static int grad_input_direct(const ds_conv2d_dims *d, ds_conv2d_dims *e);
static int depthwise_direct(const ds_conv2d_dims *d, ds_conv2d_dims *e);
static size_t depthwise_grad_input_workspace(const ds_conv2d_dims *d);
static int wgrad_direct(const ds_conv2d_dims *d, int64_t chunk);
static void wgrad_image(const ds_conv2d_dims *d, const float *x, const float *gy, float *xt, float *gwt);
static size_t grad_input_workspace(const ds_conv2d_dims *d);

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

	if (d->chunk > 0)
		return min64(d->chunk, CHUNK_MAX);
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

static size_t pooled_workspace(const ds_conv2d_dims *d);

static int lanes_chosen(const ds_conv2d_dims *d)
{
	return d->tactic == DS_CONV2D_TACTIC_LANES && ds_conv2d_lanes_fits(d);
}

size_t ds_conv2d_workspace(const ds_conv2d_dims *d)
{
	if (d->pool && !direct_fits(d))
		return pooled_workspace(d);
	switch (ds_conv2d_kind_of(d)) {
	case DS_CONV2D_IM2COL:
		if (lanes_chosen(d))
			return (size_t)max64((int64_t)ds_conv2d_workspace_chunk(d, ds_conv2d_chunk(d)),
					     (int64_t)ds_conv2d_lanes_workspace(d));
		if (direct_fits(d))
			return (size_t)max64(max64(max64((int64_t)ds_conv2d_workspace_chunk(d, ds_conv2d_chunk(d)),
							 ds_kernel_threads() * direct_slice(d)),
						   (int64_t)grad_input_workspace(d)),
					     (int64_t)ds_conv2d_masked_s2_workspace(d));
		return ds_conv2d_workspace_chunk(d, ds_conv2d_chunk(d));
	case DS_CONV2D_POINTWISE:
		return ds_conv2d_workspace_chunk(d, 0);
	case DS_CONV2D_DEPTHWISE: {
		ds_conv2d_dims e;

		size_t back = depthwise_grad_input_workspace(d);

		if (depthwise_direct(d, &e))
			return (size_t)max64(ds_kernel_threads() * direct_slice(&e), (int64_t)back);
		return back;
	}
	}
	return 0;
}

#ifdef HAVE_DIRECT_AVX512
/* One row of columns at stride 1: dst[ox] = row[ox + offx] for ox in [lo, hi),
 * 0 elsewhere and everywhere when row is NULL.  The rows are short (14 or 28
 * floats in the zoo), and three libc calls a row (memset, memcpy, memset)
 * cost more than the copy: im2col and those calls were 15% of a training
 * step of the reference CNN. */
static __attribute__((target("avx512f"))) void im2col_row_avx512(const float *row, int64_t offx,
								  int64_t lo, int64_t hi, int64_t ow,
								  float *dst)
{
	for (int64_t ox = 0; ox < ow; ox += 16) {
		int64_t nl = min64(16, ow - ox), a = max64(lo - ox, 0), b = min64(hi - ox, nl);
		__mmask16 m = (__mmask16)((1u << nl) - 1);
		__m512 v = _mm512_setzero_ps();

		if (row && a < b) {
			/* Load from the first valid input only, then move the lanes
			 * up to a, so no address before the row is formed. */
			__mmask16 run = (__mmask16)((1u << (b - a)) - 1);

			if (a == 0)
				v = _mm512_maskz_loadu_ps(run, row + ox + offx);
			else
				v = _mm512_maskz_expand_ps((__mmask16)(run << a),
							   _mm512_maskz_loadu_ps(run, row + ox + a + offx));
		}
		_mm512_mask_storeu_ps(dst + ox, m, v);
	}
}
#endif

static int direct_cpu_ok(void);

/* Columns of bc images: row (ch, ki, kj), column (image, oy, ox), ld floats
 * apart; rows are in channel order, so group g's rows are contiguous. */
static void im2col(const ds_conv2d_dims *d, const float *x, int64_t bc, float *col, int64_t ld)
{
#ifdef HAVE_DIRECT_AVX512
	const int fast = d->sw == 1 && direct_cpu_ok();
#endif
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

#ifdef HAVE_DIRECT_AVX512
					if (fast) {
						row = iy < 0 || iy >= d->h ? NULL : xin + iy * d->w;
						im2col_row_avx512(row, offx, lo, hi, d->ow, dst);
						continue;
					}
#endif
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
					if (d->sw == 1) {
#pragma omp simd
						for (int64_t ox = lo; ox < hi; ox++)
							row[ox - lo] += src[ox];
					} else
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

/* reduce_partials for partials laid out [o][taps][c] (wgrad_image's), into
 * gw's [o][c][taps]. */
static void reduce_partials_turned(const ds_conv2d_dims *d, const float *ws, int64_t slice, int64_t at,
				   int threads, float *gw)
{
	const int64_t taps = d->kh * d->kw, count = d->o * d->c * taps;

#pragma omp barrier
#pragma omp for schedule(static)
	for (int64_t e = 0; e < count; e++) {
		int64_t t = e % taps, ic = e / taps % d->c, oc = e / taps / d->c;
		float s = 0;

		for (int th = 0; th < threads; th++)
			s += ws[th * slice + at + (oc * taps + t) * d->c + ic];
		gw[e] += s;
	}
}

static void chunked_forward_res(const ds_conv2d_dims *d, int64_t chunk, const float *x, const float *w,
				const float *b, const float *r, float *y, float *ws)
{
	const int64_t k = d->c * d->kh * d->kw, p = d->oh * d->ow, in_img = d->c * d->h * d->w;
	const int64_t og = d->o / d->groups, kg = k / d->groups, slice = slice_floats(d, chunk);

#pragma omp parallel num_threads(ds_kernel_threads())
	{
		int t = ds_team_thread(), nt = ds_team_size();
		int64_t i0 = d->n * t / nt, i1 = d->n * (t + 1) / nt;
		float *col = ws + ds_kernel_slice() * slice, *tmp = col + k * chunk * p;

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
					const int64_t at = (b0 + i) * d->o * p + oc * p;
					const float *src = out + oc * cols + i * p;
					float *dst = y + at;

					if (src == dst && !b && !r && !d->relu)
						continue;
					epilogue(d, src, b ? b[oc] : -0.0f, r ? r + at : NULL, p, dst);
				}
		}
	}
}

void ds_conv2d_forward_chunked(const ds_conv2d_dims *d, int64_t chunk, const float *x,
			       const float *w, const float *b, float *y, float *ws)
{
	chunked_forward_res(d, chunk, x, w, b, NULL, y, ws);
}

#ifdef HAVE_DIRECT_AVX512
static __attribute__((target("avx512f"))) float plane_sum_avx512(const float *a, int64_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	int64_t q = 0;

	for (; q + 32 <= n; q += 32) {
		s0 = _mm512_add_ps(s0, _mm512_loadu_ps(a + q));
		s1 = _mm512_add_ps(s1, _mm512_loadu_ps(a + q + 16));
	}
	for (; q < n; q += 16) {
		__mmask16 m = (__mmask16)(n - q >= 16 ? 0xffff : (1u << (n - q)) - 1);

		s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m, a + q));
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif

/* The sum of one output plane for the bias gradient: a single scalar
 * accumulator waits on the add latency (6% of a training step). */
static float plane_sum(const float *a, int64_t n)
{
	float s[8] = { 0 }, t = 0;
	int64_t q = 0;

#ifdef HAVE_DIRECT_AVX512
	if (direct_cpu_ok())
		return plane_sum_avx512(a, n);
#endif
	for (; q + 8 <= n; q += 8)
		for (int j = 0; j < 8; j++)
			s[j] += a[q + j];
	for (; q < n; q++)
		t += a[q];
	for (int j = 0; j < 8; j++)
		t += s[j];
	return t;
}

/* gb += the sums of gy's planes; an orphaned loop, so it splits the
 * channels over the team it is called in, or runs them all alone. */
static void bias_grad(const ds_conv2d_dims *d, const float *gy, float *gb)
{
	const int64_t p = d->oh * d->ow;

#pragma omp for schedule(static) nowait
	for (int64_t oc = 0; oc < d->o; oc++) {
		double s = 0;

		for (int64_t i = 0; i < d->n; i++)
			s += plane_sum(gy + (i * d->o + oc) * p, p);
		gb[oc] += (float)s;
	}
}

void ds_conv2d_backward_chunked(const ds_conv2d_dims *d, int64_t chunk, const float *x,
				const float *w, const float *gy, float *gx, float *gw, float *gb,
				float *ws)
{
	const int64_t k = d->c * d->kh * d->kw, p = d->oh * d->ow, in_img = d->c * d->h * d->w;
	const int64_t og = d->o / d->groups, kg = k / d->groups, slice = slice_floats(d, chunk);
	const int64_t gw_at = chunk * (k + d->o) * p;
	const int turned = gw && wgrad_direct(d, chunk);

	if (!gx && !gw) {
		if (gb) {
#pragma omp parallel num_threads(ds_kernel_threads())
			bias_grad(d, gy, gb);
		}
		return;
	}
	/* One team for the bias and the rest: each fork and join is a wait
	 * for the slowest thread, long where the cores are shared. */
#pragma omp parallel num_threads(ds_kernel_threads())
	{
		int t = ds_team_thread(), nt = ds_team_size();
		int64_t i0 = d->n * t / nt, i1 = d->n * (t + 1) / nt;
		float *col = ws + t * slice, *gwp = ws + t * slice + gw_at;

		if (gb)
			bias_grad(d, gy, gb);
		if (gw)
			memset(gwp, 0, (size_t)(d->o * kg) * sizeof *gwp);
		for (int64_t b0 = i0; b0 < i1; b0 += chunk) {
			int64_t bc = min64(chunk, i1 - b0), cols = bc * p;

			/* One GEMM per image on its [o, pixel] block of gy and its
			 * columns of the chunk: no transposed copy of gy (6% of a
			 * training step of the reference CNN went to it). */
			if (gw && turned) {
				for (int64_t i = b0; i < b0 + bc; i++)
					wgrad_image(d, x + i * in_img, gy + i * d->o * p, col, gwp);
			} else if (gw) {
				im2col(d, x + b0 * in_img, bc, col, cols);
				for (int64_t i = 0; i < bc; i++)
					for (int64_t g = 0; g < d->groups; g++)
						ds_gemm_f32(0, 1, og, kg, p, 1.0f, gy + ((b0 + i) * d->o + g * og) * p, p,
							    col + g * kg * cols + i * p, cols, 1.0f, gwp + g * og * kg, kg);
			}
			if (gx) {
				/* The columns are spent: their buffer takes the column gradient. */
				for (int64_t i = 0; i < bc; i++)
					for (int64_t g = 0; g < d->groups; g++)
						ds_gemm_f32(1, 0, kg, p, og, 1.0f, w + g * og * kg, kg,
							    gy + ((b0 + i) * d->o + g * og) * p, p, 0.0f,
							    col + g * kg * cols + i * p, cols);
				col2im_add(d, col, cols, bc, gx + b0 * in_img);
			}
		}
		if (gw && turned)
			reduce_partials_turned(d, ws, slice, gw_at, nt, gw);
		else if (gw)
			reduce_partials(ws, slice, gw_at, d->o * kg, nt, gw);
	}
}

/* 1x1: each image is [c, p], so y_i = w x_i with no columns to build. */
static void pointwise_forward(const ds_conv2d_dims *d, const float *x, const float *w,
			      const float *b, const float *r, float *y)
{
	const int64_t p = d->oh * d->ow;

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t i = 0; i < d->n; i++) {
		float *yi = y + i * d->o * p;

		ds_gemm_f32(0, 0, d->o, p, d->c, 1.0f, w, d->c, x + i * d->c * p, p, 0.0f, yi, p);
		/* The image's output is still in cache: bias, residual and ReLU
		 * in one pass (filling yi with the bias for the GEMM to add to was
		 * a pass of its own, a tenth of mobilenet-s's batch). */
		if (b)
			for (int64_t oc = 0; oc < d->o; oc++)
				epilogue(d, yi + oc * p, b[oc], r ? r + (i * d->o + oc) * p : NULL, p, yi + oc * p);
		else if (r || d->relu)
			epilogue(d, yi, -0.0f, r ? r + i * d->o * p : NULL, d->o * p, yi);
	}
}

static void pointwise_backward(const ds_conv2d_dims *d, const float *x, const float *w,
			       const float *gy, float *gx, float *gw, float *ws)
{
	const int64_t p = d->oh * d->ow, slice = slice_floats(d, 0);

#pragma omp parallel num_threads(ds_kernel_threads())
	{
		int t = ds_team_thread(), nt = ds_team_size();
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
			      const float *b, const float *r, float *y)
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
		/* The plane is in L1: its residual and ReLU(6) cost no pass
		 * over memory. */
		if (r || d->relu)
			epilogue(d, out, -0.0f, r ? r + io * p : NULL, p, out);
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

/* ------------------------------------------------------ direct, stride 1
 *
 * A stride-1 convolution over a zero-padded copy of the image needs no
 * columns: with the padded width wp, output position q = oy * wp + ox reads
 * input q + ki * dh * wp + kj * dw for tap (ki, kj), so sixteen consecutive
 * positions are one unaligned vector load per tap, whatever the rows.  The
 * output is computed on the padded grid (wp - ow columns a row are thrown
 * away) and copied out row by row.  A tile is 8 output channels by 48
 * positions: 24 accumulators, 3 loads and 8 broadcasts per 24 FMAs, with the
 * 8 filters read in place.  On the reference CNN's conv2 (32 -> 64, 14 x 14)
 * it runs at about 200 GFLOP/s on one Zen 5 core counting the thrown-away
 * columns, and took a batch of 64 from 8,000 to 15,000 images/s on one
 * thread together with the chunked plan (lib/plan.c).
 *
 * A stride-s convolution becomes a stride-1 one over s * s phases of the
 * padded image (rows py = s * r + a, columns px = s * c + b in phase
 * (a, b)): tap (ki, kj) reads phase (ki * dh % s, kj * dw % s) shifted by
 * (ki * dh / s, kj * dw / s), and the grid is a phase's width.  It took
 * resnet-s's stride-2 convolutions off im2col, a fifth of its batch. */

#define DIRECT_OB 8
#define DIRECT_NV 3
#define DIRECT_TAPS_MAX 256
/* Strides up to this split the padded image into sh * sw phases. */
#define DIRECT_STRIDE_MAX 4
/* Floats of one padded image: every block of 8 filters reads all of it
 * again, so it has to stay in the core's L2 (1 MiB on Zen 5); larger
 * images take im2col, whose GEMM blocks for the cache itself. */
#define DIRECT_IMAGE_MAX ((int64_t)1 << 17)

static int direct_cpu_ok(void)
{
#ifdef HAVE_DIRECT_AVX512
	/* libgcc fills the CPU model in a constructor: reading it is cheap
	 * and race-free. */
	return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
	return 0;
#endif
}

/* The direct kernel applies: stride 1, a window of at most DIRECT_TAPS_MAX
 * taps, and an AVX-512 CPU. */
static int direct_fits(const ds_conv2d_dims *d)
{
	int64_t gh = (d->h + 2 * d->ph + d->sh - 1) / d->sh, gw = (d->w + 2 * d->pw + d->sw - 1) / d->sw;

	return d->sh <= DIRECT_STRIDE_MAX && d->sw <= DIRECT_STRIDE_MAX &&
	       d->kh * d->kw <= DIRECT_TAPS_MAX && d->oh > 0 && d->ow > 0 &&
	       d->c * d->sh * d->sw * gh * gw <= DIRECT_IMAGE_MAX &&
	       ds_conv2d_kind_of(d) == DS_CONV2D_IM2COL && d->tactic != DS_CONV2D_TACTIC_GEMM &&
	       direct_cpu_ok();
}

struct direct_geom {
	int64_t hp, wp;              /* padded input plane */
	int64_t gh, gw;              /* one phase of it: the output grid's rows */
	int64_t plane;               /* floats of a channel: sh * sw phases */
	int64_t pv;                  /* positions computed a channel: whole vectors */
	int64_t xfloats, ofloats;    /* padded image, padded-grid output */
	int64_t taps;
	int64_t toff[DIRECT_TAPS_MAX];
};

static void direct_geom(const ds_conv2d_dims *d, struct direct_geom *g)
{
	int64_t last = 0;

	g->hp = d->h + 2 * d->ph;
	g->wp = d->w + 2 * d->pw;
	g->gh = (g->hp + d->sh - 1) / d->sh;
	g->gw = (g->wp + d->sw - 1) / d->sw;
	g->plane = d->sh * d->sw * g->gh * g->gw;
	g->pv = (d->oh * g->gw + 15) / 16 * 16;
	g->taps = d->kh * d->kw;
	for (int64_t ki = 0; ki < d->kh; ki++)
		for (int64_t kj = 0; kj < d->kw; kj++) {
			int64_t iy = ki * d->dh, ix = kj * d->dw;
			int64_t phase = iy % d->sh * d->sw + ix % d->sw;

			g->toff[ki * d->kw + kj] =
				phase * g->gh * g->gw + iy / d->sh * g->gw + ix / d->sw;
			last = max64(last, g->toff[ki * d->kw + kj]);
		}
	/* The last channel's vectors read up to pv + last past its start. */
	g->xfloats = max64((d->c - 1) * g->plane + g->pv + last + 16, d->c * g->plane);
	g->ofloats = d->o * g->pv;
}

static int64_t direct_slice(const ds_conv2d_dims *d)
{
	struct direct_geom g;

	direct_geom(d, &g);
	return (g.xfloats + 15) / 16 * 16 + g.ofloats;
}

#ifdef HAVE_DIRECT_AVX512
/* One row of a phase: dst[s] = row[s * sw + off] where that is inside
 * [0, w), else 0, for s < n; a masked gather per sixteen.  The rows are
 * short (15 floats on a 28-wide stride-2 layer): the memset, copy, memset
 * per row this replaces made stride-2 depthwise layers slower than the
 * loops before the direct kernel took them. */
static __attribute__((target("avx512f"))) void phase_row_avx512(const float *row, int64_t off, int64_t sw,
								  int64_t w, int64_t n, float *dst)
{
	const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
	const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);

	if (sw == 2) {
		/* Two masked loads and a permute: cheaper than a gather. */
		for (int64_t s0 = 0; s0 < n; s0 += 16) {
			__mmask16 keep = (__mmask16)(n - s0 >= 16 ? 0xffff : (1u << (n - s0)) - 1);
			int64_t at = 2 * s0 + off;
			__m512i pos = _mm512_add_epi32(lane, _mm512_set1_epi32((int)at));
			__m512i pos2 = _mm512_add_epi32(pos, _mm512_set1_epi32(16));
			__mmask16 in0 = _mm512_cmpge_epi32_mask(pos, _mm512_setzero_si512()) &
					_mm512_cmplt_epi32_mask(pos, _mm512_set1_epi32((int)w));
			__mmask16 in1 = _mm512_cmpge_epi32_mask(pos2, _mm512_setzero_si512()) &
					_mm512_cmplt_epi32_mask(pos2, _mm512_set1_epi32((int)w));
			__m512 v = _mm512_setzero_ps();

			/* at may be before the row: only the masked lanes are
			 * read, and the address is formed as an integer. */
			if (row) {
				uintptr_t base = (uintptr_t)row + (uintptr_t)(at * (int64_t)sizeof *row);

				v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(in0, (const void *)base), even,
							   _mm512_maskz_loadu_ps(in1, (const void *)(base + 64)));
			}
			_mm512_mask_storeu_ps(dst + s0, keep, v);
		}
		return;
	}
	for (int64_t s0 = 0; s0 < n; s0 += 16) {
		__mmask16 keep = (__mmask16)(n - s0 >= 16 ? 0xffff : (1u << (n - s0)) - 1);
		__m512i idx = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32((int)s0)),
								  _mm512_set1_epi32((int)sw)),
					       _mm512_set1_epi32((int)off));
		__mmask16 in = _mm512_cmpge_epi32_mask(idx, _mm512_setzero_si512()) &
			       _mm512_cmplt_epi32_mask(idx, _mm512_set1_epi32((int)w)) & keep;
		__m512 v = row ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx, row, 4) : _mm512_setzero_ps();

		_mm512_mask_storeu_ps(dst + s0, keep, v);
	}
}
#endif

/* Strided: padded row py, column px goes to phase (py % sh, px % sw) at
 * (py / sh, px / sw), so that every tap reads its phase with stride 1.
 * Phases no tap reads (most of them for a 1x1 shortcut) are only zeroed. */
static void direct_pad_phases(const ds_conv2d_dims *d, const struct direct_geom *g, const float *x,
			      int64_t ch, float *dst)
{
	const int64_t gplane = g->gh * g->gw;

	for (int64_t a = 0; a < d->sh; a++)
		for (int64_t bph = 0; bph < d->sw; bph++) {
			float *ph = dst + (a * d->sw + bph) * gplane;
			int64_t off = bph - d->pw, used = 0;

			for (int64_t ki = 0; ki < d->kh; ki++)
				for (int64_t kj = 0; kj < d->kw; kj++)
					used |= ki * d->dh % d->sh == a && kj * d->dw % d->sw == bph;
			if (!used) {
				memset(ph, 0, (size_t)gplane * sizeof *ph);
				continue;
			}
#ifdef HAVE_DIRECT_AVX512
			for (int64_t r = 0; r < g->gh; r++) {
				int64_t iy = r * d->sh + a - d->ph;

				phase_row_avx512(iy < 0 || iy >= d->h ? NULL : x + (ch * d->h + iy) * d->w, off, d->sw,
						 d->w, g->gw, ph + r * g->gw);
			}
#else
			(void)off;
#endif
		}
}

/* Channels [c0, c1) of image x into the padded planes of xp. */
static void direct_pad(const ds_conv2d_dims *d, const struct direct_geom *g, const float *x,
		       int64_t c0, int64_t c1, float *xp)
{
	for (int64_t ch = c0; d->sh * d->sw > 1 && ch < c1; ch++)
		direct_pad_phases(d, g, x, ch, xp + ch * g->plane);
#ifdef HAVE_DIRECT_AVX512
	/* Whole padded rows with masked vectors: a memcpy and a memset of a
	 * few floats a row cost more in calls than in copying (a tenth of
	 * resnet-s's batch went to them). */
	for (int64_t ch = d->sh * d->sw > 1 ? c1 : c0; ch < c1; ch++) {
		const float *src = x + ch * d->h * d->w;
		float *dst = xp + ch * g->plane;

		for (int64_t py = 0; py < g->hp; py++, dst += g->wp) {
			int64_t iy = py - d->ph;

			im2col_row_avx512(iy < 0 || iy >= d->h ? NULL : src + iy * d->w, -d->pw, d->pw,
					  d->pw + d->w, g->wp, dst);
		}
	}
	c0 = c1;
#endif
	for (int64_t ch = d->sh * d->sw > 1 ? c1 : c0; ch < c1; ch++) {
		const float *src = x + ch * d->h * d->w;
		float *dst = xp + ch * g->plane;

		memset(dst, 0, (size_t)(d->ph * g->wp + d->pw) * sizeof *dst);
		dst += d->ph * g->wp + d->pw;
		for (int64_t iy = 0; iy < d->h; iy++, dst += g->wp, src += d->w) {
			memcpy(dst, src, (size_t)d->w * sizeof *dst);
			memset(dst + d->w, 0, (size_t)(iy + 1 < d->h ? 2 * d->pw : d->pw) * sizeof *dst);
		}
		memset(dst - d->pw, 0, (size_t)(d->ph * g->wp) * sizeof *dst);
	}
	/* The slack past the last plane is read into thrown-away positions. */
	if (c1 == d->c)
		memset(xp + d->c * g->plane, 0,
		       (size_t)(g->xfloats - d->c * g->plane) * sizeof *xp);
}

#ifdef HAVE_DIRECT_AVX512
/* ob output channels by nv vectors of positions; constant ob and nv after
 * inlining, so the accumulators stay in registers. */
static inline __attribute__((always_inline, target("avx512f"))) void
direct_tile(int ob, int nv, const float *x, int64_t plane, int64_t cg, const int64_t *toff,
	    int64_t taps, const float *w, const float *bias, int relu, float *out, int64_t ostride)
{
	__m512 acc[DIRECT_OB][DIRECT_NV];
	const int64_t wstride = cg * taps;

#pragma GCC unroll 8
	for (int j = 0; j < ob; j++) {
		__m512 b0 = _mm512_set1_ps(bias ? bias[j] : 0.0f);

#pragma GCC unroll 4
		for (int v = 0; v < nv; v++)
			acc[j][v] = b0;
	}
	for (int64_t c = 0; c < cg; c++) {
		const float *xc = x + c * plane, *wc = w + c * taps;

		for (int64_t t = 0; t < taps; t++) {
			const float *xt = xc + toff[t];
			__m512 xv[DIRECT_NV];

#pragma GCC unroll 4
			for (int v = 0; v < nv; v++)
				xv[v] = _mm512_loadu_ps(xt + 16 * v);
#pragma GCC unroll 8
			for (int j = 0; j < ob; j++) {
				__m512 wb = _mm512_set1_ps(wc[j * wstride + t]);

#pragma GCC unroll 4
				for (int v = 0; v < nv; v++)
					acc[j][v] = _mm512_fmadd_ps(wb, xv[v], acc[j][v]);
			}
		}
	}
#pragma GCC unroll 8
	for (int j = 0; j < ob; j++)
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++) {
			__m512 r = relu ? _mm512_max_ps(acc[j][v], _mm512_setzero_ps()) : acc[j][v];

			_mm512_storeu_ps(out + j * ostride + 16 * v, r);
		}
}

#define DIRECT_TILES(OB)                                                                          \
	static __attribute__((target("avx512f"))) void direct_rows_##OB(                          \
		const struct direct_geom *g, const float *x, int64_t cg, const float *w,          \
		const float *bias, int relu, float *out)                                          \
	{                                                                                         \
		int64_t q = 0;                                                                    \
                                                                                                  \
		for (; q + 16 * DIRECT_NV <= g->pv; q += 16 * DIRECT_NV)                          \
			direct_tile(OB, DIRECT_NV, x + q, g->plane, cg, g->toff, g->taps, w, bias, \
				    relu, out + q, g->pv);                                        \
		if (g->pv - q == 32)                                                              \
			direct_tile(OB, 2, x + q, g->plane, cg, g->toff, g->taps, w, bias, relu,   \
				    out + q, g->pv);                                              \
		else if (g->pv - q == 16)                                                         \
			direct_tile(OB, 1, x + q, g->plane, cg, g->toff, g->taps, w, bias, relu,   \
				    out + q, g->pv);                                              \
	}

DIRECT_TILES(8)
DIRECT_TILES(4)
DIRECT_TILES(2)
DIRECT_TILES(1)
#endif


/* Output channels [o0, o0 + ob) of one image, ob <= DIRECT_OB, all in one
 * group: padded-grid rows into op with the bias (and ReLU unless a residual
 * or a cap comes after), then the copy out, which adds the residual r (the
 * image's, or NULL) and applies ReLU or ReLU6 after it.  The tiles take no
 * cap themselves: one more live register in them cost resnet-s a fifth of
 * its time. */
static void direct_block(const ds_conv2d_dims *d, const struct direct_geom *g, const float *xp,
			 const float *w, const float *b, const float *r, int64_t o0, int64_t ob,
			 float *op, float *y, int32_t *am)
{
	const int64_t cg = d->c / d->groups, og = d->o / d->groups, grp = o0 / og;
	const float *xg = xp + grp * cg * g->plane, *wg = w + o0 * cg * g->taps;
	const float *bg = b ? b + o0 : NULL;
	const int late = !d->pool && (r || (d->relu && d->cap > 0.0f)), relu = d->relu && !late;

#ifdef HAVE_DIRECT_AVX512
	for (int64_t j = 0; j < ob;) {
		int64_t left = ob - j;
		float *oj = op + (o0 + j) * g->pv;
		const float *wj = wg + j * cg * g->taps, *bj = bg ? bg + j : NULL;

		if (left >= 8) {
			direct_rows_8(g, xg, cg, wj, bj, relu, oj);
			j += 8;
		} else if (left >= 4) {
			direct_rows_4(g, xg, cg, wj, bj, relu, oj);
			j += 4;
		} else if (left >= 2) {
			direct_rows_2(g, xg, cg, wj, bj, relu, oj);
			j += 2;
		} else {
			direct_rows_1(g, xg, cg, wj, bj, relu, oj);
			j += 1;
		}
	}
#else
	(void)xg;
	(void)wg;
	(void)bg;
	(void)relu;
#endif
	for (int64_t oc = o0; oc < o0 + ob; oc++) {
		const float *src = op + oc * g->pv;
		float *dst = y + oc * out_plane(d);

		/* Pooled straight from the padded grid while it is in L1: the
		 * full-size output never exists. */
		if (d->pool && am) {
			ds_max_pool_2x2_plane_idx(src, g->gw, d->ow, d->oh / 2, d->ow / 2, dst, am + oc * out_plane(d));
			continue;
		}
		if (d->pool) {
			if (d->relu) {
				ds_max_pool_relu_2x2_plane(src, g->gw, d->oh / 2, d->ow / 2, dst);
				continue;
			}
			ds_max_pool_2x2_plane(src, g->gw, d->oh / 2, d->ow / 2, dst);
			continue;
		}
		if (late && !r) {
			/* ReLU6 alone: one pass over the padded grid in place,
			 * then the plain copy below, rather than a call a row
			 * (7 to 14 floats in mobilenet-s's depthwise layers). */
			epilogue(d, op + oc * g->pv, -0.0f, NULL, d->oh * g->gw, op + oc * g->pv);
		} else if (late) {
			const float *rc = r ? r + oc * out_plane(d) : NULL;

			for (int64_t oy = 0; oy < d->oh; oy++)
				epilogue(d, src + oy * g->gw, -0.0f, rc ? rc + oy * d->ow : NULL, d->ow,
					 dst + oy * d->ow);
			continue;
		}
		if (g->gw == d->ow) {
			memcpy(dst, src, (size_t)(d->oh * d->ow) * sizeof *dst);
			continue;
		}
		/* Rows of a few floats: a loop, not a memcpy call each. */
		for (int64_t oy = 0; oy < d->oh; oy++) {
			const float *sr = src + oy * g->gw;
			float *dr = dst + oy * d->ow;

#pragma omp simd
			for (int64_t ox = 0; ox < d->ow; ox++)
				dr[ox] = sr[ox];
		}
	}
}

/* Blocks of at most DIRECT_OB output channels that stay inside a group. */
static int64_t direct_blocks(const ds_conv2d_dims *d)
{
	int64_t og = d->o / d->groups;

	return d->groups * ((og + DIRECT_OB - 1) / DIRECT_OB);
}

static void direct_block_at(const ds_conv2d_dims *d, int64_t blk, int64_t *o0, int64_t *ob)
{
	int64_t og = d->o / d->groups, per = (og + DIRECT_OB - 1) / DIRECT_OB;
	int64_t grp = blk / per, j = blk % per * DIRECT_OB;

	*o0 = grp * og + j;
	*ob = min64(DIRECT_OB, og - j);
}

/* Images are shared out between the threads; fewer images than threads
 * share each image's channel blocks instead.  A stride-1 convolution as
 * wide as its input goes to conv_masked.c, which needs no padded copy. */
static void direct_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   const float *r, float *y, float *ws)
{
	struct direct_geom g;
	const int64_t in_img = d->c * d->h * d->w, out_img = d->o * out_plane(d);
	const int64_t slice = direct_slice(d), blocks = direct_blocks(d);
	/* Every thread, even on a small batch-1 layer: left to one thread,
	 * such a layer read half its input from the other core's cache, where
	 * the layer before had written its share of the channels (resnet-s's
	 * 1x1 stride-2 downsample at batch 1: 13 us in the model on one of two
	 * threads, 4 us alone; the model's batch-1 median 0.274 -> 0.263 ms). */
	const int threads = ds_kernel_threads();

	if (ds_conv2d_masked_fits(d)) {
		ds_conv2d_masked_forward(d, x, w, b, r, y, ws, slice, threads);
		return;
	}
	direct_geom(d, &g);
#pragma omp parallel num_threads(threads)
	{
		int t = ds_team_thread(), nt = ds_team_size();

		if (d->n >= nt) {
			int64_t i0 = d->n * t / nt, i1 = d->n * (t + 1) / nt;
			float *xp = ws + ds_kernel_slice() * slice, *op = xp + (g.xfloats + 15) / 16 * 16;

			for (int64_t i = i0; i < i1; i++) {
				direct_pad(d, &g, x + i * in_img, 0, d->c, xp);
				for (int64_t blk = 0; blk < blocks; blk++) {
					int64_t o0, ob;

					direct_block_at(d, blk, &o0, &ob);
					direct_block(d, &g, xp, w, b, r ? r + i * out_img : NULL, o0, ob, op,
						     y + i * out_img, d->argmax ? d->argmax + i * out_img : NULL);
				}
			}
		} else {
			/* Each thread pads its own copy (a few KB): cheaper than the
			 * barrier a shared copy needs, which costs a time slice when
			 * the other thread is preempted. */
			float *xp = ws + t * slice, *op = xp + (g.xfloats + 15) / 16 * 16;

			for (int64_t i = 0; i < d->n; i++) {
				direct_pad(d, &g, x + i * in_img, 0, d->c, xp);
				for (int64_t blk = blocks * t / nt; blk < blocks * (t + 1) / nt; blk++) {
					int64_t o0, ob;

					direct_block_at(d, blk, &o0, &ob);
					direct_block(d, &g, xp, w, b, r ? r + i * out_img : NULL, o0, ob, op,
						     y + i * out_img, d->argmax ? d->argmax + i * out_img : NULL);
				}
			}
		}
	}
}

/* Depthwise through the direct kernel: each input channel is a
 * one-channel convolution with its m filters, padded (into phases at
 * stride 2) and computed sixteen positions a vector, every tap an unaligned
 * load, while the plane is in L1.  The row loops below it did a few floats
 * per pass over a 14-wide row: mobilenet-s's depthwise layers ran at about
 * 6 GFLOP/s and took three quarters of its batch. */
static int depthwise_direct(const ds_conv2d_dims *d, ds_conv2d_dims *e)
{
	if (d->pool)
		return 0;
	*e = *d;
	e->n = 1;
	e->c = 1;
	e->o = d->o / d->c;
	e->groups = 1;
	e->tactic = DS_CONV2D_TACTIC_AUTO;
	e->chunk = 0;
	return direct_fits(e);
}

static void depthwise_forward_direct(const ds_conv2d_dims *d, const ds_conv2d_dims *e, const float *x,
				     const float *w, const float *b, const float *r, float *y, float *ws)
{
	struct direct_geom g;
	const int64_t m = e->o, taps = d->kh * d->kw, in_plane = d->h * d->w, p = out_plane(d);
	const int64_t slice = direct_slice(e);

	if (ds_conv2d_masked_fits(d)) {
		ds_conv2d_masked_forward(d, x, w, b, r, y, ws, slice, ds_kernel_threads());
		return;
	}
	direct_geom(e, &g);
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t ic = 0; ic < d->n * d->c; ic++) {
		int64_t i = ic / d->c, ch = ic % d->c, at = (i * d->o + ch * m) * p;
		float *xp = ws + ds_kernel_slice() * slice, *op = xp + (g.xfloats + 15) / 16 * 16;

		direct_pad(e, &g, x + ic * in_plane, 0, 1, xp);
		direct_block(e, &g, xp, w + ch * m * taps, b ? b + ch * m : NULL, r ? r + at : NULL, 0, m, op,
			     y + at, NULL);
	}
}

/* The depthwise input gradient at stride 1, one filter a channel: the
 * depthwise convolution of gy with the filters flipped, padded kh - 1 - ph
 * and kw - 1 - pw, through the kernel above with gx as its residual, so it
 * adds into gx as backward must.  bd is that convolution, e its one-channel
 * form. */
static int depthwise_grad_input(const ds_conv2d_dims *d, ds_conv2d_dims *bd, ds_conv2d_dims *e)
{
	if (d->o != d->c || d->sh != 1 || d->sw != 1 || d->dh != 1 || d->dw != 1 || d->ph > d->kh - 1 ||
	    d->pw > d->kw - 1)
		return 0;
	*bd = (ds_conv2d_dims){ .n = d->n, .c = d->c, .h = d->oh, .w = d->ow, .o = d->c, .kh = d->kh, .kw = d->kw,
				.oh = d->h, .ow = d->w, .sh = 1, .sw = 1, .ph = d->kh - 1 - d->ph,
				.pw = d->kw - 1 - d->pw, .dh = 1, .dw = 1, .groups = d->c };
	return depthwise_direct(bd, e);
}

/* The depthwise weight (and bias) gradient, one filter a channel, up to 25
 * taps: each image's channel padded as the forward pads it, gy laid on the
 * same padded grid (zeros in the columns the forward drops), and per
 * vector of positions one load of gy and one of the image per tap into a
 * sum per tap, kept in registers over the whole batch; a thread owns its
 * channels, so nothing is reduced between threads. */
#define DW_GRAD_TAPS 25

static int depthwise_grad_weight(const ds_conv2d_dims *d, ds_conv2d_dims *e)
{
	return d->o == d->c && d->kh * d->kw <= DW_GRAD_TAPS && depthwise_direct(d, e);
}

#ifdef HAVE_DIRECT_AVX512
static __attribute__((target("avx512f"))) void dw_grad_channel(const ds_conv2d_dims *d, const ds_conv2d_dims *e,
							     const struct direct_geom *g, int64_t ch,
							     const float *x, const float *gy, float *xp,
							     float *gyg, float *gw, float *gb)
{
	__m512 acc[DW_GRAD_TAPS], bsum = _mm512_setzero_ps();
	const int64_t in_plane = d->h * d->w, p = d->oh * d->ow;

	for (int64_t t = 0; t < g->taps; t++)
		acc[t] = _mm512_setzero_ps();
	memset(gyg, 0, (size_t)g->pv * sizeof *gyg);
	for (int64_t i = 0; i < d->n; i++) {
		const float *gyc = gy + (i * d->c + ch) * p;

		direct_pad(e, g, x + (i * d->c + ch) * in_plane, 0, 1, xp);
		for (int64_t oy = 0; oy < d->oh; oy++)
			memcpy(gyg + oy * g->gw, gyc + oy * d->ow, (size_t)d->ow * sizeof *gyg);
		for (int64_t q = 0; q < g->pv; q += 16) {
			__m512 gv = _mm512_loadu_ps(gyg + q);

			bsum = _mm512_add_ps(bsum, gv);
			for (int64_t t = 0; t < g->taps; t++)
				acc[t] = _mm512_fmadd_ps(gv, _mm512_loadu_ps(xp + q + g->toff[t]), acc[t]);
		}
	}
	for (int64_t t = 0; gw && t < g->taps; t++)
		gw[ch * g->taps + t] += _mm512_reduce_add_ps(acc[t]);
	if (gb)
		gb[ch] += _mm512_reduce_add_ps(bsum);
}
#endif

static void depthwise_grad_weight_run(const ds_conv2d_dims *d, const ds_conv2d_dims *e, const float *x,
				      const float *gy, float *gw, float *gb, float *ws)
{
#ifdef HAVE_DIRECT_AVX512
	struct direct_geom g;
	const int64_t slice = direct_slice(e);

	direct_geom(e, &g);
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t ch = 0; ch < d->c; ch++) {
		float *xp = ws + ds_kernel_slice() * slice, *gyg = xp + (g.xfloats + 15) / 16 * 16;

		dw_grad_channel(d, e, &g, ch, x, gy, xp, gyg, gw, gb);
	}
#else
	(void)d;
	(void)e;
	(void)x;
	(void)gy;
	(void)gw;
	(void)gb;
	(void)ws;
#endif
}

/* Its workspace: the kernel's slices, then the flipped filters. */
static size_t depthwise_grad_input_workspace(const ds_conv2d_dims *d)
{
	ds_conv2d_dims bd, e;

	if (!depthwise_grad_input(d, &bd, &e))
		return 0;
	return (size_t)((ds_kernel_threads() * direct_slice(&e) + 15) / 16 * 16 + d->c * d->kh * d->kw);
}

/* ------------------------------------------------- fused pool, other kernels
 *
 * Kernels that cannot pool their own output write a group of images at
 * full size behind their workspace and pool that: a group is what the
 * threads work on at once, so the buffer does not grow with the batch. */

static int64_t pool_group(const ds_conv2d_dims *d)
{
	return ds_kernel_threads() * ds_conv2d_chunk(d);
}

static size_t pooled_inner(const ds_conv2d_dims *d)
{
	ds_conv2d_dims e = *d;

	e.pool = 0;
	return (ds_conv2d_workspace(&e) + 15) / 16 * 16;
}

static size_t pooled_workspace(const ds_conv2d_dims *d)
{
	return pooled_inner(d) + (size_t)(pool_group(d) * d->o * d->oh * d->ow);
}

static void pooled_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   float *y, float *ws)
{
	const int64_t group = pool_group(d), full = d->oh * d->ow, part = out_plane(d);
	const int64_t in_img = d->c * d->h * d->w;
	float *tmp = ws + pooled_inner(d);
	ds_conv2d_dims e = *d;

	e.pool = 0;
	for (int64_t i0 = 0; i0 < d->n; i0 += group) {
		int64_t planes;

		e.n = min64(group, d->n - i0);
		planes = e.n * d->o;
		ds_conv2d_forward(&e, x + i0 * in_img, w, b, tmp, ws);
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (planes * full >= ((int64_t)1 << 15))
		for (int64_t pc = 0; pc < planes; pc++)
			if (d->argmax)
				ds_max_pool_2x2_plane_idx(tmp + pc * full, d->ow, d->ow, d->oh / 2, d->ow / 2,
							  y + (i0 * d->o + pc) * part, d->argmax + (i0 * d->o + pc) * part);
			else
				ds_max_pool_2x2_plane(tmp + pc * full, d->ow, d->oh / 2, d->ow / 2,
						      y + (i0 * d->o + pc) * part);
	}
}

void ds_conv2d_forward_res(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   const float *r, float *y, float *ws)
{
	/* Every kernel applies its epilogue (bias, residual, ReLU) while its
	 * output is in cache. */
	if (d->pool && !direct_fits(d)) {
		pooled_forward(d, x, w, b, y, ws);
		return;
	}
	switch (ds_conv2d_kind_of(d)) {
	case DS_CONV2D_DEPTHWISE: {
		ds_conv2d_dims e;

		if (ds_conv2d_dw3_fits(d))
			ds_conv2d_dw3_forward(d, x, w, b, r, y);
		else if (depthwise_direct(d, &e))
			depthwise_forward_direct(d, &e, x, w, b, r, y, ws);
		else
			depthwise_forward(d, x, w, b, r, y);
		break;
	}
	case DS_CONV2D_POINTWISE:
		/* Few input channels make a thin GEMM a call per image, which
		 * the masked kernel's tiles beat (16 -> 64 on 28x28: 83 against
		 * 101 GFLOP/s on one core); from 64 on the GEMM wins. */
		if (d->c <= 32 && ds_conv2d_masked_fits(d))
			ds_conv2d_masked_forward(d, x, w, b, r, y, ws, d->pool ? direct_slice(d) : 0, ds_kernel_threads());
		else
			pointwise_forward(d, x, w, b, r, y);
		break;
	case DS_CONV2D_IM2COL:
		if (lanes_chosen(d))
			ds_conv2d_lanes_forward(d, x, w, b, r, y, ws);
		else if (direct_fits(d) && ds_conv2d_masked_s2_fits(d))
			ds_conv2d_masked_s2_forward(d, x, w, b, r, y, ws, ds_kernel_threads());
		else if (direct_fits(d))
			direct_forward(d, x, w, b, r, y, ws);
		else
			chunked_forward_res(d, ds_conv2d_chunk(d), x, w, b, r, y, ws);
		break;
	}
}

void ds_conv2d_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
		       float *y, float *ws)
{
	ds_conv2d_forward_res(d, x, w, b, NULL, y, ws);
}

/* ------------------------------------------- weight gradient, 3 x 3
 *
 * gw[o][c][t] sums gy[o][q] * x[c][q + tap t] over the output positions q.
 * With the padded image turned channels-last, sixteen channels at one
 * position are one vector, so a thread keeps 3 filters x 9 taps of sums for
 * 16 channels in 27 registers through a whole image: per position 9 loads,
 * 3 broadcasts and 27 FMAs, and no horizontal sum anywhere.  The sums go to
 * the thread's partial laid out [o][t][c], turned back when the threads'
 * partials are added.  On the reference CNN's conv2 it replaces im2col and
 * a GEMM of thin shape (64 x 288 x 196, about 120 GFLOP/s here); with the
 * input gradient below, a training step went from 6,400 to 7,100 images/s
 * (ds-train --profile: conv2's backward from 5.5 to 3.9 ms a batch). */

#define WGRAD_OG 3

static int wgrad_direct(const ds_conv2d_dims *d, int64_t chunk)
{
	/* The channels-last image goes where the columns would. */
	int64_t hp = d->h + 2 * d->ph, wp = d->w + 2 * d->pw;

	return d->kh == 3 && d->kw == 3 && d->groups == 1 && d->c % 16 == 0 &&
	       hp * wp * d->c <= chunk * d->c * d->kh * d->kw * d->oh * d->ow &&
	       d->tactic != DS_CONV2D_TACTIC_GEMM && direct_cpu_ok();
}

#ifdef HAVE_DIRECT_AVX512
static inline __attribute__((always_inline, target("avx512f"))) void
wgrad_block(const int og, const ds_conv2d_dims *d, const float *xt, int64_t wp, const float *gy, float *gwt)
{
	const int64_t c = d->c, p = d->oh * d->ow;
	const int64_t rs = d->dh * wp * c, cs = d->dw * c;
	/* Unrolled through: the 27 sums live in registers. */
	__m512 acc[WGRAD_OG][9];

#pragma GCC unroll 9
	for (int j = 0; j < og; j++)
#pragma GCC unroll 9
		for (int t = 0; t < 9; t++)
			acc[j][t] = _mm512_setzero_ps();
	for (int64_t oy = 0; oy < d->oh; oy++) {
		const float *xr = xt + oy * d->sh * wp * c, *gr = gy + oy * d->ow;

		for (int64_t ox = 0; ox < d->ow; ox++) {
			const float *xb = xr + ox * d->sw * c;
			__m512 g[WGRAD_OG];

#pragma GCC unroll 9
			for (int j = 0; j < og; j++)
				g[j] = _mm512_set1_ps(gr[j * p + ox]);
#pragma GCC unroll 9
			for (int ki = 0; ki < 3; ki++)
#pragma GCC unroll 9
				for (int kj = 0; kj < 3; kj++) {
					__m512 xv = _mm512_loadu_ps(xb + ki * rs + kj * cs);

					/* One load for og FMAs: GCC would fold it into each
					 * of them, and loads are what this loop waits on. */
					__asm__("" : "+v"(xv));

#pragma GCC unroll 9
					for (int j = 0; j < og; j++)
						acc[j][ki * 3 + kj] = _mm512_fmadd_ps(g[j], xv, acc[j][ki * 3 + kj]);
				}
		}
	}
#pragma GCC unroll 9
	for (int j = 0; j < og; j++)
#pragma GCC unroll 9
		for (int t = 0; t < 9; t++) {
			float *dst = gwt + (j * 9 + t) * c;

			_mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[j][t]));
		}
}

static __attribute__((target("avx512f"))) void wgrad_image(const ds_conv2d_dims *d, const float *x,
							     const float *gy, float *xt, float *gwt)
{
	const int64_t hp = d->h + 2 * d->ph, wp = d->w + 2 * d->pw, c = d->c, p = d->oh * d->ow;

	memset(xt, 0, (size_t)(hp * wp * c) * sizeof *xt);
	for (int64_t ch = 0; ch < c; ch++)
		for (int64_t iy = 0; iy < d->h; iy++) {
			const float *src = x + (ch * d->h + iy) * d->w;
			float *dst = xt + ((iy + d->ph) * wp + d->pw) * c + ch;

			for (int64_t ix = 0; ix < d->w; ix++)
				dst[ix * c] = src[ix];
		}
	for (int64_t o0 = 0; o0 < d->o; o0 += WGRAD_OG) {
		int64_t og = min64(WGRAD_OG, d->o - o0);

		for (int64_t cb = 0; cb < c; cb += 16) {
			const float *xc = xt + cb, *go = gy + o0 * p;
			float *gc = gwt + o0 * 9 * c + cb;

			if (og == 3)
				wgrad_block(3, d, xc, wp, go, gc);
			else if (og == 2)
				wgrad_block(2, d, xc, wp, go, gc);
			else
				wgrad_block(1, d, xc, wp, go, gc);
		}
	}
}
#else
static void wgrad_image(const ds_conv2d_dims *d, const float *x, const float *gy, float *xt, float *gwt)
{
	/* wgrad_direct is 0 without AVX-512: never called. */
	(void)d;
	(void)x;
	(void)gy;
	(void)xt;
	(void)gwt;
}
#endif

/* ------------------------------------------ input gradient, stride 1
 *
 * At stride 1 and dilation 1 the input gradient is itself a convolution:
 * gx = gy convolved with the filters turned [c, o, kh, kw] and flipped in
 * both axes, padded kh - 1 - ph rows and kw - 1 - pw columns, which gives
 * back the input's size.  The direct kernel runs it with gx as the residual,
 * so it adds into gx as backward must, and neither the column gradient nor
 * col2im's scattered adds exist: on the reference CNN's conv2 they were a
 * third of its backward pass. */

static int grad_input_direct(const ds_conv2d_dims *d, ds_conv2d_dims *e)
{
	if (d->sh != 1 || d->sw != 1 || d->dh != 1 || d->dw != 1 || d->groups != 1 || d->ph > d->kh - 1 ||
	    d->pw > d->kw - 1 || d->tactic == DS_CONV2D_TACTIC_GEMM)
		return 0;
	*e = (ds_conv2d_dims){ .n = d->n, .c = d->o, .h = d->oh, .w = d->ow, .o = d->c, .kh = d->kh, .kw = d->kw,
			       .oh = d->h, .ow = d->w, .sh = 1, .sw = 1, .ph = d->kh - 1 - d->ph,
			       .pw = d->kw - 1 - d->pw, .dh = 1, .dw = 1, .groups = 1 };
	return direct_fits(e);
}

/* Workspace of the direct input gradient: the kernel's slices, then the
 * turned filters. */
static size_t grad_input_workspace(const ds_conv2d_dims *d)
{
	ds_conv2d_dims e;

	if (!grad_input_direct(d, &e))
		return 0;
	return (size_t)((ds_kernel_threads() * direct_slice(&e) + 15) / 16 * 16 + d->o * d->c * d->kh * d->kw);
}

static void grad_input_by_direct(const ds_conv2d_dims *d, const ds_conv2d_dims *e, const float *w,
				 const float *gy, float *gx, float *ws)
{
	const int64_t taps = d->kh * d->kw;
	float *wt = ws + (ds_kernel_threads() * direct_slice(e) + 15) / 16 * 16;

	for (int64_t oc = 0; oc < d->o; oc++)
		for (int64_t ic = 0; ic < d->c; ic++)
			for (int64_t t = 0; t < taps; t++)
				wt[(ic * d->o + oc) * taps + taps - 1 - t] = w[(oc * d->c + ic) * taps + t];
	direct_forward(e, gy, wt, NULL, gx, gx, ws);
}

void ds_conv2d_backward(const ds_conv2d_dims *d, const float *x, const float *w, const float *gy,
			float *gx, float *gw, float *gb, float *ws)
{
	switch (ds_conv2d_kind_of(d)) {
	case DS_CONV2D_DEPTHWISE: {
		ds_conv2d_dims bd, e;

		if (gx && depthwise_grad_input(d, &bd, &e)) {
			const int64_t taps = d->kh * d->kw;
			float *wt = ws + (ds_kernel_threads() * direct_slice(&e) + 15) / 16 * 16;

			for (int64_t ch = 0; ch < d->c; ch++)
				for (int64_t t = 0; t < taps; t++)
					wt[ch * taps + taps - 1 - t] = w[ch * taps + t];
			depthwise_forward_direct(&bd, &e, gy, wt, NULL, gx, gx, ws);
			gx = NULL;
		}
		if ((gw || gb) && depthwise_grad_weight(d, &e)) {
			depthwise_grad_weight_run(d, &e, x, gy, gw, gb, ws);
			gw = gb = NULL;
		}
		if (gx || gw || gb)
			depthwise_backward(d, x, w, gy, gx, gw, gb);
		break;
	}
	case DS_CONV2D_POINTWISE:
		pointwise_backward(d, x, w, gy, gx, gw, ws);
		if (gb)
			ds_conv2d_backward_chunked(d, 1, x, w, gy, NULL, NULL, gb, ws);
		break;
	case DS_CONV2D_IM2COL: {
		ds_conv2d_dims e;

		if (gx && grad_input_direct(d, &e)) {
			grad_input_by_direct(d, &e, w, gy, gx, ws);
			gx = NULL;
		}
		ds_conv2d_backward_chunked(d, ds_conv2d_chunk(d), x, w, gy, gx, gw, gb, ws);
		break;
	}
	}
}

static float ref_pooled(const ds_conv2d_dims *d, const float *full, int64_t plane, int64_t oy,
			int64_t ox)
{
	const float *r0 = full + plane * d->oh * d->ow + 2 * oy * d->ow + 2 * ox, *r1 = r0 + d->ow;
	float v[4] = { r0[0], r0[1], r1[0], r1[1] }, best = v[0];

	/* The first maximum wins and NaN propagates, as in max_pool. */
	for (int k = 1; k < 4; k++)
		if (best == best && (v[k] > best || v[k] != v[k]))
			best = v[k];
	return best;
}

void ds_conv2d_forward_ref(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   float *y)
{
	const int64_t cg = d->c / d->groups, og = d->o / d->groups;

	if (d->pool) {
		ds_conv2d_dims e = *d;
		float *full = malloc((size_t)(d->n * d->o * d->oh * d->ow) * sizeof *full);

		if (!full)
			return;
		e.pool = 0;
		ds_conv2d_forward_ref(&e, x, w, b, full);
		for (int64_t pc = 0; pc < d->n * d->o; pc++)
			for (int64_t oy = 0; oy < d->oh / 2; oy++)
				for (int64_t ox = 0; ox < d->ow / 2; ox++)
					y[(pc * (d->oh / 2) + oy) * (d->ow / 2) + ox] =
						ref_pooled(d, full, pc, oy, ox);
		free(full);
		return;
	}
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
					if (d->relu && d->cap > 0 && s > d->cap)
						s = d->cap;
					y[((i * d->o + oc) * d->oh + oy) * d->ow + ox] =
						d->relu && s < 0 ? 0.0f : (float)s;
				}
}
