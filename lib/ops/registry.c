/* registry.c - the op registry: every family's table merged into one array
 * sorted by name, built once, searched by bisection.  Also the helpers the
 * families write their shape inference with (declared in ops.h).
 */
#include "config.h"
#include "ops.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The one list of families; an op is found through the registry only. */
static const ds_op *const families[] = {
	ds_ops_conv, ds_ops_linear, ds_ops_norm, ds_ops_activation,
	ds_ops_pool, ds_ops_shape, ds_ops_loss, ds_ops_embedding, ds_ops_quant, ds_ops_layout,
};

/* Fixed room so that building the registry cannot fail; test_graph checks
 * that every family row made it in. */
#define REGISTRY_MAX 1024

static const ds_op *registry[REGISTRY_MAX];
static size_t registry_len;
static pthread_once_t registry_once = PTHREAD_ONCE_INIT;

static int op_cmp(const void *a, const void *b)
{
	const ds_op *x = *(const ds_op *const *)a, *y = *(const ds_op *const *)b;

	return strcmp(x->name, y->name);
}

static void registry_build(void)
{
	for (size_t f = 0; f < DS_ARRAY_LEN(families); f++)
		for (const ds_op *op = families[f]; op->name && registry_len < REGISTRY_MAX; op++)
			registry[registry_len++] = op;
	qsort(registry, registry_len, sizeof registry[0], op_cmp);
}

const ds_op *ds_op_find(const char *name)
{
	size_t lo = 0, hi;

	if (!name)
		return NULL;
	pthread_once(&registry_once, registry_build);
	hi = registry_len;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, registry[mid]->name);

		if (c == 0)
			return registry[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

size_t ds_op_count(void)
{
	pthread_once(&registry_once, registry_build);
	return registry_len;
}

const ds_op *ds_op_at(size_t i)
{
	pthread_once(&registry_once, registry_build);
	return i < registry_len ? registry[i] : NULL;
}

/* ------------------------------------------------------------ arithmetic */

int64_t ds_op_sat_mul(int64_t a, int64_t b)
{
	int64_t r;

	if (a < 0 || b < 0)
		return -1;
	if (__builtin_mul_overflow(a, b, &r))
		return INT64_MAX;
	return r;
}

int64_t ds_op_sat_add(int64_t a, int64_t b)
{
	int64_t r;

	if (a < 0 || b < 0)
		return -1;
	if (__builtin_add_overflow(a, b, &r))
		return INT64_MAX;
	return r;
}

int64_t ds_op_numel(const ds_shape *s)
{
	int64_t n = 1;

	for (int i = 0; i < s->ndim; i++)
		n = ds_op_sat_mul(n, s->dim[i]);
	return n;
}

const char *ds_op_shape_text(const ds_shape *s, char *buf, size_t len)
{
	size_t used = 0;

	if (!len)
		return buf;
	buf[0] = '\0';
	used += (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < s->ndim && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, i ? ", " : "", s->dim[i]);
	if (used < len)
		snprintf(buf + used, len - used, "]");
	return buf;
}

/* ---------------------------------------------------------------- checks */

static const char *input_name(const ds_node *node, int i)
{
	const char *name = ds_node_input(node, (size_t)i);

	return name ? name : "?";
}

int ds_op_check_ndim(const ds_node *node, const ds_shape *in, int i, int min_ndim, int max_ndim,
		     ds_error *err)
{
	char buf[128];

	if (in[i].ndim >= min_ndim && in[i].ndim <= max_ndim)
		return 0;
	if (min_ndim == max_ndim)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "input '%s': expected %d dims, got %s", input_name(node, i),
				    min_ndim, ds_op_shape_text(&in[i], buf, sizeof buf));
	return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
			    "input '%s': expected %d to %d dims, got %s", input_name(node, i),
			    min_ndim, max_ndim, ds_op_shape_text(&in[i], buf, sizeof buf));
}

int ds_op_check_index_dtype(const ds_node *node, const ds_shape *in, int i, ds_error *err)
{
	if (in[i].dtype == DS_I32 || in[i].dtype == DS_I64)
		return 0;
	return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
			    "input '%s': expected I32 or I64 indices, got %s", input_name(node, i),
			    ds_dtype_name(in[i].dtype));
}

int ds_op_check_vector(const ds_node *node, const ds_shape *in, int i, int64_t want, ds_error *err)
{
	char buf[128];

	if (in[i].ndim == 1 && in[i].dim[0] == want)
		return 0;
	return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
			    "input '%s': expected [%" PRId64 "], got %s", input_name(node, i), want,
			    ds_op_shape_text(&in[i], buf, sizeof buf));
}

/* ------------------------------------------------------------ attributes */

int ds_op_attr_int(const ds_node *node, const char *name, int64_t fallback, int64_t min,
		   int64_t max, int64_t *out, ds_error *err)
{
	const json_t *attrs = ds_node_attrs(node);
	const json_t *v = attrs ? json_object_get(attrs, name) : NULL;
	int64_t x;

	if (!v) {
		*out = fallback;
		return 0;
	}
	if (json_is_integer(v))
		x = json_integer_value(v);
	else if (json_is_boolean(v))
		x = json_is_true(v);
	else
		return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute '%s': expected an integer",
				    name);
	if (x < min || x > max)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "attribute '%s': %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]",
				    name, x, min, max);
	*out = x;
	return 0;
}

