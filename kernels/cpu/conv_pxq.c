/* conv_pxq.c - INT8 convolutions of 16 input channels, stride 1 or 2, on AMX
 * with the output pixels as the rows of the tile products.
 *
 * quant.c's direct form makes filters the rows of a product and pixels its
 * columns, so that its input is the planes of words of 4 channels.  With
 * 16 input channels a tap is only 16 bytes of a product's 64, so a 3x3
 * layer takes nine products per tile and loads its pixels nine times
 * (resnet-s's first four layers after conv1: a third of its INT8 time).
 * Here the input is channels-last, so a filter row's kw taps of a pixel
 * are kw * 16 contiguous bytes: a tile of 16 pixels is 16 rows one pixel
 * apart, 3 products a 3x3 layer, and the filters' kh tiles stay loaded
 * for the whole image.  The price is two transposes of 16x16 bytes a
 * block of 16 pixels (byte permutes): the planes into pixels before, the
 * codes back into planes after.
 */
#include "config.h"
#include "cpu/conv.h"
#include "cpu/quant.h"

#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_PXQ_AMX 1
#endif

#define PXQ_C 16
#define PXQ_KH_MAX 3
#define PXQ_KW_MAX 4

static int64_t up64(int64_t n)
{
	return (n + 63) / 64 * 64;
}

/* The padded input: pw columns (a multiple of the stride s); its rows in
 * s phases of phase bytes, row r at r / s of phase r % s, so that for
 * every filter row the pixels a tile reads are s * 16 bytes apart.  Tiles
 * run over qe positions of a grid gw = pw / s wide (q = oy * gw + ox; ox
 * from ow on are computed and dropped), and the 15 a last tile may take
 * past them. */
struct pxq_geom {
	int64_t s, pw, gw, qe, phase, out_bytes, slice;
};

static void pxq_geom(const ds_conv2d_dims *d, struct pxq_geom *g)
{
	g->s = d->sh;
	g->pw = ((d->ow - 1) * g->s + d->kw + g->s - 1) / g->s * g->s;
	g->gw = g->pw / g->s;
	g->qe = d->oh * g->gw;
	g->phase = up64(((g->qe + 16) * g->s + (d->kh - 1) / g->s * g->pw + d->kw) * PXQ_C);
	g->out_bytes = up64((g->qe + 16) * PXQ_C);
	g->slice = g->s * g->phase + g->out_bytes;
}

static int pxq_shape(const ds_conv2d_dims *d)
{
	/* A row of one tap has nothing to gain over the direct form: 1x1
	 * 16 -> 64 at 28x28 took 2.4 times its time here. */
	return d->groups == 1 && d->c == PXQ_C && (d->sh == 1 || d->sh == 2) && d->sw == d->sh && d->dh == 1 &&
	       d->dw == 1 &&
	       d->kh <= PXQ_KH_MAX && d->kw <= PXQ_KW_MAX && d->kh >= 1 && d->kw >= 2 && !d->pool && d->oh > 0 &&
	       d->ow > 0 && d->ph < d->kh && d->pw < d->kw;
}

int ds_qconv2d_pxq_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_PXQ_AMX
	return pxq_shape(d) && ds_qgemm_amx() && __builtin_cpu_supports("avx512vbmi");
#else
	(void)d;
	return 0;
#endif
}

/* The workspace: this header, the packed filters (blocks of 16 filters,
 * kh tiles of kw * 4 rows of 64 bytes), the filters' sums, then a slice a
 * thread.  The packed filters are kept for the next call, checked against
 * fingerprints of the filters and of the packed bytes. */
struct pxq_head {
	uint64_t wfp, pfp;
	int64_t geometry[4];         /* o, kh, kw, c: what the packing depends on */
	int64_t pad[2];
};

_Static_assert(sizeof(struct pxq_head) % 64 == 0, "the filters after struct pxq_head stay aligned");

static int64_t pxq_blocks(const ds_conv2d_dims *d)
{
	return (d->o + 15) / 16;
}

