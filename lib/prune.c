/* prune.c - structured channel pruning: a smaller dense model, not masks.
 *
 * The analysis gives every value of the graph a channel map: for each
 * channel (dim 1) of the value, the "space" it comes from and its index
 * there.  A convolution or linear layer starts a new space (its output
 * channels); elementwise ops, batch norm, pooling and depthwise
 * convolutions pass their input's map on; flatten keeps it with a block of
 * H*W columns per channel; concat joins its inputs' maps; add and mul tie
 * the spaces of their inputs together (union-find), so that the channels of
 * a residual sum are pruned as one group.  Anything else is a barrier: the
 * spaces reaching it are frozen, and the report says why.
 *
 * Each unfrozen group then keeps its most important channels by the
 * criterion (summed over the group's producers), and every tensor that a
 * map indexes (weights along dim 0 or 1, biases, batch norm vectors) is cut
 * to the kept channels; depthwise convolutions get their new group count.
 * The graph keeps its nodes; only parameter shapes and groups change. */
#include "config.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "graph_edit.h"
#include "internal.h"

/* A set of channels that are kept or removed together with those of the
 * spaces it is united with. */
struct space {
	int64_t size;
	int parent;
	int frozen;
	char reason[200];
	int first, last;           /* produced by the first layer / feeds the last */
};

/* The channels of one value: entry j covers block elements of dim 1 and is
 * channel index[j] of space[j]. */
struct vmap {
	int64_t n, block;
	int *space;
	int64_t *index;
};

/* One tensor cut along an axis by the map of a value. */
struct edit {
	const char *param;
	int axis;
	int map;
};

/* A convolution or linear layer that starts a space. */
struct producer {
	const ds_node *node;
	int space;
	int in_map;
};

struct prune {
	const ds_prune_options *o;
	ds_container *model;
	ds_graph *g;
	json_t *graph;
	struct space *spaces;
	size_t n_spaces, cap_spaces;
	struct vmap *maps;
	size_t n_maps, cap_maps;
	json_t *map_of;            /* value name -> index into maps */
	struct edit *edits;
	size_t n_edits, cap_edits;
	struct producer *prods;
	size_t n_prods, cap_prods;
	struct depthwise { const ds_node *node; int map; } *dws;
	size_t n_dws, cap_dws;
	json_t *notes;
	uint8_t **keep;            /* per root space: 1 kept, NULL: all kept */
	ds_error *err;
};

static int nomem(ds_error *err)
{
	return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
}

/* Grow *arr (of elem bytes) to hold one more. */
static int grow(void **arr, size_t *cap, size_t n, size_t elem, ds_error *err)
{
	void *p;
	size_t nc;

	if (n < *cap)
		return 0;
	nc = *cap ? *cap * 2 : 16;
	if (!(p = realloc(*arr, nc * elem)))
		return nomem(err);
	memset((char *)p + *cap * elem, 0, (nc - *cap) * elem);
	*arr = p;
	*cap = nc;
	return 0;
}

