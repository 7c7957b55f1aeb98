/* conv_dw3.c - 3x3 depthwise convolutions, padding 1, stride 1 or 2, one
 * plane at a time straight from the unpadded input.
 *
 * The direct kernel of conv.c takes a strided layer through phases: each
 * plane is first split into its four stride-2 phases, row by row, and the
 * splitting costs several times the layer's few FMAs (mobilenet-s's three
 * stride-2 depthwise layers were a third of its batch at 3 to 13 GFLOP/s).
 * Here an output row of sixteen columns reads its three input rows with
 * masked loads (the padding is the lanes masked off) and, at stride 2, two
 * loads of 32 inputs whose even and odd lanes are the centre and right
 * taps; the left tap is the odd lanes one column back, carried from the
 * chunk before.
 *
 * The INT8 form runs the same rows on the plane turned to floats, x - zero
 * point: every product of a code and a weight is an integer below 2^15 and
 * nine of them sum below 2^24, so the float sums are the int32 sums exactly
 * and the epilogue is the VNNI kernels', lane for lane.
 *
 * An INT8 layer of one input channel (a first layer on the image) is the
 * same flat planes: every output channel reads the one input plane.  Each
 * vector of positions loads its nine taps once, and they feed every output
 * channel's FMAs; the packed VNNI kernels had words of one channel's taps
 * to multiply and ran cnn-bn's 1 -> 32 at 77 GOP/s, 43% of its INT8 time.
 */
#include "config.h"
#include "cpu/conv.h"
#include "cpu/quant.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_DW3_AVX512 1
#endif

/* Stride-1 planes of more than DW3_VECS_MAX vectors run rows of sixteen,
 * which conv_masked.c's flat planes beat in float; the INT8 form takes
 * them (its alternative is slower still). */
#define DW3_VECS_MAX 256
/* Vectors of an output row, at most. */
#define DW3_CHUNKS_MAX 64

static int dw3_shape(const ds_conv2d_dims *d)
{
	return d->groups == d->c && d->o == d->c && d->kh == 3 && d->kw == 3 && d->ph == 1 && d->pw == 1 &&
	       d->dh == 1 && d->dw == 1 && (d->sh == 1 || d->sh == 2) && d->sw == d->sh && !d->pool &&
	       d->oh > 0 && d->ow > 0 && d->ow <= 16 * DW3_CHUNKS_MAX;
}

int ds_conv2d_dw3_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_DW3_AVX512
	return dw3_shape(d) && (d->sh == 2 || (d->oh * d->ow + 15) / 16 <= DW3_VECS_MAX) &&
	       __builtin_cpu_supports("avx512f");
#else
	(void)d;
	return 0;
#endif
}

int ds_qconv2d_dw3_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_DW3_AVX512
	return dw3_shape(d) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
	(void)d;
	return 0;
#endif
}

int ds_qconv2d_one3_fits(const ds_conv2d_dims *d)
{
#ifdef HAVE_DW3_AVX512
	return d->groups == 1 && d->c == 1 && d->kh == 3 && d->kw == 3 && d->ph == 1 && d->pw == 1 && d->dh == 1 &&
	       d->dw == 1 && d->sh == 1 && d->sw == 1 && d->oh == d->h && d->ow == d->w &&
	       (d->pool ? d->oh >= 2 && d->ow >= 2 && __builtin_cpu_supports("avx512vnni") &&
			  __builtin_cpu_supports("avx512vbmi")
			: (d->oh * d->ow + 15) / 16 <= DW3_VECS_MAX) &&
	       __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
	(void)d;
	return 0;
#endif
}

/* In floats.  With a pool the plane is of codes, padded: a border of the
 * zero point, rows of w + 2 bytes, and room after it for the loads of the
 * last window's columns past the row. */
static int64_t one3_plane(const ds_conv2d_dims *d)
{
	return d->pool ? ((d->h + 2) * (d->w + 2) + 128 + 63) / 64 * 16 : (d->h * d->w + 15) / 16 * 16;
}

/* Per thread: the plane as floats, then the filters as floats (or words
 * and sums), then each channel's epilogue multiplier and bias. */
static int64_t one3_slice(const ds_conv2d_dims *d)
{
	return one3_plane(d) + (d->o * 11 + 15) / 16 * 16;
}

