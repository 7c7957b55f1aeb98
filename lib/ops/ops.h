/* ops.h - what the op families share: their tables, read by registry.c, and
 * the helpers their shape inference is written with.
 *
 * Each family file (conv.c, linear.c, ...) defines one table of ds_op rows
 * ended by a row whose name is NULL.  Adding an op touches only its family's
 * file; adding a family adds one line here and one in registry.c.
 *
 * Shape helpers report through err with status 3: "bad_attr" for an attribute
 * of the wrong type or range, "shape_mismatch" for inputs that do not fit.
 * Messages name the attribute or the input tensor; the graph puts the node in
 * front.
 */
#ifndef DS_OPS_H
#define DS_OPS_H

#include "internal.h"

extern const ds_op ds_ops_conv[];
extern const ds_op ds_ops_linear[];
extern const ds_op ds_ops_norm[];
extern const ds_op ds_ops_activation[];
extern const ds_op ds_ops_pool[];
extern const ds_op ds_ops_shape[];
extern const ds_op ds_ops_loss[];
extern const ds_op ds_ops_embedding[];
extern const ds_op ds_ops_quant[];
extern const ds_op ds_ops_layout[];

/* Dimensions and attribute values beyond this are refused, so that the
 * arithmetic of shape inference cannot overflow int64. */
#define DS_OP_DIM_MAX ((int64_t)1 << 40)
#define DS_OP_ATTR_MAX ((int64_t)1 << 30)

/* Saturating arithmetic for FLOP counts: a huge graph reports INT64_MAX
 * rather than wrapping. */
int64_t ds_op_sat_mul(int64_t a, int64_t b);
int64_t ds_op_sat_add(int64_t a, int64_t b);
/* Elements of a shape, saturating at INT64_MAX. */
int64_t ds_op_numel(const ds_shape *s);

/* "[1, 3, 28, 28]" into buf; returns buf. */
const char *ds_op_shape_text(const ds_shape *s, char *buf, size_t len);

/* Input i must have between min_ndim and max_ndim dims. */
int ds_op_check_ndim(const ds_node *node, const ds_shape *in, int i, int min_ndim, int max_ndim,
		     ds_error *err);
/* Input i must be an integer tensor (I32 or I64): ids, labels. */
int ds_op_check_index_dtype(const ds_node *node, const ds_shape *in, int i, ds_error *err);
/* Input i must be a 1-d tensor of length want. */
int ds_op_check_vector(const ds_node *node, const ds_shape *in, int i, int64_t want, ds_error *err);

/* An integer attribute in [min, max]; fallback when absent.  Booleans read
 * as 0 and 1. */
int ds_op_attr_int(const ds_node *node, const char *name, int64_t fallback, int64_t min,
		   int64_t max, int64_t *out, ds_error *err);
/* A number in [min, max] (finite); fallback when absent. */
int ds_op_attr_float(const ds_node *node, const char *name, double fallback, double min,
		     double max, double *out, ds_error *err);
/* An int or [h, w] pair for 2-d windows (stride, padding, dilation, kernel);
 * each value in [min, DS_OP_ATTR_MAX].  fallback < 0 makes the attribute
 * required. */
int ds_op_attr_pair(const ds_node *node, const char *name, int64_t fallback, int64_t min,
		    int64_t out[2], ds_error *err);
/* An axis for a tensor of ndim dims (ndim + extra allowed values, for
 * flatten's axis == ndim), negative counting from the end; normalized. */
int ds_op_attr_axis(const ds_node *node, const char *name, int64_t fallback, int ndim, int extra,
		    int *out, ds_error *err);
/* A string attribute, one of the NULL-terminated choices; *out is its index. */
int ds_op_attr_choice(const ds_node *node, const char *name, const char *const *choices,
		      int fallback, int *out, ds_error *err);

/* The "activation" epilogue attribute of conv2d and linear (ds-optimize's
 * fuse-activation pass sets it): 0 none, else 1 + a ds_cpu_act.  Status 3
 * for a name it does not know. */
int ds_op_epilogue(const ds_node *node, int *act, ds_error *err);

/* Output length of a sliding window along one dimension (convolution and
 * pooling), status 3 when the window does not fit. */
int ds_op_window_out(const ds_node *node, const char *what, int64_t in, int64_t kernel,
		     int64_t stride, int64_t pad, int64_t dilation, int ceil_mode, int64_t *out,
		     ds_error *err);

/* Shared forms: output = input 0 (elementwise ops), and FLOPs = per-element
 * cost times the output's elements. */
int ds_op_infer_same(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err);
int64_t ds_op_flops_zero(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out);

#endif
