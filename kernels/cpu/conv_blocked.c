/* conv_blocked.c - convolution in the blocked layout NCHW16c.
 *
 * A blocked tensor is [n][c / 16][h][w][16]: sixteen channels of one
 * position are one vector, the channels past the last (when c is not a
 * multiple of 16) zero.  Filters are packed [o / 16][c / 16][kh][kw][16 in]
 * [16 out] by ds-optimize's layout pass, so a tile's filter vectors are
 * aligned loads in the order the loop reads them.
 *
 * A tile is 4 vectors of output channels by 6 positions (24 sums in
 * registers through every input channel and tap); per input channel, 4
 * filter loads and 6 broadcasts of input values feed 24 FMAs, and no load
 * crosses a cache line.  Two vectors of channels take 2 x 12 tiles.  A
 * position's taps that fall in the padding read a block of zeros instead
 * of the image, so borders, strides and dilation need no other code.
 * Alone, 64 images, 2 threads (GFLOP/s): 7x7 64 -> 64 300-330 against 280
 * for the masked kernel on NCHW, 14x14 32 -> 32 290-310 against 283, 3x3
 * stride 2 300 against 205.
 *
 * One vector of output channels (16 or fewer) at stride 1 runs by output
 * rows, in chunks of up to 16 positions whose inputs are one position
 * apart: one pointer a tap for the whole chunk, an FMA a broadcast.  28x28
 * 16 -> 16 at batch 64: 765-790 microseconds against 880 for the masked
 * kernel on NCHW (batch 1: 13.6 against 15.8).  At other strides, or next
 * to other blocks, 1 x 12 tiles.
 *
 * The input may also be plain NCHW (the first blocked layer of a chain):
 * a block then reads its channels a plane apart, as many as there are.
 *
 * A fused 2x2 max-pool runs the tiles over runs of row pairs into a
 * scratch that stays in cache and pools from there: the full-size output
 * is never written.  14x14 32 -> 64 at batch 64, 2 threads: 1,230-1,276
 * microseconds against 1,458-1,546 for the masked kernel's pooled form.
 */
#include "config.h"
#include "cpu/conv.h"

#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_BLOCKED_AVX512 1
#endif

#define BLK 16

static int force_portable;    /* tests: the portable code even with AVX-512 */
#define BLOCKED_NV 4          /* vectors of output channels a tile, at most */
#define BLOCKED_NP 12         /* positions a tile, at most: 24 / vectors */

static int64_t blocks_of(int64_t c)
{
	return (c + BLK - 1) / BLK;
}

size_t ds_conv2d_blocked_packed_floats(const ds_conv2d_dims *d)
{
	return (size_t)(blocks_of(d->o) * blocks_of(d->c) * d->kh * d->kw * BLK * BLK);
}

void ds_conv2d_blocked_pack(const ds_conv2d_dims *d, const float *w, float *wp)
{
	const int64_t ob = blocks_of(d->o), cb = blocks_of(d->c), taps = d->kh * d->kw;

	for (int64_t i = 0; i < ob; i++)
		for (int64_t j = 0; j < cb; j++)
			for (int64_t t = 0; t < taps; t++)
				for (int64_t ic = 0; ic < BLK; ic++)
					for (int64_t oc = 0; oc < BLK; oc++) {
						const int64_t o = i * BLK + oc, c = j * BLK + ic;

						*wp++ = o < d->o && c < d->c ? w[(o * d->c + c) * taps + t] : 0.0f;
					}
}

#ifdef HAVE_BLOCKED_AVX512
/* r[k] = row k of a 16 x 16 tile, turned into its columns in place. */
static inline __attribute__((always_inline, target("avx512f"))) void transpose16(__m512 r[16])
{
	__m512 t[16];

	for (int k = 0; k < 16; k += 2) {
		t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
		t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
	}
	for (int k = 0; k < 16; k += 4) {
		r[k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
		r[k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
		r[k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
		r[k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
	}
	/* Now r[4a + b] holds, in each 128-bit lane m, element b of rows
	 * 4m' .. of group a: gather the lanes across the four groups. */
	for (int b = 0; b < 4; b++) {
		t[b] = _mm512_shuffle_f32x4(r[b], r[4 + b], 0x88);
		t[4 + b] = _mm512_shuffle_f32x4(r[b], r[4 + b], 0xdd);
		t[8 + b] = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], 0x88);
		t[12 + b] = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], 0xdd);
	}
	for (int b = 0; b < 4; b++) {
		r[b] = _mm512_shuffle_f32x4(t[b], t[8 + b], 0x88);
		r[8 + b] = _mm512_shuffle_f32x4(t[b], t[8 + b], 0xdd);
		r[4 + b] = _mm512_shuffle_f32x4(t[4 + b], t[12 + b], 0x88);
		r[12 + b] = _mm512_shuffle_f32x4(t[4 + b], t[12 + b], 0xdd);
	}
}

/* `lanes` planes to one block's plane, 16 positions a step; the lanes
 * past the last channel are zeros. */
static __attribute__((target("avx512f"))) void to_block(int64_t plane, int64_t lanes, const float *src,
							 float *dst)
{
	for (int64_t q0 = 0; q0 < plane; q0 += 16) {
		const int64_t n = plane - q0 < 16 ? plane - q0 : 16;
		const __mmask16 m = (__mmask16)((1u << n) - 1);
		__m512 r[16];

		for (int l = 0; l < 16; l++)
			r[l] = l < lanes ? _mm512_maskz_loadu_ps(m, src + l * plane + q0) : _mm512_setzero_ps();
		transpose16(r);
		for (int64_t k = 0; k < n; k++)
			_mm512_storeu_ps(dst + (q0 + k) * BLK, r[k]);
	}
}

