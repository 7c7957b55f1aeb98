/* conv.c - convolution: conv2d over NCHW, with stride, padding, dilation and
 * groups (groups == channels is depthwise).
 *
 * An optional fourth input, the residual (ds-optimize's fuse-add writes
 * it, after a bias), is added to the output after the bias and before the
 * fused activation: y = act(conv(x, w) + b + r), rounded as the add node it
 * replaces rounded it. */
#include "config.h"
#include "ops.h"
#include "cpu/conv.h"
#include "cpu/elementwise.h"

#include <inttypes.h>
#include <string.h>

static const char *const conv2d_attrs[] = { "stride", "padding", "dilation", "groups", "activation", "pool", "kernel", "chunk", NULL };
/* "pool": a max-pool fused after the activation (ds-optimize writes it). */
static const char *const pool_kinds[] = { "none", "max_2x2", NULL };

struct conv_params {
	int64_t stride[2], pad[2], dil[2], groups;
	int act;                     /* ds_op_epilogue */
	int pool;                    /* index in pool_kinds */
	int tactic;                  /* index in tactic_kinds: a ds_conv2d_tactic */
	int64_t chunk;               /* images per im2col GEMM, 0: the kernel's choice */
};

/* "kernel" and "chunk" are what ds-optimize --tune measured fastest on the
 * machine that tuned the model: a preference, never a different result. */
static const char *const tactic_kinds[] = { "auto", "direct", "gemm", "lanes", NULL };

static int conv_params(const ds_node *node, struct conv_params *p, ds_error *err)
{
	int rc;

	if ((rc = ds_op_attr_pair(node, "stride", 1, 1, p->stride, err)) ||
	    (rc = ds_op_attr_pair(node, "padding", 0, 0, p->pad, err)) ||
	    (rc = ds_op_attr_pair(node, "dilation", 1, 1, p->dil, err)) ||
	    (rc = ds_op_attr_int(node, "groups", 1, 1, DS_OP_ATTR_MAX, &p->groups, err)) ||
	    (rc = ds_op_epilogue(node, &p->act, err)) ||
	    (rc = ds_op_attr_choice(node, "pool", pool_kinds, 0, &p->pool, err)) ||
	    (rc = ds_op_attr_choice(node, "kernel", tactic_kinds, 0, &p->tactic, err)) ||
	    (rc = ds_op_attr_int(node, "chunk", 0, 0, 4096, &p->chunk, err)))
		return rc;
	/* The pool runs after the epilogue inside the kernel, which applies
	 * only ReLU itself: other activations would come after the pool. */
	if (p->pool && p->act && p->act != 1 + DS_CPU_RELU)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "attribute 'pool': takes no activation but relu");
	return 0;
}

/* x [N, C, H, W], weight [O, C/groups, KH, KW], bias [O] -> [N, O, OH, OW] */
static int conv2d_infer(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out,
			ds_error *err)
{
	struct conv_params p;
	const ds_shape *x = &in[0], *w = &in[1];
	char xs[128], ws[128];
	int64_t oh, ow;
	int rc;

	if ((rc = conv_params(node, &p, err)) ||
	    (rc = ds_op_check_ndim(node, in, 0, 4, 4, err)) ||
	    (rc = ds_op_check_ndim(node, in, 1, 4, 4, err)))
		return rc;
	ds_op_shape_text(x, xs, sizeof xs);
	ds_op_shape_text(w, ws, sizeof ws);
	if (x->dim[1] % p.groups || w->dim[0] % p.groups)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "groups %" PRId64 " does not divide the %" PRId64
				    " input channels of '%s' %s and the %" PRId64 " filters of '%s' %s",
				    p.groups, x->dim[1], ds_node_input(node, 0), xs, w->dim[0],
				    ds_node_input(node, 1), ws);
	if (w->dim[1] != x->dim[1] / p.groups)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "weight '%s' %s takes %" PRId64 " channels per group, input '%s' %s has %"
				    PRId64 " (%" PRId64 " channels, groups %" PRId64 ")", ds_node_input(node, 1),
				    ws, w->dim[1], ds_node_input(node, 0), xs, x->dim[1] / p.groups, x->dim[1],
				    p.groups);
	if (n_in > 2 && (rc = ds_op_check_vector(node, in, 2, w->dim[0], err)))
		return rc;
	if (n_in > 3 && p.pool)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "attribute 'pool': a convolution with a residual input takes no pool");
	if ((rc = ds_op_window_out(node, "height", x->dim[2], w->dim[2], p.stride[0], p.pad[0],
				   p.dil[0], 0, &oh, err)) ||
	    (rc = ds_op_window_out(node, "width", x->dim[3], w->dim[3], p.stride[1], p.pad[1],
				   p.dil[1], 0, &ow, err)))
		return rc;
	if (p.pool) {
		if (oh < 2 || ow < 2)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "attribute 'pool': output %" PRId64 "x%" PRId64
					    " is smaller than the 2x2 window", oh, ow);
		oh /= 2;
		ow /= 2;
	}
	out[0].dtype = x->dtype;
	out[0].ndim = 4;
	out[0].dim[0] = x->dim[0];
	out[0].dim[1] = w->dim[0];
	out[0].dim[2] = oh;
	out[0].dim[3] = ow;
	if (n_in > 3 && (in[3].ndim != 4 || memcmp(in[3].dim, out[0].dim, sizeof out[0].dim[0] * 4) ||
			 in[3].dtype != x->dtype)) {
		char os[128], rs[128];

		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "residual '%s' %s is not shaped like the output %s", ds_node_input(node, 3),
				    ds_op_shape_text(&in[3], rs, sizeof rs), ds_op_shape_text(&out[0], os, sizeof os));
	}
	return 0;
}