static int note(struct prune *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int note(struct prune *p, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	ds_log_verbose(p->o->cli, "%s", line);
	if (json_array_append_new(p->notes, json_pack("{s:s}", "note", line)))
		return nomem(p->err);
	return 0;
}

/* ---------------------------------------------------------- spaces, maps */

static int find(struct prune *p, int s)
{
	while (p->spaces[s].parent != s)
		s = p->spaces[s].parent = p->spaces[p->spaces[s].parent].parent;
	return s;
}

static int new_space(struct prune *p, int64_t size, int *out)
{
	int rc;

	if ((rc = grow((void **)&p->spaces, &p->cap_spaces, p->n_spaces, sizeof *p->spaces, p->err)))
		return rc;
	p->spaces[p->n_spaces] = (struct space){ .size = size, .parent = (int)p->n_spaces };
	*out = (int)p->n_spaces++;
	return 0;
}

static void freeze_space(struct prune *p, int s, const char *reason)
{
	struct space *r = &p->spaces[find(p, s)];

	if (!r->frozen) {
		r->frozen = 1;
		snprintf(r->reason, sizeof r->reason, "%s", reason);
	}
}

static void unite(struct prune *p, int a, int b)
{
	int ra = find(p, a), rb = find(p, b);

	if (ra == rb)
		return;
	p->spaces[rb].parent = ra;
	if (p->spaces[rb].frozen && !p->spaces[ra].frozen) {
		p->spaces[ra].frozen = 1;
		memcpy(p->spaces[ra].reason, p->spaces[rb].reason, sizeof p->spaces[ra].reason);
	}
	p->spaces[ra].first |= p->spaces[rb].first;
	p->spaces[ra].last |= p->spaces[rb].last;
}

static int new_map(struct prune *p, int64_t n, int64_t block, int *out)
{
	struct vmap *m;
	int rc;

	if ((rc = grow((void **)&p->maps, &p->cap_maps, p->n_maps, sizeof *p->maps, p->err)))
		return rc;
	m = &p->maps[p->n_maps];
	m->n = n;
	m->block = block;
	m->space = calloc((size_t)(n ? n : 1), sizeof *m->space);
	m->index = calloc((size_t)(n ? n : 1), sizeof *m->index);
	if (!m->space || !m->index) {
		free(m->space);
		free(m->index);
		return nomem(p->err);
	}
	*out = (int)p->n_maps++;
	return 0;
}

/* A map over a fresh space of n channels, identity indices. */
static int fresh_map(struct prune *p, int64_t n, int *out)
{
	int s, rc;

	if ((rc = new_space(p, n, &s)) || (rc = new_map(p, n, 1, out)))
		return rc;
	for (int64_t j = 0; j < n; j++) {
		p->maps[*out].space[j] = s;
		p->maps[*out].index[j] = j;
	}
	return 0;
}

static int copy_map(struct prune *p, int from, int64_t block, int *out)
{
	int rc = new_map(p, p->maps[from].n, block, out);

	if (rc)
		return rc;
	memcpy(p->maps[*out].space, p->maps[from].space, (size_t)p->maps[from].n * sizeof(int));
	memcpy(p->maps[*out].index, p->maps[from].index, (size_t)p->maps[from].n * sizeof(int64_t));
	return 0;
}

static int map_of(struct prune *p, const char *value)
{
	json_t *v = json_object_get(p->map_of, value);

	return v ? (int)json_integer_value(v) : -1;
}

static int set_map(struct prune *p, const char *value, int m)
{
	if (json_object_set_new(p->map_of, value, json_integer(m)))
		return nomem(p->err);
	return 0;
}

static void freeze_map(struct prune *p, int m, const char *reason)
{
	if (m < 0)
		return;
	for (int64_t j = 0; j < p->maps[m].n; j++)
		freeze_space(p, p->maps[m].space[j], reason);
}

static int add_edit(struct prune *p, const char *param, int axis, int m)
{
	int rc;

	if ((rc = grow((void **)&p->edits, &p->cap_edits, p->n_edits, sizeof *p->edits, p->err)))
		return rc;
	p->edits[p->n_edits++] = (struct edit){ param, axis, m };
	return 0;
}

static const ds_tensor *param(const struct prune *p, const ds_node *n, size_t i)
{
	return i < ds_node_input_count(n) ? ds_container_get(p->model, ds_node_input(n, i)) : NULL;
}

/* -------------------------------------------------------------- analysis */

static int is_passthrough(const char *op)
{
	static const char *const ops[] = { "relu", "relu6", "leaky_relu", "gelu", "sigmoid", "tanh", "silu",
					   "hardswish", "dropout", "max_pool", "avg_pool", "global_avg_pool", NULL };

	for (const char *const *o = ops; *o; o++)
		if (!strcmp(*o, op))
			return 1;
	return 0;
}

/* Every input's channels stop here; the outputs start frozen spaces. */
static int barrier(struct prune *p, const ds_node *n, const char *why)
{
	char reason[200];
	int rc;

	snprintf(reason, sizeof reason, "%s", why);
	for (size_t i = 0; i < ds_node_input_count(n); i++)
		freeze_map(p, map_of(p, ds_node_input(n, i)), reason);
	for (size_t i = 0; i < ds_node_output_count(n); i++) {
		const ds_shape *s = ds_graph_shape(p->g, ds_node_output(n, i));
		int m;

		if (!s || s->ndim < 2)
			continue;
		if ((rc = fresh_map(p, s->dim[1], &m)) || (rc = set_map(p, ds_node_output(n, i), m)))
			return rc;
		freeze_map(p, m, reason);
	}
	return 0;
}

static int visit_conv(struct prune *p, const ds_node *n, int in)
{
	const ds_tensor *w = param(p, n, 1), *b = param(p, n, 2);
	const ds_shape *xs = ds_graph_shape(p->g, ds_node_input(n, 0));
	int64_t groups = ds_node_attr_int(n, "groups", 1);
	char why[200];
	int m, rc;

	if (in < 0 || !w || w->ndim != 4 || !xs || xs->ndim != 4 || p->maps[in].block != 1 ||
	    p->maps[in].n != xs->dim[1] || (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) ||
	    (ds_node_input_count(n) > 2 && !b)) {
		snprintf(why, sizeof why, "conv2d '%s' has inputs the analysis does not follow", ds_node_name(n));
		return barrier(p, n, why);
	}
	if (ds_node_input_count(n) > 3) {
		/* A fused residual ties the output's channels to another tensor's. */
		snprintf(why, sizeof why, "conv2d '%s' adds a fused residual", ds_node_name(n));
		return barrier(p, n, why);
	}
	if (groups == 1) {
		if ((rc = fresh_map(p, w->shape[0], &m)) || (rc = set_map(p, ds_node_output(n, 0), m)) ||
		    (rc = add_edit(p, ds_node_input(n, 1), 0, m)) || (rc = add_edit(p, ds_node_input(n, 1), 1, in)) ||
		    (b && (rc = add_edit(p, ds_node_input(n, 2), 0, m))) ||
		    (rc = grow((void **)&p->prods, &p->cap_prods, p->n_prods, sizeof *p->prods, p->err)))
			return rc;
		p->prods[p->n_prods++] = (struct producer){ n, p->maps[m].space[0], in };
		return 0;
	}
	if (groups == xs->dim[1] && w->shape[0] == groups && w->shape[1] == 1) {
		/* Depthwise: channel c in, channel c out. */
		if ((rc = copy_map(p, in, 1, &m)) || (rc = set_map(p, ds_node_output(n, 0), m)) ||
		    (rc = add_edit(p, ds_node_input(n, 1), 0, in)) || (b && (rc = add_edit(p, ds_node_input(n, 2), 0, in))) ||
		    (rc = grow((void **)&p->dws, &p->cap_dws, p->n_dws, sizeof *p->dws, p->err)))
			return rc;
		p->dws[p->n_dws].node = n;
		p->dws[p->n_dws++].map = in;
		return 0;
	}
	snprintf(why, sizeof why, "grouped conv2d '%s' (groups %" PRId64 ")", ds_node_name(n), groups);
	return barrier(p, n, why);
}

static int visit_linear(struct prune *p, const ds_node *n, int in)
{
	const ds_tensor *w = param(p, n, 1), *b = param(p, n, 2);
	const ds_shape *xs = ds_graph_shape(p->g, ds_node_input(n, 0));
	char why[200];
	int m, rc;

	if (in < 0 || !w || w->ndim != 2 || !xs || xs->ndim != 2 ||
	    p->maps[in].n * p->maps[in].block != w->shape[1] || (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) ||
	    (ds_node_input_count(n) > 2 && !b)) {
		snprintf(why, sizeof why, "linear '%s' has inputs the analysis does not follow", ds_node_name(n));
		return barrier(p, n, why);
	}
	if (ds_node_input_count(n) > 3) {
		/* A fused residual ties the output's channels to another tensor's. */
		snprintf(why, sizeof why, "linear '%s' adds a fused residual", ds_node_name(n));
		return barrier(p, n, why);
	}
	if ((rc = fresh_map(p, w->shape[0], &m)) || (rc = set_map(p, ds_node_output(n, 0), m)) ||
	    (rc = add_edit(p, ds_node_input(n, 1), 0, m)) || (rc = add_edit(p, ds_node_input(n, 1), 1, in)) ||
	    (b && (rc = add_edit(p, ds_node_input(n, 2), 0, m))) ||
	    (rc = grow((void **)&p->prods, &p->cap_prods, p->n_prods, sizeof *p->prods, p->err)))
		return rc;
	p->prods[p->n_prods++] = (struct producer){ n, p->maps[m].space[0], in };
	return 0;
}

static int visit_batchnorm(struct prune *p, const ds_node *n, int in)
{
	char why[200];
	int rc;

	for (size_t i = 1; in >= 0 && i < 5; i++) {
		const ds_tensor *t = param(p, n, i);

		if (!t || ds_tensor_numel(t) != p->maps[in].n || p->maps[in].block != 1)
			in = -1;
	}
	if (in < 0) {
		snprintf(why, sizeof why, "batchnorm '%s' has inputs the analysis does not follow", ds_node_name(n));
		return barrier(p, n, why);
	}
	for (size_t i = 1; i < 5; i++)
		if ((rc = add_edit(p, ds_node_input(n, i), 0, in)))
			return rc;
	return set_map(p, ds_node_output(n, 0), in);
}

/* add and mul of two values with the same channels tie them pairwise. */
static int visit_tie(struct prune *p, const ds_node *n)
{
	int a = map_of(p, ds_node_input(n, 0)), b = map_of(p, ds_node_input(n, 1));
	const ds_shape *sa = ds_graph_shape(p->g, ds_node_input(n, 0)), *sb = ds_graph_shape(p->g, ds_node_input(n, 1));
	int ok = a >= 0 && b >= 0 && sa && sb && sa->ndim == sb->ndim && p->maps[a].n == p->maps[b].n &&
		 p->maps[a].block == p->maps[b].block;
	char why[200];

	for (int64_t j = 0; ok && j < p->maps[a].n; j++)
		ok = p->maps[a].index[j] == p->maps[b].index[j] &&
		     p->spaces[p->maps[a].space[j]].size == p->spaces[p->maps[b].space[j]].size;
	if (!ok) {
		snprintf(why, sizeof why, "%s '%s' combines channels the analysis does not follow", ds_node_op(n),
			 ds_node_name(n));
		return barrier(p, n, why);
	}
	for (int64_t j = 0; j < p->maps[a].n; j++)
		unite(p, p->maps[a].space[j], p->maps[b].space[j]);
	return set_map(p, ds_node_output(n, 0), a);
}

static int visit_concat(struct prune *p, const ds_node *n)
{
	const ds_shape *os = ds_graph_shape(p->g, ds_node_output(n, 0));
	int64_t axis = ds_node_attr_int(n, "axis", 1), total = 0, block = -1;
	int ok = os != NULL, m, rc;
	char why[200];

	if (ok && axis < 0)
		axis += os->ndim;
	ok = ok && axis == 1;
	for (size_t i = 0; ok && i < ds_node_input_count(n); i++) {
		int in = map_of(p, ds_node_input(n, i));

		ok = in >= 0 && (block < 0 || p->maps[in].block == block);
		if (ok) {
			block = p->maps[in].block;
			total += p->maps[in].n;
		}
	}
	if (!ok) {
		snprintf(why, sizeof why, "concat '%s' is not along the channels", ds_node_name(n));
		return barrier(p, n, why);
	}
	if ((rc = new_map(p, total, block, &m)))
		return rc;
	total = 0;
	for (size_t i = 0; i < ds_node_input_count(n); i++) {
		const struct vmap *in = &p->maps[map_of(p, ds_node_input(n, i))];

		memcpy(p->maps[m].space + total, in->space, (size_t)in->n * sizeof(int));
		memcpy(p->maps[m].index + total, in->index, (size_t)in->n * sizeof(int64_t));
		total += in->n;
	}
	return set_map(p, ds_node_output(n, 0), m);
}

static int visit_flatten(struct prune *p, const ds_node *n, int in)
{
	const ds_shape *xs = ds_graph_shape(p->g, ds_node_input(n, 0));
	int64_t axis = ds_node_attr_int(n, "axis", 1), block = 1;
	char why[200];
	int m, rc;

	if (in < 0 || !xs || axis != 1) {
		snprintf(why, sizeof why, "flatten '%s' is not from axis 1", ds_node_name(n));
		return barrier(p, n, why);
	}
	for (int d = 2; d < xs->ndim; d++)
		block *= xs->dim[d];
	if ((rc = copy_map(p, in, p->maps[in].block * block, &m)))
		return rc;
	return set_map(p, ds_node_output(n, 0), m);
}

static int analyse(struct prune *p)
{
	int rc;

	for (size_t i = 0; i < ds_graph_input_count(p->g); i++) {
		const char *name = ds_graph_input_name(p->g, i);
		const ds_shape *s = ds_graph_shape(p->g, name);
		int m;

		if (!s || s->ndim < 2)
			continue;
		if ((rc = fresh_map(p, s->dim[1], &m)) || (rc = set_map(p, name, m)))
			return rc;
		freeze_map(p, m, "graph input");
	}
	for (size_t i = 0; i < ds_graph_node_count(p->g); i++) {
		const ds_node *n = ds_graph_node(p->g, i);
		const char *op = ds_node_op(n);
		int in = ds_node_input_count(n) ? map_of(p, ds_node_input(n, 0)) : -1;
		char why[200];

		if (!strcmp(op, "conv2d"))
			rc = visit_conv(p, n, in);
		else if (!strcmp(op, "linear"))
			rc = visit_linear(p, n, in);
		else if (!strcmp(op, "batchnorm"))
			rc = visit_batchnorm(p, n, in);
		else if (is_passthrough(op))
			rc = in >= 0 ? set_map(p, ds_node_output(n, 0), in) : 0;
		else if (!strcmp(op, "add") || !strcmp(op, "mul"))
			rc = visit_tie(p, n);
		else if (!strcmp(op, "concat"))
			rc = visit_concat(p, n);
		else if (!strcmp(op, "flatten"))
			rc = visit_flatten(p, n, in);
		else {
			int mapped = 0;

			for (size_t j = 0; j < ds_node_input_count(n); j++)
				mapped |= map_of(p, ds_node_input(n, j)) >= 0;
			snprintf(why, sizeof why, "%s '%s' is not understood by the pruning analysis", op, ds_node_name(n));
			if (mapped) {
				if (!ds_op_find(op) || !strcmp(op, "reshape"))
					ds_log_warn(p->o->cli, "%s: the channels reaching it are left unpruned", why);
				if ((rc = note(p, "%s: the channels reaching it are left unpruned", why)))
					return rc;
			}
			rc = barrier(p, n, why);
		}
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < ds_graph_output_count(p->g); i++)
		freeze_map(p, map_of(p, ds_graph_output_name(p->g, i)), "graph output");
	/* A tensor cut by two different maps (weights shared between nodes)
	 * would need both cuts to agree: keep those channels instead. */
	for (size_t i = 0; i < p->n_edits; i++)
		for (size_t j = i + 1; j < p->n_edits; j++)
			if (!strcmp(p->edits[i].param, p->edits[j].param) && p->edits[i].axis == p->edits[j].axis &&
			    p->edits[i].map != p->edits[j].map) {
				char why[200];

				snprintf(why, sizeof why, "parameter '%s' is shared", p->edits[i].param);
				freeze_map(p, p->edits[i].map, why);
				freeze_map(p, p->edits[j].map, why);
			}
	/* First layers read a graph input; last layers feed a graph output. */
	for (size_t i = 0; i < p->n_prods; i++) {
		const struct vmap *in = &p->maps[p->prods[i].in_map];
		int reads_input = 0;

		for (size_t k = 0; k < ds_graph_input_count(p->g); k++)
			reads_input |= map_of(p, ds_graph_input_name(p->g, k)) >= 0 && in->n &&
				       in->space[0] == p->maps[map_of(p, ds_graph_input_name(p->g, k))].space[0];
		if (reads_input)
			p->spaces[find(p, p->prods[i].space)].first = 1;
		for (size_t k = 0; k < ds_graph_output_count(p->g); k++) {
			int om = map_of(p, ds_graph_output_name(p->g, k));

			if (om >= 0 && p->maps[om].n && find(p, p->maps[om].space[0]) == find(p, p->prods[i].space))
				for (int64_t j = 0; j < in->n; j++)
					p->spaces[find(p, in->space[j])].last = 1;
		}
	}
	for (size_t s = 0; s < p->n_spaces; s++) {
		struct space *r = &p->spaces[find(p, (int)s)];

		if (r->first && !p->o->prune_first)
			freeze_space(p, (int)s, "first layer (--prune-first prunes it)");
		if (r->last && !p->o->prune_last)
			freeze_space(p, (int)s, "feeds the last layer (--prune-last prunes it)");
	}
	return 0;
}

/* ------------------------------------------------------------- criteria */

static const ds_node *batchnorm_after(const struct prune *p, const ds_node *prod)
{
	const char *out = ds_node_output(prod, 0);

	for (size_t i = 0; i < ds_graph_node_count(p->g); i++) {
		const ds_node *n = ds_graph_node(p->g, i);

		if (!strcmp(ds_node_op(n), "batchnorm") && !strcmp(ds_node_input(n, 0), out))
			return n;
	}
	return NULL;
}

/* Add the criterion of producer k into scores (one per output channel);
 * *used is 0 when the criterion says nothing about this producer. */
static void score_static(const struct prune *p, const struct producer *pr, double *scores, int *used)
{
	const ds_tensor *w = param(p, pr->node, 1);
	int64_t outc = w->shape[0], per = ds_tensor_numel(w) / outc;

	*used = 0;
	if (!strcmp(p->o->criterion, "bn-gamma")) {
		const ds_node *bn = batchnorm_after(p, pr->node);
		const ds_tensor *gamma = bn ? param(p, bn, 1) : NULL;

		if (!gamma || gamma->dtype != DS_F32 || ds_tensor_numel(gamma) != outc)
			return;
		for (int64_t o = 0; o < outc; o++)
			scores[o] += fabs(((const float *)gamma->data)[o]);
	} else {
		for (int64_t o = 0; o < outc; o++) {
			const float *f = (const float *)w->data + o * per;
			double sum = 0;

			for (int64_t k = 0; k < per; k++)
				sum += fabs(f[k]);
			scores[o] += sum;
		}
	}
	*used = 1;
}

#define TAYLOR_LOSS "ds.prune.loss"
#define TAYLOR_LABELS "ds.prune.labels"

/* First-order Taylor importance |a * dL/da| per channel, as the gradient
 * of a per-channel scale s = 1 inserted after each producer: dL/ds_c is
 * the sum over the batch and the positions of a * dL/da, exactly the
 * product the criterion needs, and the plan gives gradients of parameters
 * only.  Its absolute value is averaged over the batches (Molchanov et al.
 * 2019 score minibatch gradients of a scale the same way).  The model runs
 * in inference mode (running statistics, no dropout) so that the scores
 * describe the network that will be pruned. */
static int score_taylor(struct prune *p, double **scores)
{
	json_t *graph = json_deep_copy(p->graph);
	ds_container *params = ds_container_new();
	ds_dataset *data = NULL;
	ds_loader *loader = NULL;
	ds_graph *g = NULL;
	ds_plan *plan = NULL;
	size_t *slot = calloc(p->n_prods ? p->n_prods : 1, sizeof *slot);
	char **scale = calloc(p->n_prods ? p->n_prods : 1, sizeof *scale);
	const char *input = ds_graph_input_name(p->g, 0);
	int64_t batches = 0, seen = 0, classes, limit = p->o->data_count > 0 ? p->o->data_count : INT64_MAX;
	ds_loader_options lo = { .batch = p->o->batch > 0 ? p->o->batch : 32, .seed = 1 };
	const ds_shape *xs;
	size_t item_bytes = 4;
	char *text = NULL;
	int rc = 0;

	if (!graph || !params || !slot || !scale) {
		rc = nomem(p->err);
		goto out;
	}
	if (!p->o->data) {
		rc = ds_error_set(p->err, DS_ERR_USAGE, "usage", "the taylor criterion needs --data FILE");
		goto out;
	}
	for (size_t i = 0; i < ds_container_count(p->model); i++)
		if ((rc = ds_container_add(params, ds_container_name(p->model, i), ds_container_tensor(p->model, i), p->err)))
			goto out;
	for (size_t k = 0; k < p->n_prods; k++) {
		const ds_node *n = p->prods[k].node;
		const ds_shape *os = ds_graph_shape(p->g, ds_node_output(n, 0));
		int64_t shape[3] = { os->dim[1], 1, 1 };
		char base[300], raw[300];
		ds_tensor *t;

		if (p->spaces[find(p, p->prods[k].space)].frozen)
			continue;
		snprintf(base, sizeof base, "ds.prune.scale.%s", ds_node_name(n));
		if (!(scale[k] = ds_edit_unique_name(graph, params, base, p->err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		snprintf(raw, sizeof raw, "%s.ds.prune.raw", ds_node_output(n, 0));
		if (!(t = ds_tensor_new(DS_F32, os->ndim == 4 ? 3 : 1, shape, DS_CPU, p->err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		for (int64_t c = 0; c < shape[0]; c++)
			((float *)t->data)[c] = 1.0f;
		rc = ds_container_add(params, scale[k], t, p->err);
		ds_tensor_unref(t);
		if (rc)
			goto out;
		for (size_t i = 0; i < ds_edit_node_count(graph); i++) {
			json_t *node = ds_edit_node(graph, i);

			if (strcmp(ds_edit_node_name(node), ds_node_name(n)) != 0)
				continue;
			json_array_set_new(json_object_get(node, "outputs"), 0, json_string(raw));
			if (json_array_insert_new(json_object_get(graph, "nodes"), i + 1,
						  json_pack("{s:s, s:s, s:[s, s], s:[s]}", "op", "mul", "name", scale[k],
							    "inputs", raw, scale[k], "outputs", ds_node_output(n, 0)))) {
				rc = nomem(p->err);
				goto out;
			}
			break;
		}
	}
	xs = ds_graph_shape(p->g, ds_graph_output_name(p->g, 0));
	if (!xs || xs->ndim != 2) {
		rc = ds_error_set(p->err, DS_ERR_DATA, "bad_graph", "taylor: the output '%s' is not [N, K] logits",
				  ds_graph_output_name(p->g, 0));
		goto out;
	}
	classes = xs->dim[1];
	json_array_append_new(json_object_get(graph, "inputs"),
			      json_pack("{s:s, s:s, s:[i]}", "name", TAYLOR_LABELS, "dtype", "I32", "shape", -1));
	json_array_append_new(json_object_get(graph, "nodes"),
			      json_pack("{s:s, s:s, s:[s, s], s:[s]}", "op", "cross_entropy", "name", TAYLOR_LOSS,
					"inputs", ds_graph_output_name(p->g, 0), TAYLOR_LABELS, "outputs", TAYLOR_LOSS));
	json_array_insert_new(json_object_get(graph, "outputs"), 0, json_string(TAYLOR_LOSS));
	if (!(text = json_dumps(graph, JSON_COMPACT))) {
		rc = nomem(p->err);
		goto out;
	}
	if ((rc = ds_graph_parse(text, params, &g, p->err)))
		goto out;
	if ((rc = ds_dataset_load(p->o->data, &data, p->err)))
		goto out;
	if ((rc = ds_dataset_check(data, g, classes, p->err))) {
		ds_error_prefix(p->err, "--data %s", p->o->data);
		goto out;
	}
	xs = ds_graph_shape(g, input);
	for (int d = 1; d < xs->ndim; d++)
		item_bytes *= (size_t)xs->dim[d];
	if (xs->dtype != DS_F32 && xs->ndim == 2)
		lo.length = xs->dim[1];
	if ((rc = ds_plan_new(g, params, lo.batch, TAYLOR_LOSS, DS_CPU, &plan, p->err)) ||
	    (rc = ds_loader_new(data, &lo, &loader, p->err)))
		goto out;
	for (size_t k = 0; k < p->n_prods; k++) {
		slot[k] = SIZE_MAX;
		for (size_t i = 0; scale[k] && i < ds_plan_param_count(plan); i++)
			if (!strcmp(ds_plan_param_name(plan, i), scale[k]))
				slot[k] = i;
	}
	while (seen < limit) {
		ds_tensor *x, *y, *px, *py;
		int64_t n;

		if ((rc = ds_loader_next(loader, &x, &y, &n, p->err)))
			goto out;
		if (!n)
			break;
		if (n > limit - seen)
			n = limit - seen;
		if ((rc = ds_plan_set_batch(plan, n, p->err)))
			goto out;
		px = ds_plan_tensor(plan, input);
		py = ds_plan_tensor(plan, TAYLOR_LABELS);
		memcpy(px->data, x->data, (size_t)n * item_bytes);
		memcpy(py->data, y->data, (size_t)n * sizeof(int32_t));
		ds_plan_zero_grad(plan);
		if ((rc = ds_plan_forward(plan, 0, 0, p->err)) || (rc = ds_plan_backward(plan, p->err)))
			goto out;
		for (size_t k = 0; k < p->n_prods; k++) {
			const ds_tensor *gr = slot[k] != SIZE_MAX ? ds_plan_grad(plan, slot[k]) : NULL;

			for (int64_t c = 0; gr && c < ds_tensor_numel(gr); c++)
				scores[k][c] += fabs(((const float *)gr->data)[c]);
		}
		seen += n;
		batches++;
		if (ds_cli_interrupted()) {
			rc = ds_error_set(p->err, DS_ERR_INTERRUPTED, "interrupted", "interrupted");
			goto out;
		}
	}
	if (!batches) {
		rc = ds_error_set(p->err, DS_ERR_DATA, "empty", "--data %s: no items", p->o->data);
		goto out;
	}
	for (size_t k = 0; k < p->n_prods; k++)
		for (int64_t c = 0; scores[k] && c < p->spaces[p->prods[k].space].size; c++)
			scores[k][c] /= (double)batches;
	rc = note(p, "taylor: %" PRId64 " items in %" PRId64 " batches from %s", seen, batches, p->o->data);
out:
	ds_loader_free(loader);
	ds_plan_free(plan);
	ds_graph_free(g);
	ds_dataset_free(data);
	for (size_t k = 0; scale && k < p->n_prods; k++)
		free(scale[k]);
	free(scale);
	free(slot);
	free(text);
	ds_container_free(params);
	json_decref(graph);
	return rc;
}

/* ------------------------------------------------------------- selection */

struct ranked {
	double score;
	int64_t index;
};

static int by_score(const void *a, const void *b)
{
	const struct ranked *x = a, *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* The ratio of a group: the last --layer-ratio whose pattern names one of
 * its producers, else --ratio. */
static int group_ratio(struct prune *p, int root, double *ratio, ds_error *err)
{
	*ratio = p->o->ratio;
	for (size_t i = 0; i < p->o->layer_ratio_count; i++) {
		const char *spec = p->o->layer_ratios[i], *eq = strrchr(spec, '=');
		char pattern[256], *end;
		double r;

		if (!eq || eq == spec || (size_t)(eq - spec) >= sizeof pattern)
			return ds_error_set(err, DS_ERR_USAGE, "usage", "--layer-ratio: '%s' is not NAME=RATIO", spec);
		snprintf(pattern, sizeof pattern, "%.*s", (int)(eq - spec), spec);
		r = strtod(eq + 1, &end);
		if (end == eq + 1 || *end || !(r >= 0 && r <= 1))
			return ds_error_set(err, DS_ERR_USAGE, "usage", "--layer-ratio: '%s': the ratio is not in [0, 1]",
					    spec);
		for (size_t k = 0; k < p->n_prods; k++)
			if (find(p, p->prods[k].space) == root &&
			    !fnmatch(pattern, ds_node_name(p->prods[k].node), 0))
				*ratio = r;
	}
	return 0;
}

/* Producers' names of a group, comma-separated. */
static void group_names(struct prune *p, int root, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = 0;
	for (size_t k = 0; k < p->n_prods && used + 1 < len; k++)
		if (find(p, p->prods[k].space) == root)
			used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? "," : "",
						 ds_node_name(p->prods[k].node));
	if (used >= len && len > 4)
		strcpy(buf + len - 4, "...");
}

static int select_channels(struct prune *p, json_t *groups)
{
	double **scores = calloc(p->n_prods ? p->n_prods : 1, sizeof *scores);
	int *used = calloc(p->n_prods ? p->n_prods : 1, sizeof *used);
	int taylor = !strcmp(p->o->criterion, "taylor"), rc = 0;
	struct ranked *rank = NULL;

	if (!scores || !used || !(p->keep = calloc(p->n_spaces ? p->n_spaces : 1, sizeof *p->keep))) {
		rc = nomem(p->err);
		goto out;
	}
	for (size_t k = 0; k < p->n_prods; k++) {
		if (!(scores[k] = calloc((size_t)p->spaces[p->prods[k].space].size, sizeof **scores))) {
			rc = nomem(p->err);
			goto out;
		}
		if (!taylor)
			score_static(p, &p->prods[k], scores[k], &used[k]);
		else
			used[k] = !p->spaces[find(p, p->prods[k].space)].frozen;
	}
	if (taylor && (rc = score_taylor(p, scores)))
		goto out;
	for (size_t s = 0; s < p->n_spaces; s++) {
		struct space *r = &p->spaces[s];
		int64_t n = r->size, keep, remove;
		double ratio;
		char names[512], status[256];
		int any = 0, scored = 0;

		if (find(p, (int)s) != (int)s)
			continue;
		for (size_t k = 0; k < p->n_prods; k++)
			if (find(p, p->prods[k].space) == (int)s) {
				any = 1;
				scored |= used[k];
			}
		if (!any)
			continue;
		group_names(p, (int)s, names, sizeof names);
		if ((rc = group_ratio(p, (int)s, &ratio, p->err)))
			goto out;
		keep = n;
		if (r->frozen)
			snprintf(status, sizeof status, "kept: %s", r->reason);
		else if (!scored)
			snprintf(status, sizeof status, "kept: no batch norm follows its layers");
		else {
			remove = (int64_t)floor(ratio * (double)n + 0.5);
			keep = n - remove;
			if (ratio > 0 && keep < 1) {
				rc = ds_error_set(p->err, DS_ERR_USAGE, "removes_everything",
						  "a ratio of %g removes every channel of %s (%" PRId64 " channels)", ratio,
						  names, n);
				goto out;
			}
			if (keep < p->o->min_channels)
				keep = p->o->min_channels < n ? p->o->min_channels : n;
			if (p->o->round > 1)
				keep = (keep + p->o->round - 1) / p->o->round * p->o->round;
			if (keep > n)
				keep = n;
			snprintf(status, sizeof status, keep < n ? "pruned" : "kept: nothing to remove at this ratio");
		}
		if (keep < n) {
			if (!(rank = malloc((size_t)n * sizeof *rank)) || !(p->keep[s] = calloc((size_t)n, 1))) {
				rc = nomem(p->err);
				goto out;
			}
			for (int64_t c = 0; c < n; c++) {
				rank[c].index = c;
				rank[c].score = 0;
				for (size_t k = 0; k < p->n_prods; k++)
					if (find(p, p->prods[k].space) == (int)s && used[k])
						rank[c].score += scores[k][c];
				if (isnan(rank[c].score))
					rank[c].score = 0;
			}
			qsort(rank, (size_t)n, sizeof *rank, by_score);
			for (int64_t c = 0; c < keep; c++)
				p->keep[s][rank[c].index] = 1;
			free(rank);
			rank = NULL;
		}
		if (json_array_append_new(groups, json_pack("{s:s, s:I, s:I, s:f, s:s}", "layers", names, "channels",
							    (json_int_t)n, "kept", (json_int_t)keep, "ratio",
							    keep < n ? ratio : 0.0, "status", status))) {
			rc = nomem(p->err);
			goto out;
		}
	}
out:
	for (size_t k = 0; scores && k < p->n_prods; k++)
		free(scores[k]);
	free(scores);
	free(used);
	free(rank);
	return rc;
}

/* --------------------------------------------------------------- cutting */

static int kept(struct prune *p, const struct vmap *m, int64_t j)
{
	const uint8_t *k = p->keep[find(p, m->space[j])];

	return !k || k[m->index[j]];
}

static int64_t map_kept(struct prune *p, int m)
{
	int64_t n = 0;

	for (int64_t j = 0; j < p->maps[m].n; j++)
		n += kept(p, &p->maps[m], j);
	return n;
}

/* t with only the kept slices along axis. */
static int cut(struct prune *p, const struct edit *e, ds_error *err)
{
	ds_tensor *t = ds_container_get(p->model, e->param), *nt;
	const struct vmap *m = &p->maps[e->map];
	int64_t outer = 1, inner = 1, len, keep = 0, shape[DS_MAX_DIMS];
	size_t esz, row;
	const char *src;
	char *dst;
	int rc;

	if (!t || e->axis >= t->ndim)
		return 0;
	len = t->shape[e->axis];
	if (len != m->n * m->block)
		return ds_error_set(err, DS_ERR_RUN, "prune_mismatch", "tensor '%s': %" PRId64 " along axis %d, the map has %" PRId64,
				    e->param, len, e->axis, m->n * m->block);
	for (int64_t j = 0; j < m->n; j++)
		keep += kept(p, m, j);
	if (keep == m->n)
		return 0;
	for (int d = 0; d < t->ndim; d++) {
		shape[d] = t->shape[d];
		if (d < e->axis)
			outer *= t->shape[d];
		else if (d > e->axis)
			inner *= t->shape[d];
	}
	shape[e->axis] = keep * m->block;
	if (!(nt = ds_tensor_new(t->dtype, t->ndim, shape, DS_CPU, err)))
		return DS_ERR_NOMEM;
	esz = ds_dtype_size(t->dtype);
	row = (size_t)(m->block * inner) * esz;
	src = t->data;
	dst = nt->data;
	for (int64_t o = 0; o < outer; o++)
		for (int64_t j = 0; j < m->n; j++) {
			if (kept(p, m, j)) {
				memcpy(dst, src, row);
				dst += row;
			}
			src += row;
		}
	ds_container_remove(p->model, e->param);
	rc = ds_container_add(p->model, e->param, nt, err);
	ds_tensor_unref(nt);
	return rc;
}

static int apply(struct prune *p)
{
	int rc;

	/* The same tensor may appear in two edits along the same axis with the
	 * same map (never with different ones: analyse froze those); cut once. */
	for (size_t i = 0; i < p->n_edits; i++) {
		int dup = 0;

		for (size_t j = 0; j < i; j++)
			dup |= !strcmp(p->edits[i].param, p->edits[j].param) && p->edits[i].axis == p->edits[j].axis;
		if (!dup && (rc = cut(p, &p->edits[i], p->err)))
			return rc;
	}
	for (size_t i = 0; i < p->n_dws; i++) {
		int64_t g = map_kept(p, p->dws[i].map);

		for (size_t k = 0; k < ds_edit_node_count(p->graph); k++) {
			json_t *node = ds_edit_node(p->graph, k), *attrs = json_object_get(node, "attrs");

			if (strcmp(ds_edit_node_name(node), ds_node_name(p->dws[i].node)) != 0)
				continue;
			if (!json_is_object(attrs)) {
				attrs = json_object();
				json_object_set_new(node, "attrs", attrs);
			}
			if (!attrs || json_object_set_new(attrs, "groups", json_integer(g)))
				return nomem(p->err);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- report */

static int64_t node_params(const ds_node *n, const ds_container *c)
{
	int64_t sum = 0;

	for (size_t i = 0; i < ds_node_input_count(n); i++) {
		const ds_tensor *t = ds_container_get(c, ds_node_input(n, i));

		sum += t ? ds_tensor_numel(t) : 0;
	}
	return sum;
}

static int64_t node_flops(const ds_graph *g, const ds_node *n)
{
	const ds_op *op = ds_op_find(ds_node_op(n));
	ds_shape in[16], out[4];
	size_t ni = ds_node_input_count(n), no = ds_node_output_count(n);

	if (!op || !op->flops || ni > 16 || no > 4)
		return 0;
	for (size_t i = 0; i < ni; i++) {
		const ds_shape *s = ds_graph_shape(g, ds_node_input(n, i));

		if (!s)
			return 0;
		in[i] = *s;
	}
	for (size_t i = 0; i < no; i++) {
		const ds_shape *s = ds_graph_shape(g, ds_node_output(n, i));

		if (!s)
			return 0;
		out[i] = *s;
	}
	return op->flops(n, in, (int)ni, out);
}

static const ds_node *node_named(const ds_graph *g, const char *name)
{
	for (size_t i = 0; i < ds_graph_node_count(g); i++)
		if (!strcmp(ds_node_name(ds_graph_node(g, i)), name))
			return ds_graph_node(g, i);
	return NULL;
}

/* One row per convolution and linear layer: channels, parameters, FLOPs. */
static int layer_rows(const ds_graph *before, const ds_container *params_before, const ds_graph *after,
		      const ds_container *params_after, json_t *rows, int64_t *ch_before, int64_t *ch_after)
{
	*ch_before = *ch_after = 0;
	for (size_t i = 0; i < ds_graph_node_count(before); i++) {
		const ds_node *a = ds_graph_node(before, i), *b;
		const char *op = ds_node_op(a);
		const ds_shape *sa, *sb;

		if (strcmp(op, "conv2d") != 0 && strcmp(op, "linear") != 0)
			continue;
		if (!(b = node_named(after, ds_node_name(a))))
			continue;
		sa = ds_graph_shape(before, ds_node_output(a, 0));
		sb = ds_graph_shape(after, ds_node_output(b, 0));
		if (!sa || !sb || sa->ndim < 2 || sb->ndim < 2)
			continue;
		*ch_before += sa->dim[1];
		*ch_after += sb->dim[1];
		if (json_array_append_new(rows, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "layer",
							  ds_node_name(a), "op", op, "channels_before",
							  (json_int_t)sa->dim[1], "channels_after", (json_int_t)sb->dim[1],
							  "params_before", (json_int_t)node_params(a, params_before),
							  "params_after", (json_int_t)node_params(b, params_after),
							  "flops_before", (json_int_t)node_flops(before, a),
							  "flops_after", (json_int_t)node_flops(after, b))))
			return DS_ERR_NOMEM;
	}
	return 0;
}

/* Pruning reads float weights; NaN or infinite ones would rank anywhere. */
static int check_weights(const ds_container *c, ds_error *err)
{
	for (size_t i = 0; i < ds_container_count(c); i++) {
		const ds_tensor *t = ds_container_tensor(c, i);
		int64_t n = ds_tensor_numel(t);

		if (t->dtype != DS_F32)
			return ds_error_set(err, DS_ERR_DATA, "not_float",
					    "tensor '%s' is %s: prune a float model (before ds-quantize)",
					    ds_container_name(c, i), ds_dtype_name(t->dtype));
		for (int64_t k = 0; k < n; k++)
			if (!isfinite(((const float *)t->data)[k]))
				return ds_error_set(err, DS_ERR_DATA, "bad_weights",
						    "tensor '%s': element %" PRId64 " is %s", ds_container_name(c, i), k,
						    isnan(((const float *)t->data)[k]) ? "NaN" : "infinite");
	}
	return 0;
}

int ds_prune_model(ds_container *model, const ds_prune_options *o, json_t **report, ds_error *err)
{
	struct prune p = { .o = o, .model = model, .err = err };
	ds_graph *after = NULL;
	ds_container *params_before = NULL;
	json_t *groups = NULL, *layers = NULL, *figures = NULL;
	const char *crit = o->criterion ? o->criterion : "l1", *fmt;
	ds_prune_options opts = *o;
	int64_t ch_before, ch_after, flops_before, flops_after, params_before_n;
	char *text = NULL;
	int rc;

	*report = NULL;
	opts.criterion = crit;
	if (opts.min_channels < 1)
		opts.min_channels = 1;
	p.o = &opts;
	if (strcmp(crit, "l1") != 0 && strcmp(crit, "bn-gamma") != 0 && strcmp(crit, "taylor") != 0)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--criterion: '%s' is not l1, bn-gamma or taylor", crit);
	if (!(o->ratio >= 0 && o->ratio <= 1))
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--ratio: %g is not in [0, 1]", o->ratio);
	if (o->round < 0 || o->batch < 0 || o->data_count < 0)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--round, --batch and --data-count cannot be negative");
	fmt = ds_container_meta_get(model, "ds.format");
	if (fmt && strcmp(fmt, DS_FORMAT_MODEL) != 0)
		return ds_error_set(err, DS_ERR_DATA, "not_model", "ds.format is '%s', not a model (%s)", fmt,
				    DS_FORMAT_MODEL);
	if ((rc = ds_container_meta_json(model, "ds.graph", &p.graph, err)))
		return rc;
	if (!p.graph) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_graph", "the model has no ds.graph");
		goto out;
	}
	if ((rc = ds_graph_from_model(model, &p.g, err)) || (rc = check_weights(model, err)))
		goto out;
	if (!ds_graph_input_count(p.g) || !ds_graph_output_count(p.g)) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_graph", "the graph has no input or no output");
		goto out;
	}
	/* The parameters before, for the report (references, not copies:
	 * cutting replaces tensors rather than changing them). */
	if (!(params_before = ds_container_new()) || !(p.map_of = json_object()) || !(p.notes = json_array()) ||
	    !(groups = json_array()) || !(layers = json_array())) {
		rc = nomem(err);
		goto out;
	}
	for (size_t i = 0; i < ds_container_count(model); i++)
		if ((rc = ds_container_add(params_before, ds_container_name(model, i), ds_container_tensor(model, i), err)))
			goto out;
	flops_before = ds_graph_flops(p.g);
	params_before_n = ds_graph_param_count(p.g);
	if ((rc = analyse(&p)) || (rc = select_channels(&p, groups)) || (rc = apply(&p)))
		goto out;
	if (!(text = json_dumps(p.graph, JSON_COMPACT))) {
		rc = nomem(err);
		goto out;
	}
	if ((rc = ds_graph_parse(text, model, &after, err))) {
		ds_error_prefix(err, "the pruned graph");
		rc = DS_ERR_RUN;
		goto out;
	}
	if ((rc = ds_container_meta_set_json(model, "ds.graph", p.graph, err)))
		goto out;
	if ((rc = layer_rows(p.g, params_before, after, model, layers, &ch_before, &ch_after))) {
		rc = nomem(err);
		goto out;
	}
	flops_after = ds_graph_flops(after);
	figures = json_pack("{s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f}", "criterion", crit, "ratio", o->ratio,
			    "channels_before", (json_int_t)ch_before, "channels_after", (json_int_t)ch_after,
			    "params_before", (json_int_t)params_before_n, "params_after",
			    (json_int_t)ds_graph_param_count(after), "flops_before", (json_int_t)flops_before,
			    "flops_after", (json_int_t)flops_after, "params_removed",
			    params_before_n > 0 ? 1.0 - (double)ds_graph_param_count(after) / (double)params_before_n : 0.0,
			    "flops_removed", flops_before > 0 ? 1.0 - (double)flops_after / (double)flops_before : 0.0);
	if (!figures || !(*report = json_pack("{s:O, s:O, s:O, s:O}", "figures", figures, "layers", layers, "groups",
					      groups, "notes", p.notes)))
		rc = nomem(err);
out:
	for (size_t i = 0; i < p.n_maps; i++) {
		free(p.maps[i].space);
		free(p.maps[i].index);
	}
	for (size_t i = 0; p.keep && i < p.n_spaces; i++)
		free(p.keep[i]);
	free(p.keep);
	free(p.maps);
	free(p.spaces);
	free(p.edits);
	free(p.prods);
	free(p.dws);
	free(text);
	json_decref(p.map_of);
	json_decref(p.notes);
	json_decref(p.graph);
	json_decref(groups);
	json_decref(layers);
	json_decref(figures);
	ds_graph_free(p.g);
	ds_graph_free(after);
	ds_container_free(params_before);
	return rc;
}
