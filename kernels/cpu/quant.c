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
 *
 * On VNNI three more forms skip im2col.  A stride-1 convolution reads its
 * padded input as planes of 4-byte words (4 channels, or for fewer
 * channels the kw <= 4 taps along a row) laid along the flattened padded
 * rows, so that 16 neighbouring outputs read 64 contiguous bytes per k4
 * (the "direct" form; columns that land in the padding are computed and
 * dropped).  Depthwise filters use the tap words per channel.  Dense layers
 * are dot products along k, which suits the few rows a batch of 1 or a
 * plan's chunk brings.  The packed filters stay in the workspace between
 * calls (struct wcache).
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
#include <cpuid.h>
#include <immintrin.h>
#define DS_HAVE_VNNI_BUILD 1
#endif
#if defined(__linux__) && defined(DS_HAVE_VNNI_BUILD) && (__GNUC__ >= 11 || defined(__clang__))
#include <sys/syscall.h>
#include <unistd.h>
#define DS_HAVE_AMX_BUILD 1
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

#ifdef DS_HAVE_VNNI_BUILD
static int has_avx512bw(void)
{
	static int has = -1;

	if (has < 0) {
		__builtin_cpu_init();
		has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		      __builtin_cpu_supports("avx512vl");
	}
	return has;
}

static int has_vbmi(void)
{
	static int has = -1;

	if (has < 0)
		has = has_avx512bw() && __builtin_cpu_supports("avx512vbmi");
	return has;
}

/* ds_q8 16 lanes at a time: vmaxps returns its second operand for a NaN,
 * as the comparison does, and vcvtps2dq rounds half to even. */
__attribute__((target("avx512f,avx512bw,avx512vl"), optimize("fp-contract=off"))) static int64_t
quantize_avx512(int64_t n, const float *x, float inv, int32_t zero_point, uint8_t *y)
{
	__m512 vinv = _mm512_set1_ps(inv), zp = _mm512_set1_ps((float)zero_point);
	__m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.0f);
	int64_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512 q = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv), zp);

		q = _mm512_min_ps(_mm512_max_ps(q, zero), top);
		_mm_storeu_si128((__m128i *)(y + i), _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(q)));
	}
	return i;
}
#endif

void ds_quantize_f32(int64_t n, const float *x, float scale, int32_t zero_point, uint8_t *y)
{
	float inv = 1.0f / scale;
	int64_t i = 0;

#ifdef DS_HAVE_VNNI_BUILD
	if (has_avx512bw())
		i = quantize_avx512(n, x, inv, zero_point, y);
#endif
	for (; i < n; i++)
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
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"), optimize("fp-contract=off"))) static void
epi_vnni(const int32_t *acc, const ds_qout *e, const int32_t *wsum, int64_t o0, int64_t rows, int64_t cols, void *y,
	 int64_t so)
{
	for (int64_t r = 0; r < rows; r++) {
		int64_t o = o0 + r;
		__m512i corr = _mm512_set1_epi32(e->x_zero_point * wsum[r]);
		const ds_qcode c = DS_QOUT_AFFINE(e, o);
		const __m512 mult = _mm512_set1_ps(c.m), bias = _mm512_set1_ps(c.b);
		const __m512 lo = _mm512_set1_ps(c.lo), hi = _mm512_set1_ps(c.hi);

		for (int h = 0; h < 2 && h * 16 < cols; h++) {
			int64_t left = cols - h * 16;
			__mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
			__m512i a = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, acc + r * TILE_COLS + h * 16), corr);
			__m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), mult), bias);

			v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
			if (e->u8) {
				/* The saturating narrow into a register, then a plain
				 * masked store: vpmovusdb to memory is slow on AMD. */
				_mm_mask_storeu_epi8((uint8_t *)y + r * so + h * 16, m,
						     _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v)));
			} else {
				_mm512_mask_storeu_ps((float *)y + r * so + h * 16, m, v);
			}
		}
	}
}

static void tile_vnni_store(const int8_t *w, int64_t kp, const uint8_t *pan, const ds_qout *e, const int32_t *wsum,
			    int64_t o0, int64_t rows, int64_t cols, void *y, int64_t so)
{
	int32_t acc[TILE_ROWS * TILE_COLS];

	tile_vnni(w, kp, pan, acc);
	epi_vnni(acc, e, wsum, o0, rows, cols, y, so);
}
#endif

static int forced = -1;

void ds_qgemm_force(int level)
{
	forced = level;
}

static int vnni_cpu(void)
{
#ifdef DS_HAVE_VNNI_BUILD
	static int has = -1;

	if (has < 0) {
		__builtin_cpu_init();
		has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
		      __builtin_cpu_supports("avx512vnni");
	}
	return has;
#else
	return 0;
#endif
}

int ds_qgemm_vnni(void)
{
	return forced >= 0 ? forced >= 1 && vnni_cpu() : vnni_cpu();
}

/* AMX needs the CPU's tiles (CPUID 7: AMX-TILE, AMX-INT8) and the kernel's
 * leave to use their state (arch_prctl ARCH_REQ_XCOMP_PERM for
 * XTILEDATA), asked once for the whole process. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int ds_qgemm_amx(void)
{
#ifdef DS_HAVE_AMX_BUILD
	static int has = -1;

	if (has < 0) {
		unsigned a, b, c, d;

		has = vnni_cpu() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1) &&
		      syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
	}
	return forced >= 0 ? forced >= 2 && has : has;
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
 * channels-last columns; rows padded to rp with zeros. */
static void pack_w_hwc(const int8_t *w, int64_t rows, int64_t rp, int64_t cg, int64_t khw, int8_t *wp,
		       int32_t *wsum)
{
	int64_t k = cg * khw;

	memset(wp + rows * k, 0, (size_t)((rp - rows) * k));
	/* Contiguous writes, reads along a row that is in L1. */
	for (int64_t r = 0; r < rows; r++)
		for (int64_t t = 0; t < khw; t++)
			for (int64_t c = 0; c < cg; c++)
				wp[r * k + t * cg + c] = w[(r * cg + c) * khw + t];
	row_sums(w, rows, k, wsum);
}

/* Filters [rows, kh, kw] (rows of all channels: rows * cg rows of kw taps
 * each, here 'lines') as one word per line, taps past kw zero: the kx
 * form's k4 = c * kh + ky. */
static void pack_w_kx(const int8_t *w, int64_t rows, int64_t lines, int64_t kw, int8_t *wp, int32_t *wsum)
{
	int64_t rp = (int64_t)up((size_t)rows, TILE_ROWS);

	memset(wp, 0, (size_t)(rp * lines * 4));
	for (int64_t r = 0; r < rows; r++)
		for (int64_t i = 0; i < lines; i++)
			memcpy(wp + (r * lines + i) * 4, w + (r * lines + i) * kw, (size_t)kw);
	row_sums(w, rows, lines * kw, wsum);
}

/* Rows and columns of the padded input a convolution reads: enough for
 * every window, the border holding the zero point. */
static void padded_extent(const ds_conv2d_dims *d, int64_t *ph, int64_t *pw)
{
	*ph = (d->oh - 1) * d->sh + (d->kh - 1) * d->dh + 1;
	*pw = (d->ow - 1) * d->sw + (d->kw - 1) * d->dw + 1;
}

/* im2col of channels [c0, c0 + cg) of one image into panels through a
 * padded copy (pad: planar, or channels-last when hwc), so that each
 * column is a fixed set of offsets from its window's corner with no bounds
 * to check.  k = (c * kh + ky) * kw + kx planar, (ky * kw + kx) * cg + c
 * channels-last (whole words of 4 channels).  Columns past the real ones
 * get zeros; k past the real ones read the corner (their filter bytes are
 * zero). */
#ifdef DS_HAVE_VNNI_BUILD
static void interleave4(const uint8_t *src, int64_t stride, int64_t n, uint8_t *dst);
#endif

#ifdef DS_HAVE_VNNI_BUILD
/* The channels-last columns of pack_im2col_padded, a panel at a time: the
 * word of 4 channels that column j of the panel takes at k is at a fixed
 * offset from its window's corner, so one gather of 16 corners plus that
 * offset is the panel's row of k (a copy of 4 bytes per column and word
 * made the packing most of a strided INT8 layer's time). */
__attribute__((target("avx512f"))) static void panels_hwc_gather(const ds_conv2d_dims *d, int64_t PW, int64_t cg,
								   int64_t kp, int64_t pp, const uint8_t *pad,
								   const int32_t *off, uint8_t *u)
{
	const int64_t np = d->oh * d->ow;

	for (int64_t p0 = 0; p0 < pp; p0 += 16) {
		int32_t corner[16];
		__mmask16 live = 0;
		__m512i b;
		uint8_t *dst = u + p0 * kp;

		for (int j = 0; j < 16; j++) {
			int64_t p = p0 + j;

			corner[j] = 0;
			if (p < np) {
				corner[j] = (int32_t)(((p / d->ow) * d->sh * PW + (p % d->ow) * d->sw) * cg);
				live |= (__mmask16)(1u << j);
			}
		}
		b = _mm512_loadu_si512(corner);
		for (int64_t k4 = 0; k4 < kp; k4 += 4)
			_mm512_storeu_si512(dst + k4 * 16,
					    _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live,
									_mm512_add_epi32(b, _mm512_set1_epi32(off[k4])), pad, 1));
	}
}
#endif

/* tmp (cg * w bytes, or NULL): room to turn a row channels-last in words
 * of 4 channels first, on AVX-512. */
