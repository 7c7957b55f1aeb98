/* test_bias_correct.c - the mean output shift from a layer's tap sums
 * against the mean, over every image and output position, of the INT8
 * layer's output less the float layer's, summed term by term: strides,
 * padding wider than a tap, dilation, groups and depthwise, odd sides, and
 * linear layers on rows of inputs. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bias_correct.h"
#include "cpu/quant.h"
#include "tap.h"

/* The value the INT8 layer sees for input v. */
static double coded(float v, float scale, int32_t zp)
{
	return (double)((int32_t)ds_q8(v, 1.0f / scale, zp) - zp) * scale;
}

/* Mean over images and output positions of sum (scale q xq - w x) for
 * output channel o, straight from the definition. */
static double brute_conv(const ds_conv2d_dims *d, const float *x, const float *w, const int8_t *q,
			 const float *scale, float in_scale, int32_t zp, int64_t o)
{
	int64_t cg = d->c / d->groups, g = o / (d->o / d->groups);
	int64_t oh = (d->h + 2 * d->ph - d->dh * (d->kh - 1) - 1) / d->sh + 1;
	int64_t ow = (d->w + 2 * d->pw - d->dw * (d->kw - 1) - 1) / d->sw + 1;
	double sum = 0;

	for (int64_t n = 0; n < d->n; n++)
		for (int64_t oy = 0; oy < oh; oy++)
			for (int64_t ox = 0; ox < ow; ox++)
				for (int64_t c = 0; c < cg; c++)
					for (int64_t i = 0; i < d->kh; i++)
						for (int64_t j = 0; j < d->kw; j++) {
							int64_t iy = oy * d->sh + i * d->dh - d->ph;
							int64_t ix = ox * d->sw + j * d->dw - d->pw;
							int64_t k = (o * cg + c) * d->kh * d->kw + i * d->kw + j;
							float v;

							if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w)
								continue;
							v = x[((n * d->c + g * cg + c) * d->h + iy) * d->w + ix];
							sum += (double)scale[o] * q[k] * coded(v, in_scale, zp) - (double)w[k] * v;
						}
	return sum / (double)(d->n * oh * ow);
}

static void fill(float *w, int8_t *q, float *scale, int64_t outs, int64_t per)
{
	for (int64_t o = 0; o < outs; o++) {
		scale[o] = (float)(0.004 + 0.01 * tap_uniform());
		for (int64_t k = 0; k < per; k++) {
			long v;

			w[o * per + k] = (float)(tap_uniform() - 0.5);
			v = lrintf(w[o * per + k] / scale[o]);
			q[o * per + k] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
		}
	}
}

static void conv_case(const char *what, ds_conv2d_dims d)
{
	int64_t shape[4] = { d.n, d.c, d.h, d.w }, per = d.c / d.groups * d.kh * d.kw;
	float *w = malloc((size_t)(d.o * per) * sizeof *w), *scale = malloc((size_t)d.o * sizeof *scale);
	int8_t *q = malloc((size_t)(d.o * per));
	ds_tensor *x = ds_tensor_new(DS_F32, 4, shape, DS_CPU, NULL);
	ds_bias_taps t;
	double worst = 0, most = 0;
	int rc;

	fill(w, q, scale, d.o, per);
	/* Inputs past the range's top, so clipping shifts the mean too. */
	for (int64_t i = 0; i < ds_tensor_numel(x); i++)
		((float *)x->data)[i] = (float)(tap_uniform() * 1.3 - 0.1);
	rc = ds_bias_taps_init(&t, 1, &d, NULL);
	t.in_scale = 1.0f / 255.0f;
	t.in_zero_point = 20;
	/* Two batches: the sums add up. */
	if (!rc) {
		x->shape[0] = d.n - 1;
		rc = ds_bias_taps_add(&t, x, NULL);
		x->shape[0] = 1;
		x->data = (float *)x->data + (d.n - 1) * d.c * d.h * d.w;
		rc = rc ? rc : ds_bias_taps_add(&t, x, NULL);
		x->data = (float *)x->data - (d.n - 1) * d.c * d.h * d.w;
		x->shape[0] = d.n;
	}
	for (int64_t o = 0; o < d.o && !rc; o++) {
		double want = brute_conv(&d, x->data, w, q, scale, t.in_scale, t.in_zero_point, o);
		double got = ds_bias_taps_shift(&t, o, w + o * per, q + o * per, scale[o]);

		worst = fmax(worst, fabs(got - want));
		most = fmax(most, fabs(want));
	}
	ok(!rc && worst <= 1e-6 * fmax(most, 1e-3) && most > 0, "%s: shift off by %.3g at most (shifts up to %.3g)",
	   what, worst, most);
	ds_bias_taps_free(&t);
	ds_tensor_unref(x);
	free(w);
	free(q);
	free(scale);
}

