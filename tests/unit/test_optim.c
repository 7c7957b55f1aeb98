/* test_optim.c - SGD, Nesterov and AdamW updates against values worked out
 * by hand and against the torch.optim formulas in double; learning-rate
 * schedules at chosen steps; optimizer state through a checkpoint. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "tap.h"

#define N_W 6    /* weight [3, 2] */
#define N_B 3    /* bias [3] */

static const char *graph_json =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2]},"
	"              {\"name\": \"y\", \"dtype\": \"I32\", \"shape\": [-1]}],"
	" \"nodes\": ["
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"x\", \"fc.weight\", \"fc.bias\"], \"outputs\": [\"logits\"]},"
	"  {\"op\": \"cross_entropy\", \"name\": \"ce\", \"inputs\": [\"logits\", \"y\"], \"outputs\": [\"loss\"]}],"
	" \"outputs\": [\"loss\"]}";

struct fixture {
	ds_container *params;
	ds_graph *graph;
	ds_plan *plan;
};

static const float w0[N_W + N_B] = { 1.0f, -0.5f, 0.25f, 2.0f, -1.5f, 0.75f, 0.1f, -0.2f, 0.3f };

/* Gradients for step t (1-based) of element e: mixed signs and sizes. */
static float grad_at(int t, int e)
{
	static const float g[3] = { 0.5f, 0.25f, -1.0f };

	return g[t - 1] * (1.0f + 0.5f * (float)e) * (e % 2 ? -1.0f : 1.0f);
}

static int fixture_make(struct fixture *f)
{
	int64_t ws[2] = { 3, 2 }, bs[1] = { 3 };
	ds_tensor *w = ds_tensor_new(DS_F32, 2, ws, DS_CPU, NULL), *b = ds_tensor_new(DS_F32, 1, bs, DS_CPU, NULL);
	ds_error err = { 0 };

	memcpy(w->data, w0, sizeof(float) * N_W);
	memcpy(b->data, w0 + N_W, sizeof(float) * N_B);
	f->params = ds_container_new();
	ds_container_add(f->params, "fc.weight", w, NULL);
	ds_container_add(f->params, "fc.bias", b, NULL);
	ds_tensor_unref(w);
	ds_tensor_unref(b);
	if (ds_graph_parse(graph_json, f->params, &f->graph, &err) ||
	    ds_plan_new(f->graph, f->params, 4, "loss", DS_CPU, &f->plan, &err)) {
		diag("fixture: %s", err.message);
		return -1;
	}
	return 0;
}

static void fixture_free(struct fixture *f)
{
	ds_plan_free(f->plan);
	ds_graph_free(f->graph);
	ds_container_free(f->params);
}

static float *param(struct fixture *f, int e)
{
	return e < N_W ? (float *)ds_plan_param(f->plan, 0)->data + e : (float *)ds_plan_param(f->plan, 1)->data + e - N_W;
}

static void set_grads(struct fixture *f, int t)
{
	for (int e = 0; e < N_W + N_B; e++) {
		float *g = e < N_W ? (float *)ds_plan_grad(f->plan, 0)->data + e
				   : (float *)ds_plan_grad(f->plan, 1)->data + e - N_W;

		*g = grad_at(t, e);
	}
}

/* torch.optim.SGD (dampening 0) and AdamW in double. */
static void reference(const ds_optim_options *o, double lr, int steps, double *w)
{
	double m[N_W + N_B] = { 0 }, v[N_W + N_B] = { 0 };

	for (int e = 0; e < N_W + N_B; e++)
		w[e] = w0[e];
	for (int t = 1; t <= steps; t++)
		for (int e = 0; e < N_W + N_B; e++) {
			double g = grad_at(t, e);

			if (strcmp(o->kind, "sgd") == 0) {
				g += o->weight_decay * w[e];
				if (o->momentum != 0) {
					m[e] = o->momentum * m[e] + g;
					g = o->nesterov ? g + o->momentum * m[e] : m[e];
				}
				w[e] -= lr * g;
			} else {
				w[e] *= 1 - lr * o->weight_decay;
				m[e] = o->beta1 * m[e] + (1 - o->beta1) * g;
				v[e] = o->beta2 * v[e] + (1 - o->beta2) * g * g;
				w[e] -= lr * (m[e] / (1 - pow(o->beta1, t))) /
					(sqrt(v[e] / (1 - pow(o->beta2, t))) + o->eps);
			}
		}
}