static void pack_im2col_padded(const ds_conv2d_dims *d, const uint8_t *x, int64_t c0, int64_t cg, int64_t kp,
			       int64_t pp, uint8_t zp, int hwc, uint8_t *pad, int32_t *off, uint8_t *tmp, uint8_t *u)
{
	int64_t hw = d->h * d->w, k = cg * d->kh * d->kw, PH, PW, np = d->oh * d->ow;

	padded_extent(d, &PH, &PW);
	for (int64_t r = 0; r < PH; r++) {
		int64_t iy = r - d->ph, x0 = d->pw, x1 = d->pw + d->w;

		x1 = x1 < PW ? x1 : PW;
		if (hwc) {
			uint8_t *row = pad + r * PW * cg;

			memset(row, zp, (size_t)(PW * cg));
			if (iy < 0 || iy >= d->h)
				continue;
#ifdef DS_HAVE_VNNI_BUILD
			if (tmp && x1 > x0) {
				int64_t n = x1 - x0;

				for (int64_t c4 = 0; c4 < cg / 4; c4++)
					interleave4(x + (c0 + c4 * 4) * hw + iy * d->w, hw, n, tmp + c4 * n * 4);
				for (int64_t i = 0; i < n; i++)
					for (int64_t c4 = 0; c4 < cg / 4; c4++)
						memcpy(row + (x0 + i) * cg + c4 * 4, tmp + (c4 * n + i) * 4, 4);
				continue;
			}
#endif
			for (int64_t c = 0; c < cg; c++) {
				const uint8_t *xr = x + (c0 + c) * hw + iy * d->w - d->pw;

				for (int64_t ix = x0; ix < x1; ix++)
					row[ix * cg + c] = xr[ix];
			}
		} else {
			for (int64_t c = 0; c < cg; c++) {
				uint8_t *row = pad + (c * PH + r) * PW;

				memset(row, zp, (size_t)PW);
				if (iy >= 0 && iy < d->h && x1 > x0)
					memcpy(row + x0, x + (c0 + c) * hw + iy * d->w, (size_t)(x1 - x0));
			}
		}
	}
	/* Stepped through (c, ky, kx) or (ky, kx, c), not divided. */
	for (int64_t kk = k; kk < kp; kk++)
		off[kk] = 0;
	for (int64_t c = 0; c < cg; c++)
		for (int64_t ky = 0; ky < d->kh; ky++)
			for (int64_t kx = 0; kx < d->kw; kx++) {
				int64_t t = ky * d->kw + kx, kk = hwc ? t * cg + c : c * d->kh * d->kw + t;

				off[kk] = (int32_t)(hwc ? (ky * d->dh * PW + kx * d->dw) * cg + c
						       : (c * PH + ky * d->dh) * PW + kx * d->dw);
			}
#ifdef DS_HAVE_VNNI_BUILD
	if (hwc && tmp) {
		panels_hwc_gather(d, PW, cg, kp, pp, pad, off, u);
		return;
	}
#endif
	for (int64_t p = 0; p < pp; p++) {
		uint8_t *dst = u + ((p >> 4) * kp << 4) + ((p & 15) << 2);

		if (p >= np) {
			for (int64_t k4 = 0; k4 < kp; k4 += 4)
				memset(dst + k4 * 16, 0, 4);
			continue;
		}
		if (hwc) {
			const uint8_t *src = pad + ((p / d->ow) * d->sh * PW + (p % d->ow) * d->sw) * cg;

			for (int64_t k4 = 0; k4 < kp; k4 += 4)
				memcpy(dst + k4 * 16, src + off[k4], 4);
		} else {
			const uint8_t *src = pad + (p / d->ow) * d->sh * PW + (p % d->ow) * d->sw;

			for (int64_t k4 = 0; k4 < kp; k4 += 4) {
				uint8_t b[4] = { src[off[k4]], src[off[k4 + 1]], src[off[k4 + 2]], src[off[k4 + 3]] };

				memcpy(dst + k4 * 16, b, 4);
			}
		}
	}
}

static inline size_t pan_at(int64_t p, int64_t k, int64_t kp)
{
	return (size_t)((p / 16) * kp * 16 + (k / 4) * 64 + (p % 16) * 4 + k % 4);
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
	for (int64_t r = 0; r < rows; r++) {
		int64_t o = o0 + r;
		int32_t corr = e->x_zero_point * wsum[r];
		ds_qcode c = e->u8 ? e->code[o] : (ds_qcode){ 0 };

		for (int64_t j = 0; j < cols; j++) {
			if (e->u8)
				((uint8_t *)y)[r * so + j * sp] = ds_qcode_at(&c, acc[r * TILE_COLS + j] - corr);
			else
				((float *)y)[r * so + j * sp] = ds_qout_real(e, o, acc[r * TILE_COLS + j] - corr);
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
	size_t wp_off, wsum_off, slice_off, slice, pad_off, off_off;
	int threads;
	/* The direct form (stride 1, channels in words of 4): the padded
	 * input as cg / 4 planes of words, each plane rows of pw words and
	 * plane words long (room for the last tile's reads); qn columns. */
	int direct;
	int64_t pw, plane, qn;
	size_t koff_off, tmp_off;
	/* AMX tiles (the direct form, or im2col panels): filters in rows of
	 * 16 (rt); in the direct form, input channels nc4 words of 4 a tile
	 * product. */
	int amx;
	int64_t rt, nc4;
};

/* vnni: the layout the VNNI micro-kernel uses, which may be a direct form;
 * amx: the direct form on AMX where it applies. */
static void conv_layout(const ds_conv2d_dims *d, int vnni, int amx, struct conv_layout *l)
{
	int64_t ph, pw;

	l->cg = d->c / d->groups;
	l->og = d->o / d->groups;
	l->k = l->cg * d->kh * d->kw;
	l->hwc = l->cg % 4 == 0;
	l->direct = !vnni || d->sh != 1 || d->sw != 1 ? 0 : l->hwc ? 1 : d->kw <= 4 ? 2 : 0;
	l->amx = amx && l->direct != 2;
	/* A tile product takes up to 16 words of channels of one tap: the
	 * largest count that divides the group's words. */
	for (l->nc4 = l->cg / 4 < 16 ? l->cg / 4 : 16; l->nc4 > 1 && l->cg / 4 % l->nc4; l->nc4--)
		;
	l->rt = l->amx ? 16 : TILE_ROWS;
	/* The kx form gives each (c, ky) a word of 4 taps along the row. */
	l->kp = l->direct == 2 ? l->cg * d->kh * 4 : (int64_t)up((size_t)l->k, 4);
	l->rp = (int64_t)up((size_t)l->og, (size_t)l->rt);
	l->pp = (int64_t)up((size_t)(d->oh * d->ow), TILE_COLS);
	l->threads = ds_kernel_threads();
	l->wp_off = ALIGN;           /* after the struct wcache */
	l->wsum_off = l->wp_off + up((size_t)(d->groups * l->rp * l->kp), ALIGN);
	l->slice_off = l->wsum_off + up((size_t)d->o * sizeof(int32_t), ALIGN);
	padded_extent(d, &ph, &pw);
	l->pad_off = up((size_t)(l->pp * l->kp), ALIGN);
	l->off_off = l->pad_off + up((size_t)(l->cg * ph * pw), ALIGN);
	l->slice = l->off_off + up((size_t)l->kp * sizeof(int32_t), ALIGN);
	l->pw = pw;
	l->qn = (int64_t)up((size_t)(d->oh * pw), TILE_COLS);
	l->plane = l->qn + (d->kh - 1) * d->dh * pw + (d->kw - 1) * d->dw;
	l->plane = l->plane > ph * pw ? l->plane : ph * pw;
	l->koff_off = up((size_t)(l->cg * l->plane * (l->direct == 2 ? 4 : 1)), ALIGN);
	if (l->direct && l->koff_off + up((size_t)l->kp, ALIGN) > l->slice)
		l->slice = l->koff_off + up((size_t)l->kp, ALIGN);
	l->tmp_off = l->slice;
	l->slice += up((size_t)(l->cg * d->w), ALIGN);
}

#ifdef DS_HAVE_VNNI_BUILD
/* The kx form of pack_direct: one plane per channel, whose word at a
 * padded position holds the taps kx = 0..kw-1 that start there (the zero
 * point past the row or the image); k4 = c * kh + ky. */
static void pack_direct_kx(const ds_conv2d_dims *d, const struct conv_layout *l, const uint8_t *x, int64_t c0,
			   uint8_t zp, uint8_t *t, int32_t *koff)
{
	int64_t hw = d->h * d->w, pw = l->pw;

	memset(t, zp, (size_t)(l->cg * l->plane * 4));
	for (int64_t c = 0; c < l->cg; c++)
		for (int64_t iy = 0; iy < d->h; iy++) {
			const uint8_t *src = x + (c0 + c) * hw + iy * d->w;
			uint8_t *dst = t + (c * l->plane + (iy + d->ph) * pw) * 4;

			if ((iy + d->ph + 1) * pw > l->plane)
				break;
			for (int64_t j = 0; j < d->kw; j++)
				for (int64_t ix = 0; ix < d->w && ix + d->pw < pw; ix++) {
					int64_t col = ix + d->pw - j * d->dw;

					if (col >= 0)
						dst[col * 4 + j] = src[ix];
				}
		}
	for (int64_t k4 = 0; k4 < l->kp / 4; k4++)
		koff[k4] = (int32_t)((k4 / d->kh * l->plane + k4 % d->kh * d->dh * pw) * 4);
}

/* interleave4 on VBMI: the 16 bytes of each row in a 128-bit lane, then
 * one byte permute puts byte i of lane j at 4i + j (the widening form
 * below takes four shuffles for the same 64 bytes, and shuffles share one
 * port). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) static void
interleave4_vbmi(const uint8_t *src, int64_t stride, int64_t n, uint8_t *dst)
{
	/* Byte 4i + j from byte i of lane j. */
	static const uint8_t index[64] = {
		0,  16, 32, 48, 1,  17, 33, 49, 2,  18, 34, 50, 3,  19, 35, 51,
		4,  20, 36, 52, 5,  21, 37, 53, 6,  22, 38, 54, 7,  23, 39, 55,
		8,  24, 40, 56, 9,  25, 41, 57, 10, 26, 42, 58, 11, 27, 43, 59,
		12, 28, 44, 60, 13, 29, 45, 61, 14, 30, 46, 62, 15, 31, 47, 63,
	};
	const __m512i order = _mm512_loadu_si512(index);
	for (int64_t i = 0; i < n; i += 16) {
		__mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m512i rows = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(m, src + i));

		rows = _mm512_inserti32x4(rows, _mm_maskz_loadu_epi8(m, src + stride + i), 1);
		rows = _mm512_inserti32x4(rows, _mm_maskz_loadu_epi8(m, src + 2 * stride + i), 2);
		rows = _mm512_inserti32x4(rows, _mm_maskz_loadu_epi8(m, src + 3 * stride + i), 3);
		_mm512_mask_storeu_epi32(dst + i * 4, m, _mm512_permutexvar_epi8(order, rows));
	}
}

