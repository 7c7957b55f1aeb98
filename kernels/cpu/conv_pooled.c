/* conv_pooled.c - the gradients of a convolution followed by a 2x2 max-pool.
 *
 * Training a convolution whose output only a max-pool reads, the pool's
 * backward scatters the pooled gradient into a full-size one that is zero
 * at three of every four positions (more after a ReLU, which zeroes the
 * pooled gradient where the maximum was not positive), and both gradients
 * of the convolution then go over every position.  Here they go over the
 * pooled outputs only, each at the window its maximum came from (the
 * argmax the fused forward wrote): a quarter of the work, and no full-size
 * gradient.
 *
 * Weight gradient: the image is padded and turned channels-last, so that
 * the channels of one tap at one position are whole vectors (16 channels
 * each, the last padded with zeros); for a 3x3 filter a thread keeps the 9
 * taps of 32 channels of one output channel in 18 registers while it walks
 * that channel's pooled outputs, zero or not (a branch on zero gradients,
 * which come in no pattern, costs more than the FMAs it saves).  An image
 * of few channels becomes windows instead, a position's taps and channels
 * in one or two vectors.  Per-thread partials [o][tap][channel] are added
 * in thread order and turned into [o][c][kh][kw] at the end.
 *
 * Input gradient (3x3): each non-zero pooled gradient adds its filter,
 * times it, into its window of a padded channels-last image gradient;
 * here skipping zeros pays, each being 18 loads and stores.
 */
#include "config.h"
#include "cpu/conv.h"

#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_POOLED_AVX512 1
#endif

#define POOLED_TEAM_MAX 64

/* Few channels (the first layer's one or three) would leave most lanes
 * of a channel vector empty: then each output position gets its whole
 * window instead, [tap][channel] in one or two vectors. */
#define POOLED_WINDOW_MAX 32

struct pooled_geom {
	int64_t hp, wp;              /* the padded input plane */
	int window;                  /* windows, not channels-last positions */
	int64_t cp;                  /* a position's floats, whole vectors: channels,
				      * or a window's taps by channels */
	int64_t taps, pooled;        /* kh * kw; pooled outputs a plane */
	int64_t turned;              /* floats of the turned image */
	int64_t ostride, tstride;    /* a partial's [o][tap][channel] strides */
	int64_t slice;               /* floats a thread: turned image, then partials */
};

static void pooled_geom(const ds_conv2d_dims *d, struct pooled_geom *g)
{
	g->hp = d->h + 2 * d->ph;
	g->wp = d->w + 2 * d->pw;
	g->taps = d->kh * d->kw;
	g->pooled = (d->oh / 2) * (d->ow / 2);
	g->window = d->c * g->taps <= POOLED_WINDOW_MAX && d->c < 16;
	g->cp = ((g->window ? d->c * g->taps : d->c) + 15) / 16 * 16;
	g->turned = ((g->window ? d->oh * d->ow : g->hp * g->wp) * g->cp + 15) / 16 * 16;
	g->ostride = g->window ? g->cp : g->taps * g->cp;
	g->tstride = g->window ? d->c : g->cp;
	g->slice = g->turned + d->o * g->ostride;
}

/* The input gradient's part: the full gradient, then what the plain
 * backward needs. */
static ds_conv2d_dims unpooled(const ds_conv2d_dims *d)
{
	ds_conv2d_dims e = *d;

	e.pool = 0;
	e.argmax = NULL;
	return e;
}

/* The window table's room (int32s in floats' place). */
static int64_t table_floats(const ds_conv2d_dims *d)
{
	return (d->oh * d->ow + 15) / 16 * 16;
}

/* The sparse input gradient: a padded channels-last image gradient a
 * thread, then the filters turned [o][tap][channel]. */
static int64_t sparse_gx_floats(const ds_conv2d_dims *d, const struct pooled_geom *g)
{
	const int64_t image = (g->hp * g->wp * ((d->c + 15) / 16 * 16) + 15) / 16 * 16;

	return ds_kernel_threads() * image + d->o * g->taps * ((d->c + 15) / 16 * 16);
}