/* Three steps; hand[] holds element 0 after each step, worked out on paper. */
static void check_updates(const char *what, ds_optim_options o, double lr, const double hand[3])
{
	struct fixture f;
	ds_optim *opt = NULL;
	ds_error err = { 0 };
	double want[N_W + N_B], worst = 0;

	if (fixture_make(&f) != 0 || ds_optim_new(&o, f.plan, &opt, &err) != 0) {
		ok(0, "%s: optimizer: %s", what, err.message);
		fixture_free(&f);
		return;
	}
	for (int t = 1; t <= 3; t++) {
		set_grads(&f, t);
		ds_optim_step(opt, lr, &err);
		is_near(*param(&f, 0), hand[t - 1], 1e-6, "%s: step %d by hand", what, t);
	}
	if (strcmp(o.kind, "adamw") == 0 && o.beta1 == 0) {
		o.beta1 = 0.9;
		o.beta2 = 0.999;
		o.eps = 1e-8;
	}
	reference(&o, lr, 3, want);
	for (int e = 0; e < N_W + N_B; e++)
		if (fabs(*param(&f, e) - want[e]) > worst)
			worst = fabs(*param(&f, e) - want[e]);
	ok(worst < 2e-6, "%s: every element after 3 steps matches torch.optim's formula (worst %.2g)", what, worst);
	ds_optim_free(opt);
	fixture_free(&f);
}

static void test_updates(void)
{
	/* w = 1, gradients 0.5, 0.25, -1, lr 0.1, momentum 0.9:
	 * buf 0.5, 0.7, -0.37; w 0.95, 0.88, 0.917. */
	static const double sgd[3] = { 0.95, 0.88, 0.917 };
	/* Nesterov: d = g + 0.9 buf = 0.95, 0.88, -1.333; w 0.905, 0.817, 0.9503. */
	static const double nesterov[3] = { 0.905, 0.817, 0.9503 };
	/* Plain SGD with L2 weight decay 0.1: d = g + 0.1 w.
	 * 1 - 0.1 (0.5 + 0.1) = 0.94; 0.94 - 0.1 (0.25 + 0.094) = 0.9056;
	 * 0.9056 - 0.1 (-1 + 0.09056) = 0.996544. */
	static const double sgd_wd[3] = { 0.94, 0.9056, 0.996544 };
	/* AdamW lr 0.1, weight decay 0.01: step 1 decays w to 0.999, then the
	 * bias-corrected step is lr * sign(g) (m^ = g, v^ = g^2): 0.899.
	 * Step 2: w 0.899 * 0.999 = 0.898101; m = 0.07, v = 0.00031225;
	 * m^ = 0.07 / 0.19 = 0.368421, v^ = 0.00031225 / 0.001999 = 0.156203,
	 * step 0.1 * 0.368421 / 0.395225 = 0.093218: 0.804883.
	 * Step 3: w 0.804079; m = -0.037, v = 0.001311938;
	 * m^ = -0.037 / 0.271 = -0.136531, v^ = 0.001311938 / 0.002997001 = 0.437750,
	 * step 0.1 * -0.136531 / 0.661627 = -0.020636: 0.824714. */
	static const double adamw[3] = { 0.899, 0.804883, 0.824714 };

	check_updates("sgd momentum", (ds_optim_options){ .kind = "sgd", .momentum = 0.9 }, 0.1, sgd);
	check_updates("sgd nesterov", (ds_optim_options){ .kind = "sgd", .momentum = 0.9, .nesterov = 1 }, 0.1,
		      nesterov);
	check_updates("sgd weight decay", (ds_optim_options){ .kind = "sgd", .weight_decay = 0.1 }, 0.1, sgd_wd);
	check_updates("adamw", (ds_optim_options){ .kind = "adamw", .weight_decay = 0.01 }, 0.1, adamw);
}

