/* test_kernels.c - the fast CPU kernels against plain reference loops, over
 * odd sizes, strides, padding, dilation, groups, batch 1 and short batches,
 * and with the work split over threads or not. */
#include "config.h"
#include "tap.h"
#include "cpu/conv.h"
#include "cpu/elementwise.h"
#include "ds.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 40) & 0xffff) / 32768.0f - 1.0f;
}

static float *randv(int64_t n)
{
	float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);

	for (int64_t i = 0; i < n; i++)
		v[i] = frand();
	return v;
}

static int blocked_portable;   /* conv_blocked.c told to take its portable tiles */

/* Largest difference relative to the size of the sum's terms. */
static double max_err(const float *a, const float *b, int64_t n, double scale)
{
	double e = 0;

	for (int64_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]) / scale;

		if (d > e || d != d)
			e = d != d ? INFINITY : d;
	}
	return e;
}

/* The kernel the cases below ask for (a ds_conv2d_tactic). */
static int case_tactic;

static void conv_pool_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k,
			   int64_t stride, int64_t pad, int64_t dil, int64_t groups, int bias, int relu,
			   int pool)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = o, .kh = k, .kw = k > 1 ? k - (k % 2 == 0) : k,
		.sh = stride, .sw = stride, .ph = pad, .pw = pad > 0 ? pad - 1 : 0, .dh = dil, .dw = 1,
		.groups = groups, .relu = relu, .pool = pool, .tactic = case_tactic,
	};
	int64_t xn, wn, yn;
	float *x, *wt, *b, *y, *ref, *ws;
	char what[200];

	d.oh = (h + 2 * d.ph - d.dh * (d.kh - 1) - 1) / d.sh + 1;
	d.ow = (w + 2 * d.pw - d.dw * (d.kw - 1) - 1) / d.sw + 1;
	xn = n * c * h * w;
	wn = o * (c / groups) * d.kh * d.kw;
	yn = pool ? n * o * (d.oh / 2) * (d.ow / 2) : n * o * d.oh * d.ow;
	x = randv(xn);
	wt = randv(wn);
	b = bias ? randv(o) : NULL;
	y = randv(yn);
	ref = randv(yn);
	ws = calloc(ds_conv2d_workspace(&d) + 1, sizeof *ws);
	ds_conv2d_forward(&d, x, wt, b, y, ws);
	ds_conv2d_forward_ref(&d, x, wt, b, ref);
	snprintf(what, sizeof what,
		 "conv2d n%lld c%lld %lldx%lld o%lld k%lldx%lld s%lld p%lld,%lld d%lld g%lld%s%s%s%s",
		 (long long)n, (long long)c, (long long)h, (long long)w, (long long)o,
		 (long long)d.kh, (long long)d.kw, (long long)stride, (long long)d.ph,
		 (long long)d.pw, (long long)dil, (long long)groups, bias ? " bias" : "",
		 relu ? " relu" : "", pool ? " pool" : "", case_tactic == DS_CONV2D_TACTIC_LANES ? " lanes" : "");
	ok(max_err(y, ref, yn, sqrt((double)(c / groups * d.kh * d.kw)) + 1) < 1e-5, "%s", what);
	free(x);
	free(wt);
	free(b);
	free(y);
	free(ref);
	free(ws);
}

static void conv_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k,
		      int64_t stride, int64_t pad, int64_t dil, int64_t groups, int bias, int relu)
{
	conv_pool_case(n, c, h, w, o, k, stride, pad, dil, groups, bias, relu, 0);
}

/* A fused residual and ReLU or ReLU6 (act 1, 2) against the unfused
 * sequence on the same kernel: convolution with bias, then y + r, then the
 * activation.  Equal bit for bit, which is what lets fuse-add call itself
 * exact. */
static void conv_res_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k, int64_t stride,
			  int64_t pad, int64_t groups, int bias, int act)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = o, .kh = k, .kw = k, .sh = stride, .sw = stride,
		.ph = pad, .pw = pad, .dh = 1, .dw = 1, .groups = groups, .tactic = case_tactic,
	};
	int64_t yn, bad = 0;
	float *x, *wt, *b, *r, *y, *want, *ws;

	d.oh = (h + 2 * pad - k) / stride + 1;
	d.ow = (w + 2 * pad - k) / stride + 1;
	yn = n * o * d.oh * d.ow;
	x = randv(n * c * h * w);
	wt = randv(o * (c / groups) * k * k);
	b = bias ? randv(o) : NULL;
	r = randv(yn);
	y = randv(yn);
	want = randv(yn);
	ws = calloc(ds_conv2d_workspace(&d) + 1, sizeof *ws);
	ds_conv2d_forward(&d, x, wt, b, want, ws);
	/* The activation alone, in the kernel, first. */
	d.relu = act > 0;
	d.cap = act == 2 ? 6.0f : 0.0f;
	ds_conv2d_forward(&d, x, wt, b, y, ws);
	for (int64_t i = 0; i < yn; i++) {
		float v = want[i];

		if (act)
			v = v > 0.0f ? v : 0.0f;
		if (act == 2)
			v = v < 6.0f ? v : 6.0f;
		bad += memcmp(&y[i], &v, sizeof v) != 0;
	}
	for (int64_t i = 0; i < yn; i++) {
		float v = want[i] + r[i];

		if (act)
			v = v > 0.0f ? v : 0.0f;
		if (act == 2)
			v = v < 6.0f ? v : 6.0f;
		want[i] = v;
	}
	ds_conv2d_forward_res(&d, x, wt, b, r, y, ws);
	for (int64_t i = 0; i < yn; i++)
		bad += memcmp(&y[i], &want[i], sizeof y[i]) != 0;
	ok(bad == 0, "conv2d + residual n%lld c%lld %lldx%lld o%lld k%lld s%lld g%lld%s%s%s: %lld differ",
	   (long long)n, (long long)c, (long long)h, (long long)w, (long long)o, (long long)k, (long long)stride,
	   (long long)groups, bias ? " bias" : "", act == 2 ? " relu6" : act ? " relu" : "",
	   case_tactic == DS_CONV2D_TACTIC_LANES ? " lanes" : "", (long long)bad);
	free(x);
	free(wt);
	free(b);
	free(r);
	free(y);
	free(want);
	free(ws);
}

static void test_conv_residual(void)
{
	/* Direct (stride 1 and the strided phases), depthwise, pointwise and
	 * im2col (a padded image too large for the direct kernel). */
	conv_res_case(3, 16, 28, 28, 16, 3, 1, 1, 1, 1, 1);
	conv_res_case(1, 16, 28, 28, 16, 3, 1, 1, 1, 1, 1);
	conv_res_case(2, 5, 9, 11, 7, 3, 1, 1, 1, 0, 0);
	conv_res_case(2, 16, 28, 28, 32, 1, 2, 0, 1, 1, 1);
	conv_res_case(2, 8, 13, 13, 6, 3, 2, 1, 1, 1, 2);
	conv_res_case(3, 24, 14, 14, 24, 3, 1, 1, 24, 1, 2);
	conv_res_case(2, 6, 9, 9, 6, 3, 2, 1, 6, 0, 1);
	conv_res_case(3, 16, 14, 14, 24, 1, 1, 0, 1, 1, 0);
	conv_res_case(2, 24, 7, 7, 16, 1, 1, 0, 1, 1, 2);
	conv_res_case(2, 64, 50, 50, 8, 3, 1, 1, 1, 1, 1);
	conv_res_case(1, 4, 23, 23, 5, 3, 5, 1, 1, 1, 2);
}

