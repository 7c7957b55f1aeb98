/* train.c - the training loop of ds-train: plan, optimizer and schedule
 * over batches from the loader, validation each epoch, the best model kept,
 * checkpoints that resume exactly.
 *
 * Exact resume rests on one rule: everything random is keyed by the seed and
 * a counter the checkpoint records (the step, the epoch, the batch of the
 * epoch), never drawn from a generator whose state would have to be saved.
 * A checkpoint is taken only between steps, when the gradients are zero, so
 * the parameters, the optimizer state (ds_optim_save) and those counters are
 * the whole state. */
#include "train.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ rng */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void ds_rng_seed(ds_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t ds_rng_next(ds_rng *r)
{
	uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double ds_rng_uniform(ds_rng *r)
{
	return (double)(ds_rng_next(r) >> 11) * 0x1.0p-53;
}

double ds_rng_normal(ds_rng *r)
{
	double u1 = 1.0 - ds_rng_uniform(r), u2 = ds_rng_uniform(r);

	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t ds_rng_below(ds_rng *r, uint64_t n)
{
	uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;

	do
		x = ds_rng_next(r);
	while (x >= limit);
	return x % n;
}

uint64_t ds_mix64(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t x = a ^ rotl(b, 21) ^ rotl(c, 42);

	splitmix64(&x);
	return splitmix64(&x);
}

/* -------------------------------------------------------------- trainer */

#define LOSS_VALUE "ds.train.loss"
#define LABEL_VALUE "ds.train.labels"
#define TEACHER_VALUE "ds.train.teacher"

struct trainer {
	ds_train_options o;
	const ds_cli *cli;
	ds_error *err;

	ds_dataset *train, *val;
	ds_container *model;         /* parameters and the model's metadata */
	ds_container *best;          /* copies of the parameters at the best validation */
	ds_graph *g;                 /* the training graph: the model plus the loss */
	ds_plan *plan;
	ds_optim *opt;
	ds_loader *loader, *vloader;
	char *input, *logits;

	/* --teacher: its model, graph and inference plan, whose logits feed
	 * the distill node of the training graph each batch. */
	ds_container *teacher;
	ds_graph *teacher_g;
	ds_plan *teacher_plan;
	const char *teacher_input, *teacher_logits;
	int64_t teacher_classes;
	int64_t classes, item_elems;
	size_t item_bytes;

	/* what a checkpoint records */
	int64_t epoch, batch, step;
	double best_acc;
	int64_t best_epoch;
	double ep_loss;              /* sums over the epoch so far */
	int64_t ep_correct, ep_seen;
	json_t *epochs;              /* one record per finished epoch */

	int64_t steps_per_epoch, total_steps;
	double train_seconds;
	int64_t images;
	ds_progress *progress;

	/* --profile: whole steps and the optimizer's part of them */
	double prof_step_s, prof_optim_s;
	int64_t prof_steps;
};


static int nomem(ds_error *err)
{
	return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
}

/* A container with the model's metadata (ds.checksums and ds.train left
 * out) and, when params is given, those tensors under their names. */
static int copy_model(const ds_container *meta, const ds_container *params, const char *skip_prefix,
		      ds_container **out, ds_error *err)
{
	ds_container *c = ds_container_new();
	int rc = 0;

	*out = NULL;
	if (!c)
		return nomem(err);
	for (size_t i = 0; i < ds_container_meta_count(meta); i++) {
		const char *k = ds_container_meta_key(meta, i);

		if (!strcmp(k, "ds.checksums") || !strcmp(k, "ds.train"))
			continue;
		if ((rc = ds_container_meta_set(c, k, ds_container_meta_get(meta, k), err)))
			goto out;
	}
	for (size_t i = 0; params && i < ds_container_count(params); i++) {
		const char *name = ds_container_name(params, i);

		if (skip_prefix && !strncmp(name, skip_prefix, strlen(skip_prefix)))
			continue;
		if ((rc = ds_container_add(c, name, ds_container_tensor(params, i), err)))
			goto out;
	}
out:
	if (rc)
		ds_container_free(c);
	else
		*out = c;
	return rc;
}

/* The model's graph with the labels input and a cross-entropy node added,
 * and dropout overridden when asked. */
static int training_graph(struct trainer *t, ds_error *err)
{
	json_t *graph = NULL, *nodes, *node, *outputs;
	char *text = NULL;
	size_t i;
	int rc, rewrites = 0;

	if ((rc = ds_container_meta_json(t->model, "ds.graph", &graph, err)))
		return rc;
	if (!json_is_object(graph) || !json_is_array(json_object_get(graph, "inputs")) ||
	    !json_is_array(nodes = json_object_get(graph, "nodes")) ||
	    !json_is_array(outputs = json_object_get(graph, "outputs")) || !json_array_size(outputs) ||
	    !json_is_string(json_array_get(outputs, 0)) ||
	    !json_array_size(json_object_get(graph, "inputs"))) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_graph", "ds.graph: the model has no graph with an input and an output");
		goto out;
	}
	if (!(t->logits = ds_strdup(json_string_value(json_array_get(outputs, 0)), err)) ||
	    !(t->input = ds_strdup(json_string_value(json_object_get(json_array_get(json_object_get(graph, "inputs"), 0), "name")) ?
				    json_string_value(json_object_get(json_array_get(json_object_get(graph, "inputs"), 0), "name")) : "x",
				    err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	if (t->o.dropout >= 0) {
		json_array_foreach(nodes, i, node) {
			const json_t *op = json_object_get(node, "op");

			if (json_is_string(op) && !strcmp(json_string_value(op), "dropout")) {
				json_t *attrs = json_object_get(node, "attrs");

				if (!json_is_object(attrs)) {
					attrs = json_object();
					json_object_set_new(node, "attrs", attrs);
				}
				json_object_set_new(attrs, "p", json_real(t->o.dropout));
			}
		}
	}
	json_array_append_new(json_object_get(graph, "inputs"),
			      json_pack("{s:s, s:s, s:[i]}", "name", LABEL_VALUE, "dtype", "I32", "shape", -1));
	if (!t->teacher) {
		json_array_append_new(nodes, json_pack("{s:s, s:s, s:[s, s], s:[s], s:{s:f}}", "op", "cross_entropy",
						       "name", LOSS_VALUE, "inputs", t->logits, LABEL_VALUE,
						       "outputs", LOSS_VALUE, "attrs", "label_smoothing",
						       t->o.label_smoothing));
	} else {
		/* loss = (1 - w) cross-entropy + w T^2 KL(teacher || student),
		 * both softened by T, as Hinton et al. define distillation. */
		json_array_append_new(json_object_get(graph, "inputs"),
				      json_pack("{s:s, s:s, s:[i, I]}", "name", TEACHER_VALUE, "dtype", "F32",
						"shape", -1, (json_int_t)t->teacher_classes));
		json_array_append_new(nodes, json_pack("{s:s, s:s, s:[s, s], s:[s], s:{s:f, s:f}}", "op",
						       "cross_entropy", "name", "ds.train.loss.hard", "inputs", t->logits,
						       LABEL_VALUE, "outputs", "ds.train.loss.hard", "attrs", "label_smoothing",
						       t->o.label_smoothing, "weight", 1.0 - t->o.distill_weight));
		json_array_append_new(nodes, json_pack("{s:s, s:s, s:[s, s], s:[s], s:{s:f, s:f}}", "op", "distill",
						       "name", "ds.train.loss.soft", "inputs", t->logits, TEACHER_VALUE,
						       "outputs", "ds.train.loss.soft", "attrs", "temperature", t->o.temperature,
						       "weight", t->o.distill_weight));
		json_array_append_new(nodes, json_pack("{s:s, s:s, s:[s, s], s:[s]}", "op", "add", "name", LOSS_VALUE,
						       "inputs", "ds.train.loss.hard", "ds.train.loss.soft", "outputs", LOSS_VALUE));
	}
	json_array_insert_new(outputs, 0, json_string(LOSS_VALUE));
	if ((rc = ds_train_graph_rewrite(graph, t->model, DS_TRAIN_REWRITES_ALL, &rewrites, err)))
		goto out;
	if (rewrites)
		ds_log_verbose(t->cli, "training graph: %d rewrites (ReLU after max_pool, max_pool into conv2d)",
			       rewrites);
	if (!(text = json_dumps(graph, JSON_COMPACT))) {
		rc = nomem(err);
		goto out;
	}
	rc = ds_graph_parse(text, t->model, &t->g, err);
out:
	free(text);
	json_decref(graph);
	return rc;
}

/* The logits output must be [N, K]; K is the class count. */
static int find_classes(struct trainer *t, ds_error *err)
{
	const ds_shape *s = ds_graph_shape(t->g, t->logits);
	json_t *labels = NULL;
	int rc;

	if (!s || s->ndim != 2)
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "graph: output '%s' is not [N, K] logits",
				    t->logits);
	t->classes = s->dim[1];
	if ((rc = ds_container_meta_json(t->model, "ds.labels", &labels, err)))
		return rc;
	if (labels && json_array_size(labels) != (size_t)t->classes)
		rc = ds_error_set(err, DS_ERR_DATA, "bad_metadata",
				  "ds.labels names %zu classes, the logits have %" PRId64,
				  json_array_size(labels), t->classes);
	json_decref(labels);
	return rc;
}

/* Data given to a model that has labels must name the same classes. */
static int check_labels(struct trainer *t, const ds_dataset *d, const char *path, ds_error *err)
{
	json_t *labels = NULL;
	const json_t *dl = ds_dataset_labels(d);
	int rc;

	if ((rc = ds_container_meta_json(t->model, "ds.labels", &labels, err)))
		return rc;
	if (labels && dl && !json_equal(labels, (json_t *)dl))
		rc = ds_error_set(err, DS_ERR_DATA, "label_mismatch",
				  "%s: ds.labels differ from the model's classes", path);
	json_decref(labels);
	return rc;
}

/* ds.train of a checkpoint: the counters and the options that must not change. */
static json_t *train_state(const struct trainer *t)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:f, s:I, s:f, s:I, s:I, s:O, s:{s:I, s:I, s:s, s:s, s:I}}",
			 "epoch", (json_int_t)t->epoch, "batch", (json_int_t)t->batch,
			 "step", (json_int_t)t->step, "seed", (json_int_t)t->o.seed,
			 "best_accuracy", t->best_acc, "best_epoch", (json_int_t)t->best_epoch,
			 "epoch_loss", t->ep_loss, "epoch_correct", (json_int_t)t->ep_correct,
			 "epoch_seen", (json_int_t)t->ep_seen, "epochs", t->epochs,
			 "options", "batch", (json_int_t)t->o.batch, "accum", (json_int_t)t->o.accum,
			 "optimizer", t->o.optim.kind, "schedule", t->o.schedule.kind,
			 "epochs", (json_int_t)t->o.epochs);
}