static void test_options(void)
{
	struct fixture f;
	ds_optim *opt = NULL;
	ds_error err = { 0 };
	ds_plan *infer = NULL;

	if (fixture_make(&f) != 0)
		return;
	is_int(ds_optim_new(&(ds_optim_options){ .kind = "lion" }, f.plan, &opt, &err), DS_ERR_USAGE,
	       "an unknown optimizer is refused");
	ds_error_clear(&err);
	is_int(ds_optim_new(&(ds_optim_options){ .kind = "sgd", .nesterov = 1 }, f.plan, &opt, &err), DS_ERR_USAGE,
	       "nesterov without momentum is refused");
	ds_error_clear(&err);
	is_int(ds_optim_new(&(ds_optim_options){ .kind = "sgd", .momentum = 1.5 }, f.plan, &opt, &err),
	       DS_ERR_USAGE, "momentum above 1 is refused");
	ds_error_clear(&err);
	if (ds_plan_new(f.graph, f.params, 4, NULL, DS_CPU, &infer, &err) == 0)
		is_int(ds_optim_new(&(ds_optim_options){ .kind = "sgd" }, infer, &opt, &err), DS_ERR_USAGE,
		       "an inference plan takes no optimizer");
	ok(opt == NULL, "failures return no optimizer");
	ds_plan_free(infer);
	fixture_free(&f);
}

static void test_schedules(void)
{
	ds_schedule c = { .kind = "constant", .lr = 0.1 };
	ds_schedule cos_ = { .kind = "cosine", .lr = 1.0, .warmup = 10, .total = 110 };
	ds_schedule st = { .kind = "step", .lr = 1.0, .step_size = 30, .gamma = 0.1 };
	ds_schedule stw = { .kind = "step", .lr = 1.0, .warmup = 5, .step_size = 30, .gamma = 0.1 };

	is_near(ds_schedule_lr(&c, 0), 0.1, 1e-15, "constant at 0");
	is_near(ds_schedule_lr(&c, 12345), 0.1, 1e-15, "constant later");
	is_near(ds_schedule_lr(&cos_, 0), 0.1, 1e-15, "warmup: step 0 is lr/warmup");
	is_near(ds_schedule_lr(&cos_, 4), 0.5, 1e-15, "warmup: step 4 is 5/10");
	is_near(ds_schedule_lr(&cos_, 9), 1.0, 1e-15, "warmup: step 9 reaches lr");
	is_near(ds_schedule_lr(&cos_, 10), 1.0, 1e-15, "cosine starts at lr");
	is_near(ds_schedule_lr(&cos_, 60), 0.5, 1e-12, "cosine halfway is lr/2");
	is_near(ds_schedule_lr(&cos_, 35), 0.5 * (1 + cos(M_PI / 4)), 1e-12, "cosine a quarter in");
	is_near(ds_schedule_lr(&cos_, 110), 0.0, 1e-12, "cosine reaches 0 at total");
	is_near(ds_schedule_lr(&cos_, 500), 0.0, 1e-12, "and stays there");
	is_near(ds_schedule_lr(&st, 29), 1.0, 1e-15, "step decay: before the first step");
	is_near(ds_schedule_lr(&st, 30), 0.1, 1e-12, "step decay: after it");
	is_near(ds_schedule_lr(&st, 65), 0.01, 1e-12, "step decay: two steps");
	is_near(ds_schedule_lr(&stw, 2), 0.6, 1e-12, "step decay with warmup: ramping");
	is_near(ds_schedule_lr(&stw, 34), 1.0, 1e-12, "counted from the end of warmup");
	is_near(ds_schedule_lr(&stw, 35), 0.1, 1e-12, "first decay after warmup + step_size");
}