size_t ds_conv2d_pooled_backward_workspace(const ds_conv2d_dims *d)
{
	struct pooled_geom g;
	ds_conv2d_dims e = unpooled(d);
	size_t full = (size_t)((d->n * d->o * d->oh * d->ow + 15) / 16 * 16);
	size_t for_gx = full + ds_conv2d_workspace(&e), for_gw;

	pooled_geom(d, &g);
	for_gw = (size_t)(ds_kernel_threads() * g.slice);
	if (for_gw > for_gx)
		for_gx = for_gw;
	if ((size_t)sparse_gx_floats(d, &g) > for_gx)
		for_gx = (size_t)sparse_gx_floats(d, &g);
	return (size_t)table_floats(d) + for_gx;
}

/* x of one image, padded and channels-last: xt[(py * wp + px) * cp + ch].
 * The padding is the same for every image: xt was zeroed once. */
static void turn_image(const ds_conv2d_dims *d, const struct pooled_geom *g, const float *x, float *xt)
{
	for (int64_t ch = 0; ch < d->c; ch++)
		for (int64_t iy = 0; iy < d->h; iy++) {
			const float *row = x + (ch * d->h + iy) * d->w;
			float *dst = xt + ((iy + d->ph) * g->wp + d->pw) * g->cp + ch;

			for (int64_t ix = 0; ix < d->w; ix++)
				dst[ix * g->cp] = row[ix];
		}
}

/* x of one image as windows: xt[(oy * ow + ox) * cp + tap * c + ch], the
 * window of output (oy, ox).  What falls in the padding is the same for
 * every image: xt was zeroed once, and only the image's part is written,
 * a tap's row of outputs at a time. */
static void window_image(const ds_conv2d_dims *d, const struct pooled_geom *g, const float *x, float *xt)
{
	for (int64_t ki = 0; ki < d->kh; ki++)
		for (int64_t kj = 0; kj < d->kw; kj++) {
			const int64_t dx = kj * d->dw - d->pw;
			/* Outputs ox whose input column ox * sw + dx is inside. */
			const int64_t lo = dx < 0 ? (-dx + d->sw - 1) / d->sw : 0;
			const int64_t hi = d->w - dx <= 0 ? 0 : (d->w - dx + d->sw - 1) / d->sw;
			const int64_t end = hi < d->ow ? hi : d->ow;

			for (int64_t oy = 0; oy < d->oh; oy++) {
				const int64_t iy = oy * d->sh + ki * d->dh - d->ph;

				if (iy < 0 || iy >= d->h)
					continue;
				for (int64_t ch = 0; ch < d->c; ch++) {
					const float *row = x + (ch * d->h + iy) * d->w + dx;
					float *dst = xt + oy * d->ow * g->cp + (ki * d->kw + kj) * d->c + ch;

					for (int64_t ox = lo; ox < end; ox++)
						dst[ox * g->cp] = row[ox * d->sw];
				}
			}
		}
}

/* The windows form: a pooled output's window is one or two vectors. */
static void plane_windows(const struct pooled_geom *g, const float *xt, const float *gy, const int32_t *am,
			  float *part)
{
	for (int64_t q = 0; q < g->pooled; q++) {
		const float *src = xt + am[q] * g->cp;

		if (gy[q] == 0.0f)
			continue;
#pragma omp simd
		for (int64_t k = 0; k < g->cp; k++)
			part[k] += gy[q] * src[k];
	}
}

#ifdef HAVE_POOLED_AVX512
/* The same with the sums in registers through the plane. */
static inline __attribute__((always_inline, target("avx512f"))) void
windows_in(int nv, const struct pooled_geom *g, const float *xt, const float *gy, const int32_t *am, float *part)
{
	__m512 acc[2];

	for (int v = 0; v < nv; v++)
		acc[v] = _mm512_loadu_ps(part + 16 * v);
	for (int64_t q = 0; q < g->pooled; q++) {
		const float *src = xt + am[q] * g->cp;
		const __m512 gv = _mm512_set1_ps(gy[q]);

		for (int v = 0; v < nv; v++)
			acc[v] = _mm512_fmadd_ps(gv, _mm512_loadu_ps(src + 16 * v), acc[v]);
	}
	for (int v = 0; v < nv; v++)
		_mm512_storeu_ps(part + 16 * v, acc[v]);
}

static __attribute__((target("avx512f"))) void plane_windows_avx512(const struct pooled_geom *g, const float *xt,
								    const float *gy, const int32_t *am,
								    float *part)
{
	if (g->cp == 16)
		windows_in(1, g, xt, gy, am, part);
	else
		windows_in(2, g, xt, gy, am, part);
}
#endif

