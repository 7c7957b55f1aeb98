/* plan.c - a graph compiled for one batch size: a topological schedule, one
 * arena for every intermediate buffer (reused by lifetime), the kernel
 * arguments of every call built once, and for training the backward pass.
 *
 * The timeline: forward runs node k at step k, backward runs node k at step
 * 2n-1-k.  Every arena buffer is a closed interval of steps [first write,
 * last read]:
 * - a node output lives from its node to its last reader: a forward
 *   consumer, or a backward step that reads it (the consumer's
 *   backward_needs bit for that input, the producer's for its outputs);
 *   graph outputs, the loss and kept values live to the last step;
 * - the gradient of a node output lives from the first backward step that
 *   adds into it (its last consumer's) to its producer's backward step; it is
 *   zeroed when it starts, since backward kernels add;
 * - saved state lives from its node's forward to its backward;
 * - workspace lives one step.
 * Two buffers whose intervals share a step never share bytes.  Intervals are
 * packed greedily: largest first, each at the lowest 64-byte aligned offset
 * clear of every placed buffer it meets in time.
 *
 * Gradients: a value needs one when it depends on a trainable parameter and
 * the loss depends on it, neither through an input the op marks no_grad.
 * Trainable parameters are the F32 ones some op reads through an input that
 * takes a gradient (batchnorm's running statistics are not).  A node runs
 * backward ("active") when an output reaches the loss and an input takes a
 * gradient.  Parameter gradients are persistent tensors outside the arena,
 * accumulated across backward calls until ds_plan_zero_grad.
 *
 * Sparse tables: a parameter read only by embedding or embedding_bag nodes
 * marked "sparse": 1 (as the table, input 1) keeps a row list beside its
 * dense gradient.  Each such node's backward adds the distinct ids of its
 * batch to the list; zero_grad clears only those rows, clipping and the
 * optimizer (ds_plan_grad_rows) visit only them.  The gradient tensor stays
 * a correct dense gradient: it is zero outside the listed rows.
 *
 * Graph inputs have their own buffers, so a caller may fill them at any
 * time; parameters are the container's tensors themselves.
 */
#include "config.h"
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define NONE SIZE_MAX
#define ALIGN ((size_t)64)

enum vkind { V_INPUT, V_PARAM, V_NODE };

struct pvalue {
	const char *name;        /* borrowed from the graph */
	enum vkind kind;
	size_t producer;         /* V_NODE: node index */
	int out_index;           /* V_NODE: which output of the producer */
	size_t param;            /* V_PARAM: index in ds_plan.params */
	ds_shape shape;          /* at the current batch */
	int dep;                 /* depends on a trainable parameter */
	int reaches;             /* the loss depends on it */
	int has_grad;
	int keep;                /* graph output, loss or ds_plan_keep: lives to the end */
	size_t room;             /* V_INPUT: bytes of its buffer */
	ds_tensor *t;
	ds_tensor *g;            /* gradient: arena view or parameter gradient */
	size_t buf, gbuf;        /* arena buffers, or NONE */
};

struct pnode {
	const ds_node *node;
	const ds_op *op;
	size_t *in, *out;        /* value indices (slices of ds_plan.refs) */
	int n_in, n_out;
	int active;
	uint64_t stream;         /* random stream (dropout): from the node's name, so that
				  * rewrites that add or drop other nodes keep it */
	size_t sparse_param;     /* parameter whose rows this node's ids touch, or NONE */
	size_t saved_buf, fws_buf, bws_buf;
	size_t saved_bytes, ws_bytes;    /* at the planned batch */
	double fwd_s, bwd_s;     /* profile */
	int64_t fwd_calls, bwd_calls;
	ds_tensor **in_t, **out_t, **gin_t, **gout_t;
	ds_op_args fa, ba;
};

/* The rows of a sparse parameter's gradient that may be nonzero.  list has
 * room for every row, so accumulating backwards never outgrows it. */
struct rowset {
	int64_t n_rows, width;
	int64_t *list;           /* NULL for a dense parameter */
	size_t count;
	int sorted;              /* list is in ascending order */
	unsigned char *mark;     /* per row: in list */
};

struct buffer {
	size_t bytes;            /* rounded up to ALIGN */
	int64_t start, end;
	size_t offset;
};

/* Packing keys, sorted by value so that no comparator needs the plan. */
struct pack_key {
	size_t a;                /* bytes (order) or offset (meet) */
	int64_t b;               /* start (order) or bytes (meet) */
	size_t idx;
};

struct ds_plan {
	const ds_graph *graph;
	ds_device dev;
	int64_t batch, planned;
	int train;
	size_t loss;             /* value index, NONE for inference */
	float loss_scale;
	int forward_done, last_training;
	uint64_t last_step;

	struct pvalue *values;
	size_t n_values;
	struct pnode *nodes;
	size_t n_nodes;
	size_t *refs;            /* node input and output value indices */
	ds_tensor **slots;       /* node argument arrays */

	/* name -> value index, open addressing */
	const char **map_keys;
	size_t *map_vals;
	size_t map_cap;

	size_t *params;          /* value indices, in order of first use */
	size_t n_params;
	int *trainable;
	ds_tensor **grads;       /* per parameter; NULL entries when not trainable */
	struct rowset *rows;     /* per parameter */

	struct buffer *bufs;
	size_t n_bufs;
	struct pack_key *order;  /* packing scratch */
	struct pack_key *meet;
	size_t *zero_first;      /* per backward step s, [zero_first[s], zero_first[s+1]) */
	size_t *zero_list;       /* value indices whose gradient starts there */

	void *arena;
	ds_storage *arena_storage;
	size_t arena_bytes, naive_bytes;

	ds_shape *shapes;        /* set_batch scratch, one per value */
	ds_shape *sin, *sout;    /* one infer call */
	size_t max_in, max_out;
	struct chunked *chunk;   /* inference prefix run by chunks of items (lazy) */
	int profile;
};

struct chunked;
static void chunked_free(struct chunked *c);

/* ------------------------------------------------------------ name map */

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211u;
	return h;
}

static size_t map_slot(const ds_plan *p, const char *name)
{
	size_t i = (size_t)name_hash(name) & (p->map_cap - 1);

	while (p->map_keys[i] && strcmp(p->map_keys[i], name) != 0)
		i = (i + 1) & (p->map_cap - 1);
	return i;
}

static size_t map_get(const ds_plan *p, const char *name)
{
	size_t i = map_slot(p, name);

	return p->map_keys[i] ? p->map_vals[i] : NONE;
}

static size_t add_value(ds_plan *p, const char *name, enum vkind kind)
{
	size_t i = map_slot(p, name), v = p->n_values++;

	p->map_keys[i] = name;
	p->map_vals[i] = v;
	p->values[v].name = name;
	p->values[v].kind = kind;
	p->values[v].producer = NONE;
	p->values[v].param = NONE;
	p->values[v].buf = NONE;
	p->values[v].gbuf = NONE;
	return v;
}

/* ------------------------------------------------------------ helpers */

static int64_t bstep(const ds_plan *p, size_t k)
{
	return 2 * (int64_t)p->n_nodes - 1 - (int64_t)k;
}

static int64_t last_step(const ds_plan *p)
{
	return p->train ? 2 * (int64_t)p->n_nodes - 1 : (int64_t)p->n_nodes - 1;
}