static void linear_case(void)
{
	int64_t shape[3] = { 5, 3, 24 }, outs = 7, in = 24;
	ds_conv2d_dims d = { .o = outs, .c = in, .kh = 1, .kw = 1, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .groups = 1 };
	float w[7 * 24], scale[7];
	int8_t q[7 * 24];
	ds_tensor *x = ds_tensor_new(DS_F32, 3, shape, DS_CPU, NULL);
	ds_bias_taps t;
	double worst = 0;
	int rc;

	fill(w, q, scale, outs, in);
	for (int64_t i = 0; i < ds_tensor_numel(x); i++)
		((float *)x->data)[i] = (float)(tap_uniform() * 4 - 2);
	rc = ds_bias_taps_init(&t, 0, &d, NULL);
	t.in_scale = 3.0f / 255.0f;
	t.in_zero_point = 128;
	rc = rc ? rc : ds_bias_taps_add(&t, x, NULL);
	for (int64_t o = 0; o < outs && !rc; o++) {
		double want = 0;

		for (int64_t r = 0; r < 15; r++)
			for (int64_t k = 0; k < in; k++) {
				float v = ((float *)x->data)[r * in + k];

				want += (double)scale[o] * q[o * in + k] * coded(v, t.in_scale, t.in_zero_point) - (double)w[o * in + k] * v;
			}
		want /= 15;
		worst = fmax(worst, fabs(ds_bias_taps_shift(&t, o, w + o * in, q + o * in, scale[o]) - want));
	}
	ok(!rc && worst <= 1e-7, "linear on rows of [5, 3, 24]: shift off by %.3g at most", worst);
	ds_bias_taps_free(&t);
	ds_tensor_unref(x);
}

int main(void)
{
	conv_case("3x3 stride 1 pad 1", (ds_conv2d_dims){ .n = 3, .c = 4, .h = 7, .w = 6, .o = 5, .kh = 3, .kw = 3,
							 .sh = 1, .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1,
							 .groups = 1 });
	conv_case("3x3 stride 2 pad 1, odd sides", (ds_conv2d_dims){ .n = 2, .c = 3, .h = 9, .w = 11, .o = 4, .kh = 3,
								    .kw = 3, .sh = 2, .sw = 2, .ph = 1, .pw = 1,
								    .dh = 1, .dw = 1, .groups = 1 });
	conv_case("1x5 stride 2x1, padding wider than a tap", (ds_conv2d_dims){ .n = 2, .c = 2, .h = 6, .w = 8, .o = 3,
									      .kh = 1, .kw = 5, .sh = 2, .sw = 1,
									      .ph = 2, .pw = 4, .dh = 1, .dw = 1,
									      .groups = 1 });
	conv_case("3x3 dilation 2 pad 2", (ds_conv2d_dims){ .n = 2, .c = 2, .h = 9, .w = 9, .o = 3, .kh = 3, .kw = 3,
							   .sh = 1, .sw = 1, .ph = 2, .pw = 2, .dh = 2, .dw = 2,
							   .groups = 1 });
	conv_case("groups 2", (ds_conv2d_dims){ .n = 2, .c = 4, .h = 6, .w = 5, .o = 6, .kh = 3, .kw = 3, .sh = 1,
					       .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 2 });
	conv_case("depthwise 3x3 stride 2", (ds_conv2d_dims){ .n = 2, .c = 6, .h = 8, .w = 8, .o = 6, .kh = 3, .kw = 3,
							     .sh = 2, .sw = 2, .ph = 1, .pw = 1, .dh = 1, .dw = 1,
							     .groups = 6 });
	conv_case("1x1", (ds_conv2d_dims){ .n = 2, .c = 5, .h = 4, .w = 4, .o = 3, .kh = 1, .kw = 1, .sh = 1, .sw = 1,
					  .dh = 1, .dw = 1, .groups = 1 });
	linear_case();
	return done_testing();
}