static int conv_dims(const ds_node *node, const int64_t *x, const int64_t *w, const int64_t *y,
		     ds_conv2d_dims *d, ds_error *err);

/* 2 per multiply-add over the filter window, plus 1 per output for the
 * bias and 1 for a residual; a fused pool adds its 4 compares per pooled
 * output. */
static int64_t conv2d_flops(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	int64_t window = ds_op_sat_mul(ds_op_sat_mul(in[1].dim[1], in[1].dim[2]), in[1].dim[3]);
	int64_t outs = ds_op_numel(&out[0]), pooled = 0, f;
	ds_conv2d_dims d;

	if (!conv_dims(node, in[0].dim, in[1].dim, out[0].dim, &d, NULL) && d.pool) {
		pooled = ds_op_sat_mul(outs, 4);
		outs = ds_op_sat_mul(ds_op_sat_mul(d.n, d.o), ds_op_sat_mul(d.oh, d.ow));
	}
	f = ds_op_sat_add(ds_op_sat_mul(ds_op_sat_mul(outs, window), 2), pooled);
	if (n_in > 3)
		f = ds_op_sat_add(f, outs);
	return n_in > 2 ? ds_op_sat_add(f, outs) : f;
}

/* The kernel's view of a call: x, weight and output dims, attributes. */
static int conv_dims(const ds_node *node, const int64_t *x, const int64_t *w, const int64_t *y,
		     ds_conv2d_dims *d, ds_error *err)
{
	struct conv_params p;
	int64_t oh = y[2], ow = y[3];
	int rc;

	if ((rc = conv_params(node, &p, err)))
		return rc;
	/* y is pooled: the kernel wants the convolution's own grid. */
	if (p.pool &&
	    ((rc = ds_op_window_out(node, "height", x[2], w[2], p.stride[0], p.pad[0], p.dil[0], 0, &oh,
				    err)) ||
	     (rc = ds_op_window_out(node, "width", x[3], w[3], p.stride[1], p.pad[1], p.dil[1], 0, &ow,
				    err))))
		return rc;
	*d = (ds_conv2d_dims){
		.n = x[0], .c = x[1], .h = x[2], .w = x[3],
		.o = w[0], .kh = w[2], .kw = w[3], .oh = oh, .ow = ow,
		.sh = p.stride[0], .sw = p.stride[1], .ph = p.pad[0], .pw = p.pad[1],
		.dh = p.dil[0], .dw = p.dil[1], .groups = p.groups,
		.relu = p.act == 1 + DS_CPU_RELU || p.act == 1 + DS_CPU_RELU6,
		.cap = p.act == 1 + DS_CPU_RELU6 ? 6.0f : 0.0f, .pool = p.pool,
		.tactic = p.tactic, .chunk = p.chunk,
	};
	return 0;
}

/* With a fused pool, training's backward too (ds-train's graph fuses
 * conv2d and max_pool; see lib/train_graph.c). */