static size_t round_up(size_t n)
{
	return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static size_t shape_bytes(const ds_shape *s)
{
	uint64_t b = 0;

	if (ds_shape_bytes(s->dtype, s->ndim, s->dim, &b) != 0 || b > SIZE_MAX / 2)
		return SIZE_MAX;
	return (size_t)b;
}

static size_t grad_bytes(const ds_shape *s)
{
	ds_shape f = *s;

	f.dtype = DS_F32;
	return shape_bytes(&f);
}

static size_t add_buffer(ds_plan *p, size_t bytes)
{
	p->bufs[p->n_bufs].bytes = round_up(bytes);
	return p->n_bufs++;
}

/* splitmix64: a different random stream per node and step. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The op's bit masks cover 32 inputs (no_grad) and 16 inputs and outputs
 * (backward_needs); inputs past them take gradients and are not read. */
static int takes_no_grad(const ds_op *op, int i)
{
	return i < 32 && (op->no_grad >> i) & 1u;
}

static int needs_in(const ds_op *op, int i)
{
	return i < 16 && (op->backward_needs & DS_NEEDS_IN(i));
}

static int needs_out(const ds_op *op, int j)
{
	return j < 16 && (op->backward_needs & DS_NEEDS_OUT(j));
}

static const char *backend_name(ds_backend b)
{
	return b == DS_BACKEND_CUDA ? "CUDA" : "CPU";
}

/* Shapes of every value at batch, into shapes[]: inputs from their declared
 * shapes, parameters as they are, node outputs through the ops' inference. */
static int infer_all(ds_plan *p, int64_t batch, ds_shape *shapes, ds_error *err)
{
	char buf[128];

	for (size_t v = 0; v < p->n_values; v++) {
		if (p->values[v].kind == V_NODE)
			continue;
		shapes[v] = p->values[v].shape;
		if (p->values[v].kind == V_INPUT) {
			for (size_t i = 0; i < ds_graph_input_count(p->graph); i++) {
				const ds_shape *decl = ds_graph_input_shape(p->graph, i);

				if (strcmp(ds_graph_input_name(p->graph, i), p->values[v].name) != 0)
					continue;
				shapes[v] = *decl;
				if (decl->ndim > 0 && decl->dim[0] == -1)
					shapes[v].dim[0] = batch;
			}
			if (shape_bytes(&shapes[v]) == SIZE_MAX)
				return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
						    "input '%s': shape %s is too large", p->values[v].name,
						    ds_shape_format(shapes[v].ndim, shapes[v].dim, buf, sizeof buf));
		}
	}
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];
		int rc;

		for (int i = 0; i < n->n_in; i++)
			p->sin[i] = shapes[n->in[i]];
		memset(p->sout, 0, p->max_out * sizeof *p->sout);
		rc = n->op->infer(n->node, p->sin, n->n_in, p->sout, err);
		if (rc) {
			ds_error_prefix(err, "node '%s'", ds_node_name(n->node));
			return rc;
		}
		for (int j = 0; j < n->n_out; j++) {
			shapes[n->out[j]] = p->sout[j];
			if (shape_bytes(&p->sout[j]) == SIZE_MAX)
				return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
						    "node '%s': output '%s' is too large",
						    ds_node_name(n->node), p->values[n->out[j]].name);
		}
	}
	return 0;
}

/* Bytes of saved state and workspace of node k with shapes[]. */
static void node_scratch(ds_plan *p, size_t k, const ds_shape *shapes, size_t *saved, size_t *ws)
{
	struct pnode *n = &p->nodes[k];

	for (int i = 0; i < n->n_in; i++)
		p->sin[i] = shapes[n->in[i]];
	for (int j = 0; j < n->n_out; j++)
		p->sout[j] = shapes[n->out[j]];
	*saved = n->op->saved ? n->op->saved(n->node, p->sin, n->n_in, p->sout) : 0;
	*ws = n->op->workspace ? n->op->workspace(n->node, p->sin, n->n_in, p->sout) : 0;
}

/* ------------------------------------------------------------ building */

/* Every value the graph names: inputs, node outputs, then parameters as
 * nodes and outputs read them. */
static int collect_values(ds_plan *p, ds_container *params, ds_error *err)
{
	const ds_graph *g = p->graph;
	size_t n_refs = 0, cap, r = 0;

	for (size_t k = 0; k < p->n_nodes; k++) {
		const ds_node *node = ds_graph_node(g, k);

		n_refs += ds_node_input_count(node) + ds_node_output_count(node);
	}
	cap = ds_graph_input_count(g) + n_refs + ds_graph_output_count(g);
	for (p->map_cap = 16; p->map_cap < 2 * cap; p->map_cap *= 2)
		;
	p->map_keys = ds_calloc(p->map_cap, sizeof *p->map_keys, err);
	p->map_vals = ds_calloc(p->map_cap, sizeof *p->map_vals, err);
	p->values = ds_calloc(cap, sizeof *p->values, err);
	p->nodes = ds_calloc(p->n_nodes, sizeof *p->nodes, err);
	p->refs = ds_calloc(n_refs, sizeof *p->refs, err);
	p->params = ds_calloc(cap, sizeof *p->params, err);
	if (!p->map_keys || !p->map_vals || !p->values || !p->nodes || !p->refs || !p->params)
		return DS_ERR_NOMEM;

	for (size_t i = 0; i < ds_graph_input_count(g); i++) {
		size_t v = add_value(p, ds_graph_input_name(g, i), V_INPUT);

		p->values[v].shape = *ds_graph_input_shape(g, i);
	}
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];

		n->node = ds_graph_node(g, k);
		n->stream = ds_hash_bytes(ds_node_name(n->node), strlen(ds_node_name(n->node))).lo;
		n->op = ds_op_find(ds_node_op(n->node));
		n->n_in = (int)ds_node_input_count(n->node);
		n->n_out = (int)ds_node_output_count(n->node);
		n->in = p->refs + r;
		r += (size_t)n->n_in;
		n->out = p->refs + r;
		r += (size_t)n->n_out;
		n->saved_buf = n->fws_buf = n->bws_buf = NONE;
		n->sparse_param = NONE;
		if (!n->op)
			return ds_error_set(err, DS_ERR_DATA, "unknown_op", "node '%s': unknown op '%s'",
					    ds_node_name(n->node), ds_node_op(n->node));
		if ((size_t)n->n_in > p->max_in)
			p->max_in = (size_t)n->n_in;
		if ((size_t)n->n_out > p->max_out)
			p->max_out = (size_t)n->n_out;
		for (int j = 0; j < n->n_out; j++) {
			size_t v = add_value(p, ds_node_output(n->node, (size_t)j), V_NODE);

			p->values[v].producer = k;
			p->values[v].out_index = j;
			n->out[j] = v;
		}
	}
	/* Parameters: any name no input or node produces. */
	for (size_t k = 0; k <= p->n_nodes; k++) {
		size_t count = k < p->n_nodes ? (size_t)p->nodes[k].n_in : ds_graph_output_count(g);

		for (size_t i = 0; i < count; i++) {
			const char *name = k < p->n_nodes ? ds_node_input(p->nodes[k].node, i)
							  : ds_graph_output_name(g, i);
			size_t v = map_get(p, name);
			const ds_shape *gs = ds_graph_shape(g, name);
			ds_tensor *t;

			if (v == NONE) {
				t = params ? ds_container_get(params, name) : NULL;
				if (!t)
					return ds_error_set(err, DS_ERR_DATA, "unknown_tensor",
							    "parameter '%s': not in the container", name);
				if (t->device.kind != p->dev.kind)
					return ds_error_set(err, DS_ERR_USAGE, "wrong_device",
							    "parameter '%s': not on the plan's device", name);
				if (gs && (gs->dtype != t->dtype || gs->ndim != t->ndim ||
					   memcmp(gs->dim, t->shape, (size_t)t->ndim * sizeof t->shape[0])))
					return ds_error_set(err, DS_ERR_DATA, "shape_mismatch",
							    "parameter '%s': differs from the graph's", name);
				v = add_value(p, name, V_PARAM);
				p->values[v].t = ds_tensor_ref(t);
				p->values[v].shape.dtype = t->dtype;
				p->values[v].shape.ndim = t->ndim;
				memcpy(p->values[v].shape.dim, t->shape, sizeof t->shape);
				p->values[v].param = p->n_params;
				p->params[p->n_params++] = v;
			}
			if (k < p->n_nodes)
				p->nodes[k].in[i] = v;
		}
	}
	p->shapes = ds_calloc(p->n_values, sizeof *p->shapes, err);
	p->sin = ds_calloc(p->max_in + 1, sizeof *p->sin, err);
	p->sout = ds_calloc(p->max_out + 1, sizeof *p->sout, err);
	p->trainable = ds_calloc(p->n_params + 1, sizeof *p->trainable, err);
	p->grads = ds_calloc(p->n_params + 1, sizeof *p->grads, err);
	p->rows = ds_calloc(p->n_params + 1, sizeof *p->rows, err);
	return p->shapes && p->sin && p->sout && p->trainable && p->grads && p->rows ? 0 : DS_ERR_NOMEM;
}

/* Which parameters train, which values take gradients, which nodes run
 * backward. */