/* Words of 4 bytes from 4 rows src + j * stride (j = 0..3) into dst. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void interleave4(const uint8_t *src, int64_t stride,
									     int64_t n, uint8_t *dst)
{
	if (has_vbmi()) {
		interleave4_vbmi(src, stride, n, dst);
		return;
	}
	for (int64_t i = 0; i < n; i += 16) {
		__mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m512i word = _mm512_setzero_si512();

		for (int j = 0; j < 4; j++) {
			__m512i b = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, src + j * stride + i));

			word = _mm512_or_si512(word, _mm512_slli_epi32(b, (unsigned)(8 * j)));
		}
		_mm512_mask_storeu_epi32(dst + i * 4, m, word);
	}
}

/* Channels [c0, c0 + cg) of one image as padded planes of words of 4
 * channels, t[c4][r][col][4], so that 16 outputs that follow each other
 * along the flattened padded rows read 64 contiguous bytes per tap: the
 * convolution needs no im2col.  Columns that fall in the padding compute
 * values nobody stores. */
static void pack_direct(const ds_conv2d_dims *d, const struct conv_layout *l, const uint8_t *x, int64_t c0,
			uint8_t zp, uint8_t *t, int32_t *koff)
{
	int64_t hw = d->h * d->w, ph, pw, cols;

	padded_extent(d, &ph, &pw);
	cols = d->w < pw - d->pw ? d->w : pw - d->pw;
	/* No padding and whole rows (a 1x1 layer): each plane of words is the
	 * image's planes in one run, the zero point only past it. */
	if (!d->ph && !d->pw && pw == d->w && ph >= d->h && l->direct == 1) {
		for (int64_t c4 = 0; c4 < l->cg / 4; c4++) {
			uint8_t *plane = t + c4 * l->plane * 4;

			interleave4(x + (c0 + c4 * 4) * hw, hw, hw, plane);
			memset(plane + hw * 4, zp, (size_t)((l->plane - hw) * 4));
		}
		goto offsets;
	}
	memset(t, zp, (size_t)(l->cg * l->plane));
	for (int64_t c4 = 0; c4 < l->cg / 4; c4++)
		for (int64_t iy = 0; iy < d->h && iy + d->ph < ph; iy++)
			interleave4(x + (c0 + c4 * 4) * hw + iy * d->w, hw, cols,
				    t + (c4 * l->plane + (iy + d->ph) * pw + d->pw) * 4);
	if (l->direct == 2) {
		pack_direct_kx(d, l, x, c0, zp, t, koff);
		return;
	}
	/* k4 = tap * cg / 4 + c4, the order of pack_w_hwc; stepped, not
	 * divided: two divisions a word were a seventh of resnet-s INT8. */
offsets:
	for (int64_t ky = 0, k4 = 0; ky < d->kh; ky++)
		for (int64_t kx = 0; kx < d->kw; kx++)
			for (int64_t c4 = 0; c4 < l->cg / 4 && k4 < l->kp / 4; c4++, k4++)
				koff[k4] = (int32_t)((c4 * l->plane + ky * d->dh * pw + kx * d->dw) * 4);
}

/* A run of the columns of a direct tile that lie in one output row: lanes
 * [j, j + len) go to output position at (oy * ow + ox) onwards. */
struct seg {
	int64_t j, len, at;
};

/* The epilogue of one output channel o's 32 direct columns c0, c1: each
 * run of sg stored with masked stores (the arithmetic of epi_vnni, lane
 * by lane). */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl"), optimize("fp-contract=off"))) void
direct_row_out(__m512i c0, __m512i c1, const ds_qout *e, int32_t wsum, int64_t o, const struct seg *sg, int nseg,
	       char *y)
{
	const __m512i corr = _mm512_set1_epi32(e->x_zero_point * wsum);
	const ds_qcode q = DS_QOUT_AFFINE(e, o);
	const __m512 mult = _mm512_set1_ps(q.m), bias = _mm512_set1_ps(q.b);
	const __m512 lo = _mm512_set1_ps(q.lo), hi = _mm512_set1_ps(q.hi);
	__m512 v[2];
	__m512i c[2] = { c0, c1 };

	for (int h = 0; h < 2; h++) {
		v[h] = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[h], corr)), mult), bias);
		if (!e->saturate)
			v[h] = _mm512_min_ps(_mm512_max_ps(v[h], lo), hi);
	}
	if (e->u8) {
		/* Saturating packs work in 128-bit lanes: lane k holds codes
		 * 4k.. of both halves; dwords 0, 4, 8, 12 then 1, 5, 9, 13 put
		 * them in order.  Codes already clamped within [0, 255] pass
		 * the saturation unchanged. */
		const __m512i order = _mm512_set_epi32(15, 15, 15, 15, 15, 15, 15, 15, 13, 9, 5, 1, 12, 8, 4, 0);
		__m512i w = _mm512_packs_epi32(_mm512_cvtps_epi32(v[0]), _mm512_cvtps_epi32(v[1]));
		__m256i all = _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, _mm512_packus_epi16(w, w)));

		for (int s = 0; s < nseg; s++) {
			__mmask32 m = (__mmask32)((((uint64_t)1 << sg[s].len) - 1) << sg[s].j);

			_mm256_mask_storeu_epi8(y + sg[s].at - sg[s].j, m, all);
		}
	} else {
		for (int s = 0; s < nseg; s++) {
			uint32_t m = (uint32_t)((((uint64_t)1 << sg[s].len) - 1) << sg[s].j);
			float *at = (float *)y + sg[s].at - sg[s].j;

			_mm512_mask_storeu_ps(at, (__mmask16)(m & 0xffff), v[0]);
			_mm512_mask_storeu_ps(at + 16, (__mmask16)(m >> 16), v[1]);
		}
	}
}

/* direct_row_out for rows of codes: the runs' masks made once for all the
 * rows (each row's 32 columns store with the same runs at y + i * so), no
 * per-row choices; one plain store a row when the run is whole (the
 * usual tile of a 1x1 layer). */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl"), optimize("fp-contract=off"))) void
direct_rows_codes(const int32_t *acc, int64_t rows, const ds_qout *e, const int32_t *wsum, int64_t o,
		  const struct seg *sg, int nseg, uint8_t *y, int64_t so)
{
	const __m512i order = _mm512_set_epi32(15, 15, 15, 15, 15, 15, 15, 15, 13, 9, 5, 1, 12, 8, 4, 0);
	const int clamp = !e->saturate, whole = nseg == 1 && sg[0].j == 0 && sg[0].len == TILE_COLS;
	__mmask32 mask[TILE_COLS];
	int64_t at[TILE_COLS];

	for (int s = 0; s < nseg; s++) {
		mask[s] = (__mmask32)((((uint64_t)1 << sg[s].len) - 1) << sg[s].j);
		at[s] = sg[s].at - sg[s].j;
	}
	for (int64_t i = 0; i < rows; i++) {
		const ds_qcode *q = e->code + o + i;
		const __m512i corr = _mm512_set1_epi32(e->x_zero_point * wsum[i]);
		const __m512 mult = _mm512_set1_ps(q->m), bias = _mm512_set1_ps(q->b);
		__m512 v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + i * TILE_COLS), corr));
		__m512 v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + i * TILE_COLS + 16), corr));
		__m512i w;
		__m256i codes;

		v0 = _mm512_add_ps(_mm512_mul_ps(v0, mult), bias);
		v1 = _mm512_add_ps(_mm512_mul_ps(v1, mult), bias);
		if (clamp) {
			const __m512 lo = _mm512_set1_ps(q->lo), hi = _mm512_set1_ps(q->hi);

			v0 = _mm512_min_ps(_mm512_max_ps(v0, lo), hi);
			v1 = _mm512_min_ps(_mm512_max_ps(v1, lo), hi);
		}
		w = _mm512_packs_epi32(_mm512_cvtps_epi32(v0), _mm512_cvtps_epi32(v1));
		codes = _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, _mm512_packus_epi16(w, w)));
		if (whole) {
			_mm256_storeu_si256((__m256i *)(y + i * so + at[0]), codes);
			continue;
		}
		for (int s = 0; s < nseg; s++)
			_mm256_mask_storeu_epi8(y + i * so + at[s], mask[s], codes);
	}
}

/* The direct convolution's tile: the 2 panels of k4 start at base +
 * koff[k4], 64 bytes apart; then the epilogue from the registers. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"), optimize("fp-contract=off"))) static void
direct_tile_out(const int8_t *w, int64_t kp, const uint8_t *base, const int32_t *koff, const ds_qout *e,
		const int32_t *wsum, int64_t o0, int64_t rows, const struct seg *sg, int nseg, char *y, int64_t so)
{
	__m512i c[TILE_ROWS][2];
	size_t es = out_size(e);

	for (int r = 0; r < TILE_ROWS; r++)
		c[r][0] = c[r][1] = _mm512_setzero_si512();
	for (int64_t k4 = 0; k4 < kp / 4; k4++) {
		const uint8_t *a = base + koff[k4];
		__m512i a0 = _mm512_loadu_si512(a), a1 = _mm512_loadu_si512(a + 64);

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
#pragma GCC unroll 6
	for (int r = 0; r < TILE_ROWS; r++) {
		if (r >= rows)
			break;
		direct_row_out(c[r][0], c[r][1], e, wsum[r], o0 + r, sg, nseg, y + (size_t)(r * so) * es);
	}
}

/* Runs of the columns [q0, q0 + TILE_COLS) of the direct form's flattened
 * padded rows that lie in one output row; returns their count. */
static int direct_segments(const ds_conv2d_dims *d, const struct conv_layout *l, int64_t q0, struct seg *sg)
{
	int64_t oy = q0 / l->pw, ox = q0 % l->pw;
	int nseg = 0;

	/* Stepped along the rows, not divided: the divisions were 3% of
	 * resnet-s INT8. */
	for (int64_t j = 0, len; j < TILE_COLS; j += len, ox += len) {
		if (ox >= l->pw) {
			oy++;
			ox = 0;
		}
		if (oy >= d->oh)
			break;
		if (ox >= d->ow) {
			len = l->pw - ox;
			continue;
		}
		len = d->ow - ox < TILE_COLS - j ? d->ow - ox : TILE_COLS - j;
		/* Rows with no padding between them (a 1x1 layer) are one run:
		 * one store rather than one a row. */
		if (nseg && sg[nseg - 1].j + sg[nseg - 1].len == j && sg[nseg - 1].at + sg[nseg - 1].len == oy * d->ow + ox)
			sg[nseg - 1].len += len;
		else
			sg[nseg++] = (struct seg){ .j = j, .len = len, .at = oy * d->ow + ox };
	}
	return nseg;
}

