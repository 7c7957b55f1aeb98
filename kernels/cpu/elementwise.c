/* elementwise.c - activations, dropout, broadcasting add and mul, concat
 * copies and embedding lookups on the CPU.
 *
 * Loops are plain so that the compiler vectorises them (omp simd where
 * there is no call inside); OpenMP splits them only from DS_CPU_PAR_MIN
 * elements on.  Each output element is computed, or each gradient element
 * summed, by one thread in a fixed order, so results do not depend on the
 * thread count.
 */
#include "config.h"
#include "cpu/elementwise.h"
#include "cpu/kernels.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_ACT_AVX512 1
#endif

/* ------------------------------------------------------------ activations */

int ds_cpu_act_uses_output(ds_cpu_act act)
{
	return act == DS_CPU_RELU || act == DS_CPU_RELU6 || act == DS_CPU_SIGMOID || act == DS_CPU_TANH;
}

/* sqrt(2/pi) and PyTorch's cubic coefficient for gelu's tanh form. */
#define GELU_K 0.7978845608028654f
#define GELU_C 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

static inline float sigmoidf(float x)
{
	return 1.0f / (1.0f + expf(-x));
}

/* ReLU both ways: GCC 12 at -O2 leaves the plain loops scalar and
 * branchy even under omp simd (a third of an inference batch of the
 * reference CNN went to the forward loop), so they are written with
 * AVX-512 where the CPU has it.  NaN gives 0 forward, as the plain loop
 * does (max returns its second operand on NaN). */
static int act_avx512(void)
{
#ifdef HAVE_ACT_AVX512
	/* libgcc fills the CPU model in a constructor: reading it is cheap
	 * and race-free. */
	return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
	return 0;
#endif
}

#ifdef HAVE_ACT_AVX512
static __attribute__((target("avx512f"))) void relu_forward_avx512(const float *x, float *y,
								    int64_t n)
{
	const __m512 zero = _mm512_setzero_ps();
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_max_ps(_mm512_loadu_ps(x + i), zero));
	if (i < n) {
		__mmask16 m = (__mmask16)((1u << (n - i)) - 1);

		_mm512_mask_storeu_ps(y + i, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, x + i), zero));
	}
}

/* cap 0: relu's derivative (y > 0); else relu6's (0 < y < cap). */
static __attribute__((target("avx512f"))) void relu_backward_avx512(const float *t,
								     const float *dy, float *dx,
								     int64_t n, float cap)
{
	const __m512 zero = _mm512_setzero_ps(), hi = _mm512_set1_ps(cap);
	int64_t i = 0;

	for (; i < n; i += 16) {
		__mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
		__m512 tv = _mm512_maskz_loadu_ps(m, t + i);
		__mmask16 pos = _mm512_mask_cmp_ps_mask(m, tv, zero, _CMP_GT_OQ);
		__m512 g;

		if (cap > 0.0f)
			pos = _mm512_mask_cmp_ps_mask(pos, tv, hi, _CMP_LT_OQ);
		g = _mm512_maskz_loadu_ps(pos, dy + i);

		_mm512_mask_storeu_ps(dx + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dx + i), g));
	}
}
#endif