static void mark_gradients(ds_plan *p)
{
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];

		for (int i = 0; i < n->n_in; i++) {
			struct pvalue *v = &p->values[n->in[i]];

			if (v->kind == V_PARAM && v->shape.dtype == DS_F32 && !takes_no_grad(n->op, i))
				p->trainable[v->param] = 1;
		}
	}
	for (size_t i = 0; i < p->n_params; i++)
		p->values[p->params[i]].dep = p->trainable[i];
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];
		int dep = 0;

		for (int i = 0; i < n->n_in; i++)
			dep |= p->values[n->in[i]].dep && !takes_no_grad(n->op, i);
		for (int j = 0; j < n->n_out; j++)
			p->values[n->out[j]].dep = dep && p->values[n->out[j]].shape.dtype == DS_F32;
	}
	if (!p->train)
		return;
	p->values[p->loss].reaches = 1;
	for (size_t k = p->n_nodes; k-- > 0;) {
		struct pnode *n = &p->nodes[k];
		int reaches = 0, takes = 0;

		for (int j = 0; j < n->n_out; j++)
			reaches |= p->values[n->out[j]].reaches;
		if (!reaches)
			continue;
		for (int i = 0; i < n->n_in; i++) {
			if (takes_no_grad(n->op, i))
				continue;
			p->values[n->in[i]].reaches = 1;
			takes |= p->values[n->in[i]].dep;
		}
		n->active = takes;
		for (int j = 0; j < n->n_out && takes; j++)
			p->values[n->out[j]].has_grad = p->values[n->out[j]].shape.dtype == DS_F32;
	}
	for (size_t i = 0; i < p->n_params; i++)
		p->values[p->params[i]].has_grad = p->trainable[i];
}

/* Only ops whose schema lists "sparse" accept it (the graph refuses other
 * attributes), and those are the table lookups: ids in input 0, table in
 * input 1 (ds-formats.5). */
static int sparse_reader(const struct pnode *n, int i)
{
	return i == 1 && ds_node_attr_int(n->node, "sparse", 0) != 0;
}

/* A trainable 2-d table is sparse when every node that takes a gradient
 * through it asks for sparse rows; one dense reader (a tied output layer)
 * keeps it dense. */
static void mark_sparse(ds_plan *p)
{
	for (size_t i = 0; i < p->n_params; i++) {
		const struct pvalue *pv = &p->values[p->params[i]];
		int sparse = 0, other = 0;

		if (!p->trainable[i] || pv->shape.ndim != 2)
			continue;
		for (size_t k = 0; k < p->n_nodes; k++) {
			const struct pnode *n = &p->nodes[k];

			for (int j = 0; j < n->n_in; j++) {
				if (n->in[j] != p->params[i] || takes_no_grad(n->op, j))
					continue;
				if (sparse_reader(n, j))
					sparse = 1;
				else
					other = 1;
			}
		}
		if (!sparse || other)
			continue;
		p->rows[i].n_rows = pv->shape.dim[0];
		p->rows[i].width = pv->shape.dim[1];
		for (size_t k = 0; k < p->n_nodes; k++)
			if (p->nodes[k].active && p->nodes[k].n_in > 1 && p->nodes[k].in[1] == p->params[i])
				p->nodes[k].sparse_param = i;
	}
}

static int check_kernels(ds_plan *p, ds_error *err)
{
	ds_backend b = p->dev.kind == DS_DEVICE_CUDA ? DS_BACKEND_CUDA : DS_BACKEND_CPU;

	for (size_t k = 0; k < p->n_nodes; k++) {
		const struct pnode *n = &p->nodes[k];

		if (!n->op->forward[b])
			return ds_error_set(err, DS_ERR_RUN, "no_kernel", "node '%s': op '%s' has no %s forward kernel",
					    ds_node_name(n->node), n->op->name, backend_name(b));
		if (n->active && !n->op->backward[b])
			return ds_error_set(err, DS_ERR_RUN, "no_kernel", "node '%s': op '%s' has no %s backward kernel",
					    ds_node_name(n->node), n->op->name, backend_name(b));
	}
	return 0;
}

/* Until the CUDA executor exists a CUDA plan fails here, naming the first op
 * without a CUDA kernel when there is one. */
static int check_cuda(const ds_graph *g, int train, ds_error *err)
{
	for (size_t k = 0; k < ds_graph_node_count(g); k++) {
		const ds_node *node = ds_graph_node(g, k);
		const ds_op *op = ds_op_find(ds_node_op(node));

		if (op && (!op->forward[DS_BACKEND_CUDA] || (train && !op->backward[DS_BACKEND_CUDA])))
			return ds_error_set(err, DS_ERR_RUN, "no_kernel",
					    "no CUDA kernels yet: node '%s': op '%s' runs on the CPU only",
					    ds_node_name(node), op->name);
	}
	return ds_error_set(err, DS_ERR_RUN, "no_kernel", "no CUDA kernels yet: plans run on the CPU only");
}

/* Buffers, sized at the planned batch; their intervals come in layout(). */
static int make_buffers(ds_plan *p, ds_error *err)
{
	size_t max_bufs = 3 * p->n_nodes + 2 * p->n_values + 1;

	p->bufs = ds_calloc(max_bufs, sizeof *p->bufs, err);
	p->order = ds_calloc(max_bufs, sizeof *p->order, err);
	p->meet = ds_calloc(max_bufs, sizeof *p->meet, err);
	p->zero_first = ds_calloc(p->n_nodes + 2, sizeof *p->zero_first, err);
	p->zero_list = ds_calloc(p->n_values + 1, sizeof *p->zero_list, err);
	if (!p->bufs || !p->order || !p->meet || !p->zero_first || !p->zero_list)
		return DS_ERR_NOMEM;
	for (size_t v = 0; v < p->n_values; v++) {
		struct pvalue *pv = &p->values[v];

		if (pv->kind != V_NODE)
			continue;
		pv->buf = add_buffer(p, shape_bytes(&pv->shape));
		if (pv->has_grad)
			pv->gbuf = add_buffer(p, grad_bytes(&pv->shape));
	}
	/* In inference, a flatten or reshape of an arena value is a view of
	 * its input's bytes: one buffer for both, and copy_forward copies
	 * nothing (a batch of cnn-small flattened 0.8 MB for 1% of its time).
	 * No kernel writes into its input, so the two never disagree. */
	for (size_t k = 0; k < p->n_nodes && !p->train; k++) {
		struct pnode *n = &p->nodes[k];
		struct pvalue *in = &p->values[n->in[0]], *out = &p->values[n->out[0]];

		if ((strcmp(n->op->name, "flatten") != 0 && strcmp(n->op->name, "reshape") != 0) ||
		    in->kind != V_NODE || shape_bytes(&in->shape) != shape_bytes(&out->shape))
			continue;
		p->bufs[out->buf].bytes = 0;
		out->buf = in->buf;
	}
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];

		node_scratch(p, k, p->shapes, &n->saved_bytes, &n->ws_bytes);
		if (n->saved_bytes)
			n->saved_buf = add_buffer(p, n->saved_bytes);
		if (n->ws_bytes) {
			n->fws_buf = add_buffer(p, n->ws_bytes);
			if (n->active)
				n->bws_buf = add_buffer(p, n->ws_bytes);
		}
	}
	p->naive_bytes = 0;
	for (size_t b = 0; b < p->n_bufs; b++)
		p->naive_bytes += p->bufs[b].bytes;
	return 0;
}

static void stretch(struct buffer *b, int64_t step)
{
	if (step < b->start)
		b->start = step;
	if (step > b->end)
		b->end = step;
}

