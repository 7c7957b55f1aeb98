/* conv_dwq.c - INT8 depthwise convolutions (kw <= 4) on VNNI, by vectors of
 * sixteen outputs with their taps gathered by byte permutes.
 *
 * A depthwise filter has one channel, so there is no sum over channels to
 * spread across a GEMM: mobilenet-s's depthwise layers ran per plane on
 * floats (conv_dw3.c), and on its 7x7 and 4x4 planes of a few dozen
 * outputs the per-plane work (codes to floats, masks, nine loads a tap)
 * cost more than the sums: 11-40 GOP/s.  Here a vector holds sixteen
 * outputs of a plane: whole output rows when they are at most sixteen wide
 * (four rows of a 4x4 plane, two of a 7x7), else sixteen columns of one.
 * Every input its taps read lies within 127 bytes of the plane, so two
 * loads hold them all, and for each filter row one vpermt2b lays out the
 * word of kw taps each output multiplies: three vpdpbusd make sixteen
 * 3x3 sums.  Taps in the padding read byte 127, which holds the zero
 * point.  The permute indices depend only on the layer's geometry: they
 * are made once a call, the same for every plane.
 */
#include "config.h"
#include "cpu/conv.h"
#include "cpu/quant.h"

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_DWQ_VNNI 1
#endif

#define DWQ_KH_MAX 4

/* One vector of outputs: where its inputs start in the plane, where its
 * outputs start, how many there are; per filter row, the byte of the two
 * loads each word byte takes. */
struct dwq_vec {
	int64_t in, out;
	int64_t n;
	uint8_t idx[DWQ_KH_MAX][64];
};

/* A channel's filter rows as words, the zero point times its sum, and
 * the epilogue's multiplier and bias: made once a call. */
struct dwq_chan {
	int32_t word[DWQ_KH_MAX];
	int32_t corr;
	float mult, bias;
};

static int dwq_shape(const ds_conv2d_dims *d)
{
	return d->groups == d->c && d->o == d->c && d->kw <= 4 && d->kh <= DWQ_KH_MAX && !d->pool && d->oh > 0 &&
	       d->ow > 0;
}

/* The vectors of a plane; with v, their indices too.  -1 when some vector's
 * inputs span more than 127 bytes. */
static int64_t dwq_plan(const ds_conv2d_dims *d, struct dwq_vec *v)
{
	const int64_t rows = d->ow <= 16 ? 16 / d->ow : 1, chunks = d->ow <= 16 ? 1 : (d->ow + 15) / 16;
	int64_t count = 0;

	for (int64_t oy0 = 0; oy0 < d->oh; oy0 += rows)
		for (int64_t c = 0; c < chunks; c++, count++) {
			const int64_t ox0 = 16 * c, nr = d->oh - oy0 < rows ? d->oh - oy0 : rows;
			const int64_t nx = d->ow <= 16 ? d->ow : (d->ow - ox0 < 16 ? d->ow - ox0 : 16);
			int64_t lo = INT64_MAX, hi = -1;

			for (int pass = 0; pass < 2; pass++)
				for (int64_t i = 0; i < nr * nx; i++) {
					int64_t oy = oy0 + i / nx, ox = ox0 + i % nx;

					for (int64_t ky = 0; ky < DWQ_KH_MAX; ky++)
						for (int64_t kx = 0; kx < 4; kx++) {
							int64_t iy = oy * d->sh - d->ph + ky * d->dh;
							int64_t ix = ox * d->sw - d->pw + kx * d->dw;
							int in = ky < d->kh && kx < d->kw && iy >= 0 && iy < d->h &&
								 ix >= 0 && ix < d->w;

							if (pass == 0 && in) {
								lo = iy * d->w + ix < lo ? iy * d->w + ix : lo;
								hi = iy * d->w + ix > hi ? iy * d->w + ix : hi;
							} else if (pass == 1 && v) {
								v[count].idx[ky][4 * i + kx] =
									(uint8_t)(in ? iy * d->w + ix - lo : 127);
							}
						}
				}
			if (hi < 0)
				lo = hi = 0;
			if (hi - lo > 126)
				return -1;
			if (v) {
				for (int64_t ky = 0; ky < DWQ_KH_MAX; ky++)
					memset(v[count].idx[ky] + 4 * nr * nx, 127, (size_t)(64 - 4 * nr * nx));
				v[count].in = lo;
				v[count].out = oy0 * d->ow + ox0;
				v[count].n = nr * nx;
			}
		}
	return count;
}

int ds_qconv2d_dwq_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_DWQ_VNNI
	return dwq_shape(d) && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni") &&
	       __builtin_cpu_supports("avx512vbmi") && dwq_plan(d, NULL) > 0;
#else
	(void)d;
	return 0;
#endif
}

size_t ds_qconv2d_dwq_workspace(const ds_conv2d_dims *d)
{
	int64_t n = dwq_shape(d) ? dwq_plan(d, NULL) : -1;

	return n > 0 ? (size_t)n * sizeof(struct dwq_vec) + (size_t)d->c * sizeof(struct dwq_chan) : 0;
}

