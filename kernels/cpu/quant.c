/* quant.c - INT8 kernels: quantize and dequantize, convolution and dense
 * layers as packed u8 x s8 products, pooling and residual addition on codes.
 *
 * The packed product: C[o][p] = sum_k W[o][k] U[k][p], where W holds the
 * filters (I8, K padded to a multiple of 4 with zeros) and U the input
 * columns (U8: im2col of one image and group, or the transposed rows of a
 * dense layer's input).  U is packed in panels of 16 columns, each panel
 * [K/4][16][4] bytes, so that one 64-byte load feeds one vpdpbusd: 16 int32
 * lanes, each the dot product of 4 consecutive k.  A tile is 6 rows of W by
 * 2 panels (12 accumulators in zmm registers).  Padding of the convolution
 * input takes the input's zero point, and the accumulators are corrected by
 * x_zp * sum_k W[o][k], so that padding contributes exactly 0.
 */
#include "config.h"

/* The byte loops here (packing, pooling, row sums) vectorize only at -O3
 * with GCC 12; the build's -O2 left them 3x slower. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include "cpu/quant.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DS_HAVE_VNNI_BUILD 1
#endif

#define TILE_ROWS 6
#define TILE_COLS 32
#define ALIGN 64

static size_t up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

/* ------------------------------------------------------------ conversion */

void ds_qparams_choose(float lo, float hi, float *scale, int32_t *zero_point)
{
	float s;
	long z;

	lo = fminf(lo, 0.0f);
	hi = fmaxf(hi, 0.0f);
	if (!(hi - lo > 1e-12f)) {
		*scale = 1.0f;
		*zero_point = 0;
		return;
	}
	s = (hi - lo) / 255.0f;
	z = lrintf(-lo / s);
	*scale = s;
	*zero_point = (int32_t)(z < 0 ? 0 : z > 255 ? 255 : z);
}

void ds_quantize_f32(int64_t n, const float *x, float scale, int32_t zero_point, uint8_t *y)
{
	float inv = 1.0f / scale;

	for (int64_t i = 0; i < n; i++)
		y[i] = ds_q8(x[i], inv, zero_point);
}

void ds_dequantize_u8(int64_t n, const uint8_t *x, float scale, int32_t zero_point, float *y)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = scale * (float)((int32_t)x[i] - zero_point);
}

void ds_minmax_f32(int64_t n, const float *x, float *lo, float *hi)
{
	float a = INFINITY, b = -INFINITY;

	for (int64_t i = 0; i < n; i++)
		if (isfinite(x[i])) {
			a = fminf(a, x[i]);
			b = fmaxf(b, x[i]);
		}
	*lo = a <= b ? a : 0.0f;
	*hi = a <= b ? b : 0.0f;
}

/* ----------------------------------------------------------- micro-kernels */

typedef void (*tile_fn)(const int8_t *w, int64_t kp, const uint8_t *pan, int32_t *acc);

/* acc[r][j] for 6 rows of w (kp bytes each) and 2 panels from pan. */
static void tile_portable(const int8_t *w, int64_t kp, const uint8_t *pan, int32_t *acc)
{
	for (int r = 0; r < TILE_ROWS; r++) {
		const int8_t *wr = w + r * kp;

		for (int h = 0; h < 2; h++) {
			const uint8_t *ph = pan + h * kp * 16;
			int32_t s[16] = { 0 };

			for (int64_t k4 = 0; k4 < kp / 4; k4++)
				for (int c = 0; c < 16; c++)
					for (int t = 0; t < 4; t++)
						s[c] += (int32_t)wr[k4 * 4 + t] * (int32_t)ph[k4 * 64 + c * 4 + t];
			memcpy(acc + r * TILE_COLS + h * 16, s, sizeof s);
		}
	}
}

