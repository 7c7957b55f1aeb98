/* bench.c - ds-bench: models measured over a sweep of batch sizes, thread
 * counts and devices, on random inputs or on a labelled stream, and, with
 * labels, how good they are.
 *
 * One configuration is a model at one (device, threads, batch).  Its plan
 * is built once; warm-up runs follow, then timed iterations until both
 * --repeat iterations and --min-time seconds are reached.  An iteration is
 * the copy of the batch into the plan's input (input_ms: what a host-to-device
 * copy will be on CUDA) and one forward pass (compute_ms), each timed with
 * CLOCK_MONOTONIC; its latency is the sum.  Throughput is the items of all
 * timed iterations over their total time.  Accuracy and loss come from a separate pass over the whole
 * stream, timed on its own, so that loading and scoring never mix with the
 * speed figures. */
#include "config.h"
#include "bench.h"
#include "train.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_ITERATIONS 1000000   /* timed iterations of one configuration at most */
#define MAX_BATCH ((int64_t)1 << 24)
#define MAX_THREADS 4096

struct device_slot {
	char *text;                  /* as given: "cpu", "cuda:1" */
	ds_device dev;
	int rc;                      /* ds_device_resolve's status */
	ds_error err;
};

struct bench {
	const ds_bench_options *o;
	int64_t *batch, *threads;
	size_t n_batch, n_threads, n_dev;
	struct device_slot *dev;
	int64_t warmup_runs;
	double warmup_s;
	ds_dataset *data;
	json_t *models, *results, *samples, *profile;
	size_t configs, failed;
	ds_error first;              /* the first failure, for the final message */
	ds_progress *progress;
};

