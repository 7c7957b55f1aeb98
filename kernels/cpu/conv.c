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

static int thread_id(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

/* The slice of the workspace a forward thread uses.  Inside a caller's
 * parallel region (a plan running items in chunks, one chunk a thread) the
 * kernel's own team has one thread, and the caller's thread number is the
 * one that tells slices apart. */
static int slice_id(void)
{
#ifdef _OPENMP
	int level = omp_get_active_level();

	return level > 0 ? omp_get_ancestor_thread_num(level) : 0;
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

static int direct_fits(const ds_conv2d_dims *d);
static int64_t direct_slice(const ds_conv2d_dims *d);

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
		if (direct_fits(d))
			return (size_t)max64((int64_t)ds_conv2d_workspace_chunk(d, ds_conv2d_chunk(d)),
					     ds_kernel_threads() * direct_slice(d));
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
		float *col = ws + slice_id() * slice, *tmp = col + k * chunk * p;

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
 * thread together with the chunked plan (lib/plan.c). */

#define DIRECT_OB 8
#define DIRECT_NV 3
#define DIRECT_TAPS_MAX 256
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
	return d->sh == 1 && d->sw == 1 && d->kh * d->kw <= DIRECT_TAPS_MAX && d->oh > 0 &&
	       d->ow > 0 && d->c * (d->h + 2 * d->ph) * (d->w + 2 * d->pw) <= DIRECT_IMAGE_MAX &&
	       ds_conv2d_kind_of(d) == DS_CONV2D_IM2COL && direct_cpu_ok();
}

struct direct_geom {
	int64_t hp, wp, plane;       /* padded input plane */
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
	g->plane = g->hp * g->wp;
	g->pv = (d->oh * g->wp + 15) / 16 * 16;
	g->taps = d->kh * d->kw;
	for (int64_t ki = 0; ki < d->kh; ki++)
		for (int64_t kj = 0; kj < d->kw; kj++) {
			g->toff[ki * d->kw + kj] = ki * d->dh * g->wp + kj * d->dw;
			last = max64(last, g->toff[ki * d->kw + kj]);
		}
	/* The last channel's vectors read up to pv + last past its start. */
	g->xfloats = (d->c - 1) * g->plane + g->pv + last + 16;
	g->ofloats = d->o * g->pv;
}

static int64_t direct_slice(const ds_conv2d_dims *d)
{
	struct direct_geom g;

	direct_geom(d, &g);
	return (g.xfloats + 15) / 16 * 16 + g.ofloats;
}

/* Channels [c0, c1) of image x into the padded planes of xp. */
static void direct_pad(const ds_conv2d_dims *d, const struct direct_geom *g, const float *x,
		       int64_t c0, int64_t c1, float *xp)
{
	for (int64_t ch = c0; ch < c1; ch++) {
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
 * group: padded-grid rows into op, then bias, ReLU and the copy out. */
static void direct_block(const ds_conv2d_dims *d, const struct direct_geom *g, const float *xp,
			 const float *w, const float *b, int64_t o0, int64_t ob, float *op,
			 float *y)
{
	const int64_t cg = d->c / d->groups, og = d->o / d->groups, grp = o0 / og;
	const float *xg = xp + grp * cg * g->plane, *wg = w + o0 * cg * g->taps;
	const float *bg = b ? b + o0 : NULL;

#ifdef HAVE_DIRECT_AVX512
	for (int64_t j = 0; j < ob;) {
		int64_t left = ob - j;
		float *oj = op + (o0 + j) * g->pv;
		const float *wj = wg + j * cg * g->taps, *bj = bg ? bg + j : NULL;

		if (left >= 8) {
			direct_rows_8(g, xg, cg, wj, bj, d->relu, oj);
			j += 8;
		} else if (left >= 4) {
			direct_rows_4(g, xg, cg, wj, bj, d->relu, oj);
			j += 4;
		} else if (left >= 2) {
			direct_rows_2(g, xg, cg, wj, bj, d->relu, oj);
			j += 2;
		} else {
			direct_rows_1(g, xg, cg, wj, bj, d->relu, oj);
			j += 1;
		}
	}
#else
	(void)xg;
	(void)wg;
	(void)bg;
#endif
	for (int64_t oc = o0; oc < o0 + ob; oc++) {
		const float *src = op + oc * g->pv;
		float *dst = y + oc * d->oh * d->ow;

		if (g->wp == d->ow) {
			memcpy(dst, src, (size_t)(d->oh * d->ow) * sizeof *dst);
			continue;
		}
		for (int64_t oy = 0; oy < d->oh; oy++)
			memcpy(dst + oy * d->ow, src + oy * g->wp, (size_t)d->ow * sizeof *dst);
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

/* Multiply-adds below which a batch-1 convolution stays on one thread: the
 * fork and join cost more than the second core gives back. */
#define DIRECT_SPLIT_MIN ((int64_t)1 << 19)

/* Images are shared out between the threads; fewer images than threads
 * share each image's channel blocks instead. */
static void direct_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   float *y, float *ws)
{
	struct direct_geom g;
	const int64_t in_img = d->c * d->h * d->w, out_img = d->o * d->oh * d->ow;
	const int64_t slice = direct_slice(d), blocks = direct_blocks(d);
	int threads = ds_kernel_threads();

	direct_geom(d, &g);
	if (d->n < threads && d->o * d->oh * d->ow * (d->c / d->groups) * g.taps < DIRECT_SPLIT_MIN)
		threads = 1;
#pragma omp parallel num_threads(threads)
	{
		int t = thread_id(), nt = thread_count();

		if (d->n >= nt) {
			int64_t i0 = d->n * t / nt, i1 = d->n * (t + 1) / nt;
			float *xp = ws + slice_id() * slice, *op = xp + (g.xfloats + 15) / 16 * 16;

			for (int64_t i = i0; i < i1; i++) {
				direct_pad(d, &g, x + i * in_img, 0, d->c, xp);
				for (int64_t blk = 0; blk < blocks; blk++) {
					int64_t o0, ob;

					direct_block_at(d, blk, &o0, &ob);
					direct_block(d, &g, xp, w, b, o0, ob, op, y + i * out_img);
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
					direct_block(d, &g, xp, w, b, o0, ob, op, y + i * out_img);
				}
			}
		}
	}
}

void ds_conv2d_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
		       float *y, float *ws)
{
	int64_t n = d->n * d->o * d->oh * d->ow;

	switch (ds_conv2d_kind_of(d)) {
	case DS_CONV2D_DEPTHWISE:
		depthwise_forward(d, x, w, b, y);
		break;
	case DS_CONV2D_POINTWISE:
		pointwise_forward(d, x, w, b, y);
		break;
	case DS_CONV2D_IM2COL:
		if (direct_fits(d)) {
			direct_forward(d, x, w, b, y, ws);
			return;
		}
		ds_conv2d_forward_chunked(d, ds_conv2d_chunk(d), x, w, b, y, ws);
		break;
	}
	if (d->relu) {
#pragma omp parallel for simd schedule(static) if (n >= ((int64_t)1 << 15))
		for (int64_t i = 0; i < n; i++)
			y[i] = y[i] > 0.0f ? y[i] : 0.0f;
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
					y[((i * d->o + oc) * d->oh + oy) * d->ow + ox] =
						d->relu && s < 0 ? 0.0f : (float)s;
				}
}
