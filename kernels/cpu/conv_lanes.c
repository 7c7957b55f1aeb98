/* conv_lanes.c - 2-d convolution with output channels in the vector lanes.
 *
 * The direct kernel of conv.c puts sixteen output positions in a vector and
 * computes rows on the padded grid, dropping the padding columns: on a 7x7
 * plane 49 of its 64 lanes are kept, and a stride-2 layer first splits the
 * image into phases.  Here a vector holds sixteen output channels of one
 * position instead, so every lane is kept whatever the plane's size or the
 * stride: a tile is up to 4 vectors of channels by 6 positions (24
 * accumulators); per input channel and tap, 4 loads of packed filters and 6
 * broadcasts of input values feed 24 FMAs.  The sums of a whole plane are
 * kept, [position][channels], while blocks of input channels pass over it,
 * so a block's packed filters stay in L1; they are turned back to
 * [o][position] at the end, with the bias, the residual and the ReLU.
 * The filters are packed on every call, [o / (16 nv)][c][taps][16 nv],
 * which a batch has to pay for: the kernel is ds-optimize --tune's to
 * choose, never the default.  Measured alone on 64 images, 2 threads: a
 * 7x7 plane of 64 channels at about 200 GFLOP/s against 80 for the direct
 * kernel, stride-2 3x3 layers 150-170 against 40-120; 28x28 planes of 16
 * channels 150 against 240 (one vector of channels: a load per FMA).
 */
#include "config.h"
#include "cpu/conv.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_LANES_AVX512 1
#endif

#define LANES_NP_MAX 12      /* positions a tile */
#define LANES_TAPS_MAX 49

static int64_t ceil16(int64_t v)
{
	return (v + 15) / 16 * 16;
}

/* Vectors of output channels a tile: 4 where the channels allow, so one
 * broadcast feeds 4 FMAs. */
static int tile_vectors(const ds_conv2d_dims *d)
{
	int64_t o16 = ceil16(d->o) / 16;

	return o16 % 4 == 0 ? 4 : o16 % 2 == 0 ? 2 : 1;
}

static int tile_positions(int nv)
{
	return nv == 4 ? 6 : 12;
}

int ds_conv2d_lanes_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_LANES_AVX512
	return d->groups == 1 && !d->pool && d->kh * d->kw <= LANES_TAPS_MAX && d->oh > 0 && d->ow > 0 &&
	       __builtin_cpu_supports("avx512f");
#else
	(void)d;
	return 0;
#endif
}

static int64_t padded_floats(const ds_conv2d_dims *d)
{
	return ceil16(d->c * (d->h + 2 * d->ph) * (d->w + 2 * d->pw));
}

static int64_t packed_floats(const ds_conv2d_dims *d)
{
	return ceil16(d->o) * d->c * d->kh * d->kw;
}

/* Per thread: the padded image and the sums of a plane, [position][16 nv];
 * then the packed filters. */
static int64_t thread_floats(const ds_conv2d_dims *d)
{
	return padded_floats(d) + ceil16(d->oh * d->ow * 16 * tile_vectors(d));
}

/* Input channels a pass over the plane: their packed filters (32 KB) stay
 * in L1 while every tile of positions reads them. */
static int64_t channel_block(const ds_conv2d_dims *d, int nv)
{
	int64_t cb = 8192 / (d->kh * d->kw * 16 * nv);

	return cb < 1 ? 1 : cb;
}

size_t ds_conv2d_lanes_workspace(const ds_conv2d_dims *d)
{
	return (size_t)(ds_kernel_threads() * thread_floats(d) + packed_floats(d));
}

#ifdef HAVE_LANES_AVX512
static void pad_image(const ds_conv2d_dims *d, const float *x, float *xp)
{
	const int64_t hp = d->h + 2 * d->ph, wp = d->w + 2 * d->pw;

	memset(xp, 0, (size_t)padded_floats(d) * sizeof *xp);
	for (int64_t c = 0; c < d->c; c++)
		for (int64_t iy = 0; iy < d->h; iy++)
			memcpy(xp + (c * hp + iy + d->ph) * wp + d->pw, x + (c * d->h + iy) * d->w,
			       (size_t)d->w * sizeof *xp);
}