/* A real, or null where the figure does not exist (NaN, infinite). */
static json_t *num(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static double get_num(const json_t *row, const char *key)
{
	const json_t *v = json_object_get(row, key);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

static int set(json_t *obj, const char *key, json_t *v, ds_error *err)
{
	if (!v || json_object_set_new(obj, key, v))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	return 0;
}

/* Rows get every column, null until known, so that a failed configuration
 * keeps the table's columns in place. */
static const char *const result_cols[] = {
	"model", "device", "threads", "batch", "iterations", "items_per_s", "items_per_s_sd", "cv_pct",
	"ms_min", "ms_p50", "ms_p90", "ms_p99", "ms_max", "ms_mean", "input_ms", "h2d_ms", "compute_ms",
	"d2h_ms", "gflop_per_s", "arena_bytes", "peak_rss_bytes", "device_bytes", "unstable", "status", "error",
};

static const char *const model_cols[] = {
	"model", "file_bytes", "weight_bytes", "params", "flops_per_item", "input", "classes", "top1", "top5",
	"loss", "eval_items", "eval_s", "status", "error",
};

static json_t *null_row(const char *const *cols, size_t n)
{
	json_t *row = json_object();

	for (size_t i = 0; row && i < n; i++)
		if (json_object_set_new(row, cols[i], json_null())) {
			json_decref(row);
			return NULL;
		}
	return row;
}

/* ------------------------------------------------------------ inputs */

/* Ids a token input may hold: the rows of the embedding table that reads it,
 * else the vocabulary of the model's tokenizer, else 1 (all ids 0). */
static int64_t vocab_of(const ds_model *m, const char *input)
{
	for (size_t k = 0; k < ds_graph_node_count(m->g); k++) {
		const ds_node *n = ds_graph_node(m->g, k);
		const ds_shape *table;

		if (strcmp(ds_node_op(n), "embedding") && strcmp(ds_node_op(n), "embedding_bag"))
			continue;
		if (ds_node_input_count(n) < 2 || strcmp(ds_node_input(n, 0), input))
			continue;
		table = ds_graph_shape(m->g, ds_node_input(n, 1));
		if (table && table->ndim == 2 && table->dim[0] > 0)
			return table->dim[0];
	}
	if (m->preprocess) {
		const json_t *spec = json_object_get(m->preprocess, "tokenizer");
		ds_tokenizer *tok = NULL;
		int64_t v = 0;

		if (spec && ds_tokenizer_new(spec, &tok, NULL) == 0) {
			v = ds_tokenizer_vocab(tok);
			ds_tokenizer_free(tok);
		}
		if (v > 0)
			return v;
	}
	return 1;
}

/* Random values for one input: uniform [0, 1) for floats (images scaled as
 * the loader scales them), uniform ids below the vocabulary for integers. */
static int fill_random(const ds_model *m, const char *name, ds_tensor *t, uint64_t seed, ds_error *err)
{
	int64_t n = ds_tensor_numel(t), vocab = 1;
	ds_rng rng;

	ds_rng_seed(&rng, seed);
	if (t->dtype == DS_I32 || t->dtype == DS_I64)
		vocab = vocab_of(m, name);
	for (int64_t i = 0; i < n; i++) {
		switch (t->dtype) {
		case DS_F32:
			((float *)t->data)[i] = (float)ds_rng_uniform(&rng);
			break;
		case DS_I32:
			((int32_t *)t->data)[i] = (int32_t)ds_rng_below(&rng, (uint64_t)vocab);
			break;
		case DS_I64:
			((int64_t *)t->data)[i] = (int64_t)ds_rng_below(&rng, (uint64_t)vocab);
			break;
		case DS_U8:
		case DS_I8:
			((uint8_t *)t->data)[i] = (uint8_t)ds_rng_below(&rng, 256);
			break;
		default:
			return ds_error_set(err, DS_ERR_DATA, "bad_input", "%s: input '%s': no random inputs for dtype %s",
					    m->path, name, ds_dtype_name(t->dtype));
		}
	}
	return 0;
}

/* Copy n items of a loader batch into a tensor of the input's dtype: the
 * same bytes, or I32 ids widened for an I64 input. */
static void copy_items(ds_tensor *dst, const ds_tensor *src, int64_t n_dst, int64_t n_src)
{
	int64_t per = ds_tensor_numel(src) / (src->shape[0] ? src->shape[0] : 1);

	for (int64_t i = 0; i < n_dst; i++) {
		int64_t from = i % n_src;

		if (dst->dtype == src->dtype) {
			size_t bytes = (size_t)per * ds_dtype_size(src->dtype);

			memcpy((char *)dst->data + (size_t)i * bytes, (const char *)src->data + (size_t)from * bytes, bytes);
		} else {
			for (int64_t k = 0; k < per; k++)
				((int64_t *)dst->data)[i * per + k] = ((const int32_t *)src->data)[from * per + k];
		}
	}
}

/* The token row length a graph input wants (0 for images). */
static int64_t token_length(const ds_model *m)
{
	const ds_shape *s = ds_graph_input_shape(m->g, 0);

	return s && s->ndim == 2 && (s->dtype == DS_I32 || s->dtype == DS_I64) && s->dim[1] > 0 ? s->dim[1] : 0;
}

/* The first batch of the stream, repeated when the stream is shorter. */
static int fill_data(struct bench *b, const ds_model *m, ds_tensor *t, ds_error *err)
{
	ds_loader_options lo = { .batch = t->shape[0], .length = token_length(m) };
	ds_loader *l = NULL;
	ds_tensor *x, *y;
	int64_t n = 0;
	int rc;

	if ((rc = ds_loader_new(b->data, &lo, &l, err)) || (rc = ds_loader_next(l, &x, &y, &n, err)))
		goto out;
	if (n < 1 || ds_tensor_numel(x) / x->shape[0] != ds_tensor_numel(t) / t->shape[0]) {
		rc = ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "%s: the stream's items do not fill input '%s'",
				  m->path, m->input);
		goto out;
	}
	copy_items(t, x, t->shape[0], n);
out:
	ds_loader_free(l);
	return rc;
}

/* ------------------------------------------------------------ accuracy */

/* Top-1, top-5 and mean cross-entropy over the whole stream, in its order,
 * exactly as training's loader prepares it.  A class ranks above the label
 * when its logit is greater, or equal with a smaller index, so top-1 is the
 * first maximum as everywhere else in ds. */
static int evaluate(struct bench *b, const ds_model *m, ds_device dev, int64_t batch, json_t *row, ds_error *err)
{
	ds_loader_options lo = { .batch = batch, .length = token_length(m) };
	ds_loader *l = NULL;
	ds_plan *p = NULL;
	double t0 = ds_seconds(), loss = 0;
	int64_t seen = 0, top1 = 0, top5 = 0, k = m->classes;
	int rc;

	if ((rc = ds_plan_new(m->g, m->c, batch, NULL, dev, &p, err)) || (rc = ds_loader_new(b->data, &lo, &l, err)))
		goto out;
	for (;;) {
		ds_tensor *x, *y, *px, *out;
		int64_t n;

		if ((rc = ds_cli_interrupted())) {
			ds_error_set(err, rc, "interrupted", "interrupted");
			goto out;
		}
		if ((rc = ds_loader_next(l, &x, &y, &n, err)))
			goto out;
		if (!n)
			break;
		if ((rc = ds_plan_set_batch(p, n, err)))
			goto out;
		if (!(px = ds_plan_tensor(p, m->input))) {
			rc = ds_error_set(err, DS_ERR_RUN, "plan", "the plan has no input '%s'", m->input);
			goto out;
		}
		copy_items(px, x, n, n);
		if ((rc = ds_plan_forward(p, 0, 0, err)))
			goto out;
		out = ds_plan_tensor(p, m->output);
		if (!out || out->dtype != DS_F32 || out->ndim != 2 || out->shape[1] != k) {
			rc = ds_error_set(err, DS_ERR_RUN, "plan", "the plan kept no [N, %" PRId64 "] output '%s'", k,
					  m->output);
			goto out;
		}
		for (int64_t i = 0; i < n; i++) {
			const float *z = (const float *)out->data + i * k;
			int32_t label = ((const int32_t *)y->data)[i];
			double top = z[0], sum = 0;
			int64_t above = 0;

			for (int64_t c = 0; c < k; c++) {
				if (z[c] > top)
					top = z[c];
				if (z[c] > z[label] || (z[c] == z[label] && c < label))
					above++;
			}
			for (int64_t c = 0; c < k; c++)
				sum += exp((double)z[c] - top);
			loss += top + log(sum) - (double)z[label];
			top1 += above < 1;
			top5 += above < 5;
		}
		seen += n;
	}
	rc = set(row, "top1", json_real((double)top1 / (double)seen), err);
	if (!rc)
		rc = set(row, "top5", k >= 5 ? json_real((double)top5 / (double)seen) : json_null(), err);
	if (!rc)
		rc = set(row, "loss", num(loss / (double)seen), err);
	if (!rc)
		rc = set(row, "eval_items", json_integer(seen), err);
	if (!rc)
		rc = set(row, "eval_s", json_real(ds_seconds() - t0), err);
out:
	ds_loader_free(l);
	ds_plan_free(p);
	return rc;
}

/* ------------------------------------------------------------ one configuration */

struct run {
	ds_plan *plan;
	size_t n_in;
	ds_tensor **src;             /* the batch to copy in, per graph input */
	ds_tensor **dst;             /* the plan's input tensors */
	double *ms, *compute_ms;
	size_t n, cap;
};

static void run_free(struct run *r)
{
	for (size_t i = 0; r->src && i < r->n_in; i++)
		ds_tensor_unref(r->src[i]);
	free(r->src);
	free(r->dst);
	free(r->ms);
	free(r->compute_ms);
	ds_plan_free(r->plan);
}

static int iterate(struct run *r, uint64_t step, double *input_ms, double *compute_ms, ds_error *err)
{
	double t0, t1, t2;
	int rc;

	t0 = ds_seconds();
	for (size_t i = 0; i < r->n_in; i++)
		memcpy(r->dst[i]->data, r->src[i]->data, ds_tensor_nbytes(r->src[i]));
	t1 = ds_seconds();
	rc = ds_plan_forward(r->plan, 0, step, err);
	t2 = ds_seconds();
	*input_ms = (t1 - t0) * 1e3;
	*compute_ms = (t2 - t1) * 1e3;
	return rc;
}

static int keep_sample(struct run *r, double input_ms, double compute_ms, ds_error *err)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 256;
		double *ms = ds_realloc(r->ms, cap * sizeof *ms, err), *cm;

		if (!ms)
			return DS_ERR_NOMEM;
		r->ms = ms;
		if (!(cm = ds_realloc(r->compute_ms, cap * sizeof *cm, err)))
			return DS_ERR_NOMEM;
		r->compute_ms = cm;
		r->cap = cap;
	}
	r->ms[r->n] = input_ms + compute_ms;
	r->compute_ms[r->n] = compute_ms;
	r->n++;
	return 0;
}