/* One block's plane back to `lanes` planes, 16 positions a step. */
static __attribute__((target("avx512f"))) void from_block(int64_t plane, int64_t lanes, const float *src,
							   float *dst)
{
	for (int64_t q0 = 0; q0 < plane; q0 += 16) {
		const int64_t n = plane - q0 < 16 ? plane - q0 : 16;
		const __mmask16 m = (__mmask16)((1u << n) - 1);
		__m512 r[16];

		for (int k = 0; k < 16; k++)
			r[k] = k < n ? _mm512_loadu_ps(src + (q0 + k) * BLK) : _mm512_setzero_ps();
		transpose16(r);
		for (int64_t l = 0; l < lanes; l++)
			_mm512_mask_storeu_ps(dst + l * plane + q0, m, r[l]);
	}
}
#endif

static int blocked_cpu_ok(void)
{
#ifdef HAVE_BLOCKED_AVX512
	return !force_portable && __builtin_cpu_supports("avx512f");
#else
	return 0;
#endif
}

void ds_to_blocked(int64_t n, int64_t c, int64_t plane, const float *x, float *y)
{
	const int64_t cb = blocks_of(c);

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (n * cb >= 2)
	for (int64_t ij = 0; ij < n * cb; ij++) {
		const int64_t i = ij / cb, j = ij % cb, lanes = c - j * BLK < BLK ? c - j * BLK : BLK;
		const float *src = x + (i * c + j * BLK) * plane;
		float *dst = y + ij * plane * BLK;

#ifdef HAVE_BLOCKED_AVX512
		if (blocked_cpu_ok()) {
			to_block(plane, lanes, src, dst);
			continue;
		}
#endif
		for (int64_t q = 0; q < plane; q++) {
			for (int64_t l = 0; l < lanes; l++)
				dst[q * BLK + l] = src[l * plane + q];
			for (int64_t l = lanes; l < BLK; l++)
				dst[q * BLK + l] = 0.0f;
		}
	}
}

void ds_global_avg_pool_blocked(int64_t n, int64_t c, int64_t plane, const float *x, float *y)
{
	const int64_t cb = blocks_of(c);
	const float scale = plane > 0 ? 1.0f / (float)plane : 0.0f;

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (n * cb >= 2)
	for (int64_t ij = 0; ij < n * cb; ij++) {
		const int64_t i = ij / cb, j = ij % cb, lanes = c - j * BLK < BLK ? c - j * BLK : BLK;
		const float *src = x + ij * plane * BLK;
		float s[BLK] = { 0 };

		/* Each lane summed in position order, as the NCHW pool sums a
		 * plane: the same floats. */
		for (int64_t q = 0; q < plane; q++)
			for (int l = 0; l < BLK; l++)
				s[l] += src[q * BLK + l];
		for (int64_t l = 0; l < lanes; l++)
			y[i * c + j * BLK + l] = s[l] * scale;
	}
}

void ds_from_blocked(int64_t n, int64_t c, int64_t plane, const float *x, float *y)
{
	const int64_t cb = blocks_of(c);

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (n * cb * plane >= 4096)
	for (int64_t ij = 0; ij < n * cb; ij++) {
		const int64_t i = ij / cb, j = ij % cb, lanes = c - j * BLK < BLK ? c - j * BLK : BLK;
		const float *src = x + ij * plane * BLK;
		float *dst = y + (i * c + j * BLK) * plane;

#ifdef HAVE_BLOCKED_AVX512
		if (blocked_cpu_ok()) {
			from_block(plane, lanes, src, dst);
			continue;
		}
#endif
		for (int64_t l = 0; l < lanes; l++)
			for (int64_t q = 0; q < plane; q++)
				dst[l * plane + q] = src[q * BLK + l];
	}
}

/* Where a tile's positions are: image, output row and column, stepped
 * from one position to the next without dividing. */
struct at {
	int64_t img, oy, ox;
};

static void at_next(const ds_conv2d_dims *d, struct at *a)
{
	if (++a->ox == d->ow) {
		a->ox = 0;
		if (++a->oy == d->oh) {
			a->oy = 0;
			a->img++;
		}
	}
}

static void at_of(const ds_conv2d_dims *d, int64_t pos, struct at *a)
{
	const int64_t plane = d->oh * d->ow;

	a->img = pos / plane;
	a->oy = pos % plane / d->ow;
	a->ox = pos % d->ow;
}

/* What a tile's call shares: the layer, its tensors and the epilogue.
 * Output block o of position a is at y + img * y_img + (oy * ow + ox) *
 * 16 + o * y_blk - y_base: the blocked output, or a scratch of a run of
 * positions, block after block, for the pool. */
struct blocked_call {
	const ds_conv2d_dims *d;
	const float *x, *wp, *b, *r;
	float *y;
	int64_t y_img, y_blk, y_base;
	int x_blocked;
	int64_t cb, ob;
};

static int64_t y_offset(const struct blocked_call *k, const struct at *a, int64_t o)
{
	return a->img * k->y_img + (a->oy * k->d->ow + a->ox) * BLK + o * k->y_blk - k->y_base;
}

/* The input of block j at position a's tap (ki, kj), or NULL in the
 * padding; *step is the distance between its channels. */
