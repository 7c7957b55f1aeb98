/* layout.c - ops on the blocked layout NCHW16c (kernels/cpu/conv_blocked.c),
 * which ds-optimize's layout pass writes for the CPU: a blocked tensor is
 * [N, ceil(C / 16), H, W, 16], the channels past C zero.
 *
 * conv2d_nchw16c is conv2d with one group whose output is blocked (with
 * conv2d's "pool": "max_2x2", the 2x2 max-pool after the ReLU, as
 * ds-optimize fuses it); its input is blocked or plain NCHW, its filters packed
 * [ceil(O / 16), ceil(C / 16), KH, KW, 16, 16] and its bias [ceil(O / 16) *
 * 16], both zero past O and C; "in_channels" and "out_channels" say what C
 * and O are.  reorder turns a tensor from one layout to the other ("to":
 * "nchw16c" or "nchw", with "channels" for the plain tensor's C), and
 * global_avg_pool_nchw16c is global_avg_pool reading a blocked tensor (the
 * same sums in the same order) into [N, C, 1, 1].  All are inference
 * forms, CPU only: training through them is refused.
 */
#include "config.h"
#include "ops.h"
#include "cpu/conv.h"
#include "cpu/elementwise.h"

#include <inttypes.h>
#include <string.h>

#define BLK 16

static const char *const conv_attrs[] = { "stride", "padding", "dilation", "activation", "pool", "in_channels",
					  "out_channels", NULL };
static const char *const pool_kinds[] = { "none", "max_2x2", NULL };
static const char *const reorder_attrs[] = { "to", "channels", NULL };
static const char *const bgap_attrs[] = { "channels", NULL };
static const char *const layouts[] = { "nchw", "nchw16c", NULL };

static int64_t blocks_of(int64_t c)
{
	return (c + BLK - 1) / BLK;
}

struct bconv {
	int64_t stride[2], pad[2], dil[2], c, o;
	int act, pool;
};

static int bconv_params(const ds_node *node, struct bconv *p, ds_error *err)
{
	int rc;

	if ((rc = ds_op_attr_pair(node, "stride", 1, 1, p->stride, err)) ||
	    (rc = ds_op_attr_pair(node, "padding", 0, 0, p->pad, err)) ||
	    (rc = ds_op_attr_pair(node, "dilation", 1, 1, p->dil, err)) ||
	    (rc = ds_op_epilogue(node, &p->act, err)) ||
	    (rc = ds_op_attr_choice(node, "pool", pool_kinds, 0, &p->pool, err)) ||
	    (rc = ds_op_attr_int(node, "in_channels", -1, 1, DS_OP_ATTR_MAX, &p->c, err)) ||
	    (rc = ds_op_attr_int(node, "out_channels", -1, 1, DS_OP_ATTR_MAX, &p->o, err)))
		return rc;
	if (p->c < 1 || p->o < 1)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attributes 'in_channels' and 'out_channels' are required");
	/* The kernel pools after ReLU or ReLU6; others would come after. */
	if (p->pool && p->act && p->act != 1 + DS_CPU_RELU && p->act != 1 + DS_CPU_RELU6)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute 'pool': takes no activation but relu or relu6");
	return 0;
}

/* x [N, C, H, W] or [N, CB, H, W, 16], w [OB, CB, KH, KW, 16, 16], bias
 * [OB * 16], residual like the output -> [N, OB, OH, OW, 16]. */
static int bconv_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	const ds_shape *x = &in[0], *w = &in[1];
	struct bconv p;
	char xs[128], ws[128];
	int64_t oh, ow, cb;
	int rc;

	if ((rc = bconv_params(node, &p, err)) || (rc = ds_op_check_ndim(node, in, 0, 4, 5, err)) ||
	    (rc = ds_op_check_ndim(node, in, 1, 6, 6, err)))
		return rc;
	ds_op_shape_text(x, xs, sizeof xs);
	ds_op_shape_text(w, ws, sizeof ws);
	cb = blocks_of(p.c);
	if (x->dtype != DS_F32 || w->dtype != DS_F32 ||
	    (x->ndim == 4 ? x->dim[1] != p.c : x->dim[1] != cb || x->dim[4] != BLK))
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "input '%s' %s is not F32 with %" PRId64 " channels, plain or in blocks of 16",
				    ds_node_input(node, 0), xs, p.c);
	if (w->dim[0] != blocks_of(p.o) || w->dim[1] != cb || w->dim[4] != BLK || w->dim[5] != BLK)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "weight '%s' %s is not packed [%" PRId64 ", %" PRId64 ", KH, KW, 16, 16]",
				    ds_node_input(node, 1), ws, blocks_of(p.o), cb);
	if (n_in > 2 && (rc = ds_op_check_vector(node, in, 2, blocks_of(p.o) * BLK, err)))
		return rc;
	if ((rc = ds_op_window_out(node, "height", x->dim[2], w->dim[2], p.stride[0], p.pad[0], p.dil[0], 0, &oh,
				   err)) ||
	    (rc = ds_op_window_out(node, "width", x->dim[3], w->dim[3], p.stride[1], p.pad[1], p.dil[1], 0, &ow,
				   err)))
		return rc;
	if (p.pool) {
		if (n_in > 3)
			return ds_error_set(err, DS_ERR_DATA, "bad_attr",
					    "attribute 'pool': a convolution with a residual input takes no pool");
		if (oh < 2 || ow < 2)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "attribute 'pool': output %" PRId64 "x%" PRId64 " is smaller than the 2x2 window",
					    oh, ow);
		oh /= 2;
		ow /= 2;
	}
	out[0] = (ds_shape){ .dtype = DS_F32, .ndim = 5, .dim = { x->dim[0], blocks_of(p.o), oh, ow, BLK } };
	if (n_in > 3 && (in[3].ndim != 5 || memcmp(in[3].dim, out[0].dim, sizeof out[0].dim[0] * 5) ||
			 in[3].dtype != DS_F32)) {
		char os[128], rs[128];

		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "residual '%s' %s is not shaped like the output %s", ds_node_input(node, 3),
				    ds_op_shape_text(&in[3], rs, sizeof rs), ds_op_shape_text(&out[0], os, sizeof os));
	}
	return 0;
}

