/* conv_masked.c - stride-1 convolution on the unpadded planes.
 *
 * The direct kernel of conv.c copies each image into zero-padded planes,
 * computes whole rows of the padded grid and copies them out without their
 * padding columns: on a 14-wide plane 2 of every 16 lanes are thrown away,
 * and the two copies cost another tenth of the layer.  When the output is
 * as wide as the input (stride 1, "same" width), output position
 * p = oy * w + ox reads tap (ki, kj) at input position
 * p + (ki dh - ph) w + (kj dw - pw) whatever the row, so sixteen consecutive
 * outputs are one vector load from the unpadded plane.  The lanes whose
 * tap falls in the padding (a row above or below the image, or a column
 * left or right of it, which the flat offset wraps into the next row) are
 * masked off in the load, so they read nothing and add zero.  The masks
 * depend on the tile and the tap only; they are made once a tile from the
 * lanes' rows and columns.  Outputs go straight to y with the bias, the
 * residual and ReLU/ReLU6 applied in registers.
 *
 * A tile is up to 8 output channels by 3 vectors of positions (24
 * accumulators); per tap and input channel, 3 masked loads and 8
 * broadcasts feed 24 FMAs.  Taps are the outer loop so that a tap's masks
 * stay in mask registers over the input channels, taken in blocks so that
 * a block's rows stay in L1 through the taps.
 */
#include "config.h"
#include "cpu/conv.h"

#include <stdint.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_MASKED_AVX512 1
#endif

#define MASKED_OB 8
#define MASKED_NV 3                  /* masked_tile names its masks: 3 at most */
#define MASKED_K_MAX 7               /* taps a side */
#define MASKED_CB 64                 /* input channels a pass over the taps */
#define MASKED_TABLE_MAX 8192        /* masks a thread keeps for a call (16 KB of stack) */

int ds_conv2d_masked_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_MASKED_AVX512
	/* Positions and offsets are formed in 32-bit lanes and floats. */
	return d->sh == 1 && d->sw == 1 && d->ow == d->w && d->oh > 0 && d->ow > 0 &&
	       d->kh <= MASKED_K_MAX && d->kw <= MASKED_K_MAX && d->h * d->w < ((int64_t)1 << 22) &&
	       d->oh * d->ow < ((int64_t)1 << 22) && __builtin_cpu_supports("avx512f");
#else
	(void)d;
	return 0;
#endif
}

#ifdef HAVE_MASKED_AVX512
struct masked_geom {
	int64_t h, w;                        /* the input plane */
	int64_t p;                           /* output positions: oh * w */
	int64_t in_plane;                    /* h * w */
	int64_t kh, kw, taps;
	int32_t dy[MASKED_K_MAX], dx[MASKED_K_MAX];  /* a tap's input row and column from its output's */
	int64_t toff[MASKED_K_MAX * MASKED_K_MAX];   /* dy * w + dx */
};

static void masked_geom(const ds_conv2d_dims *d, struct masked_geom *g)
{
	g->h = d->h;
	g->w = d->w;
	g->p = d->oh * d->ow;
	g->in_plane = d->h * d->w;
	g->kh = d->kh;
	g->kw = d->kw;
	g->taps = d->kh * d->kw;
	for (int64_t ki = 0; ki < d->kh; ki++)
		g->dy[ki] = (int32_t)(ki * d->dh - d->ph);
	for (int64_t kj = 0; kj < d->kw; kj++)
		g->dx[kj] = (int32_t)(kj * d->dw - d->pw);
	for (int64_t ki = 0; ki < d->kh; ki++)
		for (int64_t kj = 0; kj < d->kw; kj++)
			g->toff[ki * d->kw + kj] = g->dy[ki] * g->w + g->dx[kj];
}

/* The load masks of nv vectors from vector vec on, for every tap, into
 * out[v * taps + tap]: a lane
 * is on when its position is an output and its tap's input row and column
 * are inside the image.  Rows come from the positions through a float
 * division (exact after one correction either way below 2^22). */