#ifdef DS_HAVE_VNNI_BUILD
__attribute__((target("avx512f,avx512vnni"))) static void tile_vnni(const int8_t *w, int64_t kp, const uint8_t *pan,
								    int32_t *acc)
{
	const uint8_t *p1 = pan + kp * 16;
	__m512i c[TILE_ROWS][2];

	for (int r = 0; r < TILE_ROWS; r++)
		c[r][0] = c[r][1] = _mm512_setzero_si512();
	for (int64_t k4 = 0; k4 < kp / 4; k4++) {
		__m512i a0 = _mm512_loadu_si512(pan + k4 * 64), a1 = _mm512_loadu_si512(p1 + k4 * 64);

#pragma GCC unroll 6
		for (int r = 0; r < TILE_ROWS; r++) {
			int32_t four;
			__m512i b;

			memcpy(&four, w + r * kp + k4 * 4, 4);
			b = _mm512_set1_epi32(four);
			c[r][0] = _mm512_dpbusd_epi32(c[r][0], a0, b);
			c[r][1] = _mm512_dpbusd_epi32(c[r][1], a1, b);
		}
	}
	for (int r = 0; r < TILE_ROWS; r++) {
		_mm512_storeu_si512(acc + r * TILE_COLS, c[r][0]);
		_mm512_storeu_si512(acc + r * TILE_COLS + 16, c[r][1]);
	}
}

/* One tile and its epilogue for outputs contiguous along the columns (a
 * convolution's): the same arithmetic as store_tile, lane by lane, so the
 * results are identical (no FMA contraction: fp-contract off). */
__attribute__((target("avx512f,avx512vnni"), optimize("fp-contract=off"))) static void
tile_vnni_store(const int8_t *w, int64_t kp, const uint8_t *pan, const ds_qout *e, const int32_t *wsum, int64_t o0,
		int64_t rows, int64_t cols, void *y, int64_t so)
{
	int32_t acc[TILE_ROWS * TILE_COLS];
	float inv = e->u8 ? 1.0f / e->y_scale : 0.0f;
	__m512 lo = _mm512_set1_ps(e->lo), hi = _mm512_set1_ps(e->hi), vinv = _mm512_set1_ps(inv);
	__m512 zp = _mm512_set1_ps((float)e->y_zero_point), zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);

	tile_vnni(w, kp, pan, acc);
	for (int64_t r = 0; r < rows; r++) {
		int64_t o = o0 + r;
		__m512i corr = _mm512_set1_epi32(e->x_zero_point * wsum[r]);
		__m512 mult = _mm512_set1_ps(e->x_scale * e->w_scale[o]);
		__m512 bias = _mm512_set1_ps(e->bias ? e->bias[o] : 0.0f);

		for (int h = 0; h < 2 && h * 16 < cols; h++) {
			int64_t left = cols - h * 16;
			__mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
			__m512i a = _mm512_sub_epi32(_mm512_loadu_si512(acc + r * TILE_COLS + h * 16), corr);
			__m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), mult), bias);

			v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
			if (e->u8) {
				v = _mm512_add_ps(_mm512_mul_ps(v, vinv), zp);
				v = _mm512_min_ps(_mm512_max_ps(v, zero), top);
				_mm512_mask_cvtusepi32_storeu_epi8((uint8_t *)y + r * so + h * 16, m, _mm512_cvtps_epi32(v));
			} else {
				_mm512_mask_storeu_ps((float *)y + r * so + h * 16, m, v);
			}
		}
	}
}
#endif

static int forced = -1;

void ds_qgemm_force(int vnni)
{
	forced = vnni;
}

int ds_qgemm_vnni(void)
{
#ifdef DS_HAVE_VNNI_BUILD
	static int has = -1;

	if (has < 0) {
		__builtin_cpu_init();
		has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
	}
	return forced >= 0 ? forced && has : has;
#else
	return 0;
#endif
}

static tile_fn pick_tile(void)
{
#ifdef DS_HAVE_VNNI_BUILD
	if (ds_qgemm_vnni())
		return tile_vnni;
#endif
	return tile_portable;
}

/* ----------------------------------------------------------------- packing */

/* Filters of one group, rows padded to a multiple of TILE_ROWS and k to kp,
 * with zeros; wsum gets each real row's sum. */
static void pack_w(const int8_t *w, int64_t rows, int64_t k, int64_t kp, int8_t *wp, int32_t *wsum)
{
	int64_t rp = (int64_t)up((size_t)rows, TILE_ROWS);

	memset(wp, 0, (size_t)(rp * kp));
	for (int64_t r = 0; r < rows; r++) {
		int32_t s = 0;

		for (int64_t i = 0; i < k; i++)
			s += w[r * k + i];
		memcpy(wp + r * kp, w + r * k, (size_t)k);
		wsum[r] = s;
	}
}