static const float *x_at(const struct blocked_call *k, const struct at *a, int64_t j, int64_t ki, int64_t kj,
			 int64_t *step)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t iy = a->oy * d->sh + ki * d->dh - d->ph, ix = a->ox * d->sw + kj * d->dw - d->pw;

	if ((uint64_t)iy >= (uint64_t)d->h || (uint64_t)ix >= (uint64_t)d->w)
		return NULL;
	if (k->x_blocked) {
		*step = 1;
		return k->x + (((a->img * k->cb + j) * d->h + iy) * d->w + ix) * BLK;
	}
	*step = d->h * d->w;
	return k->x + ((a->img * d->c + j * BLK) * d->h + iy) * d->w + ix;
}

/* Block j of image img's input: its first channel's plane, or its first
 * position's vector. */
static const float *x_block(const struct blocked_call *k, int64_t img, int64_t j)
{
	const int64_t plane = k->d->h * k->d->w;

	return k->x + (k->x_blocked ? (img * k->cb + j) * plane * BLK : (img * k->d->c + j * BLK) * plane);
}

#ifdef HAVE_BLOCKED_AVX512
static const float zeros[BLK];

/* A vector of sums to y: the residual r (or none), then the ReLU and its
 * cap; the bias is in the sums already. */
static inline __attribute__((always_inline, target("avx512f"))) void
store_sums(const ds_conv2d_dims *d, __m512 s, const float *r, float *y)
{
	if (r)
		s = _mm512_add_ps(s, _mm512_loadu_ps(r));
	if (d->relu) {
		s = _mm512_max_ps(s, _mm512_setzero_ps());
		if (d->cap > 0.0f)
			s = _mm512_min_ps(s, _mm512_set1_ps(d->cap));
	}
	_mm512_storeu_ps(y, s);
}

/* nv vectors of output channels from block o0 by the np positions from
 * a0, the input blocked (xb) or plain; constant nv, np and xb after
 * inlining, so the sums stay in registers.  The layer's numbers are read
 * into locals: through d, GCC reloaded them and spilled the sums. */
static inline __attribute__((always_inline, target("avx512f"))) void
blocked_tile(const int nv, const int np, const int xb, const struct blocked_call *k, const struct at *a0,
	     int64_t o0)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t h = d->h, w = d->w, c = d->c, kh = d->kh, kw = d->kw, sh = d->sh, sw = d->sw;
	const int64_t ph = d->ph, pw = d->pw, dh = d->dh, dw = d->dw, cb = k->cb, plane = h * w;
	const int64_t taps = kh * kw, wob = cb * taps * BLK * BLK;
	const float *x = k->x, *wp = k->wp, *zp = zeros;
	int64_t img[BLOCKED_NP], oy[BLOCKED_NP], ox[BLOCKED_NP], yo[BLOCKED_NP];
	__m512 acc[BLOCKED_NV][BLOCKED_NP];

	/* Hidden from GCC: knowing the block is zeros, it loaded every
	 * position's sixteen inputs as (in ? x : 0) into a copy on the stack
	 * and broadcast from there, a quarter slower. */
	__asm__("" : "+r"(zp));
	{
		struct at a = *a0;

#pragma GCC unroll 12
		for (int p = 0; p < np; p++) {
			img[p] = a.img;
			yo[p] = y_offset(k, &a, o0);
			oy[p] = a.oy * sh - ph;
			ox[p] = a.ox * sw - pw;
			at_next(d, &a);
		}
	}
#pragma GCC unroll 4
	for (int v = 0; v < nv; v++) {
		const __m512 bv = k->b ? _mm512_loadu_ps(k->b + (o0 + v) * BLK) : _mm512_setzero_ps();

#pragma GCC unroll 12
		for (int p = 0; p < np; p++)
			acc[v][p] = bv;
	}
	for (int64_t j = 0; j < cb; j++) {
		const int64_t lanes = xb || c - j * BLK >= BLK ? BLK : c - j * BLK;

		for (int64_t ki = 0; ki < kh; ki++)
			for (int64_t kj = 0; kj < kw; kj++) {
				const float *wt = wp + ((o0 * cb + j) * taps + ki * kw + kj) * BLK * BLK;
				const float *xp[BLOCKED_NP];
				int64_t st[BLOCKED_NP];

#pragma GCC unroll 12
				for (int p = 0; p < np; p++) {
					const int64_t iy = oy[p] + ki * dh, ix = ox[p] + kj * dw;
					const int in = (uint64_t)iy < (uint64_t)h && (uint64_t)ix < (uint64_t)w;

					if (xb)
						xp[p] = in ? x + (((img[p] * cb + j) * h + iy) * w + ix) * BLK : zp;
					else
						xp[p] = in ? x + ((img[p] * c + j * BLK) * h + iy) * w + ix : zp;
					st[p] = in ? plane : 0;
				}
				/* A pointer a vector of channels, read at constant
				 * offsets: GCC kept 64 addresses on the stack. */
				const float *w0 = wt, *w1 = wt + wob, *w2 = wt + 2 * wob, *w3 = wt + 3 * wob;

				__asm__("" : "+r"(w1), "+r"(w2), "+r"(w3));
				if (xb) {
#pragma GCC unroll 16
					for (int ic = 0; ic < BLK; ic++) {
						__m512 wv[4];

						wv[0] = _mm512_loadu_ps(w0 + ic * BLK);
						if (nv > 1)
							wv[1] = _mm512_loadu_ps(w1 + ic * BLK);
						if (nv > 2) {
							wv[2] = _mm512_loadu_ps(w2 + ic * BLK);
							wv[3] = _mm512_loadu_ps(w3 + ic * BLK);
						}
#pragma GCC unroll 12
						for (int p = 0; p < np; p++) {
							const __m512 xv = _mm512_set1_ps(xp[p][ic]);

#pragma GCC unroll 4
							for (int v = 0; v < nv; v++)
								acc[v][p] = _mm512_fmadd_ps(wv[v], xv, acc[v][p]);
						}
					}
				} else {
					/* Channels a plane apart; the zero block is read
					 * in place, not stepped through. */
					for (int64_t ic = 0; ic < lanes; ic++) {
						__m512 wv[4];

						wv[0] = _mm512_loadu_ps(w0 + ic * BLK);
						if (nv > 1)
							wv[1] = _mm512_loadu_ps(w1 + ic * BLK);
						if (nv > 2) {
							wv[2] = _mm512_loadu_ps(w2 + ic * BLK);
							wv[3] = _mm512_loadu_ps(w3 + ic * BLK);
						}
#pragma GCC unroll 12
						for (int p = 0; p < np; p++) {
							const __m512 xv = _mm512_set1_ps(xp[p][ic * st[p]]);

#pragma GCC unroll 4
							for (int v = 0; v < nv; v++)
								acc[v][p] = _mm512_fmadd_ps(wv[v], xv, acc[v][p]);
						}
					}
				}
			}
	}