static void relu_forward_range(const float *x, float *y, int64_t n)
{
#ifdef HAVE_ACT_AVX512
	if (act_avx512()) {
		relu_forward_avx512(x, y, n);
		return;
	}
#endif
	for (int64_t i = 0; i < n; i++)
		y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_backward_range(const float *t, const float *dy, float *dx, int64_t n, float cap)
{
#ifdef HAVE_ACT_AVX512
	if (act_avx512()) {
		relu_backward_avx512(t, dy, dx, n, cap);
		return;
	}
#endif
	if (cap > 0.0f)
		for (int64_t i = 0; i < n; i++)
			dx[i] += t[i] > 0.0f && t[i] < cap ? dy[i] : 0.0f;
	else
		for (int64_t i = 0; i < n; i++)
			dx[i] += t[i] > 0.0f ? dy[i] : 0.0f;
}

/* Threads take whole 64-byte lines, so none shares one it writes. */
static void relu_forward(const float *x, float *y, int64_t n)
{
#pragma omp parallel if (n >= DS_CPU_PAR_MIN)
	{
		int64_t i0, i1;

		ds_cpu_line_share(n, &i0, &i1);
		if (i0 < i1)
			relu_forward_range(x + i0, y + i0, i1 - i0);
	}
}

static void relu_backward(const float *t, const float *dy, float *dx, int64_t n, float cap)
{
#pragma omp parallel if (n >= DS_CPU_PAR_MIN)
	{
		int64_t i0, i1;

		ds_cpu_line_share(n, &i0, &i1);
		if (i0 < i1)
			relu_backward_range(t + i0, dy + i0, dx + i0, i1 - i0, cap);
	}
}

void ds_cpu_act_forward(ds_cpu_act act, float alpha, const float *x, float *y, int64_t n)
{
	switch (act) {
	case DS_CPU_RELU:
		relu_forward(x, y, n);
		break;
	case DS_CPU_RELU6:
		/* Compares, not fminf/fmaxf: those stay library calls without
		 * -ffast-math (NaN rules) and took half of mobilenet-s's batch.
		 * NaN still becomes 0, as with fmaxf. */
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
		for (int64_t i = 0; i < n; i++) {
			float v = x[i] > 0.0f ? x[i] : 0.0f;

			y[i] = v < 6.0f ? v : 6.0f;
		}
		break;
	case DS_CPU_LEAKY_RELU:
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
		for (int64_t i = 0; i < n; i++)
			y[i] = x[i] > 0.0f ? x[i] : x[i] * alpha;
		break;
	case DS_CPU_GELU:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++)
			y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
		break;
	case DS_CPU_GELU_TANH:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++) {
			float v = x[i];

			y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + GELU_C * v * v * v)));
		}
		break;
	case DS_CPU_SIGMOID:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++)
			y[i] = sigmoidf(x[i]);
		break;
	case DS_CPU_TANH:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++)
			y[i] = tanhf(x[i]);
		break;
	case DS_CPU_SILU:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++)
			y[i] = x[i] * sigmoidf(x[i]);
		break;
	case DS_CPU_HARDSWISH:
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
		for (int64_t i = 0; i < n; i++) {
			float v = x[i] + 3.0f;

			v = v > 0.0f ? v : 0.0f;
			y[i] = x[i] * (v < 6.0f ? v : 6.0f) * (1.0f / 6.0f);
		}
		break;
	}
}

/* The derivatives PyTorch uses, kinks included: relu passes where y > 0,
 * relu6 where 0 < y < 6, leaky_relu takes the slope 1 where x > 0. */
void ds_cpu_act_backward(ds_cpu_act act, float alpha, const float *t, const float *dy, float *dx,
			 int64_t n)
{
	switch (act) {
	case DS_CPU_RELU:
		relu_backward(t, dy, dx, n, 0.0f);
		break;
	case DS_CPU_RELU6:
		/* The relu kernel with a cap: the simd loop with && left
		 * relu6's backward 6 times its forward in mobilenet-s. */
		relu_backward(t, dy, dx, n, 6.0f);
		break;
	case DS_CPU_LEAKY_RELU:
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
		for (int64_t i = 0; i < n; i++)
			dx[i] += t[i] > 0.0f ? dy[i] : dy[i] * alpha;
		break;
	case DS_CPU_GELU:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++) {
			float v = t[i];
			float cdf = 0.5f * (1.0f + erff(v * INV_SQRT2));
			float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);

			dx[i] += dy[i] * (cdf + v * pdf);
		}
		break;
	case DS_CPU_GELU_TANH:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++) {
			float v = t[i];
			float th = tanhf(GELU_K * (v + GELU_C * v * v * v));
			float du = GELU_K * (1.0f + 3.0f * GELU_C * v * v);

			dx[i] += dy[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du);
		}
		break;
	case DS_CPU_SIGMOID:
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
		for (int64_t i = 0; i < n; i++)
			dx[i] += dy[i] * t[i] * (1.0f - t[i]);
		break;
	case DS_CPU_TANH:
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
		for (int64_t i = 0; i < n; i++)
			dx[i] += dy[i] * (1.0f - t[i] * t[i]);
		break;
	case DS_CPU_SILU:
#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 8)
		for (int64_t i = 0; i < n; i++) {
			float s = sigmoidf(t[i]);

			dx[i] += dy[i] * s * (1.0f + t[i] * (1.0f - s));
		}
		break;
	case DS_CPU_HARDSWISH:
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
		for (int64_t i = 0; i < n; i++) {
			float v = t[i];
			float d = v < -3.0f ? 0.0f : v <= 3.0f ? v * (1.0f / 3.0f) + 0.5f : 1.0f;

			dx[i] += dy[i] * d;
		}
		break;
	}
}