static int write_container(const char *path, ds_container *c, ds_error *err)
{
	ds_writer *w = NULL;
	int rc;

	if ((rc = ds_writer_open(path, &w, err)))
		return rc;
	if ((rc = ds_writer_put(w, c, err))) {
		ds_writer_abort(w);
		return rc;
	}
	return ds_writer_commit(w, err);
}

static int save_checkpoint(struct trainer *t, const char *path, ds_error *err)
{
	ds_container *c = NULL;
	json_t *state = NULL;
	int rc;

	if ((rc = copy_model(t->model, t->model, NULL, &c, err)) || (rc = ds_optim_save(t->opt, c, err)))
		goto out;
	for (size_t i = 0; t->best && i < ds_container_count(t->best); i++) {
		char name[512];

		snprintf(name, sizeof name, "best.%s", ds_container_name(t->best, i));
		if ((rc = ds_container_add(c, name, ds_container_tensor(t->best, i), err)))
			goto out;
	}
	if (!(state = train_state(t))) {
		rc = nomem(err);
		goto out;
	}
	if ((rc = ds_container_meta_set_json(c, "ds.train", state, err)))
		goto out;
	rc = write_container(path, c, err);
	if (!rc) {
		json_t *ev = json_pack("{s:s, s:I}", "path", path, "step", (json_int_t)t->step);

		rc = ds_cli_event(t->cli, "checkpoint", ev);
		json_decref(ev);
	}
out:
	json_decref(state);
	ds_container_free(c);
	return rc;
}

