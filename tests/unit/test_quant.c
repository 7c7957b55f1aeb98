/* test_quant.c - the INT8 kernels and ops: each packed kernel (portable and,
 * where the CPU has it, VNNI) equals its plain reference exactly, and each
 * agrees within one quantization step with the float op run on the
 * dequantized inputs and quantized after (dequantize -> float op ->
 * quantize); shapes include odd sizes, groups, depthwise, stride and
 * padding.  Then the ops run through a plan. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "cpu/conv.h"
#include "cpu/quant.h"
#include "tap.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 32);
}

static float uniform(float lo, float hi)
{
	return lo + (hi - lo) * (float)(next() >> 8) / 16777216.0f;
}

static void fill_u8(uint8_t *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = (uint8_t)next();
}

static void fill_i8(int8_t *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = (int8_t)((int)(next() % 255) - 127);
}

/* Largest difference of two code arrays. */
static int max_code_diff(const uint8_t *a, const uint8_t *b, int64_t n)
{
	int m = 0;

	for (int64_t i = 0; i < n; i++) {
		int d = abs((int)a[i] - (int)b[i]);

		m = d > m ? d : m;
	}
	return m;
}

static void test_conversion(void)
{
	float x[1000], back[1000], s;
	uint8_t q[1000];
	int32_t z;
	double worst = 0;

	for (int i = 0; i < 1000; i++)
		x[i] = uniform(-3.0f, 5.0f);
	ds_qparams_choose(-3.0f, 5.0f, &s, &z);
	ok(fabsf(s - 8.0f / 255) < 1e-6f && z == 96, "scale and zero point cover [-3, 5]: %g %d", s, z);
	ds_quantize_f32(1000, x, s, z, q);
	{
		/* The vector loop against ds_q8, with the values it must not
		 * get wrong: halves, NaN, infinities, far out of range. */
		float sp[37] = { NAN, INFINITY, -INFINITY, 1e30f, -1e30f, -0.0f, 0.0f };
		uint8_t qs[37];
		int same = 1;

		for (int i = 0; i < 1000; i++)
			same &= q[i] == ds_q8(x[i], 1.0f / s, z);
		for (int i = 7; i < 37; i++)
			sp[i] = ((float)i - 7.0f) * 0.5f - 4.0f;   /* exact halves at scale 1 */
		ds_quantize_f32(37, sp, 1.0f, 3, qs);
		for (int i = 0; i < 37; i++)
			same &= qs[i] == ds_q8(sp[i], 1.0f, 3);
		ok(same, "quantize equals ds_q8 on every element");
	}
	ds_dequantize_u8(1000, q, s, z, back);
	for (int i = 0; i < 1000; i++)
		worst = fmax(worst, fabs(back[i] - x[i]));
	ok(worst <= s / 2 + 1e-6, "quantize then dequantize is within half a step (%g of %g)", worst, s);
	ds_qparams_choose(0.5f, 2.0f, &s, &z);
	ok(z == 0, "a positive range still holds 0 exactly");
	ds_qparams_choose(0.0f, 0.0f, &s, &z);
	ok(s == 1.0f && z == 0, "an empty range gets scale 1");
	x[0] = NAN;
	x[1] = 1e30f;
	x[2] = -1e30f;
	ds_quantize_f32(3, x, 0.1f, 10, q);
	ok(q[0] == 0 && q[1] == 255 && q[2] == 0, "NaN and huge values saturate");
}

struct qcase {
	int64_t n, c, h, w, o, k, stride, pad, groups;
	int act;       /* 0 none, 1 relu, 2 relu6 */
	int u8;
	int64_t dil;
	int pool;      /* a fused 2x2 max-pool */
};

/* The 2x2 max-pool of y (d's unpooled grid, codes or floats) into p. */
static void pool_grid(const ds_conv2d_dims *d, const void *y, int u8, void *p)
{
	int64_t ph = d->oh / 2, pw = d->ow / 2;

	for (int64_t i = 0; i < d->n * d->o; i++)
		for (int64_t py = 0; py < ph; py++)
			for (int64_t px = 0; px < pw; px++) {
				int64_t at = (i * d->oh + 2 * py) * d->ow + 2 * px, to = (i * ph + py) * pw + px;
				int64_t j[4] = { at, at + 1, at + d->ow, at + d->ow + 1 };

				if (u8) {
					uint8_t m = 0;

					for (int k = 0; k < 4; k++)
						m = ((const uint8_t *)y)[j[k]] > m ? ((const uint8_t *)y)[j[k]] : m;
					((uint8_t *)p)[to] = m;
				} else {
					float m = -INFINITY;

					for (int k = 0; k < 4; k++)
						m = fmaxf(m, ((const float *)y)[j[k]]);
					((float *)p)[to] = m;
				}
			}
}

/* The float path: dequantized x and w through the float kernel, bias,
 * activation. */