static void test_conv(void)
{
	/* The shapes of the zoo: cnn-small, resnet-s, their batch-1 forms. */
	conv_case(3, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1, 0);
	conv_case(1, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1, 1);
	conv_case(5, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 1);
	conv_case(1, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 0);
	conv_case(2, 16, 28, 28, 16, 3, 1, 1, 1, 1, 0, 0);
	conv_case(1, 64, 7, 7, 64, 3, 1, 1, 1, 1, 0, 1);
	conv_case(2, 16, 28, 28, 32, 3, 2, 1, 1, 1, 0, 0);
	/* Odd sizes: channels off the 8-block, widths off the vector, tails. */
	conv_case(3, 3, 5, 7, 13, 3, 1, 1, 1, 1, 1, 1);
	conv_case(1, 5, 9, 11, 7, 5, 1, 2, 1, 1, 1, 0);
	conv_case(2, 4, 6, 6, 9, 3, 1, 0, 1, 1, 0, 1);
	conv_case(1, 2, 1, 1, 3, 1, 1, 0, 1, 1, 1, 0);
	conv_case(4, 6, 10, 3, 6, 3, 1, 1, 2, 2, 1, 1);
	conv_case(3, 8, 12, 12, 12, 3, 1, 1, 1, 4, 1, 0);
	conv_case(2, 4, 9, 9, 8, 4, 1, 2, 1, 1, 1, 0);
	conv_case(1, 3, 17, 19, 17, 7, 1, 3, 1, 1, 1, 1);
	conv_case(2, 6, 8, 8, 6, 3, 1, 1, 1, 6, 1, 1);
	conv_case(3, 5, 9, 9, 10, 1, 1, 0, 1, 1, 1, 1);
	conv_case(2, 4, 9, 9, 6, 3, 2, 1, 1, 2, 1, 1);
	conv_case(1, 40, 33, 33, 24, 3, 1, 1, 1, 1, 1, 0);
	/* Too large a padded image for the direct kernel: im2col, then ReLU. */
	conv_case(2, 64, 50, 50, 8, 3, 1, 1, 1, 1, 1, 1);
	/* Strided, through the phases of the padded image: resnet-s's
	 * downsampling convolutions and 1x1 shortcuts, odd sizes, dilation,
	 * groups, stride 4 (the largest split) and 5 (im2col). */
	conv_case(3, 32, 14, 14, 64, 3, 2, 1, 1, 1, 1, 1);
	conv_case(1, 16, 28, 28, 32, 3, 2, 1, 1, 1, 1, 0);
	conv_case(2, 16, 28, 28, 32, 1, 2, 0, 1, 1, 1, 0);
	conv_case(3, 32, 14, 14, 64, 1, 2, 0, 1, 1, 0, 1);
	conv_case(2, 5, 13, 11, 9, 3, 2, 2, 2, 1, 1, 1);
	conv_case(2, 3, 17, 15, 10, 5, 3, 2, 1, 1, 1, 0);
	conv_case(2, 8, 19, 21, 6, 3, 4, 1, 1, 2, 1, 1);
	conv_case(1, 4, 23, 23, 5, 3, 5, 1, 1, 1, 1, 1);
	conv_case(2, 6, 8, 8, 6, 3, 2, 1, 1, 6, 1, 1);
	conv_pool_case(4, 16, 28, 28, 32, 3, 2, 1, 1, 1, 1, 1, 1);
	/* A fused 2x2 max-pool: pooled from the direct kernel's padded grid,
	 * or behind the other kernels (stride 2, pointwise, depthwise, too
	 * large), odd sizes dropping the last row and column. */
	conv_pool_case(3, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1, 1, 1);
	conv_pool_case(5, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 1, 1);
	conv_pool_case(1, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 0, 1);
	conv_pool_case(3, 3, 5, 7, 13, 3, 1, 1, 1, 1, 1, 1, 1);
	conv_pool_case(2, 16, 28, 28, 32, 3, 2, 1, 1, 1, 0, 1, 1);
	conv_pool_case(3, 5, 9, 9, 10, 1, 1, 0, 1, 1, 1, 1, 1);
	conv_pool_case(2, 6, 8, 8, 6, 3, 1, 1, 1, 6, 1, 0, 1);
	conv_pool_case(2, 64, 50, 50, 8, 3, 1, 1, 1, 1, 1, 1, 1);
	conv_pool_case(37, 4, 11, 9, 5, 3, 1, 1, 1, 1, 1, 1, 1);
}

/* The backward pass against the plain loops in double: gx, gw and gb are
 * added into (each starts from random values), gx may be absent. */
static void conv_backward_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k,
			       int64_t stride, int64_t pad, int64_t dil, int64_t groups, int with_gx)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = o, .kh = k, .kw = k > 1 ? k - (k % 2 == 0) : k,
		.sh = stride, .sw = stride, .ph = pad, .pw = pad > 0 ? pad - 1 : 0, .dh = dil, .dw = 1,
		.groups = groups,
	};
	int64_t xn, wn, yn, cg = c / groups, og = o / groups;
	float *x, *wt, *gy, *gx, *gw, *gb, *rx, *rw, *rb, *ws;
	double *ax, *aw, *ab;
	char what[200];

	d.oh = (h + 2 * d.ph - d.dh * (d.kh - 1) - 1) / d.sh + 1;
	d.ow = (w + 2 * d.pw - d.dw * (d.kw - 1) - 1) / d.sw + 1;
	xn = n * c * h * w;
	wn = o * cg * d.kh * d.kw;
	yn = n * o * d.oh * d.ow;
	x = randv(xn);
	wt = randv(wn);
	gy = randv(yn);
	gx = randv(xn);
	gw = randv(wn);
	gb = randv(o);
	ax = calloc((size_t)xn, sizeof *ax);
	aw = calloc((size_t)wn, sizeof *aw);
	ab = calloc((size_t)o, sizeof *ab);
	for (int64_t i = 0; i < n; i++)
		for (int64_t oc = 0; oc < o; oc++)
			for (int64_t oy = 0; oy < d.oh; oy++)
				for (int64_t ox = 0; ox < d.ow; ox++) {
					double g = gy[((i * o + oc) * d.oh + oy) * d.ow + ox];

					ab[oc] += g;
					for (int64_t ch = 0; ch < cg; ch++)
						for (int64_t ki = 0; ki < d.kh; ki++)
							for (int64_t kj = 0; kj < d.kw; kj++) {
								int64_t iy = oy * d.sh - d.ph + ki * d.dh;
								int64_t ix = ox * d.sw - d.pw + kj * d.dw;
								int64_t xi = ((i * c + oc / og * cg + ch) * h + iy) * w + ix;
								int64_t wi = ((oc * cg + ch) * d.kh + ki) * d.kw + kj;

								if (iy < 0 || iy >= h || ix < 0 || ix >= w)
									continue;
								aw[wi] += g * x[xi];
								ax[xi] += g * wt[wi];
							}
				}
	rx = malloc((size_t)xn * sizeof *rx);
	rw = malloc((size_t)wn * sizeof *rw);
	rb = malloc((size_t)o * sizeof *rb);
	for (int64_t e = 0; e < xn; e++)
		rx[e] = (float)(gx[e] + ax[e]);
	for (int64_t e = 0; e < wn; e++)
		rw[e] = (float)(gw[e] + aw[e]);
	for (int64_t e = 0; e < o; e++)
		rb[e] = (float)(gb[e] + ab[e]);
	ws = calloc(ds_conv2d_workspace(&d) + 1, sizeof *ws);
	ds_conv2d_backward(&d, x, wt, gy, with_gx ? gx : NULL, gw, gb, ws);
	snprintf(what, sizeof what,
		 "conv2d backward n%lld c%lld %lldx%lld o%lld k%lldx%lld s%lld p%lld,%lld d%lld g%lld%s",
		 (long long)n, (long long)c, (long long)h, (long long)w, (long long)o,
		 (long long)d.kh, (long long)d.kw, (long long)stride, (long long)d.ph,
		 (long long)d.pw, (long long)dil, (long long)groups, with_gx ? "" : " no gx");
	ok(max_err(gw, rw, wn, sqrt((double)(n * d.oh * d.ow)) + 1) < 1e-5 &&
	   max_err(gb, rb, o, sqrt((double)(n * d.oh * d.ow)) + 1) < 1e-5 &&
	   (!with_gx || max_err(gx, rx, xn, sqrt((double)(og * d.kh * d.kw)) + 1) < 1e-5), "%s", what);
	free(x);
	free(wt);
	free(gy);
	free(gx);
	free(gw);
	free(gb);
	free(ax);
	free(aw);
	free(ab);
	free(rx);
	free(rw);
	free(rb);
	free(ws);
}