size_t ds_qconv2d_one3_workspace(const ds_conv2d_dims *d)
{
	return (size_t)ds_kernel_threads() * (size_t)one3_slice(d) * sizeof(float);
}

/* Planes turned to floats together before any is read: a load straight
 * after the stores that wrote its floats waits for them (store-to-load
 * forwarding fails on the shifted, masked loads), which made 7x7 planes
 * twice as slow as the VNNI kernel. */
#define DW3_GROUP_FLOATS 4096

static int64_t dw3_group(const ds_conv2d_dims *d)
{
	int64_t in = d->h * d->w;

	return in >= DW3_GROUP_FLOATS ? 1 : DW3_GROUP_FLOATS / in;
}

size_t ds_qconv2d_dw3_workspace(const ds_conv2d_dims *d)
{
	return (size_t)ds_kernel_threads() * (size_t)((dw3_group(d) * d->h * d->w + 15) / 16 * 16) * sizeof(float);
}

#ifdef HAVE_DW3_AVX512
/* Lanes j with 0 <= at + j < w. */
static inline __mmask16 span(int64_t at, int64_t w)
{
	int64_t lo = at < 0 ? -at : 0, hi = w - at < 16 ? w - at : 16;

	if (hi <= lo)
		return 0;
	return (__mmask16)((0xffffu >> (16 - (hi - lo))) << lo);
}

/* row[at .. at + 16) under mask m.  at may be before the row: only the
 * masked lanes are read, and the address is formed as an integer. */
static inline __attribute__((always_inline, target("avx512f"))) __m512 load_at(const float *row, int64_t at,
										__mmask16 m)
{
	return _mm512_maskz_loadu_ps(m, (const void *)((uintptr_t)row + (uintptr_t)(at * 4)));
}

/* The sums of output row oy, columns [ox0, ox0 + 16), into acc, the loads
 * under the chunk's masks m; odd[ky] carries the odd lanes of the previous
 * chunk at stride 2. */
static inline __attribute__((always_inline, target("avx512f"))) __m512
dw3_chunk(const float *x, int64_t h, int64_t w, int s, const __m512 *wt, int64_t oy, int64_t ox0,
	  const __mmask16 *m, __m512 *odd)
{
	const __m512i even_idx = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i odd_idx = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
	__m512 acc[3] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps() };

#pragma GCC unroll 3
	for (int ky = 0; ky < 3; ky++) {
		int64_t iy = oy * s + ky - 1;
		const float *row = x + iy * w;

		if (iy < 0 || iy >= h)
			continue;
		if (s == 1) {
			acc[ky] = _mm512_mul_ps(load_at(row, ox0 - 1, m[0]), wt[3 * ky]);
			acc[ky] = _mm512_fmadd_ps(load_at(row, ox0, m[1]), wt[3 * ky + 1], acc[ky]);
			acc[ky] = _mm512_fmadd_ps(load_at(row, ox0 + 1, m[2]), wt[3 * ky + 2], acc[ky]);
		} else {
			__m512 a = load_at(row, 2 * ox0, m[0]), b = load_at(row, 2 * ox0 + 16, m[1]);
			__m512 ev = _mm512_permutex2var_ps(a, even_idx, b), od = _mm512_permutex2var_ps(a, odd_idx, b);
			/* Lane j: input 2 (ox0 + j) - 1, the odd lane before. */
			__m512 left = _mm512_castsi512_ps(
				_mm512_alignr_epi32(_mm512_castps_si512(od), _mm512_castps_si512(odd[ky]), 15));

			odd[ky] = od;
			acc[ky] = _mm512_mul_ps(left, wt[3 * ky]);
			acc[ky] = _mm512_fmadd_ps(ev, wt[3 * ky + 1], acc[ky]);
			acc[ky] = _mm512_fmadd_ps(od, wt[3 * ky + 2], acc[ky]);
		}
	}
	return _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), acc[2]);
}

