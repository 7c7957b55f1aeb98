/* phash.c - the 64-bit perceptual hash of an image: the signs of its lowest
 * spatial frequencies against their median, so that re-encoding, small
 * resizes and brightness changes move few bits. */
#include "internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#define SIDE 32
#define LOW 8

/* cosines_t[x][u] = a(u) cos(pi (2x + 1) u / 64): the orthonormal DCT-II
 * basis for the 8 lowest frequencies of 32 samples. */
static double cosines_t[SIDE][LOW];   /* [x][u], transposed for the loops below */
static pthread_once_t cosines_once = PTHREAD_ONCE_INIT;

static void cosines_init(void)
{
	const double pi = 3.14159265358979323846;

	for (int u = 0; u < LOW; u++) {
		double a = u == 0 ? sqrt(1.0 / SIDE) : sqrt(2.0 / SIDE);

		for (int x = 0; x < SIDE; x++)
			cosines_t[x][u] = a * cos(pi * (2 * x + 1) * u / (2.0 * SIDE));
	}
}

/* Source pixels [first, last] of a side of n pixels that cover output
 * pixel o of SIDE, with the overlap of each of the two end pixels. */
struct span {
	int first, last;
	double w_first, w_last, w_inner;
};

static struct span span_of(int o, int n)
{
	double scale = (double)n / SIDE, lo = o * scale, hi = (o + 1) * scale;
	struct span s;

	s.first = (int)floor(lo);
	s.last = (int)ceil(hi) - 1;
	if (s.last >= n)
		s.last = n - 1;
	if (s.last < s.first)
		s.last = s.first;
	/* Weights are overlaps divided by the output pixel's width, so each
	 * output pixel is the mean of what it covers. */
	s.w_inner = 1.0 / scale;
	if (s.first == s.last) {
		s.w_first = s.w_last = 1.0;
	} else {
		s.w_first = (s.first + 1 - lo) / scale;
		s.w_last = (hi - s.last) / scale;
	}
	return s;
}

static double weight(const struct span *s, int i)
{
	if (s->first == s->last)
		return 1.0;
	return i == s->first ? s->w_first : i == s->last ? s->w_last : s->w_inner;
}

/* Area averaging to 32x32 in float64, without a full gray copy: each
 * source row is turned to luma once, reduced to 32 values and added into the
 * output rows it overlaps.  Floats rather than bytes keep a uniform
 * brightness shift an exact shift of every sample, which only the DC
 * coefficient sees. */
static void shrink_gray(const ds_image *img, double out[SIDE][SIDE], double *gray)
{
	struct span cols[SIDE];
	int w = img->width, h = img->height, ch = img->channels;

	for (int x = 0; x < SIDE; x++)
		cols[x] = span_of(x, w);
	for (int y = 0; y < SIDE; y++)
		for (int x = 0; x < SIDE; x++)
			out[y][x] = 0;
	for (int oy = 0; oy < SIDE; oy++) {
		struct span rows = span_of(oy, h);

		for (int y = rows.first; y <= rows.last; y++) {
			const uint8_t *line = img->pixels + (size_t)y * w * ch;
			double wy = weight(&rows, y);

			if (ch >= 3)
				for (int x = 0; x < w; x++, line += ch)
					gray[x] = 0.299 * line[0] + 0.587 * line[1] + 0.114 * line[2];
			else
				for (int x = 0; x < w; x++, line += ch)
					gray[x] = line[0];
			for (int ox = 0; ox < SIDE; ox++) {
				const struct span *c = &cols[ox];
				double sum;

				if (c->first == c->last) {
					sum = gray[c->first];
				} else {
					sum = c->w_first * gray[c->first] + c->w_last * gray[c->last];
					for (int x = c->first + 1; x < c->last; x++)
						sum += c->w_inner * gray[x];
				}
				out[oy][ox] += wy * sum;
			}
		}
	}
}

/* The median of n values (n odd, small): insertion sort beats qsort's calls. */
static double median_of(double *v, int n)
{
	for (int i = 1; i < n; i++) {
		double x = v[i];
		int j = i - 1;

		for (; j >= 0 && v[j] > x; j--)
			v[j + 1] = v[j];
		v[j + 1] = x;
	}
	return v[n / 2];
}

/* Bit u * 8 + v (least significant first) is set when coefficient (u, v),
 * u the vertical frequency, exceeds the median of the 63 AC coefficients.
 * The margin keeps rounding noise (1e-12 on coefficients in the hundreds)
 * out of the bits, so a uniform image of any brightness hashes to 1 (only
 * DC set; 0 when black). */
uint64_t ds_image_phash(const ds_image *img)
{
	double small[SIDE][SIDE], rows[SIDE][LOW], coef[LOW * LOW], sorted[LOW * LOW - 1], median, *gray;
	uint64_t hash = 0;

	if (!img || !img->pixels || img->width <= 0 || img->height <= 0 || img->channels <= 0)
		return 0;
	gray = malloc((size_t)img->width * sizeof *gray);
	if (!gray)
		return 0;
	pthread_once(&cosines_once, cosines_init);
	shrink_gray(img, small, gray);
	free(gray);
	/* Loops ordered so that the innermost runs over the 8 frequencies,
	 * each its own sum: the compiler vectorises them without reordering any
	 * floating-point addition, so the hash stays exactly reproducible. */
	for (int y = 0; y < SIDE; y++) {
		for (int v = 0; v < LOW; v++)
			rows[y][v] = 0;
		for (int x = 0; x < SIDE; x++)
			for (int v = 0; v < LOW; v++)
				rows[y][v] += cosines_t[x][v] * small[y][x];
	}
	for (int u = 0; u < LOW * LOW; u++)
		coef[u] = 0;
	for (int y = 0; y < SIDE; y++)
		for (int u = 0; u < LOW; u++)
			for (int v = 0; v < LOW; v++)
				coef[u * LOW + v] += cosines_t[y][u] * rows[y][v];
	for (int i = 1; i < LOW * LOW; i++)
		sorted[i - 1] = coef[i];
	median = median_of(sorted, LOW * LOW - 1);
	for (int i = 0; i < LOW * LOW; i++)
		if (coef[i] > median + 1e-6)
			hash |= 1ULL << i;
	return hash;
}
