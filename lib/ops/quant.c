/* quant.c - INT8 inference ops (ds-formats.5, "Quantized ops"): quantize and
 * dequantize between F32 and U8 codes, convolution and dense layers on I8
 * weights, and the ops that keep a chain of activations in U8 (max pooling,
 * global average pooling, residual addition).  Forward only: these ops
 * appear in models made for inference by ds-quantize.  One float op lives
 * here too, fake_quant, for quantization-aware training (ds-train --qat): it
 * rounds values to the grid these ops compute on and passes gradients
 * straight through.
 *
 * An activation is U8 with a scale and zero point given as attributes of
 * the nodes that write and read it (x_scale, x_zero_point on the reader,
 * y_scale, y_zero_point on the writer), as ONNX's QLinear ops take them.
 * Shapes and FLOPs are those of the float ops, whose inference is reused. */
#include "config.h"
#include "ops.h"
#include "cpu/quant.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

static const char *const quantize_attrs[] = { "scale", "zero_point", NULL };
static const char *const qconv2d_attrs[] = {
	"stride", "padding", "dilation", "groups", "activation", "pool",
	"x_scale", "x_zero_point", "y_scale", "y_zero_point", NULL
};
/* "pool": a 2x2 max-pool fused after the epilogue (ds-optimize writes it);
 * conv2d's infer and flops read it too. */
static const char *const pool_kinds[] = { "none", "max_2x2", NULL };
static const char *const qlinear_attrs[] = {
	"activation", "x_scale", "x_zero_point", "y_scale", "y_zero_point", NULL
};
static const char *const qmax_pool_attrs[] = { "kernel", "stride", "padding", "ceil_mode", NULL };
static const char *const no_attrs[] = { NULL };
static const char *const qadd_attrs[] = {
	"activation", "a_scale", "a_zero_point", "b_scale", "b_zero_point", "y_scale", "y_zero_point", NULL
};
static const char *const activations[] = { "none", "relu", "relu6", NULL };
static const char *const fake_quant_attrs[] = { "momentum", NULL };

#define SCALE_MIN 1e-30
#define SCALE_MAX 1e30

/* A scale and zero point pair of attributes (prefix "x_", "y_", "" ...);
 * *present = 0 when the scale is absent and not required. */
static int qparams(const ds_node *node, const char *prefix, int required, float *scale, int32_t *zp, int *present,
		   ds_error *err)
{
	char sname[32], zname[32];
	const json_t *attrs = ds_node_attrs(node);
	double s;
	int64_t z;
	int rc;

	snprintf(sname, sizeof sname, "%sscale", prefix);
	snprintf(zname, sizeof zname, "%szero_point", prefix);
	*present = attrs && json_object_get(attrs, sname);
	if (!*present) {
		if (required)
			return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute '%s': required", sname);
		return 0;
	}
	if ((rc = ds_op_attr_float(node, sname, 1.0, SCALE_MIN, SCALE_MAX, &s, err)) ||
	    (rc = ds_op_attr_int(node, zname, 0, 0, 255, &z, err)))
		return rc;
	*scale = (float)s;
	*zp = (int32_t)z;
	return 0;
}

static int activation(const ds_node *node, float *lo, float *hi, ds_error *err)
{
	int act, rc;

	if ((rc = ds_op_attr_choice(node, "activation", activations, 0, &act, err)))
		return rc;
	*lo = act ? 0.0f : -INFINITY;
	*hi = act == 2 ? 6.0f : INFINITY;
	return 0;
}

static int check_dtype(const ds_node *node, const ds_shape *in, int i, ds_dtype want, ds_error *err)
{
	if (in[i].dtype == want)
		return 0;
	return ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "input '%s': expected %s, got %s",
			    ds_node_input(node, (size_t)i), ds_dtype_name(want), ds_dtype_name(in[i].dtype));
}

/* ------------------------------------------------- quantize, dequantize */