static void intervals(ds_plan *p)
{
	int64_t n = (int64_t)p->n_nodes;

	for (size_t v = 0; v < p->n_values; v++)
		if (p->values[v].kind == V_NODE) {
			p->bufs[p->values[v].buf].start = INT64_MAX;
			p->bufs[p->values[v].buf].end = INT64_MIN;
		}
	for (size_t v = 0; v < p->n_values; v++) {
		struct pvalue *pv = &p->values[v];
		const struct pnode *prod;

		if (pv->kind != V_NODE)
			continue;
		prod = &p->nodes[pv->producer];
		/* Stretched, not set: a view shares its input's buffer. */
		stretch(&p->bufs[pv->buf], (int64_t)pv->producer);
		if (pv->keep)
			stretch(&p->bufs[pv->buf], last_step(p));
		if (prod->active && needs_out(prod->op, pv->out_index))
			stretch(&p->bufs[pv->buf], bstep(p, pv->producer));
		if (pv->gbuf != NONE)
			p->bufs[pv->gbuf].start = p->bufs[pv->gbuf].end = bstep(p, pv->producer);
	}
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *nd = &p->nodes[k];

		for (int i = 0; i < nd->n_in; i++) {
			struct pvalue *pv = &p->values[nd->in[i]];

			if (pv->kind != V_NODE)
				continue;
			stretch(&p->bufs[pv->buf], (int64_t)k);
			if (nd->active && needs_in(nd->op, i))
				stretch(&p->bufs[pv->buf], bstep(p, k));
			if (nd->active && pv->gbuf != NONE && !takes_no_grad(nd->op, i))
				stretch(&p->bufs[pv->gbuf], bstep(p, k));
		}
		if (nd->saved_buf != NONE) {
			p->bufs[nd->saved_buf].start = (int64_t)k;
			p->bufs[nd->saved_buf].end = nd->active ? bstep(p, k) : (int64_t)k;
		}
		if (nd->fws_buf != NONE) {
			p->bufs[nd->fws_buf].start = p->bufs[nd->fws_buf].end = (int64_t)k;
			if (nd->op->keeps_workspace) {
				/* Every step, forward and backward: shared with no one. */
				p->bufs[nd->fws_buf].start = 0;
				p->bufs[nd->fws_buf].end = 2 * (int64_t)p->n_nodes + 1;
			}
		}
		if (nd->bws_buf != NONE)
			p->bufs[nd->bws_buf].start = p->bufs[nd->bws_buf].end = bstep(p, k);
	}
	/* Gradients to zero (or, for the loss, to seed) at each backward step
	 * s (step n + s): zero_list[zero_first[s] .. zero_first[s + 1]). */
	memset(p->zero_first, 0, (p->n_nodes + 2) * sizeof *p->zero_first);
	for (size_t v = 0; v < p->n_values; v++)
		if (p->values[v].kind == V_NODE && p->values[v].gbuf != NONE)
			p->zero_first[p->bufs[p->values[v].gbuf].start - n + 1]++;
	for (size_t s = 1; s <= p->n_nodes; s++)
		p->zero_first[s] += p->zero_first[s - 1];
	/* Filling advances zero_first[s] to the start of step s + 1 ... */
	for (size_t v = 0; v < p->n_values; v++)
		if (p->values[v].kind == V_NODE && p->values[v].gbuf != NONE)
			p->zero_list[p->zero_first[p->bufs[p->values[v].gbuf].start - n]++] = v;
	/* ... so one shift up restores the starts. */
	memmove(p->zero_first + 1, p->zero_first, p->n_nodes * sizeof *p->zero_first);
	p->zero_first[0] = 0;
}

static int by_size(const void *x, const void *y)
{
	const struct pack_key *a = x, *b = y;

	if (a->a != b->a)
		return a->a > b->a ? -1 : 1;
	if (a->b != b->b)
		return a->b < b->b ? -1 : 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int by_offset(const void *x, const void *y)
{
	const struct pack_key *a = x, *b = y;

	return a->a < b->a ? -1 : a->a > b->a;
}

/* Largest first, each at the lowest offset clear of the placed buffers it
 * meets in time; returns the arena's size. */
static size_t pack(ds_plan *p)
{
	size_t n_order = 0, total = 0;

	for (size_t b = 0; b < p->n_bufs; b++) {
		p->bufs[b].offset = 0;
		if (p->bufs[b].bytes)
			p->order[n_order++] = (struct pack_key){ p->bufs[b].bytes, p->bufs[b].start, b };
	}
	qsort(p->order, n_order, sizeof *p->order, by_size);
	for (size_t o = 0; o < n_order; o++) {
		struct buffer *b = &p->bufs[p->order[o].idx];
		size_t n_meet = 0, offset = 0;

		for (size_t q = 0; q < o; q++) {
			const struct buffer *c = &p->bufs[p->order[q].idx];

			if (c->start <= b->end && b->start <= c->end)
				p->meet[n_meet++] = (struct pack_key){ c->offset, (int64_t)c->bytes, 0 };
		}
		qsort(p->meet, n_meet, sizeof *p->meet, by_offset);
		for (size_t q = 0; q < n_meet; q++) {
			size_t c_off = p->meet[q].a, c_end = c_off + (size_t)p->meet[q].b;

			if (offset + b->bytes <= c_off)
				break;
			if (c_end > offset)
				offset = c_end;
		}
		b->offset = offset;
		if (offset + b->bytes > total)
			total = offset + b->bytes;
	}
	return total;
}

static void *buf_ptr(const ds_plan *p, size_t b)
{
	return b == NONE ? NULL : (char *)p->arena + p->bufs[b].offset;
}

static void point_view(ds_plan *p, ds_tensor *t, size_t b)
{
	ds_storage_unref(t->storage);
	t->storage = ds_storage_ref(p->arena_storage);
	t->data = buf_ptr(p, b);
}

/* Intervals, offsets, the arena, and every view pointed into it. */
static int layout(ds_plan *p, ds_error *err)
{
	void *arena;
	ds_storage *storage;
	size_t bytes;

	intervals(p);
	bytes = pack(p);
	arena = ds_aligned_alloc(bytes ? bytes : ALIGN, err);
	if (!arena)
		return DS_ERR_NOMEM;
	memset(arena, 0, bytes ? bytes : ALIGN);
	storage = ds_storage_host(arena, bytes);
	if (!storage) {
		ds_aligned_free(arena);
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	}
	ds_storage_unref(p->arena_storage);
	p->arena_storage = storage;
	p->arena = arena;
	p->arena_bytes = bytes;
	for (size_t v = 0; v < p->n_values; v++) {
		struct pvalue *pv = &p->values[v];

		if (pv->kind != V_NODE)
			continue;
		point_view(p, pv->t, pv->buf);
		if (pv->gbuf != NONE)
			point_view(p, pv->g, pv->gbuf);
	}
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];

		n->fa.saved = n->ba.saved = buf_ptr(p, n->saved_buf);
		n->fa.workspace = buf_ptr(p, n->fws_buf);
		n->ba.workspace = buf_ptr(p, n->bws_buf);
	}
	p->forward_done = 0;
	return 0;
}

static int make_tensors(ds_plan *p, ds_error *err)
{
	size_t n_slots = 0, s = 0;

	for (size_t v = 0; v < p->n_values; v++) {
		struct pvalue *pv = &p->values[v];
		const ds_shape *sh = &pv->shape;

		if (pv->kind == V_INPUT) {
			pv->t = ds_tensor_new(sh->dtype, sh->ndim, sh->dim, p->dev, err);
			pv->room = shape_bytes(sh);
		}
		else if (pv->kind == V_NODE)
			pv->t = ds_tensor_view(sh->dtype, sh->ndim, sh->dim, NULL, p->dev, NULL, err);
		if (!pv->t)
			return DS_ERR_NOMEM;
		if (pv->kind == V_NODE && pv->has_grad &&
		    !(pv->g = ds_tensor_view(DS_F32, sh->ndim, sh->dim, NULL, p->dev, NULL, err)))
			return DS_ERR_NOMEM;
	}
	if (p->train)
		for (size_t i = 0; i < p->n_params; i++) {
			struct pvalue *pv = &p->values[p->params[i]];

			if (!p->trainable[i])
				continue;
			p->grads[i] = ds_tensor_new(DS_F32, pv->shape.ndim, pv->shape.dim, p->dev, err);
			if (!p->grads[i])
				return DS_ERR_NOMEM;
			pv->g = p->grads[i];
			if (p->rows[i].n_rows > 0 &&
			    (!(p->rows[i].list = ds_malloc((size_t)p->rows[i].n_rows * sizeof *p->rows[i].list, err)) ||
			     !(p->rows[i].mark = ds_calloc((size_t)p->rows[i].n_rows, 1, err))))
				return DS_ERR_NOMEM;
			p->rows[i].sorted = 1;
		}
	for (size_t k = 0; k < p->n_nodes; k++)
		n_slots += 2 * (size_t)(p->nodes[k].n_in + p->nodes[k].n_out);
	p->slots = ds_calloc(n_slots, sizeof *p->slots, err);
	if (!p->slots)
		return DS_ERR_NOMEM;
	for (size_t k = 0; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];

		n->in_t = p->slots + s;
		s += (size_t)n->n_in;
		n->gin_t = p->slots + s;
		s += (size_t)n->n_in;
		n->out_t = p->slots + s;
		s += (size_t)n->n_out;
		n->gout_t = p->slots + s;
		s += (size_t)n->n_out;
		for (int i = 0; i < n->n_in; i++) {
			const struct pvalue *pv = &p->values[n->in[i]];

			n->in_t[i] = pv->t;
			if (n->active && pv->has_grad && !takes_no_grad(n->op, i))
				n->gin_t[i] = pv->g;
		}
		for (int j = 0; j < n->n_out; j++) {
			n->out_t[j] = p->values[n->out[j]].t;
			n->gout_t[j] = p->values[n->out[j]].g;
		}
		n->fa = (ds_op_args){ .node = n->node, .in = n->in_t, .n_in = n->n_in, .out = n->out_t,
				      .n_out = n->n_out };
		n->ba = n->fa;
		n->ba.grad_out = n->gout_t;
		n->ba.grad_in = n->gin_t;
	}
	return 0;
}