/* acc[p][v] over every input channel and tap for the positions whose padded
 * offsets are base[0..np) and the 16 * nv channels of wb; stored to tile
 * as [p][16 * nv]. */
static inline __attribute__((always_inline, target("avx512f"))) void
lanes_tile(const int nv, const int np, const ds_conv2d_dims *d, const float *xp, const int64_t *base,
	   const int64_t *toff, const float *wb, int64_t c0, int64_t c1, const float *init, float *tile)
{
	const int64_t taps = d->kh * d->kw, plane = (d->h + 2 * d->ph) * (d->w + 2 * d->pw);
	const float *px[LANES_NP_MAX];
	__m512 acc[LANES_NP_MAX][4];

#pragma GCC unroll 12
	for (int p = 0; p < np; p++) {
		px[p] = xp + base[p];
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++)
			acc[p][v] = init ? _mm512_loadu_ps(init + 16 * v) : _mm512_loadu_ps(tile + (p * nv + v) * 16);
	}
	for (int64_t c = c0; c < c1; c++) {
		const float *wc = wb + c * taps * 16 * nv;

		for (int64_t t = 0; t < taps; t++) {
			const int64_t off = c * plane + toff[t];
			__m512 wv[4];

#pragma GCC unroll 4
			for (int v = 0; v < nv; v++)
				wv[v] = _mm512_loadu_ps(wc + (t * nv + v) * 16);
#pragma GCC unroll 12
			for (int p = 0; p < np; p++) {
				__m512 xv = _mm512_set1_ps(px[p][off]);

#pragma GCC unroll 4
				for (int v = 0; v < nv; v++)
					acc[p][v] = _mm512_fmadd_ps(xv, wv[v], acc[p][v]);
			}
		}
	}
#pragma GCC unroll 12
	for (int p = 0; p < np; p++)
#pragma GCC unroll 4
		for (int v = 0; v < nv; v++)
			_mm512_storeu_ps(tile + (p * nv + v) * 16, acc[p][v]);
}

/* The filters packed a tile's vectors together: [o / (16 nv)][c][taps][16 nv]. */
static void pack_tiles(const ds_conv2d_dims *d, int nv, const float *w, float *wp)
{
	const int64_t taps = d->kh * d->kw, width = 16 * nv, groups = ceil16(d->o) / width;

#pragma omp for schedule(static)
	for (int64_t grp = 0; grp < groups; grp++)
		for (int64_t c = 0; c < d->c; c++)
			for (int64_t t = 0; t < taps; t++) {
				float *dst = wp + ((grp * d->c + c) * taps + t) * width;

				for (int64_t l = 0; l < width; l++) {
					int64_t oc = grp * width + l;

					dst[l] = oc < d->o ? w[(oc * d->c + c) * taps + t] : 0.0f;
				}
			}
}