static int quantize_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	float s;
	int32_t z;
	int present, rc;

	(void)n_in;
	if ((rc = qparams(node, "", 1, &s, &z, &present, err)) || (rc = check_dtype(node, in, 0, DS_F32, err)))
		return rc;
	out[0] = in[0];
	out[0].dtype = DS_U8;
	return 0;
}

static int dequantize_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	float s;
	int32_t z;
	int present, rc;

	(void)n_in;
	if ((rc = qparams(node, "", 1, &s, &z, &present, err)) || (rc = check_dtype(node, in, 0, DS_U8, err)))
		return rc;
	out[0] = in[0];
	out[0].dtype = DS_F32;
	return 0;
}

static int64_t per_element_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)in;
	(void)n_in;
	return ds_op_numel(&out[0]);
}

static int quantize_forward_cpu(const ds_op_args *a, ds_error *err)
{
	float s;
	int32_t z;
	int present, rc;

	if ((rc = qparams(a->node, "", 1, &s, &z, &present, err)))
		return rc;
	ds_quantize_f32(ds_tensor_numel(a->in[0]), a->in[0]->data, s, z, a->out[0]->data);
	return 0;
}

static int dequantize_forward_cpu(const ds_op_args *a, ds_error *err)
{
	float s;
	int32_t z;
	int present, rc;

	if ((rc = qparams(a->node, "", 1, &s, &z, &present, err)))
		return rc;
	ds_dequantize_u8(ds_tensor_numel(a->in[0]), a->in[0]->data, s, z, a->out[0]->data);
	return 0;
}

/* ------------------------------------------------------ qconv2d, qlinear */

/* x (U8 with x_scale, or F32: quantized per call, the dynamic mode), weight
 * I8, weight_scale F32 [O], bias F32 [O]: the float op's shapes, with the
 * bias in the float op's third slot.  U8 out with y_scale, else F32. */
static int qproduct_infer(const char *float_op, const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			  ds_error *err)
{
	ds_shape f[3] = { in[0], in[1], n_in > 3 ? in[3] : in[0] };
	float s, lo, hi;
	int32_t z;
	int xq, yq, rc;

	if (in[0].dtype != DS_U8 && in[0].dtype != DS_F32)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "input '%s': expected U8 or F32, got %s",
				    ds_node_input(node, 0), ds_dtype_name(in[0].dtype));
	if ((rc = qparams(node, "x_", in[0].dtype == DS_U8, &s, &z, &xq, err)) ||
	    (rc = qparams(node, "y_", 0, &s, &z, &yq, err)) || (rc = activation(node, &lo, &hi, err)) ||
	    (rc = check_dtype(node, in, 1, DS_I8, err)) || (rc = check_dtype(node, in, 2, DS_F32, err)) ||
	    (n_in > 3 && (rc = check_dtype(node, in, 3, DS_F32, err))) ||
	    (rc = ds_op_check_ndim(node, in, 1, 2, 4, err)) ||
	    (rc = ds_op_check_vector(node, in, 2, in[1].dim[0], err)))
		return rc;
	if ((rc = ds_op_find(float_op)->infer(node, f, n_in > 3 ? 3 : 2, out, err)))
		return rc;
	out[0].dtype = yq ? DS_U8 : DS_F32;
	return 0;
}

static int qconv2d_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	return qproduct_infer("conv2d", node, in, n_in, out, err);
}

static int qlinear_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	return qproduct_infer("linear", node, in, n_in, out, err);
}

static int64_t qproduct_flops(const char *float_op, const ds_node *node, const ds_shape *in, int n_in,
			      const ds_shape *out)
{
	ds_shape f[3] = { in[0], in[1], n_in > 3 ? in[3] : in[0] };

	return ds_op_find(float_op)->flops(node, f, n_in > 3 ? 3 : 2, out);
}

static int64_t qconv2d_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	return qproduct_flops("conv2d", node, in, n_in, out);
}

static int64_t qlinear_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	return qproduct_flops("linear", node, in, n_in, out);
}