static int plan_build(ds_plan *p, ds_container *params, const char *loss, ds_error *err)
{
	int rc;

	if ((rc = collect_values(p, params, err)) || (rc = infer_all(p, p->batch, p->shapes, err)))
		return rc;
	for (size_t v = 0; v < p->n_values; v++)
		p->values[v].shape = p->shapes[v];
	for (size_t i = 0; i < ds_graph_output_count(p->graph); i++)
		p->values[map_get(p, ds_graph_output_name(p->graph, i))].keep = 1;
	if (loss) {
		const struct pvalue *lv;

		p->loss = map_get(p, loss);
		if (p->loss == NONE)
			return ds_error_set(err, DS_ERR_DATA, "bad_loss", "loss '%s': no such value", loss);
		lv = &p->values[p->loss];
		if (lv->kind != V_NODE || lv->shape.dtype != DS_F32 || shape_bytes(&lv->shape) != sizeof(float))
			return ds_error_set(err, DS_ERR_DATA, "bad_loss",
					    "loss '%s': not a scalar F32 output of a node", loss);
		p->values[p->loss].keep = 1;
	}
	mark_gradients(p);
	if (p->train)
		mark_sparse(p);
	if ((rc = check_kernels(p, err)) || (rc = make_buffers(p, err)) || (rc = make_tensors(p, err)))
		return rc;
	return layout(p, err);
}

