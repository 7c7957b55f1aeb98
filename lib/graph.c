/* graph.c - the model graph: parse the ds.graph JSON, resolve its names,
 * order it and infer every shape.
 *
 * Format (the ds.graph metadata of a model/1 container, a JSON object):
 *
 *   {"inputs":  [{"name": "x", "dtype": "F32", "shape": [-1, 1, 28, 28]}],
 *    "nodes":   [{"op": "conv2d", "name": "conv1",
 *                 "inputs": ["x", "conv1.weight", "conv1.bias"],
 *                 "outputs": ["conv1.out"],
 *                 "attrs": {"stride": [1, 1], "padding": [1, 1]}}, ...],
 *    "outputs": ["logits"]}
 *
 * - The object has exactly the keys inputs, nodes and outputs; inputs and
 *   nodes may be empty arrays, outputs holds at least one name.  Duplicate
 *   keys anywhere are refused.
 * - An input has exactly name (non-empty string), dtype (a safetensors dtype
 *   name: F32 F16 BF16 I8 U8 I32 I64) and shape (0 to 8 integers, each 0 to
 *   2^40; dim 0 alone may be -1, the batch, which shape inference fills in).
 * - A node has op, name, inputs and outputs, and optionally attrs (an object).
 *   op is a name in the op registry; name is a non-empty string unique among
 *   nodes (nodes and values are separate namespaces); inputs and outputs
 *   are arrays of non-empty strings.  The number of inputs is within the op's
 *   range, the number of outputs is the op's; every attrs key is one the op
 *   accepts, and its value is checked by the op's shape inference.
 * - Values are named: each graph input, each parameter (a tensor of the
 *   container the graph is parsed against), each node output.  A value is
 *   produced once: an output may not repeat another output, a graph input or
 *   a parameter, and a graph input may not repeat a parameter.  Every name a
 *   node reads and every graph output must resolve to a value; a parameter
 *   is any container tensor a node reads (with no container, none exists).
 * - Nodes may appear in any order but may not form a cycle.  They are kept in
 *   topological order (Kahn's algorithm, taking the earliest node in file
 *   order among those ready, so a file already in order keeps its order).
 * - Shapes are inferred at batch 1 when the graph is parsed, and again at
 *   any batch with ds_graph_infer.  Every dim of every value stays >= 0 and
 *   every value's element count fits in int64.
 * - FLOPs (ds_graph_flops) are per item: the sum of each op's count at batch
 *   1, a multiply-add counting 2; conv2d and linear add 1 per output for the
 *   bias; elementwise and pooling costs are listed in the op families.
 *
 * Errors are status 3 with these codes: bad_graph (not JSON, wrong keys or
 * types, wrong number of inputs or outputs), unknown_op, unknown_tensor,
 * duplicate_name, cycle, bad_attr (unknown attribute, or a value of the wrong
 * type or range), shape_mismatch.  Messages start with "graph: " and name the
 * node and tensor: "graph: node 'fc1': input 'nope': no such tensor".
 */
#include "config.h"
#include "internal.h"
#include "ops/ops.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#define NO_VALUE SIZE_MAX

enum value_kind { VALUE_INPUT, VALUE_PARAM, VALUE_NODE };

struct value {
	const char *name;       /* borrowed from the document */
	enum value_kind kind;
	size_t producer;        /* VALUE_NODE: node index in file order */
	ds_shape decl;          /* inputs: as declared (dim 0 may be -1) */
	ds_shape shape;         /* at the batch of the last inference */
};

struct ds_node {
	const char *name;
	const char *op_name;
	const ds_op *op;
	const json_t *attrs;
	size_t n_in, n_out;
	const char **in, **out;       /* slices of ds_graph.refs */
	size_t *in_val, *out_val;     /* slices of ds_graph.ref_vals */
};

/* Open addressing from name to index; keys are borrowed. */
struct name_map {
	const char **keys;
	size_t *vals;
	size_t cap;             /* a power of two, at least twice the entries */
};

struct ds_graph {
	json_t *doc;
	ds_node *nodes;         /* topological order once parsed */
	size_t n_nodes;
	const char **refs;      /* every node's input and output names */
	size_t *ref_vals;
	size_t n_refs;
	struct value *values;
	size_t n_values;
	struct name_map map;    /* value name -> index in values */
	size_t *inputs, n_inputs;
	size_t *outputs, n_outputs;
	ds_shape *scratch;      /* one infer call's inputs and outputs */
	size_t max_in, max_out;
	int64_t param_count;
	int64_t flops;
};