/* All output channels of group g of one image by the direct form. */
static void conv_direct(const ds_conv2d_dims *d, const struct conv_layout *l, const int8_t *wp, const int32_t *wsum,
			int64_t g, int64_t r0, int64_t r1, const uint8_t *t, const int32_t *koff, const ds_qout *e,
			char *y)
{
	size_t es = out_size(e);
	int64_t p_n = d->oh * d->ow;

	for (int64_t q0 = 0; q0 < l->qn; q0 += TILE_COLS) {
		struct seg sg[TILE_COLS];
		int nseg;

		if (q0 / l->pw >= d->oh)
			break;
		nseg = direct_segments(d, l, q0, sg);
		for (int64_t r = r0; r < r1; r += TILE_ROWS) {
			int64_t nr = r1 - r < TILE_ROWS ? r1 - r : TILE_ROWS;

			direct_tile_out(wp + r * l->kp, l->kp, t + q0 * 4, koff, e, wsum + r, g * l->og + r, nr, sg, nseg,
					y + (size_t)(r * p_n) * es, p_n);
		}
	}
}
#endif

#ifdef DS_HAVE_AMX_BUILD
/* The direct form on AMX: a tile product C[16 filters][16 columns] +=
 * A[16 filters][nc4 words of channels] . B[nc4 words][16 columns], signed
 * filters by unsigned codes (TDPBSUD).  For one tap, the words of
 * consecutive channel groups lie one plane apart in the packed input and
 * the filter bytes of consecutive channels are contiguous in a row of the
 * hwc order, so both operands load as tiles with a fixed stride.  C is 32
 * filters by 32 columns in 4 tiles (A in 2, B in 2). */
struct amx_config {
	uint8_t palette, start_row;
	uint8_t reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
};

__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl"), optimize("fp-contract=off"))) static void
conv_direct_amx(const ds_conv2d_dims *d, const struct conv_layout *l, const int8_t *wp, const int32_t *wsum,
		int64_t g, int64_t r0, int64_t r1, const uint8_t *t, const int32_t *koff, const ds_qout *e, char *y)
{
	const int64_t taps = d->kh * d->kw, chunks = l->cg / 4 / l->nc4, p_n = d->oh * d->ow;
	const size_t es = out_size(e), bstride = (size_t)l->plane * 4;
	struct amx_config cfg;
	int32_t acc[32 * TILE_COLS];

	memset(&cfg, 0, sizeof cfg);
	cfg.palette = 1;
	for (int i = 0; i < 4; i++) {
		cfg.colsb[i] = 64;   /* C: 16 int32 columns */
		cfg.rows[i] = 16;
	}
	for (int i = 4; i < 6; i++) {
		cfg.colsb[i] = (uint16_t)(4 * l->nc4);   /* A: 16 filters, nc4 words */
		cfg.rows[i] = 16;
	}
	for (int i = 6; i < 8; i++) {
		cfg.colsb[i] = 64;   /* B: nc4 words of 16 columns */
		cfg.rows[i] = (uint8_t)l->nc4;
	}
	_tile_loadconfig(&cfg);
	for (int64_t q0 = 0; q0 < l->qn; q0 += TILE_COLS) {
		struct seg sg[TILE_COLS];
		int nseg;

		if (q0 / l->pw >= d->oh)
			break;
		nseg = direct_segments(d, l, q0, sg);
		for (int64_t r = r0; r < r1; r += 32) {
			const int two = r1 - r > 16;
			const int8_t *wr = wp + r * l->kp;
			const uint8_t *base = t + q0 * 4;

			_tile_zero(0);
			_tile_zero(1);
			_tile_zero(2);
			_tile_zero(3);
			for (int64_t tap = 0; tap < taps; tap++)
				for (int64_t ch = 0; ch < chunks; ch++) {
					const int64_t k4 = tap * (l->cg / 4) + ch * l->nc4;
					const uint8_t *b = base + koff[k4];

					_tile_loadd(4, wr + k4 * 4, l->kp);
					_tile_loadd(6, b, bstride);
					_tile_loadd(7, b + 64, bstride);
					_tile_dpbsud(0, 4, 6);
					_tile_dpbsud(1, 4, 7);
					if (two) {
						_tile_loadd(5, wr + 16 * l->kp + k4 * 4, l->kp);
						_tile_dpbsud(2, 5, 6);
						_tile_dpbsud(3, 5, 7);
					}
				}
			_tile_stored(0, acc, TILE_COLS * 4);
			_tile_stored(1, acc + 16, TILE_COLS * 4);
			_tile_stored(2, acc + 16 * TILE_COLS, TILE_COLS * 4);
			_tile_stored(3, acc + 16 * TILE_COLS + 16, TILE_COLS * 4);
			if (e->u8) {
				direct_rows_codes(acc, r1 - r < 32 ? r1 - r : 32, e, wsum + r, g * l->og + r, sg, nseg,
						  (uint8_t *)y + (size_t)(r * p_n), p_n);
				continue;
			}
			for (int64_t i = 0; i < 32 && r + i < r1; i++)
				direct_row_out(_mm512_loadu_si512(acc + i * TILE_COLS),
					       _mm512_loadu_si512(acc + i * TILE_COLS + 16), e, wsum[r + i],
					       g * l->og + r + i, sg, nseg, y + (size_t)((r + i) * p_n) * es);
		}
	}
	_tile_release();
}

/* C = W U on AMX for im2col panels (each panel [kp / 4][16][4], so that 16
 * words of k are one B tile 64 bytes a row): rows of 16 filters by blocks
 * of 32 columns, k in steps of 64 bytes and one step of the rest, each
 * step's A in its own tile so the configuration holds for the whole call;
 * then epi_vnni.  w has rows up to a multiple of 16 (zero past rows). */
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl"))) static void
gemm_amx(const ds_qout *e, const int8_t *w, const int32_t *wsum, int64_t o0, int64_t rows, int64_t kp,
	 const uint8_t *u, int64_t cols, char *y, int64_t so)
{
	const int64_t kfull = kp / 64 * 64, rem = kp - kfull;
	const size_t es = out_size(e);
	struct amx_config cfg;
	int32_t acc[16 * TILE_COLS];

	memset(&cfg, 0, sizeof cfg);
	cfg.palette = 1;
	for (int i = 0; i < 2; i++) {
		cfg.colsb[i] = 64;   /* C */
		cfg.rows[i] = 16;
	}
	cfg.colsb[4] = 64;           /* A, a full step */
	cfg.rows[4] = 16;
	for (int i = 6; i < 8; i++) {
		cfg.colsb[i] = 64;   /* B, a full step */
		cfg.rows[i] = 16;
	}
	if (rem) {
		cfg.colsb[5] = (uint16_t)rem;   /* A, the rest */
		cfg.rows[5] = 16;
		for (int i = 2; i < 4; i++) {
			cfg.colsb[i] = 64;      /* B, the rest */
			cfg.rows[i] = (uint8_t)(rem / 4);
		}
	}
	_tile_loadconfig(&cfg);
	for (int64_t p = 0; p < cols; p += TILE_COLS) {
		const uint8_t *p0 = u + (size_t)(p * kp), *p1 = p0 + (size_t)(16 * kp);

		for (int64_t r = 0; r < rows; r += 16) {
			const int8_t *wr = w + r * kp;

			_tile_zero(0);
			_tile_zero(1);
			for (int64_t k = 0; k < kfull; k += 64) {
				_tile_loadd(4, wr + k, kp);
				_tile_loadd(6, p0 + k * 16, 64);
				_tile_loadd(7, p1 + k * 16, 64);
				_tile_dpbsud(0, 4, 6);
				_tile_dpbsud(1, 4, 7);
			}
			if (rem) {
				_tile_loadd(5, wr + kfull, kp);
				_tile_loadd(2, p0 + kfull * 16, 64);
				_tile_loadd(3, p1 + kfull * 16, 64);
				_tile_dpbsud(0, 5, 2);
				_tile_dpbsud(1, 5, 3);
			}
			_tile_stored(0, acc, TILE_COLS * 4);
			_tile_stored(1, acc + 16, TILE_COLS * 4);
			epi_vnni(acc, e, wsum + r, o0 + r, rows - r < 16 ? rows - r : 16,
				 cols - p < TILE_COLS ? cols - p : TILE_COLS, y + (size_t)(r * so + p) * es, so);
		}
	}
	_tile_release();
}
#endif

/* Packed filters kept from one call to the next in the workspace: a plan
 * that runs by chunks of a few items gives each node its own workspace,
 * and repacking the filters on every chunk cost more than the products of
 * some layers.  A workspace may also be shared with other nodes (the
 * arena of a plan run node by node), so a hit needs the same filter
 * pointer and layout, the same fingerprint of the filters and the same
 * fingerprint of the packed bytes: anything written over them, or filters
 * changed in place, repacks. */
struct wcache {
	const int8_t *w;
	int64_t kp, rp, groups, direct;
	uint64_t wfp, pfp;
	uint64_t pad;
};

_Static_assert(sizeof(struct wcache) <= ALIGN, "struct wcache fits in front of the packed filters");

#ifdef DS_HAVE_VNNI_BUILD
/* Four chains of 8 lanes, each h += (word ^ key) low 32 bits times its
 * high 32 bits, + word: one vpmuludq per 64 bytes and no long dependency
 * (the multiply-xorshift chain this replaces ran at 4 bytes a cycle, as
 * long as an AMX layer's products).  Any change of a word moves its lane
 * by the change itself unless the product moves by exactly the opposite.
 * The lanes are folded through a multiply-xorshift at the end. */