static void float_conv(const ds_conv2d_dims *d, const uint8_t *xq, const int8_t *wq, const ds_qout *e, float *y)
{
	int64_t nx = d->n * d->c * d->h * d->w, per = d->c / d->groups * d->kh * d->kw;
	float *x = malloc((size_t)nx * sizeof *x), *w = malloc((size_t)(d->o * per) * sizeof *w);

	ds_dequantize_u8(nx, xq, e->x_scale, e->x_zero_point, x);
	for (int64_t o = 0; o < d->o; o++)
		for (int64_t i = 0; i < per; i++)
			w[o * per + i] = e->w_scale[o] * wq[o * per + i];
	ds_conv2d_forward_ref(d, x, w, e->bias, y);
	for (int64_t i = 0; i < d->n * d->o * d->oh * d->ow; i++)
		y[i] = fminf(fmaxf(y[i], e->lo), e->hi);
	free(x);
	free(w);
}

static void test_conv(const struct qcase *q)
{
	ds_conv2d_dims d = { .n = q->n, .c = q->c, .h = q->h, .w = q->w, .o = q->o, .kh = q->k, .kw = q->k,
			     .sh = q->stride, .sw = q->stride, .ph = q->pad, .pw = q->pad, .dh = q->dil,
			     .dw = q->dil,
			     .groups = q->groups };
	int64_t per, nx, ny, nw;
	uint8_t *x;
	int8_t *w;
	float *ws_scale, *bias, *yf;
	void *ref, *fast, *ws;
	ds_qout e = { 0 };
	int levels = 1 + ds_qgemm_vnni() + ds_qgemm_amx();
	static const char *const level_name[] = { "portable", "vnni", "amx" };

	ds_conv2d_dims u;
	int64_t nfull;

	d.oh = (d.h + 2 * d.ph - d.dh * (d.kh - 1) - 1) / d.sh + 1;
	d.ow = (d.w + 2 * d.pw - d.dw * (d.kw - 1) - 1) / d.sw + 1;
	d.pool = q->pool;
	u = d;
	u.pool = 0;
	per = d.c / d.groups * d.kh * d.kw;
	nx = d.n * d.c * d.h * d.w;
	nfull = d.n * d.o * d.oh * d.ow;
	ny = q->pool ? d.n * d.o * (d.oh / 2) * (d.ow / 2) : nfull;
	nw = d.o * per;
	x = malloc((size_t)nx);
	w = malloc((size_t)nw);
	ws_scale = malloc((size_t)d.o * sizeof(float));
	bias = malloc((size_t)d.o * sizeof(float));
	yf = malloc((size_t)nfull * sizeof(float));
	ref = malloc((size_t)ny * sizeof(float));
	fast = malloc((size_t)ny * sizeof(float));
	ws = malloc(ds_qconv2d_workspace(&d) + 1);
	fill_u8(x, nx);
	fill_i8(w, nw);
	for (int64_t o = 0; o < d.o; o++) {
		ws_scale[o] = uniform(0.5f, 2.0f) / 127.0f / sqrtf((float)per);
		bias[o] = uniform(-0.5f, 0.5f);
		/* A negative scale turns the epilogue around: its windows
		 * pool their least sum. */
		if (q->pool && o % 3 == 1)
			ws_scale[o] = -ws_scale[o];
	}
	e.x_scale = 0.02f;
	e.x_zero_point = (int32_t)(next() % 256);
	e.w_scale = ws_scale;
	e.bias = bias;
	e.lo = q->act ? 0.0f : -INFINITY;
	e.hi = q->act == 2 ? 6.0f : INFINITY;
	e.u8 = q->u8;
	/* ReLU6 onto codes up to 150 for odd batches: a clamp short of 255,
	 * which the narrowing's saturation does not make. */
	e.y_scale = q->act == 2 && q->n % 2 ? 0.04f : q->act ? 0.01f : 0.02f;
	e.y_zero_point = q->act ? 0 : 128;
	ds_qconv2d_forward_ref(&d, x, w, &e, ref);
	float_conv(&u, x, w, &e, yf);
	if (q->pool) {
		void *full = malloc((size_t)nfull * sizeof(float)), *want = malloc((size_t)ny * sizeof(float));

		ds_qconv2d_forward_ref(&u, x, w, &e, full);
		pool_grid(&u, full, q->u8, want);
		ok(!memcmp(ref, want, (size_t)ny * (q->u8 ? 1 : sizeof(float))),
		   "pooled reference qconv2d equals the pooled unfused reference");
		pool_grid(&u, yf, 0, full);
		memcpy(yf, full, (size_t)ny * sizeof(float));
		free(full);
		free(want);
	}
	for (int pass = 0; pass < levels; pass++) {
		ds_qgemm_force(pass);
		memset(fast, 0xab, (size_t)ny * sizeof(float));
		ds_qconv2d_forward(&d, x, w, &e, fast, ws);
		ok(!memcmp(ref, fast, (size_t)ny * (q->u8 ? 1 : sizeof(float))),
		   "qconv2d %s n%lld c%lld %lldx%lld o%lld k%lld s%lld p%lld g%lld act%d %s%s equals the reference",
		   level_name[pass], (long long)d.n, (long long)d.c, (long long)d.h, (long long)d.w,
		   (long long)d.o, (long long)d.kh, (long long)d.sh, (long long)d.ph, (long long)d.groups, q->act,
		   q->u8 ? "u8" : "f32", q->pool ? " pooled" : "");
	}
	ds_qgemm_force(-1);
	{
		/* The packed filters kept in the workspace: a second call, filters
		 * changed in place, packed bytes written over (a workspace shared
		 * with other nodes) must all still give the reference. */
		size_t wsn = ds_qconv2d_workspace(&d), es = q->u8 ? 1 : sizeof(float);
		void *ref2 = malloc((size_t)ny * sizeof(float));
		int same = 1;

		ds_qconv2d_forward(&d, x, w, &e, fast, ws);
		same &= !memcmp(ref, fast, (size_t)ny * es);
		w[nw / 2] = (int8_t)(w[nw / 2] == 5 ? 6 : 5);
		ds_qconv2d_forward_ref(&d, x, w, &e, ref2);
		ds_qconv2d_forward(&d, x, w, &e, fast, ws);
		same &= !memcmp(ref2, fast, (size_t)ny * es);
		if (wsn > 96)
			memset((char *)ws + 80, 0x5a, 16);
		ds_qconv2d_forward(&d, x, w, &e, fast, ws);
		same &= !memcmp(ref2, fast, (size_t)ny * es);
		ok(same, "qconv2d with the filters kept from the last call equals the reference");
		free(ref2);
	}
	if (q->u8) {
		uint8_t *yq = malloc((size_t)ny);

		ds_quantize_f32(ny, yf, e.y_scale, e.y_zero_point, yq);
		ok(max_code_diff(yq, ref, ny) <= 1, "qconv2d within one step of dequantize -> conv2d -> quantize (%d)",
		   max_code_diff(yq, ref, ny));
		free(yq);
	} else {
		double worst = 0;

		for (int64_t i = 0; i < ny; i++)
			worst = fmax(worst, fabs(((float *)ref)[i] - yf[i]) / (1 + fabs(yf[i])));
		ok(worst < 1e-5, "qconv2d F32 output matches the float conv (%g)", worst);
	}
	free(x);
	free(w);
	free(ws_scale);
	free(bias);
	free(yf);
	free(ref);
	free(fast);
	free(ws);
}