/* --------------------------------------------------------------- name map */

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211u;
	return h;
}

static int map_init(struct name_map *m, size_t entries, ds_error *err)
{
	size_t cap = 16;

	while (cap < 2 * entries)
		cap *= 2;
	m->keys = ds_calloc(cap, sizeof *m->keys, err);
	m->vals = ds_calloc(cap, sizeof *m->vals, err);
	m->cap = cap;
	return m->keys && m->vals ? 0 : DS_ERR_NOMEM;
}

static void map_free(struct name_map *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof *m);
}

/* The slot holding name, or the empty slot where it would go. */
static size_t map_slot(const struct name_map *m, const char *name)
{
	size_t i = (size_t)name_hash(name) & (m->cap - 1);

	while (m->keys[i] && strcmp(m->keys[i], name) != 0)
		i = (i + 1) & (m->cap - 1);
	return i;
}

static size_t map_get(const struct name_map *m, const char *name)
{
	size_t i;

	if (!m->cap)
		return NO_VALUE;
	i = map_slot(m, name);
	return m->keys[i] ? m->vals[i] : NO_VALUE;
}

/* The caller has sized the map for every insertion, and checked absence. */
static void map_put(struct name_map *m, const char *name, size_t val)
{
	size_t i = map_slot(m, name);

	m->keys[i] = name;
	m->vals[i] = val;
}

/* ---------------------------------------------------------------- parsing */

static int bad(ds_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(ds_error *err, const char *fmt, ...)
{
	char msg[sizeof err->message];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return ds_error_set(err, DS_ERR_DATA, "bad_graph", "%s", msg);
}

/* Every key of obj is one of allowed (NULL-terminated). */
static int check_keys(const json_t *obj, const char *const *allowed, const char *where,
		      ds_error *err)
{
	const char *key;
	const json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		int known = 0;

		for (int i = 0; allowed[i] && !known; i++)
			known = strcmp(key, allowed[i]) == 0;
		if (!known)
			return bad(err, "graph: %s: unknown key '%s'", where, key);
	}
	return 0;
}

static const char *nonempty_string(const json_t *v)
{
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;

	return s && *s ? s : NULL;
}

static int parse_shape(const json_t *arr, const char *name, ds_shape *s, ds_error *err)
{
	size_t n = json_is_array(arr) ? json_array_size(arr) : SIZE_MAX;

	if (n > DS_MAX_DIMS)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph",
				    "graph: input '%s': 'shape' must be a list of at most %d integers",
				    name, DS_MAX_DIMS);
	s->ndim = (int)n;
	for (size_t i = 0; i < n; i++) {
		const json_t *d = json_array_get(arr, i);
		int64_t x = json_is_integer(d) ? json_integer_value(d) : -2;

		if (x < (i == 0 ? -1 : 0) || x > DS_OP_DIM_MAX)
			return ds_error_set(err, DS_ERR_DATA, "bad_graph",
					    "graph: input '%s': shape entry %zu must be an integer in [%d, %" PRId64 "]",
					    name, i, i == 0 ? -1 : 0, DS_OP_DIM_MAX);
		s->dim[i] = x;
	}
	return 0;
}

static int parse_inputs(ds_graph *g, const json_t *arr, ds_error *err)
{
	static const char *const keys[] = { "name", "dtype", "shape", NULL };
	size_t i;
	const json_t *in;
	char where[32];
	int rc;

	if (!json_is_array(arr))
		return bad(err, "graph: 'inputs' must be an array");
	g->n_inputs = json_array_size(arr);
	g->inputs = ds_calloc(g->n_inputs, sizeof *g->inputs, err);
	if (!g->inputs)
		return DS_ERR_NOMEM;
	json_array_foreach(arr, i, in) {
		struct value *v = &g->values[g->n_values];
		const char *name, *dtype;

		snprintf(where, sizeof where, "inputs[%zu]", i);
		if (!json_is_object(in))
			return bad(err, "graph: %s: expected an object", where);
		if ((rc = check_keys(in, keys, where, err)))
			return rc;
		if (!(name = nonempty_string(json_object_get(in, "name"))))
			return bad(err, "graph: %s: 'name' must be a non-empty string", where);
		dtype = json_string_value(json_object_get(in, "dtype"));
		if (!dtype || ds_dtype_parse(dtype, &v->decl.dtype) != 0)
			return bad(err, "graph: input '%s': 'dtype' must be a dtype name such as F32", name);
		if ((rc = parse_shape(json_object_get(in, "shape"), name, &v->decl, err)))
			return rc;
		if (map_get(&g->map, name) != NO_VALUE)
			return ds_error_set(err, DS_ERR_DATA, "duplicate_name",
					    "graph: input '%s': declared twice", name);
		v->name = name;
		v->kind = VALUE_INPUT;
		v->shape = v->decl;
		map_put(&g->map, name, g->n_values);
		g->inputs[i] = g->n_values++;
	}
	return 0;
}

