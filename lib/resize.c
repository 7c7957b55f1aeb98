/* resize.c - separable resampling of 8-bit images.
 *
 * Each axis gets a table of source pixels and weights per output pixel:
 * box (area) weights where the axis shrinks, so that every source pixel
 * counts and thin lines do not vanish; two-tap linear weights where it grows.
 * Rows are filtered horizontally into floats first, then columns, and the
 * result is rounded once. */
#include "image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct axis {
	int n, taps;            /* output pixels; weights stored per output */
	int *start;             /* first source pixel of each output */
	int *count;             /* source pixels used by each output */
	float *weight;          /* n x taps */
} axis;

static void axis_free(axis *a)
{
	free(a->start);
	free(a->count);
	free(a->weight);
}

/* Map n outputs onto the source interval [x0, x0 + span) of a line of
 * src_len pixels. */
static int axis_build(axis *a, int src_len, double x0, double span, int n, ds_error *err)
{
	double s = span / n;

	memset(a, 0, sizeof *a);
	a->n = n;
	a->taps = s > 1 ? (int)ceil(s) + 2 : 2;
	a->start = ds_calloc((size_t)n, sizeof *a->start, err);
	a->count = ds_calloc((size_t)n, sizeof *a->count, err);
	a->weight = ds_calloc((size_t)n * (size_t)a->taps, sizeof *a->weight, err);
	if (!a->start || !a->count || !a->weight) {
		axis_free(a);
		return DS_ERR_NOMEM;
	}
	for (int i = 0; i < n; i++) {
		float *wt = a->weight + (size_t)i * (size_t)a->taps;
		double sum = 0;
		int j0, j1;

		if (s > 1) {
			double lo = x0 + i * s, hi = lo + s;

			j0 = (int)floor(lo);
			j1 = (int)ceil(hi);
			if (j0 < 0)
				j0 = 0;
			if (j1 > src_len)
				j1 = src_len;
			if (j1 <= j0)
				j1 = j0 + 1;
			if (j1 - j0 > a->taps)
				j1 = j0 + a->taps;
			for (int j = j0; j < j1; j++) {
				double w = fmin(hi, j + 1.0) - fmax(lo, (double)j);

				wt[j - j0] = (float)(w > 0 ? w : 0);
				sum += wt[j - j0];
			}
		} else {
			double c = x0 + (i + 0.5) * s - 0.5, f;

			if (c < 0)
				c = 0;
			if (c > src_len - 1)
				c = src_len - 1;
			j0 = (int)floor(c);
			f = c - j0;
			if (j0 >= src_len - 1 || f <= 0) {
				j1 = j0 + 1;
				wt[0] = 1;
			} else {
				j1 = j0 + 2;
				wt[0] = (float)(1 - f);
				wt[1] = (float)f;
			}
			sum = 1;
		}
		a->start[i] = j0;
		a->count[i] = j1 - j0;
		if (sum > 0 && sum != 1)
			for (int k = 0; k < a->count[i]; k++)
				wt[k] = (float)(wt[k] / sum);
	}
	return 0;
}

static uint8_t to_u8(float v)
{
	if (v <= 0)
		return 0;
	if (v >= 255)
		return 255;
	return (uint8_t)(v + 0.5f);
}

/* Resample the source rectangle into a tw x th block of out whose rows are
 * stride bytes apart. */