static void test_conv_backward(void)
{
	/* The zoo's shapes (cnn-small's first convolution takes no gx), then
	 * rows longer than a vector and off it, padding on one side only,
	 * stride 2, dilation, groups, 1x1 and a batch of one. */
	conv_backward_case(3, 1, 28, 28, 32, 3, 1, 1, 1, 1, 0);
	conv_backward_case(5, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1);
	conv_backward_case(1, 64, 7, 7, 64, 3, 1, 1, 1, 1, 1);
	conv_backward_case(3, 3, 5, 7, 13, 3, 1, 1, 1, 1, 1);
	conv_backward_case(2, 5, 9, 37, 7, 5, 1, 2, 1, 1, 1);
	conv_backward_case(2, 4, 6, 17, 9, 3, 1, 0, 1, 1, 1);
	conv_backward_case(2, 4, 6, 33, 9, 4, 1, 2, 1, 1, 1);
	conv_backward_case(2, 16, 28, 28, 32, 3, 2, 1, 1, 1, 1);
	conv_backward_case(4, 6, 10, 3, 6, 3, 1, 1, 2, 2, 1);
	conv_backward_case(3, 8, 12, 12, 12, 3, 1, 1, 1, 4, 1);
	conv_backward_case(3, 5, 9, 9, 10, 1, 1, 0, 1, 1, 1);
	conv_backward_case(2, 6, 8, 8, 6, 3, 1, 1, 1, 6, 1);
	/* Depthwise: the input gradient through the direct kernel at stride
	 * 1 (padding 1, 2 and 0), the loops at stride 2. */
	conv_backward_case(3, 24, 14, 14, 24, 3, 1, 1, 1, 24, 1);
	conv_backward_case(2, 8, 9, 11, 8, 5, 1, 2, 1, 8, 1);
	conv_backward_case(2, 8, 9, 9, 8, 3, 1, 0, 1, 8, 1);
	conv_backward_case(2, 16, 14, 14, 16, 3, 2, 1, 1, 16, 1);
	conv_backward_case(37, 4, 11, 9, 5, 3, 1, 1, 1, 1, 1);
}

/* The 2x2 stride-2 pool against the plain window loop, with ties (small
 * integers) and NaNs, odd widths and heights, rows longer than a vector. */
static void pool_case(int64_t n, int64_t c, int64_t h, int64_t w, int nans)
{
	ds_pool_dims d = { .n = n, .c = c, .h = h, .w = w, .oh = h / 2, .ow = w / 2,
			   .kh = 2, .kw = 2, .sh = 2, .sw = 2 };
	int64_t xn = n * c * h * w, yn = n * c * d.oh * d.ow, bad = 0;
	float *x = malloc((size_t)xn * sizeof *x), *y = malloc((size_t)yn * sizeof *y);
	int32_t *idx = malloc((size_t)yn * sizeof *idx);
	float *y2 = malloc((size_t)yn * sizeof *y2);

	for (int64_t i = 0; i < xn; i++)
		x[i] = (float)((int)(frand() * 4));
	for (int i = 0; i < nans; i++)
		x[(int64_t)((frand() + 1) / 2 * (float)(xn - 1))] = NAN;
	ds_max_pool_forward(&d, x, y, idx);
	ds_max_pool_forward(&d, x, y2, NULL);
	for (int64_t pc = 0; pc < n * c; pc++)
		for (int64_t oy = 0; oy < d.oh; oy++)
			for (int64_t ox = 0; ox < d.ow; ox++) {
				const float *xin = x + pc * h * w;
				int64_t q = (pc * d.oh + oy) * d.ow + ox, at = 2 * oy * w + 2 * ox;
				float best = xin[at];

				for (int64_t k = 0; k < 4 && best == best; k++) {
					int64_t i = (2 * oy + k / 2) * w + 2 * ox + k % 2;

					if (xin[i] > best || xin[i] != xin[i]) {
						best = xin[i];
						at = i;
					}
				}
				if (idx[q] != at || (best == best ? y[q] != best : y[q] == y[q]) ||
				    memcmp(&y[q], &y2[q], sizeof y[q]))
					bad++;
			}
	ok(bad == 0, "max_pool 2x2 n%lld c%lld %lldx%lld nans %d: %lld wrong", (long long)n,
	   (long long)c, (long long)h, (long long)w, nans, (long long)bad);
	free(x);
	free(y);
	free(y2);
	free(idx);
}

static void test_pool(void)
{
	pool_case(2, 3, 28, 28, 0);
	pool_case(1, 32, 28, 28, 5);
	pool_case(3, 5, 14, 14, 3);
	pool_case(2, 2, 7, 9, 2);
	pool_case(1, 1, 2, 2, 0);
	pool_case(2, 3, 66, 70, 20);
	pool_case(40, 64, 14, 14, 0);
}

/* ReLU both ways against the plain rule, with NaN, -0 and lengths off the
 * vector, above and below the size that splits the work. */
static void test_relu(void)
{
	static const int64_t sizes[] = { 1, 15, 16, 17, 100, 32768 + 5, 100003 };

	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
		int64_t n = sizes[s], bad = 0;
		float *x = randv(n + 1), *y = randv(n + 1), *dy = randv(n), *dx = randv(n);
		float *dx0 = malloc((size_t)n * sizeof *dx0);

		x[0] = NAN;
		if (n > 3)
			x[3] = -0.0f;
		y[n] = 42.0f;
		memcpy(dx0, dx, (size_t)n * sizeof *dx);
		ds_cpu_act_forward(DS_CPU_RELU, 0.0f, x, y, n);
		ds_cpu_act_backward(DS_CPU_RELU, 0.0f, x, dy, dx, n);
		for (int64_t i = 0; i < n; i++) {
			float want = x[i] > 0.0f ? x[i] : 0.0f, g = dx0[i] + (x[i] > 0.0f ? dy[i] : 0.0f);

			if (memcmp(&y[i], &want, sizeof want) || dx[i] != g)
				bad++;
		}
		ok(bad == 0 && y[n] == 42.0f, "relu forward and backward, n %lld: %lld wrong",
		   (long long)n, (long long)bad);
		free(x);
		free(y);
		free(dy);
		free(dx);
		free(dx0);
	}
}