static size_t pxq_filter_bytes(const ds_conv2d_dims *d)
{
	return (size_t)(pxq_blocks(d) * d->kh * d->kw * 4 * 64);
}

size_t ds_qconv2d_pxq_workspace(const ds_conv2d_dims *d)
{
	struct pxq_geom g;

	if (!pxq_shape(d))
		return 0;
	pxq_geom(d, &g);
	return sizeof(struct pxq_head) + pxq_filter_bytes(d) + (size_t)up64(d->o * 4) +
	       (size_t)(g.slice * ds_kernel_threads());
}

/* B of TDPBUSD for filter row ky of block b: row k4 holds, for each of
 * the 16 filters, the 4 bytes k = 4 k4 .. 4 k4 + 3 of the pixel's row of
 * taps, k = kx * 16 + c. */
static void pxq_pack(const ds_conv2d_dims *d, const int8_t *w, int8_t *wp, int32_t *wsum)
{
	const int64_t khw = d->kh * d->kw, rows = d->kw * 4;

	memset(wp, 0, pxq_filter_bytes(d));
	for (int64_t f = 0; f < d->o; f++) {
		int32_t sum = 0;

		for (int64_t ky = 0; ky < d->kh; ky++)
			for (int64_t kx = 0; kx < d->kw; kx++)
				for (int64_t c = 0; c < PXQ_C; c++) {
					int64_t k = kx * PXQ_C + c;
					int8_t v = w[(f * PXQ_C + c) * khw + ky * d->kw + kx];

					wp[((f / 16 * d->kh + ky) * rows + k / 4) * 64 + f % 16 * 4 + k % 4] = v;
					sum += v;
				}
		wsum[f] = sum;
	}
}

#ifdef HAVE_PXQ_AMX
struct pxq_amx_config {
	uint8_t palette, start_row;
	uint8_t reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
};

/* The byte permutes of a 16x16 transpose: rows 4a..4a+3 in z[a] (a row a
 * 128-bit lane) become columns 4b..4b+3 in o[b].  First each pair of
 * inputs gives the 8 rows of 2 groups of 4 columns, then each pair of
 * those all 16 rows of one group. */
struct pxq_perm {
	uint8_t first[2][64], second[2][64];
};

static void pxq_perm_init(struct pxq_perm *p)
{
	for (int half = 0; half < 2; half++)
		for (int g = 0; g < 2; g++)
			for (int j = 0; j < 4; j++)
				for (int r = 0; r < 8; r++)
					p->first[half][g * 32 + j * 8 + r] =
						(uint8_t)(r / 4 * 64 + 16 * (r % 4) + 4 * (2 * half + g) + j);
	for (int g = 0; g < 2; g++)
		for (int j = 0; j < 4; j++)
			for (int r = 0; r < 16; r++)
				p->second[g][16 * j + r] = (uint8_t)(r / 8 * 64 + g * 32 + j * 8 + r % 8);
}

static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vbmi"))) void
pxq_transpose(const struct pxq_perm *p, const __m512i z[4], __m512i o[4])
{
	__m512i f[2][2];

	for (int half = 0; half < 2; half++) {
		const __m512i idx = _mm512_loadu_si512(p->first[half]);

		f[half][0] = _mm512_permutex2var_epi8(z[0], idx, z[1]);
		f[half][1] = _mm512_permutex2var_epi8(z[2], idx, z[3]);
	}
	for (int b = 0; b < 4; b++)
		o[b] = _mm512_permutex2var_epi8(f[b / 2][0], _mm512_loadu_si512(p->second[b % 2]), f[b / 2][1]);
}

