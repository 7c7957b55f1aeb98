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
 * are made once for the layer, the same for every plane.
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
 * outputs start; per filter row, the byte of the two loads each word byte
 * takes. */
struct dwq_vec {
	int64_t in, out;
	uint64_t first, second;  /* the bytes of the plane each load takes */
	uint32_t keep;           /* the outputs stored */
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

/* Output rows a vector, and vectors a row (one when rows > 1). */
static int64_t dwq_rows(const ds_conv2d_dims *d)
{
	return d->ow <= 16 ? (16 / d->ow < d->oh ? 16 / d->ow : d->oh) : 1;
}

static int64_t dwq_chunks(const ds_conv2d_dims *d)
{
	return d->ow <= 16 ? 1 : (d->ow + 15) / 16;
}

/* The most bytes of the plane a vector's inputs can span, from its first
 * output's top left tap to its last output's bottom right one. */
static int64_t dwq_span(const ds_conv2d_dims *d)
{
	const int64_t rows = dwq_rows(d), cols = d->ow <= 16 ? d->ow : 16;

	return ((rows - 1) * d->sh + (d->kh - 1) * d->dh) * d->w + (cols - 1) * d->sw + (d->kw - 1) * d->dw;
}

static int64_t dwq_count(const ds_conv2d_dims *d)
{
	return (d->oh + dwq_rows(d) - 1) / dwq_rows(d) * dwq_chunks(d);
}

/* The vectors of a plane.  A vector's loads start at its first output's
 * top left tap (clamped to the plane; at a row's start when it holds
 * whole rows), which no tap of it reads before. */
static void dwq_plan(const ds_conv2d_dims *d, struct dwq_vec *v)
{
	const int64_t rows = dwq_rows(d), chunks = dwq_chunks(d);

	for (int64_t oy0 = 0, j = 0; oy0 < d->oh; oy0 += rows)
		for (int64_t c = 0; c < chunks; c++, j++) {
			const int64_t ox0 = 16 * c, nr = d->oh - oy0 < rows ? d->oh - oy0 : rows;
			const int64_t nx = d->ow <= 16 ? d->ow : (d->ow - ox0 < 16 ? d->ow - ox0 : 16);
			const int64_t iy0 = oy0 * d->sh - d->ph, ix0 = rows > 1 ? 0 : ox0 * d->sw - d->pw;
			const int64_t lo = (iy0 > 0 ? iy0 : 0) * d->w + (ix0 > 0 ? ix0 : 0);
			/* Past the plane (a vector all in the padding): nothing. */
			const int64_t left = d->h * d->w > lo ? d->h * d->w - lo : 0;

			memset(&v[j], 0, sizeof v[j]);   /* its padding too: the fingerprint reads it */
			memset(v[j].idx, 127, sizeof v[j].idx);
			v[j].in = lo;
			v[j].out = oy0 * d->ow + ox0;
			v[j].keep = (uint32_t)((1u << (nr * nx)) - 1);
			v[j].first = left >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << left) - 1;
			/* Never byte 127: the zero point, for taps in the padding. */
			v[j].second = (left >= 128 ? ~(uint64_t)0 : left <= 64 ? 0 : ((uint64_t)1 << (left - 64)) - 1) &
				      ~((uint64_t)1 << 63);
			for (int64_t i = 0; i < nr * nx; i++) {
				const int64_t oy = oy0 + i / nx, ox = ox0 + i % nx;

				for (int64_t ky = 0; ky < d->kh; ky++) {
					const int64_t iy = oy * d->sh - d->ph + ky * d->dh;

					for (int64_t kx = 0; kx < d->kw && iy >= 0 && iy < d->h; kx++) {
						const int64_t ix = ox * d->sw - d->pw + kx * d->dw;

						if (ix >= 0 && ix < d->w)
							v[j].idx[ky][4 * i + kx] = (uint8_t)(iy * d->w + ix - lo);
					}
				}
			}
		}
}

int ds_qconv2d_dwq_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_DWQ_VNNI
	return dwq_shape(d) && dwq_span(d) <= 126 && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
#else
	(void)d;
	return 0;
#endif
}