/* Keep a copy of every parameter (running statistics included). */
static int keep_best(struct trainer *t, ds_error *err)
{
	int rc = 0;

	if (!t->best) {
		if (!(t->best = ds_container_new()))
			return nomem(err);
		for (size_t i = 0; !rc && i < ds_container_count(t->model); i++) {
			ds_tensor *p = ds_container_tensor(t->model, i);
			ds_tensor *copy = ds_tensor_new(p->dtype, p->ndim, p->shape, DS_CPU, err);

			if (!copy)
				return err ? err->status : DS_ERR_NOMEM;
			rc = ds_container_add(t->best, ds_container_name(t->model, i), copy, err);
			ds_tensor_unref(copy);
		}
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < ds_container_count(t->best); i++) {
		ds_tensor *dst = ds_container_tensor(t->best, i);
		const ds_tensor *src = ds_container_get(t->model, ds_container_name(t->best, i));

		if (src)
			memcpy(dst->data, src->data, ds_tensor_nbytes(dst));
	}
	return 0;
}

/* ------------------------------------------------------------ setup */

static int load_model(struct trainer *t, ds_error *err)
{
	const ds_train_options *o = &t->o;
	ds_container *loaded = NULL;
	const char *from = o->resume ? o->resume : o->finetune;
	int rc;

	if (!from) {
		ds_zoo_options z = {
			.arch = o->arch ? o->arch : "cnn-small",
			.preprocess = ds_dataset_preprocess(t->train),
			.labels = ds_dataset_labels(t->train),
			.seed = o->seed,
		};

		return ds_zoo_build(&z, &t->model, err);
	}
	if ((rc = ds_container_load(from, 0, &loaded, err)))
		return rc;
	if (o->resume) {
		json_t *state = NULL;

		if ((rc = ds_container_meta_json(loaded, "ds.train", &state, err)))
			goto out;
		if (!state) {
			rc = ds_error_set(err, DS_ERR_DATA, "not_checkpoint", "%s: no ds.train: not a checkpoint", from);
			goto out;
		}
		json_decref(state);
	}
	/* The parameters only: optimizer state and best copies are read later. */
	if ((rc = copy_model(loaded, NULL, NULL, &t->model, err)))
		goto out;
	for (size_t i = 0; i < ds_container_count(loaded); i++) {
		const char *name = ds_container_name(loaded, i);
		ds_tensor *src = ds_container_tensor(loaded, i), *own;

		if (!strncmp(name, "opt.", 4) || !strncmp(name, "best.", 5))
			continue;
		/* A private copy: the loaded bytes may be a read-only mapping. */
		if (!(own = ds_tensor_to(src, DS_CPU, err))) {
			rc = err ? err->status : DS_ERR_NOMEM;
			goto out;
		}
		rc = ds_container_add(t->model, name, own, err);
		ds_tensor_unref(own);
		if (rc)
			goto out;
	}
out:
	ds_container_free(loaded);
	return rc;
}