static void row_sums(const int8_t *w, int64_t rows, int64_t k, int32_t *wsum)
{
	for (int64_t r = 0; r < rows; r++) {
		int32_t s = 0;

		for (int64_t i = 0; i < k; i++)
			s += w[r * k + i];
		wsum[r] = s;
	}
}

/* Filters [rows, cg, kh, kw] reordered to [rows, kh, kw, cg], the order of
 * channels-last columns; rows padded to TILE_ROWS with zeros. */
static void pack_w_hwc(const int8_t *w, int64_t rows, int64_t cg, int64_t khw, int8_t *wp, int32_t *wsum)
{
	int64_t rp = (int64_t)up((size_t)rows, TILE_ROWS), k = cg * khw;

	memset(wp, 0, (size_t)(rp * k));
	for (int64_t r = 0; r < rows; r++)
		for (int64_t c = 0; c < cg; c++)
			for (int64_t t = 0; t < khw; t++)
				wp[r * k + t * cg + c] = w[(r * cg + c) * khw + t];
	row_sums(w, rows, k, wsum);
}

/* One image's channels [c0, c0 + cg) channels-last into t, then its
 * columns into panels: for each output pixel and tap, cg contiguous bytes
 * go as cg / 4 words.  k = (ky * kw + kx) * cg + c. */
static void pack_im2col_hwc(const ds_conv2d_dims *d, const uint8_t *x, int64_t c0, int64_t cg, int64_t kp,
			    int64_t pp, uint8_t zp, uint8_t *t, uint8_t *u)
{
	int64_t hw = d->h * d->w;

	for (int64_t c = 0; c < cg; c++)
		for (int64_t i = 0; i < hw; i++)
			t[i * cg + c] = x[(c0 + c) * hw + i];
	memset(u, zp, (size_t)(pp * kp));
	for (int64_t oy = 0; oy < d->oh; oy++)
		for (int64_t ox = 0; ox < d->ow; ox++) {
			int64_t p = oy * d->ow + ox;
			uint8_t *dst = u + ((p >> 4) * kp << 4) + ((p & 15) << 2);

			for (int64_t ky = 0; ky < d->kh; ky++) {
				int64_t iy = oy * d->sh - d->ph + ky * d->dh;

				if (iy < 0 || iy >= d->h)
					continue;
				for (int64_t kx = 0; kx < d->kw; kx++) {
					int64_t ix = ox * d->sw - d->pw + kx * d->dw, k0 = (ky * d->kw + kx) * cg;
					const uint8_t *src = t + (iy * d->w + ix) * cg;

					if (ix < 0 || ix >= d->w)
						continue;
					for (int64_t c4 = 0; c4 < cg; c4 += 4)
						memcpy(dst + (k0 + c4) * 16, src + c4, 4);
				}
			}
		}
}

static inline size_t pan_at(int64_t p, int64_t k, int64_t kp)
{
	return (size_t)((p / 16) * kp * 16 + (k / 4) * 64 + (p % 16) * 4 + k % 4);
}

/* im2col of channels [c0, c0 + cg) of one image into panels: pp columns
 * (the output pixels, padded to TILE_COLS) by kp rows. */
static void pack_im2col(const ds_conv2d_dims *d, const uint8_t *x, int64_t c0, int64_t cg, int64_t kp, int64_t pp,
			uint8_t zp, uint8_t *u)
{
	int64_t k = cg * d->kh * d->kw;

	memset(u, zp, (size_t)(pp * kp));
	/* k rows past the real ones meet zero filter bytes; zero them anyway
	 * so that no uninitialised byte is ever read. */
	for (int64_t kk = k; kk < kp; kk++)
		for (int64_t p = 0; p < pp; p++)
			u[pan_at(p, kk, kp)] = 0;
	for (int64_t c = 0; c < cg; c++) {
		const uint8_t *xc = x + (c0 + c) * d->h * d->w;

		for (int64_t ky = 0; ky < d->kh; ky++)
			for (int64_t kx = 0; kx < d->kw; kx++) {
				int64_t kk = (c * d->kh + ky) * d->kw + kx, kb = (kk >> 2) * 64 + (kk & 3);
				int64_t off = kx * d->dw - d->pw, ox0 = 0, ox1 = d->ow;

				/* The outputs whose input column is inside the image;
				 * the others keep the zero point. */
				while (ox0 < ox1 && ox0 * d->sw + off < 0)
					ox0++;
				while (ox1 > ox0 && (ox1 - 1) * d->sw + off >= d->w)
					ox1--;
				for (int64_t oy = 0; oy < d->oh; oy++) {
					int64_t iy = oy * d->sh - d->ph + ky * d->dh, p = oy * d->ow + ox0;
					const uint8_t *src = xc + iy * d->w + off;

					if (iy < 0 || iy >= d->h)
						continue;
					for (int64_t ox = ox0; ox < ox1; ox++, p++)
						u[((p >> 4) * kp << 4) + ((p & 15) << 2) + kb] = src[ox * d->sw];
				}
			}
	}
}