int ds_op_attr_float(const ds_node *node, const char *name, double fallback, double min,
		     double max, double *out, ds_error *err)
{
	const json_t *attrs = ds_node_attrs(node);
	const json_t *v = attrs ? json_object_get(attrs, name) : NULL;
	double x;

	if (!v) {
		*out = fallback;
		return 0;
	}
	if (!json_is_number(v))
		return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute '%s': expected a number",
				    name);
	x = json_number_value(v);
	if (!isfinite(x) || x < min || x > max)
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "attribute '%s': %g is outside [%g, %g]", name, x, min, max);
	*out = x;
	return 0;
}

int ds_op_attr_pair(const ds_node *node, const char *name, int64_t fallback, int64_t min,
		    int64_t out[2], ds_error *err)
{
	const json_t *attrs = ds_node_attrs(node);
	const json_t *v = attrs ? json_object_get(attrs, name) : NULL;

	if (!v) {
		if (fallback < 0)
			return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute '%s': required",
					    name);
		out[0] = out[1] = fallback;
		return 0;
	}
	if (json_is_integer(v)) {
		out[0] = out[1] = json_integer_value(v);
	} else if (json_is_array(v) && json_array_size(v) == 2 &&
		   json_is_integer(json_array_get(v, 0)) && json_is_integer(json_array_get(v, 1))) {
		out[0] = json_integer_value(json_array_get(v, 0));
		out[1] = json_integer_value(json_array_get(v, 1));
	} else {
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "attribute '%s': expected an integer or [h, w]", name);
	}
	for (int i = 0; i < 2; i++)
		if (out[i] < min || out[i] > DS_OP_ATTR_MAX)
			return ds_error_set(err, DS_ERR_DATA, "bad_attr",
					    "attribute '%s': %" PRId64 " is outside [%" PRId64 ", %" PRId64 "]",
					    name, out[i], min, DS_OP_ATTR_MAX);
	return 0;
}

int ds_op_attr_axis(const ds_node *node, const char *name, int64_t fallback, int ndim, int extra,
		    int *out, ds_error *err)
{
	int64_t axis;
	int64_t hi = ndim + extra;
	int rc = ds_op_attr_int(node, name, fallback, -hi, hi, &axis, err);

	if (rc)
		return rc;
	if (axis < 0)
		axis += hi;
	if (axis < 0 || axis >= hi || (hi == 0))
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "attribute '%s': axis %" PRId64 " is out of range for %d dims", name,
				    axis, ndim);
	*out = (int)axis;
	return 0;
}

int ds_op_attr_choice(const ds_node *node, const char *name, const char *const *choices,
		      int fallback, int *out, ds_error *err)
{
	const json_t *attrs = ds_node_attrs(node);
	const json_t *v = attrs ? json_object_get(attrs, name) : NULL;

	if (!v) {
		*out = fallback;
		return 0;
	}
	if (json_is_string(v))
		for (int i = 0; choices[i]; i++)
			if (strcmp(json_string_value(v), choices[i]) == 0) {
				*out = i;
				return 0;
			}
	return ds_error_set(err, DS_ERR_DATA, "bad_attr", "attribute '%s': expected one of %s%s%s",
			    name, choices[0], choices[1] ? ", " : "", choices[1] ? choices[1] : "");
}

/* ---------------------------------------------------------------- windows */

/* PyTorch's rule: with ceil_mode a last window that would start in the
 * right padding is dropped. */
int ds_op_window_out(const ds_node *node, const char *what, int64_t in, int64_t kernel,
		     int64_t stride, int64_t pad, int64_t dilation, int ceil_mode, int64_t *out,
		     ds_error *err)
{
	/* in <= DS_OP_DIM_MAX, the others <= DS_OP_ATTR_MAX: no overflow. */
	int64_t span = dilation * (kernel - 1) + 1;
	int64_t room = in + 2 * pad - span;
	int64_t n;

	if (in > DS_OP_DIM_MAX || kernel > DS_OP_DIM_MAX)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "input '%s': %s: dimension too large",
				    input_name(node, 0), what);
	if (room < 0)
		return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
				    "input '%s': %s: window of %" PRId64 " does not fit in %" PRId64
				    " (padding %" PRId64 ")", input_name(node, 0), what, span, in, pad);
	n = room / stride + 1;
	if (ceil_mode && room % stride) {
		n++;
		if ((n - 1) * stride >= in + pad)
			n--;
	}
	*out = n;
	return 0;
}

int ds_op_infer_same(const ds_node *node, const ds_shape *in, int n_in, ds_shape *out, ds_error *err)
{
	(void)node;
	(void)n_in;
	(void)err;
	out[0] = in[0];
	return 0;
}

int64_t ds_op_flops_zero(const ds_node *node, const ds_shape *in, int n_in, const ds_shape *out)
{
	(void)node;
	(void)in;
	(void)n_in;
	(void)out;
	return 0;
}