#ifdef HAVE_DWQ_VNNI
/* Planes [p0, p1) of the layer; the epilogue is quant.c's epi_vnni, lane
 * for lane. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"),
			     optimize("fp-contract=off"))) void
dwq_planes_kh(const ds_conv2d_dims *d, const struct dwq_vec *v, int64_t nv, const struct dwq_chan *ch,
	      const uint8_t *x, const ds_qout *e, void *y, int64_t p0, int64_t p1, const int64_t kh)
{
	const int64_t in = d->h * d->w, out = d->oh * d->ow, nc = d->c;
	const int u8 = e->u8;
	const __m512 lo = _mm512_set1_ps(e->lo), hi = _mm512_set1_ps(e->hi);
	const __m512 vinv = _mm512_set1_ps(e->u8 ? 1.0f / e->y_scale : 0.0f);
	const __m512 zp = _mm512_set1_ps((float)e->y_zero_point), zero = _mm512_setzero_ps();
	const __m512 top = _mm512_set1_ps(255.0f);
	const __m512i xzp = _mm512_set1_epi8((char)e->x_zero_point);

	for (int64_t p = p0; p < p1; p++) {
		const struct dwq_chan *k = &ch[p % nc];
		const uint8_t *xc = x + p * in;
		const __m512i corr = _mm512_set1_epi32(k->corr);
		const __m512 mult = _mm512_set1_ps(k->mult), bias = _mm512_set1_ps(k->bias);
		__m512i word[DWQ_KH_MAX];

		for (int64_t ky = 0; ky < kh; ky++)
			word[ky] = _mm512_set1_epi32(k->word[ky]);
		for (int64_t j = 0; j < nv; j++) {
			const struct dwq_vec *q = &v[j];
			int64_t left = in - q->in;
			__mmask64 m0 = left >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
			__mmask64 m1 = left >= 128 ? ~(__mmask64)0 : left <= 64 ? 0 : ((__mmask64)1 << (left - 64)) - 1;
			__m512i a = _mm512_maskz_loadu_epi8(m0, xc + q->in);
			/* Byte 127 is the zero point, for taps in the padding. */
			__m512i b = _mm512_mask_mov_epi8(_mm512_maskz_loadu_epi8(m1 & ~((__mmask64)1 << 63), xc + q->in + 64),
							 (__mmask64)1 << 63, xzp);
			__m512i acc = _mm512_setzero_si512();
			__m512 r;

#pragma GCC unroll 4
			for (int64_t ky = 0; ky < kh; ky++)
				acc = _mm512_dpbusd_epi32(
					acc, _mm512_permutex2var_epi8(a, _mm512_loadu_si512(q->idx[ky]), b), word[ky]);
			r = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, corr));
			r = _mm512_add_ps(_mm512_mul_ps(r, mult), bias);
			r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
			if (u8) {
				__m128i codes;

				r = _mm512_add_ps(_mm512_mul_ps(r, vinv), zp);
				r = _mm512_min_ps(_mm512_max_ps(r, zero), top);
				codes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(r));
				/* Kept in a register: GCC would otherwise fold the
				 * narrow into the store, slow on AMD. */
				__asm__("" : "+x"(codes));
				_mm_mask_storeu_epi8((uint8_t *)y + p * out + q->out, (__mmask16)((1u << q->n) - 1), codes);
			} else {
				_mm512_mask_storeu_ps((float *)y + p * out + q->out, (__mmask16)((1u << q->n) - 1), r);
			}
		}
	}
}

/* With the common three filter rows a constant: the loop over them
 * unrolled, the words in registers. */
static __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"), optimize("fp-contract=off"))) void
dwq_planes(const ds_conv2d_dims *d, const struct dwq_vec *v, int64_t nv, const struct dwq_chan *ch,
	   const uint8_t *x, const ds_qout *e, void *y, int64_t p0, int64_t p1)
{
	if (d->kh == 3)
		dwq_planes_kh(d, v, nv, ch, x, e, y, p0, p1, 3);
	else
		dwq_planes_kh(d, v, nv, ch, x, e, y, p0, p1, d->kh);
}
#endif

/* Planes a call of dwq_planes, which makes its vectors itself: vectors
 * shared into a parallel region crash clang 14. */
#define DWQ_PLANES_BLOCK 16

void ds_qconv2d_dwq_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			    void *ws)
{
#ifdef HAVE_DWQ_VNNI
	struct dwq_vec *v = ws;
	const int64_t nv = dwq_plan(d, v), planes = d->n * d->c;
	const int64_t blocks = (planes + DWQ_PLANES_BLOCK - 1) / DWQ_PLANES_BLOCK;
	struct dwq_chan *ch = (struct dwq_chan *)(v + nv);

	for (int64_t c = 0; c < d->c; c++) {
		const int8_t *wc = w + c * d->kh * d->kw;
		int32_t sum = 0;

		for (int64_t ky = 0; ky < DWQ_KH_MAX; ky++) {
			uint32_t b = 0;

			for (int64_t kx = 0; ky < d->kh && kx < d->kw; kx++) {
				b |= (uint32_t)(uint8_t)wc[ky * d->kw + kx] << (8 * kx);
				sum += wc[ky * d->kw + kx];
			}
			ch[c].word[ky] = (int32_t)b;
		}
		ch[c].corr = e->x_zero_point * sum;
		ch[c].mult = e->x_scale * e->w_scale[c];
		ch[c].bias = e->bias ? e->bias[c] : 0.0f;
	}

#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads()) if (planes * d->oh * d->ow >= (1 << 14))
	for (int64_t b = 0; b < blocks; b++)
		dwq_planes(d, v, nv, ch, x, e, y, b * DWQ_PLANES_BLOCK,
			   planes < (b + 1) * DWQ_PLANES_BLOCK ? planes : (b + 1) * DWQ_PLANES_BLOCK);
#else
	(void)d;
	(void)x;
	(void)w;
	(void)e;
	(void)y;
	(void)ws;
#endif
}