static int resample(const ds_image *in, double x0, double y0, double sw, double sh, int tw, int th,
		    int dc, uint8_t *out, size_t stride, ds_error *err)
{
	int sc = in->channels;
	axis ax, ay;
	float *tmp = NULL, *acc = NULL;
	int rc, r0, r1;

	if ((rc = axis_build(&ax, in->width, x0, sw, tw, err)) != 0)
		return rc;
	if ((rc = axis_build(&ay, in->height, y0, sh, th, err)) != 0) {
		axis_free(&ax);
		return rc;
	}
	r0 = ay.start[0];
	r1 = ay.start[th - 1] + ay.count[th - 1];
	for (int i = 0; i < th; i++)
		if (ay.start[i] + ay.count[i] > r1)
			r1 = ay.start[i] + ay.count[i];
	tmp = ds_malloc((size_t)(r1 - r0) * (size_t)tw * (size_t)sc * sizeof *tmp, err);
	acc = ds_malloc((size_t)tw * (size_t)sc * sizeof *acc, err);
	if (!tmp || !acc) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (int y = r0; y < r1; y++) {
		const uint8_t *src = in->pixels + (size_t)y * (size_t)in->width * (size_t)sc;
		float *row = tmp + (size_t)(y - r0) * (size_t)tw * (size_t)sc;

		for (int x = 0; x < tw; x++) {
			const float *wt = ax.weight + (size_t)x * (size_t)ax.taps;
			const uint8_t *p = src + (size_t)ax.start[x] * (size_t)sc;

			for (int c = 0; c < sc; c++) {
				float v = 0;

				for (int k = 0; k < ax.count[x]; k++)
					v += wt[k] * p[(size_t)k * (size_t)sc + (size_t)c];
				row[(size_t)x * (size_t)sc + (size_t)c] = v;
			}
		}
	}
	for (int y = 0; y < th; y++) {
		const float *wt = ay.weight + (size_t)y * (size_t)ay.taps;
		uint8_t *dst = out + (size_t)y * stride;

		memset(acc, 0, (size_t)tw * (size_t)sc * sizeof *acc);
		for (int k = 0; k < ay.count[y]; k++) {
			const float *row = tmp + (size_t)(ay.start[y] + k - r0) * (size_t)tw * (size_t)sc;

			for (size_t i = 0; i < (size_t)tw * (size_t)sc; i++)
				acc[i] += wt[k] * row[i];
		}
		for (int x = 0; x < tw; x++) {
			const float *v = acc + (size_t)x * (size_t)sc;
			uint8_t *d = dst + (size_t)x * (size_t)dc;

			if (sc == dc) {
				for (int c = 0; c < sc; c++)
					d[c] = to_u8(v[c]);
			} else if (dc == 1) {
				d[0] = to_u8(0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2]);
			} else {
				d[0] = d[1] = d[2] = to_u8(v[0]);
			}
		}
	}
out:
	free(acc);
	free(tmp);
	axis_free(&ay);
	axis_free(&ax);
	return rc;
}

int ds_image_resize(const ds_image *in, int width, int height, int channels, ds_resize_mode mode,
		    uint8_t *out, ds_error *err)
{
	int w, h, dc;
	size_t stride;

	if (!in || !in->pixels || in->width < 1 || in->height < 1 || (in->channels != 1 && in->channels != 3))
		return ds_error_set(err, DS_ERR_RUN, "bad_image", "resize: not a gray or RGB image");
	dc = channels == 0 ? in->channels : channels;
	if (width < 1 || height < 1 || (dc != 1 && dc != 3))
		return ds_error_set(err, DS_ERR_USAGE, "bad_size", "resize: bad target %d x %d x %d",
				    width, height, channels);
	w = in->width;
	h = in->height;
	stride = (size_t)width * (size_t)dc;
	/* Same size and channels: every mode is a copy (packing IDX and
	 * same-size folders takes this path for every item). */
	if (w == width && h == height && dc == in->channels) {
		memcpy(out, in->pixels, stride * (size_t)height);
		return 0;
	}
	switch (mode) {
	case DS_RESIZE_FIT: {
		double scale = fmin((double)width / w, (double)height / h);
		int tw = (int)lround(w * scale), th = (int)lround(h * scale);

		tw = tw < 1 ? 1 : tw > width ? width : tw;
		th = th < 1 ? 1 : th > height ? height : th;
		memset(out, 0, stride * (size_t)height);
		return resample(in, 0, 0, w, h, tw, th, dc,
				out + (size_t)((height - th) / 2) * stride + (size_t)((width - tw) / 2) * (size_t)dc,
				stride, err);
	}
	case DS_RESIZE_FILL: {
		double scale = fmax((double)width / w, (double)height / h);
		double sw = fmin(width / scale, w), sh = fmin(height / scale, h);

		return resample(in, (w - sw) / 2, (h - sh) / 2, sw, sh, width, height, dc, out, stride, err);
	}
	case DS_RESIZE_STRETCH:
		return resample(in, 0, 0, w, h, width, height, dc, out, stride, err);
	}
	return ds_error_set(err, DS_ERR_USAGE, "bad_mode", "resize: unknown mode %d", (int)mode);
}