/* An inference plan runs its leading per-item nodes a chunk of items at a
 * time, a thread per share of the batch (lib/plan.c); the logits must be
 * those of the node-by-node run, which nested OpenMP levels force. */
static void plan_case(const char *arch, int64_t batch, int64_t run)
{
	ds_error err = { 0 };
	ds_container *m = NULL;
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	json_t *pre = json_pack("{s:s,s:i,s:i,s:i,s:f}", "kind", "image", "width", 28, "height", 28,
				"channels", 1, "scale", 1 / 255.0);
	ds_zoo_options zo = { .arch = arch, .preprocess = pre, .classes = 10, .seed = 3 };
	float *want = NULL;
	double e = INFINITY;
	int64_t n = 0;

	if (ds_zoo_build(&zo, &m, &err) || ds_graph_from_model(m, &g, &err) ||
	    ds_plan_new(g, m, batch, NULL, (ds_device){ 0 }, &p, &err) ||
	    ds_plan_set_batch(p, run, &err)) {
		ok(0, "%s plan: %s", arch, err.message);
		goto out;
	}
	{
		ds_tensor *x = ds_plan_tensor(p, "x"), *y = ds_plan_tensor(p, "logits");
		float *xd = x->data;

		for (int64_t i = 0; i < ds_tensor_numel(x); i++)
			xd[i] = frand();
		n = ds_tensor_numel(y);
		want = malloc((size_t)n * sizeof *want);
#ifdef _OPENMP
		omp_set_max_active_levels(2);
#endif
		if (ds_plan_forward(p, 0, 0, &err))
			goto fail;
		memcpy(want, y->data, (size_t)n * sizeof *want);
#ifdef _OPENMP
		omp_set_max_active_levels(1);
#endif
		if (ds_plan_forward(p, 0, 0, &err) || ds_plan_forward(p, 0, 1, &err))
			goto fail;
		e = max_err(y->data, want, n, 1.0);
	}
fail:
	ok(e < 1e-5, "%s planned at %lld, run at %lld: chunked logits as node by node (%g)%s%s",
	   arch, (long long)batch, (long long)run, e, err.status ? ": " : "", err.message);
out:
#ifdef _OPENMP
	omp_set_max_active_levels(1);
#endif
	free(want);
	ds_plan_free(p);
	ds_graph_free(g);
	ds_container_free(m);
	json_decref(pre);
}

static void test_plan_chunks(void)
{
	plan_case("cnn-small", 9, 9);
	plan_case("cnn-small", 64, 37);
	plan_case("cnn-small", 8, 1);
	plan_case("resnet-s", 7, 7);
	plan_case("resnet-s", 12, 5);
	plan_case("cnn-bn", 5, 4);
	plan_case("mlp", 6, 6);
}

/* What the fused epilogue does after the plain convolution: the residual,
 * then ReLU (act 1) or ReLU6 (act 2). */
static void ref_epilogue(float *ref, const float *r, int64_t n, int act)
{
	for (int64_t i = 0; i < n; i++) {
		float v = ref[i] + (r ? r[i] : 0.0f);

		if (act)
			v = v > 0.0f ? v : 0.0f;
		if (act == 2)
			v = v < 6.0f ? v : 6.0f;
		ref[i] = v;
	}
}

/* Stride-1 convolutions as wide as their input go to conv_masked.c: every
 * border (a row above or below, a column either side that the flat offset
 * wraps into the next row), planes narrower than a vector and not a
 * multiple of one, taller or shorter outputs than inputs, dilation, groups,
 * depthwise, the residual with ReLU6, and the fused pool. */
static void conv_same_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t kh, int64_t kw,
			   int64_t ph, int64_t dil, int64_t groups, int act, int res, int pool)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = o, .kh = kh, .kw = kw, .sh = 1, .sw = 1, .ph = ph,
		.pw = dil * (kw - 1) / 2, .dh = dil, .dw = dil, .groups = groups, .relu = act > 0,
		.cap = act == 2 ? 6.0f : 0.0f, .pool = pool,
	};
	ds_conv2d_dims plain;
	int64_t yn, full;
	float *x, *wt, *b, *r, *y, *ref, *tmp, *ws;
	double err = 0.0;

	d.oh = h + 2 * ph - dil * (kh - 1);
	d.ow = w;
	plain = d;
	plain.relu = 0;
	plain.cap = 0.0f;
	plain.pool = 0;
	full = n * o * d.oh * d.ow;
	yn = pool ? n * o * (d.oh / 2) * (d.ow / 2) : full;
	x = randv(n * c * h * w);
	wt = randv(o * (c / groups) * kh * kw);
	b = randv(o);
	r = res ? randv(full) : NULL;
	y = randv(yn);
	ref = randv(full);
	tmp = randv(yn);
	ws = calloc(ds_conv2d_workspace(&d) + 1, sizeof *ws);
	ds_conv2d_forward_res(&d, x, wt, b, r, y, ws);
	ds_conv2d_forward_ref(&plain, x, wt, b, ref);
	ref_epilogue(ref, r, full, act);
	if (pool)
		for (int64_t pc = 0; pc < n * o; pc++)
			ds_max_pool_2x2_plane(ref + pc * d.oh * d.ow, d.ow, d.oh / 2, d.ow / 2,
					      tmp + pc * (d.oh / 2) * (d.ow / 2));
	err = max_err(y, pool ? tmp : ref, yn, sqrt((double)(c / groups * kh * kw)) + 1);
	ok(!ds_conv2d_masked_fits(&d) == !__builtin_cpu_supports("avx512f") && err < 1e-5,
	   "same-width conv2d n%lld c%lld %lldx%lld o%lld k%lldx%lld ph%lld d%lld g%lld%s%s%s",
	   (long long)n, (long long)c, (long long)h, (long long)w, (long long)o, (long long)kh, (long long)kw,
	   (long long)ph, (long long)dil, (long long)groups, act == 2 ? " relu6" : act ? " relu" : "",
	   res ? " residual" : "", pool ? " pool" : "");
	free(x);
	free(wt);
	free(b);
	free(r);
	free(y);
	free(ref);
	free(tmp);
	free(ws);
}