int ds_plan_new(const ds_graph *g, ds_container *params, int64_t batch, const char *loss, ds_device dev,
		ds_plan **out, ds_error *err)
{
	ds_plan *p;
	int rc;

	*out = NULL;
	if (batch < 1 || batch > ((int64_t)1 << 40))
		return ds_error_set(err, DS_ERR_USAGE, "bad_batch", "batch size %" PRId64 " is out of range", batch);
	if (dev.kind == DS_DEVICE_CUDA)
		return check_cuda(g, loss != NULL, err);
	p = ds_calloc(1, sizeof *p, err);
	if (!p)
		return DS_ERR_NOMEM;
	p->graph = g;
	p->dev = dev;
	p->batch = p->planned = batch;
	p->train = loss != NULL;
	p->loss = NONE;
	p->loss_scale = 1.0f;
	p->n_nodes = ds_graph_node_count(g);
	rc = plan_build(p, params, loss, err);
	if (rc) {
		ds_plan_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void ds_plan_free(ds_plan *p)
{
	if (!p)
		return;
	for (size_t v = 0; p->values && v < p->n_values; v++) {
		ds_tensor_unref(p->values[v].t);
		if (p->values[v].kind == V_NODE)
			ds_tensor_unref(p->values[v].g);
	}
	for (size_t i = 0; p->grads && i < p->n_params; i++)
		ds_tensor_unref(p->grads[i]);
	for (size_t i = 0; p->rows && i < p->n_params; i++) {
		free(p->rows[i].list);
		free(p->rows[i].mark);
	}
	free(p->rows);
	chunked_free(p->chunk);
	ds_storage_unref(p->arena_storage);
	free(p->slots);
	free(p->shapes);
	free(p->sin);
	free(p->sout);
	free(p->bufs);
	free(p->order);
	free(p->meet);
	free(p->zero_first);
	free(p->zero_list);
	free(p->trainable);
	free(p->grads);
	free(p->params);
	free(p->refs);
	free(p->nodes);
	free(p->values);
	free(p->map_keys);
	free(p->map_vals);
	free(p);
}

/* ------------------------------------------------------------ running */

int ds_plan_set_batch(ds_plan *p, int64_t batch, ds_error *err)
{
	int rc;

	if (batch < 1 || batch > p->planned)
		return ds_error_set(err, DS_ERR_USAGE, "bad_batch",
				    "batch size %" PRId64 " is outside 1..%" PRId64 " planned", batch, p->planned);
	if (batch == p->batch)
		return 0;
	if ((rc = infer_all(p, batch, p->shapes, err)))
		return rc;
	/* Buffers were sized at the planned batch; a smaller batch must fit. */
	for (size_t v = 0; v < p->n_values; v++) {
		const struct pvalue *pv = &p->values[v];
		size_t room = pv->kind == V_INPUT ? pv->room :
			      pv->kind == V_NODE ? p->bufs[pv->buf].bytes : SIZE_MAX;

		if (shape_bytes(&p->shapes[v]) > room || p->shapes[v].ndim != pv->shape.ndim)
			return ds_error_set(err, DS_ERR_USAGE, "bad_batch",
					    "value '%s' grows at batch %" PRId64, pv->name, batch);
	}
	for (size_t k = 0; k < p->n_nodes; k++) {
		const struct pnode *n = &p->nodes[k];
		size_t saved, ws;

		node_scratch(p, k, p->shapes, &saved, &ws);
		if (saved > n->saved_bytes || ws > n->ws_bytes)
			return ds_error_set(err, DS_ERR_USAGE, "bad_batch",
					    "node '%s': scratch grows at batch %" PRId64, ds_node_name(n->node), batch);
	}
	for (size_t v = 0; v < p->n_values; v++) {
		struct pvalue *pv = &p->values[v];

		if (pv->kind == V_PARAM)
			continue;
		pv->shape = p->shapes[v];
		memcpy(pv->t->shape, pv->shape.dim, sizeof pv->t->shape);
		if (pv->g)
			memcpy(pv->g->shape, pv->shape.dim, sizeof pv->g->shape);
	}
	p->batch = batch;
	p->forward_done = 0;
	return 0;
}

int64_t ds_plan_batch(const ds_plan *p)
{
	return p->batch;
}

ds_tensor *ds_plan_tensor(ds_plan *p, const char *value)
{
	size_t v = value ? map_get(p, value) : NONE;
	const struct pvalue *pv;

	if (v == NONE)
		return NULL;
	pv = &p->values[v];
	if (pv->kind == V_NODE && p->bufs[pv->buf].end < (int64_t)p->n_nodes - 1)
		return NULL;
	return pv->t;
}

int ds_plan_keep(ds_plan *p, const char *value, ds_error *err)
{
	size_t v = value ? map_get(p, value) : NONE;

	if (v == NONE)
		return ds_error_set(err, DS_ERR_USAGE, "unknown_value", "no value named '%s' in the graph",
				    value ? value : "(null)");
	if (p->values[v].keep || p->values[v].kind != V_NODE)
		return 0;
	p->values[v].keep = 1;
	return layout(p, err);
}

/* ------------------------------------------------------ chunked inference
 *
 * An inference batch runs node by node through buffers of the whole batch,
 * so every activation makes a round trip through memory: on the reference
 * CNN the ReLU and pool passes over conv1's 6.4 MB output took a third of a
 * batch of 64.  Instead, the leading nodes that treat items independently
 * run a few items at a time, each thread on its own share of the batch,
 * through private buffers that stay in its cache, and with no barrier
 * between nodes.  Only the values read after that prefix land in the arena
 * (at their items' rows).  The prefix ends at the first node that mixes
 * items (its shapes do not follow the batch), or that reads a parameter too
 * large to stream once per chunk (a big dense layer wants the whole batch
 * as one matrix). */

#define CHUNK_PARAM_MAX ((size_t)512 << 10)   /* bytes of one parameter */
/* Private activations a chunk: more than L2 holds, as the kernels gain more
 * from several images a call (conv_masked.c numbers positions through
 * them) than the chunk loses to L3.  At batch 64, 2 threads: resnet-s
 * (440 KB an item) 4,750 images/s in chunks of 512 KB, 5,450 of 2 MB,
 * 5,530 of 4 MB; mobilenet-s 11,850, 12,750, 13,100; the CNNs (37 KB an
 * item) the same. */
#define CHUNK_BYTES ((size_t)4 << 20)

struct chunk_thread {
	ds_tensor *t;            /* one view per value, indexed like p->values */
	ds_tensor **slots;
	ds_op_args *args;        /* per prefix node */
	void *mem;               /* private activations, workspaces, saved state */
	double *node_s;          /* per prefix node: seconds on this thread (profile) */
};

struct chunked {
	void *arena;             /* the layout it was made for (any batch fits) */
	size_t m;                /* prefix length; 0: run node by node */
	int64_t items;           /* items a chunk */
	int threads;
	size_t *vbytes;          /* per value: bytes of one item, 0 when not batched */
	size_t *voff;            /* per value: offset in private memory, NONE: arena rows */
	struct chunk_thread *th;
};

static void chunked_free(struct chunked *c)
{
	if (!c)
		return;
	for (int t = 0; c->th && t < c->threads; t++) {
		free(c->th[t].t);
		free(c->th[t].slots);
		free(c->th[t].args);
		free(c->th[t].node_s);
		ds_aligned_free(c->th[t].mem);
	}
	free(c->th);
	free(c->vbytes);
	free(c->voff);
	free(c);
}

/* Bytes of one item of a value whose first dim is the batch at two batch
 * sizes (and whose other dims do not move); 0 otherwise. */
static size_t item_bytes(const ds_shape *a, int64_t ba, const ds_shape *b, int64_t bb)
{
	if (a->ndim < 1 || a->ndim != b->ndim || a->dim[0] != ba || b->dim[0] != bb)
		return 0;
	for (int i = 1; i < a->ndim; i++)
		if (a->dim[i] != b->dim[i])
			return 0;
	return shape_bytes(a) / (size_t)ba;
}

static int chunk_prefix_node(const ds_plan *p, const struct pnode *n, const size_t *vbytes)
{
	for (int i = 0; i < n->n_in; i++) {
		const struct pvalue *pv = &p->values[n->in[i]];

		if (pv->kind == V_PARAM ? shape_bytes(&pv->shape) > CHUNK_PARAM_MAX : !vbytes[n->in[i]])
			return 0;
	}
	for (int j = 0; j < n->n_out; j++)
		if (!vbytes[n->out[j]])
			return 0;
	return 1;
}

/* Work out the prefix and give each thread its views and memory; c->m stays
 * 0 when chunking does not apply. */
static int chunked_build(ds_plan *p, struct chunked *c, ds_error *err)
{
	ds_shape *s1 = NULL, *s2 = NULL;
	size_t priv = 0, mem = 0, n_slots = 0;
	int rc = 0;

	c->vbytes = ds_calloc(p->n_values, sizeof *c->vbytes, err);
	c->voff = ds_calloc(p->n_values, sizeof *c->voff, err);
	s1 = ds_calloc(p->n_values, sizeof *s1, err);
	s2 = ds_calloc(p->n_values, sizeof *s2, err);
	if (!c->vbytes || !c->voff || !s1 || !s2) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	/* Batched values: the first dim follows the batch, the rest do not. */
	if ((rc = infer_all(p, p->batch + 1, s2, err)))
		goto out;
	for (size_t v = 0; v < p->n_values; v++)
		if (p->values[v].kind != V_PARAM)
			c->vbytes[v] = item_bytes(&p->values[v].shape, p->batch, &s2[v], p->batch + 1);
	while (c->m < p->n_nodes && chunk_prefix_node(p, &p->nodes[c->m], c->vbytes))
		c->m++;
	if (c->m < 2) {
		c->m = 0;
		goto out;
	}
	/* Values made in the prefix and read only there are private. */
	for (size_t v = 0; v < p->n_values; v++)
		c->voff[v] = NONE;
	for (size_t k = 0; k < c->m; k++)
		for (int j = 0; j < p->nodes[k].n_out; j++)
			c->voff[p->nodes[k].out[j]] = 0;
	for (size_t k = c->m; k < p->n_nodes; k++)
		for (int i = 0; i < p->nodes[k].n_in; i++)
			c->voff[p->nodes[k].in[i]] = NONE;
	/* A view read after the prefix (fc1 reading cnn-small's flatten)
	 * takes its input to the arena too: the same bytes, no copy. */
	for (size_t k = c->m; k-- > 0;) {
		const struct pnode *n = &p->nodes[k];

		if (n->n_in && n->n_out && p->values[n->in[0]].kind == V_NODE &&
		    p->values[n->in[0]].buf == p->values[n->out[0]].buf && c->voff[n->out[0]] == NONE)
			c->voff[n->in[0]] = NONE;
	}
	for (size_t v = 0; v < p->n_values; v++) {
		if (p->values[v].keep)
			c->voff[v] = NONE;
		if (c->voff[v] != NONE)
			priv += round_up(c->vbytes[v]);
	}
	c->items = priv ? (int64_t)(CHUNK_BYTES / priv) : p->planned;
	c->items = c->items < 1 ? 1 : c->items > p->planned ? p->planned : c->items;
	if ((rc = infer_all(p, c->items, s1, err)))
		goto out;
	/* Private memory: values at c->items, then each node's saved state and
	 * workspace at that batch. */
	for (size_t v = 0; v < p->n_values; v++)
		if (c->voff[v] != NONE) {
			c->voff[v] = mem;
			mem += round_up(c->vbytes[v] * (size_t)c->items);
		}
	for (size_t k = 0; k < c->m; k++)
		n_slots += (size_t)(p->nodes[k].n_in + p->nodes[k].n_out);
	c->th = ds_calloc((size_t)c->threads, sizeof *c->th, err);
	if (!c->th) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (int t = 0; t < c->threads; t++) {
		struct chunk_thread *th = &c->th[t];
		size_t at = mem, s = 0;

		th->t = ds_calloc(p->n_values, sizeof *th->t, err);
		th->slots = ds_calloc(n_slots, sizeof *th->slots, err);
		th->args = ds_calloc(c->m, sizeof *th->args, err);
		th->node_s = ds_calloc(c->m ? c->m : 1, sizeof *th->node_s, err);
		if (!th->t || !th->slots || !th->args || !th->node_s) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		for (size_t v = 0; v < p->n_values; v++)
			if (p->values[v].t)
				th->t[v] = *p->values[v].t;
		for (size_t k = 0; k < c->m; k++) {
			const struct pnode *n = &p->nodes[k];
			size_t saved = 0, ws = 0;

			for (int i = 0; i < n->n_in; i++)
				p->sin[i] = s1[n->in[i]];
			for (int j = 0; j < n->n_out; j++)
				p->sout[j] = s1[n->out[j]];
			if (n->op->saved)
				saved = n->op->saved(n->node, p->sin, n->n_in, p->sout);
			if (n->op->workspace)
				ws = n->op->workspace(n->node, p->sin, n->n_in, p->sout);
			th->args[k] = n->fa;
			th->args[k].in = th->slots + s;
			for (int i = 0; i < n->n_in; i++)
				th->slots[s++] = &th->t[n->in[i]];
			th->args[k].out = th->slots + s;
			for (int j = 0; j < n->n_out; j++)
				th->slots[s++] = &th->t[n->out[j]];
			/* Offsets for now; pointers once the memory exists. */
			th->args[k].saved = saved ? (void *)(uintptr_t)(at + 1) : NULL;
			at += round_up(saved);
			th->args[k].workspace = ws ? (void *)(uintptr_t)(at + 1) : NULL;
			at += round_up(ws);
		}
		th->mem = ds_aligned_alloc(at ? at : ALIGN, err);
		if (!th->mem) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		for (size_t k = 0; k < c->m; k++) {
			if (th->args[k].saved)
				th->args[k].saved = (char *)th->mem + ((uintptr_t)th->args[k].saved - 1);
			if (th->args[k].workspace)
				th->args[k].workspace = (char *)th->mem + ((uintptr_t)th->args[k].workspace - 1);
		}
	}
out:
	free(s1);
	free(s2);
	return rc;
}

/* The prefix over items [i0, i1) of the batch, c->items at a time, on the
 * calling thread's views. */
static int chunked_run(ds_plan *p, struct chunked *c, struct chunk_thread *th, int64_t i0,
		       int64_t i1, uint64_t step, ds_error *err)
{
	for (int64_t b0 = i0; b0 < i1; b0 += c->items) {
		int64_t bc = i1 - b0 < c->items ? i1 - b0 : c->items;

		for (size_t v = 0; v < p->n_values; v++) {
			if (!c->vbytes[v])
				continue;
			th->t[v].shape[0] = bc;
			th->t[v].data = c->voff[v] != NONE ? (char *)th->mem + c->voff[v]
							  : (char *)p->values[v].t->data + (size_t)b0 * c->vbytes[v];
		}
		for (size_t k = 0; k < c->m; k++) {
			double t0 = p->profile ? ds_seconds() : 0;
			int rc;

			th->args[k].training = 0;
			th->args[k].seed = mix(mix(step) ^ p->nodes[k].stream);
			if ((rc = p->nodes[k].op->forward[DS_BACKEND_CPU](&th->args[k], err))) {
				ds_error_prefix(err, "node '%s'", ds_node_name(p->nodes[k].node));
				return rc;
			}
			if (p->profile)
				th->node_s[k] += ds_seconds() - t0;
		}
	}
	return 0;
}

/* Run the chunked prefix when it applies; *done gets the nodes it ran. */
static int chunked_forward(ds_plan *p, int training, uint64_t step, size_t *done, ds_error *err)
{
	struct chunked *c = p->chunk;
	int threads = 1, rc = 0;

	*done = 0;
#ifdef _OPENMP
	threads = omp_get_max_threads() > 64 ? 64 : omp_get_max_threads();
	/* Nested teams would put more threads on the cores than there are. */
	if (omp_in_parallel() || omp_get_max_active_levels() > 1)
		return 0;
#endif
	if (p->train || training || p->dev.kind != DS_DEVICE_CPU || p->batch < 2 * threads)
		return 0;
	if (c && (c->arena != p->arena || c->threads != threads)) {
		chunked_free(c);
		p->chunk = c = NULL;
	}
	if (!c) {
		if (!(c = ds_calloc(1, sizeof *c, err)))
			return DS_ERR_NOMEM;
		c->arena = p->arena;
		c->threads = threads;
		if ((rc = chunked_build(p, c, err))) {
			chunked_free(c);
			return rc;
		}
		p->chunk = c;
	}
	if (!c->m)
		return 0;
	for (int t = 0; p->profile && t < threads; t++)
		memset(c->th[t].node_s, 0, c->m * sizeof *c->th[t].node_s);
#pragma omp parallel num_threads(threads) reduction(| : rc)
	{
		int t = 0, nt = 1;
		ds_error e = { 0 };

#ifdef _OPENMP
		t = omp_get_thread_num();
		nt = omp_get_num_threads();
#endif
		rc = chunked_run(p, c, &c->th[t], p->batch * t / nt, p->batch * (t + 1) / nt, step, &e);
		if (rc) {
#pragma omp critical(ds_plan_chunk_error)
			if (err && !err->status)
				*err = e;
		}
	}
	if (rc)
		return err && err->status ? err->status : DS_ERR_RUN;
	for (size_t k = 0; p->profile && k < c->m; k++) {
		double sum = 0;

		for (int t = 0; t < threads; t++)
			sum += c->th[t].node_s[k];
		p->nodes[k].fwd_s += sum / threads;
		p->nodes[k].fwd_calls++;
	}
	*done = c->m;
	return 0;
}

int ds_plan_forward(ds_plan *p, int training, uint64_t step, ds_error *err)
{
	ds_backend b = p->dev.kind == DS_DEVICE_CUDA ? DS_BACKEND_CUDA : DS_BACKEND_CPU;
	size_t first = 0;
	int rc0;

	if (training && !p->train)
		return ds_error_set(err, DS_ERR_USAGE, "not_training",
				    "an inference plan cannot run in training mode");
	p->forward_done = 0;
	if ((rc0 = chunked_forward(p, training, step, &first, err)))
		return rc0;
	for (size_t k = first; k < p->n_nodes; k++) {
		struct pnode *n = &p->nodes[k];
		double t0 = p->profile ? ds_seconds() : 0;
		int rc;

		n->fa.training = training;
		n->fa.seed = mix(mix(step) ^ n->stream);
		rc = n->op->forward[b](&n->fa, err);
		if (rc) {
			ds_error_prefix(err, "node '%s'", ds_node_name(n->node));
			return rc;
		}
		if (p->profile) {
			n->fwd_s += ds_seconds() - t0;
			n->fwd_calls++;
		}
	}
	p->forward_done = 1;
	p->last_training = training;
	p->last_step = step;
	return 0;
}

/* The distinct ids of a batch (padding below 0 skipped; the forward
 * checked the upper bound) join the row list (put in order by rows_sort). */
static void rows_add(struct rowset *r, const ds_tensor *ids)
{
	int64_t n = ds_tensor_numel(ids);

	if (ids->dtype == DS_I64) {
		const int64_t *id = ids->data;

		for (int64_t e = 0; e < n; e++)
			if (id[e] >= 0 && !r->mark[id[e]]) {
				r->mark[id[e]] = 1;
				r->list[r->count++] = id[e];
				r->sorted = 0;
			}
	} else {
		const int32_t *id = ids->data;

		for (int64_t e = 0; e < n; e++)
			if (id[e] >= 0 && !r->mark[id[e]]) {
				r->mark[id[e]] = 1;
				r->list[r->count++] = id[e];
				r->sorted = 0;
			}
	}
}

/* The list in ascending row order, read off the marks (a pass over one
 * byte per row, cheaper than sorting).  Walking a big table in address
 * order lets neighbouring rows share page-table walks: the lazy AdamW step
 * of text-bag ran faster so. */
static void rows_sort(struct rowset *r)
{
	int64_t n_words = r->n_rows / 8;
	size_t k = 0;

	if (r->sorted)
		return;
	for (int64_t w = 0; w < n_words; w++) {
		uint64_t word;

		memcpy(&word, r->mark + w * 8, sizeof word);
		if (word)
			for (int64_t row = w * 8; row < w * 8 + 8; row++)
				if (r->mark[row])
					r->list[k++] = row;
	}
	for (int64_t row = n_words * 8; row < r->n_rows; row++)
		if (r->mark[row])
			r->list[k++] = row;
	r->sorted = 1;
}

/* Bytes of gradients to zero at one step above which the threads share the
 * work: the zeroing was 5% of a training step of the reference CNN, done by
 * one thread while the others waited. */
#define ZERO_PAR_MIN ((size_t)1 << 20)

/* Zero (or, for the loss, seed) the gradients whose first use is backward
 * step s; each thread clears its own run of 64-byte lines of each. */
static void zero_grads(ds_plan *p, size_t s)
{
	size_t z0 = p->zero_first[s], z1 = p->zero_first[s + 1], total = 0;

	for (size_t z = z0; z < z1; z++) {
		const struct pvalue *pv = &p->values[p->zero_list[z]];

		if (p->zero_list[z] == p->loss)
			*(float *)pv->g->data = p->loss_scale;
		else
			total += ds_tensor_nbytes(pv->g);
	}
	if (!total)
		return;
	if (total < ZERO_PAR_MIN || p->dev.kind == DS_DEVICE_CUDA) {
		for (size_t z = z0; z < z1; z++)
			if (p->zero_list[z] != p->loss)
				memset(p->values[p->zero_list[z]].g->data, 0,
				       ds_tensor_nbytes(p->values[p->zero_list[z]].g));
		return;
	}
#pragma omp parallel
	{
		size_t t = 0, nt = 1;

#ifdef _OPENMP
		t = (size_t)omp_get_thread_num();
		nt = (size_t)omp_get_num_threads();
#endif
		for (size_t z = z0; z < z1; z++) {
			const struct pvalue *pv = &p->values[p->zero_list[z]];
			size_t bytes, lines, b0, b1;

			if (p->zero_list[z] == p->loss)
				continue;
			bytes = ds_tensor_nbytes(pv->g);
			lines = (bytes + 63) / 64;
			b0 = lines * t / nt * 64;
			b1 = lines * (t + 1) / nt * 64;
			if (b1 > bytes)
				b1 = bytes;
			if (b0 < b1)
				memset((char *)pv->g->data + b0, 0, b1 - b0);
		}
	}
}

int ds_plan_backward(ds_plan *p, ds_error *err)
{
	ds_backend b = p->dev.kind == DS_DEVICE_CUDA ? DS_BACKEND_CUDA : DS_BACKEND_CPU;

	if (!p->train)
		return ds_error_set(err, DS_ERR_USAGE, "not_training", "an inference plan has no backward pass");
	/* Backward overwrites activations it has finished with, so each
	 * backward needs its own forward. */
	if (!p->forward_done)
		return ds_error_set(err, DS_ERR_USAGE, "no_forward", "backward without a forward before it");
	p->forward_done = 0;
	for (size_t s = 0; s < p->n_nodes; s++) {
		size_t k = p->n_nodes - 1 - s;
		struct pnode *n = &p->nodes[k];
		double t0 = p->profile ? ds_seconds() : 0;
		int rc;

		zero_grads(p, s);
		if (!n->active)
			continue;
		n->ba.training = p->last_training;
		n->ba.seed = mix(mix(p->last_step) ^ n->stream);
		rc = n->op->backward[b](&n->ba, err);
		if (rc) {
			ds_error_prefix(err, "node '%s'", ds_node_name(n->node));
			return rc;
		}
		/* The gradient zeroing is the node's cost too: it is what
		 * the add-into contract of its kernels asks for. */
		if (p->profile) {
			n->bwd_s += ds_seconds() - t0;
			n->bwd_calls++;
		}
		if (n->sparse_param != NONE)
			rows_add(&p->rows[n->sparse_param], n->in_t[0]);
	}
	return 0;
}

void ds_plan_set_loss_scale(ds_plan *p, float scale)
{
	p->loss_scale = scale;
}

/* Below this many floats a loop runs on one thread. */
#define PAR_MIN 65536

static void rows_clear(struct rowset *r, float *g)
{
	int64_t count = (int64_t)r->count, w = r->width;

#pragma omp parallel for if (count * w > PAR_MIN)
	for (int64_t k = 0; k < count; k++) {
		memset(g + r->list[k] * w, 0, (size_t)w * sizeof *g);
		r->mark[r->list[k]] = 0;
	}
	r->count = 0;
	r->sorted = 1;
}

void ds_plan_zero_grad(ds_plan *p)
{
	for (size_t i = 0; i < p->n_params; i++) {
		struct rowset *r = &p->rows[i];

		if (!p->grads[i])
			continue;
		if (r->list)
			rows_clear(r, p->grads[i]->data);
		else
			memset(p->grads[i]->data, 0, ds_tensor_nbytes(p->grads[i]));
	}
}

int ds_plan_grad_rows(ds_plan *p, size_t i, ds_grad_rows *out)
{
	if (i >= p->n_params || !p->rows[i].list)
		return 0;
	rows_sort(&p->rows[i]);
	out->rows = p->rows[i].list;
	out->count = p->rows[i].count;
	out->width = p->rows[i].width;
	return 1;
}

size_t ds_plan_param_count(const ds_plan *p)
{
	return p->n_params;
}

const char *ds_plan_param_name(const ds_plan *p, size_t i)
{
	return i < p->n_params ? p->values[p->params[i]].name : NULL;
}

ds_tensor *ds_plan_param(ds_plan *p, size_t i)
{
	return i < p->n_params ? p->values[p->params[i]].t : NULL;
}

ds_tensor *ds_plan_grad(ds_plan *p, size_t i)
{
	return i < p->n_params ? p->grads[i] : NULL;
}

int ds_plan_param_trainable(const ds_plan *p, size_t i)
{
	return i < p->n_params ? p->trainable[i] : 0;
}

size_t ds_plan_arena_bytes(const ds_plan *p)
{
	return p->arena_bytes;
}

size_t ds_plan_arena_naive_bytes(const ds_plan *p)
{
	return p->naive_bytes;
}

/* Sum of squares in fixed chunks added in order, so the norm does not
 * depend on the thread count or timing (bit-identical resume needs that).
 * A sparse gradient is summed over its listed rows only (zero elsewhere),
 * chunked by rows in list order. */
#define NORM_CHUNKS 64

static double sum_squares(const float *d, const struct rowset *r, int64_t n)
{
	double part[NORM_CHUNKS], sum = 0.0;
	int64_t rows = r->list ? (int64_t)r->count : n, w = r->list ? r->width : 1;
	int64_t per = (rows + NORM_CHUNKS - 1) / NORM_CHUNKS;

#pragma omp parallel for if (rows * w > PAR_MIN)
	for (int c = 0; c < NORM_CHUNKS; c++) {
		double acc = 0.0;
		int64_t end = (c + 1) * per < rows ? (c + 1) * per : rows;

		for (int64_t k = c * per; k < end; k++) {
			const float *x = d + (r->list ? r->list[k] * w : k);

			for (int64_t e = 0; e < w; e++)
				acc += (double)x[e] * x[e];
		}
		part[c] = acc;
	}
	for (int c = 0; c < NORM_CHUNKS; c++)
		sum += part[c];
	return sum;
}

static void scale_grad(float *d, const struct rowset *r, int64_t n, float c)
{
	int64_t rows = (int64_t)r->count, w = r->width;

	if (r->list) {
#pragma omp parallel for if (rows * w > PAR_MIN)
		for (int64_t k = 0; k < rows; k++)
			for (int64_t e = 0; e < w; e++)
				d[r->list[k] * w + e] *= c;
		return;
	}
#pragma omp parallel for if (n > PAR_MIN)
	for (int64_t e = 0; e < n; e++)
		d[e] *= c;
}

double ds_plan_clip_grad_norm(ds_plan *p, double max_norm)
{
	double sum = 0.0, norm, coef;

	for (size_t i = 0; i < p->n_params; i++)
		if (p->rows[i].list)
			rows_sort(&p->rows[i]);
	for (size_t i = 0; i < p->n_params; i++)
		if (p->grads[i])
			sum += sum_squares(p->grads[i]->data, &p->rows[i], ds_tensor_numel(p->grads[i]));
	norm = sqrt(sum);
	if (max_norm <= 0.0 || !(norm > max_norm))
		return norm;
	/* As torch.nn.utils.clip_grad_norm_: the 1e-6 keeps a tiny norm finite. */
	coef = max_norm / (norm + 1e-6);
	if (coef >= 1.0)
		return norm;
	for (size_t i = 0; i < p->n_params; i++)
		if (p->grads[i])
			scale_grad(p->grads[i]->data, &p->rows[i], ds_tensor_numel(p->grads[i]), (float)coef);
	return norm;
}

/* ----------------------------------------------------------- profiling */

void ds_plan_profile(ds_plan *p, int on)
{
	p->profile = on != 0;
}

void ds_plan_profile_reset(ds_plan *p)
{
	for (size_t k = 0; k < p->n_nodes; k++) {
		p->nodes[k].fwd_s = p->nodes[k].bwd_s = 0;
		p->nodes[k].fwd_calls = p->nodes[k].bwd_calls = 0;
	}
}

size_t ds_plan_node_count(const ds_plan *p)
{
	return p->n_nodes;
}

void ds_plan_node_profile(ds_plan *p, size_t k, ds_node_profile *out)
{
	const struct pnode *n = &p->nodes[k];

	memset(out, 0, sizeof *out);
	out->name = ds_node_name(n->node);
	out->op = ds_node_op(n->node);
	out->forward_s = n->fwd_s;
	out->backward_s = n->bwd_s;
	out->forward_calls = n->fwd_calls;
	out->backward_calls = n->bwd_calls;
	if (n->op->flops) {
		for (int i = 0; i < n->n_in; i++)
			p->sin[i] = p->values[n->in[i]].shape;
		for (int j = 0; j < n->n_out; j++)
			p->sout[j] = p->values[n->out[j]].shape;
		out->flops = n->op->flops(n->node, p->sin, n->n_in, p->sout);
	}
}