/* ---------------------------------------------------------------- dropout */

/* splitmix64's output function over the counter seed + (i + 1) * golden:
 * element i's draw depends on nothing but the seed and i. */
static inline uint64_t mix64(uint64_t seed, uint64_t i)
{
	uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Drop when the draw's top 32 bits fall below p * 2^32. */
static inline uint32_t drop_threshold(float p)
{
	double t = (double)p * 4294967296.0;

	return t >= 4294967295.0 ? UINT32_MAX : (uint32_t)t;
}

int ds_cpu_dropout_keep(uint64_t seed, int64_t i, float p)
{
	return (uint32_t)(mix64(seed, (uint64_t)i) >> 32) >= drop_threshold(p);
}

void ds_cpu_dropout_forward(const float *x, float *y, int64_t n, float p, uint64_t seed)
{
	uint32_t thr = drop_threshold(p);
	float scale = 1.0f / (1.0f - p);

#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 4)
	for (int64_t i = 0; i < n; i++)
		y[i] = (uint32_t)(mix64(seed, (uint64_t)i) >> 32) >= thr ? x[i] * scale : 0.0f;
}

void ds_cpu_dropout_backward(const float *dy, float *dx, int64_t n, float p, uint64_t seed)
{
	uint32_t thr = drop_threshold(p);
	float scale = 1.0f / (1.0f - p);

#pragma omp parallel for schedule(static) if (n >= DS_CPU_PAR_MIN / 4)
	for (int64_t i = 0; i < n; i++)
		if ((uint32_t)(mix64(seed, (uint64_t)i) >> 32) >= thr)
			dx[i] += dy[i] * scale;
}

/* ------------------------------------------------------------ broadcasting */

int ds_cpu_bcast_init(ds_cpu_bcast *bc, int nda, const int64_t *da, int ndb, const int64_t *db)
{
	int nd = nda > ndb ? nda : ndb;
	int64_t dim[DS_CPU_BCAST_DIMS], sa[DS_CPU_BCAST_DIMS], sb[DS_CPU_BCAST_DIMS];
	int64_t ca = 1, cb = 1;
	int k = 0;

	if (nd > DS_CPU_BCAST_DIMS)
		return -1;
	memset(bc, 0, sizeof *bc);
	/* Right to left: each operand's contiguous stride, 0 where it is
	 * broadcast; dims of 1 in the output are dropped. */
	for (int i = nd - 1; i >= 0; i--) {
		int ia = nda - nd + i, ib = ndb - nd + i;
		int64_t xa = ia >= 0 ? da[ia] : 1, xb = ib >= 0 ? db[ib] : 1;
		int64_t xo = xa == 1 ? xb : xa;

		if (xa != xb && xa != 1 && xb != 1)
			return -1;
		if (xo == 1)
			continue;
		dim[k] = xo;
		sa[k] = xa == 1 ? 0 : ca;
		sb[k] = xb == 1 ? 0 : cb;
		ca *= xa;
		cb *= xb;
		k++;
	}
	bc->numel_in[0] = ca;
	bc->numel_in[1] = cb;
	bc->numel = 1;
	if (k == 0) {
		bc->nd = 1;
		bc->dim[0] = 1;
		bc->stride[0][0] = bc->stride[1][0] = 1;
		return 0;
	}
	/* dim[] is reversed; put it in order, merging a dim into the one
	 * outside it when both operands step through the pair as one. */
	for (int i = k - 1; i >= 0; i--) {
		int m = bc->nd - 1;

		if (m >= 0 && bc->stride[0][m] == sa[i] * dim[i] && bc->stride[1][m] == sb[i] * dim[i]) {
			bc->dim[m] *= dim[i];
			bc->stride[0][m] = sa[i];
			bc->stride[1][m] = sb[i];
		} else {
			bc->dim[bc->nd] = dim[i];
			bc->stride[0][bc->nd] = sa[i];
			bc->stride[1][bc->nd] = sb[i];
			bc->nd++;
		}
		bc->numel *= dim[i];
	}
	return 0;
}

enum { OP_ADD, OP_MUL, OP_ACC_MUL };

static inline void row_kernel(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *y,
			      int64_t len)
{
	/* The last dim of a merged broadcast has strides 1 or 0. */
	if (sa && sb) {
		if (op == OP_ADD) {
#pragma omp simd
			for (int64_t j = 0; j < len; j++)
				y[j] = a[j] + b[j];
		} else if (op == OP_MUL) {
#pragma omp simd
			for (int64_t j = 0; j < len; j++)
				y[j] = a[j] * b[j];
		} else {
#pragma omp simd
			for (int64_t j = 0; j < len; j++)
				y[j] += a[j] * b[j];
		}
	} else {
		const float *v = sa ? a : b;
		float s = sa ? b[0] : a[0];

		if (op == OP_ADD) {
#pragma omp simd
			for (int64_t j = 0; j < len; j++)
				y[j] = v[j] + s;
		} else if (op == OP_MUL) {
#pragma omp simd
			for (int64_t j = 0; j < len; j++)
				y[j] = v[j] * s;
		} else {
#pragma omp simd
			for (int64_t j = 0; j < len; j++)
				y[j] += v[j] * s;
		}
	}
}

/* Offsets of row r (all dims but the last) in a and b. */
static inline void row_offsets(const ds_cpu_bcast *bc, const int64_t *sa, const int64_t *sb, int64_t r,
			       int64_t *oa, int64_t *ob)
{
	int64_t pa = 0, pb = 0;

	for (int d = bc->nd - 2; d >= 0; d--) {
		int64_t idx = r % bc->dim[d];

		r /= bc->dim[d];
		pa += idx * sa[d];
		pb += idx * sb[d];
	}
	*oa = pa;
	*ob = pb;
}

static void bcast_apply(const ds_cpu_bcast *bc, const int64_t *sa, const int64_t *sb, int op,
			const float *a, const float *b, float *y)
{
	int last = bc->nd - 1;
	int64_t len = bc->dim[last], rows = bc->numel / len;

	if (rows == 1 && len >= DS_CPU_PAR_MIN) {
		/* One long row: split it instead. */
		int64_t chunk = 4096, nchunks = (len + chunk - 1) / chunk;

#pragma omp parallel for schedule(static)
		for (int64_t c = 0; c < nchunks; c++) {
			int64_t j0 = c * chunk, n = len - j0 < chunk ? len - j0 : chunk;

			row_kernel(op, a + j0 * sa[last], sa[last], b + j0 * sb[last], sb[last], y + j0, n);
		}
		return;
	}
#pragma omp parallel for schedule(static) if (bc->numel >= DS_CPU_PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		int64_t oa, ob;

		row_offsets(bc, sa, sb, r, &oa, &ob);
		row_kernel(op, a + oa, sa[last], b + ob, sb[last], y + r * len, len);
	}
}