/* Stride 1 keeps the output plane flat, as wide as the input: vector v
 * holds outputs [16 v, 16 v + 16) whatever rows they span, and tap (ky, kx)
 * is the input shifted by (ky - 1) w + kx - 1 under a mask that drops the
 * padding.  Otherwise (stride 2, or planes of more than DW3_VECS_MAX
 * vectors) a plane runs by rows of chunks of sixteen outputs, the masks of
 * a chunk's loads the same in every row.  Either table is made once a call,
 * the same for every plane. */
struct dw3_masks {
	int64_t vecs;                        /* flat: vectors a plane; 0: rows */
	__mmask16 tap[DW3_VECS_MAX][9];
	/* rows: per chunk, the loads' masks (three at stride 1, two at
	 * stride 2), then the lanes stored */
	__mmask16 chunk[DW3_CHUNKS_MAX][4];
};

static int dw3_flat(const ds_conv2d_dims *d)
{
	return d->sh == 1 && (d->oh * d->ow + 15) / 16 <= DW3_VECS_MAX;
}

static void dw3_rows_make(const ds_conv2d_dims *d, struct dw3_masks *m)
{
	m->vecs = 0;
	for (int64_t ox0 = 0, k = 0; ox0 < d->ow; ox0 += 16, k++) {
		for (int j = 0; j < 3; j++)
			m->chunk[k][j] = d->sh == 1 ? span(ox0 - 1 + j, d->w) : j < 2 ? span(2 * ox0 + 16 * j, d->w) : 0;
		m->chunk[k][3] = span(ox0, d->ow);
	}
}

/* Sixteen positions at a time: their column steps by 16 and wraps, so
 * there is no division (a table a call of 10^4 positions is a few
 * microseconds, which a layer of three channels notices). */
static __attribute__((target("avx512f"))) void dw3_flat_make(const ds_conv2d_dims *d, struct dw3_masks *m)
{
	const int64_t w = d->w, n = d->h * w;
	const __m512i vw = _mm512_set1_epi32((int)w), step = _mm512_set1_epi32(16);
	__m512i q = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), ox = q;
	__mmask16 wrap;

	while ((wrap = _mm512_cmpge_epi32_mask(ox, vw)))
		ox = _mm512_mask_sub_epi32(ox, wrap, ox, vw);
	m->vecs = (n + 15) / 16;
	for (int64_t v = 0; v < m->vecs; v++) {
		__mmask16 in = _mm512_cmplt_epi32_mask(q, _mm512_set1_epi32((int)n));
		__mmask16 rows[3] = { _mm512_cmpge_epi32_mask(q, vw) & in, in,
				      _mm512_cmplt_epi32_mask(q, _mm512_set1_epi32((int)(n - w))) & in };
		__mmask16 cols[3] = { _mm512_cmpgt_epi32_mask(ox, _mm512_setzero_si512()), 0xffff,
				      _mm512_cmplt_epi32_mask(ox, _mm512_set1_epi32((int)(w - 1))) };

		for (int t = 0; t < 9; t++)
			m->tap[v][t] = rows[t / 3] & cols[t % 3];
		q = _mm512_add_epi32(q, step);
		ox = _mm512_add_epi32(ox, step);
		while ((wrap = _mm512_cmpge_epi32_mask(ox, vw)))
			ox = _mm512_mask_sub_epi32(ox, wrap, ox, vw);
	}
}

static void dw3_masks_make(const ds_conv2d_dims *d, struct dw3_masks *m)
{
	if (dw3_flat(d))
		dw3_flat_make(d, m);
	else
		dw3_rows_make(d, m);
}

static inline __attribute__((always_inline, target("avx512f"))) __m512
dw3_flat_vec(const float *x, int64_t w, const __m512 *wt, const __mmask16 *mask, int64_t q0)
{
	/* A sum per filter row, added at the end: three short chains of
	 * FMAs rather than one of nine. */
	__m512 acc[3];

#pragma GCC unroll 3
	for (int ky = 0; ky < 3; ky++) {
		/* Only the masked lanes are read; the address may be before
		 * the plane, so it is formed as an integer. */
		const uintptr_t row = (uintptr_t)x + (uintptr_t)((q0 + (ky - 1) * w - 1) * 4);

		acc[ky] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask[3 * ky], (const void *)row), wt[3 * ky]);
		acc[ky] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask[3 * ky + 1], (const void *)(row + 4)),
					  wt[3 * ky + 1], acc[ky]);
		acc[ky] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask[3 * ky + 2], (const void *)(row + 8)),
					  wt[3 * ky + 2], acc[ky]);
	}
	return _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), acc[2]);
}