static int prepare(struct bench *b, const ds_model *m, struct run *r, ds_device dev, int64_t batch, ds_error *err)
{
	int rc;

	if ((rc = ds_plan_new(m->g, m->c, batch, NULL, dev, &r->plan, err)))
		return rc;
	r->n_in = ds_graph_input_count(m->g);
	r->src = ds_calloc(r->n_in, sizeof *r->src, err);
	r->dst = ds_calloc(r->n_in, sizeof *r->dst, err);
	if (!r->src || !r->dst)
		return DS_ERR_NOMEM;
	for (size_t i = 0; i < r->n_in; i++) {
		const char *name = ds_graph_input_name(m->g, i);
		ds_tensor *d = ds_plan_tensor(r->plan, name);

		if (!d)
			return ds_error_set(err, DS_ERR_RUN, "plan", "the plan has no input '%s'", name);
		r->dst[i] = d;
		if (!(r->src[i] = ds_tensor_new(d->dtype, d->ndim, d->shape, DS_CPU, err)))
			return err ? err->status : DS_ERR_NOMEM;
		if (i == 0 && b->data)
			rc = fill_data(b, m, r->src[i], err);
		else
			rc = fill_random(m, name, r->src[i], ds_mix64(b->o->seed, (uint64_t)batch, i), err);
		if (rc)
			return rc;
	}
	return 0;
}