static void test_linear(int64_t m, int64_t in, int64_t out, int act, int u8)
{
	uint8_t *x = malloc((size_t)(m * in));
	int8_t *w = malloc((size_t)(out * in));
	float *scale = malloc((size_t)out * sizeof(float)), *bias = malloc((size_t)out * sizeof(float));
	float *xf = malloc((size_t)(m * in) * sizeof(float)), *wf = malloc((size_t)(out * in) * sizeof(float));
	float *yf = malloc((size_t)(m * out) * sizeof(float));
	void *ref = malloc((size_t)(m * out) * sizeof(float)), *fast = malloc((size_t)(m * out) * sizeof(float));
	void *ws = malloc(ds_qlinear_workspace(m, in, out));
	ds_qout e = { .x_scale = 0.05f, .x_zero_point = 3, .w_scale = scale, .bias = bias, .lo = act ? 0 : -INFINITY,
		      .hi = act == 2 ? 6.0f : INFINITY, .u8 = u8, .y_scale = 0.03f, .y_zero_point = act ? 0 : 100 };
	int vnni = ds_qgemm_vnni();

	fill_u8(x, m * in);
	fill_i8(w, out * in);
	for (int64_t o = 0; o < out; o++) {
		scale[o] = uniform(0.5f, 2.0f) / 127.0f / sqrtf((float)in);
		bias[o] = uniform(-1, 1);
	}
	ds_qlinear_forward_ref(m, in, out, x, w, &e, ref);
	for (int pass = 0; pass < 1 + vnni; pass++) {
		ds_qgemm_force(pass);
		ds_qlinear_forward(m, in, out, x, w, &e, fast, ws);
		ok(!memcmp(ref, fast, (size_t)(m * out) * (u8 ? 1 : sizeof(float))),
		   "qlinear %s %lldx%lld -> %lld act%d %s equals the reference", pass ? "vnni" : "portable",
		   (long long)m, (long long)in, (long long)out, act, u8 ? "u8" : "f32");
	}
	ds_qgemm_force(-1);
	ds_dequantize_u8(m * in, x, e.x_scale, e.x_zero_point, xf);
	for (int64_t o = 0; o < out; o++)
		for (int64_t k = 0; k < in; k++)
			wf[o * in + k] = scale[o] * w[o * in + k];
	ds_linear_forward(m, in, out, xf, wf, bias, yf);
	for (int64_t i = 0; i < m * out; i++)
		yf[i] = fminf(fmaxf(yf[i], e.lo), e.hi);
	if (u8) {
		uint8_t *yq = malloc((size_t)(m * out));

		ds_quantize_f32(m * out, yf, e.y_scale, e.y_zero_point, yq);
		ok(max_code_diff(yq, ref, m * out) <= 1, "qlinear within one step of the float path (%d)",
		   max_code_diff(yq, ref, m * out));
		free(yq);
	} else {
		double worst = 0;

		for (int64_t i = 0; i < m * out; i++)
			worst = fmax(worst, fabs(((float *)ref)[i] - yf[i]) / (1 + fabs(yf[i])));
		ok(worst < 1e-4, "qlinear F32 output matches the float linear (%g)", worst);
	}
	free(x);
	free(w);
	free(scale);
	free(bias);
	free(xf);
	free(wf);
	free(yf);
	free(ref);
	free(fast);
	free(ws);
}