/* Restore the counters, the optimizer and the best copy of a checkpoint. */
static int resume_state(struct trainer *t, ds_error *err)
{
	ds_container *ck = NULL;
	json_t *state = NULL, *opts;
	int rc;

	if ((rc = ds_container_load(t->o.resume, 0, &ck, err)) ||
	    (rc = ds_container_meta_json(ck, "ds.train", &state, err)))
		goto out;
	opts = json_object_get(state, "options");
	if (json_integer_value(json_object_get(opts, "batch")) != t->o.batch ||
	    json_integer_value(json_object_get(opts, "accum")) != t->o.accum ||
	    (uint64_t)json_integer_value(json_object_get(state, "seed")) != t->o.seed) {
		rc = ds_error_set(err, DS_ERR_USAGE, "usage",
				  "--resume: %s was made with --batch %" JSON_INTEGER_FORMAT " --accum %" JSON_INTEGER_FORMAT
				  " --seed %" JSON_INTEGER_FORMAT "; give the same to continue it",
				  t->o.resume, json_integer_value(json_object_get(opts, "batch")),
				  json_integer_value(json_object_get(opts, "accum")),
				  json_integer_value(json_object_get(state, "seed")));
		goto out;
	}
	t->epoch = json_integer_value(json_object_get(state, "epoch"));
	t->batch = json_integer_value(json_object_get(state, "batch"));
	t->step = json_integer_value(json_object_get(state, "step"));
	t->best_acc = json_number_value(json_object_get(state, "best_accuracy"));
	t->best_epoch = json_integer_value(json_object_get(state, "best_epoch"));
	t->ep_loss = json_number_value(json_object_get(state, "epoch_loss"));
	t->ep_correct = json_integer_value(json_object_get(state, "epoch_correct"));
	t->ep_seen = json_integer_value(json_object_get(state, "epoch_seen"));
	if (json_is_array(json_object_get(state, "epochs"))) {
		json_decref(t->epochs);
		t->epochs = json_deep_copy(json_object_get(state, "epochs"));
	}
	if ((rc = ds_optim_load(t->opt, ck, err)))
		goto out;
	for (size_t i = 0; i < ds_container_count(ck); i++) {
		const char *name = ds_container_name(ck, i);

		if (strncmp(name, "best.", 5))
			continue;
		if (!t->best && (rc = keep_best(t, err)))
			goto out;
		{
			ds_tensor *dst = ds_container_get(t->best, name + 5);
			const ds_tensor *src = ds_container_tensor(ck, i);

			if (!dst || ds_tensor_nbytes(dst) != ds_tensor_nbytes(src)) {
				rc = ds_error_set(err, DS_ERR_DATA, "bad_checkpoint", "%s: tensor '%s': does not match the model",
						  t->o.resume, name);
				goto out;
			}
			memcpy(dst->data, src->data, ds_tensor_nbytes(dst));
		}
	}
out:
	json_decref(state);
	ds_container_free(ck);
	return rc;
}

/* ------------------------------------------------------------- steps */

/* Copy a loader batch into the plan's inputs and run forward. */
static int forward_batch(struct trainer *t, const ds_tensor *x, const ds_tensor *y, int64_t n,
			 int training, uint64_t key, double *loss, int64_t *correct, ds_error *err)
{
	ds_tensor *px, *py, *pl, *lg;
	const float *logits;
	int rc;

	if ((rc = ds_plan_set_batch(t->plan, n, err)))
		return rc;
	px = ds_plan_tensor(t->plan, t->input);
	py = ds_plan_tensor(t->plan, LABEL_VALUE);
	if (!px || !py)
		return ds_error_set(err, DS_ERR_RUN, "plan", "the plan has no input '%s'", px ? LABEL_VALUE : t->input);
	memcpy(px->data, x->data, (size_t)n * t->item_bytes);
	memcpy(py->data, y->data, (size_t)n * sizeof(int32_t));
	if (t->teacher_plan) {
		ds_tensor *tx, *tl, *pt;

		if ((rc = ds_plan_set_batch(t->teacher_plan, n, err)))
			return rc;
		tx = ds_plan_tensor(t->teacher_plan, t->teacher_input);
		pt = ds_plan_tensor(t->plan, TEACHER_VALUE);
		if (!tx || !pt)
			return ds_error_set(err, DS_ERR_RUN, "plan", "the teacher's plan has no input '%s'",
					    t->teacher_input);
		memcpy(tx->data, x->data, (size_t)n * t->item_bytes);
		if ((rc = ds_plan_forward(t->teacher_plan, 0, key, err))) {
			ds_error_prefix(err, "teacher");
			return rc;
		}
		if (!(tl = ds_plan_tensor(t->teacher_plan, t->teacher_logits)))
			return ds_error_set(err, DS_ERR_RUN, "plan", "the teacher's plan kept no logits");
		memcpy(pt->data, tl->data, (size_t)n * (size_t)t->teacher_classes * sizeof(float));
	}
	/* Only training steps count: evaluation runs the same plan. */
	ds_plan_profile(t->plan, training && t->o.profile);
	if ((rc = ds_plan_forward(t->plan, training, key, err)))
		return rc;
	pl = ds_plan_tensor(t->plan, LOSS_VALUE);
	lg = ds_plan_tensor(t->plan, t->logits);
	if (!pl || !lg)
		return ds_error_set(err, DS_ERR_RUN, "plan", "the plan kept no loss or logits");
	*loss = *(const float *)pl->data;
	logits = lg->data;
	*correct = 0;
	for (int64_t i = 0; i < n; i++) {
		const float *row = logits + i * t->classes;
		int64_t best = 0;

		for (int64_t k = 1; k < t->classes; k++)
			if (row[k] > row[best])
				best = k;
		*correct += best == ((const int32_t *)y->data)[i];
	}
	return 0;
}

static int evaluate(struct trainer *t, double *loss, double *acc, ds_error *err)
{
	double sum = 0;
	int64_t correct = 0, seen = 0;
	int rc;

	if ((rc = ds_loader_seek(t->vloader, 0, 0, err)))
		return rc;
	for (;;) {
		ds_tensor *x, *y;
		int64_t n, c;
		double l;

		if ((rc = ds_loader_next(t->vloader, &x, &y, &n, err)))
			return rc;
		if (!n)
			break;
		if ((rc = forward_batch(t, x, y, n, 0, 0, &l, &c, err)))
			return rc;
		sum += l * (double)n;
		correct += c;
		seen += n;
	}
	*loss = seen ? sum / (double)seen : 0;
	*acc = seen ? (double)correct / (double)seen : 0;
	return 0;
}