static int warm_up(struct bench *b, struct run *r, ds_error *err)
{
	double start = ds_seconds(), in_ms, comp_ms;
	int64_t done = 0;
	int rc;

	while (b->warmup_s > 0 ? (done == 0 || ds_seconds() - start < b->warmup_s) : done < b->warmup_runs) {
		if ((rc = ds_cli_interrupted()))
			return ds_error_set(err, rc, "interrupted", "interrupted");
		if ((rc = iterate(r, (uint64_t)done, &in_ms, &comp_ms, err)))
			return rc;
		done++;
	}
	return 0;
}

static int timed(struct bench *b, struct run *r, ds_error *err)
{
	double start = ds_seconds(), in_ms, comp_ms;
	int64_t repeat = b->o->repeat > 0 ? b->o->repeat : 1;
	int rc;

	while ((int64_t)r->n < repeat || ds_seconds() - start < b->o->min_time) {
		if (r->n >= MAX_ITERATIONS)
			break;
		if ((rc = ds_cli_interrupted()))
			return ds_error_set(err, rc, "interrupted", "interrupted");
		if ((rc = iterate(r, r->n, &in_ms, &comp_ms, err)))
			return rc;
		if ((rc = keep_sample(r, in_ms, comp_ms, err)))
			return rc;
	}
	return 0;
}

