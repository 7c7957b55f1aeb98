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
 * depend on the tile and the tap only; they are made once a call from the
 * lanes' rows and columns where they fit a table, else once a tile.  Outputs go straight to y with the bias, the
 * residual and ReLU/ReLU6 applied in registers.
 *
 * A tile is up to 8 output channels by 3 vectors of positions (24
 * accumulators); per tap and input channel, 3 masked loads and 8
 * broadcasts feed 24 FMAs.  Taps are the outer loop so that a tap's masks
 * stay in mask registers over the input channels, taken in blocks so that
 * a block's rows stay in L1 through the taps.
 *
 * Small planes fill their vectors badly one image at a time: 7x7 is three
 * vectors and one lane, 4x4 a single vector, and a tile of one vector
 * (8 accumulators, a chain of FMAs a channel) costs nearly what a tile of
 * three does.  So the images are taken a run at a time, about 768
 * positions, and the positions numbered through the run image after
 * image: a tile's vectors may lie in different images (an address each),
 * and a vector that crosses from one image into the next is two masked
 * loads, the next image's lanes from the same offset plus the distance
 * between the images, which is the same for every vector.  The masks then
 * also split a vector's lanes between its two images.  Alone, 64 images, one
 * thread: 7x7 64 -> 64 went from 104 to 1xx GFLOP/s, 4x4 128 -> 128 from 96
 * to 1xx, 14x14 32 -> 32 from 124 to 1xx.
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
#define MASKED_TABLE_MAX 8192        /* masks a thread keeps for a run (16 KB of stack) */
#define MASKED_RUN 768               /* output positions a run of images, about */
#define MASKED_SPLIT ((int64_t)1 << 17)  /* floats of a thread's images split at stride 2 */

/* What both strides need: positions and offsets are formed in 32-bit lanes
 * and floats (a run has fewer than 2 * MASKED_RUN positions or one image),
 * and masked_tile names the masks of at most MASKED_K_MAX taps a side. */
static int masked_shape_ok(const ds_conv2d_dims *d)
{
#ifdef HAVE_MASKED_AVX512
	return d->oh > 0 && d->ow > 0 && d->kh <= MASKED_K_MAX && d->kw <= MASKED_K_MAX &&
	       d->h * d->w < ((int64_t)1 << 22) && d->oh * d->ow < ((int64_t)1 << 22) &&
	       __builtin_cpu_supports("avx512f");
#else
	(void)d;
	return 0;
#endif
}

int ds_conv2d_masked_fits(const ds_conv2d_dims *d)
{
	return d->sh == 1 && d->sw == 1 && d->ow == d->w && masked_shape_ok(d);
}

#ifdef HAVE_MASKED_AVX512
struct masked_geom {
	int64_t h, w;                        /* the input plane */
	int64_t p;                           /* output positions a plane: oh * w */
	int64_t in_plane;                    /* h * w */
	int64_t kh, kw, taps;
	int64_t per_vec;                     /* masks a vector: taps for each of its two
					      * images, then the two images' live lanes */
	int64_t x_img;                       /* floats from an image's input to the next's */
	int32_t dy[MASKED_K_MAX], dx[MASKED_K_MAX];  /* a tap's input row and column from its output's */
	int64_t toff[MASKED_K_MAX * MASKED_K_MAX];   /* dy * w + dx */
};

/* A run of images and where its outputs go. */
struct masked_run {
	int64_t pos;                         /* output positions: images * p */
	const __mmask16 *table;              /* every vector's masks, or NULL */
	int64_t y_img, r_img;                /* floats from an image's output (residual) to the next's */
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
	g->per_vec = 2 * g->taps + 2;
	g->x_img = d->c * g->in_plane;
	for (int64_t ki = 0; ki < d->kh; ki++)
		g->dy[ki] = (int32_t)(ki * d->dh - d->ph);
	for (int64_t kj = 0; kj < d->kw; kj++)
		g->dx[kj] = (int32_t)(kj * d->dw - d->pw);
	for (int64_t ki = 0; ki < d->kh; ki++)
		for (int64_t kj = 0; kj < d->kw; kj++)
			g->toff[ki * d->kw + kj] = g->dy[ki] * g->w + g->dx[kj];
}