static inline __attribute__((always_inline, target("avx512f"))) void
tile_masks(const struct masked_geom *g, int nv, int64_t vec, __mmask16 *out)
{
	const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
	const __m512i wv = _mm512_set1_epi32((int)g->w), hv = _mm512_set1_epi32((int)g->h);
	const __m512i one = _mm512_set1_epi32(1), zero = _mm512_setzero_si512();
	const __m512 inv_w = _mm512_set1_ps(1.0f / (float)g->w);

	for (int v = 0; v < nv; v++) {
		__m512i p = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(16 * (vec + v))));
		__m512i oy = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(p), inv_w));
		__m512i ox = _mm512_sub_epi32(p, _mm512_mullo_epi32(oy, wv));
		__mmask16 under = _mm512_cmplt_epi32_mask(ox, zero), live, rows[MASKED_K_MAX],
			  cols[MASKED_K_MAX], over;

		oy = _mm512_mask_sub_epi32(oy, under, oy, one);
		ox = _mm512_mask_add_epi32(ox, under, ox, wv);
		over = _mm512_cmpge_epi32_mask(ox, wv);
		oy = _mm512_mask_add_epi32(oy, over, oy, one);
		ox = _mm512_mask_sub_epi32(ox, over, ox, wv);
		live = _mm512_cmplt_epi32_mask(p, _mm512_set1_epi32((int)g->p));
		for (int64_t ki = 0; ki < g->kh; ki++)
			rows[ki] = live & _mm512_cmplt_epu32_mask(_mm512_add_epi32(oy, _mm512_set1_epi32(g->dy[ki])),
								   hv);
		for (int64_t kj = 0; kj < g->kw; kj++)
			cols[kj] = _mm512_cmplt_epu32_mask(_mm512_add_epi32(ox, _mm512_set1_epi32(g->dx[kj])), wv);
		for (int64_t ki = 0; ki < g->kh; ki++)
			for (int64_t kj = 0; kj < g->kw; kj++)
				out[v * g->taps + ki * g->kw + kj] = rows[ki] & cols[kj];
	}
}

static __attribute__((target("avx512f"))) void mask_table(const struct masked_geom *g, int64_t vectors,
							   __mmask16 *out)
{
	for (int64_t v = 0; v < vectors; v++)
		tile_masks(g, 1, v, out + v * g->taps);
}

/* What follows the sums, in this order: the residual, ReLU, the cap. */
struct masked_epilogue {
	const float *r;                      /* the block's residual planes, or NULL */
	int relu;
	float cap;                           /* 0: none */
};

/* ob output channels by nv vectors from vector vec on; constant ob and nv
 * after inlining, so the accumulators stay in registers.  x is the
 * group's first input plane, w the first filter, y the first output plane
 * (planes of g->p floats); table holds every vector's masks, or is NULL
 * and the tile makes its own. */