#pragma GCC unroll 12
	for (int p = 0; p < np; p++)
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++) {
			const int64_t off = yo[p] + v * k->y_blk;

			store_sums(d, acc[v][p], k->r ? k->r + off : NULL, k->y + off);
		}
}

/* Each variant a function of its own, blocked input or plain. */
#define BLOCKED_TILE_FN(NAME, NV, NP)                                                              \
	static __attribute__((noinline, target("avx512f"))) void NAME(const struct blocked_call *k, \
								     const struct at *a, int64_t o0) \
	{                                                                                          \
		if (k->x_blocked)                                                                  \
			blocked_tile(NV, NP, 1, k, a, o0);                                         \
		else                                                                               \
			blocked_tile(NV, NP, 0, k, a, o0);                                         \
	}

BLOCKED_TILE_FN(tile_4x6, 4, 6)
BLOCKED_TILE_FN(tile_4x1, 4, 1)
BLOCKED_TILE_FN(tile_2x12, 2, 12)
BLOCKED_TILE_FN(tile_2x1, 2, 1)
BLOCKED_TILE_FN(tile_1x12, 1, 12)
BLOCKED_TILE_FN(tile_1x1, 1, 1)
#endif

#ifdef HAVE_BLOCKED_AVX512
/* One vector of output channels over np positions of one output row at
 * stride 1: a tap's inputs for the np positions lie one position apart, so
 * one pointer serves them all at constant offsets, where the tile above
 * keeps a pointer a position (a quarter of its time went to making them).
 * At a row's ends a tap misses the first or the last position: those read
 * through pointers of their own, aimed at the zero block when they miss;
 * a miss anywhere else (a plane narrower than the filter) takes a branch
 * a position. */
static inline __attribute__((always_inline, target("avx512f"))) void
row_tile(const int np, const int xb, const struct blocked_call *k, const struct at *a)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t h = d->h, w = d->w, c = d->c, kh = d->kh, kw = d->kw, dh = d->dh, dw = d->dw;
	const int64_t cb = k->cb, plane = h * w, taps = kh * kw, step = xb ? BLK : 1;
	const uintptr_t zp = (uintptr_t)zeros;
	const int64_t y0 = y_offset(k, a, 0);
	__m512 acc[BLK];

	{
		const __m512 bv = k->b ? _mm512_loadu_ps(k->b) : _mm512_setzero_ps();

#pragma GCC unroll 16
		for (int p = 0; p < np; p++)
			acc[p] = bv;
	}
	for (int64_t j = 0; j < cb; j++) {
		const int64_t lanes = xb || c - j * BLK >= BLK ? BLK : c - j * BLK;
		const float *xj = x_block(k, a->img, j);

		/* Columns outside, rows inside: the ends' pointers are
		 * the same for every row of a column of taps. */
		for (int64_t kj = 0; kj < kw; kj++) {
			const int64_t ix0 = a->ox - d->pw + kj * dw;
			const int64_t lo = ix0 < 0 ? -ix0 : 0, hi = w - ix0 < np ? w - ix0 : np;
			const uintptr_t ic_step = xb ? 4 : (uintptr_t)plane * 4;
			const uintptr_t first_step = lo ? 0 : ic_step, last_step = hi < np ? 0 : ic_step;

			if (hi <= lo)
				continue;
			for (int64_t ki = 0; ki < kh; ki++) {
				const int64_t iy = a->oy - d->ph + ki * dh;
				const float *wt = k->wp + (j * taps + ki * kw + kj) * BLK * BLK;
				/* Addresses as integers: the row's may lie before
				 * the tensor, read only where a position is in. */
				const uintptr_t mid = (uintptr_t)xj + (uintptr_t)((iy * w + ix0) * step * 4);
				uintptr_t first = lo ? zp : mid, last = hi < np ? zp - (uintptr_t)((np - 1) * step * 4) : mid;

				if ((uint64_t)iy >= (uint64_t)h)
					continue;
				if (lo > 1 || hi < np - 1) {
					for (int64_t ic = 0; ic < lanes; ic++) {
						const __m512 wv = _mm512_loadu_ps(wt + ic * BLK);
						const float *xi = (const float *)(mid + (uintptr_t)ic * ic_step);

#pragma GCC unroll 16
						for (int p = 0; p < np; p++)
							if (p >= lo && p < hi)
								acc[p] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xi[p * step]),
											 acc[p]);
					}
					continue;
				}
				/* xb: 16 channels at fixed offsets, unrolled. */
				__asm__("" : "+r"(first), "+r"(last));
#pragma GCC unroll 16
				for (int64_t ic = 0; ic < lanes; ic++) {
					const __m512 wv = _mm512_loadu_ps(wt + ic * BLK);
					const float *xm = (const float *)(mid + (uintptr_t)ic * ic_step);
					const float *xf = (const float *)(first + (uintptr_t)ic * first_step);
					const float *xl = (const float *)(last + (uintptr_t)ic * last_step);

					acc[0] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xf[0]), acc[0]);