/* a / b and a % b in 32-bit lanes through a float division, exact after one
 * correction either way below 2^22. */
static inline __attribute__((always_inline, target("avx512f"))) __m512i
lane_divmod(__m512i a, int32_t b, __m512i *rem)
{
	const __m512i bv = _mm512_set1_epi32(b), one = _mm512_set1_epi32(1);
	__m512i q = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(1.0f / (float)b)));
	__m512i r = _mm512_sub_epi32(a, _mm512_mullo_epi32(q, bv));
	__mmask16 under = _mm512_cmplt_epi32_mask(r, _mm512_setzero_si512()), over;

	q = _mm512_mask_sub_epi32(q, under, q, one);
	r = _mm512_mask_add_epi32(r, under, r, bv);
	over = _mm512_cmpge_epi32_mask(r, bv);
	q = _mm512_mask_add_epi32(q, over, q, one);
	*rem = _mm512_mask_sub_epi32(r, over, r, bv);
	return q;
}

/* The masks of vector vec of a run of pos positions, into out[per_vec]: for
 * each tap, the lanes in the vector's first image whose tap's input row
 * and column are inside the image, then the same for the lanes in the
 * image after it; then the live lanes of each image. */
static inline __attribute__((always_inline, target("avx512f"))) void
vector_masks(const struct masked_geom *g, int64_t pos, int64_t vec, __mmask16 *out)
{
	const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
	const __m512i wv = _mm512_set1_epi32((int)g->w), hv = _mm512_set1_epi32((int)g->h);
	const __m512i at = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(16 * vec)));
	__m512i q, oy, ox;
	__m512i img = lane_divmod(at, (int32_t)g->p, &q);
	__mmask16 live = _mm512_cmplt_epi32_mask(at, _mm512_set1_epi32((int)pos));
	__mmask16 first = live & _mm512_cmpeq_epi32_mask(img, _mm512_set1_epi32((int)(16 * vec / g->p)));
	__mmask16 next = live & (__mmask16)~first, rows[MASKED_K_MAX], cols[MASKED_K_MAX];

	oy = lane_divmod(q, (int32_t)g->w, &ox);
	for (int64_t ki = 0; ki < g->kh; ki++)
		rows[ki] = _mm512_cmplt_epu32_mask(_mm512_add_epi32(oy, _mm512_set1_epi32(g->dy[ki])), hv);
	for (int64_t kj = 0; kj < g->kw; kj++)
		cols[kj] = _mm512_cmplt_epu32_mask(_mm512_add_epi32(ox, _mm512_set1_epi32(g->dx[kj])), wv);
	for (int64_t ki = 0; ki < g->kh; ki++)
		for (int64_t kj = 0; kj < g->kw; kj++) {
			out[ki * g->kw + kj] = first & rows[ki] & cols[kj];
			out[g->taps + ki * g->kw + kj] = next & rows[ki] & cols[kj];
		}
	out[2 * g->taps] = first;
	out[2 * g->taps + 1] = next;
}

static __attribute__((target("avx512f"))) void mask_table(const struct masked_geom *g, int64_t pos,
							   __mmask16 *out)
{
	for (int64_t v = 0; v < (pos + 15) / 16; v++)
		vector_masks(g, pos, v, out + v * g->per_vec);
}

/* What follows the sums, in this order: the residual, ReLU, the cap. */
struct masked_epilogue {
	const float *r;                      /* the block's first residual plane of the run, or NULL */
	int relu;
	float cap;                           /* 0: none */
};

/* How a tile's vectors lie in the run: consecutive in one image (one
 * address, the others at fixed offsets), each in one image (an address
 * each), the first
 * across two images (a second load for it alone: the second load merges
 * into the first at the cost of a blend on an FMA port), or any of them
 * across two (a second load for each: planes of fewer than 48 positions).
 * A tile whose one crossing vector is not its first swaps it there: the
 * vectors are slots, each with its own addresses and masks. */
enum { TILE_FLAT, TILE_SPLIT, TILE_CROSS_FIRST, TILE_CROSS };

static inline __attribute__((always_inline)) int crosses(int kind, int v)
{
	return kind == TILE_CROSS || (kind == TILE_CROSS_FIRST && v == 0);
}

/* Where a vector starts: its image in the run and position in the image,
 * and its number in the run. */