/* Rows [p0, p0 + n) of x [m, k] as the columns of one TILE_COLS block. */
static void pack_rows(const uint8_t *x, int64_t p0, int64_t n, int64_t k, int64_t kp, uint8_t *u)
{
	memset(u, 0, (size_t)(TILE_COLS * kp));
	for (int64_t j = 0; j < n; j++) {
		const uint8_t *row = x + (p0 + j) * k;
		int64_t k4;

		for (k4 = 0; k4 + 4 <= k; k4 += 4)
			memcpy(u + pan_at(j, k4, kp), row + k4, 4);
		for (; k4 < k; k4++)
			u[pan_at(j, k4, kp)] = row[k4];
	}
}

/* The epilogue of one tile: rows [o0, o0 + rows) of output channels, columns
 * [p0, p0 + cols); element (o, p) goes to y at o * so + p * sp. */
static void store_tile(const ds_qout *e, const int32_t *acc, const int32_t *wsum, int64_t o0, int64_t rows,
		       int64_t cols, void *y, int64_t so, int64_t sp)
{
	float inv = e->u8 ? 1.0f / e->y_scale : 0.0f;

	for (int64_t r = 0; r < rows; r++) {
		int64_t o = o0 + r;
		int32_t corr = e->x_zero_point * wsum[r];

		for (int64_t j = 0; j < cols; j++) {
			float v = ds_qout_real(e, o, acc[r * TILE_COLS + j] - corr);

			if (e->u8)
				((uint8_t *)y)[r * so + j * sp] = ds_q8(v, inv, e->y_zero_point);
			else
				((float *)y)[r * so + j * sp] = v;
		}
	}
}

static size_t out_size(const ds_qout *e)
{
	return e->u8 ? 1 : sizeof(float);
}

/* C = W U over all column blocks of one packed U, with the epilogue.  Row
 * tiles below rfull read wp, the last partial one wtail (padded with zero
 * rows). */
static void gemm_packed(tile_fn tile, const ds_qout *e, const int8_t *wp, const int8_t *wtail, int64_t rfull,
			const int32_t *wsum, int64_t o0, int64_t rows, int64_t kp, const uint8_t *u, int64_t cols, char *y,
			int64_t so, int64_t sp)
{
	int32_t acc[TILE_ROWS * TILE_COLS];
	size_t es = out_size(e);

	for (int64_t p = 0; p < cols; p += TILE_COLS) {
		int64_t nc = cols - p < TILE_COLS ? cols - p : TILE_COLS;

		for (int64_t r = 0; r < rows; r += TILE_ROWS) {
			int64_t nr = rows - r < TILE_ROWS ? rows - r : TILE_ROWS;
			const int8_t *wr = r < rfull ? wp + r * kp : wtail + (r - rfull) * kp;

#ifdef DS_HAVE_VNNI_BUILD
			if (tile == tile_vnni && sp == 1) {
				tile_vnni_store(wr, kp, u + (size_t)(p * kp), e, wsum + r, o0 + r, nr, nc,
						y + (size_t)(r * so + p) * es, so);
				continue;
			}
#endif
			tile(wr, kp, u + (size_t)(p * kp), acc);
			store_tile(e, acc, wsum + r, o0 + r, nr, nc, y + (size_t)(r * so + p * sp) * es, so, sp);
		}
	}
}

/* ------------------------------------------------------------- convolution */

static int is_depthwise(const ds_conv2d_dims *d)
{
	return d->groups == d->c && d->o == d->c;
}

struct conv_layout {
	int64_t cg, og, k, kp, rp, pp;
	int hwc;                     /* channels-last columns (cg a multiple of 4) */
	size_t wp_off, wsum_off, slice_off, slice;
	int threads;
};