#pragma GCC unroll 16
					for (int p = 1; p < np - 1; p++)
						acc[p] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xm[p * step]), acc[p]);
					if (np > 1)
						acc[np - 1] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xl[(np - 1) * step]),
									 acc[np - 1]);
				}
			}
		}
	}
#pragma GCC unroll 16
	for (int p = 0; p < np; p++) {
		const int64_t off = y0 + p * BLK;

		store_sums(d, acc[p], k->r ? k->r + off : NULL, k->y + off);
	}
}

#define ROW_TILE_FN(NP)                                                                                  \
	static __attribute__((noinline, target("avx512f"))) void row_tile_##NP(const struct blocked_call *k, \
									      const struct at *a)       \
	{                                                                                                \
		if (k->x_blocked)                                                                        \
			row_tile(NP, 1, k, a);                                                           \
		else                                                                                     \
			row_tile(NP, 0, k, a);                                                           \
	}

ROW_TILE_FN(1)
ROW_TILE_FN(2)
ROW_TILE_FN(3)
ROW_TILE_FN(4)
ROW_TILE_FN(5)
ROW_TILE_FN(6)
ROW_TILE_FN(7)
ROW_TILE_FN(8)
ROW_TILE_FN(9)
ROW_TILE_FN(10)
ROW_TILE_FN(11)
ROW_TILE_FN(12)
ROW_TILE_FN(13)
ROW_TILE_FN(14)
ROW_TILE_FN(15)
ROW_TILE_FN(16)

static void (*const row_tiles[BLK + 1])(const struct blocked_call *, const struct at *) = {
	NULL,         row_tile_1,  row_tile_2,  row_tile_3,  row_tile_4,  row_tile_5,
	row_tile_6,   row_tile_7,  row_tile_8,  row_tile_9,  row_tile_10, row_tile_11,
	row_tile_12,  row_tile_13, row_tile_14, row_tile_15, row_tile_16,
};

/* A layer of one vector of output channels at stride 1, by rows: each
 * output row in chunks of at most 16 positions, as even as they come. */
static void rows_forward(const struct blocked_call *k)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t chunks = (d->ow + BLK - 1) / BLK, units = d->n * d->oh * chunks;

#pragma omp parallel num_threads(ds_kernel_threads())
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size(), u0 = units * t / nt, u1 = units * (t + 1) / nt;
		int64_t ch = u0 % chunks;
		struct at a = { u0 / chunks / d->oh, u0 / chunks % d->oh, 0 };

		/* Stepped, not divided: a few divisions a tile were a tenth
		 * of a layer of one input channel. */
		for (int64_t u = u0; u < u1; u++) {
			const int64_t ox1 = d->ow * (ch + 1) / chunks;

			a.ox = d->ow * ch / chunks;
			row_tiles[ox1 - a.ox](k, &a);
			if (++ch == chunks) {
				ch = 0;
				if (++a.oy == d->oh) {
					a.oy = 0;
					a.img++;
				}
			}
		}
	}
}
#endif

#ifdef HAVE_BLOCKED_AVX512
/* A first layer: one input channel (the image), 3x3 filters at stride 1,
 * at most 2 vectors of output channels.  Its 9 or 18 filter vectors stay
 * in registers for the whole layer, and each input value is broadcast once
 * a tap for every output vector: the tiles above load a filter vector for
 * each tap's single channel, and a layer of 1 -> 32 ran at a third of
 * their speed.  The three input rows of an output row are copied with
 * their padding into a scratch, so the loop has no edges; a row's last
 * chunk is the last FIRST_NP positions, overlapping the one before. */
#define FIRST_NP 5            /* positions a chunk: 2 x 5 sums + 18 filters */

static void pool_row(const float *top, const float *bot, int64_t pw, float *out);
#define FIRST_W_MAX 1024      /* widest input row */

static int first_fits(const ds_conv2d_dims *d)
{
	return d->c == 1 && d->o <= 2 * BLK && d->kh == 3 && d->kw == 3 && d->sh == 1 && d->sw == 1 && d->dh == 1 &&
	       d->dw == 1 && d->ph == d->pw && d->ph <= 1 && d->ow >= FIRST_NP && d->w + 2 <= FIRST_W_MAX;
}

/* Input rows iy0 .. iy0 + n - 1 of image img, padded: column ix at
 * buf[i][ix + ph], a zero either side; a row outside the image is NULL. */