static __attribute__((target("avx512f"))) void lanes_image(const ds_conv2d_dims *d, int nv, const float *xp,
							     const int64_t *toff, const float *wp, const float *b,
							     const float *r, float *y, float *sums)
{
	const int np_full = tile_positions(nv), width = 16 * nv;
	const int64_t p = d->oh * d->ow, taps = d->kh * d->kw, wpad = d->w + 2 * d->pw;
	const int64_t groups = ceil16(d->o) / width, cb = channel_block(d, nv);
	const float hi = d->cap > 0.0f ? d->cap : __builtin_inff();
	float bias[64];

	for (int64_t grp = 0; grp < groups; grp++) {
		const float *wb = wp + grp * d->c * taps * width;
		const int64_t o0 = grp * width, on = d->o - o0 < width ? d->o - o0 : width;

		for (int64_t l = 0; l < width; l++)
			bias[l] = b && l < on ? b[o0 + l] : 0.0f;
		for (int64_t c0 = 0; c0 < d->c; c0 += cb) {
			int64_t c1 = d->c - c0 < cb ? d->c : c0 + cb;
			const float *init = c0 == 0 ? bias : NULL;

			int64_t oy = 0, ox = 0;   /* of position q0 */

			for (int64_t q0 = 0; q0 < p; q0 += np_full) {
				int np = p - q0 < np_full ? (int)(p - q0) : np_full;
				int64_t base[LANES_NP_MAX];
				float *tile = sums + q0 * width;

				/* Stepped, not divided: a division a position cost
				 * more than a 1x1 layer's FMAs. */
				for (int k = 0; k < np; k++) {
					base[k] = oy * d->sh * wpad + ox * d->sw;
					if (++ox == d->ow) {
						ox = 0;
						oy++;
					}
				}
				if (nv == 4 && np == 6)
					lanes_tile(4, 6, d, xp, base, toff, wb, c0, c1, init, tile);
				else if (nv == 2 && np == 12)
					lanes_tile(2, 12, d, xp, base, toff, wb, c0, c1, init, tile);
				else if (nv == 1 && np == 12)
					lanes_tile(1, 12, d, xp, base, toff, wb, c0, c1, init, tile);
				else
					/* The plane's last few positions: one at a time. */
					for (int k = 0; k < np; k++) {
						if (nv == 4)
							lanes_tile(4, 1, d, xp, base + k, toff, wb, c0, c1, init,
								   tile + k * width);
						else if (nv == 2)
							lanes_tile(2, 1, d, xp, base + k, toff, wb, c0, c1, init,
								   tile + k * width);
						else
							lanes_tile(1, 1, d, xp, base + k, toff, wb, c0, c1, init,
								   tile + k * width);
					}
			}
		}
		/* Turned back to [o][position], with the residual and ReLU. */
		for (int64_t l = 0; l < on; l++) {
			float *dst = y + (o0 + l) * p;
			const float *rr = r ? r + (o0 + l) * p : NULL;

			for (int64_t q = 0; q < p; q++) {
				float v = sums[q * width + l];

				if (rr)
					v += rr[q];
				if (d->relu) {
					v = v > 0.0f ? v : 0.0f;
					v = v < hi ? v : hi;
				}
				dst[q] = v;
			}
		}
	}
}
#endif

void ds_conv2d_lanes_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			     const float *r, float *y, float *ws)
{
#ifdef HAVE_LANES_AVX512
	const int nv = tile_vectors(d);
	const int64_t in_img = d->c * d->h * d->w, out_img = d->o * d->oh * d->ow, slice = thread_floats(d);
	const int64_t wpad = d->w + 2 * d->pw;
	float *wp = ws + ds_kernel_threads() * slice;
	int64_t toff[LANES_TAPS_MAX];

	for (int64_t ki = 0; ki < d->kh; ki++)
		for (int64_t kj = 0; kj < d->kw; kj++)
			toff[ki * d->kw + kj] = ki * d->dh * wpad + kj * d->dw;
#pragma omp parallel num_threads(ds_kernel_threads())
	{
#ifdef _OPENMP
		int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
		int t = 0, nt = 1;
#endif
		float *xp = ws + ds_kernel_slice() * slice, *sums = xp + padded_floats(d);

		pack_tiles(d, nv, w, wp);
		/* pack_tiles' loop ends in a barrier: the filters are whole. */
		for (int64_t i = d->n * t / nt; i < d->n * (t + 1) / nt; i++) {
			pad_image(d, x + i * in_img, xp);
			lanes_image(d, nv, xp, toff, wp, b, r ? r + i * out_img : NULL, y + i * out_img, sums);
		}
	}
#else
	(void)d;
	(void)x;
	(void)w;
	(void)b;
	(void)r;
	(void)y;
	(void)ws;
#endif
}