static void test_conv_same(void)
{
	conv_same_case(3, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 0, 0);
	conv_same_case(2, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 0, 1);
	conv_same_case(2, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 0, 1);
	conv_same_case(1, 64, 7, 7, 64, 3, 3, 1, 1, 1, 0, 1, 0);
	conv_same_case(2, 16, 28, 28, 16, 3, 3, 1, 1, 1, 1, 1, 0);
	conv_same_case(2, 24, 14, 14, 24, 3, 3, 1, 1, 24, 2, 0, 0);
	conv_same_case(2, 8, 7, 7, 16, 3, 3, 1, 1, 8, 2, 1, 0);
	conv_same_case(3, 3, 5, 5, 13, 5, 5, 2, 1, 1, 1, 0, 0);
	conv_same_case(2, 5, 9, 3, 7, 3, 3, 2, 1, 1, 0, 0, 0);      /* taller output */
	conv_same_case(2, 5, 9, 11, 7, 3, 3, 0, 1, 1, 1, 0, 0);     /* shorter output */
	conv_same_case(2, 4, 10, 9, 6, 3, 3, 2, 2, 2, 1, 1, 0);     /* dilation 2 */
	conv_same_case(1, 3, 17, 19, 9, 7, 7, 3, 1, 1, 2, 0, 0);
	conv_same_case(2, 6, 11, 1, 4, 3, 1, 1, 1, 1, 1, 0, 0);     /* one column */
	conv_same_case(2, 6, 1, 13, 4, 1, 3, 0, 1, 1, 1, 0, 0);     /* one row */
	conv_same_case(2, 70, 6, 6, 9, 3, 3, 1, 1, 1, 1, 1, 0);     /* channels past a pass */
	conv_same_case(37, 4, 11, 9, 5, 3, 3, 1, 1, 1, 1, 0, 1);
	/* Runs of images numbered through: vectors across two images, tiles
	 * over several, runs of unequal size, partial blocks of channels. */
	conv_same_case(64, 64, 7, 7, 64, 3, 3, 1, 1, 1, 0, 1, 0);
	conv_same_case(21, 40, 4, 4, 24, 3, 3, 1, 1, 1, 1, 0, 0);
	conv_same_case(13, 32, 14, 14, 32, 3, 3, 1, 1, 1, 2, 1, 0);
	conv_same_case(19, 8, 14, 14, 16, 3, 3, 1, 1, 1, 1, 0, 1);
	conv_same_case(11, 6, 5, 5, 13, 3, 3, 1, 1, 1, 2, 1, 0);
	conv_same_case(7, 5, 3, 3, 6, 3, 3, 1, 1, 1, 1, 0, 0);      /* planes under a vector */
	conv_same_case(9, 5, 9, 3, 7, 3, 3, 2, 1, 1, 0, 1, 0);      /* taller output */
	conv_same_case(8, 4, 10, 9, 6, 3, 3, 2, 2, 2, 1, 1, 0);     /* dilation 2 */
	conv_same_case(50, 24, 6, 6, 24, 3, 3, 1, 1, 24, 2, 0, 0);  /* depthwise */
	conv_same_case(45, 16, 8, 8, 32, 1, 1, 0, 1, 1, 1, 0, 0);   /* 1x1 */
	conv_same_case(6, 3, 9, 9, 4, 7, 7, 3, 1, 1, 1, 0, 0);
}

/* Stride-2 convolutions whose taps read no further than their output's
 * row and column go to conv_masked.c split into phases: 3x3 with padding 1
 * (four phases), 1x1 (one), padding 2, 5x5 with padding 3, odd sizes,
 * rows longer than a vector pair, one-pixel outputs, groups, partial
 * blocks of channels, runs of images; and cases that do not fit (dilation,
 * padding too small), which the direct kernel takes. */
static void conv_s2_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k, int64_t pad, int64_t dil,
			 int64_t groups, int act, int res, int fits)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = o, .kh = k, .kw = k, .sh = 2, .sw = 2, .ph = pad, .pw = pad,
		.dh = dil, .dw = dil, .groups = groups, .relu = act > 0, .cap = act == 2 ? 6.0f : 0.0f,
	};
	ds_conv2d_dims plain;
	int64_t yn;
	float *x, *wt, *b, *r, *y, *ref, *ws;

	d.oh = (h + 2 * pad - dil * (k - 1) - 1) / 2 + 1;
	d.ow = (w + 2 * pad - dil * (k - 1) - 1) / 2 + 1;
	plain = d;
	plain.relu = 0;
	plain.cap = 0.0f;
	yn = n * o * d.oh * d.ow;
	x = randv(n * c * h * w);
	wt = randv(o * (c / groups) * k * k);
	b = randv(o);
	r = res ? randv(yn) : NULL;
	y = randv(yn);
	ref = randv(yn);
	ws = calloc(ds_conv2d_workspace(&d) + 1, sizeof *ws);
	ds_conv2d_forward_res(&d, x, wt, b, r, y, ws);
	ds_conv2d_forward_ref(&plain, x, wt, b, ref);
	ref_epilogue(ref, r, yn, act);
	ok(!ds_conv2d_masked_s2_fits(&d) == !(fits && __builtin_cpu_supports("avx512f")) &&
		   max_err(y, ref, yn, sqrt((double)(c / groups * k * k)) + 1) < 1e-5,
	   "stride-2 conv2d n%lld c%lld %lldx%lld o%lld k%lld p%lld d%lld g%lld%s%s%s", (long long)n, (long long)c,
	   (long long)h, (long long)w, (long long)o, (long long)k, (long long)pad, (long long)dil, (long long)groups,
	   act == 2 ? " relu6" : act ? " relu" : "", res ? " residual" : "", fits ? "" : " (direct)");
	free(x);
	free(wt);
	free(b);
	free(r);
	free(y);
	free(ref);
	free(ws);
}

static void test_conv_s2(void)
{
	conv_s2_case(9, 32, 14, 14, 64, 3, 1, 1, 1, 1, 0, 1);    /* resnet-s layer2 */
	conv_s2_case(20, 64, 7, 7, 40, 3, 1, 1, 1, 1, 1, 1);     /* layer3, 4x4 out */
	conv_s2_case(13, 32, 14, 14, 64, 1, 0, 1, 1, 0, 0, 1);   /* downsample */
	conv_s2_case(64, 16, 28, 28, 24, 3, 1, 1, 1, 2, 0, 1);
	conv_s2_case(3, 5, 9, 11, 7, 3, 1, 1, 1, 1, 0, 1);
	conv_s2_case(4, 8, 10, 10, 6, 3, 1, 1, 2, 1, 1, 1);
	conv_s2_case(3, 4, 8, 8, 5, 3, 2, 1, 1, 1, 0, 1);        /* wider than half */
	conv_s2_case(2, 3, 11, 11, 4, 5, 3, 1, 1, 1, 0, 1);
	conv_s2_case(2, 3, 70, 40, 9, 3, 1, 1, 1, 0, 0, 1);      /* long rows */
	conv_s2_case(5, 6, 1, 1, 10, 3, 1, 1, 1, 1, 0, 1);       /* one pixel */
	conv_s2_case(7, 6, 2, 3, 10, 3, 1, 1, 1, 0, 1, 1);
	conv_s2_case(3, 4, 12, 12, 5, 3, 2, 2, 1, 1, 0, 0);      /* dilation: past the output */
	conv_s2_case(3, 4, 12, 12, 5, 3, 0, 1, 1, 1, 0, 0);      /* no padding: past the output */
}

/* 3x3 depthwise layers go to conv_dw3.c: stride 2 on planes whose output
 * rows take one vector or several (the odd lanes carried from one to the
 * next), odd widths, one-pixel planes; stride 1 on flat planes narrower
 * than a vector and wider; no bias, ReLU6 and the residual (added after
 * the bias, as the unfused graph adds it). */