static int parse_names(const json_t *arr, const char *node, const char *what, const char **names,
		       ds_error *err)
{
	size_t i;
	const json_t *v;

	json_array_foreach(arr, i, v) {
		if (!(names[i] = nonempty_string(v)))
			return ds_error_set(err, DS_ERR_DATA, "bad_graph",
					    "graph: node '%s': %s[%zu] must be a non-empty string", node, what, i);
	}
	return 0;
}

static int parse_attrs(ds_node *n, const json_t *attrs, ds_error *err)
{
	const char *key;
	const json_t *v;

	if (!attrs)
		return 0;
	if (!json_is_object(attrs))
		return ds_error_set(err, DS_ERR_DATA, "bad_attr",
				    "graph: node '%s': 'attrs' must be an object", n->name);
	json_object_foreach((json_t *)attrs, key, v) {
		int known = 0;

		for (int i = 0; n->op->attrs && n->op->attrs[i] && !known; i++)
			known = strcmp(key, n->op->attrs[i]) == 0;
		if (!known)
			return ds_error_set(err, DS_ERR_DATA, "bad_attr",
					    "graph: node '%s': op '%s' has no attribute '%s'", n->name,
					    n->op_name, key);
	}
	n->attrs = attrs;
	return 0;
}

static int parse_node(ds_graph *g, size_t i, const json_t *obj, size_t *ref, ds_error *err)
{
	static const char *const keys[] = { "op", "name", "inputs", "outputs", "attrs", NULL };
	ds_node *n = &g->nodes[i];
	const json_t *ins, *outs;
	char where[32];
	int rc;

	snprintf(where, sizeof where, "nodes[%zu]", i);
	if (!json_is_object(obj))
		return bad(err, "graph: %s: expected an object", where);
	if ((rc = check_keys(obj, keys, where, err)))
		return rc;
	if (!(n->name = nonempty_string(json_object_get(obj, "name"))))
		return bad(err, "graph: %s: 'name' must be a non-empty string", where);
	if (!(n->op_name = nonempty_string(json_object_get(obj, "op"))))
		return bad(err, "graph: node '%s': 'op' must be a non-empty string", n->name);
	if (!(n->op = ds_op_find(n->op_name)))
		return ds_error_set(err, DS_ERR_DATA, "unknown_op", "graph: node '%s': unknown op '%s'",
				    n->name, n->op_name);
	ins = json_object_get(obj, "inputs");
	outs = json_object_get(obj, "outputs");
	if (!json_is_array(ins) || !json_is_array(outs))
		return bad(err, "graph: node '%s': 'inputs' and 'outputs' must be arrays", n->name);
	n->n_in = json_array_size(ins);
	n->n_out = json_array_size(outs);
	if (n->n_in < (size_t)n->op->min_inputs ||
	    (n->op->max_inputs >= 0 && n->n_in > (size_t)n->op->max_inputs)) {
		if (n->op->max_inputs < 0)
			return ds_error_set(err, DS_ERR_DATA, "bad_graph",
					    "graph: node '%s': op '%s' takes at least %d inputs, got %zu",
					    n->name, n->op_name, n->op->min_inputs, n->n_in);
		if (n->op->min_inputs == n->op->max_inputs)
			return ds_error_set(err, DS_ERR_DATA, "bad_graph",
					    "graph: node '%s': op '%s' takes %d inputs, got %zu",
					    n->name, n->op_name, n->op->min_inputs, n->n_in);
		return ds_error_set(err, DS_ERR_DATA, "bad_graph",
				    "graph: node '%s': op '%s' takes %d to %d inputs, got %zu", n->name,
				    n->op_name, n->op->min_inputs, n->op->max_inputs, n->n_in);
	}
	if (n->n_out != (size_t)n->op->num_outputs)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph",
				    "graph: node '%s': op '%s' makes %d outputs, got %zu", n->name,
				    n->op_name, n->op->num_outputs, n->n_out);
	n->in = &g->refs[*ref];
	n->in_val = &g->ref_vals[*ref];
	n->out = &g->refs[*ref + n->n_in];
	n->out_val = &g->ref_vals[*ref + n->n_in];
	*ref += n->n_in + n->n_out;
	if (n->n_in > g->max_in)
		g->max_in = n->n_in;
	if (n->n_out > g->max_out)
		g->max_out = n->n_out;
	if ((rc = parse_names(ins, n->name, "inputs", n->in, err)) ||
	    (rc = parse_names(outs, n->name, "outputs", n->out, err)))
		return rc;
	return parse_attrs(n, json_object_get(obj, "attrs"), err);
}