/* The kernel's view: the convolution's own grid (the window over x,
 * which shape inference has checked), pooled after when p->pool. */
static void bconv_dims(const ds_node *node, const struct bconv *p, const int64_t *x, const int64_t *w,
		       ds_conv2d_dims *d)
{
	int64_t oh = 0, ow = 0;

	ds_op_window_out(node, "height", x[2], w[2], p->stride[0], p->pad[0], p->dil[0], 0, &oh, NULL);
	ds_op_window_out(node, "width", x[3], w[3], p->stride[1], p->pad[1], p->dil[1], 0, &ow, NULL);
	*d = (ds_conv2d_dims){
		.n = x[0], .c = p->c, .h = x[2], .w = x[3], .o = p->o, .kh = w[2], .kw = w[3], .oh = oh, .ow = ow,
		.sh = p->stride[0], .sw = p->stride[1], .ph = p->pad[0], .pw = p->pad[1], .pool = p->pool,
		.dh = p->dil[0], .dw = p->dil[1], .groups = 1,
		.relu = p->act == 1 + DS_CPU_RELU || p->act == 1 + DS_CPU_RELU6,
		.cap = p->act == 1 + DS_CPU_RELU6 ? 6.0f : 0.0f,
	};
}

/* As conv2d counts them, on the true channels. */
static int64_t bconv_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	struct bconv p;
	ds_conv2d_dims d;
	int64_t outs, pooled = 0, f;

	if (bconv_params(node, &p, NULL))
		return 0;
	bconv_dims(node, &p, in[0].dim, in[1].dim, &d);
	outs = ds_op_sat_mul(ds_op_sat_mul(d.n, d.o), ds_op_sat_mul(d.oh, d.ow));
	if (p.pool)
		pooled = ds_op_sat_mul(ds_op_sat_mul(ds_op_sat_mul(d.n, d.o), ds_op_sat_mul(out[0].dim[2], out[0].dim[3])), 4);
	f = ds_op_sat_add(ds_op_sat_mul(ds_op_sat_mul(outs, ds_op_sat_mul(p.c, ds_op_sat_mul(d.kh, d.kw))), 2), pooled);
	if (n_in > 3)
		f = ds_op_sat_add(f, outs);
	return n_in > 2 ? ds_op_sat_add(f, outs) : f;
}

static int bconv_forward_cpu(const ds_op_args *a, ds_error *err)
{
	struct bconv p;
	ds_conv2d_dims d;
	int rc;

	if ((rc = bconv_params(a->node, &p, err)))
		return rc;
	bconv_dims(a->node, &p, a->in[0]->shape, a->in[1]->shape, &d);
	ds_conv2d_blocked_forward(&d, a->in[0]->ndim == 5, a->in[0]->data, a->in[1]->data,
				  a->n_in > 2 ? a->in[2]->data : NULL, a->n_in > 3 ? a->in[3]->data : NULL,
				  a->out[0]->data, a->workspace);
	/* ReLU and ReLU6 are in the kernel; others after, on every lane (the
	 * padding channels' values are never read as channels). */
	if (p.act && !d.relu)
		ds_cpu_act_forward((ds_cpu_act)(p.act - 1), 0.0f, a->out[0]->data, a->out[0]->data,
				   ds_tensor_numel(a->out[0]));
	return 0;
}

/* The pool's scratch: a run of convolution rows a thread. */
static size_t bconv_workspace(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	struct bconv p;
	ds_conv2d_dims d;

	(void)n_in;
	(void)out;
	if (bconv_params(node, &p, NULL))
		return 0;
	bconv_dims(node, &p, in[0].dim, in[1].dim, &d);
	return ds_conv2d_blocked_workspace(&d) * sizeof(float);
}

struct reorder {
	int to;                      /* index in layouts */
	int64_t channels;
};