/* Where each output of the convolution's plane has its filter window: the
 * padded position of the window's first tap, for the argmax of each
 * pooled output (a table, not a division per output). */
static void window_table(const ds_conv2d_dims *d, const struct pooled_geom *g, int32_t *where)
{
	for (int64_t oy = 0; oy < d->oh; oy++)
		for (int64_t ox = 0; ox < d->ow; ox++)
			where[oy * d->ow + ox] = (int32_t)(oy * d->sh * g->wp + ox * d->sw);
}

#ifdef HAVE_POOLED_AVX512
/* The 3x3 form: nv vectors of channels from cv on (nv constant after
 * inlining), the 9 taps' sums in registers through the plane's pooled
 * outputs. */
static inline __attribute__((always_inline, target("avx512f"))) void
taps9(int nv, const ds_conv2d_dims *d, const struct pooled_geom *g, const int32_t *where, const float *xt,
      const float *gy, const int32_t *am, int64_t cv, float *part)
{
	__m512 acc[9][2];
	int64_t toff[9];

	for (int t = 0; t < 9; t++)
		toff[t] = ((t / 3) * d->dh * g->wp + (t % 3) * d->dw) * g->cp + 16 * cv;
#pragma GCC unroll 9
	for (int t = 0; t < 9; t++)
#pragma GCC unroll 2
		for (int v = 0; v < nv; v++)
			acc[t][v] = _mm512_loadu_ps(part + t * g->cp + 16 * (cv + v));
	for (int64_t q = 0; q < g->pooled; q++) {
		const float *at = xt + where[am[q]] * g->cp;
		const __m512 gv = _mm512_set1_ps(gy[q]);

#pragma GCC unroll 9
		for (int t = 0; t < 9; t++)
#pragma GCC unroll 2
			for (int v = 0; v < nv; v++)
				acc[t][v] = _mm512_fmadd_ps(gv, _mm512_loadu_ps(at + toff[t] + 16 * v), acc[t][v]);
	}
#pragma GCC unroll 9
	for (int t = 0; t < 9; t++)
#pragma GCC unroll 2
		for (int v = 0; v < nv; v++)
			_mm512_storeu_ps(part + t * g->cp + 16 * (cv + v), acc[t][v]);
}

static __attribute__((target("avx512f"))) void plane_taps9(const ds_conv2d_dims *d, const struct pooled_geom *g,
							   const int32_t *where, const float *xt, const float *gy,
							   const int32_t *am, float *part)
{
	int64_t cv = 0;

	for (; cv + 2 <= g->cp / 16; cv += 2)
		taps9(2, d, g, where, xt, gy, am, cv, part);
	if (cv < g->cp / 16)
		taps9(1, d, g, where, xt, gy, am, cv, part);
}
#endif

/* Any window: the same sums with the partials in memory. */
static void plane_taps(const ds_conv2d_dims *d, const struct pooled_geom *g, const int32_t *where, const float *xt,
		       const float *gy, const int32_t *am, float *part)
{
	for (int64_t q = 0; q < g->pooled; q++) {
		const float *at;

		if (gy[q] == 0.0f)
			continue;
		at = xt + where[am[q]] * g->cp;
		for (int64_t ki = 0; ki < d->kh; ki++)
			for (int64_t kj = 0; kj < d->kw; kj++) {
				const float *src = at + (ki * d->dh * g->wp + kj * d->dw) * g->cp;
				float *dst = part + (ki * d->kw + kj) * g->cp;

#pragma omp simd
				for (int64_t ch = 0; ch < g->cp; ch++)
					dst[ch] += gy[q] * src[ch];
			}
	}
}