/* The 2x2 stride-2 fast path, widths across a 32-output block and odd
 * ones (a last column dropped), against the float max pool. */
static void test_pool_2x2(int64_t h, int64_t w)
{
	ds_pool_dims d = { .n = 2, .c = 3, .h = h, .w = w, .kh = 2, .kw = 2, .sh = 2, .sw = 2, .oh = h / 2, .ow = w / 2 };
	int64_t nx = 2 * 3 * h * w, ny = 2 * 3 * (h / 2) * (w / 2);
	uint8_t *x = malloc((size_t)nx), *y = malloc((size_t)ny), *want = malloc((size_t)ny);
	float *xf = malloc((size_t)nx * sizeof(float)), *yf = malloc((size_t)ny * sizeof(float));

	fill_u8(x, nx);
	ds_qmax_pool_forward(&d, x, y);
	ds_dequantize_u8(nx, x, 0.1f, 40, xf);
	ds_max_pool_forward(&d, xf, yf, NULL);
	ds_quantize_f32(ny, yf, 0.1f, 40, want);
	ok(max_code_diff(y, want, ny) == 0, "qmax_pool 2x2 %lldx%lld equals the float max_pool exactly", (long long)h,
	   (long long)w);
	free(x);
	free(y);
	free(want);
	free(xf);
	free(yf);
}

static void test_pool_add(void)
{
	ds_pool_dims d = { .n = 2, .c = 3, .h = 7, .w = 6, .kh = 3, .kw = 2, .sh = 2, .sw = 2, .ph = 1, .pw = 1 };
	int64_t nx = 2 * 3 * 7 * 6, ny;
	uint8_t x[252], b[252], y[252], want[252];
	float xf[252], bf[252], yf[252];
	float s = 0.1f;
	int32_t z = 40;

	d.oh = (7 + 2 - 3) / 2 + 1;
	d.ow = (6 + 2 - 2) / 2 + 1;
	ny = 2 * 3 * d.oh * d.ow;
	fill_u8(x, nx);
	fill_u8(b, nx);
	ds_qmax_pool_forward(&d, x, y);
	ds_dequantize_u8(nx, x, s, z, xf);
	ds_max_pool_forward(&d, xf, yf, NULL);
	ds_quantize_f32(ny, yf, s, z, want);
	ok(max_code_diff(y, want, ny) == 0, "qmax_pool equals the float max_pool exactly");

	ds_qglobal_avg_pool_forward(6, 42, x, y);
	ds_global_avg_pool_forward(6, 42, xf, yf);
	ds_quantize_f32(6, yf, s, z, want);
	ok(max_code_diff(y, want, 6) <= 1, "qglobal_avg_pool within one step");

	ds_dequantize_u8(nx, b, 0.05f, 128, bf);
	for (int64_t i = 0; i < nx; i++)
		yf[i] = fminf(fmaxf(xf[i] + bf[i], 0.0f), 6.0f);
	ds_quantize_f32(nx, yf, 6.0f / 255, 0, want);
	{
		ds_qsum sum = ds_qsum_of(s, z, 0.05f, 128, 0.0f, 6.0f, 6.0f / 255, 0);

		ds_qadd_forward(nx, x, b, &sum, y);
		ok(max_code_diff(y, want, nx) <= 1, "qadd with relu6 within one step");
	}
	/* The vector loop against the formula, element by element; the
	 * operands exchanged change no bit; in place. */
	for (int act = 0; act < 4; act++) {
		/* act 3: a sum's scale far below the operands' (large ka, kb,
		 * a small shift) and most codes clamped */
		float lo = act ? 0.0f : -INFINITY, hi = act == 2 ? 3.0f : INFINITY;
		float ys = act == 3 ? 0.0007f : act ? 0.04f : 0.07f;
		int32_t yz = act == 3 ? 200 : act ? 0 : 131;
		ds_qsum sum = ds_qsum_of(s, z, 0.05f, 128, lo, hi, ys, yz), swapped = ds_qsum_of(0.05f, 128, s, z, lo, hi, ys, yz);
		uint8_t *y2 = malloc((size_t)nx);
		int same = 1, sym = 1;

		ds_qadd_forward(nx, x, b, &sum, y);
		for (int64_t i = 0; i < nx; i++) {
			float v = s * (float)((int32_t)x[i] - z) + 0.05f * (float)((int32_t)b[i] - 128);
			uint8_t exact;

			v = fminf(fmaxf(v, lo), hi);
			exact = ds_q8(v, 1.0f / ys, yz);
			same &= y[i] == ds_qsum_at(&sum, x[i], b[i]) && abs((int)y[i] - (int)exact) <= 1;
		}
		ok(same, "qadd act%d equals ds_qsum_at and is within one step of the real sum", act);
		memcpy(y2, b, (size_t)nx);
		ds_qadd_forward(nx, y2, x, &swapped, y2);
		for (int64_t i = 0; i < nx; i++)
			sym &= y2[i] == y[i];
		ok(sym, "qadd act%d with its operands exchanged, in place, is the same to the bit", act);
		free(y2);
	}
}