static const char *checkpoint_path(const struct trainer *t, char *buf, size_t len)
{
	if (t->o.checkpoint)
		return t->o.checkpoint;
	if (!t->o.output || !strcmp(t->o.output, "-"))
		return NULL;
	snprintf(buf, len, "%s.ckpt", t->o.output);
	return buf;
}

/* Network slimming (Liu et al. 2017): the subgradient of L * |gamma|
 * added to every batch norm's scale, so that training drives the scales of
 * unneeded channels towards 0 for ds-prune --criterion bn-gamma. */
static void add_sparsity(struct trainer *t)
{
	for (size_t i = 0; i < ds_graph_node_count(t->g); i++) {
		const ds_node *n = ds_graph_node(t->g, i);
		const char *gamma;

		if (strcmp(ds_node_op(n), "batchnorm") != 0 || ds_node_input_count(n) < 2)
			continue;
		gamma = ds_node_input(n, 1);
		for (size_t k = 0; k < ds_plan_param_count(t->plan); k++) {
			const ds_tensor *w = ds_plan_param(t->plan, k);
			ds_tensor *g = ds_plan_grad(t->plan, k);

			if (strcmp(ds_plan_param_name(t->plan, k), gamma) != 0 || !g || w->dtype != DS_F32 ||
			    g->dtype != DS_F32 || w->device.kind != DS_DEVICE_CPU)
				continue;
			for (int64_t c = 0; c < ds_tensor_numel(g); c++) {
				float v = ((const float *)w->data)[c];

				((float *)g->data)[c] += (float)(t->o.sparsity * ((v > 0) - (v < 0)));
			}
		}
	}
}

/* One optimizer step over up to accum batches; *n_items 0 at the end of the
 * epoch. */
static int train_step(struct trainer *t, int64_t *n_items, double *step_loss, ds_error *err)
{
	int64_t left = ds_loader_batches(t->loader) - t->batch;
	int64_t group = left < t->o.accum ? left : t->o.accum;
	double loss_sum = 0, t0 = t->o.profile ? ds_seconds() : 0, t1 = 0;
	int64_t items = 0;
	int rc;

	*n_items = 0;
	if (group <= 0)
		return 0;
	ds_plan_set_loss_scale(t->plan, (float)(1.0 / (double)group));
	for (int64_t a = 0; a < group; a++) {
		ds_tensor *x, *y;
		int64_t n, c;
		double l;
		uint64_t key = ds_mix64(t->o.seed, (uint64_t)t->step, (uint64_t)a + 1);

		if ((rc = ds_loader_next(t->loader, &x, &y, &n, err)))
			return rc;
		if (!n)
			break;
		if ((rc = forward_batch(t, x, y, n, 1, key, &l, &c, err)))
			return rc;
		if (!isfinite(l))
			return ds_error_set(err, DS_ERR_RUN, "nan_loss",
					    "step %" PRId64 " (epoch %" PRId64 ", batch %" PRId64 "): the loss is %s; "
					    "stopping (try a lower --lr; the last checkpoint is kept)",
					    t->step + 1, t->epoch + 1, t->batch + a + 1, isnan(l) ? "NaN" : "infinite");
		if ((rc = ds_plan_backward(t->plan, err)))
			return rc;
		loss_sum += l;
		t->ep_loss += l * (double)n;
		t->ep_correct += c;
		t->ep_seen += n;
		items += n;
	}
	if (t->o.sparsity > 0)
		add_sparsity(t);
	if (t->o.clip > 0)
		ds_plan_clip_grad_norm(t->plan, t->o.clip);
	if (t->o.profile)
		t1 = ds_seconds();
	if ((rc = ds_optim_step(t->opt, ds_schedule_lr(&t->o.schedule, t->step), err)))
		return rc;
	ds_plan_zero_grad(t->plan);
	if (t->o.profile) {
		double t2 = ds_seconds();

		t->prof_optim_s += t2 - t1;
		t->prof_step_s += t2 - t0;
		t->prof_steps++;
	}
	t->batch += group;
	t->step++;
	*n_items = items;
	*step_loss = loss_sum / (double)group;
	return 0;
}

static int log_epoch(struct trainer *t, double seconds, int64_t images, ds_error *err)
{
	json_t *rec;
	double vloss = 0, vacc = 0;
	int rc;

	rec = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f}", "epoch", (json_int_t)(t->epoch + 1),
			"steps", (json_int_t)t->step,
			"loss", t->ep_seen ? t->ep_loss / (double)t->ep_seen : 0.0,
			"accuracy", t->ep_seen ? (double)t->ep_correct / (double)t->ep_seen : 0.0,
			"seconds", seconds, "images_per_second", seconds > 0 ? (double)images / seconds : 0.0);
	if (!rec)
		return nomem(err);
	if (t->vloader) {
		if ((rc = evaluate(t, &vloss, &vacc, err))) {
			json_decref(rec);
			return rc;
		}
		json_object_set_new(rec, "val_loss", json_real(vloss));
		json_object_set_new(rec, "val_accuracy", json_real(vacc));
		if (t->best_epoch == 0 || vacc > t->best_acc) {
			t->best_acc = vacc;
			t->best_epoch = t->epoch + 1;
			if ((rc = keep_best(t, err))) {
				json_decref(rec);
				return rc;
			}
		}
	}
	ds_cli_event(t->cli, "epoch", rec);
	if (t->vloader)
		ds_log_info(t->cli, "epoch %" PRId64 ": loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f",
			    t->epoch + 1, json_number_value(json_object_get(rec, "loss")),
			    json_number_value(json_object_get(rec, "accuracy")), vloss, vacc);
	else
		ds_log_info(t->cli, "epoch %" PRId64 ": loss %.4f accuracy %.4f", t->epoch + 1,
			    json_number_value(json_object_get(rec, "loss")),
			    json_number_value(json_object_get(rec, "accuracy")));
	json_array_append_new(t->epochs, rec);
	return 0;
}