static void conv_layout(const ds_conv2d_dims *d, struct conv_layout *l)
{
	l->cg = d->c / d->groups;
	l->og = d->o / d->groups;
	l->k = l->cg * d->kh * d->kw;
	l->kp = (int64_t)up((size_t)l->k, 4);
	l->rp = (int64_t)up((size_t)l->og, TILE_ROWS);
	l->pp = (int64_t)up((size_t)(d->oh * d->ow), TILE_COLS);
	l->threads = ds_kernel_threads();
	l->wp_off = 0;
	l->wsum_off = up((size_t)(d->groups * l->rp * l->kp), ALIGN);
	l->slice_off = l->wsum_off + up((size_t)d->o * sizeof(int32_t), ALIGN);
	l->hwc = l->cg % 4 == 0;
	l->slice = up((size_t)(l->pp * l->kp), ALIGN) + (l->hwc ? up((size_t)(l->cg * d->h * d->w), ALIGN) : 0);
}

size_t ds_qconv2d_workspace(const ds_conv2d_dims *d)
{
	struct conv_layout l;

	if (is_depthwise(d))
		return 0;
	conv_layout(d, &l);
	return l.slice_off + l.slice * (size_t)l.threads;
}

/* Depthwise filters are 9 or 25 taps: direct loops beat any packing. */
static void depthwise(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y)
{
	float inv = e->u8 ? 1.0f / e->y_scale : 0.0f;
	int32_t zp = e->x_zero_point;

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t nc = 0; nc < d->n * d->c; nc++) {
		int64_t c = nc % d->c;
		const uint8_t *xc = x + nc * d->h * d->w;
		const int8_t *wc = w + c * d->kh * d->kw;

		for (int64_t oy = 0; oy < d->oh; oy++)
			for (int64_t ox = 0; ox < d->ow; ox++) {
				int32_t acc = 0;
				int64_t at = (nc * d->oh + oy) * d->ow + ox;
				float v;

				for (int64_t ky = 0; ky < d->kh; ky++) {
					int64_t iy = oy * d->sh - d->ph + ky * d->dh;

					if (iy < 0 || iy >= d->h)
						continue;
					for (int64_t kx = 0; kx < d->kw; kx++) {
						int64_t ix = ox * d->sw - d->pw + kx * d->dw;

						if (ix >= 0 && ix < d->w)
							acc += ((int32_t)xc[iy * d->w + ix] - zp) * wc[ky * d->kw + kx];
					}
				}
				v = ds_qout_real(e, c, acc);
				if (e->u8)
					((uint8_t *)y)[at] = ds_q8(v, inv, e->y_zero_point);
				else
					((float *)y)[at] = v;
			}
	}
}

void ds_qconv2d_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			void *ws)
{
	struct conv_layout l;
	tile_fn tile = pick_tile();
	int8_t *wp;
	int32_t *wsum;
	int64_t p_n = d->oh * d->ow;
	size_t es = out_size(e);

	if (is_depthwise(d)) {
		depthwise(d, x, w, e, y);
		return;
	}
	conv_layout(d, &l);
	wp = (int8_t *)ws + l.wp_off;
	wsum = (int32_t *)((char *)ws + l.wsum_off);
	for (int64_t g = 0; g < d->groups; g++) {
		if (l.hwc)
			pack_w_hwc(w + g * l.og * l.k, l.og, l.cg, d->kh * d->kw, wp + g * l.rp * l.kp, wsum + g * l.og);
		else
			pack_w(w + g * l.og * l.k, l.og, l.k, l.kp, wp + g * l.rp * l.kp, wsum + g * l.og);
	}
#pragma omp parallel for schedule(static) num_threads(l.threads)
	for (int64_t ng = 0; ng < d->n * d->groups; ng++) {
		int t = 0;
		int64_t n = ng / d->groups, g = ng % d->groups;
		uint8_t *u;

#ifdef _OPENMP
		t = omp_get_thread_num();
#endif
		u = (uint8_t *)ws + l.slice_off + l.slice * (size_t)t;
		if (l.hwc)
			pack_im2col_hwc(d, x + n * d->c * d->h * d->w, g * l.cg, l.cg, l.kp, l.pp, (uint8_t)e->x_zero_point,
					u + up((size_t)(l.pp * l.kp), ALIGN), u);
		else
			pack_im2col(d, x + n * d->c * d->h * d->w, g * l.cg, l.cg, l.kp, l.pp, (uint8_t)e->x_zero_point,
				    u);
		gemm_packed(tile, e, wp + g * l.rp * l.kp, NULL, l.rp, wsum + g * l.og, g * l.og, l.og, l.kp, u, p_n,
			    (char *)y + (size_t)((n * d->o + g * l.og) * p_n) * es, p_n, 1);
	}
}