/* Node names live in their own map, needed only while parsing. */
static int parse_nodes(ds_graph *g, const json_t *arr, ds_error *err)
{
	struct name_map node_names = { 0 };
	size_t i, ref = 0;
	const json_t *obj;
	int rc = 0;

	g->n_nodes = json_array_size(arr);
	g->nodes = ds_calloc(g->n_nodes, sizeof *g->nodes, err);
	if (!g->nodes || (rc = map_init(&node_names, g->n_nodes, err)))
		return DS_ERR_NOMEM;
	json_array_foreach(arr, i, obj) {
		if ((rc = parse_node(g, i, obj, &ref, err)))
			goto out;
		if (map_get(&node_names, g->nodes[i].name) != NO_VALUE) {
			rc = ds_error_set(err, DS_ERR_DATA, "duplicate_name",
					  "graph: node '%s': duplicate node name", g->nodes[i].name);
			goto out;
		}
		map_put(&node_names, g->nodes[i].name, i);
	}
out:
	map_free(&node_names);
	return rc;
}

/* How many names the nodes hold, to size the arrays; a malformed node counts
 * 0 and is reported by parse_node. */
static size_t count_refs(const json_t *nodes)
{
	size_t i, total = 0;
	const json_t *obj;

	json_array_foreach(nodes, i, obj) {
		total += json_array_size(json_object_get(obj, "inputs"));
		total += json_array_size(json_object_get(obj, "outputs"));
	}
	return total;
}

/* A parameter's dims are bounded like every other value's, so that shape
 * arithmetic in the ops cannot overflow. */
static int add_param(ds_graph *g, const char *name, const ds_tensor *t, size_t *idx, ds_error *err)
{
	struct value *v = &g->values[g->n_values];

	v->name = name;
	v->kind = VALUE_PARAM;
	v->decl.dtype = t->dtype;
	v->decl.ndim = t->ndim < 0 ? 0 : t->ndim > DS_MAX_DIMS ? DS_MAX_DIMS : t->ndim;
	for (int d = 0; d < v->decl.ndim; d++) {
		if (t->shape[d] < 0 || t->shape[d] > DS_OP_DIM_MAX)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "graph: parameter '%s': dim %d is out of range", name, d);
		v->decl.dim[d] = t->shape[d];
	}
	v->shape = v->decl;
	g->param_count = ds_op_sat_add(g->param_count, ds_op_numel(&v->decl));
	map_put(&g->map, name, g->n_values);
	*idx = g->n_values++;
	return 0;
}

/* Node outputs first (so that any order of nodes resolves), then node inputs,
 * then graph outputs. */
