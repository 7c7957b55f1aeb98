/* quant.h - CPU kernels for INT8 inference.
 *
 * Activations are U8 with a scale and a zero point per tensor (real =
 * scale * (q - zero_point)); weights are I8, symmetric, with one F32 scale
 * per output channel.  Products accumulate exactly in int32; the epilogue
 * turns an accumulator into the output (F32, or U8 requantized to the
 * output's scale and zero point) with the bias and a clamp for a fused ReLU
 * or ReLU6.  Every product kernel has a plain reference (the loops, for
 * tests) and a packed form with two micro-kernels: AVX-512 VNNI
 * (vpdpbusd, u8 x s8 -> s32) where the CPU has it, portable C elsewhere.
 * No kernel allocates; scratch comes from the caller, sized by the
 * _workspace functions.
 */
#ifndef DS_KERNELS_CPU_QUANT_H
#define DS_KERNELS_CPU_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/conv.h"

/* How an accumulator of output channel o becomes an output value. */
/* See ds_qcode_of. */
typedef struct ds_qcode {
	float m, b, lo, hi;
} ds_qcode;

/* qadd's arithmetic, in fixed point: codes a and b become clamp((ka a +
 * kb b + c) >> shift, lo, hi), with ka = round(a_scale / y_scale *
 * 2^shift), kb likewise, c = round((y_zero_point - (a_scale a_zero_point +
 * b_scale b_zero_point) / y_scale) * 2^shift) + 2^(shift - 1) (the shift
 * rounds half up), the largest shift up to 24 that keeps ka and kb below
 * 2^15 and c below 2^28, and [lo, hi] the activation's range as codes,
 * rounded, within [0, 255].  Integers: exchanging a and b changes no bit,
 * and 16-bit pairs multiply-add in one instruction (as floats it took
 * twice the operations, and qadd was a tenth of resnet-s INT8). */
typedef struct ds_qsum {
	int32_t ka, kb, c, shift, lo, hi;
} ds_qsum;

ds_qsum ds_qsum_of(float a_scale, int32_t a_zp, float b_scale, int32_t b_zp, float lo, float hi, float y_scale,
		   int32_t y_zp);

static inline uint8_t ds_qsum_at(const ds_qsum *s, uint8_t a, uint8_t b)
{
	/* A floor shift of a negative sum, written so: >> of a negative
	 * value is the implementation's choice. */
	int32_t v = s->ka * a + s->kb * b + s->c;
	int32_t q = v >= 0 ? v >> s->shift : -((-v + (1 << s->shift) - 1) >> s->shift);

	q = q > s->lo ? q : s->lo;
	q = q < s->hi ? q : s->hi;
	return (uint8_t)q;
}

typedef struct ds_qout {
	float x_scale;               /* the input's quantization */
	int32_t x_zero_point;
	const float *w_scale;        /* [o] */
	const float *bias;           /* [o], F32, or NULL */
	float lo, hi;                /* clamp of the real value: -inf/inf, or 0/inf (relu), 0/6 (relu6) */
	int u8;                      /* 1: U8 output with y_scale and y_zero_point; 0: F32 */
	float y_scale;
	int32_t y_zero_point;
	const ds_qcode *code;        /* U8: ds_qcode_of each output channel; NULL: the
				      * forward functions make it in their workspace */
	int saturate;                /* with code: every channel's clamp is no more than
				      * the narrowing's saturation (see with_codes) */
} ds_qout;

/* U8 from a real value: round half to even, saturate to [0, 255]; NaN is
 * the zero point's floor (0).  inv_scale is 1 / scale. */
static inline uint8_t ds_q8(float v, float inv_scale, int32_t zero_point)
{
	float q = v * inv_scale + (float)zero_point;

	/* Comparisons rather than fmaxf (a libm call without -ffast-math);
	 * NaN fails both and lands on 0.  Adding and taking away 1.5 * 2^23
	 * rounds half to even, as lrintf and vcvtps2dq do. */
	q = q > 0.0f ? q : 0.0f;
	q = q < 255.0f ? q : 255.0f;
	q = (q + 12582912.0f) - 12582912.0f;
	return (uint8_t)q;
}

/* The U8 epilogue of output channel o: the code of an exact sum s of
 * (x - x_zero_point) w is s m + b (m = x_scale w_scale / y_scale, b =
 * bias / y_scale + y_zero_point), clamped to [lo, hi] (the activation's
 * clamp as codes, within [0, 255]) and rounded half to even.  One
 * multiply, add and clamp a lane: clamping the real value and then the
 * code took two, and was a third of a 1x1 layer's time. */
static inline ds_qcode ds_qcode_of(const ds_qout *e, int64_t o)
{
	const float inv = 1.0f / e->y_scale, zp = (float)e->y_zero_point;
	const float lo = e->lo * inv + zp, hi = e->hi * inv + zp;
	ds_qcode c;

	c.m = e->x_scale * e->w_scale[o] * inv;
	c.b = (e->bias ? e->bias[o] : 0.0f) * inv + zp;
	c.lo = lo > 0.0f ? lo : 0.0f;
	c.hi = hi < 255.0f ? hi : 255.0f;
	return c;
}

static inline uint8_t ds_qcode_at(const ds_qcode *c, int32_t s)
{
	float q = (float)s * c->m + c->b;

	q = q > c->lo ? q : c->lo;
	q = q < c->hi ? q : c->hi;
	q = (q + 12582912.0f) - 12582912.0f;
	return (uint8_t)q;
}

/* What the kernels apply to the sum of output channel o, for either
 * output, as a ds_qcode: for codes e->code[o]; for floats x_scale
 * w_scale, the bias and the activation's clamp.  A macro: the kernels'
 * vector functions do not inline a function of other options. */