static void test_checkpoint(void)
{
	struct fixture f;
	ds_optim *a = NULL, *b = NULL, *s = NULL;
	ds_optim_options o = { .kind = "adamw", .weight_decay = 0.01 };
	ds_container *ck = ds_container_new(), *back = NULL;
	ds_error err = { 0 };
	float saved[N_W + N_B], after_a[N_W + N_B];
	void *buf = NULL;
	size_t len = 0;
	json_t *meta = NULL;
	int same = 1;

	if (fixture_make(&f) != 0 || ds_optim_new(&o, f.plan, &a, &err) || ds_optim_new(&o, f.plan, &b, &err)) {
		ok(0, "checkpoint fixture: %s", err.message);
		goto out;
	}
	for (int t = 1; t <= 3; t++) {
		set_grads(&f, t);
		ds_optim_step(a, 0.1, &err);
	}
	is_int(ds_optim_save(a, ck, &err), 0, "save adamw state");
	ok(ds_container_get(ck, "opt.m.fc.weight") && ds_container_get(ck, "opt.v.fc.bias"), "as opt.m.* and opt.v.* tensors");
	if (ds_container_meta_json(ck, "ds.optim", &meta, &err) == 0 && meta) {
		is_str(json_string_value(json_object_get(meta, "kind")), "adamw", "ds.optim kind");
		is_int(json_integer_value(json_object_get(meta, "step")), 3, "ds.optim step");
	} else {
		ok(0, "ds.optim metadata");
	}
	/* Through the file format and back. */
	if (ds_container_serialize(ck, &buf, &len, &err) || ds_container_parse(buf, len, "ckpt", 0, &back, &err)) {
		ok(0, "checkpoint round trip: %s", err.message);
		goto out;
	}
	is_int(ds_optim_load(b, back, &err), 0, "load it into a fresh optimizer");
	for (int e = 0; e < N_W + N_B; e++)
		saved[e] = *param(&f, e);
	set_grads(&f, 2);
	ds_optim_step(a, 0.05, &err);
	for (int e = 0; e < N_W + N_B; e++) {
		after_a[e] = *param(&f, e);
		*param(&f, e) = saved[e];
	}
	ds_optim_step(b, 0.05, &err);
	for (int e = 0; e < N_W + N_B; e++)
		same &= memcmp(&after_a[e], param(&f, e), sizeof(float)) == 0;
	ok(same, "the next step is bit-identical after the round trip");

	/* Bad checkpoints leave the optimizer alone. */
	if (ds_optim_new(&(ds_optim_options){ .kind = "sgd", .momentum = 0.9 }, f.plan, &s, &err) == 0) {
		ds_error_clear(&err);
		is_int(ds_optim_load(s, back, &err), DS_ERR_DATA, "adamw state into sgd is refused");
	}
	ds_container_remove(back, "opt.v.fc.bias");
	ds_error_clear(&err);
	is_int(ds_optim_load(b, back, &err), DS_ERR_DATA, "a missing state tensor is refused");
	ok(strstr(err.message, "opt.v.fc.bias") != NULL, "naming it: %s", err.message);
	ds_error_clear(&err);
	{
		ds_container *empty = ds_container_new();

		is_int(ds_optim_load(b, empty, &err), DS_ERR_DATA, "no ds.optim is refused");
		ds_container_free(empty);
	}
out:
	json_decref(meta);
	free(buf);
	ds_optim_free(a);
	ds_optim_free(b);
	ds_optim_free(s);
	ds_container_free(ck);
	ds_container_free(back);
	fixture_free(&f);
}

/* ------------------------------------------------------------ sparse tables */

#define BAG_V 20
#define BAG_D 5
#define BAG_L 6
#define BAG_N 4

static const char *bag_fmt =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"I32\", \"shape\": [-1, 6]},"
	"              {\"name\": \"y\", \"dtype\": \"I32\", \"shape\": [-1]}],"
	" \"nodes\": ["
	"  {\"op\": \"embedding_bag\", \"name\": \"bag\", \"inputs\": [\"x\", \"emb\"], \"outputs\": [\"e\"],"
	"   \"attrs\": {\"mode\": \"sum\", \"sparse\": %d}},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"e\", \"fc.weight\"], \"outputs\": [\"logits\"]},"
	"  {\"op\": \"cross_entropy\", \"name\": \"ce\", \"inputs\": [\"logits\", \"y\"], \"outputs\": [\"loss\"]}],"
	" \"outputs\": [\"loss\"]}";