/* ------------------------------------------------------------ the ops */

static ds_tensor *tensor(ds_container *c, const char *name, ds_dtype dt, int ndim, const int64_t *shape)
{
	ds_tensor *t = ds_tensor_new(dt, ndim, shape, DS_CPU, NULL);

	ds_container_add(c, name, t, NULL);
	ds_tensor_unref(t);
	return t;
}

/* x -> quantize -> qconv2d relu (U8) -> qmax_pool -> flatten -> qlinear
 * (F32 out) against the same through float ops on dequantized weights; and
 * a dynamic qlinear reading F32. */
static void test_plan(void)
{
	static const char *qgraph =
		"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 6, 6]}],"
		" \"nodes\": ["
		"  {\"op\": \"quantize\", \"name\": \"q\", \"inputs\": [\"x\"], \"outputs\": [\"xq\"],"
		"   \"attrs\": {\"scale\": 0.02, \"zero_point\": 128}},"
		"  {\"op\": \"qconv2d\", \"name\": \"conv\", \"inputs\": [\"xq\", \"cw\", \"cs\", \"cb\"], \"outputs\": [\"c\"],"
		"   \"attrs\": {\"padding\": 1, \"activation\": \"relu\", \"x_scale\": 0.02, \"x_zero_point\": 128,"
		"    \"y_scale\": 0.05, \"y_zero_point\": 0}},"
		"  {\"op\": \"qmax_pool\", \"name\": \"pool\", \"inputs\": [\"c\"], \"outputs\": [\"p\"], \"attrs\": {\"kernel\": 2}},"
		"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"p\"], \"outputs\": [\"f\"]},"
		"  {\"op\": \"qlinear\", \"name\": \"fc\", \"inputs\": [\"f\", \"fw\", \"fs\", \"fb\"], \"outputs\": [\"logits\"],"
		"   \"attrs\": {\"x_scale\": 0.05, \"x_zero_point\": 0}},"
		"  {\"op\": \"qlinear\", \"name\": \"dyn\", \"inputs\": [\"logits\", \"dw\", \"ds\"], \"outputs\": [\"d\"]}],"
		" \"outputs\": [\"logits\", \"d\"]}";
	static const char *fgraph =
		"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 6, 6]}],"
		" \"nodes\": ["
		"  {\"op\": \"conv2d\", \"name\": \"conv\", \"inputs\": [\"x\", \"cwf\", \"cb\"], \"outputs\": [\"c0\"],"
		"   \"attrs\": {\"padding\": 1}},"
		"  {\"op\": \"relu\", \"name\": \"r\", \"inputs\": [\"c0\"], \"outputs\": [\"c\"]},"
		"  {\"op\": \"max_pool\", \"name\": \"pool\", \"inputs\": [\"c\"], \"outputs\": [\"p\"], \"attrs\": {\"kernel\": 2}},"
		"  {\"op\": \"flatten\", \"name\": \"flat\", \"inputs\": [\"p\"], \"outputs\": [\"f\"]},"
		"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"f\", \"fwf\", \"fb\"], \"outputs\": [\"logits\"]},"
		"  {\"op\": \"linear\", \"name\": \"dyn\", \"inputs\": [\"logits\", \"dwf\"], \"outputs\": [\"d\"]}],"
		" \"outputs\": [\"logits\", \"d\"]}";
	int64_t cw[4] = { 4, 2, 3, 3 }, c4[1] = { 4 }, fw[2] = { 5, 36 }, f5[1] = { 5 }, dw[2] = { 3, 5 }, d3[1] = { 3 };
	ds_container *c = ds_container_new();
	ds_graph *qg = NULL, *fg = NULL;
	ds_plan *qp = NULL, *fp = NULL;
	ds_error err = { 0 };
	struct { const char *q, *s, *f; int64_t *shape, o, per; } w[3] = {
		{ "cw", "cs", "cwf", cw, 4, 18 }, { "fw", "fs", "fwf", fw, 5, 36 }, { "dw", "ds", "dwf", dw, 3, 5 }
	};
	int rc;

	for (int i = 0; i < 3; i++) {
		int nd = i ? 2 : 4;
		ds_tensor *q = tensor(c, w[i].q, DS_I8, nd, w[i].shape), *f = tensor(c, w[i].f, DS_F32, nd, w[i].shape);
		ds_tensor *s = tensor(c, w[i].s, DS_F32, 1, &w[i].o);

		fill_i8(q->data, w[i].o * w[i].per);
		for (int64_t o = 0; o < w[i].o; o++) {
			((float *)s->data)[o] = 0.3f / 127;
			for (int64_t k = 0; k < w[i].per; k++)
				((float *)f->data)[o * w[i].per + k] = ((float *)s->data)[o] * ((int8_t *)q->data)[o * w[i].per + k];
		}
	}
	{
		ds_tensor *b = tensor(c, "cb", DS_F32, 1, c4), *b2 = tensor(c, "fb", DS_F32, 1, f5);

		for (int i = 0; i < 4; i++)
			((float *)b->data)[i] = 0.1f * (float)i;
		for (int i = 0; i < 5; i++)
			((float *)b2->data)[i] = -0.2f * (float)i;
	}
	(void)d3;
	rc = ds_graph_parse(qgraph, c, &qg, &err);
	ok(!rc, "the quantized graph parses: %s", err.message);
	if (rc)
		goto out;
	is_int(ds_graph_shape(qg, "c")->dtype, DS_U8, "qconv2d with y_scale writes U8");
	is_int(ds_graph_shape(qg, "logits")->dtype, DS_F32, "qlinear without y_scale writes F32");
	ok(ds_graph_flops(qg) > 0, "FLOPs are counted");
	rc = ds_graph_parse(fgraph, c, &fg, &err) || ds_plan_new(qg, c, 8, NULL, DS_CPU, &qp, &err) ||
	     ds_plan_new(fg, c, 8, NULL, DS_CPU, &fp, &err);
	ok(!rc, "inference plans accept forward-only ops: %s", err.message);
	if (rc)
		goto out;
	{
		float *xq = ds_plan_tensor(qp, "x")->data, *xf = ds_plan_tensor(fp, "x")->data;
		const float *lq, *lf, *dq, *df;
		double worst = 0, worst_d = 0, range = 0;

		for (int i = 0; i < 8 * 72; i++)
			xq[i] = xf[i] = uniform(-2.0f, 2.0f);
		rc = ds_plan_forward(qp, 0, 0, &err) || ds_plan_forward(fp, 0, 0, &err);
		ok(!rc, "both run: %s", err.message);
		lq = ds_plan_tensor(qp, "logits")->data;
		lf = ds_plan_tensor(fp, "logits")->data;
		dq = ds_plan_tensor(qp, "d")->data;
		df = ds_plan_tensor(fp, "d")->data;
		for (int i = 0; i < 8 * 5; i++) {
			worst = fmax(worst, fabs(lq[i] - lf[i]));
			range = fmax(range, fabs(lf[i]));
		}
		for (int i = 0; i < 8 * 3; i++)
			worst_d = fmax(worst_d, fabs(dq[i] - df[i]));
		ok(worst < 0.05 * range + 0.05, "INT8 chain tracks the float chain (%g of %g)", worst, range);
		ok(worst_d < 0.05 * range + 0.05, "dynamic qlinear tracks the float linear (%g)", worst_d);
	}
	{
		static const char *bad =
			"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 36]}],"
			" \"nodes\": [{\"op\": \"qlinear\", \"name\": \"fc\", \"inputs\": [\"x\", \"fwf\", \"fs\"],"
			" \"outputs\": [\"y\"]}], \"outputs\": [\"y\"]}";
		ds_graph *g = NULL;
		ds_error e2 = { 0 };

		is_int(ds_graph_parse(bad, c, &g, &e2), DS_ERR_DATA, "F32 weights for qlinear are status 3");
		ok(strstr(e2.message, "expected I8") != NULL, "naming the dtype: %s", e2.message);
		ds_graph_free(g);
	}
out:
	ds_plan_free(qp);
	ds_plan_free(fp);
	ds_graph_free(qg);
	ds_graph_free(fg);
	ds_container_free(c);
}