static int resolve(ds_graph *g, const ds_container *params, ds_error *err)
{
	int rc;

	for (size_t i = 0; i < g->n_nodes; i++) {
		ds_node *n = &g->nodes[i];

		for (size_t j = 0; j < n->n_out; j++) {
			const char *name = n->out[j];
			size_t prev = map_get(&g->map, name);
			struct value *v;

			if (prev != NO_VALUE) {
				if (g->values[prev].kind == VALUE_INPUT)
					return ds_error_set(err, DS_ERR_DATA, "duplicate_name",
							    "graph: node '%s': output '%s': shadows a graph input",
							    n->name, name);
				return ds_error_set(err, DS_ERR_DATA, "duplicate_name",
						    "graph: node '%s': output '%s': already produced by node '%s'",
						    n->name, name, g->nodes[g->values[prev].producer].name);
			}
			if (params && ds_container_get(params, name))
				return ds_error_set(err, DS_ERR_DATA, "duplicate_name",
						    "graph: node '%s': output '%s': shadows a parameter",
						    n->name, name);
			v = &g->values[g->n_values];
			v->name = name;
			v->kind = VALUE_NODE;
			v->producer = i;
			map_put(&g->map, name, g->n_values);
			n->out_val[j] = g->n_values++;
		}
	}
	for (size_t i = 0; i < g->n_inputs; i++) {
		const char *name = g->values[g->inputs[i]].name;

		if (params && ds_container_get(params, name))
			return ds_error_set(err, DS_ERR_DATA, "duplicate_name",
					    "graph: input '%s': is also a parameter", name);
	}
	for (size_t i = 0; i < g->n_nodes; i++) {
		ds_node *n = &g->nodes[i];

		for (size_t j = 0; j < n->n_in; j++) {
			const ds_tensor *t;

			n->in_val[j] = map_get(&g->map, n->in[j]);
			if (n->in_val[j] != NO_VALUE)
				continue;
			if (!params || !(t = ds_container_get(params, n->in[j])))
				return ds_error_set(err, DS_ERR_DATA, "unknown_tensor",
						    "graph: node '%s': input '%s': no such tensor",
						    n->name, n->in[j]);
			if ((rc = add_param(g, n->in[j], t, &n->in_val[j], err)))
				return rc;
		}
	}
	return 0;
}

static int parse_outputs(ds_graph *g, const json_t *arr, const ds_container *params,
			 ds_error *err)
{
	size_t i;
	const json_t *v;
	int rc;

	if (!json_is_array(arr) || json_array_size(arr) == 0)
		return bad(err, "graph: 'outputs' must be a non-empty array");
	g->n_outputs = json_array_size(arr);
	g->outputs = ds_calloc(g->n_outputs, sizeof *g->outputs, err);
	if (!g->outputs)
		return DS_ERR_NOMEM;
	json_array_foreach(arr, i, v) {
		const char *name = nonempty_string(v);
		const ds_tensor *t;

		if (!name)
			return ds_error_set(err, DS_ERR_DATA, "bad_graph",
					    "graph: outputs[%zu] must be a non-empty string", i);
		g->outputs[i] = map_get(&g->map, name);
		if (g->outputs[i] != NO_VALUE)
			continue;
		if (!params || !(t = ds_container_get(params, name)))
			return ds_error_set(err, DS_ERR_DATA, "unknown_tensor",
					    "graph: output '%s': no such tensor", name);
		if ((rc = add_param(g, name, t, &g->outputs[i], err)))
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------ order */

static void heap_push(size_t *heap, size_t *len, size_t x)
{
	size_t i = (*len)++;

	while (i > 0 && heap[(i - 1) / 2] > x) {
		heap[i] = heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	heap[i] = x;
}

static size_t heap_pop(size_t *heap, size_t *len)
{
	size_t top = heap[0], x = heap[--*len], i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= *len)
			break;
		if (c + 1 < *len && heap[c + 1] < heap[c])
			c++;
		if (heap[c] >= x)
			break;
		heap[i] = heap[c];
		i = c;
	}
	if (*len)
		heap[i] = x;
	return top;
}

/* The first input of node u whose producer is still unscheduled. */
static size_t blocked_input(const ds_graph *g, const size_t *indeg, size_t u)
{
	const ds_node *n = &g->nodes[u];
	size_t j;

	for (j = 0; j < n->n_in; j++) {
		const struct value *v = &g->values[n->in_val[j]];

		if (v->kind == VALUE_NODE && indeg[v->producer])
			break;
	}
	return j;
}

static size_t blocked_by(const ds_graph *g, const size_t *indeg, size_t u)
{
	return g->values[g->nodes[u].in_val[blocked_input(g, indeg, u)]].producer;
}

/* Some nodes are left with unscheduled producers.  Every one of them has
 * such a producer, so walking back along the first one must come round to a
 * node already seen, which lies on a cycle; the walk from there stays on it.
 * The message names the cycle's earliest node in file order, so it does not
 * depend on where the walk began. */
static int report_cycle(const ds_graph *g, const size_t *indeg, ds_error *err)
{
	unsigned char *seen = ds_calloc(g->n_nodes, 1, err);
	size_t u = 0, best;

	if (!seen)
		return DS_ERR_NOMEM;
	while (indeg[u] == 0)
		u++;
	while (!seen[u]) {
		seen[u] = 1;
		u = blocked_by(g, indeg, u);
	}
	best = u;
	for (size_t v = blocked_by(g, indeg, u); v != u; v = blocked_by(g, indeg, v))
		if (v < best)
			best = v;
	free(seen);
	return ds_error_set(err, DS_ERR_DATA, "cycle", "graph: node '%s': input '%s': forms a cycle",
			    g->nodes[best].name, g->nodes[best].in[blocked_input(g, indeg, best)]);
}

static int toposort(ds_graph *g, ds_error *err)
{
	size_t n = g->n_nodes, done = 0, ready = 0;
	size_t *indeg = NULL, *first = NULL, *edges = NULL, *heap = NULL, *order = NULL;
	ds_node *sorted = NULL;
	int rc = DS_ERR_NOMEM;

	indeg = ds_calloc(n, sizeof *indeg, err);
	first = ds_calloc(n + 1, sizeof *first, err);
	edges = ds_calloc(g->n_refs, sizeof *edges, err);
	heap = ds_calloc(n, sizeof *heap, err);
	order = ds_calloc(n, sizeof *order, err);
	sorted = ds_calloc(n, sizeof *sorted, err);
	if (!indeg || !first || !edges || !heap || !order || !sorted)
		goto out;
	/* Consumers of node p are edges[first[p] .. first[p + 1]). */
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < g->nodes[i].n_in; j++) {
			const struct value *v = &g->values[g->nodes[i].in_val[j]];

			if (v->kind == VALUE_NODE) {
				first[v->producer + 1]++;
				indeg[i]++;
			}
		}
	for (size_t p = 0; p < n; p++)
		first[p + 1] += first[p];
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < g->nodes[i].n_in; j++) {
			const struct value *v = &g->values[g->nodes[i].in_val[j]];

			if (v->kind == VALUE_NODE)
				edges[first[v->producer]++] = i;
		}
	/* first[p] now marks the end of p's edges; its start is first[p - 1]. */
	for (size_t i = 0; i < n; i++)
		if (!indeg[i])
			heap_push(heap, &ready, i);
	while (ready) {
		size_t p = heap_pop(heap, &ready);

		order[done++] = p;
		for (size_t e = p ? first[p - 1] : 0; e < first[p]; e++)
			if (--indeg[edges[e]] == 0)
				heap_push(heap, &ready, edges[e]);
	}
	if (done < n) {
		rc = report_cycle(g, indeg, err);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		sorted[i] = g->nodes[order[i]];
	for (size_t i = 0; i < g->n_values; i++)
		if (g->values[i].kind == VALUE_NODE)
			g->values[i].producer = NO_VALUE;
	free(g->nodes);
	g->nodes = sorted;
	sorted = NULL;
	rc = 0;
out:
	free(sorted);
	free(order);
	free(heap);
	free(edges);
	free(first);
	free(indeg);
	return rc;
}