static int conv_dims(const ds_node *node, const int64_t *x, const int64_t *w, const int64_t *y, ds_conv2d_dims *d,
		     ds_error *err)
{
	int64_t stride[2], pad[2], dil[2], groups, oh = y[2], ow = y[3];
	int pool, rc;

	if ((rc = ds_op_attr_pair(node, "stride", 1, 1, stride, err)) ||
	    (rc = ds_op_attr_pair(node, "padding", 0, 0, pad, err)) ||
	    (rc = ds_op_attr_pair(node, "dilation", 1, 1, dil, err)) ||
	    (rc = ds_op_attr_int(node, "groups", 1, 1, DS_OP_ATTR_MAX, &groups, err)) ||
	    (rc = ds_op_attr_choice(node, "pool", pool_kinds, 0, &pool, err)))
		return rc;
	/* y is pooled: the kernel wants the convolution's own grid. */
	if (pool && ((rc = ds_op_window_out(node, "height", x[2], w[2], stride[0], pad[0], dil[0], 0, &oh, err)) ||
		     (rc = ds_op_window_out(node, "width", x[3], w[3], stride[1], pad[1], dil[1], 0, &ow, err))))
		return rc;
	*d = (ds_conv2d_dims){
		.n = x[0], .c = x[1], .h = x[2], .w = x[3],
		.o = w[0], .kh = w[2], .kw = w[3], .oh = oh, .ow = ow,
		.sh = stride[0], .sw = stride[1], .ph = pad[0], .pw = pad[1],
		.dh = dil[0], .dw = dil[1], .groups = groups, .pool = pool,
	};
	return 0;
}

/* Room for the codes of an F32 input (the dynamic mode) in front of the
 * kernel's own scratch. */
static size_t dynamic_bytes(const ds_shape *x)
{
	return x->dtype == DS_F32 ? ((size_t)ds_op_numel(x) + 63) / 64 * 64 : 0;
}

static size_t qconv2d_workspace(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	ds_conv2d_dims d;

	(void)n_in;
	if (conv_dims(node, in[0].dim, in[1].dim, out[0].dim, &d, NULL))
		return 0;
	return dynamic_bytes(&in[0]) + ds_qconv2d_workspace(&d);
}

static int64_t rows_of(int ndim, const int64_t *shape)
{
	int64_t m = 1;

	for (int i = 0; i < ndim - 1; i++)
		m *= shape[i];
	return m;
}

static size_t qlinear_workspace(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)n_in;
	(void)out;
	return dynamic_bytes(&in[0]) + ds_qlinear_workspace(rows_of(in[0].ndim, in[0].dim), in[1].dim[1], in[1].dim[0]);
}

/* The epilogue from the node and its tensors; an F32 input is quantized
 * into the front of the workspace over its own range, and *x points at the
 * codes, *ws past them. */
static int qout_of(const ds_op_args *a, ds_qout *e, const uint8_t **x, void **ws, ds_error *err)
{
	const ds_tensor *in = a->in[0];
	int present, rc;

	memset(e, 0, sizeof *e);
	if ((rc = qparams(a->node, "y_", 0, &e->y_scale, &e->y_zero_point, &e->u8, err)) ||
	    (rc = activation(a->node, &e->lo, &e->hi, err)))
		return rc;
	e->w_scale = a->in[2]->data;
	e->bias = a->n_in > 3 ? a->in[3]->data : NULL;
	*ws = a->workspace;
	if (in->dtype == DS_U8) {
		*x = in->data;
		return qparams(a->node, "x_", 1, &e->x_scale, &e->x_zero_point, &present, err);
	} else {
		int64_t n = ds_tensor_numel(in);
		float lo, hi;

		ds_minmax_f32(n, in->data, &lo, &hi);
		ds_qparams_choose(lo, hi, &e->x_scale, &e->x_zero_point);
		ds_quantize_f32(n, in->data, e->x_scale, e->x_zero_point, a->workspace);
		*x = a->workspace;
		*ws = (char *)a->workspace + ((size_t)n + 63) / 64 * 64;
	}
	return 0;
}