void ds_cpu_bcast_forward(const ds_cpu_bcast *bc, int op, const float *a, const float *b, float *y)
{
	bcast_apply(bc, bc->stride[0], bc->stride[1], op ? OP_MUL : OP_ADD, a, b, y);
}

/* dt[e] += sum over the output positions that read element e of the
 * target, of dy (times other there).  One thread per target element, the
 * positions in order. */
static void bcast_reduce(const ds_cpu_bcast *bc, int which, const float *dy, const float *other, float *dt)
{
	const int64_t *st = bc->stride[which], *so = bc->stride[1 - which];
	int64_t ostride[DS_CPU_BCAST_DIMS] = { 0 }, outer = 1, len, ps, qs;
	int kept[DS_CPU_BCAST_DIMS] = { 0 }, red[DS_CPU_BCAST_DIMS] = { 0 }, nk = 0, nr = 0;
	int64_t nt = bc->numel_in[which];

	for (int d = bc->nd - 1; d >= 0; d--)
		ostride[d] = d == bc->nd - 1 ? 1 : ostride[d + 1] * bc->dim[d + 1];
	for (int d = 0; d < bc->nd; d++) {
		if (st[d])
			kept[nk++] = d;
		else
			red[nr++] = d;
	}
	len = bc->dim[red[nr - 1]];
	ps = ostride[red[nr - 1]];
	qs = so[red[nr - 1]];
	for (int k = 0; k < nr - 1; k++)
		outer *= bc->dim[red[k]];

#pragma omp parallel for schedule(static) if (bc->numel >= DS_CPU_PAR_MIN && nt > 1)
	for (int64_t e = 0; e < nt; e++) {
		int64_t rem = e, p0 = 0, q0 = 0;
		double acc = 0;

		for (int k = nk - 1; k >= 0; k--) {
			int d = kept[k];
			int64_t idx = rem % bc->dim[d];

			rem /= bc->dim[d];
			p0 += idx * ostride[d];
			q0 += idx * so[d];
		}
		for (int64_t r = 0; r < outer; r++) {
			int64_t rr = r, p = p0, q = q0;
			float s = 0.0f;

			for (int k = nr - 2; k >= 0; k--) {
				int d = red[k];
				int64_t idx = rr % bc->dim[d];

				rr /= bc->dim[d];
				p += idx * ostride[d];
				q += idx * so[d];
			}
			if (!other) {
				const float *g = dy + p;

				if (ps == 1) {
#pragma omp simd reduction(+ : s)
					for (int64_t j = 0; j < len; j++)
						s += g[j];
				} else {
					for (int64_t j = 0; j < len; j++)
						s += g[j * ps];
				}
			} else {
				const float *g = dy + p, *o = other + q;

				if (ps == 1 && qs == 1) {
#pragma omp simd reduction(+ : s)
					for (int64_t j = 0; j < len; j++)
						s += g[j] * o[j];
				} else {
					for (int64_t j = 0; j < len; j++)
						s += g[j * ps] * o[j * qs];
				}
			}
			acc += s;
		}
		dt[e] += (float)acc;
	}
}