__attribute__((target("avx512f,avx512bw,avx512dq"))) static uint64_t fingerprint(const void *p, size_t n)
{
	const char *b = p;
	const __m512i key = _mm512_set_epi64(0x9e3779b97f4a7c15LL, 0xc2b2ae3d27d4eb4fLL, 0x165667b19e3779f9LL,
					     0x27d4eb2f165667c5LL, 0x85ebca77c2b2ae63LL, 0x94d049bb133111ebLL,
					     0xbf58476d1ce4e5b9LL, 0xff51afd7ed558ccdLL);
	__m512i h[4] = { key, _mm512_srli_epi64(key, 7), _mm512_slli_epi64(key, 3), _mm512_srli_epi64(key, 13) };
	uint64_t lanes[8], r = n;
	size_t i = 0;

	for (; i + 256 <= n; i += 256)
		for (int j = 0; j < 4; j++) {
			__m512i wd = _mm512_loadu_si512(b + i + 64 * j), x = _mm512_xor_si512(wd, key);

			h[j] = _mm512_add_epi64(h[j], _mm512_add_epi64(_mm512_mul_epu32(x, _mm512_srli_epi64(x, 32)), wd));
		}
	for (int j = 0; i < n; i += 64, j = (j + 1) % 4) {
		__m512i wd = n - i >= 64 ? _mm512_loadu_si512(b + i)
					 : _mm512_maskz_loadu_epi8(((__mmask64)1 << (n - i)) - 1, b + i);
		__m512i x = _mm512_xor_si512(wd, key);

		h[j] = _mm512_add_epi64(h[j], _mm512_add_epi64(_mm512_mul_epu32(x, _mm512_srli_epi64(x, 32)), wd));
	}
	_mm512_storeu_si512(lanes, _mm512_xor_si512(_mm512_add_epi64(h[0], _mm512_slli_epi64(h[1], 1)),
						   _mm512_add_epi64(h[2], _mm512_srli_epi64(h[3], 1))));
	for (int j = 0; j < 8; j++)
		r = (r ^ lanes[j] ^ (r >> 31)) * 0xc4ceb9fe1a85ec53ULL;
	return r;
}
#endif

uint64_t ds_qfingerprint(const void *p, size_t n)
{
#ifdef DS_HAVE_VNNI_BUILD
	if (has_avx512bw() && __builtin_cpu_supports("avx512dq"))
		return fingerprint(p, n);
#endif
	/* FNV-1a where the vector form cannot run. */
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ULL;
	return h;
}

static uint64_t packed_fingerprint(const void *ws, const struct conv_layout *l, const ds_conv2d_dims *d)
{
#ifdef DS_HAVE_VNNI_BUILD
	return fingerprint((const char *)ws + l->wp_off, l->wsum_off - l->wp_off + (size_t)d->o * sizeof(int32_t));
#else
	(void)ws;
	(void)l;
	(void)d;
	return 0;
#endif
}

/* Only the VNNI path keeps its filters: fingerprints need AVX-512. */
static int wcache_hit(const void *ws, const struct conv_layout *l, const ds_conv2d_dims *d, const int8_t *w)
{
	struct wcache c;

	if (!ds_qgemm_vnni())
		return 0;
	memcpy(&c, ws, sizeof c);
	if (c.w != w || c.kp != l->kp || c.rp != l->rp || c.groups != d->groups || c.direct != (l->direct | l->amx << 4))
		return 0;
#ifdef DS_HAVE_VNNI_BUILD
	if (c.wfp != fingerprint(w, (size_t)(d->o * l->k)))
		return 0;
#endif
	return c.pfp == packed_fingerprint(ws, l, d);
}

static void wcache_store(void *ws, const struct conv_layout *l, const ds_conv2d_dims *d, const int8_t *w)
{
	struct wcache c = { .w = w, .kp = l->kp, .rp = l->rp, .groups = d->groups, .direct = l->direct | l->amx << 4 };

	if (!ds_qgemm_vnni()) {
		c.w = NULL;
	} else {
#ifdef DS_HAVE_VNNI_BUILD
		c.wfp = fingerprint(w, (size_t)(d->o * l->k));
#endif
		c.pfp = packed_fingerprint(ws, l, d);
	}
	memcpy(ws, &c, sizeof c);
}

/* The depthwise form on VNNI: each padded input row becomes words of the
 * kw <= 4 taps along it that one output reads (the kx form again, one
 * word per output column), so that a 3x3 filter is 3 vpdpbusd per 16
 * outputs.  Per thread: one padded row, then the words of every row. */
struct dw_layout {
	int64_t ph, owp, row;        /* padded rows, words a row, padded row bytes */
	size_t words_off, slice;
};

static int dw_form(const ds_conv2d_dims *d, struct dw_layout *l)
{
	int64_t pw;

	if (d->kw > 4)
		return 0;
	padded_extent(d, &l->ph, &pw);
	l->owp = (int64_t)up((size_t)d->ow, 16);
	l->row = l->owp * d->sw + (d->kw - 1) * d->dw + 64;
	l->row = l->row > pw + 64 ? l->row : pw + 64;
	l->words_off = up((size_t)l->row, ALIGN);
	l->slice = l->words_off + up((size_t)(l->ph * l->owp * 4), ALIGN);
	return 1;
}

/* A 1x1 convolution at stride s reads every s-th position of every s-th
 * row: those are gathered first, behind the stride-1 workspace, and the
 * stride-1 kernels (the direct form, AMX) do the rest.  Through im2col
 * panels resnet-s's downsample layers ran at 64-107 GOP/s. */
static int subsampled(const ds_conv2d_dims *d, ds_conv2d_dims *s1)
{
	if (d->kh != 1 || d->kw != 1 || d->ph || d->pw || (d->sh == 1 && d->sw == 1) || d->pool || is_depthwise(d))
		return 0;
	*s1 = *d;
	s1->h = d->oh;
	s1->w = d->ow;
	s1->sh = s1->sw = 1;
	return 1;
}

#ifdef DS_HAVE_VNNI_BUILD
/* Every other byte of a row of 2 n (n <= 32), by one byte permute. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) static void evens(const uint8_t *src, int64_t n,
									  uint8_t *dst)
{
	const __m512i idx = _mm512_set_epi8(63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
					    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 62, 60, 58, 56,
					    54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22, 20,
					    18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const int64_t in = 2 * n - 1;   /* the last odd byte may lie past the row */
	__m512i b = _mm512_maskz_loadu_epi8(in >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << in) - 1, src);

	_mm256_mask_storeu_epi8(dst, (__mmask32)(((uint64_t)1 << n) - 1),
				_mm512_castsi512_si256(_mm512_permutexvar_epi8(idx, b)));
}
#endif

/* Positions (oy sh, ox sw) of every plane into xs, [n][c][oh][ow]. */
static void gather_strided(const ds_conv2d_dims *d, const uint8_t *x, uint8_t *xs)
{
	int vbmi = 0;

#ifdef DS_HAVE_VNNI_BUILD
	vbmi = d->sw == 2 && d->ow <= 32 && __builtin_cpu_supports("avx512vbmi");
#endif
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (d->n * d->c >= 8)
	for (int64_t nc = 0; nc < d->n * d->c; nc++)
		for (int64_t oy = 0; oy < d->oh; oy++) {
			const uint8_t *src = x + (nc * d->h + oy * d->sh) * d->w;
			uint8_t *dst = xs + (nc * d->oh + oy) * d->ow;

#ifdef DS_HAVE_VNNI_BUILD
			if (vbmi) {
				evens(src, d->ow, dst);
				continue;
			}
#endif
			for (int64_t ox = 0; ox < d->ow; ox++)
				dst[ox] = src[ox * d->sw];
		}
}

/* A fused pool that the layer's kernel does not take itself: the layer
 * into the front of the workspace, then the pool from there. */
static size_t unpooled_bytes(const ds_conv2d_dims *d)
{
	return up((size_t)(d->n * d->o * d->oh * d->ow) * sizeof(float), ALIGN);
}

static void forward_then_pool(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			      void *ws)
{
	ds_conv2d_dims u = *d;
	ds_pool_dims p = { .n = d->n, .c = d->o, .h = d->oh, .w = d->ow, .kh = 2, .kw = 2, .sh = 2, .sw = 2,
			   .oh = d->oh / 2, .ow = d->ow / 2 };

	u.pool = 0;
	ds_qconv2d_forward(&u, x, w, e, ws, (char *)ws + unpooled_bytes(d));
	if (e->u8)
		ds_qmax_pool_forward(&p, ws, y);
	else
		ds_max_pool_forward(&p, ws, y, NULL);
}

static size_t conv_workspace(const ds_conv2d_dims *d)
{
	struct conv_layout a, b;
	struct dw_layout dl;
	ds_conv2d_dims s1;

	if (d->pool && ds_qconv2d_one3_fits(d))
		return ds_qconv2d_one3_workspace(d);
	if (d->pool) {
		s1 = *d;
		s1.pool = 0;
		return unpooled_bytes(d) + ds_qconv2d_workspace(&s1);
	}
	if (ds_qconv2d_dwq_fits(d)) {
		/* dw3 or the words form when ds_qgemm_force takes VNNI away */
		size_t dwq = ds_qconv2d_dwq_workspace(d), other = ds_qconv2d_dw3_fits(d) ? ds_qconv2d_dw3_workspace(d)
							: dw_form(d, &dl) ? dl.slice * (size_t)ds_kernel_threads() : 0;

		return dwq > other ? dwq : other;
	}
	if (is_depthwise(d) && ds_qconv2d_dw3_fits(d))
		return ds_qconv2d_dw3_workspace(d);
	if (is_depthwise(d))
		return dw_form(d, &dl) ? dl.slice * (size_t)ds_kernel_threads() : 0;
	if (subsampled(d, &s1))
		return up(ds_qconv2d_workspace(&s1), ALIGN) + (size_t)(d->n * d->c * d->oh * d->ow);
	/* Room for any micro-kernel's layout (ds_qgemm_force may switch). */
	conv_layout(d, 0, 0, &a);
	for (int amx = 0; amx < 2; amx++) {
		conv_layout(d, 1, amx, &b);
		if (b.slice_off + b.slice * (size_t)b.threads > a.slice_off + a.slice * (size_t)a.threads)
			a = b;
	}
	if (ds_qconv2d_one3_fits(d) && ds_qconv2d_one3_workspace(d) > a.slice_off + a.slice * (size_t)a.threads)
		return ds_qconv2d_one3_workspace(d);
	if (ds_qconv2d_pxq_workspace(d) > a.slice_off + a.slice * (size_t)a.threads)
		return ds_qconv2d_pxq_workspace(d);
	return a.slice_off + a.slice * (size_t)a.threads;
}

/* The kernels' scratch, then the epilogue of each output channel. */
size_t ds_qconv2d_workspace(const ds_conv2d_dims *d)
{
	return up(conv_workspace(d), ALIGN) + up((size_t)d->o * sizeof(ds_qcode), ALIGN);
}