static int qconv2d_forward_cpu(const ds_op_args *a, ds_error *err)
{
	ds_conv2d_dims d;
	ds_qout e;
	const uint8_t *x;
	void *ws;
	int rc;

	if ((rc = conv_dims(a->node, a->in[0]->shape, a->in[1]->shape, a->out[0]->shape, &d, err)) ||
	    (rc = qout_of(a, &e, &x, &ws, err)))
		return rc;
	ds_qconv2d_forward(&d, x, a->in[1]->data, &e, a->out[0]->data, ws);
	return 0;
}

static int qlinear_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const ds_tensor *w = a->in[1];
	ds_qout e;
	const uint8_t *x;
	void *ws;
	int rc;

	if ((rc = qout_of(a, &e, &x, &ws, err)))
		return rc;
	ds_qlinear_forward(rows_of(a->in[0]->ndim, a->in[0]->shape), w->shape[1], w->shape[0], x, w->data, &e,
			   a->out[0]->data, ws);
	return 0;
}

/* -------------------------------------------------------- codes in, out */

static int qmax_pool_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	int rc = check_dtype(node, in, 0, DS_U8, err);

	return rc ? rc : ds_op_find("max_pool")->infer(node, in, n_in, out, err);
}

static int64_t qmax_pool_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	return ds_op_find("max_pool")->flops(node, in, n_in, out);
}

static int qmax_pool_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const int64_t *x = a->in[0]->shape, *y = a->out[0]->shape;
	int64_t kernel[2], stride[2], pad[2];
	ds_pool_dims d;
	int rc;

	if ((rc = ds_op_attr_pair(a->node, "kernel", -1, 1, kernel, err)) ||
	    (rc = ds_op_attr_pair(a->node, "stride", 0, 0, stride, err)) ||
	    (rc = ds_op_attr_pair(a->node, "padding", 0, 0, pad, err)))
		return rc;
	d = (ds_pool_dims){
		.n = x[0], .c = x[1], .h = x[2], .w = x[3], .oh = y[2], .ow = y[3],
		.kh = kernel[0], .kw = kernel[1],
		.sh = stride[0] ? stride[0] : kernel[0], .sw = stride[1] ? stride[1] : kernel[1],
		.ph = pad[0], .pw = pad[1],
	};
	ds_qmax_pool_forward(&d, a->in[0]->data, a->out[0]->data);
	return 0;
}

static int qglobal_avg_pool_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	int rc = check_dtype(node, in, 0, DS_U8, err);

	return rc ? rc : ds_op_find("global_avg_pool")->infer(node, in, n_in, out, err);
}

static int64_t qglobal_avg_pool_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	return ds_op_find("global_avg_pool")->flops(node, in, n_in, out);
}

static int qglobal_avg_pool_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const int64_t *x = a->in[0]->shape;

	(void)err;
	ds_qglobal_avg_pool_forward(x[0] * x[1], x[2] * x[3], a->in[0]->data, a->out[0]->data);
	return 0;
}

/* Both inputs U8 of one shape (residual branches agree exactly). */
static int qadd_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	char as[128], bs[128];
	float s, lo, hi;
	int32_t z;
	int present, rc;

	(void)n_in;
	if ((rc = check_dtype(node, in, 0, DS_U8, err)) || (rc = check_dtype(node, in, 1, DS_U8, err)) ||
	    (rc = qparams(node, "a_", 1, &s, &z, &present, err)) || (rc = qparams(node, "b_", 1, &s, &z, &present, err)) ||
	    (rc = qparams(node, "y_", 1, &s, &z, &present, err)) || (rc = activation(node, &lo, &hi, err)))
		return rc;
	if (in[0].ndim != in[1].ndim || memcmp(in[0].dim, in[1].dim, (size_t)in[0].ndim * sizeof in[0].dim[0]))
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "inputs '%s' %s and '%s' %s differ in shape",
				    ds_node_input(node, 0), ds_op_shape_text(&in[0], as, sizeof as),
				    ds_node_input(node, 1), ds_op_shape_text(&in[1], bs, sizeof bs));
	out[0] = in[0];
	return 0;
}