struct bag {
	ds_container *params, *state;
	ds_graph *graph;
	ds_plan *plan;
	ds_optim *opt;
};

static int bag_make(struct bag *b, int sparse, const ds_optim_options *o)
{
	int64_t es[2] = { BAG_V, BAG_D }, fs[2] = { 3, BAG_D };
	ds_tensor *emb = ds_tensor_new(DS_F32, 2, es, DS_CPU, NULL), *fc = ds_tensor_new(DS_F32, 2, fs, DS_CPU, NULL);
	ds_error err = { 0 };
	char json[1024];

	memset(b, 0, sizeof *b);
	for (int e = 0; e < BAG_V * BAG_D; e++)
		((float *)emb->data)[e] = 0.5f * sinf((float)e);
	for (int e = 0; e < 3 * BAG_D; e++)
		((float *)fc->data)[e] = 0.5f * cosf((float)e);
	b->params = ds_container_new();
	ds_container_add(b->params, "emb", emb, NULL);
	ds_container_add(b->params, "fc.weight", fc, NULL);
	ds_tensor_unref(emb);
	ds_tensor_unref(fc);
	snprintf(json, sizeof json, bag_fmt, sparse);
	if (ds_graph_parse(json, b->params, &b->graph, &err) ||
	    ds_plan_new(b->graph, b->params, BAG_N, "loss", DS_CPU, &b->plan, &err) ||
	    ds_optim_new(o, b->plan, &b->opt, &err)) {
		diag("bag: %s", err.message);
		return -1;
	}
	return 0;
}

static void bag_free(struct bag *b)
{
	ds_optim_free(b->opt);
	ds_plan_free(b->plan);
	ds_graph_free(b->graph);
	ds_container_free(b->params);
	ds_container_free(b->state);
}

/* A forward and backward of n bags whose ids lie in [lo, hi), repeating. */
static int bag_backward(struct bag *b, int n, int lo, int hi, int salt)
{
	int32_t *x = ds_plan_tensor(b->plan, "x")->data, *y = ds_plan_tensor(b->plan, "y")->data;
	ds_error err = { 0 };

	for (int r = 0; r < n; r++) {
		y[r] = (r + salt) % 3;
		for (int j = 0; j < BAG_L; j++)
			x[r * BAG_L + j] = j > r + 2 ? -1 : lo + (r * 7 + j * 3 + salt) % (hi - lo);
	}
	if (ds_plan_set_batch(b->plan, n, &err) || ds_plan_forward(b->plan, 1, 1, &err) ||
	    ds_plan_backward(b->plan, &err)) {
		diag("bag backward: %s", err.message);
		return -1;
	}
	return 0;
}

static int bag_step(struct bag *b, double lr)
{
	ds_error err = { 0 };

	ds_container_free(b->state);
	b->state = ds_container_new();
	if (ds_optim_step(b->opt, lr, &err) || ds_optim_save(b->opt, b->state, &err)) {
		diag("bag step: %s", err.message);
		return -1;
	}
	ds_plan_zero_grad(b->plan);
	return 0;
}

/* Row r of the table, or of its optimizer state ("opt.m.emb", ...). */
static const float *bag_row(const struct bag *b, const char *what, int r)
{
	const ds_tensor *t = strcmp(what, "w") == 0 ? ds_container_get(b->params, "emb")
						     : ds_container_get(b->state, what);

	return t ? (const float *)t->data + r * BAG_D : NULL;
}

static int rows_same(const struct bag *a, const struct bag *b, const char *what, int lo, int hi)
{
	int same = 1;

	for (int r = lo; r < hi; r++)
		same &= bag_row(a, what, r) && bag_row(b, what, r) &&
			memcmp(bag_row(a, what, r), bag_row(b, what, r), BAG_D * sizeof(float)) == 0;
	return same;
}