int main(void)
{
	static const struct qcase cases[] = {
		{ 2, 3, 9, 7, 5, 3, 1, 1, 1, 1, 1, 1, 0 },
		{ 3, 8, 10, 10, 13, 3, 2, 1, 1, 0, 1, 1, 0 },
		{ 1, 16, 5, 5, 7, 1, 1, 0, 1, 2, 1, 1, 0 },
		{ 2, 6, 8, 9, 6, 3, 1, 1, 6, 2, 1, 1, 0 },    /* depthwise */
		{ 2, 8, 6, 6, 12, 3, 2, 1, 4, 1, 1, 1, 0 },   /* grouped */
		{ 1, 3, 11, 4, 33, 5, 1, 2, 1, 0, 0, 1, 0 },  /* F32 out */
		{ 4, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1, 1, 0 },
		/* one input channel, 3x3 (conv_dw3.c): a batch of 1 split by
		 * channels, F32 out, one pixel, a plane too big for the form */
		{ 1, 1, 28, 28, 16, 3, 1, 1, 1, 2, 1, 1, 0 },
		{ 3, 1, 9, 13, 10, 3, 1, 1, 1, 0, 0, 1, 0 },
		{ 2, 1, 1, 1, 5, 3, 1, 1, 1, 1, 1, 1, 0 },
		{ 1, 1, 70, 70, 3, 3, 1, 1, 1, 1, 1, 1, 0 },
		/* 1x1 at strides 2 and 3: gathered, then the stride-1 kernels */
		{ 2, 16, 28, 28, 32, 1, 2, 0, 1, 0, 1, 1, 0 },
		{ 1, 24, 13, 9, 40, 1, 3, 0, 1, 1, 1, 1, 0 },
		{ 2, 8, 7, 7, 12, 1, 2, 0, 2, 2, 0, 1, 0 },
		/* the direct form: stride 1, channels in words of 4 */
		{ 3, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 1, 0 },
		{ 2, 12, 9, 23, 13, 3, 1, 0, 1, 2, 1, 1, 0 },
		{ 2, 8, 11, 7, 7, 3, 1, 2, 1, 0, 0, 2, 0 },  /* dilated, F32 out */
		{ 2, 16, 6, 5, 20, 1, 1, 0, 1, 0, 1, 1, 0 },
		{ 1, 8, 40, 3, 6, 5, 1, 2, 2, 1, 1, 1, 0 },    /* grouped, 4 channels a group */
		/* depthwise: words of taps, strides 1 and 2 and beyond */
		{ 2, 5, 14, 37, 5, 3, 1, 1, 5, 2, 1, 1, 0 },
		{ 2, 4, 15, 70, 4, 3, 2, 1, 4, 1, 1, 1, 0 },
		{ 1, 3, 9, 9, 3, 4, 1, 2, 3, 0, 0, 1, 0 },
		{ 1, 3, 13, 11, 3, 3, 3, 1, 3, 1, 1, 2, 0 },
		{ 2, 2, 12, 12, 2, 5, 1, 2, 2, 1, 1, 1, 0 },
		/* 3x3 depthwise on floats (conv_dw3.c): flat planes, rows of
		 * sixteen past 4096 outputs, stride 2 a vector a row and more */
		{ 2, 7, 7, 7, 7, 3, 1, 1, 7, 2, 1, 1, 0 },
		{ 3, 6, 28, 28, 6, 3, 1, 1, 6, 2, 1, 1, 0 },
		{ 1, 3, 70, 70, 3, 3, 1, 1, 3, 1, 1, 1, 0 },
		{ 2, 4, 37, 71, 4, 3, 2, 1, 4, 1, 1, 1, 0 },
		{ 2, 5, 14, 14, 5, 3, 2, 1, 5, 0, 0, 1, 0 },
		{ 1, 3, 1, 1, 3, 3, 2, 1, 3, 1, 1, 1, 0 },
		/* the direct form on AMX tiles: words of channels a tile
		 * product (6, 12, 16 twice), filters past 32 and not in rows of
		 * 16, a batch of 1 split by filters, groups */
		{ 1, 24, 14, 14, 96, 1, 1, 0, 1, 2, 1, 1, 0 },
		{ 2, 16, 28, 28, 64, 1, 1, 0, 1, 2, 1, 1, 0 },  /* whole tiles of codes */
		{ 2, 16, 28, 28, 24, 1, 1, 0, 1, 0, 1, 1, 0 },
		{ 2, 96, 7, 7, 40, 1, 1, 0, 1, 0, 0, 1, 0 },
		{ 1, 128, 5, 6, 70, 3, 1, 1, 1, 1, 1, 1, 0 },
		{ 2, 64, 7, 7, 64, 3, 1, 1, 1, 1, 1, 1, 0 },
		{ 1, 16, 28, 28, 16, 3, 1, 1, 1, 1, 1, 1, 0 },
		{ 2, 24, 9, 9, 12, 3, 1, 1, 2, 1, 1, 1, 0 },
		/* 16 input channels on AMX, pixels as rows (conv_pxq.c):
		 * filters past 16 and not in blocks of 16, rows of 16 pixels
		 * and a tail, no padding, 2x2 filters; 1x1 and 4 rows of taps
		 * go the direct form */
		{ 2, 16, 28, 28, 16, 3, 1, 1, 1, 1, 1, 1, 0 },
		{ 3, 16, 14, 14, 20, 3, 1, 1, 1, 2, 1, 1, 0 },
		{ 2, 16, 7, 33, 16, 3, 1, 1, 1, 0, 1, 1, 0 },
		{ 2, 16, 9, 23, 13, 3, 1, 0, 1, 2, 1, 1, 0 },
		{ 2, 16, 5, 6, 40, 1, 1, 0, 1, 0, 1, 1, 0 },
		{ 2, 16, 9, 9, 16, 2, 1, 0, 1, 1, 1, 1, 0 },
		{ 2, 16, 8, 8, 16, 4, 1, 2, 1, 1, 1, 1, 0 },
		/* and at stride 2: even and odd rows apart */
		{ 2, 16, 28, 28, 32, 3, 2, 1, 1, 1, 1, 1, 0 },
		{ 3, 16, 13, 11, 20, 3, 2, 1, 1, 2, 1, 1, 0 },
		{ 2, 16, 9, 9, 16, 2, 2, 0, 1, 0, 1, 1, 0 },
		{ 2, 16, 10, 37, 16, 4, 2, 1, 1, 1, 1, 1, 0 },
		/* the kx form: stride 1, kw <= 4, channels not in words of 4 */
		{ 2, 3, 10, 9, 5, 4, 1, 1, 1, 0, 0, 1, 0 },
		{ 1, 2, 12, 12, 7, 3, 1, 2, 1, 1, 1, 2, 0 },   /* dilated */
		{ 2, 8, 6, 6, 12, 3, 1, 1, 4, 2, 1, 1, 0 },    /* grouped, 2 channels a group */
		{ 1, 5, 7, 33, 3, 2, 1, 0, 1, 1, 1, 1, 0 },
		/* depthwise by vectors of whole rows or sixteen columns
		 * (conv_dwq.c): mobilenet-s's 4x4, 7x7 at stride 2, 28x28 at
		 * stride 2 */
		{ 2, 20, 4, 4, 20, 3, 1, 1, 20, 2, 1, 1, 0 },
		{ 2, 24, 7, 7, 24, 3, 2, 1, 24, 2, 1, 1, 0 },
		{ 1, 16, 28, 28, 16, 3, 2, 1, 16, 1, 0, 1, 0 },
		{ 1, 2, 3, 9, 2, 1, 1, 2, 2, 0, 1, 1, 0 },   /* rows all in the padding */
		/* a fused 2x2 max-pool: one input channel (conv_dw3.c's padded
		 * planes; odd sides, rows past 32 pooled outputs, a batch of 1
		 * split by channels), and the others, pooled after the layer */
		{ 4, 1, 28, 28, 32, 3, 1, 1, 1, 1, 1, 1, 1 },
		{ 3, 1, 9, 13, 10, 3, 1, 1, 1, 2, 1, 1, 1 },
		{ 2, 1, 70, 67, 5, 3, 1, 1, 1, 0, 0, 1, 1 },
		{ 1, 1, 14, 14, 16, 3, 1, 1, 1, 1, 1, 1, 1 },
		{ 2, 1, 2, 3, 4, 3, 1, 1, 1, 0, 1, 1, 1 },
		{ 2, 32, 14, 14, 64, 3, 1, 1, 1, 1, 1, 1, 1 },
		{ 2, 3, 11, 10, 7, 3, 1, 1, 1, 2, 0, 1, 1 },
	};

	diag("micro-kernel: %s", ds_qgemm_amx() ? "AMX and AVX-512 VNNI" : ds_qgemm_vnni() ? "AVX-512 VNNI" : "portable");
	test_conversion();
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		test_conv(&cases[i]);
	test_linear(5, 37, 11, 1, 1);
	test_linear(70, 130, 64, 0, 1);
	test_linear(33, 3136, 128, 1, 1);
	test_linear(3, 9, 10, 0, 0);
	test_pool_2x2(28, 28);
	test_pool_2x2(14, 14);
	test_pool_2x2(8, 4);
	test_pool_2x2(6, 32);
	test_pool_2x2(10, 7);
	test_pool_2x2(9, 14);
	test_pool_2x2(2, 2);
	test_pool_2x2(7, 131);
	test_pool_2x2(4, 64);
	test_pool_add();
	test_plan();
	return done_testing();
}