/* -------------------------------------------------------------- inference */

static int infer_node(ds_graph *g, const ds_node *n, ds_error *err)
{
	ds_shape *in = g->scratch, *out = g->scratch + g->max_in;
	char buf[128];
	int rc;

	for (size_t j = 0; j < n->n_in; j++)
		in[j] = g->values[n->in_val[j]].shape;
	memset(out, 0, n->n_out * sizeof *out);
	rc = n->op->infer(n, in, (int)n->n_in, out, err);
	if (rc) {
		ds_error_set(err, rc, "shape_mismatch", "shape inference failed");
		ds_error_prefix(err, "graph: node '%s'", n->name);
		return rc;
	}
	for (size_t j = 0; j < n->n_out; j++) {
		int fits = out[j].ndim >= 0 && out[j].ndim <= DS_MAX_DIMS;

		for (int d = 0; fits && d < out[j].ndim; d++)
			fits = out[j].dim[d] >= 0 && out[j].dim[d] <= DS_OP_DIM_MAX;
		if (!fits || ds_op_numel(&out[j]) == INT64_MAX)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "graph: node '%s': output '%s': shape %s is too large", n->name,
					    n->out[j], fits ? ds_op_shape_text(&out[j], buf, sizeof buf) : "?");
		g->values[n->out_val[j]].shape = out[j];
	}
	return 0;
}

static int infer(ds_graph *g, int64_t batch, ds_error *err)
{
	char buf[128];
	int rc;

	for (size_t i = 0; i < g->n_inputs; i++) {
		struct value *v = &g->values[g->inputs[i]];

		v->shape = v->decl;
		if (v->shape.ndim > 0 && v->shape.dim[0] == -1)
			v->shape.dim[0] = batch;
		if (ds_op_numel(&v->shape) == INT64_MAX)
			return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
					    "graph: input '%s': shape %s is too large", v->name,
					    ds_op_shape_text(&v->shape, buf, sizeof buf));
	}
	for (size_t i = 0; i < g->n_nodes; i++)
		if ((rc = infer_node(g, &g->nodes[i], err)))
			return rc;
	return 0;
}