static size_t conv2d_workspace(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	ds_conv2d_dims d;
	size_t ws, back;

	(void)n_in;
	if (conv_dims(node, in[0].dim, in[1].dim, out[0].dim, &d, NULL))
		return 0;
	ws = ds_conv2d_workspace(&d);
	back = d.pool ? ds_conv2d_pooled_backward_workspace(&d) : 0;
	return (ws > back ? ws : back) * sizeof(float);
}

/* A fused pool keeps where each maximum was, for backward. */
static size_t conv2d_saved(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	ds_conv2d_dims d;

	(void)n_in;
	if (conv_dims(node, in[0].dim, in[1].dim, out[0].dim, &d, NULL) || !d.pool)
		return 0;
	return (size_t)ds_op_numel(&out[0]) * sizeof(int32_t);
}

static int conv2d_forward_cpu(const ds_op_args *a, ds_error *err)
{
	ds_conv2d_dims d;
	int act, rc;

	if ((rc = conv_dims(a->node, a->in[0]->shape, a->in[1]->shape, a->out[0]->shape, &d, err)) ||
	    (rc = ds_op_epilogue(a->node, &act, err)))
		return rc;
	if (d.pool && a->training)
		d.argmax = a->saved;
	ds_conv2d_forward_res(&d, a->in[0]->data, a->in[1]->data, a->n_in > 2 ? a->in[2]->data : NULL,
			      a->n_in > 3 ? a->in[3]->data : NULL, a->out[0]->data, a->workspace);
	/* ReLU and ReLU6 are applied inside the kernels, after the residual;
	 * other epilogues in place after. */
	if (act && !d.relu)
		ds_cpu_act_forward((ds_cpu_act)(act - 1), 0.0f, a->out[0]->data, a->out[0]->data,
				   ds_tensor_numel(a->out[0]));
	return 0;
}

/* A fused activation is an inference form (ds-optimize writes it): its
 * gradient would need the output kept, which training plans do not keep
 * for conv2d and linear. */
static int refuse_fused_backward(const ds_op_args *a, const char *what, ds_error *err)
{
	return ds_error_set(err, DS_ERR_DATA, "inference_only",
			    "node '%s': a fused %s is for inference; train the model before ds-optimize",
			    ds_node_name(a->node), what);
}

static int conv2d_backward_cpu(const ds_op_args *a, ds_error *err)
{
	ds_tensor *gx = a->grad_in[0], *gw = a->grad_in[1], *gb = a->n_in > 2 ? a->grad_in[2] : NULL;
	ds_conv2d_dims d;
	int rc;

	if ((rc = conv_dims(a->node, a->in[0]->shape, a->in[1]->shape, a->grad_out[0]->shape, &d, err)))
		return rc;
	if (d.relu || (ds_node_attrs(a->node) && json_object_get(ds_node_attrs(a->node), "activation")))
		return refuse_fused_backward(a, "activation", err);
	if (a->n_in > 3)
		return refuse_fused_backward(a, "residual", err);
	if (d.pool) {
		if (!a->saved)
			return ds_error_set(err, DS_ERR_RUN, "no_saved_state",
					    "conv2d backward through a pool without saved indices");
		ds_conv2d_pooled_backward(&d, a->in[0]->data, a->in[1]->data, a->grad_out[0]->data, a->saved,
					  gx ? gx->data : NULL, gw ? gw->data : NULL, gb ? gb->data : NULL,
					  a->workspace);
		return 0;
	}
	ds_conv2d_backward(&d, a->in[0]->data, a->in[1]->data, a->grad_out[0]->data,
			   gx ? gx->data : NULL, gw ? gw->data : NULL, gb ? gb->data : NULL,
			   a->workspace);
	return 0;
}

const ds_op ds_ops_conv[] = {
	{ .name = "conv2d", .min_inputs = 2, .max_inputs = 4, .num_outputs = 1, .attrs = conv2d_attrs, .infer = conv2d_infer, .flops = conv2d_flops,
	  .forward = { [DS_BACKEND_CPU] = conv2d_forward_cpu }, .backward = { [DS_BACKEND_CPU] = conv2d_backward_cpu },
	  .workspace = conv2d_workspace, .saved = conv2d_saved, .backward_needs = DS_NEEDS_IN(0) | DS_NEEDS_IN(1) },
	{ .name = NULL },
};