static int qadd_forward_cpu(const ds_op_args *a, ds_error *err)
{
	float as, bs, ys, lo, hi;
	int32_t az, bz, yz;
	ds_qsum sum;
	int present, rc;

	if ((rc = qparams(a->node, "a_", 1, &as, &az, &present, err)) ||
	    (rc = qparams(a->node, "b_", 1, &bs, &bz, &present, err)) ||
	    (rc = qparams(a->node, "y_", 1, &ys, &yz, &present, err)) || (rc = activation(a->node, &lo, &hi, err)))
		return rc;
	sum = ds_qsum_of(as, az, bs, bz, lo, hi, ys, yz);
	ds_qadd_forward(ds_tensor_numel(a->out[0]), a->in[0]->data, a->in[1]->data, &sum, a->out[0]->data);
	return 0;
}

/* ------------------------------------------------------------ fake_quant */

/* fake_quant x -> x rounded to an INT8 grid, in F32.  With one input, x is
 * a weight: I8 symmetric per output channel over [-127, 127], the scale
 * amax / 127 of each row along axis 0, as ds-quantize makes it.  With two,
 * x is an activation: U8 over range (F32 [2]: lo, hi), the scale and zero
 * point from ds_qparams_choose as calibration gives them.  The range is
 * state, like batch norm's running statistics: in training it follows the
 * batch's min/max by an exponential moving average ("momentum"; the first
 * batch sets it while it is [0, 0]), and at inference it is read only.
 * Backward is the straight-through estimator: the gradient passes where x
 * rounds inside the grid, and is zero where it clips. */

#define FQ_CHUNK 4096

static int fake_quant_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	double m;
	int rc;

	if ((rc = check_dtype(node, in, 0, DS_F32, err)) ||
	    (rc = ds_op_attr_float(node, "momentum", 0.01, 0.0, 1.0, &m, err)))
		return rc;
	if (n_in > 1 && ((rc = check_dtype(node, in, 1, DS_F32, err)) || (rc = ds_op_check_vector(node, in, 1, 2, err))))
		return rc;
	if (n_in == 1 && (rc = ds_op_check_ndim(node, in, 0, 1, 8, err)))
		return rc;
	out[0] = in[0];
	return 0;
}

static int64_t fake_quant_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)in;
	(void)n_in;
	return ds_op_sat_mul(4, ds_op_numel(&out[0]));
}

/* The activation grid of the range as it stands, updated first from x when
 * training. */
static void fake_quant_grid(const ds_op_args *a, int update, float *scale, int32_t *zp)
{
	float *r = a->in[1]->data;

	if (update) {
		float m = (float)ds_node_attr_float(a->node, "momentum", 0.01), lo, hi;

		ds_minmax_f32(ds_tensor_numel(a->in[0]), a->in[0]->data, &lo, &hi);
		if (r[0] == 0.0f && r[1] == 0.0f) {
			r[0] = lo;
			r[1] = hi;
		} else {
			r[0] += m * (lo - r[0]);
			r[1] += m * (hi - r[1]);
		}
	}
	ds_qparams_choose(r[0], r[1], scale, zp);
}

static int fake_quant_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const float *x = a->in[0]->data;
	float *y = a->out[0]->data;
	int64_t n = ds_tensor_numel(a->in[0]);

	(void)err;
	if (a->n_in == 1) {
		int64_t outc = a->in[0]->shape[0], per = outc ? n / outc : 0;

		for (int64_t o = 0; o < outc; o++) {
			const float *src = x + o * per;
			float amax = 0, s;

			for (int64_t k = 0; k < per; k++)
				amax = fmaxf(amax, fabsf(src[k]));
			s = amax > 0 ? amax / 127.0f : 1.0f;
			for (int64_t k = 0; k < per; k++) {
				long v = lrintf(src[k] / s);

				y[o * per + k] = (float)(v < -127 ? -127 : v > 127 ? 127 : v) * s;
			}
		}
	} else {
		uint8_t codes[FQ_CHUNK];
		float s;
		int32_t zp;

		fake_quant_grid(a, a->training, &s, &zp);
		/* Through the kernels INT8 inference runs, so that the grid and
		 * the rounding are theirs exactly. */
		for (int64_t i = 0; i < n; i += FQ_CHUNK) {
			int64_t len = n - i < FQ_CHUNK ? n - i : FQ_CHUNK;

			ds_quantize_f32(len, x + i, s, zp, codes);
			ds_dequantize_u8(len, codes, s, zp, y + i);
		}
	}
	return 0;
}