static void first_rows(const struct blocked_call *k, int64_t img, int64_t iy0, int n, float (*buf)[FIRST_W_MAX],
		       const float **rows)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t w = d->w, xs = k->x_blocked ? BLK : 1;

	for (int i = 0; i < n; i++) {
		const int64_t iy = iy0 + i;
		const float *src;

		rows[i] = NULL;
		if ((uint64_t)iy >= (uint64_t)d->h)
			continue;
		src = x_block(k, img, 0) + iy * w * xs;
		buf[i][0] = buf[i][w + 1] = 0.0f;
		if (xs == 1)
			memcpy(buf[i] + d->ph, src, (size_t)w * sizeof *src);
		else
			for (int64_t ix = 0; ix < w; ix++)
				buf[i][ix + d->ph] = src[ix * xs];
		rows[i] = buf[i];
	}
}

/* An output row from its three padded input rows into out[v * out_blk +
 * ox * 16], through the epilogue (residual at the same offsets in r, or
 * NULL). */
static inline __attribute__((always_inline, target("avx512f"))) void
first_row(const int nv, const struct blocked_call *k, const __m512 *wr, const __m512 *bias,
	  const float *const *rows, float *out, int64_t out_blk, const float *r)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t ow = d->ow;
	const int np = FIRST_NP;

	for (int64_t ox0 = 0; ox0 < ow; ox0 += np) {
		const int64_t at = ox0 + np <= ow ? ox0 : ow - np;
		__m512 acc[2][FIRST_NP];

		/* Both vectors, whatever nv: GCC's warning cannot follow it. */
#pragma GCC unroll 10
		for (int p = 0; p < FIRST_NP; p++)
#pragma GCC unroll 2
			for (int v = 0; v < 2; v++)
				acc[v][p] = bias[v];
#pragma GCC unroll 3
		for (int ki = 0; ki < 3; ki++) {
			const float *row = rows[ki] + at;

			if (!rows[ki])
				continue;
#pragma GCC unroll 3
			for (int kj = 0; kj < 3; kj++)
#pragma GCC unroll 10
				for (int p = 0; p < np; p++) {
					const __m512 xv = _mm512_set1_ps(row[p + kj]);

#pragma GCC unroll 2
					for (int v = 0; v < nv; v++)
						acc[v][p] = _mm512_fmadd_ps(wr[(ki * 3 + kj) * 2 + v], xv, acc[v][p]);
				}
		}
#pragma GCC unroll 10
		for (int p = 0; p < np; p++)
#pragma GCC unroll 2
			for (int v = 0; v < nv; v++) {
				const int64_t off = v * out_blk + (at + p) * BLK;

				store_sums(d, acc[v][p], r ? r + off : NULL, out + off);
			}
	}
}

/* Units u0..u1 of the layer: an output row each (or, pooled, a pair of
 * rows computed into a scratch and pooled from there).  A thread loads the
 * filters itself: vector values shared into an OpenMP region would cross
 * into a function compiled without AVX-512. */
static inline __attribute__((always_inline, target("avx512f"))) void
first_units(const int nv, const struct blocked_call *k, float *ws, int64_t u0, int64_t u1)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t ph = d->oh / 2;
	float *scratch = d->pool ? ws + (size_t)ds_kernel_slice() * (size_t)(2 * nv * d->ow * BLK) : NULL;
	float buf[4][FIRST_W_MAX];
	const float *rows[4];
	__m512 wr[18], bias[2];

	for (int t = 0; t < 9; t++)
		for (int v = 0; v < 2; v++)
			wr[t * 2 + v] = v < nv ? _mm512_loadu_ps(k->wp + (v * 9 + t) * BLK * BLK) : _mm512_setzero_ps();
	for (int v = 0; v < 2; v++)
		bias[v] = k->b && v < nv ? _mm512_loadu_ps(k->b + v * BLK) : _mm512_setzero_ps();
	for (int64_t u = u0; u < u1; u++) {
		if (!d->pool) {
			const int64_t img = u / d->oh, oy = u % d->oh, off = img * k->y_img + oy * d->ow * BLK;

			first_rows(k, img, oy - d->ph, 3, buf, rows);
			first_row(nv, k, wr, bias, rows, k->y + off, k->y_blk, k->r ? k->r + off : NULL);
			continue;
		}
		const int64_t img = u / ph, py = u % ph, pw = d->ow / 2, half = nv * d->ow * BLK;

		/* The pair's four input rows, copied once. */
		first_rows(k, img, 2 * py - d->ph, 4, buf, rows);
		first_row(nv, k, wr, bias, rows, scratch, d->ow * BLK, NULL);
		first_row(nv, k, wr, bias, rows + 1, scratch + half, d->ow * BLK, NULL);
		for (int v = 0; v < nv; v++)
			pool_row(scratch + v * d->ow * BLK, scratch + half + v * d->ow * BLK, pw,
				 k->y + (((img * k->ob + v) * ph + py) * pw) * BLK);
	}
}

static __attribute__((noinline, target("avx512f"))) void first_units_1(const struct blocked_call *k, float *ws,
									int64_t u0, int64_t u1)
{
	first_units(1, k, ws, u0, u1);
}

static __attribute__((noinline, target("avx512f"))) void first_units_2(const struct blocked_call *k, float *ws,
									int64_t u0, int64_t u1)
{
	first_units(2, k, ws, u0, u1);
}