/* One plane: BODY with acc, at (the first output's offset) and keep (the
 * lanes to store) for every vector of outputs. */
#define DW3_PLANE(d, m, x, wt, BODY)                                                                               \
	do {                                                                                                       \
		if ((m)->vecs) {                                                                                   \
			const int64_t n_ = (d)->oh * (d)->ow;                                                      \
			for (int64_t v_ = 0; v_ < (m)->vecs; v_++) {                                               \
				const int64_t at = 16 * v_;                                                        \
				const __mmask16 keep = n_ - at >= 16 ? (__mmask16)0xffff                           \
								     : (__mmask16)((1u << (n_ - at)) - 1);         \
				__m512 acc = dw3_flat_vec(x, (d)->w, wt, (m)->tap[v_], at);                        \
				BODY;                                                                              \
			}                                                                                          \
			break;                                                                                     \
		}                                                                                                  \
		for (int64_t oy = 0; oy < (d)->oh; oy++) {                                                         \
			__m512 odd[3] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps() };       \
			for (int64_t ox0 = 0, k_ = 0; ox0 < (d)->ow; ox0 += 16, k_++) {                            \
				const __mmask16 keep = (m)->chunk[k_][3];                                          \
				const int64_t at = oy * (d)->ow + ox0;                                             \
				__m512 acc = (d)->sh == 1                                                          \
						     ? dw3_chunk(x, (d)->h, (d)->w, 1, wt, oy, ox0, (m)->chunk[k_], odd) \
						     : dw3_chunk(x, (d)->h, (d)->w, 2, wt, oy, ox0, (m)->chunk[k_], odd); \
				BODY;                                                                              \
			}                                                                                          \
		}                                                                                                  \
	} while (0)

/* The float epilogue in conv.c's order: (sum + bias) + r, then the ReLU and
 * its cap; no bias is -0.0f, which leaves every sum as it is. */
static __attribute__((target("avx512f"), optimize("fp-contract=off"))) void
dw3_plane_f32(const ds_conv2d_dims *d, const struct dw3_masks *m, const float *x, const float *w9, float bias,
	      const float *r, float *y)
{
	const __m512 vb = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
	const __m512 hi = _mm512_set1_ps(d->cap > 0.0f ? d->cap : INFINITY);
	__m512 wt[9];

	for (int t = 0; t < 9; t++)
		wt[t] = _mm512_set1_ps(w9[t]);
	DW3_PLANE(d, m, x, wt, {
		__m512 v = _mm512_add_ps(acc, vb);

		if (r)
			v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, r + at));
		if (d->relu)
			v = _mm512_min_ps(_mm512_max_ps(v, zero), hi);
		_mm512_mask_storeu_ps(y + at, keep, v);
	});
}

/* The epilogue of quant.c's epi_vnni on exact sums (ds_qcode for codes). */
static __attribute__((target("avx512f,avx512bw,avx512vl"), optimize("fp-contract=off"))) void
dw3_plane_q(const ds_conv2d_dims *d, const struct dw3_masks *m, const float *xf, const float *w9, const ds_qout *e,
	    int64_t c, void *y)
{
	const ds_qcode q = DS_QOUT_AFFINE(e, c);
	const __m512 mult = _mm512_set1_ps(q.m), bias = _mm512_set1_ps(q.b);
	const __m512 lo = _mm512_set1_ps(q.lo), hi = _mm512_set1_ps(q.hi);
	__m512 wt[9];

	for (int t = 0; t < 9; t++)
		wt[t] = _mm512_set1_ps(w9[t]);
	DW3_PLANE(d, m, xf, wt, {
		__m512 v = _mm512_add_ps(_mm512_mul_ps(acc, mult), bias);

		v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
		if (e->u8) {
			__m128i codes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v));

			/* Kept in a register: GCC would otherwise fold the narrow
			 * into the store, and vpmovusdb to memory is slow on AMD. */
			__asm__("" : "+x"(codes));
			_mm_mask_storeu_epi8((uint8_t *)y + at, keep, codes);
		} else {
			_mm512_mask_storeu_ps((float *)y + at, keep, v);
		}
	});
}