static int fake_quant_backward_cpu(const ds_op_args *a, ds_error *err)
{
	const float *x = a->in[0]->data, *g = a->grad_out[0]->data;
	float *gx = a->grad_in[0] ? a->grad_in[0]->data : NULL;
	int64_t n = ds_tensor_numel(a->in[0]);

	(void)err;
	if (!gx)
		return 0;
	if (a->n_in == 1) {
		/* Symmetric per channel over the row's own maximum: nothing clips. */
		for (int64_t i = 0; i < n; i++)
			gx[i] += g[i];
	} else {
		float s, inv;
		int32_t zp;

		fake_quant_grid(a, 0, &s, &zp);
		inv = 1.0f / s;
		for (int64_t i = 0; i < n; i++) {
			float q = x[i] * inv + (float)zp;

			if (q >= -0.5f && q <= 255.5f)
				gx[i] += g[i];
		}
	}
	return 0;
}

#define CPU_FORWARD(fwd) .forward = { [DS_BACKEND_CPU] = fwd }

const ds_op ds_ops_quant[] = {
	{ .name = "quantize", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = quantize_attrs,
	  .infer = quantize_infer, .flops = per_element_flops, CPU_FORWARD(quantize_forward_cpu) },
	{ .name = "dequantize", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = quantize_attrs,
	  .infer = dequantize_infer, .flops = per_element_flops, CPU_FORWARD(dequantize_forward_cpu) },
	{ .name = "qconv2d", .min_inputs = 3, .max_inputs = 4, .num_outputs = 1, .attrs = qconv2d_attrs,
	  .infer = qconv2d_infer, .flops = qconv2d_flops, CPU_FORWARD(qconv2d_forward_cpu),
	  .workspace = qconv2d_workspace, .keeps_workspace = 1 },
	{ .name = "qlinear", .min_inputs = 3, .max_inputs = 4, .num_outputs = 1, .attrs = qlinear_attrs,
	  .infer = qlinear_infer, .flops = qlinear_flops, CPU_FORWARD(qlinear_forward_cpu),
	  .workspace = qlinear_workspace },
	{ .name = "qmax_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = qmax_pool_attrs,
	  .infer = qmax_pool_infer, .flops = qmax_pool_flops, CPU_FORWARD(qmax_pool_forward_cpu) },
	{ .name = "qglobal_avg_pool", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = no_attrs,
	  .infer = qglobal_avg_pool_infer, .flops = qglobal_avg_pool_flops, CPU_FORWARD(qglobal_avg_pool_forward_cpu) },
	{ .name = "qadd", .min_inputs = 2, .max_inputs = 2, .num_outputs = 1, .attrs = qadd_attrs,
	  .infer = qadd_infer, .flops = per_element_flops, CPU_FORWARD(qadd_forward_cpu) },
	{ .name = "fake_quant", .min_inputs = 1, .max_inputs = 2, .num_outputs = 1, .attrs = fake_quant_attrs,
	  .infer = fake_quant_infer, .flops = fake_quant_flops,
	  .forward = { [DS_BACKEND_CPU] = fake_quant_forward_cpu },
	  .backward = { [DS_BACKEND_CPU] = fake_quant_backward_cpu },
	  .backward_needs = DS_NEEDS_IN(0) | DS_NEEDS_IN(1), .no_grad = 1u << 1 },
	{ .name = NULL },
};