void ds_cpu_bcast_backward(const ds_cpu_bcast *bc, int which, const float *dy, const float *other,
			   float *dt)
{
	if (bc->numel_in[which] == bc->numel) {
		/* The target has the output's shape: no reduction. */
		if (other)
			bcast_apply(bc, bc->stride[which], bc->stride[1 - which], OP_ACC_MUL, dy, other, dt);
		else
			ds_cpu_accumulate(dt, dy, bc->numel);
		return;
	}
	bcast_reduce(bc, which, dy, other, dt);
}

/* ---------------------------------------------------------- copies, concat */

void ds_cpu_accumulate(float *dst, const float *src, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= DS_CPU_PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		dst[i] += src[i];
}

void ds_cpu_copy_rows(void *dst, int64_t row_dst, int64_t dst_off, const void *src, int64_t row_src,
		      int64_t src_off, int64_t bytes, int64_t outer)
{
#pragma omp parallel for schedule(static) if (outer * bytes >= 4 * DS_CPU_PAR_MIN && outer > 1)
	for (int64_t o = 0; o < outer; o++)
		memcpy((char *)dst + o * row_dst + dst_off, (const char *)src + o * row_src + src_off,
		       (size_t)bytes);
}

void ds_cpu_add_rows(float *dst, int64_t row_dst, int64_t dst_off, const float *src, int64_t row_src,
		     int64_t src_off, int64_t len, int64_t outer)
{
	if (outer == 1) {
		ds_cpu_accumulate(dst + dst_off, src + src_off, len);
		return;
	}
#pragma omp parallel for schedule(static) if (outer * len >= DS_CPU_PAR_MIN)
	for (int64_t o = 0; o < outer; o++) {
		float *d = dst + o * row_dst + dst_off;
		const float *s = src + o * row_src + src_off;

#pragma omp simd
		for (int64_t j = 0; j < len; j++)
			d[j] += s[j];
	}
}

/* ------------------------------------------------------------- embeddings */

/* Inlined in the loops below: a call per id through the PLT cost 2-3% of
 * a text-bag step. */
static inline int64_t id_at(const void *ids, int ids64, int64_t i)
{
	return ids64 ? ((const int64_t *)ids)[i] : ((const int32_t *)ids)[i];
}

int64_t ds_cpu_id_at(const void *ids, int ids64, int64_t i)
{
	return id_at(ids, ids64, i);
}

int64_t ds_cpu_ids_check(const void *ids, int ids64, int64_t n, int64_t vocab)
{
	for (int64_t i = 0; i < n; i++)
		if (id_at(ids, ids64, i) >= vocab)
			return i;
	return -1;
}