static void first_layer(const struct blocked_call *k, float *ws)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t units = d->pool ? d->n * (d->oh / 2) : d->n * d->oh;

#pragma omp parallel num_threads(ds_kernel_threads())
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size();

		(k->ob == 1 ? first_units_1 : first_units_2)(k, ws, units * t / nt, units * (t + 1) / nt);
	}
}
#endif

/* The portable form of a tile: one position, nv vectors. */
static void plain_tile(int nv, const struct blocked_call *k, const struct at *a, int64_t o0)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t taps = d->kh * d->kw, wob = k->cb * taps * BLK * BLK;
	float acc[4][BLK];

	for (int v = 0; v < nv; v++)
		for (int l = 0; l < BLK; l++)
			acc[v][l] = k->b ? k->b[(o0 + v) * BLK + l] : 0.0f;
	for (int64_t j = 0; j < k->cb; j++) {
		const int64_t lanes = k->x_blocked || d->c - j * BLK >= BLK ? BLK : d->c - j * BLK;

		for (int64_t ki = 0; ki < d->kh; ki++)
			for (int64_t kj = 0; kj < d->kw; kj++) {
				const float *wt = k->wp + ((o0 * k->cb + j) * taps + ki * d->kw + kj) * BLK * BLK;
				int64_t step = 1;
				const float *xp = x_at(k, a, j, ki, kj, &step);

				if (!xp)
					continue;
				for (int64_t ic = 0; ic < lanes; ic++)
					for (int v = 0; v < nv; v++)
						for (int l = 0; l < BLK; l++)
							acc[v][l] += wt[v * wob + ic * BLK + l] * xp[ic * step];
			}
	}
	for (int v = 0; v < nv; v++) {
		const int64_t off = y_offset(k, a, o0 + v);

		for (int l = 0; l < BLK; l++) {
			float s = acc[v][l];

			if (k->r)
				s += k->r[off + l];
			if (d->relu) {
				s = s > 0.0f ? s : 0.0f;
				if (d->cap > 0.0f)
					s = s < d->cap ? s : d->cap;
			}
			k->y[off + l] = s;
		}
	}
}

void ds_conv2d_blocked_force_portable(int on)
{
	force_portable = on;
}

/* Vectors of output channels a tile, and its positions. */
static int tile_vectors(int64_t ob)
{
	return ob % 4 == 0 ? 4 : ob % 2 == 0 ? 2 : 1;
}

/* Positions a tile of nv vectors. */
static int tile_positions(int nv)
{
	return nv == 4 ? 6 : 12;
}

static void run_tile(const struct blocked_call *k, int nv, int np, const struct at *a, int64_t o0)
{
#ifdef HAVE_BLOCKED_AVX512
	if (blocked_cpu_ok()) {
		if (np == tile_positions(nv))
			(nv == 4 ? tile_4x6 : nv == 2 ? tile_2x12 : tile_1x12)(k, a, o0);
		else
			for (struct at b = *a; np-- > 0; at_next(k->d, &b))
				(nv == 4 ? tile_4x1 : nv == 2 ? tile_2x1 : tile_1x1)(k, &b, o0);
		return;
	}
#endif
	for (struct at b = *a; np-- > 0; at_next(k->d, &b))
		plain_tile(nv, k, &b, o0);
}

/* A fused 2x2 max-pool: a thread takes runs of the pooled rows' pairs of
 * convolution rows, runs the tiles over them into a scratch that stays in
 * its cache, and pools from there.  A pair is the unit (the last of an
 * image takes an odd row too, computed and dropped), so a run's positions
 * are contiguous; a tile may run past a run's end into the scratch's
 * slack rather than split into single positions. */
#define POOL_RUN 256          /* positions a run, at most (or one unit) */

static int64_t pool_run_cap(const ds_conv2d_dims *d)
{
	return (POOL_RUN > 3 * d->ow ? POOL_RUN : 3 * d->ow) + BLOCKED_NP;
}

size_t ds_conv2d_blocked_workspace(const ds_conv2d_dims *d)
{
	if (!d->pool)
		return 0;
	return (size_t)ds_kernel_threads() * (size_t)(pool_run_cap(d) * blocks_of(d->o) * BLK);
}

/* First position of unit u (pair u % ph of image u / ph), and of the next. */
static int64_t unit_start(const ds_conv2d_dims *d, int64_t ph, int64_t u)
{
	return u / ph * d->oh * d->ow + u % ph * 2 * d->ow;
}

static int64_t unit_end(const ds_conv2d_dims *d, int64_t ph, int64_t u)
{
	return u % ph == ph - 1 ? (u / ph + 1) * d->oh * d->ow : unit_start(d, ph, u) + 2 * d->ow;
}

#ifdef HAVE_BLOCKED_AVX512
/* pw outputs from two rows of 2 pw positions, a vector of channels each. */
static __attribute__((target("avx512f"))) void pool_row(const float *top, const float *bot, int64_t pw,
							 float *out)
{
	for (int64_t px = 0; px < pw; px++) {
		const float *t = top + 2 * px * BLK, *b = bot + 2 * px * BLK;

		_mm512_storeu_ps(out + px * BLK,
				 _mm512_max_ps(_mm512_max_ps(_mm512_loadu_ps(t), _mm512_loadu_ps(t + BLK)),
					       _mm512_max_ps(_mm512_loadu_ps(b), _mm512_loadu_ps(b + BLK))));
	}
}
#endif

/* Pooled rows of units [u0, u1), blocks [o0, o0 + nv), from the scratch
 * whose first position is pos0, into k->y. */
