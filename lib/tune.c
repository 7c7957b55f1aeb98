/* tune.c - ds-optimize --tune: every convolution's kernels timed on this
 * machine, the fastest recorded in the model, as TensorRT's tactic
 * selection does for an engine.
 *
 * A convolution that im2col would run has a choice: the direct AVX-512
 * kernel (where it applies) or im2col + GEMM with 1 to 16 images per GEMM.
 * Which wins depends on the layer's shape, the batch, the thread count and
 * the CPU's caches, so it is measured rather than guessed.  Each candidate
 * is set on every such node at once and the model is run with per-node
 * timing (ds_plan_profile), rounds of all candidates in turn so that a slow
 * spell of the machine hits them alike; a node keeps the median-fastest
 * candidate when it beats the default by more than MIN_GAIN, and keeps no
 * record otherwise.  Last, the whole model is timed with and without the
 * records, in alternation; a tuned model that is not faster as a whole
 * gets its records removed again, so --tune never makes a model slower on
 * the machine that tuned it.
 *
 * The records are node attributes, "kernel" and "chunk" (ds-formats.5):
 * preferences that a CPU without the direct kernel ignores.  The kernels
 * compute the same convolution with the sums in another order, so outputs
 * agree to float rounding, not bit for bit: --tune is opt-in, and
 * ds-optimize --verify checks the tuned model like any other. */
#include "internal.h"
#include "train.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MIN_GAIN 0.03         /* a record must save 3% of its node's time */
#define ROUNDS 5              /* per candidate, each of ROUND_RUNS runs */
#define ROUND_RUNS 4
#define WHOLE_ROUNDS 7        /* whole-model check: alternations */

struct cand {
	const char *kernel;          /* NULL: the default (no record) */
	int64_t chunk;
	const char *text;
};

static const struct cand cands[] = {
	{ NULL, 0, "default" },       /* direct where it applies, else gemm */
	{ "gemm", 0, "gemm" },
	{ "lanes", 0, "output channels in the lanes" },
	{ "gemm", 1, "gemm, 1 image a GEMM" },
	{ "gemm", 4, "gemm, 4 images a GEMM" },
	{ "gemm", 16, "gemm, 16 images a GEMM" },
};
#define N_CANDS (sizeof cands / sizeof cands[0])

struct tnode {
	size_t index;                /* in the graph document */
	const char *name;
	double ms[N_CANDS][ROUNDS];
	int choice;
};