static inline __attribute__((always_inline, target("avx512f"))) void
masked_tile(int ob, int nv, const struct masked_geom *g, const float *x, int64_t cg, const float *w,
	    const float *bias, int64_t vec, const __mmask16 *table, const struct masked_epilogue *e, float *y)
{
	__m512 acc[MASKED_OB][MASKED_NV];
	__mmask16 own[MASKED_NV * MASKED_K_MAX * MASKED_K_MAX];
	const int64_t taps = g->taps, wstride = cg * taps, p0 = 16 * vec;
	const __mmask16 *m = table ? table + vec * taps : own;
	/* Read before the stores, which may alias a float field. */
	const float *r = e->r, cap = e->cap;
	const int relu = e->relu;

	if (!table)
		tile_masks(g, nv, vec, own);
#pragma GCC unroll 8
	for (int j = 0; j < ob; j++) {
		__m512 b0 = _mm512_set1_ps(bias ? bias[j] : 0.0f);

#pragma GCC unroll 4
		for (int v = 0; v < nv; v++)
			acc[j][v] = b0;
	}
	for (int64_t c0 = 0; c0 < cg; c0 += MASKED_CB) {
		const int64_t c1 = c0 + MASKED_CB < cg ? c0 + MASKED_CB : cg;

		for (int64_t t = 0; t < taps; t++) {
			/* The address of a lane before the plane (masked off) is
			 * formed as an integer: no out-of-object pointer. */
			uintptr_t xa = (uintptr_t)(x + c0 * g->in_plane) +
				       (uintptr_t)((p0 + g->toff[t]) * (int64_t)sizeof *x);
			const uintptr_t xstep = (uintptr_t)(g->in_plane * (int64_t)sizeof *x);
			const float *wt = w + c0 * taps + t;
			/* In mask registers through the channels: GCC reloads an
			 * array's masks every channel. */
			const __mmask16 m0 = m[t], m1 = nv > 1 ? m[taps + t] : 0, m2 = nv > 2 ? m[2 * taps + t] : 0;

			for (int64_t c = c0; c < c1; c++, xa += xstep, wt += taps) {
				__m512 xv[MASKED_NV];

#pragma GCC unroll 4
				for (int v = 0; v < nv; v++)
					xv[v] = _mm512_maskz_loadu_ps(v == 0 ? m0 : v == 1 ? m1 : m2,
								      (const void *)(xa + 64 * (uintptr_t)v));
#pragma GCC unroll 8
				for (int j = 0; j < ob; j++) {
					__m512 wb = _mm512_set1_ps(wt[j * wstride]);

#pragma GCC unroll 4
					for (int v = 0; v < nv; v++)
						acc[j][v] = _mm512_fmadd_ps(wb, xv[v], acc[j][v]);
				}
			}
		}
	}
#pragma GCC unroll 8
	for (int j = 0; j < ob; j++)
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++) {
			const int64_t at = j * g->p + p0 + 16 * v, left = g->p - (p0 + 16 * v);
			const __mmask16 keep = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
			__m512 s = acc[j][v];

			if (r)
				s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(keep, r + at));
			if (relu)
				s = _mm512_max_ps(s, _mm512_setzero_ps());
			if (cap > 0.0f)
				s = _mm512_min_ps(s, _mm512_set1_ps(cap));
			_mm512_mask_storeu_ps(y + at, keep, s);
		}
}

/* Tiles along the planes; one input channel a group (the first layer, a
 * depthwise layer) gets its own copy without the channel loop. */
#define MASKED_ROWS(OB)                                                                              \
	static __attribute__((target("avx512f"))) void masked_rows_##OB(                             \
		const struct masked_geom *g, const float *x, int64_t cg, const float *w,             \
		const float *bias, const __mmask16 *table, const struct masked_epilogue *e, float *y) \
	{                                                                                            \
		const int64_t vectors = (g->p + 15) / 16;                                            \
		int64_t v = 0;                                                                       \
                                                                                                     \
		if (cg == 1) {                                                                       \
			for (; v + MASKED_NV <= vectors; v += MASKED_NV)                             \
				masked_tile(OB, MASKED_NV, g, x, 1, w, bias, v, table, e, y);        \
		} else {                                                                             \
			for (; v + MASKED_NV <= vectors; v += MASKED_NV)                             \
				masked_tile(OB, MASKED_NV, g, x, cg, w, bias, v, table, e, y);       \
		}                                                                                    \
		if (vectors - v == 2)                                                                \
			masked_tile(OB, 2, g, x, cg, w, bias, v, table, e, y);                       \
		else if (vectors - v == 1)                                                           \
			masked_tile(OB, 1, g, x, cg, w, bias, v, table, e, y);                       \
	}

MASKED_ROWS(8)
MASKED_ROWS(4)
MASKED_ROWS(2)
MASKED_ROWS(1)

/* Output channels [o0, o0 + ob) of one image, all in one group, into y
 * (the image's output planes) or, pooled, through the thread's planes op,
 * with the image's argmax when am is not NULL. */