/* One image's 16 planes into the padded channels-last rows: 16 pixels a
 * transpose. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vbmi"))) void
pxq_pack_input(const ds_conv2d_dims *d, const struct pxq_geom *g, const struct pxq_perm *p, const uint8_t *x,
	       uint8_t zp, uint8_t *xp)
{
	const int64_t hw = d->h * d->w, cols = d->w < g->pw - d->pw ? d->w : g->pw - d->pw;

	memset(xp, zp, (size_t)(g->s * g->phase));
	for (int64_t iy = 0; iy < d->h; iy++) {
		const int64_t r = iy + d->ph;
		uint8_t *row = xp + r % g->s * g->phase + (r / g->s * g->pw + d->pw) * PXQ_C;

		if (r >= (d->oh - 1) * g->s + d->kh)
			break;
		for (int64_t x0 = 0; x0 < cols; x0 += 16) {
			const int64_t n = cols - x0 < 16 ? cols - x0 : 16;
			const __mmask16 m = (__mmask16)(n == 16 ? 0xffff : (1u << n) - 1);
			const uint8_t *src = x + iy * d->w + x0;
			__m512i z[4], o[4];

			for (int a = 0; a < 4; a++) {
				z[a] = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(m, src + (4 * a) * hw));
				z[a] = _mm512_inserti32x4(z[a], _mm_maskz_loadu_epi8(m, src + (4 * a + 1) * hw), 1);
				z[a] = _mm512_inserti32x4(z[a], _mm_maskz_loadu_epi8(m, src + (4 * a + 2) * hw), 2);
				z[a] = _mm512_inserti32x4(z[a], _mm_maskz_loadu_epi8(m, src + (4 * a + 3) * hw), 3);
			}
			pxq_transpose(p, z, o);
			for (int b = 0; b < 4 && 4 * b < n; b++) {
				const int64_t bytes = (n - 4 * b < 4 ? n - 4 * b : 4) * PXQ_C;

				_mm512_mask_storeu_epi8(row + (x0 + 4 * b) * PXQ_C,
							bytes == 64 ? ~(__mmask64)0 : ((__mmask64)1 << bytes) - 1, o[b]);
			}
		}
	}
}

/* The codes of filters f0.. (16, fewer in the last block) of one image,
 * channels-last in out, into their planes. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vbmi"))) void
pxq_unpack_output(const ds_conv2d_dims *d, const struct pxq_geom *g, const struct pxq_perm *p, const uint8_t *out,
		  int64_t f0, uint8_t *y)
{
	const int64_t plane = d->oh * d->ow, nf = d->o - f0 < 16 ? d->o - f0 : 16;

	for (int64_t oy = 0; oy < d->oh; oy++)
		for (int64_t x0 = 0; x0 < d->ow; x0 += 16) {
			const int64_t n = d->ow - x0 < 16 ? d->ow - x0 : 16;
			const __mmask16 m = (__mmask16)(n == 16 ? 0xffff : (1u << n) - 1);
			const uint8_t *src = out + (oy * g->gw + x0) * PXQ_C;
			uint8_t *dst = y + (f0 * d->oh + oy) * d->ow + x0;
			__m512i z[4], o[4];

			/* n pixels of 16 bytes: no read past the row's last. */
			for (int a = 0; a < 4; a++) {
				const int64_t bytes = n * PXQ_C - 64 * a;

				z[a] = _mm512_maskz_loadu_epi8(bytes >= 64 ? ~(__mmask64)0
							       : bytes > 0 ? ((__mmask64)1 << bytes) - 1 : 0,
							       src + 64 * a);
			}
#define PXQ_LANE(b, l)                                                                                       \
	if (4 * (b) + (l) < nf)                                                                              \
	_mm_mask_storeu_epi8(dst + (4 * (b) + (l)) * plane, m, _mm512_extracti32x4_epi32(o[b], l))
#define PXQ_LANES(b)                                                                                         \
	do {                                                                                                 \
		PXQ_LANE(b, 0);                                                                              \
		PXQ_LANE(b, 1);                                                                              \
		PXQ_LANE(b, 2);                                                                              \
		PXQ_LANE(b, 3);                                                                              \
	} while (0)
			pxq_transpose(p, z, o);
			PXQ_LANES(0);
			PXQ_LANES(1);
			PXQ_LANES(2);
			PXQ_LANES(3);
#undef PXQ_LANES
#undef PXQ_LANE
		}
}