static int64_t count_flops(ds_graph *g)
{
	ds_shape *in = g->scratch, *out = g->scratch + g->max_in;
	int64_t total = 0;

	for (size_t i = 0; i < g->n_nodes; i++) {
		const ds_node *n = &g->nodes[i];

		if (!n->op->flops)
			return -1;
		for (size_t j = 0; j < n->n_in; j++)
			in[j] = g->values[n->in_val[j]].shape;
		for (size_t j = 0; j < n->n_out; j++)
			out[j] = g->values[n->out_val[j]].shape;
		total = ds_op_sat_add(total, n->op->flops(n, in, (int)n->n_in, out));
	}
	return total;
}

/* ------------------------------------------------------------------ parse */

static int parse(ds_graph *g, const char *json_text, const ds_container *params, ds_error *err)
{
	static const char *const keys[] = { "inputs", "nodes", "outputs", NULL };
	static const char *const required[] = { "inputs", "nodes", "outputs" };
	json_error_t jerr;
	const json_t *nodes;
	size_t n_values;
	int rc;

	if (!json_text)
		return bad(err, "graph: no graph text");
	g->doc = json_loads(json_text, JSON_REJECT_DUPLICATES, &jerr);
	if (!g->doc)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph",
				    "graph: invalid JSON at line %d column %d: %s", jerr.line,
				    jerr.column, jerr.text);
	if (!json_is_object(g->doc))
		return bad(err, "graph: expected a JSON object");
	if ((rc = check_keys(g->doc, keys, "top level", err)))
		return rc;
	for (size_t i = 0; i < DS_ARRAY_LEN(required); i++)
		if (!json_object_get(g->doc, required[i]))
			return bad(err, "graph: missing key '%s'", required[i]);
	nodes = json_object_get(g->doc, "nodes");
	if (!json_is_array(nodes))
		return bad(err, "graph: 'nodes' must be an array");
	/* Every array is sized from the document before anything is filled in,
	 * so nothing is reallocated and the value map never grows.  Values:
	 * inputs, node outputs, and at most one parameter per name a node or
	 * the graph's outputs read. */
	g->n_refs = count_refs(nodes);
	n_values = json_array_size(json_object_get(g->doc, "inputs")) + g->n_refs +
		   json_array_size(json_object_get(g->doc, "outputs"));
	g->refs = ds_calloc(g->n_refs, sizeof *g->refs, err);
	g->ref_vals = ds_calloc(g->n_refs, sizeof *g->ref_vals, err);
	g->values = ds_calloc(n_values, sizeof *g->values, err);
	if (!g->refs || !g->ref_vals || !g->values || map_init(&g->map, n_values, err))
		return DS_ERR_NOMEM;
	if ((rc = parse_inputs(g, json_object_get(g->doc, "inputs"), err)) ||
	    (rc = parse_nodes(g, nodes, err)) ||
	    (rc = resolve(g, params, err)) ||
	    (rc = parse_outputs(g, json_object_get(g->doc, "outputs"), params, err)) ||
	    (rc = toposort(g, err)))
		return rc;
	g->scratch = ds_calloc(g->max_in + g->max_out, sizeof *g->scratch, err);
	if (!g->scratch)
		return DS_ERR_NOMEM;
	if ((rc = infer(g, 1, err)))
		return rc;
	g->flops = count_flops(g);
	return 0;
}

int ds_graph_parse(const char *json_text, const ds_container *params, ds_graph **out, ds_error *err)
{
	ds_error e = { 0 };
	ds_graph *g = ds_calloc(1, sizeof *g, &e);
	int rc = g ? parse(g, json_text, params, &e) : DS_ERR_NOMEM;

	if (rc) {
		ds_graph_free(g);
		g = NULL;
		if (err && err->status == DS_OK)
			*err = e;
	}
	*out = g;
	return rc;
}

int ds_graph_from_model(const ds_container *model, ds_graph **out, ds_error *err)
{
	const char *text = model ? ds_container_meta_get(model, "ds.graph") : NULL;

	*out = NULL;
	if (!text)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "graph: no ds.graph metadata");
	return ds_graph_parse(text, model, out, err);
}