static json_t *sample_array(const double *v, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_real(v[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* Fill row with the figures of a run; samples gets the raw timings. */
static int summarise(struct bench *b, const ds_model *m, struct run *r, int64_t batch, json_t *row, ds_error *err)
{
	ds_bench_stats lat, rate, comp;
	double input_sum = 0;
	int64_t flops = ds_graph_flops(m->g);
	int rc;

	for (size_t i = 0; i < r->n; i++)
		input_sum += r->ms[i] - r->compute_ms[i];
	if ((rc = ds_bench_stats_compute(r->ms, r->n, &lat, err)) ||
	    (rc = ds_bench_stats_compute(r->compute_ms, r->n, &comp, err)))
		goto out;
	/* Throughput is items over total time (batch / mean latency), not the
	 * mean of per-iteration rates, which one fast outlier inflates; its
	 * spread is the latency's, to first order. */
	rate = lat;
	rate.mean = lat.mean > 0 ? (double)batch * 1e3 / lat.mean : 0;
	rate.cv = lat.cv;
	rate.sd = rate.mean * lat.cv / 100.0;
	if ((rc = set(row, "iterations", json_integer((json_int_t)r->n), err)) ||
	    (rc = set(row, "items_per_s", num(rate.mean), err)) ||
	    (rc = set(row, "items_per_s_sd", num(rate.sd), err)) ||
	    (rc = set(row, "cv_pct", num(rate.cv), err)) ||
	    (rc = set(row, "ms_min", num(lat.min), err)) ||
	    (rc = set(row, "ms_p50", num(lat.p50), err)) ||
	    (rc = set(row, "ms_p90", num(lat.p90), err)) ||
	    (rc = set(row, "ms_p99", num(lat.p99), err)) ||
	    (rc = set(row, "ms_max", num(lat.max), err)) ||
	    (rc = set(row, "ms_mean", num(lat.mean), err)) ||
	    (rc = set(row, "input_ms", num(input_sum / (double)r->n), err)) ||
	    (rc = set(row, "compute_ms", num(comp.mean), err)) ||
	    (rc = set(row, "gflop_per_s", flops >= 0 ? num((double)flops * rate.mean / 1e9) : json_null(), err)) ||
	    (rc = set(row, "arena_bytes", json_integer((json_int_t)ds_plan_arena_bytes(r->plan)), err)) ||
	    (rc = set(row, "unstable", json_boolean(r->n > 1 && rate.cv > b->o->max_cv), err)))
		goto out;
	if (r->n > 1 && rate.cv > b->o->max_cv)
		ds_log_warn(b->o->cli, "%s: %s, %" JSON_INTEGER_FORMAT " threads, batch %" PRId64
			    ": throughput varies by %.1f%% (above --max-cv %g%%); close other programs or raise --min-time",
			    m->path, json_string_value(json_object_get(row, "device")),
			    json_integer_value(json_object_get(row, "threads")), batch, rate.cv, b->o->max_cv);
	if (b->samples) {
		json_t *s = json_pack("{s:O, s:O, s:O, s:O, s:o, s:o}", "model", json_object_get(row, "model"),
				      "device", json_object_get(row, "device"), "threads",
				      json_object_get(row, "threads"), "batch", json_object_get(row, "batch"), "ms",
				      sample_array(r->ms, r->n), "compute_ms", sample_array(r->compute_ms, r->n));

		if (!s || json_array_append_new(b->samples, s))
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	}
out:
	return rc;
}

/* Per-node times over as many runs as were timed (at least 10), in runs of
 * their own: one row per node, the nodes in schedule order. */
static int profile_runs(struct bench *b, struct run *r, const json_t *row, ds_error *err)
{
	size_t runs = r->n > 10 ? r->n : 10, nodes = ds_plan_node_count(r->plan);
	double in_ms, comp_ms, total = 0;
	int rc = 0;

	ds_plan_profile(r->plan, 1);
	ds_plan_profile_reset(r->plan);
	for (size_t i = 0; i < runs && !rc; i++) {
		if ((rc = ds_cli_interrupted()))
			return ds_error_set(err, rc, "interrupted", "interrupted");
		rc = iterate(r, i, &in_ms, &comp_ms, err);
	}
	ds_plan_profile(r->plan, 0);
	for (size_t k = 0; k < nodes && !rc; k++) {
		ds_node_profile np;

		ds_plan_node_profile(r->plan, k, &np);
		total += np.forward_s;
	}
	for (size_t k = 0; k < nodes && !rc; k++) {
		ds_node_profile np;
		double ms;
		json_t *p;

		ds_plan_node_profile(r->plan, k, &np);
		ms = np.forward_calls ? np.forward_s * 1e3 / (double)np.forward_calls : 0;
		p = json_pack("{s:O, s:O, s:O, s:O, s:s, s:s, s:o, s:o, s:o}", "model", json_object_get(row, "model"),
			      "device", json_object_get(row, "device"), "threads", json_object_get(row, "threads"),
			      "batch", json_object_get(row, "batch"), "node", np.name, "op", np.op, "ms", num(ms),
			      "pct", num(total > 0 ? 100.0 * np.forward_s / total : 0),
			      "gflop_per_s", np.flops > 0 && ms > 0 ? num((double)np.flops / (ms * 1e6)) : json_null());
		if (!p || json_array_append_new(b->profile, p))
			rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	}
	return rc;
}

static int run_config(struct bench *b, const ds_model *m, const struct device_slot *ds, int64_t batch,
		      json_t *row, ds_error *err)
{
	struct run r = { 0 };
	int rc;

	if (ds->rc)
		return ds_error_set(err, ds->rc, ds->err.code, "%s", ds->err.message);
	ds_bench_peak_reset();
	if ((rc = prepare(b, m, &r, ds->dev, batch, err)) || (rc = warm_up(b, &r, err)) || (rc = timed(b, &r, err)) ||
	    (rc = summarise(b, m, &r, batch, row, err)))
		goto out;
	if ((rc = set(row, "peak_rss_bytes", json_integer((json_int_t)ds_bench_peak_rss()), err)))
		goto out;
	if (b->profile)
		rc = profile_runs(b, &r, row, err);
out:
	run_free(&r);
	return rc;
}

/* ------------------------------------------------------------ failures */

/* A failure is fatal unless --continue-after-failure: then the row says
 * why, its figures stay null, and the run goes on. */
static int failed(struct bench *b, json_t *row, int rc, ds_error *e, int warn, ds_error *err)
{
	if (!b->o->continue_after_failure) {
		*err = *e;
		return rc;
	}
	if (!b->first.status)
		b->first = *e;
	if (warn)
		ds_log_warn(b->o->cli, "%s", e->message);
	if (set(row, "status", json_string("failed"), err) || set(row, "error", json_string(e->message), err))
		return DS_ERR_NOMEM;
	return 0;
}

static json_t *config_row(const char *model, const char *device, int64_t threads, int64_t batch)
{
	json_t *row = null_row(result_cols, DS_ARRAY_LEN(result_cols));

	if (row && (json_object_set_new(row, "model", json_string(model)) ||
		    json_object_set_new(row, "device", json_string(device)) ||
		    json_object_set_new(row, "threads", json_integer(threads)) ||
		    json_object_set_new(row, "batch", json_integer(batch)))) {
		json_decref(row);
		return NULL;
	}
	return row;
}

/* Every configuration of one model; model_rc is the status of loading and
 * checking it (its error in model_err), which fails them all. */
static int sweep(struct bench *b, const ds_model *m, const char *path, int model_rc, ds_error *model_err,
		 ds_error *err)
{
	for (size_t d = 0; d < b->n_dev; d++) {
		char name[32];
		const char *dev_name = b->dev[d].rc ? b->dev[d].text : ds_device_name(b->dev[d].dev, name, sizeof name);

		for (size_t t = 0; t < b->n_threads; t++) {
			int threads;

			ds_threads_set((int)b->threads[t]);
			threads = ds_threads_get();
			for (size_t k = 0; k < b->n_batch; k++) {
				json_t *row = config_row(path, dev_name, threads, b->batch[k]);
				ds_error e = { 0 };
				int rc;

				if (!row || json_array_append_new(b->results, row))
					return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
				b->configs++;
				if (model_rc) {
					rc = model_rc;
					e = *model_err;
				} else {
					rc = run_config(b, m, &b->dev[d], b->batch[k], row, &e);
					if (rc && rc != DS_ERR_INTERRUPTED)
						ds_error_prefix(&e, "%s: %s, %d threads, batch %" PRId64, path, dev_name,
								threads, b->batch[k]);
				}
				if (rc == DS_ERR_INTERRUPTED) {
					*err = e;
					return rc;
				}
				if (rc) {
					b->failed++;
					/* A model that failed to load was reported once already. */
					if ((rc = failed(b, row, rc, &e, !model_rc, err)))
						return rc;
				} else if ((rc = set(row, "status", json_string("ok"), err))) {
					return rc;
				}
				ds_cli_event(b->o->cli, "config", row);
				ds_log_verbose(b->o->cli, "%s: %s, %d threads, batch %" PRId64 ": %.1f items/s", path,
					       dev_name, threads, b->batch[k], get_num(row, "items_per_s"));
				ds_progress_update(b->progress, b->configs);
			}
		}
	}
	return 0;
}

/* ------------------------------------------------------------ one model */

static int describe(const ds_model *m, const char *path, json_t *row, ds_error *err)
{
	const ds_shape *in = ds_graph_input_shape(m->g, 0);
	struct stat st;
	char shape[128], text[160];
	int64_t flops = ds_graph_flops(m->g);
	int rc;

	snprintf(text, sizeof text, "%s %s", ds_dtype_name(in->dtype), ds_shape_format(in->ndim, in->dim, shape, sizeof shape));
	if ((rc = set(row, "file_bytes", strcmp(path, "-") && stat(path, &st) == 0 ? json_integer(st.st_size) : json_null(), err)) ||
	    (rc = set(row, "weight_bytes", json_integer((json_int_t)ds_model_bytes(m)), err)) ||
	    (rc = set(row, "params", json_integer(ds_graph_param_count(m->g)), err)) ||
	    (rc = set(row, "flops_per_item", flops >= 0 ? json_integer(flops) : json_null(), err)) ||
	    (rc = set(row, "input", json_string(text), err)) ||
	    (rc = set(row, "classes", m->classes ? json_integer(m->classes) : json_null(), err)))
		return rc;
	return 0;
}

static int bench_model(struct bench *b, const char *path, ds_error *err)
{
	json_t *row = null_row(model_cols, DS_ARRAY_LEN(model_cols));
	ds_model *m = NULL;
	ds_error e = { 0 };
	int rc;

	if (!row || json_object_set_new(row, "model", json_string(path)) || json_array_append_new(b->models, row))
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	rc = ds_model_load(path, b->o->load_flags, &m, &e);
	if (!rc)
		rc = describe(m, path, row, &e);
	/* Labels need a classifier; without one the stream still feeds inputs. */
	if (!rc && b->data && (rc = ds_dataset_check(b->data, m->g, m->classes ? m->classes : INT64_MAX, &e)))
		ds_error_prefix(&e, "%s", path);
	if (!rc && b->data && m->classes) {
		int64_t batch = 0;

		for (size_t k = 0; k < b->n_batch; k++)
			if (b->batch[k] > batch)
				batch = b->batch[k];
		/* On the first device that exists, with the first thread count. */
		for (size_t d = 0; d < b->n_dev; d++) {
			if (b->dev[d].rc)
				continue;
			ds_threads_set((int)b->threads[0]);
			if ((rc = evaluate(b, m, b->dev[d].dev, batch, row, &e)) && rc != DS_ERR_INTERRUPTED)
				ds_error_prefix(&e, "%s: accuracy", path);
			break;
		}
	}
	if (rc == DS_ERR_INTERRUPTED) {
		*err = e;
		goto out;
	}
	if (rc) {
		int model_rc = rc;

		if ((rc = failed(b, row, model_rc, &e, 1, err)))
			goto out;
		rc = sweep(b, NULL, path, model_rc, &e, err);
		goto out;
	}
	if ((rc = set(row, "status", json_string("ok"), err)))
		goto out;
	rc = sweep(b, m, path, 0, NULL, err);
out:
	ds_model_free(m);
	return rc;
}

/* ------------------------------------------------------------ compare */

static double ratio(double a, double b)
{
	return isfinite(a) && isfinite(b) && b != 0 ? a / b : NAN;
}

/* Every row as ratios to the first model's row at the same configuration:
 * speed-up above 1 is faster, a latency or size ratio below 1 smaller, an
 * accuracy delta above 0 better. */
static int compare(struct bench *b, json_t *report, ds_error *err)
{
	size_t per_model = b->n_dev * b->n_threads * b->n_batch, n = json_array_size(b->results);
	json_t *rows = json_array();
	const json_t *base_model = json_array_get(b->models, 0);

	if (!rows)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	for (size_t i = 0; i < n; i++) {
		const json_t *r = json_array_get(b->results, i), *base = json_array_get(b->results, i % per_model);
		const json_t *mr = json_array_get(b->models, i / per_model);
		double size = get_num(mr, "file_bytes"), base_size = get_num(base_model, "file_bytes");
		json_t *row;

		if (!isfinite(size) || !isfinite(base_size)) {
			size = get_num(mr, "weight_bytes");
			base_size = get_num(base_model, "weight_bytes");
		}
		row = json_pack("{s:O, s:O, s:O, s:O, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
				"model", json_object_get(r, "model"), "device", json_object_get(r, "device"),
				"threads", json_object_get(r, "threads"), "batch", json_object_get(r, "batch"),
				"speedup", num(ratio(get_num(r, "items_per_s"), get_num(base, "items_per_s"))),
				"latency_ratio", num(ratio(get_num(r, "ms_p50"), get_num(base, "ms_p50"))),
				"size_ratio", num(ratio(size, base_size)),
				"params_ratio", num(ratio(get_num(mr, "params"), get_num(base_model, "params"))),
				"flops_ratio", num(ratio(get_num(mr, "flops_per_item"), get_num(base_model, "flops_per_item"))),
				"top1_delta", num(get_num(mr, "top1") - get_num(base_model, "top1")),
				"top5_delta", num(get_num(mr, "top5") - get_num(base_model, "top5")),
				"loss_delta", num(get_num(mr, "loss") - get_num(base_model, "loss")));
		if (!row || json_array_append_new(rows, row)) {
			json_decref(rows);
			return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		}
	}
	return set(report, "comparison", rows, err);
}

/* ------------------------------------------------------------ the run */

static int parse_devices(struct bench *b, const char *text, ds_error *err)
{
	const char *p = text && *text ? text : "auto";
	size_t n = 1;

	for (const char *q = p; *q; q++)
		n += *q == ',';
	if (!(b->dev = ds_calloc(n, sizeof *b->dev, err)))
		return DS_ERR_NOMEM;
	for (;;) {
		size_t len = strcspn(p, ",");
		struct device_slot *s = &b->dev[b->n_dev++];
		int is_auto, rc;

		if (!(s->text = ds_malloc(len + 1, err)))
			return DS_ERR_NOMEM;
		memcpy(s->text, p, len);
		s->text[len] = '\0';
		if ((rc = ds_device_parse(s->text, &s->dev, &is_auto, err)))
			return rc;
		s->rc = ds_device_resolve(s->text, &s->dev, &s->err);
		if (s->rc && !b->o->continue_after_failure) {
			*err = s->err;
			return s->rc;
		}
		if (!p[len])
			break;
		p += len + 1;
	}
	return 0;
}

static json_t *header(const struct bench *b)
{
	const ds_bench_options *o = b->o;
	json_t *h = json_object();
	char warmup[64];

	if (b->warmup_s > 0)
		snprintf(warmup, sizeof warmup, "%gs", b->warmup_s);
	else
		snprintf(warmup, sizeof warmup, "%" PRId64 " run%s", b->warmup_runs, b->warmup_runs == 1 ? "" : "s");
	if (h && !json_object_set_new(h, "version", json_string(ds_version())) &&
	    !json_object_set_new(h, "blas", json_string(ds_blas_core())) &&
	    !json_object_set_new(h, "data", json_string(o->data ? o->data : "random")) &&
	    !json_object_set_new(h, "seed", json_integer((json_int_t)o->seed)) &&
	    !json_object_set_new(h, "warmup", json_string(warmup)) &&
	    !json_object_set_new(h, "repeat", json_integer(o->repeat > 0 ? o->repeat : 1)) &&
	    !json_object_set_new(h, "min_time_s", json_real(o->min_time)) &&
	    !json_object_set_new(h, "max_cv_pct", json_real(o->max_cv)))
		return h;
	json_decref(h);
	return NULL;
}

int ds_bench_run(const ds_bench_options *o, json_t **report, ds_error *err)
{
	struct bench b = { 0 };
	json_t *doc = NULL;
	int rc;

	*report = NULL;
	b.o = o;
	if ((rc = ds_bench_parse_ints(o->batch ? o->batch : "1,64", "--batch", 1, MAX_BATCH, &b.batch, &b.n_batch, err)) ||
	    (rc = ds_bench_parse_ints(o->threads ? o->threads : "0", "--threads", 0, MAX_THREADS, &b.threads,
				      &b.n_threads, err)) ||
	    (rc = ds_bench_parse_warmup(o->warmup ? o->warmup : "0.2s", &b.warmup_runs, &b.warmup_s, err)))
		goto out;
	if (!(o->min_time >= 0 && o->min_time <= 86400) || o->repeat < 0 || !(o->max_cv >= 0)) {
		rc = ds_error_set(err, DS_ERR_USAGE, "bad_value",
				  "--min-time, --repeat and --max-cv take numbers of 0 or more");
		goto out;
	}
	if ((rc = parse_devices(&b, o->device, err)))
		goto out;
	if (o->model_count == 0) {
		rc = ds_error_set(err, DS_ERR_USAGE, "missing_operand", "no model: give --model FILE or FILE operands");
		goto out;
	}
	if (o->data && (rc = ds_dataset_load(o->data, &b.data, err)))
		goto out;
	doc = header(&b);
	b.models = json_array();
	b.results = json_array();
	if (o->keep_samples)
		b.samples = json_array();
	if (o->profile)
		b.profile = json_array();
	if (!doc || !b.models || !b.results || (o->keep_samples && !b.samples) || (o->profile && !b.profile)) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	b.progress = ds_progress_start(o->cli, "bench", (uint64_t)(o->model_count * b.n_dev * b.n_threads * b.n_batch),
				       "configs");
	for (size_t i = 0; i < o->model_count && !rc; i++)
		rc = bench_model(&b, o->models[i], err);
	ds_progress_end(b.progress);
	if (rc)
		goto out;
	if ((rc = set(doc, "configurations", json_integer((json_int_t)b.configs), err)) ||
	    (rc = set(doc, "failed", json_integer((json_int_t)b.failed), err)) ||
	    (rc = set(doc, "error_rate", json_real(b.configs ? (double)b.failed / (double)b.configs : 0), err)) ||
	    (rc = set(doc, "models", json_incref(b.models), err)) ||
	    (rc = set(doc, "results", json_incref(b.results), err)))
		goto out;
	if (o->compare && (rc = compare(&b, doc, err)))
		goto out;
	if (b.profile && (rc = set(doc, "profile", json_incref(b.profile), err)))
		goto out;
	if (b.samples && (rc = set(doc, "samples", json_incref(b.samples), err)))
		goto out;
	*report = doc;
	doc = NULL;
	if (b.failed)
		rc = ds_error_set(err, DS_ERR_RUN, "failed_configurations",
				  "%zu of %zu configurations failed; the first: %s", b.failed, b.configs, b.first.message);
out:
	ds_threads_set(0);
	json_decref(doc);
	json_decref(b.models);
	json_decref(b.results);
	json_decref(b.samples);
	json_decref(b.profile);
	ds_dataset_free(b.data);
	for (size_t i = 0; i < b.n_dev; i++)
		free(b.dev[i].text);
	free(b.dev);
	free(b.batch);
	free(b.threads);
	return rc;
}

/* ------------------------------------------------------------ export */

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

int ds_bench_write_times(const json_t *report, const char *path, ds_error *err)
{
	const json_t *samples = json_object_get(report, "samples"), *s;
	ds_format fmt = ends_with(path, ".csv") ? DS_FORMAT_CSV : DS_FORMAT_JSONL;
	ds_writer *w = NULL;
	ds_printer *p = NULL;
	size_t i;
	int rc;

	if (!json_is_array(samples))
		return ds_error_set(err, DS_ERR_RUN, "no_samples", "the report keeps no per-iteration timings");
	if ((rc = ds_writer_open_text(path, &w, err)))
		return rc;
	if (!(p = ds_printer_new(ds_writer_file(w), fmt))) {
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto out;
	}
	json_array_foreach(samples, i, s) {
		const json_t *ms = json_object_get(s, "ms"), *cm = json_object_get(s, "compute_ms");

		for (size_t k = 0; k < json_array_size(ms) && !rc; k++) {
			json_t *rec = json_pack("{s:O, s:O, s:O, s:O, s:I, s:O, s:O}", "model", json_object_get(s, "model"),
						"device", json_object_get(s, "device"), "threads",
						json_object_get(s, "threads"), "batch", json_object_get(s, "batch"),
						"iteration", (json_int_t)k + 1, "ms", json_array_get(ms, k),
						"compute_ms", json_array_get(cm, k));

			rc = rec ? ds_printer_record(p, rec, err)
				 : ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
			json_decref(rec);
		}
		if (rc)
			goto out;
	}
	rc = ds_printer_free(p, err);
	p = NULL;
	if (!rc) {
		rc = ds_writer_commit(w, err);
		w = NULL;
	}
out:
	if (p)
		ds_printer_free(p, NULL);
	ds_writer_abort(w);
	return rc;
}