/* A plane of codes as floats minus the zero point. */
static __attribute__((target("avx512f,avx512bw,avx512vl"))) void dw3_codes(const uint8_t *x, int64_t n, int32_t zp,
									  float *xf)
{
	const __m512i vzp = _mm512_set1_epi32(zp);

	for (int64_t i = 0; i < n; i += 16) {
		__mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
		__m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x + i));

		_mm512_mask_storeu_ps(xf + i, m, _mm512_cvtepi32_ps(_mm512_sub_epi32(v, vzp)));
	}
}
#endif

#ifdef HAVE_DW3_AVX512
/* Output channels [o0, o1) of one image from its plane of floats xf,
 * filters wf ([o][9] as floats): per vector of positions, the nine taps
 * once, then each channel's sums and dw3_plane_q's epilogue. */
static __attribute__((target("avx512f,avx512bw,avx512vl"), optimize("fp-contract=off"))) void
one3_image(const ds_conv2d_dims *d, const struct dw3_masks *m, const float *xf, const float *wf, const float *qm,
	   const float *qb, const ds_qout *e, int64_t o0, int64_t o1, void *y)
{
	const int64_t n = d->oh * d->ow, w = d->w;
	const ds_qcode q = DS_QOUT_AFFINE(e, o0);   /* the clamp: the same for every channel */
	const __m512 lo = _mm512_set1_ps(q.lo), hi = _mm512_set1_ps(q.hi);

	for (int64_t v = 0; v < m->vecs; v++) {
		const int64_t at = 16 * v;
		const __mmask16 keep = n - at >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - at)) - 1);
		__m512 tap[9];

#pragma GCC unroll 9
		for (int t = 0; t < 9; t++) {
			/* Only the masked lanes are read; the address may be
			 * before the plane, so it is formed as an integer. */
			const uintptr_t a = (uintptr_t)xf + (uintptr_t)((at + (t / 3 - 1) * w + t % 3 - 1) * 4);

			tap[t] = _mm512_maskz_loadu_ps(m->tap[v][t], (const void *)a);
		}
		for (int64_t o = o0; o < o1; o++) {
			const float *w9 = wf + o * 9;
			/* Sums of integers below 2^24: exact in any order. */
			__m512 acc = _mm512_mul_ps(tap[0], _mm512_set1_ps(w9[0])), v2;

#pragma GCC unroll 8
			for (int t = 1; t < 9; t++)
				acc = _mm512_fmadd_ps(tap[t], _mm512_set1_ps(w9[t]), acc);
			v2 = _mm512_add_ps(_mm512_mul_ps(acc, _mm512_set1_ps(qm[o])), _mm512_set1_ps(qb[o]));
			v2 = _mm512_min_ps(_mm512_max_ps(v2, lo), hi);
			if (e->u8) {
				__m128i codes;

				codes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v2));
				__asm__("" : "+x"(codes));
				_mm_mask_storeu_epi8((uint8_t *)y + o * n + at, keep, codes);
			} else {
				_mm512_mask_storeu_ps((float *)y + o * n + at, keep, v2);
			}
		}
	}
}

/* The padded plane of one image: the codes inside a border of the zero
 * point (the padding's code), rows of w + 2 bytes. */
static void one3_padded(const ds_conv2d_dims *d, const uint8_t *x, int32_t zp, uint8_t *xp)
{
	const int64_t s = d->w + 2;

	memset(xp, zp, (size_t)one3_plane(d) * sizeof(float));
	for (int64_t iy = 0; iy < d->h; iy++)
		memcpy(xp + (iy + 1) * s + 1, x + iy * d->w, (size_t)d->w);
}

/* one3_image with the 2x2 max-pool, on VNNI: the taps of a filter row
 * are a word, a code a byte (the fourth byte meets a zero weight), so
 * that sixteen sums are three vpdpbusd.  The words of a window's four
 * rows of sixteen positions (32 sums across, two rows down) are made once
 * with a byte permute and serve every channel.  Each window's four sums
 * are pooled before the epilogue, which is monotone (non-decreasing in
 * the sum for a non-negative multiplier, non-increasing for a negative
 * one, whose windows take their least sum): the code is the pooled code
 * of the unfused layer, for a quarter of the epilogues.  On floats, with
 * the taps loaded again for every channel, the fused layer was no faster
 * than the layer and a pool. */