void ds_qconv2d_forward_ref(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y)
{
	int64_t cg = d->c / d->groups, og = d->o / d->groups;
	float inv = e->u8 ? 1.0f / e->y_scale : 0.0f;

	for (int64_t n = 0; n < d->n; n++)
		for (int64_t o = 0; o < d->o; o++)
			for (int64_t oy = 0; oy < d->oh; oy++)
				for (int64_t ox = 0; ox < d->ow; ox++) {
					int64_t g = o / og, at = ((n * d->o + o) * d->oh + oy) * d->ow + ox;
					int32_t acc = 0;
					float v;

					for (int64_t c = 0; c < cg; c++)
						for (int64_t ky = 0; ky < d->kh; ky++)
							for (int64_t kx = 0; kx < d->kw; kx++) {
								int64_t iy = oy * d->sh - d->ph + ky * d->dh;
								int64_t ix = ox * d->sw - d->pw + kx * d->dw;
								int32_t q;

								if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w)
									continue;
								q = x[((n * d->c + g * cg + c) * d->h + iy) * d->w + ix];
								acc += (q - e->x_zero_point) *
								       w[((o * cg + c) * d->kh + ky) * d->kw + kx];
							}
					v = ds_qout_real(e, o, acc);
					if (e->u8)
						((uint8_t *)y)[at] = ds_q8(v, inv, e->y_zero_point);
					else
						((float *)y)[at] = v;
				}
}

/* ------------------------------------------------------------------ linear */

struct linear_layout {
	int64_t kp, rp;
	size_t wsum_off, slice_off, slice;
	int threads;
};

static void linear_layout(int64_t in, int64_t out, struct linear_layout *l)
{
	l->kp = (int64_t)up((size_t)in, 4);
	l->rp = (int64_t)up((size_t)out, TILE_ROWS);
	l->threads = ds_kernel_threads();
	l->wsum_off = up((size_t)(l->rp * l->kp), ALIGN);
	l->slice_off = l->wsum_off + up((size_t)out * sizeof(int32_t), ALIGN);
	l->slice = up((size_t)(TILE_COLS * l->kp), ALIGN);
}

size_t ds_qlinear_workspace(int64_t m, int64_t in, int64_t out)
{
	struct linear_layout l;

	(void)m;
	linear_layout(in, out, &l);
	return l.slice_off + l.slice * (size_t)l.threads;
}

void ds_qlinear_forward(int64_t m, int64_t in, int64_t out, const uint8_t *x, const int8_t *w, const ds_qout *e,
			void *y, void *ws)
{
	struct linear_layout l;
	tile_fn tile = pick_tile();
	int8_t *wp = ws;
	const int8_t *wmain = wp;
	int32_t *wsum;
	size_t es = out_size(e);
	int64_t rfull = (int64_t)up((size_t)out, TILE_ROWS), blocks = (m + TILE_COLS - 1) / TILE_COLS;

	linear_layout(in, out, &l);
	wsum = (int32_t *)((char *)ws + l.wsum_off);
	/* Rows of 4-byte multiples are already the packed form: only the last
	 * partial tile of rows is copied (a plan may call this per chunk of a
	 * few items, so a full copy of a large layer would dominate). */
	if (in % 4 == 0) {
		rfull = out / TILE_ROWS * TILE_ROWS;
		memset(wp, 0, (size_t)(TILE_ROWS * in));
		memcpy(wp, w + rfull * in, (size_t)((out - rfull) * in));
		row_sums(w, out, in, wsum);
		wmain = w;
	} else {
		pack_w(w, out, in, l.kp, wp, wsum);
	}
#pragma omp parallel for schedule(static) num_threads(l.threads)
	for (int64_t b = 0; b < blocks; b++) {
		int t = 0;
		int64_t p0 = b * TILE_COLS, n = m - p0 < TILE_COLS ? m - p0 : TILE_COLS;
		uint8_t *u;

#ifdef _OPENMP
		t = omp_get_thread_num();
#endif
		u = (uint8_t *)ws + l.slice_off + l.slice * (size_t)t;
		pack_rows(x, p0, n, in, l.kp, u);
		/* Output channel o of row p lands at p * out + o. */
		gemm_packed(tile, e, wmain, rfull < l.rp ? wp : NULL, rfull, wsum, 0, out, l.kp, u, n, (char *)y + (size_t)(p0 * out) * es, 1, out);
	}
}