static int nomem(ds_error *err)
{
	return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(const double *v, size_t n)
{
	double s[ROUNDS > WHOLE_ROUNDS ? ROUNDS : WHOLE_ROUNDS];

	memcpy(s, v, n * sizeof *s);
	qsort(s, n, sizeof *s, by_value);
	return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* A convolution with a choice: one group, not 1x1 at stride 1 without
 * padding (those are a plain GEMM on the input already).  Where the direct
 * kernel does not apply, the chunk is still a choice. */
static int has_choice(const ds_graph *g, const ds_node *n)
{
	const ds_shape *w;
	int64_t stride[2] = { 1, 1 }, pad[2] = { 0, 0 };

	if (strcmp(ds_node_op(n), "conv2d") != 0 || ds_node_input_count(n) < 2)
		return 0;
	if (ds_node_attr_int(n, "groups", 1) != 1)
		return 0;
	w = ds_graph_shape(g, ds_node_input(n, 1));
	if (!w || w->ndim != 4)
		return 0;
	ds_node_attr_ints(n, "stride", stride, 2);
	ds_node_attr_ints(n, "padding", pad, 2);
	return !(w->dim[2] == 1 && w->dim[3] == 1 && stride[0] == 1 && stride[1] == 1 && pad[0] == 0 && pad[1] == 0);
}

static void set_record(json_t *node, const struct cand *c)
{
	json_t *attrs = json_object_get(node, "attrs");

	if (!attrs) {
		attrs = json_object();
		json_object_set_new(node, "attrs", attrs);
	}
	json_object_del(attrs, "kernel");
	json_object_del(attrs, "chunk");
	if (c->kernel)
		json_object_set_new(attrs, "kernel", json_string(c->kernel));
	if (c->chunk)
		json_object_set_new(attrs, "chunk", json_integer(c->chunk));
}

/* An inference plan of the document at batch, inputs filled with seeded
 * random values (zeros for integer inputs: valid ids of any table). */
static int make_plan(const json_t *doc, ds_container *params, int64_t batch, ds_graph **g, ds_plan **p,
		     ds_error *err)
{
	char *text = json_dumps(doc, JSON_COMPACT);
	int rc;

	*g = NULL;
	*p = NULL;
	if (!text)
		return nomem(err);
	rc = ds_graph_parse(text, params, g, err);
	free(text);
	if (rc || (rc = ds_plan_new(*g, params, batch, NULL, DS_CPU, p, err)))
		return rc;
	for (size_t i = 0; i < ds_graph_input_count(*g); i++) {
		ds_tensor *t = ds_plan_tensor(*p, ds_graph_input_name(*g, i));
		int64_t n = t ? ds_tensor_numel(t) : 0;

		if (!t)
			continue;
		if (t->dtype == DS_F32) {
			float *x = t->data;

			for (int64_t k = 0; k < n; k++)
				x[k] = (float)((ds_mix64(7, (uint64_t)i, (uint64_t)k) >> 40) * 0x1p-24) * 2.0f - 1.0f;
		} else {
			memset(t->data, 0, ds_tensor_nbytes(t));
		}
	}
	return 0;
}

static void free_plan(ds_graph *g, ds_plan *p)
{
	ds_plan_free(p);
	ds_graph_free(g);
}

/* One round of a candidate: ROUND_RUNS profiled runs; each tuned node's
 * mean milliseconds into its slot. */
static int time_candidate(json_t *doc, ds_container *params, int64_t batch, struct tnode *t, size_t nt, size_t c,
			  size_t round, ds_error *err)
{
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	int rc;

	for (size_t k = 0; k < nt; k++)
		set_record(json_array_get(json_object_get(doc, "nodes"), t[k].index), &cands[c]);
	if ((rc = make_plan(doc, params, batch, &g, &p, err)))
		goto out;
	/* One untimed run: first touches of the arena and packed weights. */
	if ((rc = ds_plan_forward(p, 0, 0, err)))
		goto out;
	ds_plan_profile(p, 1);
	for (int r = 0; r < ROUND_RUNS && !rc; r++)
		rc = ds_plan_forward(p, 0, (uint64_t)r, err);
	for (size_t k = 0; k < ds_plan_node_count(p) && !rc; k++) {
		ds_node_profile np;

		ds_plan_node_profile(p, k, &np);
		for (size_t j = 0; j < nt; j++)
			if (!strcmp(np.name, t[j].name))
				t[j].ms[c][round] = np.forward_calls ? np.forward_s * 1e3 / (double)np.forward_calls : 0;
	}
out:
	free_plan(g, p);
	return rc;
}

/* Milliseconds of one whole run of the document, ROUND_RUNS runs timed. */
static int time_whole(const json_t *doc, ds_container *params, int64_t batch, double *ms, ds_error *err)
{
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	double t0;
	int rc;

	if ((rc = make_plan(doc, params, batch, &g, &p, err)) || (rc = ds_plan_forward(p, 0, 0, err)))
		goto out;
	t0 = ds_seconds();
	for (int r = 0; r < ROUND_RUNS && !rc; r++)
		rc = ds_plan_forward(p, 0, (uint64_t)r, err);
	*ms = (ds_seconds() - t0) * 1e3 / ROUND_RUNS;
out:
	free_plan(g, p);
	return rc;
}

int ds_tune_model(ds_container *model, int64_t batch, const ds_cli *cli, json_t **report, ds_error *err)
{
	json_t *doc = NULL, *tuned = NULL, *rows = NULL, *figures = NULL;
	ds_graph *g = NULL;
	struct tnode *t = NULL;
	size_t nt = 0, records = 0;
	double before[WHOLE_ROUNDS], after[WHOLE_ROUNDS], mb = 0, ma = 0;
	int rc, kept;

	*report = NULL;
	if (batch <= 0)
		batch = 64;
	if ((rc = ds_container_meta_json(model, "ds.graph", &doc, err)))
		return rc;
	if (!doc)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "the model has no ds.graph");
	{
		char *text = json_dumps(doc, JSON_COMPACT);

		if (!text) {
			rc = nomem(err);
			goto out;
		}
		rc = ds_graph_parse(text, model, &g, err);
		free(text);
		if (rc)
			goto out;
	}
	if (!(t = ds_calloc(ds_graph_node_count(g) + 1, sizeof *t, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < ds_graph_node_count(g); i++) {
		const ds_node *n = ds_graph_node(g, i);

		if (!has_choice(g, n))
			continue;
		t[nt].index = i;
		t[nt].name = ds_node_name(n);
		nt++;
	}
	if (!(rows = json_array()) || !(figures = json_object())) {
		rc = nomem(err);
		goto out;
	}
	/* Rounds of every candidate in turn: a busy spell of the machine
	 * costs all of them alike. */
	for (size_t r = 0; nt && r < ROUNDS && !rc; r++)
		for (size_t c = 0; c < N_CANDS && !rc; c++) {
			if ((rc = ds_cli_interrupted()))
				rc = ds_error_set(err, rc, "interrupted", "interrupted");
			else
				rc = time_candidate(doc, model, batch, t, nt, c, r, err);
		}
	if (rc)
		goto out;
	for (size_t k = 0; k < nt; k++) {
		double base = median(t[k].ms[0], ROUNDS), best = base;
		json_t *row;

		t[k].choice = 0;
		for (size_t c = 1; c < N_CANDS; c++) {
			double m = median(t[k].ms[c], ROUNDS);

			if (m < best) {
				best = m;
				t[k].choice = (int)c;
			}
		}
		if (best > base * (1 - MIN_GAIN))
			t[k].choice = 0;
		best = median(t[k].ms[t[k].choice], ROUNDS);
		set_record(json_array_get(json_object_get(doc, "nodes"), t[k].index), &cands[t[k].choice]);
		records += t[k].choice != 0;
		row = json_pack("{s:s, s:f, s:s, s:f, s:f}", "node", t[k].name, "default_ms", base, "kernel",
				cands[t[k].choice].text, "ms", best, "speedup", best > 0 ? base / best : 1.0);
		if (!row || json_array_append_new(rows, row)) {
			rc = nomem(err);
			goto out;
		}
		if (cli && t[k].choice)
			ds_log_verbose(cli, "tune: %s: %s, %.3f ms against %.3f ms", t[k].name, cands[t[k].choice].text,
				       best, base);
	}
	/* The whole model, with and without the records, alternately. */
	kept = records > 0;
	if (kept) {
		if (!(tuned = json_deep_copy(doc))) {
			rc = nomem(err);
			goto out;
		}
		for (size_t k = 0; k < nt; k++)
			set_record(json_array_get(json_object_get(doc, "nodes"), t[k].index), &cands[0]);
		for (int r = 0; r < WHOLE_ROUNDS && !rc; r++)
			if (!(rc = time_whole(doc, model, batch, &before[r], err)))
				rc = time_whole(tuned, model, batch, &after[r], err);
		if (rc)
			goto out;
		mb = median(before, WHOLE_ROUNDS);
		ma = median(after, WHOLE_ROUNDS);
		kept = ma < mb;
		if (kept && (rc = ds_container_meta_set_json(model, "ds.graph", tuned, err)))
			goto out;
	}
	if (json_object_set_new(figures, "tune_batch", json_integer(batch)) ||
	    json_object_set_new(figures, "tune_threads", json_integer(ds_threads_get())) ||
	    json_object_set_new(figures, "tune_nodes", json_integer((json_int_t)nt)) ||
	    json_object_set_new(figures, "tune_records", json_integer(kept ? (json_int_t)records : 0)) ||
	    json_object_set_new(figures, "tune_ms_before", records ? json_real(mb) : json_null()) ||
	    json_object_set_new(figures, "tune_ms_after", records ? json_real(ma) : json_null()) ||
	    json_object_set_new(figures, "tune_kept", json_boolean(kept))) {
		rc = nomem(err);
		goto out;
	}
	if (records && !kept && cli)
		ds_log_warn(cli, "tune: the tuned model was not faster as a whole (%.3f ms against %.3f ms): "
			    "no records kept", ma, mb);
	*report = json_pack("{s:O, s:O}", "figures", figures, "tune", rows);
	if (!*report)
		rc = nomem(err);
out:
	json_decref(doc);
	json_decref(tuned);
	json_decref(rows);
	json_decref(figures);
	ds_graph_free(g);
	free(t);
	return rc;
}