/* One image: for each block of 16 filters its kh tiles of filters (5 to
 * 7), loaded once; per 32 pixels (rows q of the grid) two tiles of sums,
 * kh products each, the even blocks' in tiles 0 and 1, the odd ones' in 2
 * and 3.  A block's products are issued before the epilogue of the one
 * before it, which then runs on the vector units while the tile unit
 * works: a block's chain of kh products on its own took longer than its
 * epilogue.  The epilogue is ds_qcode_at lane by lane, filters in the
 * lanes, so that its constants are vectors; the codes stay channels-last
 * in out. */
static __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vbmi"), optimize("fp-contract=off"))) void
pxq_image(const ds_conv2d_dims *d, const struct pxq_geom *g, const struct pxq_perm *p, const int8_t *wp,
	  const int32_t *wsum, const uint8_t *x, const ds_qout *e, uint8_t *y, uint8_t *slice)
{
	/* Rows j of 4 codes of the packs' lanes k back to pixel j's 16
	 * filters: byte 16 j + f from byte 16 (f / 4) + 4 j + f % 4. */
	static const uint8_t rows_order[64] = {
		0,  1,  2,  3,  16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
		4,  5,  6,  7,  20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
		8,  9,  10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
		12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63,
	};
	const __m512i order = _mm512_loadu_si512(rows_order);
	const int64_t rows = d->kw * 4, step = g->s * PXQ_C, blocks = (g->qe + 31) / 32;
	uint8_t *xp = slice, *out = slice + g->s * g->phase;
	struct pxq_amx_config cfg;
	int32_t acc[32 * 16];

	pxq_pack_input(d, g, p, x, (uint8_t)e->x_zero_point, xp);
	memset(&cfg, 0, sizeof cfg);
	cfg.palette = 1;
	for (int i = 0; i < 4; i++) {
		cfg.colsb[i] = 64;   /* C: 16 pixels by 16 int32 filters */
		cfg.rows[i] = 16;
	}
	cfg.colsb[4] = (uint16_t)(d->kw * PXQ_C);   /* A: 16 pixels' rows of taps */
	cfg.rows[4] = 16;
	for (int i = 5; i < 5 + d->kh; i++) {
		cfg.colsb[i] = 64;   /* B: kw * 4 words of 16 filters */
		cfg.rows[i] = (uint8_t)rows;
	}
	_tile_loadconfig(&cfg);
	for (int64_t b = 0; b < pxq_blocks(d); b++) {
		const int8_t *wb = wp + b * d->kh * rows * 64;
		const int64_t f0 = b * 16, nf = d->o - f0 < 16 ? d->o - f0 : 16;
		__m512 mult, bias, lo, hi;
		__m512i corr;
		float cm[16] = { 0 }, cb[16] = { 0 }, clo[16] = { 0 }, chi[16] = { 0 };
		int32_t cc[16] = { 0 };

		for (int64_t f = 0; f < nf; f++) {
			cm[f] = e->code[f0 + f].m;
			cb[f] = e->code[f0 + f].b;
			clo[f] = e->code[f0 + f].lo;
			chi[f] = e->code[f0 + f].hi;
			cc[f] = e->x_zero_point * wsum[f0 + f];
		}
		mult = _mm512_loadu_ps(cm);
		bias = _mm512_loadu_ps(cb);
		lo = _mm512_loadu_ps(clo);
		hi = _mm512_loadu_ps(chi);
		corr = _mm512_loadu_si512(cc);
		_tile_loadd(5, wb, 64);
		if (d->kh > 1)
			_tile_loadd(6, wb + rows * 64, 64);
		if (d->kh > 2)
			_tile_loadd(7, wb + 2 * rows * 64, 64);
		/* Block k's products into tiles c0 and c1.  Filter row ky reads
		 * phase ky % s, ky / s rows down. */
#define PXQ_ROW(c0, c1, ky, bt)                                                               \
	do {                                                                                  \
		const uint8_t *at = a + (ky) % g->s * g->phase + (ky) / g->s * g->pw * PXQ_C;   \
                                                                                              \
		_tile_loadd(4, at, step);                                                     \
		_tile_dpbusd(c0, 4, bt);                                                      \
		if (two) {                                                                    \
			_tile_loadd(4, at + 16 * step, step);                                 \
			_tile_dpbusd(c1, 4, bt);                                              \
		}                                                                             \
	} while (0)
#define PXQ_ISSUE(c0, c1, k)                                                                  \
	do {                                                                                  \
		const uint8_t *a = xp + (k) * 32 * step;                                      \
		const int two = g->qe - (k) * 32 > 16;                                        \
                                                                                              \
		_tile_zero(c0);                                                               \
		_tile_zero(c1);                                                               \
		PXQ_ROW(c0, c1, 0, 5);                                                        \
		if (d->kh > 1)                                                                \
			PXQ_ROW(c0, c1, 1, 6);                                                \
		if (d->kh > 2)                                                                \
			PXQ_ROW(c0, c1, 2, 7);                                                \
	} while (0)
		PXQ_ISSUE(0, 1, 0);
		for (int64_t k = 0; k < blocks; k++) {
			const int64_t q0 = k * 32, n = g->qe - q0 > 16 ? 32 : 16;

			if (k % 2) {
				if (k + 1 < blocks)
					PXQ_ISSUE(0, 1, k + 1);
				_tile_stored(2, acc, 64);
				_tile_stored(3, acc + 16 * 16, 64);
			} else {
				if (k + 1 < blocks)
					PXQ_ISSUE(2, 3, k + 1);
				_tile_stored(0, acc, 64);
				_tile_stored(1, acc + 16 * 16, 64);
			}
			for (int64_t i = 0; i < n; i += 4) {
				__m512i q[4];

#pragma GCC unroll 4
				for (int j = 0; j < 4; j++) {
					__m512 v = _mm512_cvtepi32_ps(
						_mm512_sub_epi32(_mm512_loadu_si512(acc + (i + j) * 16), corr));

					v = _mm512_add_ps(_mm512_mul_ps(v, mult), bias);
					q[j] = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
				}
				_mm512_storeu_si512(out + (q0 + i) * PXQ_C,
						    _mm512_permutexvar_epi8(order,
									    _mm512_packus_epi16(_mm512_packs_epi32(q[0], q[1]),
												_mm512_packs_epi32(q[2], q[3]))));
			}
		}
#undef PXQ_ISSUE
#undef PXQ_ROW
		pxq_unpack_output(d, g, p, out, f0, y);
	}
	_tile_release();
}
#endif