static int run_epochs(struct trainer *t, ds_error *err)
{
	char buf[4096];
	const char *ck = checkpoint_path(t, buf, sizeof buf);
	int rc = 0;

	while (t->epoch < t->o.epochs) {
		double t0 = ds_seconds(), seconds = 0;
		int64_t images = 0;
		char what[64];

		if ((rc = ds_loader_seek(t->loader, t->epoch, t->batch, err)))
			return rc;
		snprintf(what, sizeof what, "epoch %" PRId64 "/%" PRId64, t->epoch + 1, t->o.epochs);
		t->progress = ds_progress_start(t->cli, what, (uint64_t)ds_loader_batches(t->loader), "batches");
		ds_progress_update(t->progress, (uint64_t)t->batch);
		for (;;) {
			int64_t n;
			double loss, s0 = ds_seconds();

			if (t->o.max_steps > 0 && t->step >= t->o.max_steps)
				break;
			if ((rc = train_step(t, &n, &loss, err)))
				goto out;
			if (!n)
				break;
			seconds += ds_seconds() - s0;
			images += n;
			ds_progress_update(t->progress, (uint64_t)t->batch);
			{
				json_t *ev = json_pack("{s:I, s:I, s:f, s:f, s:I}", "epoch", (json_int_t)(t->epoch + 1),
						       "step", (json_int_t)t->step, "loss", loss,
						       "lr", ds_schedule_lr(&t->o.schedule, t->step - 1),
						       "items", (json_int_t)n);

				rc = ds_cli_event(t->cli, "step", ev);
				json_decref(ev);
				if (rc)
					goto out;
			}
			if (ds_cli_interrupted()) {
				if (ck && (rc = save_checkpoint(t, ck, err)))
					goto out;
				rc = ds_error_set(err, DS_ERR_INTERRUPTED, "interrupted",
						  "interrupted at step %" PRId64 "%s%s", t->step,
						  ck ? "; checkpoint saved to " : " (no checkpoint: give --checkpoint)",
						  ck ? ck : "");
				goto out;
			}
			if (ck && t->o.checkpoint_every > 0 && t->step % t->o.checkpoint_every == 0 &&
			    (rc = save_checkpoint(t, ck, err)))
				goto out;
		}
		ds_progress_end(t->progress);
		t->progress = NULL;
		t->train_seconds += seconds;
		t->images += images;
		if (t->o.max_steps > 0 && t->step >= t->o.max_steps && t->batch < ds_loader_batches(t->loader))
			break;
		if ((rc = log_epoch(t, ds_seconds() - t0, images, err)))
			goto out;
		t->epoch++;
		t->batch = 0;
		t->ep_loss = 0;
		t->ep_correct = t->ep_seen = 0;
		if (t->o.checkpoint && (rc = save_checkpoint(t, ck, err)))
			goto out;
	}
out:
	ds_progress_end(t->progress);
	t->progress = NULL;
	return rc;
}

static int write_output(struct trainer *t, json_t *figures, ds_error *err)
{
	ds_container *c = NULL;
	int rc;

	if ((rc = copy_model(t->model, t->best ? t->best : t->model, NULL, &c, err)))
		return rc;
	if (t->cli)
		rc = ds_cli_history(t->cli, c, figures, err);
	else
		rc = ds_container_history_append(c, "ds-train", 0, NULL, figures, err);
	if (!rc)
		rc = write_container(t->o.output, c, err);
	ds_container_free(c);
	return rc;
}

/* The teacher of --teacher: a model whose first input takes the same items
 * and whose first output is [N, K] logits. */
static int load_teacher(struct trainer *t, ds_error *err)
{
	const ds_shape *s;
	int rc;

	if ((rc = ds_container_load(t->o.teacher, 0, &t->teacher, err)))
		return rc;
	if ((rc = ds_graph_from_model(t->teacher, &t->teacher_g, err))) {
		ds_error_prefix(err, "%s", t->o.teacher);
		return rc;
	}
	if (!ds_graph_input_count(t->teacher_g) || !ds_graph_output_count(t->teacher_g))
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "%s: the teacher's graph has no input or output",
				    t->o.teacher);
	t->teacher_input = ds_graph_input_name(t->teacher_g, 0);
	t->teacher_logits = ds_graph_output_name(t->teacher_g, 0);
	s = ds_graph_shape(t->teacher_g, t->teacher_logits);
	if (!s || s->ndim != 2 || s->dtype != DS_F32)
		return ds_error_set(err, DS_ERR_DATA, "teacher_mismatch", "%s: output '%s' is not [N, K] F32 logits",
				    t->o.teacher, t->teacher_logits);
	t->teacher_classes = s->dim[1];
	return 0;
}

/* Teacher and student must see the same items and the same classes. */
static int check_teacher(struct trainer *t, ds_error *err)
{
	const ds_shape *a = ds_graph_shape(t->g, t->input), *b = ds_graph_shape(t->teacher_g, t->teacher_input);
	int same = a && b && a->ndim == b->ndim && a->dtype == b->dtype;

	for (int d = 1; same && d < a->ndim; d++)
		same = a->dim[d] == b->dim[d];
	if (!same)
		return ds_error_set(err, DS_ERR_DATA, "teacher_mismatch",
				    "%s: the teacher's input '%s' does not take the student's items", t->o.teacher,
				    t->teacher_input);
	if (t->teacher_classes != t->classes)
		return ds_error_set(err, DS_ERR_DATA, "teacher_mismatch",
				    "%s: the teacher has %" PRId64 " classes, the student %" PRId64, t->o.teacher,
				    t->teacher_classes, t->classes);
	return 0;
}