/* Lazy updates: one step over rows 0..5 changes exactly those rows, as the
 * dense step does; a second step of two accumulated backwards over rows
 * 3..9 leaves rows 0..2 (weights and state) alone.  Without weight decay a
 * dense step moves an untouched, never-touched row by exactly nothing, so
 * there every row must match the dense run. */
static void check_lazy(const char *what, ds_optim_options o)
{
	struct bag d, s;
	int adamw = strcmp(o.kind, "adamw") == 0;
	const char *state[2] = { adamw || o.momentum != 0 ? "opt.m.emb" : NULL, adamw ? "opt.v.emb" : NULL };
	float before[3 * BAG_D], init[BAG_V * BAG_D];
	int same = 1, moved = 0;

	if (bag_make(&d, 0, &o) || bag_make(&s, 1, &o)) {
		ok(0, "%s: bag fixture", what);
		goto out;
	}
	memcpy(init, bag_row(&s, "w", 0), sizeof init);
	bag_backward(&d, BAG_N, 0, 6, 0);
	bag_backward(&s, BAG_N, 0, 6, 0);
	bag_step(&d, 0.1);
	bag_step(&s, 0.1);
	same = rows_same(&d, &s, "w", 0, 6);
	for (int k = 0; k < 2 && state[k]; k++)
		same &= rows_same(&d, &s, state[k], 0, 6);
	ok(same, "%s: touched rows step exactly as under the dense update", what);
	ok(memcmp(bag_row(&s, "w", 6), init + 6 * BAG_D, (BAG_V - 6) * BAG_D * sizeof(float)) == 0,
	   "%s: untouched rows keep their weights", what);
	for (int r = 6; r < BAG_V; r++)
		for (int k = 0; k < 2 && state[k]; k++)
			for (int e = 0; e < BAG_D; e++)
				moved |= bag_row(&s, state[k], r)[e] != 0.0f;
	ok(!moved, "%s: and zero state", what);

	memcpy(before, bag_row(&s, "w", 0), sizeof before);
	bag_backward(&d, BAG_N, 3, 10, 1);
	bag_backward(&s, BAG_N, 3, 10, 1);
	bag_backward(&d, BAG_N - 1, 3, 10, 2);
	bag_backward(&s, BAG_N - 1, 3, 10, 2);
	bag_step(&d, 0.1);
	bag_step(&s, 0.1);
	ok(memcmp(before, bag_row(&s, "w", 0), sizeof before) == 0,
	   "%s: rows a step did not touch stay as they were (lazy)", what);
	if (o.weight_decay == 0) {
		same = rows_same(&d, &s, "w", 3, BAG_V) &&
		       memcmp(ds_container_get(d.params, "fc.weight")->data,
			      ds_container_get(s.params, "fc.weight")->data, 3 * BAG_D * sizeof(float)) == 0;
		for (int k = 0; k < 2 && state[k]; k++)
			same &= rows_same(&d, &s, state[k], 3, BAG_V);
		ok(same, "%s: after two accumulated backwards every other row matches the dense run", what);
		if (state[0])
			ok(!rows_same(&d, &s, "w", 0, 3), "%s: where the dense run moved rows 0..2 by their momentum",
			   what);
	}
out:
	bag_free(&d);
	bag_free(&s);
}

static void test_sparse(void)
{
	check_lazy("adamw", (ds_optim_options){ .kind = "adamw", .weight_decay = 0.01 });
	check_lazy("adamw, no decay", (ds_optim_options){ .kind = "adamw" });
	check_lazy("sgd momentum", (ds_optim_options){ .kind = "sgd", .momentum = 0.9, .weight_decay = 0.01 });
	check_lazy("sgd nesterov, no decay", (ds_optim_options){ .kind = "sgd", .momentum = 0.9, .nesterov = 1 });
	check_lazy("sgd plain, no decay", (ds_optim_options){ .kind = "sgd" });
}

int main(void)
{
	test_updates();
	test_options();
	test_schedules();
	test_checkpoint();
	test_sparse();
	return done_testing();
}