static int reorder_params(const ds_node *node, struct reorder *p, ds_error *err)
{
	int rc;

	if ((rc = ds_op_attr_choice(node, "to", layouts, -1, &p->to, err)) ||
	    (rc = ds_op_attr_int(node, "channels", 0, 0, DS_OP_ATTR_MAX, &p->channels, err)))
		return rc;
	if (p->to < 0)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute 'to' is required: nchw or nchw16c");
	if (p->to == 0 && p->channels < 1)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute 'channels' is required to reorder to nchw");
	return 0;
}

/* [N, C, H, W] -> [N, CB, H, W, 16], or back with "channels". */
static int reorder_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	struct reorder p;
	char xs[128];
	int rc;

	(void)n_in;
	if ((rc = reorder_params(node, &p, err)) || (rc = ds_op_check_ndim(node, in, 0, p.to ? 4 : 5, p.to ? 4 : 5, err)))
		return rc;
	ds_op_shape_text(&in[0], xs, sizeof xs);
	if (in[0].dtype != DS_F32 || (!p.to && (in[0].dim[1] != blocks_of(p.channels) || in[0].dim[4] != BLK)))
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "input '%s' %s is not F32%s", ds_node_input(node, 0), xs,
				    p.to ? "" : " in blocks of 16 for the channels");
	if (p.to)
		out[0] = (ds_shape){ .dtype = DS_F32, .ndim = 5,
				     .dim = { in[0].dim[0], blocks_of(in[0].dim[1]), in[0].dim[2], in[0].dim[3], BLK } };
	else
		out[0] = (ds_shape){ .dtype = DS_F32, .ndim = 4,
				     .dim = { in[0].dim[0], p.channels, in[0].dim[2], in[0].dim[3] } };
	return 0;
}

static int reorder_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const int64_t *s = a->in[0]->shape;
	struct reorder p;
	int rc;

	if ((rc = reorder_params(a->node, &p, err)))
		return rc;
	if (p.to)
		ds_to_blocked(s[0], s[1], s[2] * s[3], a->in[0]->data, a->out[0]->data);
	else
		ds_from_blocked(s[0], p.channels, s[2] * s[3], a->in[0]->data, a->out[0]->data);
	return 0;
}

/* [N, CB, H, W, 16] -> [N, C, 1, 1]: global_avg_pool read blocked. */
static int bgap_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	int64_t channels;
	char xs[128];
	int rc;

	(void)n_in;
	if ((rc = ds_op_attr_int(node, "channels", -1, 1, DS_OP_ATTR_MAX, &channels, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 5, 5, err)))
		return rc;
	if (channels < 1)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute 'channels' is required");
	ds_op_shape_text(&in[0], xs, sizeof xs);
	if (in[0].dtype != DS_F32 || in[0].dim[1] != blocks_of(channels) || in[0].dim[4] != BLK)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "input '%s' %s is not F32 in blocks of 16 for %"
				    PRId64 " channels", ds_node_input(node, 0), xs, channels);
	out[0] = (ds_shape){ .dtype = DS_F32, .ndim = 4, .dim = { in[0].dim[0], channels, 1, 1 } };
	return 0;
}

/* As global_avg_pool counts: an add per input on the true channels. */
static int64_t bgap_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)n_in;
	return ds_op_sat_mul(ds_op_numel(&out[0]), ds_op_sat_mul(in[0].dim[2], in[0].dim[3]));
}

static int bgap_forward_cpu(const ds_op_args *a, ds_error *err)
{
	const int64_t *s = a->in[0]->shape;

	(void)err;
	ds_global_avg_pool_blocked(s[0], a->out[0]->shape[1], s[2] * s[3], a->in[0]->data, a->out[0]->data);
	return 0;
}

/* What ds-optimize writes is for inference: training a blocked model
 * starts from the model before ds-optimize. */
static int refuse_backward(const ds_op_args *a, ds_error *err)
{
	(void)a;
	return ds_error_set(err, DS_ERR_DATA, "inference_only",
			    "the blocked layout is for inference; train the model before ds-optimize");
}

const ds_op ds_ops_layout[] = {
	{ .name = "conv2d_nchw16c", .min_inputs = 2, .max_inputs = 4, .num_outputs = 1, .attrs = conv_attrs,
	  .infer = bconv_infer, .flops = bconv_flops, .workspace = bconv_workspace, .forward = { [DS_BACKEND_CPU] = bconv_forward_cpu },
	  .backward = { [DS_BACKEND_CPU] = refuse_backward } },
	{ .name = "reorder", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1, .attrs = reorder_attrs,
	  .infer = reorder_infer, .flops = ds_op_flops_zero, .forward = { [DS_BACKEND_CPU] = reorder_forward_cpu },
	  .backward = { [DS_BACKEND_CPU] = refuse_backward } },
	{ .name = "global_avg_pool_nchw16c", .min_inputs = 1, .max_inputs = 1, .num_outputs = 1,
	  .attrs = bgap_attrs, .infer = bgap_infer, .flops = bgap_flops,
	  .forward = { [DS_BACKEND_CPU] = bgap_forward_cpu }, .backward = { [DS_BACKEND_CPU] = refuse_backward } },
	{ .name = NULL },
};