static void conv_dw3_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t stride, int bias, int act, int res)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = c, .kh = 3, .kw = 3, .sh = stride, .sw = stride, .ph = 1,
		.pw = 1, .dh = 1, .dw = 1, .groups = c, .relu = act > 0, .cap = act == 2 ? 6.0f : 0.0f,
	};
	ds_conv2d_dims plain;
	int64_t yn;
	float *x, *wt, *b, *r, *y, *ref, *ws;

	d.oh = (h - 1) / stride + 1;
	d.ow = (w - 1) / stride + 1;
	plain = d;
	plain.relu = 0;
	plain.cap = 0.0f;
	yn = n * c * d.oh * d.ow;
	x = randv(n * c * h * w);
	wt = randv(c * 9);
	b = bias ? randv(c) : NULL;
	r = res ? randv(yn) : NULL;
	y = randv(yn);
	ref = randv(yn);
	ws = calloc(ds_conv2d_workspace(&d) + 1, sizeof *ws);
	ds_conv2d_forward_res(&d, x, wt, b, r, y, ws);
	ds_conv2d_forward_ref(&plain, x, wt, b, ref);
	ref_epilogue(ref, r, yn, act);
	ok(!ds_conv2d_dw3_fits(&d) == !__builtin_cpu_supports("avx512f") && max_err(y, ref, yn, 4.0) < 1e-5,
	   "3x3 depthwise n%lld c%lld %lldx%lld s%lld%s%s%s", (long long)n, (long long)c, (long long)h, (long long)w,
	   (long long)stride, bias ? " bias" : "", act == 2 ? " relu6" : act ? " relu" : "", res ? " residual" : "");
	free(x);
	free(wt);
	free(b);
	free(r);
	free(y);
	free(ref);
	free(ws);
}

static void test_conv_dw3(void)
{
	conv_dw3_case(2, 64, 28, 28, 2, 1, 2, 0);    /* mobilenet-s */
	conv_dw3_case(1, 96, 14, 14, 2, 1, 2, 0);
	conv_dw3_case(2, 96, 14, 14, 1, 1, 2, 0);
	conv_dw3_case(2, 128, 7, 7, 1, 1, 1, 1);
	conv_dw3_case(3, 5, 37, 71, 2, 1, 1, 1);     /* three vectors a row */
	conv_dw3_case(2, 3, 33, 34, 2, 0, 0, 0);
	conv_dw3_case(2, 3, 9, 23, 1, 0, 2, 1);
	conv_dw3_case(1, 2, 64, 64, 1, 1, 1, 0);     /* 256 vectors, the most a flat plane has */
	conv_dw3_case(2, 4, 5, 3, 2, 1, 0, 1);
	conv_dw3_case(2, 3, 1, 1, 1, 1, 1, 0);
	conv_dw3_case(2, 3, 1, 1, 2, 1, 1, 0);
	conv_dw3_case(1, 2, 2, 17, 2, 1, 0, 0);
}

/* A convolution with its max-pool fused, as ds-train runs one: the forward
 * keeps argmax and gives conv then max_pool's values; the backward from the
 * pooled gradient (zero in places, as after a ReLU) gives what the pool's
 * backward and the plain convolution backward give. */
static void conv_pooled_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k, int64_t stride,
			     int64_t pad, int64_t dil, int64_t groups, int with_gx)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = o, .kh = k, .kw = k, .sh = stride, .sw = stride, .ph = pad,
		.pw = pad, .dh = dil, .dw = dil, .groups = groups, .pool = 1,
	};
	ds_conv2d_dims e;
	ds_pool_dims pd;
	int64_t xn, wn, full, pooled;
	float *x, *wt, *b, *y, *ref_full, *ref_y, *gy, *gfull, *gx, *gw, *gb, *rgx, *rgw, *rgb, *ws, *rws;
	int32_t *am, *ram;
	double err;

	d.oh = (h + 2 * pad - dil * (k - 1) - 1) / stride + 1;
	d.ow = (w + 2 * pad - dil * (k - 1) - 1) / stride + 1;
	e = d;
	e.pool = 0;
	pd = (ds_pool_dims){ .n = n, .c = o, .h = d.oh, .w = d.ow, .oh = d.oh / 2, .ow = d.ow / 2, .kh = 2, .kw = 2,
			     .sh = 2, .sw = 2 };
	xn = n * c * h * w;
	wn = o * (c / groups) * k * k;
	full = n * o * d.oh * d.ow;
	pooled = n * o * (d.oh / 2) * (d.ow / 2);
	x = randv(xn);
	wt = randv(wn);
	b = randv(o);
	y = randv(pooled);
	ref_full = randv(full);
	ref_y = randv(pooled);
	gy = randv(pooled);
	for (int64_t i = 0; i < pooled; i += 3)
		gy[i] = 0.0f;
	gfull = calloc((size_t)full, sizeof *gfull);
	gx = calloc((size_t)xn, sizeof *gx);
	gw = calloc((size_t)wn, sizeof *gw);
	gb = calloc((size_t)o, sizeof *gb);
	rgx = calloc((size_t)xn, sizeof *rgx);
	rgw = calloc((size_t)wn, sizeof *rgw);
	rgb = calloc((size_t)o, sizeof *rgb);
	am = calloc((size_t)pooled, sizeof *am);
	ram = calloc((size_t)pooled, sizeof *ram);
	ws = calloc(ds_conv2d_pooled_backward_workspace(&d) + ds_conv2d_workspace(&d) + 1, sizeof *ws);
	rws = calloc(ds_conv2d_workspace(&e) + 1, sizeof *rws);
	d.argmax = am;
	ds_conv2d_forward(&d, x, wt, b, y, ws);
	d.argmax = NULL;
	ds_conv2d_forward(&e, x, wt, b, ref_full, rws);
	ds_max_pool_forward(&pd, ref_full, ref_y, ram);
	ok(max_err(y, ref_y, pooled, 1.0) < 1e-6 && memcmp(am, ram, (size_t)pooled * sizeof *am) == 0,
	   "conv2d + pool forward with argmax: n%lld c%lld %lldx%lld o%lld k%lld s%lld p%lld d%lld g%lld", (long long)n,
	   (long long)c, (long long)h, (long long)w, (long long)o, (long long)k, (long long)stride, (long long)pad,
	   (long long)dil, (long long)groups);
	ds_max_pool_backward(&pd, ram, gy, gfull);
	ds_conv2d_backward(&e, x, wt, gfull, with_gx ? rgx : NULL, rgw, rgb, rws);
	ds_conv2d_pooled_backward(&d, x, wt, gy, am, with_gx ? gx : NULL, gw, gb, ws);
	err = fmax(fmax(max_err(gw, rgw, wn, sqrt((double)(n * d.oh * d.ow)) + 1),
			max_err(gb, rgb, o, sqrt((double)(n * d.oh * d.ow)) + 1)),
		   with_gx ? max_err(gx, rgx, xn, sqrt((double)(o * k * k)) + 1) : 0.0);
	ok(err < 1e-5, "conv2d + pool backward%s: n%lld c%lld %lldx%lld o%lld k%lld s%lld p%lld d%lld g%lld: %g",
	   with_gx ? " with gx" : "", (long long)n, (long long)c, (long long)h, (long long)w, (long long)o,
	   (long long)k, (long long)stride, (long long)pad, (long long)dil, (long long)groups, err);
	free(x);
	free(wt);
	free(b);
	free(y);
	free(ref_full);
	free(ref_y);
	free(gy);
	free(gfull);
	free(gx);
	free(gw);
	free(gb);
	free(rgx);
	free(rgw);
	free(rgb);
	free(am);
	free(ram);
	free(ws);
	free(rws);
}