/* e with its table of codes, made at code when it has none; sums of taps
 * products.  The clamp of a code to [lo, hi] rounds to what the signed
 * then unsigned saturation of the rounded value (vpackssdw, vpackuswb)
 * gives when lo <= 0.5 and hi >= 254.5 (round(lo) = 0, round(hi) = 255)
 * and no value reaches 2^31, where vcvtps2dq would wrap (|sum| <= taps
 * 255 128): then the kernels may leave out the clamp, two of a code's
 * few instructions. */
static const ds_qout *with_codes(const ds_qout *e, int64_t o, int64_t taps, ds_qcode *code, ds_qout *copy)
{
	if (!e->u8 || e->code)
		return e;
	*copy = *e;
	copy->code = code;
	copy->saturate = 1;
	for (int64_t i = 0; i < o; i++) {
		code[i] = ds_qcode_of(e, i);
		copy->saturate &= code[i].lo <= 0.5f && code[i].hi >= 254.5f &&
				  fabs((double)code[i].m) * 32640.0 * (double)taps + fabs((double)code[i].b) < 1073741824.0;
	}
	return copy;
}

/* Depthwise filters are 9 or 25 taps: direct loops beat any packing. */
static void depthwise(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y)
{
	int32_t zp = e->x_zero_point;

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t nc = 0; nc < d->n * d->c; nc++) {
		int64_t c = nc % d->c;
		const uint8_t *xc = x + nc * d->h * d->w;
		const int8_t *wc = w + c * d->kh * d->kw;
		const ds_qcode code = e->u8 ? e->code[c] : (ds_qcode){ 0 };

		for (int64_t oy = 0; oy < d->oh; oy++)
			for (int64_t ox = 0; ox < d->ow; ox++) {
				int32_t acc = 0;
				int64_t at = (nc * d->oh + oy) * d->ow + ox;

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
				if (e->u8)
					((uint8_t *)y)[at] = ds_qcode_at(&code, acc);
				else
					((float *)y)[at] = ds_qout_real(e, c, acc);
			}
	}
}

#ifdef DS_HAVE_VNNI_BUILD
/* Words of row r of one channel plane xc into wr (owp of them). */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void dw_words(const ds_conv2d_dims *d,
									  const struct dw_layout *l,
									  const uint8_t *xc, int64_t r, uint8_t zp,
									  uint8_t *prow, uint32_t *wr)
{
	int64_t iy = r - d->ph;

	if (d->sw <= 2) {
		/* Straight from the image row with masked loads that read the
		 * zero point where the padding is: the padded copy of each row
		 * (a memset and a memcpy of a few bytes) took a third of
		 * mobilenet-s's INT8 batch. */
		const uint8_t *src = iy >= 0 && iy < d->h ? xc + iy * d->w : NULL;
		const __m512i lo8 = _mm512_set1_epi32(0xff);
		const __m256i fill = _mm256_set1_epi8((char)zp);

		for (int64_t ox = 0; ox < l->owp; ox += 16) {
			__m512i word = _mm512_set1_epi32((int32_t)((uint32_t)zp * 0x01010101u));

			for (int64_t j = 0; src && j < d->kw; j++) {
				/* Bytes [b0, b0 + 16 sw) of the row; those outside [0, w)
				 * are padding. */
				int64_t b0 = ox * d->sw + j * d->dw - d->pw, n = 16 * d->sw;
				int64_t lo = b0 < 0 ? -b0 : 0, hi = d->w - b0 < n ? d->w - b0 : n;
				__mmask32 m = hi > lo ? (__mmask32)((hi - lo >= 32 ? 0xffffffffu : (1u << (hi - lo)) - 1) << lo)
						      : 0;
				/* b0 may be before the row: only the masked lanes are
				 * read, and the address is formed as an integer. */
				__m256i bytes = _mm256_mask_loadu_epi8(fill, m, (const void *)((uintptr_t)src + (uintptr_t)b0));
				__m512i b = d->sw == 1 ? _mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes))
						       : _mm512_and_si512(_mm512_cvtepu16_epi32(bytes), lo8);

				word = _mm512_and_si512(word, _mm512_set1_epi32((int32_t)~(0xffu << (8 * j))));
				word = _mm512_or_si512(word, _mm512_slli_epi32(b, (unsigned)(8 * j)));
			}
			_mm512_storeu_si512(wr + ox, word);
		}
		return;
	}
	memset(prow, zp, (size_t)l->row);
	if (iy >= 0 && iy < d->h) {
		int64_t n = d->w < l->row - d->pw ? d->w : l->row - d->pw;

		memcpy(prow + d->pw, xc + iy * d->w, (size_t)n);
	}
	for (int64_t ox = 0; ox < l->owp; ox++) {
		uint32_t word = 0;

		for (int64_t j = 0; j < 4; j++)
			word |= (uint32_t)(j < d->kw ? prow[ox * d->sw + j * d->dw] : zp) << (8 * j);
		wr[ox] = word;
	}
}

__attribute__((target("avx512f,avx512vnni"))) static void dw_row(const uint32_t *words, int64_t owp,
								 const int64_t *rows, int64_t kh, const int32_t *wword,
								 int64_t ox, int32_t *acc)
{
	__m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();

	for (int64_t ky = 0; ky < kh; ky++) {
		const uint32_t *a = words + rows[ky] * owp + ox;
		__m512i b = _mm512_set1_epi32(wword[ky]);

		c0 = _mm512_dpbusd_epi32(c0, _mm512_loadu_si512(a), b);
		if (ox + 16 < owp)
			c1 = _mm512_dpbusd_epi32(c1, _mm512_loadu_si512(a + 16), b);
	}
	_mm512_storeu_si512(acc, c0);
	_mm512_storeu_si512(acc + 16, c1);
}

static void depthwise_vnni(const ds_conv2d_dims *d, const struct dw_layout *l, const uint8_t *x, const int8_t *w,
			   const ds_qout *e, void *y, void *ws)
{
	size_t es = out_size(e);

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (d->n * d->c * d->oh * d->ow >= (1 << 15))
	for (int64_t nc = 0; nc < d->n * d->c; nc++) {
		int t = 0;
		int64_t c = nc % d->c, rows[64];
		const int8_t *wc = w + c * d->kh * d->kw;
		int32_t wword[64], wsum = 0, acc[TILE_COLS];
		uint8_t *slice, zp = (uint8_t)e->x_zero_point;
		uint32_t *words;

#ifdef _OPENMP
		t = omp_get_thread_num();
#endif
		slice = (uint8_t *)ws + l->slice * (size_t)t;
		words = (uint32_t *)(slice + l->words_off);
		for (int64_t ky = 0; ky < d->kh; ky++) {
			uint8_t b[4] = { 0, 0, 0, 0 };

			for (int64_t kx = 0; kx < d->kw; kx++) {
				b[kx] = (uint8_t)wc[ky * d->kw + kx];
				wsum += wc[ky * d->kw + kx];
			}
			memcpy(&wword[ky], b, 4);
		}
		for (int64_t r = 0; r < l->ph; r++)
			dw_words(d, l, x + nc * d->h * d->w, r, zp, slice, words + r * l->owp);
		for (int64_t oy = 0; oy < d->oh; oy++) {
			for (int64_t ky = 0; ky < d->kh; ky++)
				rows[ky] = oy * d->sh + ky * d->dh;
			for (int64_t ox = 0; ox < d->ow; ox += TILE_COLS) {
				int64_t n = d->ow - ox < TILE_COLS ? d->ow - ox : TILE_COLS;

				dw_row(words, l->owp, rows, d->kh, wword, ox, acc);
				epi_vnni(acc, e, &wsum, c, 1, n, (char *)y + (size_t)((nc * d->oh + oy) * d->ow + ox) * es,
					 0);
			}
		}
	}
}
#endif