void ds_qlinear_forward_ref(int64_t m, int64_t in, int64_t out, const uint8_t *x, const int8_t *w,
			    const ds_qout *e, void *y)
{
	float inv = e->u8 ? 1.0f / e->y_scale : 0.0f;

	for (int64_t i = 0; i < m; i++)
		for (int64_t o = 0; o < out; o++) {
			int32_t acc = 0;
			float v;

			for (int64_t k = 0; k < in; k++)
				acc += ((int32_t)x[i * in + k] - e->x_zero_point) * w[o * in + k];
			v = ds_qout_real(e, o, acc);
			if (e->u8)
				((uint8_t *)y)[i * out + o] = ds_q8(v, inv, e->y_zero_point);
			else
				((float *)y)[i * out + o] = v;
		}
}

/* ----------------------------------------------------------- the others */

/* The common 2x2 window, stride 2, no padding: no bounds to check. */
static void max_pool_2x2(const ds_pool_dims *d, const uint8_t *x, uint8_t *y)
{
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t nc = 0; nc < d->n * d->c; nc++) {
		const uint8_t *xc = x + nc * d->h * d->w;
		uint8_t *yc = y + nc * d->oh * d->ow;

		for (int64_t oy = 0; oy < d->oh; oy++) {
			const uint8_t *r0 = xc + 2 * oy * d->w, *r1 = r0 + d->w;

			for (int64_t ox = 0; ox < d->ow; ox++) {
				uint8_t a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
				uint8_t b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];

				yc[oy * d->ow + ox] = a > b ? a : b;
			}
		}
	}
}

void ds_qmax_pool_forward(const ds_pool_dims *d, const uint8_t *x, uint8_t *y)
{
	if (d->kh == 2 && d->kw == 2 && d->sh == 2 && d->sw == 2 && !d->ph && !d->pw && d->oh * 2 <= d->h &&
	    d->ow * 2 <= d->w) {
		max_pool_2x2(d, x, y);
		return;
	}
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t nc = 0; nc < d->n * d->c; nc++) {
		const uint8_t *xc = x + nc * d->h * d->w;
		uint8_t *yc = y + nc * d->oh * d->ow;

		for (int64_t oy = 0; oy < d->oh; oy++)
			for (int64_t ox = 0; ox < d->ow; ox++) {
				uint8_t m = 0;

				for (int64_t ky = 0; ky < d->kh; ky++) {
					int64_t iy = oy * d->sh - d->ph + ky;

					if (iy < 0 || iy >= d->h)
						continue;
					for (int64_t kx = 0; kx < d->kw; kx++) {
						int64_t ix = ox * d->sw - d->pw + kx;

						if (ix >= 0 && ix < d->w && xc[iy * d->w + ix] > m)
							m = xc[iy * d->w + ix];
					}
				}
				yc[oy * d->ow + ox] = m;
			}
	}
}

void ds_qglobal_avg_pool_forward(int64_t planes, int64_t size, const uint8_t *x, uint8_t *y)
{
	for (int64_t i = 0; i < planes; i++) {
		int64_t s = 0;

		for (int64_t j = 0; j < size; j++)
			s += x[i * size + j];
		y[i] = (uint8_t)(size ? (s + size / 2) / size : 0);
	}
}

void ds_qadd_forward(int64_t n, const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
		     int32_t b_zp, float lo, float hi, float y_scale, int32_t y_zp, uint8_t *y)
{
	float inv = 1.0f / y_scale;

	for (int64_t i = 0; i < n; i++) {
		float v = a_scale * (float)((int32_t)a[i] - a_zp) + b_scale * (float)((int32_t)b[i] - b_zp);

		v = fminf(fmaxf(v, lo), hi);
		y[i] = ds_q8(v, inv, y_zp);
	}
}