static void test_conv_pooled(void)
{
	conv_pooled_case(4, 1, 28, 28, 32, 3, 1, 1, 1, 1, 0);       /* windows */
	conv_pooled_case(3, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1);      /* 3x3 in registers */
	conv_pooled_case(2, 40, 10, 10, 8, 3, 1, 1, 1, 1, 1);       /* 2 + 1 vectors */
	conv_pooled_case(2, 3, 11, 9, 5, 3, 1, 1, 1, 1, 1);         /* odd planes */
	conv_pooled_case(2, 3, 12, 12, 4, 5, 1, 2, 1, 1, 1);        /* 5x5: windows */
	conv_pooled_case(2, 20, 12, 12, 4, 5, 1, 2, 1, 1, 0);       /* 5x5: any window */
	conv_pooled_case(2, 8, 17, 17, 6, 3, 2, 1, 1, 1, 1);        /* stride 2 */
	conv_pooled_case(2, 16, 13, 13, 6, 3, 1, 2, 2, 1, 1);       /* dilation 2 */
	conv_pooled_case(2, 8, 12, 12, 8, 3, 1, 1, 1, 2, 1);        /* groups */
	conv_pooled_case(1, 2, 5, 4, 3, 3, 1, 0, 1, 1, 1);          /* no padding, 3x2 output */
}

/* ds_linear_forward_fixed: right, and each row the same bits whatever
 * rows come with it and however many threads share the work. */
static void linear_fixed_case(int64_t in, int64_t out)
{
	const int64_t m_max = 37;
	float *x = randv(m_max * in), *w = randv(out * in), *b = randv(out);
	float *y = randv(m_max * out), *alone = randv(m_max * out);
	int64_t moved = 0;
	double err = 0.0;

	for (int64_t i = 0; i < m_max; i++)
		ds_linear_forward_fixed(1, in, out, x + i * in, w, b, alone + i * out);
	for (int64_t i = 0; i < m_max; i++)
		for (int64_t o = 0; o < out; o++) {
			double s = b[o];

			for (int64_t k = 0; k < in; k++)
				s += (double)x[i * in + k] * w[o * in + k];
			err = fmax(err, fabs(alone[i * out + o] - s) / (sqrt((double)in) + 1));
		}
	for (int64_t m = 1; m <= m_max; m++) {
		ds_linear_forward_fixed(m, in, out, x, w, b, y);
		moved += memcmp(y, alone, (size_t)(m * out) * sizeof *y) != 0;
	}
	ok(err < 1e-5 && moved == 0, "linear, fixed order, in %lld out %lld: error %g, %lld batch sizes moved a row",
	   (long long)in, (long long)out, err, (long long)moved);
	free(x);
	free(w);
	free(b);
	free(y);
	free(alone);
}

/* The blocked layout (conv_blocked.c) against the plain reference: input
 * blocked or plain (a chain's first layer, channels a plane apart),
 * channels not a multiple of 16 on either side, every tile shape (4, 2
 * and 1 vectors of channels), positions running across images, stride,
 * padding, dilation, 1x1 and 5x5 filters, the residual with ReLU6, the
 * fused 2x2 max-pool (odd sizes, runs of row pairs across images), the
 * first-layer form; the padding channels of the output stay zero. */
static void conv_blocked_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k, int64_t pad,
			      int64_t stride, int64_t dil, int bias, int act, int res, int x_blocked, int pool)
{
	ds_conv2d_dims d = {
		.n = n, .c = c, .h = h, .w = w, .o = o, .kh = k, .kw = k, .sh = stride, .sw = stride, .ph = pad,
		.pw = pad, .dh = dil, .dw = dil, .groups = 1, .relu = act > 0, .cap = act == 2 ? 6.0f : 0.0f,
		.pool = pool,
	};
	ds_conv2d_dims plain;
	const int64_t cb = (c + 15) / 16, ob = (o + 15) / 16;
	int64_t yn, bn, ch, cw, pads = 0;
	float *x, *xb, *wt, *wp, *b, *bp, *r, *rb, *y, *yb, *ref, *ws;

	ch = d.oh = (h + 2 * pad - dil * (k - 1) - 1) / stride + 1;
	cw = d.ow = (w + 2 * pad - dil * (k - 1) - 1) / stride + 1;
	plain = d;
	plain.relu = 0;
	plain.cap = 0.0f;
	plain.pool = 0;
	if (pool) {
		ch /= 2;
		cw /= 2;
	}
	yn = n * o * ch * cw;
	bn = n * ob * 16 * ch * cw;
	x = randv(n * c * h * w);
	xb = randv(n * cb * 16 * h * w);
	wt = randv(o * c * k * k);
	wp = randv((int64_t)ds_conv2d_blocked_packed_floats(&d));
	b = bias ? randv(o) : NULL;
	bp = calloc((size_t)ob * 16, sizeof *bp);
	r = res ? randv(yn) : NULL;
	rb = randv(bn);
	yb = randv(bn);
	y = randv(yn);
	ref = randv(n * o * d.oh * d.ow);
	ws = randv((int64_t)ds_conv2d_blocked_workspace(&d) + 1);
	ds_conv2d_blocked_pack(&d, wt, wp);
	if (b)
		memcpy(bp, b, (size_t)o * sizeof *bp);
	if (r)
		ds_to_blocked(n, o, d.oh * d.ow, r, rb);
	ds_to_blocked(n, c, h * w, x, xb);
	ds_conv2d_blocked_forward(&d, x_blocked, x_blocked ? xb : x, wp, b ? bp : NULL, r ? rb : NULL, yb, ws);
	ds_from_blocked(n, o, ch * cw, yb, y);
	ds_conv2d_forward_ref(&plain, x, wt, b, ref);
	ref_epilogue(ref, r, n * o * d.oh * d.ow, act);
	if (pool)
		for (int64_t i = 0; i < n * o; i++)
			for (int64_t py = 0; py < ch; py++)
				for (int64_t px = 0; px < cw; px++) {
					const float *q = ref + (i * d.oh + 2 * py) * d.ow + 2 * px;
					float m = q[0];

					m = q[1] > m ? q[1] : m;
					m = q[d.ow] > m ? q[d.ow] : m;
					m = q[d.ow + 1] > m ? q[d.ow + 1] : m;
					/* In place: row i * ch + py is behind the rows read. */
					ref[(i * ch + py) * cw + px] = m;
				}
	for (int64_t i = 0; i < n * ob; i++)
		for (int64_t q = 0; q < ch * cw; q++)
			for (int64_t l = o - i % ob * 16; l < 16; l++)
				pads += l >= 0 && yb[(i * ch * cw + q) * 16 + l] != 0.0f;
	ok(max_err(y, ref, yn, sqrt((double)(c * k * k))) < 1e-5 && pads == 0,
	   "blocked conv n%lld c%lld %lldx%lld o%lld k%lld p%lld s%lld d%lld%s%s%s%s, %s input%s", (long long)n,
	   (long long)c, (long long)h, (long long)w, (long long)o, (long long)k, (long long)pad, (long long)stride,
	   (long long)dil, bias ? " bias" : "", act == 2 ? " relu6" : act ? " relu" : "", res ? " residual" : "",
	   pool ? " pool" : "", x_blocked ? "blocked" : "plain", blocked_portable ? ", portable" : "");
	free(x);
	free(xb);
	free(wt);
	free(wp);
	free(b);
	free(bp);
	free(r);
	free(rb);
	free(y);
	free(yb);
	free(ref);
	free(ws);
}