void ds_qconv2d_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			void *ws)
{
	struct conv_layout l;
	tile_fn tile = pick_tile();
	int8_t *wp;
	int32_t *wsum;
	int64_t p_n = d->oh * d->ow, rtiles, parts;
	size_t es = out_size(e);
	ds_qout copy;

	e = with_codes(e, d->o, d->c / d->groups * d->kh * d->kw, (ds_qcode *)((char *)ws + up(conv_workspace(d), ALIGN)),
		       &copy);

	if (tile != tile_portable && ds_qconv2d_dwq_fits(d)) {
		ds_qconv2d_dwq_forward(d, x, w, e, y, ws);
		return;
	}
	if (is_depthwise(d) && ds_qconv2d_dw3_fits(d)) {
		ds_qconv2d_dw3_forward(d, x, w, e, y, ws);
		return;
	}
	/* A pooled one3 layer runs there on any micro-kernel: its workspace
	 * has no room for the unpooled output. */
	if (ds_qconv2d_one3_fits(d) && (tile != tile_portable || d->pool)) {
		ds_qconv2d_one3_forward(d, x, w, e, y, ws);
		return;
	}
	if (d->pool) {
		forward_then_pool(d, x, w, e, y, ws);
		return;
	}
	{
		ds_conv2d_dims s1;

		if (subsampled(d, &s1)) {
			uint8_t *xs = (uint8_t *)ws + up(ds_qconv2d_workspace(&s1), ALIGN);

			gather_strided(d, x, xs);
			ds_qconv2d_forward(&s1, xs, w, e, y, ws);
			return;
		}
	}
	if (is_depthwise(d)) {
#ifdef DS_HAVE_VNNI_BUILD
		struct dw_layout dl;

		if (tile == tile_vnni && d->kh <= 64 && dw_form(d, &dl)) {
			depthwise_vnni(d, &dl, x, w, e, y, ws);
			return;
		}
#endif
		depthwise(d, x, w, e, y);
		return;
	}
	/* At least an image a thread: it shares out images only. */
	if (e->u8 && ds_qconv2d_pxq_fits(d) && d->n >= ds_kernel_threads()) {
		ds_qconv2d_pxq_forward(d, x, w, e, y, ws);
		return;
	}
	conv_layout(d, tile != tile_portable, ds_qgemm_amx(), &l);
	wp = (int8_t *)ws + l.wp_off;
	wsum = (int32_t *)((char *)ws + l.wsum_off);
	if (wcache_hit(ws, &l, d, w))
		goto packed;
	for (int64_t g = 0; g < d->groups; g++) {
		if (l.direct == 2)
			pack_w_kx(w + g * l.og * l.k, l.og, l.cg * d->kh, d->kw, wp + g * l.rp * l.kp, wsum + g * l.og);
		else if (l.hwc)
			pack_w_hwc(w + g * l.og * l.k, l.og, l.rp, l.cg, d->kh * d->kw, wp + g * l.rp * l.kp, wsum + g * l.og);
		else
			pack_w(w + g * l.og * l.k, l.og, l.k, l.kp, wp + g * l.rp * l.kp, wsum + g * l.og);
	}
	wcache_store(ws, &l, d, w);
packed:
	/* Fewer images and groups than threads (a batch of 1): the output
	 * channels are shared out too, each part packing its own input. */
	rtiles = l.rp / l.rt;
	parts = d->n * d->groups < l.threads ? (l.threads < rtiles ? l.threads : rtiles) : 1;
#pragma omp parallel for schedule(static) num_threads(l.threads) if (d->n * d->o * p_n * l.k >= (1 << 18))
	for (int64_t item = 0; item < d->n * d->groups * parts; item++) {
		int t = 0;
		int64_t ng = item / parts, part = item % parts, n = ng / d->groups, g = ng % d->groups;
		int64_t r0 = rtiles * part / parts * l.rt, r1 = rtiles * (part + 1) / parts * l.rt;
		uint8_t *u;

#ifdef _OPENMP
		t = omp_get_thread_num();
#endif
		u = (uint8_t *)ws + l.slice_off + l.slice * (size_t)t;
#ifdef DS_HAVE_VNNI_BUILD
		if (l.direct) {
			pack_direct(d, &l, x + n * d->c * d->h * d->w, g * l.cg, (uint8_t)e->x_zero_point, u,
				    (int32_t *)(u + l.koff_off));
#ifdef DS_HAVE_AMX_BUILD
			if (l.amx) {
				conv_direct_amx(d, &l, wp + g * l.rp * l.kp, wsum + g * l.og, g, r0,
						r1 < l.og ? r1 : l.og, u, (int32_t *)(u + l.koff_off), e,
						(char *)y + (size_t)((n * d->o + g * l.og) * p_n) * es);
				continue;
			}
#endif
			conv_direct(d, &l, wp + g * l.rp * l.kp, wsum + g * l.og, g, r0, r1 < l.og ? r1 : l.og, u,
				    (int32_t *)(u + l.koff_off), e, (char *)y + (size_t)((n * d->o + g * l.og) * p_n) * es);
			continue;
		}
#endif
		r1 = r1 < l.og ? r1 : l.og;
		pack_im2col_padded(d, x + n * d->c * d->h * d->w, g * l.cg, l.cg, l.kp, l.pp, (uint8_t)e->x_zero_point,
				   l.hwc, u + l.pad_off, (int32_t *)(u + l.off_off),
				   l.hwc && tile != tile_portable ? u + l.tmp_off : NULL, u);
#ifdef DS_HAVE_AMX_BUILD
		if (l.amx) {
			gemm_amx(e, wp + (g * l.rp + r0) * l.kp, wsum + g * l.og + r0, g * l.og + r0, r1 - r0, l.kp, u, p_n,
				 (char *)y + (size_t)((n * d->o + g * l.og + r0) * p_n) * es, p_n);
			continue;
		}
#endif
		gemm_packed(tile, e, wp + (g * l.rp + r0) * l.kp, NULL, l.rp - r0, wsum + g * l.og + r0, g * l.og + r0,
			    r1 - r0, l.kp, u, p_n, (char *)y + (size_t)((n * d->o + g * l.og + r0) * p_n) * es, p_n, 1);
	}
}

/* One output of the convolution's own grid, as it is stored: the code (as
 * a float) or the float. */
static float ref_at(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, int64_t n,
		    int64_t o, int64_t oy, int64_t ox)
{
	int64_t cg = d->c / d->groups, g = o / (d->o / d->groups);
	int32_t acc = 0;

	for (int64_t c = 0; c < cg; c++)
		for (int64_t ky = 0; ky < d->kh; ky++)
			for (int64_t kx = 0; kx < d->kw; kx++) {
				int64_t iy = oy * d->sh - d->ph + ky * d->dh;
				int64_t ix = ox * d->sw - d->pw + kx * d->dw;
				int32_t q;

				if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w)
					continue;
				q = x[((n * d->c + g * cg + c) * d->h + iy) * d->w + ix];
				acc += (q - e->x_zero_point) * w[((o * cg + c) * d->kh + ky) * d->kw + kx];
			}
	if (e->u8) {
		ds_qcode c = ds_qcode_of(e, o);

		return (float)ds_qcode_at(&c, acc);
	}
	return ds_qout_real(e, o, acc);
}

void ds_qconv2d_forward_ref(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y)
{
	const int64_t k = d->pool ? 2 : 1, oh = d->oh / k, ow = d->ow / k;

	for (int64_t n = 0; n < d->n; n++)
		for (int64_t o = 0; o < d->o; o++)
			for (int64_t py = 0; py < oh; py++)
				for (int64_t px = 0; px < ow; px++) {
					int64_t at = ((n * d->o + o) * oh + py) * ow + px;
					float v = ref_at(d, x, w, e, n, o, k * py, k * px);

					for (int64_t j = 1; j < k * k; j++) {
						float u = ref_at(d, x, w, e, n, o, k * py + j / k, k * px + j % k);

						v = u > v ? u : v;
					}
					if (e->u8)
						((uint8_t *)y)[at] = (uint8_t)v;
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
	return up(l.slice_off + l.slice * (size_t)l.threads, ALIGN) + up((size_t)out * sizeof(ds_qcode), ALIGN);
}

#ifdef DS_HAVE_VNNI_BUILD
/* A dense layer as dot products, lanes along k: rows of x and of w are
 * both contiguous, so nothing is packed and no 32-column tile is wasted on
 * the few rows a chunk or a batch of 1 brings.  Block of 4 outputs by 4
 * input rows; rows past the real ones repeat the last real row and are
 * dropped.  acc[i * 4 + j] gets row i0 + i against output o0 + j, and
 * wsum[j] the sum of filter o0 + j. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void dot_block_vnni(int64_t in, const uint8_t *x,
										  int64_t ni, const int8_t *w,
										  int64_t no, int with_sum,
										  int32_t *acc, int32_t *wsum)
{
	const uint8_t *xr[4];
	const int8_t *wr[4];
	__m512i c[4][4], s[4];
	__m512i ones = _mm512_set1_epi8(1);
	int64_t k = 0;
	__mmask64 tail = in % 64 ? ((__mmask64)1 << (in % 64)) - 1 : 0;

	for (int i = 0; i < 4; i++) {
		xr[i] = x + (i < ni ? i : ni - 1) * in;
		wr[i] = w + (i < no ? i : no - 1) * in;
		s[i] = _mm512_setzero_si512();
		for (int j = 0; j < 4; j++)
			c[i][j] = _mm512_setzero_si512();
	}
	for (; k + 64 <= in; k += 64) {
		__m512i b[4];

		for (int j = 0; j < 4; j++) {
			b[j] = _mm512_loadu_si512(wr[j] + k);
			if (with_sum)
				s[j] = _mm512_dpbusd_epi32(s[j], ones, b[j]);
		}
#pragma GCC unroll 4
		for (int i = 0; i < 4; i++) {
			__m512i a = _mm512_loadu_si512(xr[i] + k);

			for (int j = 0; j < 4; j++)
				c[i][j] = _mm512_dpbusd_epi32(c[i][j], a, b[j]);
		}
	}
	if (tail) {
		__m512i b[4];

		for (int j = 0; j < 4; j++) {
			b[j] = _mm512_maskz_loadu_epi8(tail, wr[j] + k);
			if (with_sum)
				s[j] = _mm512_dpbusd_epi32(s[j], ones, b[j]);
		}
		for (int i = 0; i < 4; i++) {
			__m512i a = _mm512_maskz_loadu_epi8(tail, xr[i] + k);

			for (int j = 0; j < 4; j++)
				c[i][j] = _mm512_dpbusd_epi32(c[i][j], a, b[j]);
		}
	}
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++)
			acc[i * 4 + j] = _mm512_reduce_add_epi32(c[i][j]);
	if (with_sum)
		for (int j = 0; j < 4; j++)
			wsum[j] = _mm512_reduce_add_epi32(s[j]);
}

/* Outputs [o0, o1) of every row, through e (plain code: the epilogue's
 * arithmetic is the reference's, with no contraction into FMA). */
static void linear_dot(int64_t m, int64_t in, int64_t out, const uint8_t *x, const int8_t *w, const ds_qout *e,
		       void *y, int64_t o0, int64_t o1)
{
	for (int64_t o = o0; o < o1; o += 4) {
		int64_t no = o1 - o < 4 ? o1 - o : 4;
		int32_t wsum[4] = { 0 };
		ds_qcode code[4] = { { 0 } };

		for (int64_t j = 0; j < no && e->u8; j++)
			code[j] = e->code[o + j];

		for (int64_t i = 0; i < m; i += 4) {
			int64_t ni = m - i < 4 ? m - i : 4;
			int32_t acc[16];

			dot_block_vnni(in, x + i * in, ni, w + o * in, no, i == 0, acc, wsum);
			for (int64_t a = 0; a < ni; a++)
				for (int64_t j = 0; j < no; j++) {
					int32_t sum = acc[a * 4 + j] - e->x_zero_point * wsum[j];
					int64_t at = (i + a) * out + o + j;

					if (e->u8)
						((uint8_t *)y)[at] = ds_qcode_at(&code[j], sum);
					else
						((float *)y)[at] = ds_qout_real(e, o + j, sum);
				}
		}
	}
}
#endif

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
	ds_qout copy;

	linear_layout(in, out, &l);
	e = with_codes(e, out, in, (ds_qcode *)((char *)ws + up(l.slice_off + l.slice * (size_t)l.threads, ALIGN)),
		       &copy);
#ifdef DS_HAVE_VNNI_BUILD
	if (tile == tile_vnni) {
		int64_t blocks4 = (out + 3) / 4;
		int threads = ds_kernel_threads();

		/* Small layers (a batch of 1, a chunk) stay on this thread:
		 * waking a team costs more than they do. */
#pragma omp parallel for schedule(static) num_threads(threads) if (m * in * out >= ((int64_t)1 << 20))
		for (int64_t b = 0; b < threads; b++) {
			int64_t o0 = blocks4 * b / threads * 4, o1 = blocks4 * (b + 1) / threads * 4;

			linear_dot(m, in, out, x, w, e, y, o0, o1 < out ? o1 : out);
		}
		return;
	}
#endif
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
		gemm_packed(tile, e, wmain, rfull < l.rp ? wp : NULL, rfull, wsum, 0, out, l.kp, u, n,
			    (char *)y + (size_t)(p0 * out) * es, 1, out);
	}
}