void ds_cpu_embedding_forward(const void *ids, int ids64, int64_t n, const float *table, int64_t dim,
			      float *out)
{
#pragma omp parallel for schedule(static) if (n * dim >= DS_CPU_PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		int64_t id = id_at(ids, ids64, i);

		if (id < 0)
			memset(out + i * dim, 0, (size_t)dim * sizeof *out);
		else
			memcpy(out + i * dim, table + id * dim, (size_t)dim * sizeof *out);
	}
}

/* Table rows of a large vocabulary each sit on their own page, so lookups
 * wait on memory: the row EMB_AHEAD ids on is fetched early (the lazy
 * optimizer's row loop, which waits the same way, ran several times faster
 * so on text-bag's million-row table). */
#define EMB_AHEAD 8

static inline void emb_prefetch(const void *ids, int ids64, int64_t i, int64_t end, const float *table,
				int64_t dim, int64_t part, int64_t parts, int write)
{
	int64_t id;

	if (i >= end || (id = id_at(ids, ids64, i)) < 0 || id % parts != part)
		return;
	for (int64_t d = 0; d < dim; d += 16) {
		if (write)
			__builtin_prefetch(table + id * dim + d, 1);
		else
			__builtin_prefetch(table + id * dim + d, 0);
	}
}

/* Gradient rows are scattered to ids that repeat: thread t owns the rows
 * whose id is t modulo the thread count and walks every id in order, so no
 * two threads touch one element and each element's sum keeps the order of
 * the ids whatever the thread count.  Splitting by rows rather than by
 * columns gives each thread its own rows' page walks: a big table's
 * scatter waits on those. */
static void embedding_scatter(const void *ids, int ids64, int64_t bags, int64_t len, const float *dy,
			      int64_t dim, int mean, float *dtable)
{
	int64_t parts = 1;

#ifdef _OPENMP
	if (bags * len * dim >= DS_CPU_PAR_MIN)
		parts = omp_get_max_threads();
#endif
#pragma omp parallel for schedule(static) if (parts > 1)
	for (int64_t part = 0; part < parts; part++) {
		for (int64_t b = 0; b < bags; b++) {
			const float *g = dy + b * dim;
			float scale = 1.0f;

			if (mean) {
				int64_t count = 0;

				for (int64_t j = 0; j < len; j++)
					count += id_at(ids, ids64, b * len + j) >= 0;
				if (!count)
					continue;
				scale = 1.0f / (float)count;
			}
			for (int64_t j = 0; j < len; j++) {
				int64_t id = id_at(ids, ids64, b * len + j);
				float *t;

				emb_prefetch(ids, ids64, b * len + j + EMB_AHEAD, bags * len, dtable, dim, part, parts, 1);
				if (id < 0 || id % parts != part)
					continue;
				t = dtable + id * dim;
#pragma omp simd
				for (int64_t d = 0; d < dim; d++)
					t[d] += g[d] * scale;
			}
		}
	}
}

void ds_cpu_embedding_backward(const void *ids, int ids64, int64_t n, const float *dy, int64_t dim,
			       float *dtable)
{
	embedding_scatter(ids, ids64, n, 1, dy, dim, 0, dtable);
}

void ds_cpu_embedding_bag_forward(const void *ids, int ids64, int64_t bags, int64_t len,
				  const float *table, int64_t dim, int mean, float *out)
{
#pragma omp parallel for schedule(static) if (bags * len * dim >= DS_CPU_PAR_MIN)
	for (int64_t b = 0; b < bags; b++) {
		float *o = out + b * dim;
		int64_t count = 0;

		memset(o, 0, (size_t)dim * sizeof *o);
		for (int64_t j = 0; j < len; j++) {
			int64_t id = id_at(ids, ids64, b * len + j);
			const float *t;

			emb_prefetch(ids, ids64, b * len + j + EMB_AHEAD, bags * len, table, dim, 0, 1, 0);
			if (id < 0)
				continue;
			t = table + id * dim;
			count++;
#pragma omp simd
			for (int64_t d = 0; d < dim; d++)
				o[d] += t[d];
		}
		if (mean && count > 1)
			for (int64_t d = 0; d < dim; d++)
				o[d] /= (float)count;
	}
}

void ds_cpu_embedding_bag_backward(const void *ids, int ids64, int64_t bags, int64_t len,
				   const float *dy, int64_t dim, int mean, float *dtable)
{
	embedding_scatter(ids, ids64, bags, len, dy, dim, mean, dtable);
}