static void weight_grad(const ds_conv2d_dims *d, const struct pooled_geom *g, const int32_t *where, const float *x,
			const float *gy, const int32_t *argmax, float *gw, float *ws)
{
	const int64_t in_img = d->c * d->h * d->w, taps = g->taps;
	int slices[POOLED_TEAM_MAX];
	int team = ds_kernel_threads();
#ifdef HAVE_POOLED_AVX512
	const int vec = __builtin_cpu_supports("avx512f") != 0, fast = vec && taps == 9 && d->kh == 3;
#endif

	if (team > POOLED_TEAM_MAX)
		team = POOLED_TEAM_MAX;
#pragma omp parallel num_threads(team)
	{
		const int t = ds_team_thread(), nt = ds_team_size();
		const int mine = ds_kernel_slice();
		float *xt = ws + mine * g->slice, *part = xt + g->turned;

		slices[t] = mine;
		memset(xt, 0, (size_t)(g->turned + d->o * g->ostride) * sizeof *xt);
		for (int64_t i = d->n * t / nt; i < d->n * (t + 1) / nt; i++) {
			if (g->window)
				window_image(d, g, x + i * in_img, xt);
			else
				turn_image(d, g, x + i * in_img, xt);
			for (int64_t o = 0; o < d->o; o++) {
				const float *gq = gy + (i * d->o + o) * g->pooled;
				const int32_t *aq = argmax + (i * d->o + o) * g->pooled;
				float *po = part + o * g->ostride;

#ifdef HAVE_POOLED_AVX512
				if (g->window && vec) {
					plane_windows_avx512(g, xt, gq, aq, po);
					continue;
				}
#endif
				if (g->window) {
					plane_windows(g, xt, gq, aq, po);
					continue;
				}
#ifdef HAVE_POOLED_AVX512
				if (fast) {
					plane_taps9(d, g, where, xt, gq, aq, po);
					continue;
				}
#endif
				plane_taps(d, g, where, xt, gq, aq, po);
			}
		}
#pragma omp barrier
		/* The partials added in thread order, turned back. */
		for (int64_t o = d->o * t / nt; o < d->o * (t + 1) / nt; o++)
			for (int64_t tap = 0; tap < taps; tap++)
				for (int64_t ch = 0; ch < d->c; ch++) {
					float s = 0.0f;

					for (int u = 0; u < nt; u++)
						s += ws[slices[u] * g->slice + g->turned + o * g->ostride + tap * g->tstride +
							ch];
					gw[(o * d->c + ch) * taps + tap] += s;
				}
	}
}

#ifdef HAVE_POOLED_AVX512
/* The input gradient of one image, channels cv to cv + 16 nv: each
 * non-zero pooled gradient adds its filter, times it, into the window its
 * maximum came from, in gxt (padded, channels-last, cp channels).  A
 * filter's 9 taps stay in registers while its plane's outputs go by. */
static inline __attribute__((always_inline, target("avx512f"))) void
scatter9(int nv, const ds_conv2d_dims *d, const struct pooled_geom *g, const int32_t *where, int64_t cp,
	 const float *wt, const float *gy, const int32_t *am, int64_t cv, float *gxt)
{
	int64_t toff[9];

	for (int t = 0; t < 9; t++)
		toff[t] = ((t / 3) * d->dh * g->wp + (t % 3) * d->dw) * cp + 16 * cv;
	for (int64_t o = 0; o < d->o; o++) {
		const float *gq = gy + o * g->pooled;
		const int32_t *aq = am + o * g->pooled;
		__m512 wv[9][2];

#pragma GCC unroll 9
		for (int t = 0; t < 9; t++)
#pragma GCC unroll 2
			for (int v = 0; v < nv; v++)
				wv[t][v] = _mm512_loadu_ps(wt + (o * 9 + t) * cp + 16 * (cv + v));
		for (int64_t q = 0; q < g->pooled; q++) {
			float *at;
			__m512 gv;

			if (gq[q] == 0.0f)
				continue;
			gv = _mm512_set1_ps(gq[q]);
			at = gxt + where[aq[q]] * cp;
#pragma GCC unroll 9
			for (int t = 0; t < 9; t++)
#pragma GCC unroll 2
				for (int v = 0; v < nv; v++) {
					float *p = at + toff[t] + 16 * v;

					_mm512_storeu_ps(p, _mm512_fmadd_ps(gv, wv[t][v], _mm512_loadu_ps(p)));
				}
		}
	}
}

static __attribute__((target("avx512f"))) void image_scatter9(const ds_conv2d_dims *d, const struct pooled_geom *g,
							     const int32_t *where, int64_t cp, const float *wt,
							     const float *gy, const int32_t *am, float *gxt)
{
	int64_t cv = 0;

	for (; cv + 2 <= cp / 16; cv += 2)
		scatter9(2, d, g, where, cp, wt, gy, am, cv, gxt);
	if (cv < cp / 16)
		scatter9(1, d, g, where, cp, wt, gy, am, cv, gxt);
}

/* 3x3, one group: the input gradient straight from the pooled gradient,
 * a quarter of the full one's work or less. */