static void pool_units(const struct blocked_call *k, int64_t ph, int64_t u0, int64_t u1, int nv, int64_t o0,
		       const float *scratch, int64_t cap, int64_t pos0)
{
	const ds_conv2d_dims *d = k->d;
	const int64_t pw = d->ow / 2;

	for (int64_t u = u0; u < u1; u++)
		for (int v = 0; v < nv; v++) {
			const float *top = scratch + (v * cap + unit_start(d, ph, u) - pos0) * BLK;
			const float *bot = top + d->ow * BLK;
			float *out = k->y + (((u / ph * k->ob + o0 + v) * ph + u % ph) * pw) * BLK;

#ifdef HAVE_BLOCKED_AVX512
			if (blocked_cpu_ok()) {
				pool_row(top, bot, pw, out);
				continue;
			}
#endif
			for (int64_t px = 0; px < pw; px++)
				for (int l = 0; l < BLK; l++) {
					const float *t = top + 2 * px * BLK + l, *b = bot + 2 * px * BLK + l;
					float m0 = t[0] > t[BLK] ? t[0] : t[BLK], m1 = b[0] > b[BLK] ? b[0] : b[BLK];

					out[px * BLK + l] = m0 > m1 ? m0 : m1;
				}
		}
}

static void pooled_forward(const struct blocked_call *call, int nv, float *ws)
{
	const ds_conv2d_dims *d = call->d;
	const int64_t ph = d->oh / 2, units = d->n * ph, groups = call->ob / nv, cap = pool_run_cap(d);
	const int64_t positions = d->n * d->oh * d->ow;
	const int np = tile_positions(nv);

#pragma omp parallel num_threads(ds_kernel_threads())
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size();
		const int64_t it0 = groups * units * t / nt, it1 = groups * units * (t + 1) / nt;
		float *scratch = ws + (size_t)ds_kernel_slice() * (size_t)(cap * call->ob * BLK);
		struct blocked_call k = *call;

		k.y = scratch;
		k.y_img = d->oh * d->ow * BLK;
		k.y_blk = cap * BLK;
		/* Runs of units of one group of blocks: (group, unit) pairs
		 * in group-major order, so threads split a small batch's few
		 * units by blocks too. */
		for (int64_t it = it0; it < it1;) {
			const int64_t g = it / units, u0 = it % units, pos0 = unit_start(d, ph, u0);
			int64_t u1 = u0 + 1, pos1;

			while (u1 < units && it + (u1 - u0) < it1 && unit_end(d, ph, u1) - pos0 <= cap - BLOCKED_NP)
				u1++;
			pos1 = unit_end(d, ph, u1 - 1);
			k.y_base = pos0 * BLK + g * nv * k.y_blk;
			for (int64_t pos = pos0; pos < pos1;) {
				struct at a;
				const int here = positions - pos < np ? (int)(positions - pos) : np;

				at_of(d, pos, &a);
				run_tile(&k, nv, here, &a, g * nv);
				pos += here;
			}
			pool_units(call, ph, u0, u1, nv, g * nv, scratch, cap, pos0);
			it += u1 - u0;
		}
	}
}

void ds_conv2d_blocked_forward(const ds_conv2d_dims *d, int x_blocked, const float *x, const float *wp,
			       const float *b, const float *r, float *y, float *ws)
{
	const struct blocked_call k = { .d = d, .x = x, .wp = wp, .b = b, .r = r, .y = y,
					.y_img = blocks_of(d->o) * d->oh * d->ow * BLK, .y_blk = d->oh * d->ow * BLK,
					.x_blocked = x_blocked, .cb = blocks_of(d->c), .ob = blocks_of(d->o) };
	int nv = tile_vectors(k.ob), np;
	int64_t positions, tiles, items;

	if (d->n * d->oh * d->ow <= 0)
		return;
#ifdef HAVE_BLOCKED_AVX512
	if (first_fits(d) && blocked_cpu_ok()) {
		first_layer(&k, ws);
		return;
	}
#endif
	if (d->pool) {
		/* Too few units for the threads: two vectors a tile, twice the
		 * groups to share. */
		if (nv == 4 && k.ob / 4 * d->n * (d->oh / 2) < 4 * ds_kernel_threads())
			nv = 2;
		pooled_forward(&k, nv, ws);
		return;
	}
#ifdef HAVE_BLOCKED_AVX512
	if (nv == 1 && k.ob == 1 && d->sw == 1 && blocked_cpu_ok()) {
		rows_forward(&k);
		return;
	}
#endif
	np = tile_positions(nv);
	positions = d->n * d->oh * d->ow;
	tiles = (positions + np - 1) / np;
	items = tiles * (k.ob / nv);
	/* Contiguous ranges of (vector group, tile): a thread steps through
	 * its positions rather than dividing for each tile. */
#pragma omp parallel num_threads(ds_kernel_threads())
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size();
		int64_t it = items * t / nt, end = items * (t + 1) / nt;
		struct at a;

		at_of(d, it % tiles * np, &a);
		for (; it < end; it++) {
			const int64_t tile = it % tiles, pos = tile * np;
			const int n_here = positions - pos < np ? (int)(positions - pos) : np;

			if (tile == 0)
				a = (struct at){ 0, 0, 0 };
			run_tile(&k, nv, n_here, &a, it / tiles * nv);
			for (int p = 0; p < n_here; p++)
				at_next(d, &a);
		}
	}
}