#define DS_QOUT_AFFINE(e, o)                                                                                         \
	((e)->u8 ? (e)->code[o]                                                                                    \
		 : (ds_qcode){ (e)->x_scale * (e)->w_scale[o], (e)->bias ? (e)->bias[o] : 0.0f, (e)->lo, (e)->hi })

/* The real value of output channel o from acc = sum (x - x_zp) * w: the
 * F32 output. */
static inline float ds_qout_real(const ds_qout *e, int64_t o, int32_t acc)
{
	float v = (float)acc * (e->x_scale * e->w_scale[o]) + (e->bias ? e->bias[o] : 0.0f);

	v = v > e->lo ? v : e->lo;
	return v < e->hi ? v : e->hi;
}

/* Scale and zero point that map [lo, hi] (widened to hold 0, so that
 * zero padding is exact) onto 0..255. */
void ds_qparams_choose(float lo, float hi, float *scale, int32_t *zero_point);
void ds_quantize_f32(int64_t n, const float *x, float scale, int32_t zero_point, uint8_t *y);
void ds_dequantize_u8(int64_t n, const uint8_t *x, float scale, int32_t zero_point, float *y);
/* Smallest and largest finite value (0, 0 when there is none). */
void ds_minmax_f32(int64_t n, const float *x, float *lo, float *hi);

/* The micro-kernels the packed kernels use: ds_qgemm_vnni is 1 for VNNI,
 * ds_qgemm_amx 1 when stride-1 convolutions run on AMX tiles (AMX-INT8,
 * with the kernel's leave to use it).  ds_qgemm_force picks a level for
 * tests and timing: 0 portable, 1 VNNI without AMX, 2 AMX where the CPU
 * has it, -1 back to the CPU's best; a level the CPU lacks is ignored. */
int ds_qgemm_vnni(void);
int ds_qgemm_amx(void);
void ds_qgemm_force(int level);

/* conv2d over NCHW U8 input, I8 filters [o, c/groups, kh, kw] (d->relu is
 * ignored: e clamps); y is U8 or F32 NCHW as e says, 2x2 max-pooled when
 * d->pool (d->oh, d->ow are then the unpooled grid).  The workspace also
 * keeps the packed filters for the next call with the same workspace; they
 * are checked against fingerprints of the filters and of the packed bytes
 * before reuse, so the workspace may be shared or written over between
 * calls. */
size_t ds_qconv2d_workspace(const ds_conv2d_dims *d);
void ds_qconv2d_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e,
			void *y, void *ws);
void ds_qconv2d_forward_ref(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e,
			    void *y);

/* The 3x3 depthwise layers of ds_conv2d_dw3_fits on codes (conv_dw3.c);
 * the results are ds_qconv2d_forward's.  AVX-512 BW only. */
int ds_qconv2d_dw3_fits(const ds_conv2d_dims *d);
size_t ds_qconv2d_dw3_workspace(const ds_conv2d_dims *d);
void ds_qconv2d_dw3_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e,
			    void *y, void *ws);

/* A 64-bit fingerprint of n bytes: what a kernel keeps in its workspace
 * for the next call is checked against one. */
uint64_t ds_qfingerprint(const void *p, size_t n);

/* Depthwise layers of kw <= 4 whose vectors of outputs read within 127
 * bytes of a plane (conv_dwq.c, on VNNI and VBMI); the results are
 * ds_qconv2d_forward's. */
int ds_qconv2d_dwq_fits(const ds_conv2d_dims *d);
size_t ds_qconv2d_dwq_workspace(const ds_conv2d_dims *d);
void ds_qconv2d_dwq_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e,
			    void *y, void *ws);

/* Layers of 16 input channels, stride 1 or 2, filters up to 3x4 and at
 * least 2 wide, U8 out, on AMX with pixels as the rows of the products
 * (conv_pxq.c); the results are ds_qconv2d_forward's. */
int ds_qconv2d_pxq_fits(const ds_conv2d_dims *d);
size_t ds_qconv2d_pxq_workspace(const ds_conv2d_dims *d);
void ds_qconv2d_pxq_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e,
			    void *y, void *ws);

/* A layer of one input channel, 3x3 filters, stride 1, padding 1 (a first
 * layer) on conv_dw3.c's flat planes; the results are
 * ds_qconv2d_forward's.  AVX-512 BW only. */
int ds_qconv2d_one3_fits(const ds_conv2d_dims *d);
size_t ds_qconv2d_one3_workspace(const ds_conv2d_dims *d);
void ds_qconv2d_one3_forward(const ds_conv2d_dims *d, const uint8_t *x, const int8_t *w, const ds_qout *e,
			     void *y, void *ws);

/* y[m, out] = x[m, in] w[out, in]^T, through e. */
size_t ds_qlinear_workspace(int64_t m, int64_t in, int64_t out);
void ds_qlinear_forward(int64_t m, int64_t in, int64_t out, const uint8_t *x, const int8_t *w, const ds_qout *e,
			void *y, void *ws);
void ds_qlinear_forward_ref(int64_t m, int64_t in, int64_t out, const uint8_t *x, const int8_t *w,
			    const ds_qout *e, void *y);

/* Max pooling keeps the scale: the maximum of the codes is the code of the
 * maximum.  Padding never wins. */
void ds_qmax_pool_forward(const ds_pool_dims *d, const uint8_t *x, uint8_t *y);
/* planes = n * c of size elements each; the mean code, rounded half up. */
void ds_qglobal_avg_pool_forward(int64_t planes, int64_t size, const uint8_t *x, uint8_t *y);
/* y = ds_qsum_at(s, a, b) elementwise; y may be a or b. */
void ds_qadd_forward(int64_t n, const uint8_t *a, const uint8_t *b, const ds_qsum *s, uint8_t *y);

#endif