void ds_graph_free(ds_graph *g)
{
	if (!g)
		return;
	free(g->scratch);
	free(g->outputs);
	free(g->inputs);
	map_free(&g->map);
	free(g->values);
	free(g->ref_vals);
	free(g->refs);
	free(g->nodes);
	json_decref(g->doc);
	free(g);
}

int ds_graph_infer(ds_graph *g, int64_t batch, ds_error *err)
{
	ds_error e = { 0 };
	int rc;

	if (batch < 1 || batch > DS_OP_DIM_MAX)
		return ds_error_set(err, DS_ERR_USAGE, "bad_batch", "batch size %" PRId64 " is out of range",
				    batch);
	rc = infer(g, batch, &e);
	if (rc && err && err->status == DS_OK)
		*err = e;
	return rc;
}

/* ------------------------------------------------------------- accessors */

size_t ds_graph_node_count(const ds_graph *g)
{
	return g->n_nodes;
}

const ds_node *ds_graph_node(const ds_graph *g, size_t i)
{
	return i < g->n_nodes ? &g->nodes[i] : NULL;
}

size_t ds_graph_input_count(const ds_graph *g)
{
	return g->n_inputs;
}

const char *ds_graph_input_name(const ds_graph *g, size_t i)
{
	return i < g->n_inputs ? g->values[g->inputs[i]].name : NULL;
}

const ds_shape *ds_graph_input_shape(const ds_graph *g, size_t i)
{
	return i < g->n_inputs ? &g->values[g->inputs[i]].decl : NULL;
}

size_t ds_graph_output_count(const ds_graph *g)
{
	return g->n_outputs;
}

const char *ds_graph_output_name(const ds_graph *g, size_t i)
{
	return i < g->n_outputs ? g->values[g->outputs[i]].name : NULL;
}

const ds_shape *ds_graph_shape(const ds_graph *g, const char *value)
{
	size_t i = value ? map_get(&g->map, value) : NO_VALUE;

	return i == NO_VALUE ? NULL : &g->values[i].shape;
}

int64_t ds_graph_param_count(const ds_graph *g)
{
	return g->param_count;
}

int64_t ds_graph_flops(const ds_graph *g)
{
	return g->flops;
}

const char *ds_node_name(const ds_node *n)
{
	return n->name;
}

const char *ds_node_op(const ds_node *n)
{
	return n->op_name;
}

size_t ds_node_input_count(const ds_node *n)
{
	return n->n_in;
}

const char *ds_node_input(const ds_node *n, size_t i)
{
	return i < n->n_in ? n->in[i] : NULL;
}

size_t ds_node_output_count(const ds_node *n)
{
	return n->n_out;
}

const char *ds_node_output(const ds_node *n, size_t i)
{
	return i < n->n_out ? n->out[i] : NULL;
}

const json_t *ds_node_attrs(const ds_node *n)
{
	return n->attrs;
}

int64_t ds_node_attr_int(const ds_node *n, const char *name, int64_t fallback)
{
	const json_t *v = n->attrs ? json_object_get(n->attrs, name) : NULL;

	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_boolean(v))
		return json_is_true(v);
	if (json_is_real(v) && fabs(json_real_value(v)) < 9.2e18)
		return (int64_t)json_real_value(v);
	return fallback;
}

double ds_node_attr_float(const ds_node *n, const char *name, double fallback)
{
	const json_t *v = n->attrs ? json_object_get(n->attrs, name) : NULL;

	return json_is_number(v) ? json_number_value(v) : fallback;
}

/* A list fills min(length, n_vals) slots and returns its length; a scalar
 * fills every slot and returns n_vals; a value of another type, or a list
 * holding one, returns -1. */
int ds_node_attr_ints(const ds_node *n, const char *name, int64_t *vals, int n_vals)
{
	const json_t *v = n->attrs ? json_object_get(n->attrs, name) : NULL;
	size_t i;
	const json_t *x;

	if (!v)
		return 0;
	if (json_is_integer(v)) {
		for (int k = 0; k < n_vals; k++)
			vals[k] = json_integer_value(v);
		return n_vals;
	}
	if (!json_is_array(v) || json_array_size(v) > INT32_MAX)
		return -1;
	json_array_foreach(v, i, x) {
		if (!json_is_integer(x))
			return -1;
		if (i < (size_t)(n_vals > 0 ? n_vals : 0))
			vals[i] = json_integer_value(x);
	}
	return (int)json_array_size(v);
}