struct vec_at {
	int64_t img, q, idx;
};

/* ob output channels by the nv vectors at[0..nv); constant ob, nv, kind
 * after inlining, so the accumulators stay in registers.  x is the group's
 * first input plane of the run's first image, w the first filter, y the
 * first output plane (planes of g->p floats, images y_img apart). */
static inline __attribute__((always_inline, target("avx512f"))) void
masked_tile(int ob, int nv, int kind, const struct masked_geom *g, const struct masked_run *u, const float *x,
	    int64_t cg, const float *w, const float *bias, const struct vec_at *at, const struct masked_epilogue *e,
	    float *y)
{
	__m512 acc[MASKED_OB][MASKED_NV];
	__mmask16 own[MASKED_NV * (2 * MASKED_K_MAX * MASKED_K_MAX + 2)];
	const int64_t taps = g->taps, pv = g->per_vec, wstride = cg * taps;
	const __mmask16 *ms[MASKED_NV];
	int64_t xo[MASKED_NV], yo[MASKED_NV], ro[MASKED_NV];
	/* The next image's lanes of a crossing vector, from its first's. */
	const intptr_t xnext = (intptr_t)((g->x_img - g->p) * (int64_t)sizeof *x);
	/* Read before the stores, which may alias a float field. */
	const float *r = e->r, cap = e->cap;
	const int relu = e->relu;

	for (int v = 0; v < nv; v++) {
		if (u->table) {
			ms[v] = u->table + at[v].idx * pv;
		} else {
			vector_masks(g, u->pos, at[v].idx, own + v * pv);
			ms[v] = own + v * pv;
		}
		xo[v] = at[v].img * g->x_img + at[v].q;
		yo[v] = at[v].img * u->y_img + at[v].q;
		ro[v] = at[v].img * u->r_img + at[v].q;
	}
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
				       (uintptr_t)((xo[0] + g->toff[t]) * (int64_t)sizeof *x);
			const uintptr_t xstep = (uintptr_t)(g->in_plane * (int64_t)sizeof *x);
			const intptr_t d1 = kind == TILE_FLAT ? 64 : (intptr_t)((xo[nv > 1] - xo[0]) * (int64_t)sizeof *x);
			const intptr_t d2 = kind == TILE_FLAT ? 128
							      : (intptr_t)((xo[nv > 2 ? 2 : 0] - xo[0]) * (int64_t)sizeof *x);
			const float *wt = w + c0 * taps + t;
			/* In mask registers through the channels: GCC reloads an
			 * array's masks every channel. */
			const __mmask16 m0 = ms[0][t], m1 = nv > 1 ? ms[nv > 1][t] : 0, m2 = nv > 2 ? ms[nv > 2 ? 2 : 0][t] : 0;
			const __mmask16 n0 = crosses(kind, 0) ? ms[0][taps + t] : 0;
			const __mmask16 n1 = crosses(kind, 1) && nv > 1 ? ms[nv > 1][taps + t] : 0;
			const __mmask16 n2 = crosses(kind, 2) && nv > 2 ? ms[nv > 2 ? 2 : 0][taps + t] : 0;

			for (int64_t c = c0; c < c1; c++, xa += xstep, wt += taps) {
				__m512 xv[MASKED_NV];

#pragma GCC unroll 4
				for (int v = 0; v < nv; v++) {
					const uintptr_t a = xa + (uintptr_t)(v == 0 ? 0 : v == 1 ? d1 : d2);

					xv[v] = _mm512_maskz_loadu_ps(v == 0 ? m0 : v == 1 ? m1 : m2, (const void *)a);
					if (crosses(kind, v))
						xv[v] = _mm512_mask_loadu_ps(xv[v], v == 0 ? n0 : v == 1 ? n1 : n2,
									     (const void *)(a + (uintptr_t)xnext));
				}
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
#pragma GCC unroll 4
	for (int v = 0; v < nv; v++) {
		const __mmask16 first = ms[v][2 * taps], next = kind <= TILE_SPLIT ? 0 : ms[v][2 * taps + 1];

#pragma GCC unroll 8
		for (int j = 0; j < ob; j++) {
			float *yv = y + j * g->p + yo[v];
			__m512 s = acc[j][v];

			if (r) {
				const float *rv = r + j * g->p + ro[v];
				__m512 res = _mm512_maskz_loadu_ps(first, rv);

				if (next)
					res = _mm512_mask_loadu_ps(res, next, rv + u->r_img - g->p);
				s = _mm512_add_ps(s, res);
			}
			if (relu)
				s = _mm512_max_ps(s, _mm512_setzero_ps());
			if (cap > 0.0f)
				s = _mm512_min_ps(s, _mm512_set1_ps(cap));
			_mm512_mask_storeu_ps(yv, first, s);
			if (next)
				_mm512_mask_storeu_ps(yv + u->y_img - g->p, next, s);
		}
	}
}

/* How the nv vectors at[] lie in the run; one crossing vector is swapped
 * into the first slot. */
static int tile_kind(const struct masked_geom *g, const struct masked_run *u, struct vec_at *at, int nv)
{
	int kind = TILE_SPLIT, cross = -1, flat = 1;

	for (int v = 0; v < nv; v++) {
		const int64_t a = 16 * at[v].idx, live = u->pos - a < 16 ? u->pos - a : 16;

		flat &= at[v].img == at[0].img;
		if (live > 0 && at[v].q + live > g->p) {
			kind = kind == TILE_SPLIT ? TILE_CROSS_FIRST : TILE_CROSS;
			cross = v;
		}
	}
	if (kind == TILE_SPLIT && flat)
		return TILE_FLAT;
	if (kind == TILE_CROSS_FIRST && cross > 0) {
		struct vec_at t = at[0];

		at[0] = at[cross];
		at[cross] = t;
	}
	return kind;
}

/* Each tile variant a function of its own: inlined into one function,
 * the register allocator's time grew past a minute under the sanitizers. */
#define MASKED_TILE_FN(NAME, OB, NV, KIND, ONE)                                                          \
	static __attribute__((noinline, target("avx512f"))) void NAME(                                   \
		const struct masked_geom *g, const struct masked_run *u, const float *x, int64_t cg,     \
		const float *w, const float *bias, const struct vec_at *at, const struct masked_epilogue *e, \
		float *y)                                                                                \
	{                                                                                                \
		masked_tile(OB, NV, KIND, g, u, x, ONE ? 1 : cg, w, bias, at, e, y);                     \
	}

MASKED_TILE_FN(tile_flat3, MASKED_OB, 3, TILE_FLAT, 0)
MASKED_TILE_FN(tile_split3, MASKED_OB, 3, TILE_SPLIT, 0)
MASKED_TILE_FN(tile_split2, MASKED_OB, 2, TILE_SPLIT, 0)
MASKED_TILE_FN(tile_split1, MASKED_OB, 1, TILE_SPLIT, 0)
MASKED_TILE_FN(tile_one3, MASKED_OB, 3, TILE_SPLIT, 1)
MASKED_TILE_FN(tile_one2, MASKED_OB, 2, TILE_SPLIT, 1)
MASKED_TILE_FN(tile_one1, MASKED_OB, 1, TILE_SPLIT, 1)
MASKED_TILE_FN(tile_first3, MASKED_OB, 3, TILE_CROSS_FIRST, 0)
MASKED_TILE_FN(tile_cross3, MASKED_OB, 3, TILE_CROSS, 0)
MASKED_TILE_FN(tile_cross2, MASKED_OB, 2, TILE_CROSS, 0)
MASKED_TILE_FN(tile_cross1, MASKED_OB, 1, TILE_CROSS, 0)
MASKED_TILE_FN(tile_part4, 4, 1, TILE_CROSS, 0)
MASKED_TILE_FN(tile_part2, 2, 1, TILE_CROSS, 0)
MASKED_TILE_FN(tile_part1, 1, 1, TILE_CROSS, 0)

/* One tile of 8 channels, of any kind; a first layer's (or a depthwise
 * layer's) one input channel a group gets code without the channel loop
 * where no vector crosses. */
static void masked_any(int nv, const struct masked_geom *g, const struct masked_run *u, const float *x, int64_t cg,
		       const float *w, const float *bias, struct vec_at *at, const struct masked_epilogue *e, float *y)
{
	const int kind = tile_kind(g, u, at, nv);

	if (kind <= TILE_SPLIT && cg == 1)
		(nv == 3 ? tile_one3 : nv == 2 ? tile_one2 : tile_one1)(g, u, x, cg, w, bias, at, e, y);
	else if (kind == TILE_FLAT && nv == 3)
		tile_flat3(g, u, x, cg, w, bias, at, e, y);
	else if (kind <= TILE_SPLIT)
		(nv == 3 ? tile_split3 : nv == 2 ? tile_split2 : tile_split1)(g, u, x, cg, w, bias, at, e, y);
	else if (nv == 3 && kind == TILE_CROSS_FIRST)
		tile_first3(g, u, x, cg, w, bias, at, e, y);
	else
		(nv == 3 ? tile_cross3 : nv == 2 ? tile_cross2 : tile_cross1)(g, u, x, cg, w, bias, at, e, y);
}

/* Vectors a tile, with left vectors to go: three, and two of two rather
 * than one of one at the end. */
static int tile_vectors(int64_t left)
{
	return left >= 5 || left == 3 ? 3 : left == 1 ? 1 : 2;
}

/* The next vector's start, from cur's (p is at least 16 when a run has
 * several images, so it is at most one image on). */
static void vec_next(const struct masked_geom *g, struct vec_at *cur)
{
	cur->q += 16;
	cur->idx++;
	if (cur->q >= g->p) {
		cur->q -= g->p;
		cur->img++;
	}
}

/* Tiles of ob channels along the run: of 8, in tiles of three vectors
 * and two of two rather than one of one at the end; fewer than 8 (a
 * layer's last channels, when it has not a multiple of 8), one vector a
 * tile in the crossing tile's code, which is right for every vector (the
 * second load finds no lanes). */
static void masked_rows(int64_t ob, const struct masked_geom *g, const struct masked_run *u, const float *x,
			int64_t cg, const float *w, const float *bias, const struct masked_epilogue *e, float *y,
			int64_t v0, int64_t v1)
{
	struct vec_at cur = { v0 * 16 / g->p, v0 * 16 % g->p, v0 };

	for (int64_t v = v0; v < v1;) {
		const int nv = ob == MASKED_OB ? tile_vectors(v1 - v) : 1;
		struct vec_at at[MASKED_NV];

		for (int i = 0; i < nv; i++) {
			at[i] = cur;
			vec_next(g, &cur);
		}
		if (ob == MASKED_OB)
			masked_any(nv, g, u, x, cg, w, bias, at, e, y);
		else
			(ob == 4 ? tile_part4 : ob == 2 ? tile_part2 : tile_part1)(g, u, x, cg, w, bias, at, e, y);
		v += nv;
	}
}

/* Output channels [o0, o0 + ob), all in one group, of the k images of a run
 * (its vectors [v0, v1), all of them with a pool) into y (the run's first
 * output image) or, pooled, through the thread's planes op ([image][8][p]),
 * with the argmax when am is not NULL. */
static void masked_block(const ds_conv2d_dims *d, const struct masked_geom *g, const struct masked_run *run,
			 int64_t k, const float *x, const float *w, const float *b, const float *r, int64_t o0,
			 int64_t ob, float *op, float *y, int32_t *am, int64_t v0, int64_t v1)
{
	const int64_t cg = d->c / d->groups, og = d->o / d->groups, grp = o0 / og;
	const float *xg = x + grp * cg * g->in_plane;
	const int64_t pooled = (d->oh / 2) * (d->ow / 2);
	struct masked_run u = *run;
	float *dst = d->pool ? op : y + o0 * g->p;

	u.y_img = d->pool ? MASKED_OB * g->p : d->o * g->p;
	u.r_img = d->o * g->p;
	for (int64_t j = 0; j < ob;) {
		const int64_t left = ob - j;
		const float *wj = w + (o0 + j) * cg * g->taps, *bj = b ? b + o0 + j : NULL;
		const struct masked_epilogue e = { r ? r + (o0 + j) * g->p : NULL, d->relu, d->relu ? d->cap : 0.0f };
		float *yj = dst + j * g->p;

		const int64_t step = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;

		masked_rows(step, g, &u, xg, cg, wj, bj, &e, yj, v0, v1);
		j += step;
	}
	for (int64_t i = 0; d->pool && i < k; i++)
		for (int64_t j = 0; j < ob; j++) {
			const float *plane = op + (i * MASKED_OB + j) * g->p;
			const int64_t at = (i * d->o + o0 + j) * pooled;

			if (am)
				ds_max_pool_2x2_plane_idx(plane, d->ow, d->ow, d->oh / 2, d->ow / 2, y + at, am + at);
			else if (d->relu)
				ds_max_pool_relu_2x2_plane(plane, d->ow, d->oh / 2, d->ow / 2, y + at);
			else
				ds_max_pool_2x2_plane(plane, d->ow, d->oh / 2, d->ow / 2, y + at);
		}
}

/* Images a run at most: about MASKED_RUN positions, as many as a fused
 * pool's planes (or the split images at stride 2) fit in the thread's
 * slice, one when a vector could span three images or the masks would not
 * fit the table. */
static int64_t run_limit(const ds_conv2d_dims *d, const struct masked_geom *g, int64_t slice)
{
	int64_t k = (MASKED_RUN + g->p - 1) / g->p;

	const int64_t per_image = (d->pool ? MASKED_OB * g->p : 0) + (d->sh > 1 ? g->x_img : 0);

	if (g->p < 16)
		return 1;
	if (per_image && k > slice / per_image)
		k = slice / per_image;
	while (k > 1 && (k * g->p + 15) / 16 * g->per_vec > MASKED_TABLE_MAX)
		k--;
	return k > 1 ? k : 1;
}

/* Images a run: runs of equal size under the limit, so that threads taking
 * equal numbers of runs get equal work. */
static int64_t run_images(const ds_conv2d_dims *d, const struct masked_geom *g, int64_t slice)
{
	const int64_t runs = (d->n + run_limit(d, g, slice) - 1) / run_limit(d, g, slice);

	return runs > 0 ? (d->n + runs - 1) / runs : 1;
}

/* ------------------------------------------------------------- stride 2
 *
 * At stride 2, output (oy, ox) reads tap (ki, kj) at input row
 * 2 oy + ki dh - ph: row oy + ry of the image's rows of parity
 * a = (ki dh - ph) mod 2, with ry = floor((ki dh - ph) / 2), and the same
 * for columns.  Split into its phases (rows of parity a by columns of
 * parity b, each plane oh x ow, zero past the image), an image is the
 * stride-1 problem above with a tap's phase in its offset.  When no tap
 * reads past its output's row or column (ry, rx <= 0: padding 1 for 3x3
 * filters, 0 for 1x1), only the rows and columns before the first need
 * masks, which the stride-1 masks give.  The split is one pass over the
 * input a run; the direct kernel of conv.c padded each image into its
 * phases too, but computed rows of the padded grid, one image at a time.
 * Alone, 64 images, one thread: 3x3 32 -> 64 from 14x14 went from 76 to
 * 102 GFLOP/s, 3x3 64 -> 128 from 7x7 from 52 to 102, 1x1 32 -> 64 from
 * 14x14 from 40 to 68. */

struct phases {
	int rows[2], cols[2];                /* the parities used, rows then columns */
	int nr, nc;
};

static int parity(int64_t r)
{
	return (int)(r & 1);
}

static void used_phases(const ds_conv2d_dims *d, struct phases *ph)
{
	int row[2] = { 0, 0 }, col[2] = { 0, 0 };

	for (int64_t ki = 0; ki < d->kh; ki++)
		row[parity(ki * d->dh - d->ph)] = 1;
	for (int64_t kj = 0; kj < d->kw; kj++)
		col[parity(kj * d->dw - d->pw)] = 1;
	ph->nr = ph->nc = 0;
	for (int a = 0; a < 2; a++) {
		if (row[a])
			ph->rows[ph->nr++] = a;
		if (col[a])
			ph->cols[ph->nc++] = a;
	}
}

static int64_t phase_index(const struct phases *ph, int a, int b)
{
	return (ph->nr == 2 ? a : 0) * ph->nc + (ph->nc == 2 ? b : 0);
}

static void strided_geom(const ds_conv2d_dims *d, const struct phases *ph, struct masked_geom *g)
{
	g->h = d->oh;
	g->w = d->ow;
	g->p = d->oh * d->ow;
	g->in_plane = ph->nr * ph->nc * g->p;
	g->kh = d->kh;
	g->kw = d->kw;
	g->taps = d->kh * d->kw;
	g->per_vec = 2 * g->taps + 2;
	g->x_img = d->c * g->in_plane;
	for (int64_t ki = 0; ki < d->kh; ki++) {
		int64_t r = ki * d->dh - d->ph;

		g->dy[ki] = (int32_t)((r - parity(r)) / 2);
	}
	for (int64_t kj = 0; kj < d->kw; kj++) {
		int64_t r = kj * d->dw - d->pw;

		g->dx[kj] = (int32_t)((r - parity(r)) / 2);
	}
	for (int64_t ki = 0; ki < d->kh; ki++)
		for (int64_t kj = 0; kj < d->kw; kj++)
			g->toff[ki * d->kw + kj] =
				phase_index(ph, parity(ki * d->dh - d->ph), parity(kj * d->dw - d->pw)) * g->p +
				g->dy[ki] * g->w + g->dx[kj];
}

static __mmask16 first_lanes(int64_t n)
{
	return (__mmask16)(n <= 0 ? 0 : n >= 16 ? 0xffff : (1u << n) - 1);
}

/* Image x (c planes of h x w) into its phases, out[c][phase][oh][ow]: a
 * row's 32 floats are two masked loads and a permute each phase.  Rows
 * past the image (the last odd row of an odd height) are zeros. */
static __attribute__((target("avx512f"))) void split_image(const ds_conv2d_dims *d, const struct phases *ph,
							    const float *x, float *out)
{
	const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
	const __m512i pick0 = ph->cols[0] ? odd : even;
	const int64_t plane = d->oh * d->ow, nc = ph->nc;

	for (int64_t ox = 0; ox < d->ow; ox += 16) {
		/* Lanes past the row are not read. */
		const __mmask16 lo_m = first_lanes(d->w - 2 * ox), hi_m = first_lanes(d->w - 2 * ox - 16);
		const __mmask16 keep = first_lanes(d->ow - ox);

		for (int64_t c = 0; c < d->c; c++)
			for (int ia = 0; ia < ph->nr; ia++) {
				const int64_t a = ph->rows[ia];
				float *dst = out + (c * ph->nr + ia) * nc * plane + ox;
				uintptr_t src = (uintptr_t)(x + (c * d->h + a) * d->w + 2 * ox);

				for (int64_t oy = 0; oy < d->oh; oy++, dst += d->ow, src += (uintptr_t)(8 * d->w)) {
					const int in = 2 * oy + a < d->h;
					__m512 lo = _mm512_maskz_loadu_ps(in ? lo_m : 0, (const void *)src);
					__m512 hi = _mm512_maskz_loadu_ps(in ? hi_m : 0, (const void *)(src + 64));

					_mm512_mask_storeu_ps(dst, keep, _mm512_permutex2var_ps(lo, pick0, hi));
					if (nc == 2)
						_mm512_mask_storeu_ps(dst + plane, keep, _mm512_permutex2var_ps(lo, odd, hi));
				}
			}
	}
}
#endif

int ds_conv2d_masked_s2_fits(const ds_conv2d_dims *d)
{
	return d->sh == 2 && d->sw == 2 && (d->kh - 1) * d->dh - d->ph < 2 && (d->kw - 1) * d->dw - d->pw < 2 &&
	       masked_shape_ok(d);
}

#ifdef HAVE_MASKED_AVX512
/* Floats of a thread's split images and pool planes: the longest run's,
 * at most MASKED_SPLIT unless one image is more. */
static int64_t split_slice(const ds_conv2d_dims *d, const struct masked_geom *g)
{
	const int64_t per_image = g->x_img + (d->pool ? MASKED_OB * g->p : 0);

	return run_limit(d, g, MASKED_SPLIT > per_image ? MASKED_SPLIT : per_image) * per_image;
}
#endif

size_t ds_conv2d_masked_s2_workspace(const ds_conv2d_dims *d)
{
#ifdef HAVE_MASKED_AVX512
	struct phases ph;
	struct masked_geom g;

	used_phases(d, &ph);
	strided_geom(d, &ph, &g);
	return (size_t)(ds_kernel_threads() * split_slice(d, &g));
#else
	(void)d;
	return 0;
#endif
}

#ifdef HAVE_MASKED_AVX512
/* (run, block of output channels) pairs are shared out in contiguous
 * ranges: whole runs a thread when there are enough of them.  With ph, a
 * thread splits each run's images into its slice of ws first, before the
 * pool planes. */
static void masked_items(const ds_conv2d_dims *d, const struct masked_geom *g, const struct phases *ph,
			 const float *x, const float *w, const float *b, const float *r, float *y, float *ws,
			 int64_t slice, int threads)
{
	const int64_t og = d->o / d->groups, per = (og + MASKED_OB - 1) / MASKED_OB;
	const int64_t blocks = d->groups * per;
	const int64_t out_p = d->oh * d->ow, in_img = d->c * d->h * d->w;
	const int64_t out_img = d->o * (d->pool ? (d->oh / 2) * (d->ow / 2) : out_p);
	const int64_t k = run_images(d, g, slice), runs = (d->n + k - 1) / k;

#pragma omp parallel num_threads(threads)
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size();
		/* Fewer runs than threads (batch 1): each run's positions in
		 * parts, a thread taking all the blocks of its part, so that it
		 * reads the rows the layer before wrote on the same thread
		 * rather than all of them (a chain of 16-channel 28x28 layers,
		 * 2 threads: 24 us a layer split by blocks).  Not with a pool,
		 * whose planes are whole, nor split images. */
		const int64_t parts = d->pool || ph || runs >= nt ? 1 : nt / runs;
		const int64_t items = runs * parts * blocks;
		float *own_ws = ws + ds_kernel_slice() * slice;
		__mmask16 own[MASKED_TABLE_MAX];
		struct masked_run u = { 0 };
		int64_t table_k = 0, split_run = -1;

		for (int64_t it = items * t / nt; it < items * (t + 1) / nt; it++) {
			const int64_t run = it / (parts * blocks), part = it / blocks % parts, blk = it % blocks;
			const int64_t grp = blk / per;
			const int64_t i0 = run * k, kk = d->n - i0 < k ? d->n - i0 : k;
			const int64_t o0 = grp * og + blk % per * MASKED_OB;
			const int64_t ob = og - blk % per * MASKED_OB < MASKED_OB ? og - blk % per * MASKED_OB : MASKED_OB;

			/* The masks once a run's size where they fit, rather than
			 * once a tile and block: with one input channel they cost
			 * as much as the sums. */
			if (kk != table_k) {
				u.pos = kk * g->p;
				u.table = NULL;
				if ((u.pos + 15) / 16 * g->per_vec <= MASKED_TABLE_MAX) {
					mask_table(g, u.pos, own);
					u.table = own;
				}
				table_k = kk;
			}
			if (ph && run != split_run) {
				for (int64_t i = 0; i < kk; i++)
					split_image(d, ph, x + (i0 + i) * in_img, own_ws + i * g->x_img);
				split_run = run;
			}
			masked_block(d, g, &u, kk, ph ? own_ws : x + i0 * g->x_img, w, b,
				     r ? r + i0 * d->o * out_p : NULL, o0, ob, own_ws + (ph ? k * g->x_img : 0),
				     y + i0 * out_img, d->argmax ? d->argmax + i0 * out_img : NULL,
				     (u.pos + 15) / 16 * part / parts, (u.pos + 15) / 16 * (part + 1) / parts);
		}
	}
}
#endif

void ds_conv2d_masked_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			      const float *r, float *y, float *ws, int64_t slice, int threads)
{
#ifdef HAVE_MASKED_AVX512
	struct masked_geom g;

	masked_geom(d, &g);
	masked_items(d, &g, NULL, x, w, b, r, y, ws, slice, threads);
#else
	(void)d, (void)x, (void)w, (void)b, (void)r, (void)y, (void)ws, (void)slice, (void)threads;
#endif
}

void ds_conv2d_masked_s2_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
				 const float *r, float *y, float *ws, int threads)
{
#ifdef HAVE_MASKED_AVX512
	struct phases ph;
	struct masked_geom g;

	used_phases(d, &ph);
	strided_geom(d, &ph, &g);
	masked_items(d, &g, &ph, x, w, b, r, y, ws, split_slice(d, &g), threads);
#else
	(void)d, (void)x, (void)w, (void)b, (void)r, (void)y, (void)ws, (void)threads;
#endif
}