static __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"), optimize("fp-contract=off"))) void
one3_image_pooled(const ds_conv2d_dims *d, const uint8_t *xp, const int32_t *ww, const int32_t *wsum, const float *qm,
		  const float *qb, const ds_qout *e, int64_t o0, int64_t o1, void *y)
{
	const int64_t s = d->w + 2, poh = d->oh / 2, pow = d->ow / 2, pn = poh * pow;
	const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
	/* Word i: bytes i, i + 1, i + 2 (and i + 2 again, for the zero). */
	const __m512i taps = _mm512_set_epi32(0x1111100f, 0x10100f0e, 0x0f0f0e0d, 0x0e0e0d0c, 0x0d0d0c0b,
					      0x0c0c0b0a, 0x0b0b0a09, 0x0a0a0908, 0x09090807, 0x08080706,
					      0x07070605, 0x06060504, 0x05050403, 0x04040302, 0x03030201, 0x02020100);
	const ds_qcode code = DS_QOUT_AFFINE(e, o0);   /* the clamp: the same for every channel */
	const __m512 lo = _mm512_set1_ps(code.lo), hi = _mm512_set1_ps(code.hi);
	const __m512i xzp = _mm512_set1_epi32(e->x_zero_point);

	for (int64_t py = 0; py < poh; py++)
		for (int64_t px = 0; px < pow; px += 16) {
			const __mmask16 keep = pow - px >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (pow - px)) - 1);
			__m512i wd[4][3];

			/* Sums [r][h]: conv row 2 py + r, columns 2 px + 16 h on. */
			for (int q = 0; q < 4; q++)
				for (int ky = 0; ky < 3; ky++)
					wd[q][ky] = _mm512_permutexvar_epi8(
						taps, _mm512_loadu_si512(xp + (2 * py + q / 2 + ky) * s + 2 * px + 16 * (q % 2)));
			for (int64_t o = o0; o < o1; o++) {
				const int32_t *wo = ww + o * 3;
				const float mult = qm[o];
				__m512i a[4], l, r, acc;
				__m512 v;

				for (int q = 0; q < 4; q++) {
					a[q] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wd[q][0], _mm512_set1_epi32(wo[0]));
					a[q] = _mm512_dpbusd_epi32(a[q], wd[q][1], _mm512_set1_epi32(wo[1]));
					a[q] = _mm512_dpbusd_epi32(a[q], wd[q][2], _mm512_set1_epi32(wo[2]));
				}
				/* The least sum of a window is minus the most of the
				 * negated sums. */
				for (int q = 0; q < 4 && mult < 0.0f; q++)
					a[q] = _mm512_sub_epi32(_mm512_setzero_si512(), a[q]);
				a[0] = _mm512_max_epi32(a[0], a[2]);
				a[1] = _mm512_max_epi32(a[1], a[3]);
				l = _mm512_permutex2var_epi32(a[0], even, a[1]);
				r = _mm512_permutex2var_epi32(a[0], odd, a[1]);
				acc = _mm512_max_epi32(l, r);
				if (mult < 0.0f)
					acc = _mm512_sub_epi32(_mm512_setzero_si512(), acc);
				acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(xzp, _mm512_set1_epi32(wsum[o])));
				v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(mult)),
						  _mm512_set1_ps(qb[o]));
				v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
				if (e->u8) {
					__m128i codes;

					codes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v));
					__asm__("" : "+x"(codes));
					_mm_mask_storeu_epi8((uint8_t *)y + o * pn + py * pow + px, keep, codes);
				} else {
					_mm512_mask_storeu_ps((float *)y + o * pn + py * pow + px, keep, v);
				}
			}
		}
}
#endif