static int sparse_gx(const ds_conv2d_dims *d)
{
	return d->groups == 1 && d->kh == 3 && d->kw == 3 && __builtin_cpu_supports("avx512f");
}

static void grad_input_sparse(const ds_conv2d_dims *d, const struct pooled_geom *g, const int32_t *where,
			      const float *w, const float *gy, const int32_t *argmax, float *gx, float *ws)
{
	const int64_t cp = (d->c + 15) / 16 * 16, image = (g->hp * g->wp * cp + 15) / 16 * 16;
	float *wt = ws + ds_kernel_threads() * image;

	memset(wt, 0, (size_t)(d->o * 9 * cp) * sizeof *wt);
	for (int64_t o = 0; o < d->o; o++)
		for (int64_t ch = 0; ch < d->c; ch++)
			for (int64_t t = 0; t < 9; t++)
				wt[(o * 9 + t) * cp + ch] = w[(o * d->c + ch) * 9 + t];
#pragma omp parallel num_threads(ds_kernel_threads())
	{
		const int64_t t = ds_team_thread(), nt = ds_team_size();
		float *gxt = ws + ds_kernel_slice() * image;

		for (int64_t i = d->n * t / nt; i < d->n * (t + 1) / nt; i++) {
			float *gxi = gx + i * d->c * d->h * d->w;

			memset(gxt, 0, (size_t)(g->hp * g->wp * cp) * sizeof *gxt);
			image_scatter9(d, g, where, cp, wt, gy + i * d->o * g->pooled, argmax + i * d->o * g->pooled, gxt);
			/* Back to [c][h][w], the padding dropped, added as backward
			 * adds. */
			for (int64_t iy = 0; iy < d->h; iy++)
				for (int64_t ix = 0; ix < d->w; ix++) {
					const float *src = gxt + ((iy + d->ph) * g->wp + ix + d->pw) * cp;

					for (int64_t ch = 0; ch < d->c; ch++)
						gxi[(ch * d->h + iy) * d->w + ix] += src[ch];
				}
		}
	}
}
#endif

/* The full gradient into ws, zero but where the maxima were; returns
 * what is left of ws. */
static float *scatter(const ds_conv2d_dims *d, const float *gy, const int32_t *argmax, float *ws)
{
	const ds_pool_dims pd = { .n = d->n, .c = d->o, .h = d->oh, .w = d->ow, .oh = d->oh / 2,
				  .ow = d->ow / 2, .kh = 2, .kw = 2, .sh = 2, .sw = 2 };
	const int64_t full = d->n * d->o * d->oh * d->ow;

	memset(ws, 0, (size_t)full * sizeof *ws);
	ds_max_pool_backward(&pd, argmax, gy, ws);
	return ws + (full + 15) / 16 * 16;
}

void ds_conv2d_pooled_backward(const ds_conv2d_dims *d, const float *x, const float *w, const float *gy,
			       const int32_t *argmax, float *gx, float *gw, float *gb, float *ws)
{
	struct pooled_geom g;
	int32_t *where = (int32_t *)ws;

	pooled_geom(d, &g);
	window_table(d, &g, where);
	ws += table_floats(d);
	if (gb) {
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
		for (int64_t o = 0; o < d->o; o++) {
			float s = 0.0f;

			for (int64_t i = 0; i < d->n; i++) {
				const float *gq = gy + (i * d->o + o) * g.pooled;

				/* Lane sums: one add after another would wait on
				 * each other's latency. */
#pragma omp simd reduction(+ : s)
				for (int64_t q = 0; q < g.pooled; q++)
					s += gq[q];
			}
			gb[o] += s;
		}
	}
#ifdef HAVE_POOLED_AVX512
	if (gx && sparse_gx(d)) {
		grad_input_sparse(d, &g, where, w, gy, argmax, gx, ws);
		gx = NULL;
	}
#endif
	/* The input gradient otherwise, and a grouped weight gradient, take
	 * the plain path on the full gradient. */
	if (gx || (gw && d->groups != 1)) {
		const ds_conv2d_dims e = unpooled(d);
		float *rest = scatter(d, gy, argmax, ws);

		ds_conv2d_backward(&e, x, w, ws, gx, d->groups != 1 ? gw : NULL, NULL, rest);
	}
	if (gw && d->groups == 1)
		weight_grad(d, &g, where, x, gy, argmax, gw, ws);
}