/* --profile: milliseconds a step per node, forward and backward, then the
 * optimizer (with zeroing the gradients) and the rest of the step (loading
 * the batch, reading the loss); pct of the whole step. */
static json_t *profile_table(struct trainer *t)
{
	json_t *rows = json_array();
	double steps = t->prof_steps ? (double)t->prof_steps : 1, nodes_s = 0;

	if (!rows)
		return NULL;
	for (size_t k = 0; k < ds_plan_node_count(t->plan); k++) {
		ds_node_profile np;

		ds_plan_node_profile(t->plan, k, &np);
		nodes_s += np.forward_s + np.backward_s;
		if (json_array_append_new(rows, json_pack("{s:s, s:s, s:f, s:f, s:f}", "node", np.name, "op", np.op,
							  "forward_ms", np.forward_s * 1e3 / steps,
							  "backward_ms", np.backward_s * 1e3 / steps, "pct",
							  t->prof_step_s > 0 ? 100.0 * (np.forward_s + np.backward_s) /
										t->prof_step_s : 0.0)))
			goto fail;
	}
	if (json_array_append_new(rows, json_pack("{s:s, s:s, s:f, s:f, s:f}", "node", "(optimizer)", "op",
						  t->o.optim.kind, "forward_ms", 0.0, "backward_ms",
						  t->prof_optim_s * 1e3 / steps, "pct",
						  t->prof_step_s > 0 ? 100.0 * t->prof_optim_s / t->prof_step_s : 0.0)) ||
	    json_array_append_new(rows, json_pack("{s:s, s:s, s:f, s:f, s:f}", "node", "(rest of the step)", "op", "-",
						  "forward_ms", 0.0, "backward_ms", 0.0, "pct",
						  t->prof_step_s > 0 ? 100.0 * (t->prof_step_s - t->prof_optim_s - nodes_s) /
									 t->prof_step_s : 0.0)))
		goto fail;
	return rows;
fail:
	json_decref(rows);
	return NULL;
}

/* --qat: fake quantization where ds-quantize will quantize, before the
 * training graph is built on the model's graph. */
static int prepare_qat(struct trainer *t, ds_error *err)
{
	json_t *report = NULL;
	int rc = ds_quantize_prepare_qat(t->model, t->cli, &report, err);

	/* ds_quantize_prepare_qat logs what it added (-v). */
	json_decref(report);
	if (rc)
		ds_error_prefix(err, "--qat: %s", t->o.finetune ? t->o.finetune : t->o.resume ? t->o.resume : "model");
	return rc;
}

static int setup(struct trainer *t, ds_error *err)
{
	ds_train_options *o = &t->o;
	ds_loader_options lo = { 0 };
	const ds_shape *in;
	int rc;

	if (o->device.kind == DS_DEVICE_CUDA)
		return ds_error_set(err, DS_ERR_RUN, "no_cuda", "ds-train has no CUDA kernels yet: use --device cpu");
	if (!o->data)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--data: no training stream given");
	if (!o->output)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "-o: no output model given");
	if ((o->resume != NULL) + (o->finetune != NULL) + (o->arch != NULL) > 1)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--arch, --finetune and --resume exclude each other");
	if (o->val && o->val_split > 0)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--val and --val-split exclude each other");
	if (o->batch < 1 || o->accum < 1 || o->epochs < 0 || o->max_steps < 0 || o->checkpoint_every < 0 ||
	    o->label_smoothing < 0 || o->label_smoothing >= 1 || o->dropout >= 1 || o->clip < 0 || o->sparsity < 0 ||
	    !(o->schedule.lr > 0) || o->schedule.warmup < 0)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "an option is out of range (see ds-train(1))");
	if ((rc = ds_dataset_load(o->data, &t->train, err)))
		return rc;
	if (o->val && (rc = ds_dataset_load(o->val, &t->val, err)))
		return rc;
	if (o->val_split > 0 && (rc = ds_dataset_split(t->train, o->val_split, o->seed, &t->val, err)))
		return rc;
	if (o->teacher && !(o->temperature > 0 && o->distill_weight >= 0 && o->distill_weight <= 1))
		return ds_error_set(err, DS_ERR_USAGE, "usage",
				    "--temperature must be above 0 and --distill-weight in [0, 1]");
	if (o->teacher && (rc = load_teacher(t, err)))
		return rc;
	if ((rc = load_model(t, err)) || (o->qat && (rc = prepare_qat(t, err))) || (rc = training_graph(t, err)) ||
	    (rc = find_classes(t, err)))
		return rc;
	if (o->teacher && (rc = check_teacher(t, err)))
		return rc;
	if ((o->finetune || o->resume) && (rc = check_labels(t, t->train, o->data, err)))
		return rc;
	if ((rc = ds_dataset_check(t->train, t->g, t->classes, err)) ||
	    (t->val && (rc = ds_dataset_check(t->val, t->g, t->classes, err))))
		return rc;
	in = ds_graph_shape(t->g, t->input);
	t->item_elems = 1;
	for (int d = 1; d < in->ndim; d++)
		t->item_elems *= in->dim[d];
	t->item_bytes = (size_t)t->item_elems * 4;
	lo.batch = o->batch;
	lo.shuffle = !o->no_shuffle;
	lo.augment = o->augment;
	lo.seed = o->seed;
	lo.length = in->ndim == 2 ? in->dim[1] : 0;
	if ((rc = ds_loader_new(t->train, &lo, &t->loader, err)))
		return rc;
	lo.shuffle = 0;
	lo.augment = 0;
	if (t->val && (rc = ds_loader_new(t->val, &lo, &t->vloader, err)))
		return rc;
	t->steps_per_epoch = (ds_loader_batches(t->loader) + o->accum - 1) / o->accum;
	/* --max-steps stops a run early without changing its schedule, so that
	 * a run stopped and resumed follows the same learning rates. */
	t->total_steps = t->steps_per_epoch * o->epochs;
	o->schedule.total = t->total_steps;
	/* --epochs 0 only writes the model: no arena for a step never taken. */
	if (o->epochs == 0 && !o->resume)
		return 0;
	if (t->teacher && ((rc = ds_plan_new(t->teacher_g, t->teacher, o->batch, NULL, o->device,
					     &t->teacher_plan, err)) ||
			   (rc = ds_plan_keep(t->teacher_plan, t->teacher_logits, err))))
		return rc;
	if ((rc = ds_plan_new(t->g, t->model, o->batch, LOSS_VALUE, o->device, &t->plan, err)) ||
	    (rc = ds_plan_keep(t->plan, t->logits, err)) ||
	    (rc = ds_optim_new(&o->optim, t->plan, &t->opt, err)))
		return rc;
	if (o->resume && (rc = resume_state(t, err)))
		return rc;
	return 0;
}