static void test_conv_blocked(void)
{
	float *x = randv(3 * 21 * 10), *xb = randv(3 * 32 * 10), *back = randv(3 * 21 * 10);

	ds_to_blocked(3, 21, 10, x, xb);
	ds_from_blocked(3, 21, 10, xb, back);
	ok(!memcmp(x, back, 3 * 21 * 10 * sizeof *x) && xb[(1 * 10 + 3) * 16 + 5] == 0.0f &&
	   xb[(0 * 10 + 3) * 16 + 5] == x[5 * 10 + 3], "blocked layout: there and back, padding channels zero");
	{
		float gb[3 * 21], gp[3 * 21];

		/* The blocked global pool: the plain pool's floats exactly. */
		ds_global_avg_pool_blocked(3, 21, 10, xb, gb);
		ds_global_avg_pool_forward(3 * 21, 10, x, gp);
		ok(!memcmp(gb, gp, sizeof gb), "blocked global average pool: the plain pool's floats");
	}
	free(x);
	free(xb);
	free(back);
	conv_blocked_case(5, 64, 7, 7, 64, 3, 1, 1, 1, 1, 1, 1, 1, 0);      /* resnet-s layer3 */
	conv_blocked_case(3, 32, 14, 14, 64, 3, 1, 2, 1, 1, 1, 0, 0, 0);    /* its stride-2 entry, plain */
	conv_blocked_case(3, 32, 14, 14, 64, 1, 0, 2, 1, 1, 0, 1, 0, 0);    /* downsample */
	conv_blocked_case(2, 64, 4, 4, 128, 3, 1, 1, 1, 1, 2, 1, 1, 0);
	conv_blocked_case(2, 1, 28, 28, 64, 3, 1, 1, 1, 1, 1, 0, 0, 0);     /* a first layer */
	conv_blocked_case(3, 20, 9, 11, 40, 3, 1, 1, 1, 1, 0, 0, 1, 0);     /* 3 blocks out: 1 x 12 tiles */
	conv_blocked_case(3, 20, 9, 11, 40, 3, 1, 1, 1, 0, 0, 0, 0, 0);
	conv_blocked_case(2, 35, 8, 6, 32, 5, 2, 1, 1, 1, 2, 1, 1, 0);      /* 2 x 12 tiles */
	conv_blocked_case(2, 16, 10, 10, 16, 3, 2, 1, 2, 1, 1, 0, 1, 0);    /* dilation */
	conv_blocked_case(3, 8, 5, 5, 70, 3, 0, 1, 1, 1, 1, 1, 0, 0);       /* no padding */
	conv_blocked_case(4, 24, 1, 1, 64, 3, 1, 1, 1, 1, 1, 0, 1, 0);      /* one pixel */
	conv_blocked_case(1, 3, 13, 17, 64, 3, 1, 2, 1, 1, 0, 0, 0, 0);
	conv_blocked_case(5, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 0, 1, 1);  /* the CNNs' conv2 */
	conv_blocked_case(1, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 0, 1, 1);  /* one image: 2 x 12 tiles */
	conv_blocked_case(3, 20, 7, 9, 40, 3, 1, 1, 1, 0, 0, 0, 0, 1);    /* odd rows and columns */
	conv_blocked_case(4, 32, 9, 7, 64, 3, 1, 1, 1, 1, 1, 0, 1, 1);    /* the same, 4 x 6 tiles */
	conv_blocked_case(9, 16, 30, 30, 32, 3, 1, 1, 1, 1, 1, 0, 1, 1);  /* runs of many images */
	conv_blocked_case(2, 16, 6, 6, 64, 3, 0, 1, 1, 1, 2, 0, 1, 1);    /* relu6, 4x4 */
	/* One vector of output channels: rows in chunks of at most 16. */
	conv_blocked_case(2, 16, 28, 28, 16, 3, 1, 1, 1, 1, 1, 1, 1, 0);  /* resnet-s layer1 */
	conv_blocked_case(3, 1, 28, 28, 16, 3, 1, 1, 1, 1, 1, 0, 0, 0);   /* its first layer, plain */
	conv_blocked_case(2, 20, 5, 37, 10, 3, 1, 1, 1, 1, 2, 1, 0, 0);   /* 3 chunks a row, 10 channels */
	conv_blocked_case(2, 20, 5, 37, 10, 3, 1, 1, 1, 0, 0, 0, 1, 0);
	conv_blocked_case(3, 16, 4, 2, 16, 5, 2, 1, 1, 1, 1, 1, 1, 0);    /* rows narrower than the filter */
	conv_blocked_case(2, 16, 9, 17, 16, 3, 2, 1, 2, 1, 0, 0, 0, 0);   /* dilation, plain */
	conv_blocked_case(1, 16, 1, 1, 16, 3, 1, 1, 1, 1, 1, 0, 1, 0);    /* one pixel */
	conv_blocked_case(2, 16, 14, 14, 16, 3, 1, 2, 1, 1, 1, 0, 1, 0);  /* stride 2: 1 x 12 tiles */
	conv_blocked_case(3, 16, 14, 10, 16, 3, 1, 1, 1, 1, 1, 0, 1, 1);  /* pooled */
	/* A first layer: one input channel, 3x3, filters in registers. */
	conv_blocked_case(3, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1, 0, 0, 1);   /* the CNNs' conv1 */
	conv_blocked_case(2, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1, 0, 0, 0);
	conv_blocked_case(2, 1, 9, 7, 20, 3, 1, 1, 1, 0, 2, 1, 1, 0);     /* blocked input, residual */
	conv_blocked_case(2, 1, 7, 11, 10, 3, 0, 1, 1, 1, 0, 0, 0, 0);    /* no padding, 10 channels */
	conv_blocked_case(1, 1, 9, 9, 24, 3, 1, 1, 1, 1, 1, 0, 0, 1);     /* odd rows pooled, one image */
	conv_blocked_case(2, 1, 6, 4, 16, 3, 1, 1, 1, 1, 1, 0, 0, 0);     /* rows narrower than a chunk */
}

static void test_linear_fixed(void)
{
	linear_fixed_case(3136, 128);
	linear_fixed_case(128, 10);
	linear_fixed_case(37, 13);
	linear_fixed_case(5, 1);
	linear_fixed_case(1000, 70);
}

int main(void)
{
	test_conv_blocked();
	blocked_portable = 1;
	ds_conv2d_blocked_force_portable(1);
	test_conv_blocked();
	ds_conv2d_blocked_force_portable(0);
	blocked_portable = 0;
	test_conv_same();
	test_conv_s2();
	test_conv_dw3();
	test_conv_pooled();
	test_linear_fixed();
	test_plan_chunks();
	test_conv_residual();
	test_relu();
	test_pool();
	test_conv();
	test_conv_backward();
	/* Every case again asking for output channels in the lanes: taken
	 * where it applies, the default kernel elsewhere. */
	case_tactic = DS_CONV2D_TACTIC_LANES;
	test_conv();
	test_conv_residual();
	case_tactic = DS_CONV2D_TACTIC_AUTO;
#ifdef _OPENMP
	/* Again on one thread: the split and the unsplit paths differ. */
	omp_set_num_threads(1);
	test_conv();
	test_conv_same();
	test_conv_s2();
	test_conv_blocked();
	test_conv_pooled();
	test_linear_fixed();
	test_conv_backward();
	omp_set_num_threads(3);
	test_conv_blocked();
	test_conv();
	test_conv_same();
	test_conv_s2();
	test_conv_pooled();
	test_linear_fixed();
	case_tactic = DS_CONV2D_TACTIC_LANES;
	test_conv();
	case_tactic = DS_CONV2D_TACTIC_AUTO;
	test_conv_backward();
	test_plan_chunks();
#endif
	return done_testing();
}
