/* bias_correct.c - sums of a layer's input per filter tap, and the mean
 * output shift they give (bias_correct.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "bias_correct.h"
#include "cpu/quant.h"
#include "internal.h"

int ds_bias_taps_init(ds_bias_taps *t, int conv, const ds_conv2d_dims *d, ds_error *err)
{
	size_t taps = (size_t)(d->c * d->kh * d->kw);

	memset(t, 0, sizeof *t);
	t->d = *d;
	t->conv = conv;
	t->in_scale = 1;
	if (!(t->real = ds_calloc(taps, sizeof *t->real, err)) || !(t->coded = ds_calloc(taps, sizeof *t->coded, err))) {
		ds_bias_taps_free(t);
		return DS_ERR_NOMEM;
	}
	return 0;
}

static float coded(const ds_bias_taps *t, float inv, float v)
{
	return (float)((int32_t)ds_q8(v, inv, t->in_zero_point) - t->in_zero_point) * t->in_scale;
}

static int64_t out_rows(const ds_conv2d_dims *d, int64_t h)
{
	return (h + 2 * d->ph - d->dh * (d->kh - 1) - 1) / d->sh + 1;
}

static int64_t out_cols(const ds_conv2d_dims *d, int64_t w)
{
	return (w + 2 * d->pw - d->dw * (d->kw - 1) - 1) / d->sw + 1;
}

/* One plane of channel c: for each tap column, the sum over output
 * columns of each input row, then over the rows each tap row visits.
 * Taps that fall on the padding add nothing, as zeros would.  xq is
 * scratch for the plane's coded values, rows for 2 h sums. */
static void add_plane(ds_bias_taps *t, int64_t c, const float *x, int64_t h, int64_t w, float *xq, double *rows)
{
	const ds_conv2d_dims *d = &t->d;
	int64_t oh = out_rows(d, h), ow = out_cols(d, w);
	float inv = 1.0f / t->in_scale;

	for (int64_t i = 0; i < h * w; i++)
		xq[i] = coded(t, inv, x[i]);
	for (int64_t j = 0; j < d->kw; j++) {
		double *real = t->real + c * d->kh * d->kw + j, *code = t->coded + c * d->kh * d->kw + j;

		for (int64_t y = 0; y < h; y++) {
			double r = 0, q = 0;

			for (int64_t ox = 0; ox < ow; ox++) {
				int64_t ix = ox * d->sw + j * d->dw - d->pw;

				if (ix >= 0 && ix < w) {
					r += x[y * w + ix];
					q += xq[y * w + ix];
				}
			}
			rows[2 * y] = r;
			rows[2 * y + 1] = q;
		}
		for (int64_t i = 0; i < d->kh; i++)
			for (int64_t oy = 0; oy < oh; oy++) {
				int64_t iy = oy * d->sh + i * d->dh - d->ph;

				if (iy >= 0 && iy < h) {
					real[i * d->kw] += rows[2 * iy];
					code[i * d->kw] += rows[2 * iy + 1];
				}
			}
	}
}

int ds_bias_taps_add(ds_bias_taps *t, const ds_tensor *x, ds_error *err)
{
	const float *v = x->data;
	int64_t n, h, w;
	double *rows;

	if (!t->conv) {
		int64_t m = ds_tensor_numel(x) / t->d.c;
		float inv = 1.0f / t->in_scale;

		for (int64_t r = 0; r < m; r++)
			for (int64_t c = 0; c < t->d.c; c++) {
				t->real[c] += v[r * t->d.c + c];
				t->coded[c] += coded(t, inv, v[r * t->d.c + c]);
			}
		t->positions += m;
		return 0;
	}
	n = x->shape[0], h = x->shape[2], w = x->shape[3];
	if (!(rows = ds_malloc((size_t)(2 * h) * sizeof *rows + (size_t)(h * w) * sizeof(float), err)))
		return DS_ERR_NOMEM;
	for (int64_t i = 0; i < n; i++)
		for (int64_t c = 0; c < t->d.c; c++)
			add_plane(t, c, v + (i * t->d.c + c) * h * w, h, w, (float *)(rows + 2 * h), rows);
	t->positions += n * out_rows(&t->d, h) * out_cols(&t->d, w);
	free(rows);
	return 0;
}

double ds_bias_taps_shift(const ds_bias_taps *t, int64_t o, const float *w, const int8_t *codes, float scale)
{
	const ds_conv2d_dims *d = &t->d;
	int64_t groups = d->groups > 0 ? d->groups : 1;
	int64_t per = d->c / groups * d->kh * d->kw, first = o / (d->o / groups) * per;
	double sum = 0;

	if (!t->positions)
		return 0;
	for (int64_t k = 0; k < per; k++)
		sum += (double)codes[k] * scale * t->coded[first + k] - (double)w[k] * t->real[first + k];
	return sum / (double)t->positions;
}

void ds_bias_taps_free(ds_bias_taps *t)
{
	free(t->real);
	free(t->coded);
	t->real = t->coded = NULL;
}