void ds_qconv2d_one3_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			     void *ws)
{
#ifdef HAVE_DW3_AVX512
	const int64_t in = d->h * d->w, out = d->pool ? (d->oh / 2) * (d->ow / 2) : d->oh * d->ow;
	const int64_t slice = one3_slice(d);
	/* Output channels in parts of at least 8, so that a batch of one
	 * still keeps both threads busy. */
	const int64_t parts = d->n >= ds_kernel_threads() ? 1 : (d->o + 7) / 8, items = d->n * parts;
	const size_t es = e->u8 ? 1 : sizeof(float);
	struct dw3_masks masks, *m = &masks;

	if (!d->pool)
		dw3_flat_make(d, m);
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t it = 0; it < items; it++) {
		const int64_t img = it / parts, part = it % parts;
		const int64_t o0 = d->o * part / parts, o1 = d->o * (part + 1) / parts;
		float *xf = (float *)ws + ds_kernel_slice() * slice, *wf = xf + one3_plane(d);
		float *qm = wf + 9 * d->o, *qb = qm + d->o;

		for (int64_t o = o0; o < o1; o++) {
			ds_qcode q = DS_QOUT_AFFINE(e, o);

			qm[o] = q.m;
			qb[o] = q.b;
		}
		if (d->pool) {
			/* A filter row's taps as a word, and each filter's sum. */
			int32_t *ww = (int32_t *)wf, *wsum = ww + 3 * d->o;

			for (int64_t o = o0; o < o1; o++) {
				wsum[o] = 0;
				for (int ky = 0; ky < 3; ky++) {
					const int8_t *t = w + o * 9 + ky * 3;

					ww[o * 3 + ky] = (int32_t)((uint32_t)(uint8_t)t[0] | (uint32_t)(uint8_t)t[1] << 8 |
								   (uint32_t)(uint8_t)t[2] << 16);
					wsum[o] += t[0] + t[1] + t[2];
				}
			}
			one3_padded(d, x + img * in, e->x_zero_point, (uint8_t *)xf);
			one3_image_pooled(d, (const uint8_t *)xf, ww, wsum, qm, qb, e, o0, o1,
					  (char *)y + (size_t)(img * d->o * out) * es);
			continue;
		}
		for (int64_t i = 0; i < (o1 - o0) * 9; i++)
			wf[o0 * 9 + i] = (float)w[o0 * 9 + i];
		dw3_codes(x + img * in, in, e->x_zero_point, xf);
		one3_image(d, m, xf, wf, qm, qb, e, o0, o1, (char *)y + (size_t)(img * d->o * out) * es);
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

void ds_conv2d_dw3_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   const float *r, float *y)
{
#ifdef HAVE_DW3_AVX512
	const int64_t in = d->h * d->w, out = d->oh * d->ow;
	struct dw3_masks masks, *m = &masks;

	dw3_masks_make(d, m);
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t ic = 0; ic < d->n * d->c; ic++) {
		int64_t ch = ic % d->c;

		dw3_plane_f32(d, m, x + ic * in, w + ch * 9, b ? b[ch] : -0.0f, r ? r + ic * out : NULL, y + ic * out);
	}
#else
	(void)d;
	(void)x;
	(void)w;
	(void)b;
	(void)r;
	(void)y;
#endif
}

void ds_qconv2d_dw3_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e, void *y,
			    void *ws)
{
#ifdef HAVE_DW3_AVX512
	const int64_t in = d->h * d->w, out = d->oh * d->ow, group = dw3_group(d);
	const int64_t slice = (group * in + 15) / 16 * 16, planes = d->n * d->c;
	const size_t es = e->u8 ? 1 : sizeof(float);
	struct dw3_masks masks, *m = &masks;

	dw3_masks_make(d, m);
#pragma omp parallel for schedule(static) num_threads(ds_kernel_threads())
	for (int64_t g0 = 0; g0 < planes; g0 += group) {
		int64_t g1 = planes - g0 < group ? planes : g0 + group;
		float *xf = (float *)ws + ds_kernel_slice() * slice;

		dw3_codes(x + g0 * in, (g1 - g0) * in, e->x_zero_point, xf);
		for (int64_t ic = g0; ic < g1; ic++) {
			int64_t ch = ic % d->c;
			float w9[9];

			for (int t = 0; t < 9; t++)
				w9[t] = (float)w[ch * 9 + t];
			dw3_plane_q(d, m, xf + (ic - g0) * in, w9, e, ch, (char *)y + (size_t)(ic * out) * es);
		}
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