void ds_qlinear_forward_ref(int64_t m, int64_t in, int64_t out, const uint8_t *x, const int8_t *w,
			    const ds_qout *e, void *y)
{
	for (int64_t i = 0; i < m; i++)
		for (int64_t o = 0; o < out; o++) {
			int32_t acc = 0;

			for (int64_t k = 0; k < in; k++)
				acc += ((int32_t)x[i * in + k] - e->x_zero_point) * w[o * in + k];
			if (e->u8) {
				ds_qcode c = ds_qcode_of(e, o);

				((uint8_t *)y)[i * out + o] = ds_qcode_at(&c, acc);
			} else {
				((float *)y)[i * out + o] = ds_qout_real(e, o, acc);
			}
		}
}

/* ----------------------------------------------------------- the others */

#ifdef DS_HAVE_VNNI_BUILD
/* 32 outputs of a 2x2 window from 64 bytes of two rows: the larger of the
 * rows, then of each byte pair (as the two halves of a 16-bit lane). */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
max_pool_2x2_row_avx512(const uint8_t *r0, const uint8_t *r1, int64_t ow, uint8_t *y)
{
	__m512i lo8 = _mm512_set1_epi16(0xff);
	int64_t ox = 0;

	for (; ox < ow; ox += 32) {
		int64_t left = ow - ox < 32 ? ow - ox : 32;
		__mmask64 in = left >= 32 ? ~(__mmask64)0 : ((__mmask64)1 << (2 * left)) - 1;
		__mmask32 out = left >= 32 ? ~(__mmask32)0 : ((__mmask32)1 << left) - 1;
		__m512i v = _mm512_max_epu8(_mm512_maskz_loadu_epi8(in, r0 + 2 * ox), _mm512_maskz_loadu_epi8(in, r1 + 2 * ox));
		__m512i m = _mm512_max_epu16(_mm512_and_si512(v, lo8), _mm512_srli_epi16(v, 8));

		_mm256_mask_storeu_epi8(y + ox, out, _mm512_cvtepi16_epi8(m));
	}
}

/* Planes of rows of at most 32 bytes, every row pooled (h = 2 oh): the
 * rows of p = 64 / 2w row pairs, across planes too, are 2wp bytes in a row
 * and their p ow outputs are too.  A run of them is one load; each byte
 * and the next give their larger, and two permutes pick a window's top
 * and bottom pairs.  By rows, a 14x14 plane was seven calls of seven
 * outputs, 13 cycles each. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) static void
pool_runs(const uint8_t index[3][64], int64_t w, int64_t ow, int64_t p, int64_t pairs, int64_t r0, int64_t r1,
	  const uint8_t *x, uint8_t *y)
{
	const __m512i in = _mm512_loadu_si512(index[0]), it = _mm512_loadu_si512(index[1]);
	const __m512i ib = _mm512_loadu_si512(index[2]);

	for (int64_t r = r0; r < r1; r++) {
		int64_t q = pairs - r * p < p ? pairs - r * p : p;
		__mmask64 load = 2 * w * q >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (2 * w * q)) - 1;
		__mmask64 store = ((__mmask64)1 << (q * ow)) - 1;
		__m512i v = _mm512_maskz_loadu_epi8(load, x + r * p * 2 * w);
		__m512i h = _mm512_max_epu8(v, _mm512_permutexvar_epi8(in, v));

		_mm512_mask_storeu_epi8(y + r * p * ow, store,
					_mm512_max_epu8(_mm512_permutexvar_epi8(it, h), _mm512_permutexvar_epi8(ib, h)));
	}
}

/* Runs a call of pool_runs, which loads its permutes itself: vectors
 * shared into a parallel region crash clang 14. */
#define POOL_RUNS_BLOCK 512

static void max_pool_2x2_runs(const ds_pool_dims *d, const uint8_t *x, uint8_t *y)
{
	const int64_t w = d->w, ow = d->ow, p = 64 / (2 * w), pairs = d->n * d->c * d->oh;
	const int64_t runs = (pairs + p - 1) / p, blocks = (runs + POOL_RUNS_BLOCK - 1) / POOL_RUNS_BLOCK;
	uint8_t index[3][64];   /* the next byte; a window's top pair; its bottom pair */

	for (int k = 0; k < 64; k++) {
		int64_t q = k / ow, ox = k % ow, at = k < p * ow ? q * 2 * w + 2 * ox : 0;

		index[0][k] = (uint8_t)(k < 63 ? k + 1 : 63);
		index[1][k] = (uint8_t)at;
		index[2][k] = (uint8_t)(at + w);
	}
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (d->n * d->c * d->h * w >= (1 << 18))
	for (int64_t b = 0; b < blocks; b++)
		pool_runs((const uint8_t(*)[64])index, w, ow, p, pairs, b * POOL_RUNS_BLOCK,
			  runs < (b + 1) * POOL_RUNS_BLOCK ? runs : (b + 1) * POOL_RUNS_BLOCK, x, y);
}

#endif

/* The common 2x2 window, stride 2, no padding: no bounds to check. */
static void max_pool_2x2(const ds_pool_dims *d, const uint8_t *x, uint8_t *y)
{
#ifdef DS_HAVE_VNNI_BUILD
	if (d->w <= 32 && d->h == 2 * d->oh && has_vbmi()) {
		max_pool_2x2_runs(d, x, y);
		return;
	}
	if (has_avx512bw()) {
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (d->n * d->c * d->h * d->w >= (1 << 18))
		for (int64_t nc = 0; nc < d->n * d->c; nc++)
			for (int64_t oy = 0; oy < d->oh; oy++) {
				const uint8_t *r0 = x + nc * d->h * d->w + 2 * oy * d->w;

				max_pool_2x2_row_avx512(r0, r0 + d->w, d->ow, y + (nc * d->oh + oy) * d->ow);
			}
		return;
	}
#endif
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

ds_qsum ds_qsum_of(float a_scale, int32_t a_zp, float b_scale, int32_t b_zp, float lo, float hi, float y_scale,
		   int32_t y_zp)
{
	const double fa = (double)a_scale / y_scale, fb = (double)b_scale / y_scale;
	const double fc = y_zp - ((double)a_scale * a_zp + (double)b_scale * b_zp) / y_scale;
	const double clo = (double)lo / y_scale + y_zp, chi = (double)hi / y_scale + y_zp;
	ds_qsum s;
	int shift = 24;

	/* ka and kb 16-bit operands of vpmaddwd; c, and so the sum, well
	 * within 31 bits. */
	while (shift > 1 && (ldexp(fa > fb ? fa : fb, shift) >= 32767.0 ||
			     ldexp(fabs(fc) + 1.0, shift) >= 1073741824.0 / 4))
		shift--;
	s.shift = shift;
	s.ka = (int32_t)lrint(ldexp(fa, shift));
	s.kb = (int32_t)lrint(ldexp(fb, shift));
	s.c = (int32_t)(llrint(ldexp(fc, shift)) + (1 << (shift - 1)));
	s.lo = clo > 0.0 ? (int32_t)lrint(clo < 255.0 ? clo : 255.0) : 0;
	s.hi = chi < 255.0 ? (chi > 0.0 ? (int32_t)lrint(chi) : 0) : 255;
	return s;
}

#ifdef DS_HAVE_VNNI_BUILD
/* 64 codes at a time, lane by lane ds_qsum_at: a and b widened to 16-bit
 * pairs (unpacking within 128-bit lanes, which the pack after undoes),
 * one vpmaddwd a pair, an arithmetic shift (a floor), clamped in words,
 * then narrowed; the packs leave 128-bit lane k holding bytes 8k.. of
 * each half, which one qword permute puts in order. */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static int64_t
qadd_avx512(int64_t n, const uint8_t *a, const uint8_t *b, const ds_qsum *s, uint8_t *y)
{
	const __m512i k = _mm512_set1_epi32((int32_t)((uint32_t)(uint16_t)s->ka | (uint32_t)s->kb << 16));
	const __m512i c = _mm512_set1_epi32(s->c), lo = _mm512_set1_epi16((int16_t)s->lo);
	const __m512i hi = _mm512_set1_epi16((int16_t)s->hi), order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
	const __m128i shift = _mm_cvtsi32_si128(s->shift);
	int64_t i = 0;

	for (; i + 64 <= n; i += 64) {
		const __m512i va = _mm512_loadu_si512(a + i), vb = _mm512_loadu_si512(b + i);
		__m512i w[2];

		for (int h = 0; h < 2; h++) {
			__m512i aw = _mm512_cvtepu8_epi16(h ? _mm512_extracti64x4_epi64(va, 1) : _mm512_castsi512_si256(va));
			__m512i bw = _mm512_cvtepu8_epi16(h ? _mm512_extracti64x4_epi64(vb, 1) : _mm512_castsi512_si256(vb));
			__m512i s0 = _mm512_sra_epi32(_mm512_add_epi32(_mm512_madd_epi16(_mm512_unpacklo_epi16(aw, bw), k), c), shift);
			__m512i s1 = _mm512_sra_epi32(_mm512_add_epi32(_mm512_madd_epi16(_mm512_unpackhi_epi16(aw, bw), k), c), shift);

			w[h] = _mm512_min_epi16(_mm512_max_epi16(_mm512_packs_epi32(s0, s1), lo), hi);
		}
		_mm512_storeu_si512(y + i, _mm512_permutexvar_epi64(order, _mm512_packus_epi16(w[0], w[1])));
	}
	return i;
}
#endif

void ds_qadd_forward(int64_t n, const uint8_t *a, const uint8_t *b, const ds_qsum *s, uint8_t *y)
{
	int64_t i = 0;

#ifdef DS_HAVE_VNNI_BUILD
	if (has_avx512bw())
		i = qadd_avx512(n, a, b, s, y);
#endif
	for (; i < n; i++)
		y[i] = ds_qsum_at(s, a[i], b[i]);
}