int ds_train_run(const ds_train_options *opts, json_t **summary, ds_error *err)
{
	struct trainer t = { .o = *opts, .cli = opts->cli, .err = err };
	json_t *figures = NULL;
	int rc;

	*summary = NULL;
	if (!t.o.batch)
		t.o.batch = 64;
	if (!t.o.accum)
		t.o.accum = 1;
	if (!t.o.optim.kind)
		t.o.optim.kind = "adamw";
	if (!t.o.schedule.kind)
		t.o.schedule.kind = "constant";
	if (!(t.o.schedule.lr > 0))
		t.o.schedule.lr = 1e-3;
	if (!t.o.schedule.gamma)
		t.o.schedule.gamma = 0.1;
	if (!(t.epochs = json_array()))
		return nomem(err);
	if ((rc = setup(&t, err)))
		goto out;
	ds_log_verbose(t.cli, "%" PRId64 " training items, %" PRId64 " validation items, %" PRId64
		       " classes, %" PRId64 " parameters, %zu bytes of activations",
		       ds_dataset_count(t.train), t.val ? ds_dataset_count(t.val) : 0, t.classes,
		       ds_graph_param_count(t.g), t.plan ? ds_plan_arena_bytes(t.plan) : 0);
	figures = json_pack("{s:I, s:I, s:I}", "items", (json_int_t)ds_dataset_count(t.train),
			    "steps", (json_int_t)t.total_steps, "parameters", (json_int_t)ds_graph_param_count(t.g));
	rc = ds_cli_event(t.cli, "start", figures);
	json_decref(figures);
	figures = NULL;
	if (rc)
		goto out;
	if ((rc = run_epochs(&t, err)))
		goto out;
	{
		json_t *last = json_array_size(t.epochs) ? json_array_get(t.epochs, json_array_size(t.epochs) - 1) : NULL;

		figures = json_pack("{s:I, s:I, s:f}", "epochs", (json_int_t)json_array_size(t.epochs),
				    "steps", (json_int_t)t.step, "images_per_second",
				    t.train_seconds > 0 ? (double)t.images / t.train_seconds : 0.0);
		if (figures && t.o.qat)
			json_object_set_new(figures, "qat", json_true());
		if (last && json_object_get(last, "loss"))
			json_object_set(figures, "final_loss", json_object_get(last, "loss"));
		if (last && json_object_get(last, "val_accuracy")) {
			json_object_set(figures, "final_val_accuracy", json_object_get(last, "val_accuracy"));
			json_object_set_new(figures, "best_val_accuracy", json_real(t.best_acc));
			json_object_set_new(figures, "best_epoch", json_integer(t.best_epoch));
		}
	}
	if ((rc = write_output(&t, figures, err)))
		goto out;
	*summary = json_pack("{s:s, s:s, s:I, s:I, s:O, s:o}", "model", t.o.output,
			     "architecture", t.o.arch ? t.o.arch : t.o.finetune ? t.o.finetune : t.o.resume ? t.o.resume : "cnn-small",
			     "parameters", (json_int_t)ds_graph_param_count(t.g), "classes", (json_int_t)t.classes,
			     "figures", figures, "epochs", t.epochs);
	t.epochs = NULL;
	if (*summary && t.o.profile) {
		json_t *rows = profile_table(&t);

		if (!rows || json_object_set_new(*summary, "profile", rows)) {
			rc = nomem(err);
			goto out;
		}
	}
out:
	json_decref(figures);
	json_decref(t.epochs);
	ds_optim_free(t.opt);
	ds_plan_free(t.plan);
	ds_graph_free(t.g);
	ds_plan_free(t.teacher_plan);
	ds_graph_free(t.teacher_g);
	ds_container_free(t.teacher);
	ds_loader_free(t.loader);
	ds_loader_free(t.vloader);
	ds_container_free(t.model);
	ds_container_free(t.best);
	ds_dataset_free(t.train);
	ds_dataset_free(t.val);
	free(t.input);
	free(t.logits);
	return rc;
}