static void masked_block(const ds_conv2d_dims *d, const struct masked_geom *g, const __mmask16 *table,
			 const float *x, const float *w, const float *b, const float *r, int64_t o0, int64_t ob,
			 float *op, float *y, int32_t *am)
{
	const int64_t cg = d->c / d->groups, og = d->o / d->groups, grp = o0 / og;
	const float *xg = x + grp * cg * g->in_plane;
	const int64_t pooled = (d->oh / 2) * (d->ow / 2);
	float *dst = d->pool ? op : y + o0 * g->p;

	for (int64_t j = 0; j < ob;) {
		const int64_t left = ob - j;
		const float *wj = w + (o0 + j) * cg * g->taps, *bj = b ? b + o0 + j : NULL;
		const struct masked_epilogue e = { r ? r + (o0 + j) * g->p : NULL, d->relu, d->relu ? d->cap : 0.0f };
		float *yj = dst + j * g->p;

		if (left >= 8) {
			masked_rows_8(g, xg, cg, wj, bj, table, &e, yj);
			j += 8;
		} else if (left >= 4) {
			masked_rows_4(g, xg, cg, wj, bj, table, &e, yj);
			j += 4;
		} else if (left >= 2) {
			masked_rows_2(g, xg, cg, wj, bj, table, &e, yj);
			j += 2;
		} else {
			masked_rows_1(g, xg, cg, wj, bj, table, &e, yj);
			j += 1;
		}
	}
	for (int64_t j = 0; d->pool && j < ob; j++) {
		if (am)
			ds_max_pool_2x2_plane_idx(op + j * g->p, d->ow, d->ow, d->oh / 2, d->ow / 2, y + (o0 + j) * pooled,
						  am + (o0 + j) * pooled);
		else if (d->relu)
			ds_max_pool_relu_2x2_plane(op + j * g->p, d->ow, d->oh / 2, d->ow / 2,
						   y + (o0 + j) * pooled);
		else
			ds_max_pool_2x2_plane(op + j * g->p, d->ow, d->oh / 2, d->ow / 2, y + (o0 + j) * pooled);
	}
}
#endif

/* (image, block of output channels) pairs are shared out in contiguous
 * runs: whole images a thread when there are enough of them. */
void ds_conv2d_masked_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			      const float *r, float *y, float *ws, int64_t slice, int threads)
{
#ifdef HAVE_MASKED_AVX512
	struct masked_geom g;
	const int64_t og = d->o / d->groups, per = (og + MASKED_OB - 1) / MASKED_OB;
	const int64_t blocks = d->groups * per, items = d->n * blocks;
	const int64_t in_img = d->c * d->h * d->w, out_p = d->oh * d->ow;
	const int64_t out_img = d->o * (d->pool ? (d->oh / 2) * (d->ow / 2) : out_p);
	const int64_t vectors = (out_p + 15) / 16;

	masked_geom(d, &g);
#pragma omp parallel num_threads(threads)
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size();
		float *op = ws + ds_kernel_slice() * slice;
		__mmask16 own[MASKED_TABLE_MAX];
		const __mmask16 *table = NULL;

		/* The masks once a call where they fit, rather than once a tile
		 * and block: with one input channel they cost as much as the
		 * sums. */
		if (vectors * g.taps <= MASKED_TABLE_MAX) {
			mask_table(&g, vectors, own);
			table = own;
		}

		for (int64_t it = items * t / nt; it < items * (t + 1) / nt; it++) {
			const int64_t i = it / blocks, blk = it % blocks, grp = blk / per;
			const int64_t o0 = grp * og + blk % per * MASKED_OB;
			const int64_t ob = og - blk % per * MASKED_OB < MASKED_OB ? og - blk % per * MASKED_OB : MASKED_OB;

			masked_block(d, &g, table, x + i * in_img, w, b, r ? r + i * d->o * out_p : NULL, o0, ob, op,
				     y + i * out_img, d->argmax ? d->argmax + i * out_img : NULL);
		}
	}
#else
	(void)d, (void)x, (void)w, (void)b, (void)r, (void)y, (void)ws, (void)slice, (void)threads;
#endif
}