/* The workspace: this header, the vectors, then the channels.  The
 * vectors depend on the geometry alone and are kept for the next call
 * (a batch of one rebuilt them in more time than its sums took), checked
 * against the header and a fingerprint of their bytes, since the
 * workspace may be shared or written over between calls. */
struct dwq_head {
	int64_t geometry[12];
	uint64_t fp;
	int64_t pad[3];
};

_Static_assert(sizeof(struct dwq_head) % 64 == 0, "the vectors after struct dwq_head stay aligned");

size_t ds_qconv2d_dwq_workspace(const ds_conv2d_dims *d)
{
	if (!dwq_shape(d) || dwq_span(d) > 126)
		return 0;
	return sizeof(struct dwq_head) + (size_t)dwq_count(d) * sizeof(struct dwq_vec) +
	       (size_t)d->c * sizeof(struct dwq_chan);
}

#ifdef HAVE_DWQ_VNNI
/* Planes [p0, p1) of the layer; the epilogue is quant.c's epi_vnni (a
 * ds_qcode for codes), lane for lane. */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"),
			     optimize("fp-contract=off"))) void
dwq_planes_kh(const ds_conv2d_dims *d, const struct dwq_vec *v, int64_t nv, const struct dwq_chan *ch,
	      const uint8_t *x, const ds_qout *e, void *y, int64_t p0, int64_t p1, const int64_t kh)
{
	const int64_t in = d->h * d->w, out = d->oh * d->ow, nc = d->c;
	const int u8 = e->u8;
	const ds_qcode code = DS_QOUT_AFFINE(e, 0);   /* the clamp: the same for every channel */
	const __m512 lo = _mm512_set1_ps(code.lo), hi = _mm512_set1_ps(code.hi);
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
			__m512i a = _mm512_maskz_loadu_epi8(q->first, xc + q->in);
			/* The bytes not loaded are the zero point: byte 127 for
			 * taps in the padding, and any past the plane. */
			__m512i b = _mm512_mask_loadu_epi8(xzp, q->second, xc + q->in + 64);
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

				codes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(r));
				/* Kept in a register: GCC would otherwise fold the
				 * narrow into the store, slow on AMD. */
				__asm__("" : "+x"(codes));
				_mm_mask_storeu_epi8((uint8_t *)y + p * out + q->out, (__mmask16)q->keep, codes);
			} else {
				_mm512_mask_storeu_ps((float *)y + p * out + q->out, (__mmask16)q->keep, r);
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

/* Each block of planes is a call of dwq_planes, which makes its vectors
 * itself: vectors shared into a parallel region crash clang 14. */
void ds_qconv2d_dwq_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			    void *ws)
{
#ifdef HAVE_DWQ_VNNI
	struct dwq_head *head = ws;
	struct dwq_vec *v = (struct dwq_vec *)(head + 1);
	const int64_t nv = dwq_count(d), planes = d->n * d->c, threads = ds_kernel_threads();
	/* Four blocks of planes a thread: a batch of one has a few dozen. */
	const int64_t per = (planes + 4 * threads - 1) / (4 * threads), blocks = (planes + per - 1) / per;
	const int64_t geometry[12] = { d->h, d->w, d->oh, d->ow, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw, d->dh, d->dw };
	struct dwq_chan *ch = (struct dwq_chan *)(v + nv);

	if (memcmp(head->geometry, geometry, sizeof geometry) ||
	    head->fp != ds_qfingerprint(v, (size_t)nv * sizeof *v)) {
		dwq_plan(d, v);
		memcpy(head->geometry, geometry, sizeof geometry);
		head->fp = ds_qfingerprint(v, (size_t)nv * sizeof *v);
	}

	for (int64_t c = 0; c < d->c; c++) {
		const int8_t *wc = w + c * d->kh * d->kw;
		const ds_qcode q = DS_QOUT_AFFINE(e, c);
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
		ch[c].mult = q.m;
		ch[c].bias = q.b;
	}

#pragma omp parallel for schedule(static) num_threads(threads) if (planes * d->oh * d->ow >= (1 << 12))
	for (int64_t b = 0; b < blocks; b++)
		dwq_planes(d, v, nv, ch, x, e, y, b * per, planes < (b + 1) * per ? planes : (b + 1) * per);
#else
	(void)d;
	(void)x;
	(void)w;
	(void)e;
	(void)y;
	(void)ws;
#endif
}