void ds_qconv2d_pxq_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			    void *ws)
{
#ifdef HAVE_PXQ_AMX
	struct pxq_head *head = ws;
	int8_t *wp = (int8_t *)(head + 1);
	int32_t *wsum = (int32_t *)(wp + pxq_filter_bytes(d));
	uint8_t *slices = (uint8_t *)wsum + up64(d->o * 4);
	const int64_t geometry[4] = { d->o, d->kh, d->kw, d->c };
	const size_t nw = (size_t)(d->o * PXQ_C * d->kh * d->kw);
	const uint64_t wfp = ds_qfingerprint(w, nw);
	struct pxq_geom g;
	struct pxq_perm perm;

	pxq_geom(d, &g);
	pxq_perm_init(&perm);
	if (memcmp(head->geometry, geometry, sizeof geometry) || head->wfp != wfp ||
	    head->pfp != ds_qfingerprint(wp, pxq_filter_bytes(d) + (size_t)d->o * 4)) {
		pxq_pack(d, w, wp, wsum);
		memcpy(head->geometry, geometry, sizeof geometry);
		head->wfp = wfp;
		head->pfp = ds_qfingerprint(wp, pxq_filter_bytes(d) + (size_t)d->o * 4);
	}
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t n = 0; n < d->n; n++) {
		int t = 0;

#ifdef _OPENMP
		t = omp_get_thread_num();
#endif
		pxq_image(d, &g, &perm, wp, wsum, x + n * d->c * d->h * d->w, e,
			  (uint8_t *)y + n * d->o * d->oh * d->ow, slices + (size_t)t * (size_t)g.slice);
	}
#else
	(void)d;
	(void)x;
	(void)w;
	(void)e;
	(void)y;
	(void)ws;
#endif
}
