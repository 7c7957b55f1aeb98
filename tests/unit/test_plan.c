/* test_plan.c - plans: forward against a hand computation, backward against
 * finite differences of the plan's own loss, training that learns, a short
 * batch, arena reuse, dropout and batchnorm, and a steady state that
 * allocates nothing. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "ds.h"
#include "internal.h"
#include "tap.h"

#define D 4      /* input features */
#define H 6      /* hidden units */
#define K 3      /* classes */
#define B 8      /* batch */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static double gaussian(void)
{
	double u = uniform() + 1e-12, v = uniform();

	return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static ds_tensor *add_tensor(ds_container *c, const char *name, int ndim, int64_t d0, int64_t d1, double scale)
{
	int64_t shape[2] = { d0, d1 };
	ds_tensor *t = ds_tensor_new(DS_F32, ndim, shape, DS_CPU, NULL);
	float *f = t->data;

	for (int64_t i = 0; i < ds_tensor_numel(t); i++)
		f[i] = (float)((uniform() * 2.0 - 1.0) * scale);
	ds_container_add(c, name, t, NULL);
	ds_tensor_unref(t);
	return t;
}

static const char *mlp_json =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 4]},"
	"              {\"name\": \"y\", \"dtype\": \"I32\", \"shape\": [-1]}],"
	" \"nodes\": ["
	"  {\"op\": \"linear\", \"name\": \"fc1\", \"inputs\": [\"x\", \"fc1.weight\", \"fc1.bias\"], \"outputs\": [\"h\"]},"
	"  {\"op\": \"relu\", \"name\": \"relu1\", \"inputs\": [\"h\"], \"outputs\": [\"a\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc2\", \"inputs\": [\"a\", \"fc2.weight\", \"fc2.bias\"], \"outputs\": [\"logits\"]},"
	"  {\"op\": \"cross_entropy\", \"name\": \"ce\", \"inputs\": [\"logits\", \"y\"], \"outputs\": [\"loss\"]}],"
	" \"outputs\": [\"logits\", \"loss\"]}";

struct mlp {
	ds_container *params;
	ds_graph *graph;
	float *w1, *b1, *w2, *b2;
};

static int mlp_make(struct mlp *m)
{
	ds_error err = { 0 };

	m->params = ds_container_new();
	m->w1 = add_tensor(m->params, "fc1.weight", 2, H, D, 0.8)->data;
	m->b1 = add_tensor(m->params, "fc1.bias", 1, H, 0, 0.3)->data;
	m->w2 = add_tensor(m->params, "fc2.weight", 2, K, H, 0.8)->data;
	m->b2 = add_tensor(m->params, "fc2.bias", 1, K, 0, 0.3)->data;
	if (ds_graph_parse(mlp_json, m->params, &m->graph, &err)) {
		diag("graph: %s", err.message);
		return -1;
	}
	return 0;
}

static void mlp_free(struct mlp *m)
{
	ds_graph_free(m->graph);
	ds_container_free(m->params);
}

/* The loss and its parameter gradients in double, written out by hand. */
static double mlp_reference(const struct mlp *m, const float *x, const int32_t *y, int n, double *gw1,
			    double *gb1, double *gw2, double *gb2)
{
	double loss = 0.0;

	memset(gw1, 0, sizeof(double) * H * D);
	memset(gb1, 0, sizeof(double) * H);
	memset(gw2, 0, sizeof(double) * K * H);
	memset(gb2, 0, sizeof(double) * K);
	for (int r = 0; r < n; r++) {
		double h[H], a[H], z[K], p[K], mx = -1e300, sum = 0.0, dz[K], da[H];

		for (int j = 0; j < H; j++) {
			h[j] = m->b1[j];
			for (int i = 0; i < D; i++)
				h[j] += (double)m->w1[j * D + i] * x[r * D + i];
			a[j] = h[j] > 0 ? h[j] : 0;
		}
		for (int k = 0; k < K; k++) {
			z[k] = m->b2[k];
			for (int j = 0; j < H; j++)
				z[k] += (double)m->w2[k * H + j] * a[j];
			if (z[k] > mx)
				mx = z[k];
		}
		for (int k = 0; k < K; k++)
			sum += exp(z[k] - mx);
		for (int k = 0; k < K; k++)
			p[k] = exp(z[k] - mx) / sum;
		loss -= log(p[y[r]]) / n;
		for (int k = 0; k < K; k++) {
			dz[k] = (p[k] - (k == y[r])) / n;
			gb2[k] += dz[k];
			for (int j = 0; j < H; j++)
				gw2[k * H + j] += dz[k] * a[j];
		}
		for (int j = 0; j < H; j++) {
			da[j] = 0;
			for (int k = 0; k < K; k++)
				da[j] += dz[k] * m->w2[k * H + j];
			if (h[j] <= 0)
				da[j] = 0;
			gb1[j] += da[j];
			for (int i = 0; i < D; i++)
				gw1[j * D + i] += da[j] * x[r * D + i];
		}
	}
	return loss;
}

static float plan_loss(ds_plan *p, int training, uint64_t step)
{
	ds_error err = { 0 };

	if (ds_plan_forward(p, training, step, &err)) {
		diag("forward: %s", err.message);
		return NAN;
	}
	return *(float *)ds_plan_tensor(p, "loss")->data;
}

static void fill_batch(ds_plan *p, int n, int separable)
{
	float *x = ds_plan_tensor(p, "x")->data;
	int32_t *y = ds_plan_tensor(p, "y")->data;

	for (int r = 0; r < n; r++) {
		y[r] = (int32_t)(uniform() * K);
		for (int i = 0; i < D; i++)
			x[r * D + i] = separable ? (float)((i == y[r] ? 3.0 : 0.0) + 0.5 * gaussian())
						 : (float)(uniform() * 2.0 - 1.0);
	}
}

/* Central differences of the plan's loss at a fixed step (the same
 * dropout mask; a small step, so that few ReLU kinks are crossed) against each trainable parameter's gradient from backward;
 * returns how many entries are off. */
static int fd_check(ds_plan *p, uint64_t step, double abs_tol, double rel_tol, double *worst)
{
	ds_error err = { 0 };
	int bad = 0;

	*worst = 0;
	plan_loss(p, 1, step);
	ds_plan_zero_grad(p);
	if (ds_plan_backward(p, &err)) {
		diag("backward: %s", err.message);
		return -1;
	}
	for (size_t i = 0; i < ds_plan_param_count(p); i++) {
		ds_tensor *w = ds_plan_param(p, i);
		float *gd, *wd = w->data;

		if (!ds_plan_param_trainable(p, i))
			continue;
		gd = ds_plan_grad(p, i)->data;
		for (int64_t e = 0; e < ds_tensor_numel(w); e++) {
			float save = wd[e];
			float hi = save + 2e-3f, lo = save - 2e-3f;
			double fd, d;

			wd[e] = hi;
			fd = plan_loss(p, 1, step);
			wd[e] = lo;
			fd = (fd - plan_loss(p, 1, step)) / ((double)hi - lo);
			wd[e] = save;
			d = fabs(fd - gd[e]);
			if (d > *worst)
				*worst = d;
			bad += d > abs_tol + rel_tol * fabs(fd);
		}
	}
	return bad;
}

static void test_mlp(void)
{
	struct mlp m;
	ds_plan *p = NULL;
	ds_error err = { 0 };
	double gw1[H * D], gb1[H], gw2[K * H], gb2[K], ref;
	double *refs[4] = { gw1, gb1, gw2, gb2 };
	float loss;
	int rc, bad_fd = 0, bad_ref = 0;
	double worst_fd = 0, worst_ref = 0;

	if (mlp_make(&m) != 0) {
		ok(0, "MLP graph parses");
		return;
	}
	rc = ds_plan_new(m.graph, m.params, B, "loss", DS_CPU, &p, &err);
	if (!is_int(rc, 0, "training plan for the MLP at batch 8")) {
		diag("%s", err.message);
		mlp_free(&m);
		return;
	}
	is_int(ds_plan_batch(p), B, "planned batch");
	is_int(ds_plan_param_count(p), 4, "four parameters");
	is_str(ds_plan_param_name(p, 0), "fc1.weight", "parameters in order of first use");
	ok(ds_plan_param(p, 2) == ds_container_get(m.params, "fc2.weight"), "parameters are the container's tensors");
	ok(ds_plan_param_trainable(p, 3) && ds_plan_grad(p, 3), "every F32 parameter trains");
	ok(ds_plan_tensor(p, "x") && ds_plan_tensor(p, "logits") && ds_plan_tensor(p, "loss"),
	   "inputs and outputs are readable");
	ok(!ds_plan_tensor(p, "h"), "an intermediate whose buffer is reused is not");
	ok(!ds_plan_tensor(p, "nope"), "an unknown name is NULL");

	fill_batch(p, B, 0);
	loss = plan_loss(p, 1, 0);
	ref = mlp_reference(&m, ds_plan_tensor(p, "x")->data, ds_plan_tensor(p, "y")->data, B, gw1, gb1, gw2, gb2);
	is_near(loss, ref, 1e-5, "forward loss matches the hand computation");

	ds_plan_zero_grad(p);
	rc = ds_plan_backward(p, &err);
	if (!is_int(rc, 0, "backward runs"))
		diag("%s", err.message);
	for (size_t i = 0; i < 4; i++) {
		ds_tensor *g = ds_plan_grad(p, i), *w = ds_plan_param(p, i);
		float *gd = g->data, *wd = w->data;

		for (int64_t e = 0; e < ds_tensor_numel(w); e++) {
			float save = wd[e];
			double fd, eps = 1e-2, d;

			wd[e] = save + (float)eps;
			fd = plan_loss(p, 1, 0);
			wd[e] = save - (float)eps;
			fd = (fd - plan_loss(p, 1, 0)) / (2 * eps);
			wd[e] = save;
			d = fabs(fd - gd[e]);
			if (d > worst_fd)
				worst_fd = d;
			bad_fd += d > 1e-3 + 1e-2 * fabs(fd);
			d = fabs(refs[i][e] - gd[e]);
			if (d > worst_ref)
				worst_ref = d;
			bad_ref += d > 1e-5;
		}
	}
	ok(bad_fd == 0, "parameter gradients match finite differences of the plan's loss (worst %.2g)", worst_fd);
	ok(bad_ref == 0, "and the hand-computed gradients (worst %.2g)", worst_ref);

	/* Accumulation and the loss scale. */
	{
		float g0 = ((float *)ds_plan_grad(p, 0)->data)[1];

		plan_loss(p, 1, 0);
		ds_plan_set_loss_scale(p, 0.5f);
		ds_plan_backward(p, &err);
		ds_plan_set_loss_scale(p, 1.0f);
		is_near(((float *)ds_plan_grad(p, 0)->data)[1], 1.5 * g0, 1e-6, "backward adds into the gradients, scaled");
		ds_plan_zero_grad(p);
		is_near(((float *)ds_plan_grad(p, 0)->data)[1], 0.0, 0.0, "zero_grad clears them");
	}
	ds_error_clear(&err);
	is_int(ds_plan_backward(p, &err), DS_ERR_USAGE, "backward twice without forward is refused");

	/* Gradient clipping: the norm, then scaled to max_norm. */
	{
		double norm, want = 0.0;

		plan_loss(p, 1, 0);
		ds_plan_backward(p, &err);
		for (int i = 0; i < 4; i++)
			for (int e = 0; e < (int)ds_tensor_numel(ds_plan_grad(p, (size_t)i)); e++)
				want += refs[i][e] * refs[i][e];
		norm = ds_plan_clip_grad_norm(p, 0);
		is_near(norm, sqrt(want), 1e-5, "gradient norm");
		ds_plan_clip_grad_norm(p, norm / 2);
		is_near(ds_plan_clip_grad_norm(p, 0), norm / 2, 1e-5, "clipped to max_norm");
		ds_plan_zero_grad(p);
	}

	/* A short last batch: five rows of the same plan. */
	rc = ds_plan_set_batch(p, 5, &err);
	is_int(rc, 0, "set_batch(5)");
	is_int(ds_plan_tensor(p, "x")->shape[0], 5, "the input view has 5 rows");
	fill_batch(p, 5, 0);
	loss = plan_loss(p, 1, 1);
	ref = mlp_reference(&m, ds_plan_tensor(p, "x")->data, ds_plan_tensor(p, "y")->data, 5, gw1, gb1, gw2, gb2);
	is_near(loss, ref, 1e-5, "loss at batch 5");
	is_int(ds_plan_tensor(p, "logits")->shape[0], 5, "logits have 5 rows");
	ds_plan_backward(p, &err);
	is_near(((float *)ds_plan_grad(p, 2)->data)[3], gw2[3], 1e-5, "gradients at batch 5");
	ds_plan_zero_grad(p);
	ds_error_clear(&err);
	is_int(ds_plan_set_batch(p, 9, &err), DS_ERR_USAGE, "a batch above the planned one is refused");
	is_int(ds_plan_set_batch(p, B, NULL), 0, "back to batch 8");

	/* keep makes an intermediate readable. */
	is_int(ds_plan_keep(p, "h", &err), 0, "keep h");
	ok(ds_plan_tensor(p, "h") != NULL, "h is readable after keep");
	fill_batch(p, B, 0);
	plan_loss(p, 0, 0);
	{
		const float *x = ds_plan_tensor(p, "x")->data, *h = ds_plan_tensor(p, "h")->data;
		double want = m.b1[2];

		for (int i = 0; i < D; i++)
			want += (double)m.w1[2 * D + i] * x[3 * D + i];
		is_near(h[3 * H + 2], want, 1e-5, "a kept value holds its forward result");
	}
	ds_plan_free(p);
	mlp_free(&m);
}

static void test_training(void)
{
	struct mlp m;
	ds_plan *p = NULL;
	ds_optim *opt = NULL;
	ds_optim_options o = { .kind = "sgd", .momentum = 0.9 };
	ds_error err = { 0 };
	double first = 0, last = 0;

	if (mlp_make(&m) != 0)
		return;
	if (ds_plan_new(m.graph, m.params, B, "loss", DS_CPU, &p, &err) ||
	    ds_optim_new(&o, p, &opt, &err)) {
		ok(0, "training plan and optimizer: %s", err.message);
		goto out;
	}
	for (int step = 0; step < 200; step++) {
		float loss;

		fill_batch(p, B, 1);
		ds_plan_zero_grad(p);
		loss = plan_loss(p, 1, (uint64_t)step);
		if (ds_plan_backward(p, &err) || ds_optim_step(opt, 0.05, &err))
			break;
		if (step < 10)
			first += loss / 10;
		if (step >= 190)
			last += loss / 10;
	}
	diag("mean loss, first 10 steps %.4f, last 10 %.4f", first, last);
	ok(err.status == 0 && last < 0.15 && last < first / 5, "200 SGD steps learn a separable problem");
out:
	ds_optim_free(opt);
	ds_plan_free(p);
	mlp_free(&m);
}

/* A deep MLP: width wide, depth linear+relu layers, then a classifier. */
static ds_graph *deep_mlp(ds_container *params, int depth, int wide)
{
	json_t *doc = json_pack("{s:[{s:s, s:s, s:[i,i]}, {s:s, s:s, s:[i]}], s:[], s:[s,s]}",
				"inputs", "name", "x", "dtype", "F32", "shape", -1, wide,
				"name", "y", "dtype", "I32", "shape", -1,
				"nodes", "outputs", "logits", "loss");
	json_t *nodes = json_object_get(doc, "nodes");
	char prev[32] = "x", name[32], w[48], b[48], out[32];
	ds_graph *g = NULL;
	char *text;

	for (int l = 0; l <= depth; l++) {
		int last = l == depth;

		snprintf(name, sizeof name, "fc%d", l);
		snprintf(w, sizeof w, "fc%d.weight", l);
		snprintf(b, sizeof b, "fc%d.bias", l);
		snprintf(out, sizeof out, last ? "logits" : "h%d", l);
		add_tensor(params, w, 2, last ? 10 : wide, wide, 0.2);
		add_tensor(params, b, 1, last ? 10 : wide, 0, 0.1);
		json_array_append_new(nodes, json_pack("{s:s, s:s, s:[s,s,s], s:[s]}", "op", "linear", "name", name,
						       "inputs", prev, w, b, "outputs", out));
		snprintf(prev, sizeof prev, "%s", out);
		if (last)
			break;
		snprintf(name, sizeof name, "relu%d", l);
		snprintf(out, sizeof out, "a%d", l);
		json_array_append_new(nodes, json_pack("{s:s, s:s, s:[s], s:[s]}", "op", "relu", "name", name,
						       "inputs", prev, "outputs", out));
		snprintf(prev, sizeof prev, "%s", out);
	}
	json_array_append_new(nodes, json_pack("{s:s, s:s, s:[s,s], s:[s]}", "op", "cross_entropy", "name", "ce",
					       "inputs", "logits", "y", "outputs", "loss"));
	text = json_dumps(doc, 0);
	if (ds_graph_parse(text, params, &g, NULL) != 0)
		g = NULL;
	free(text);
	json_decref(doc);
	return g;
}

static void test_arena(void)
{
	ds_container *params = ds_container_new();
	ds_graph *g = deep_mlp(params, 10, 64);
	ds_plan *train = NULL, *infer = NULL;
	ds_error err = { 0 };

	if (!ok(g != NULL, "10-layer MLP graph"))
		goto out;
	if (ds_plan_new(g, params, 32, "loss", DS_CPU, &train, &err) ||
	    ds_plan_new(g, params, 32, NULL, DS_CPU, &infer, &err)) {
		ok(0, "plans for the 10-layer MLP: %s", err.message);
		goto out;
	}
	diag("training arena %zu bytes (naive %zu); inference %zu (naive %zu)", ds_plan_arena_bytes(train),
	     ds_plan_arena_naive_bytes(train), ds_plan_arena_bytes(infer), ds_plan_arena_naive_bytes(infer));
	ok(ds_plan_arena_bytes(train) < ds_plan_arena_naive_bytes(train), "training arena reuses buffers");
	ok(ds_plan_arena_bytes(infer) * 4 < ds_plan_arena_naive_bytes(infer), "inference arena reuses them more");
	ok(ds_plan_arena_bytes(infer) < ds_plan_arena_bytes(train), "inference keeps fewer activations");
	ok(ds_plan_grad(infer, 0) == NULL, "inference plans have no gradients");
	ds_error_clear(&err);
	is_int(ds_plan_forward(infer, 1, 0, &err), DS_ERR_USAGE, "an inference plan refuses training mode");
	ds_error_clear(&err);
	is_int(ds_plan_backward(infer, &err), DS_ERR_USAGE, "and backward");

	/* Steady state: once warm, steps allocate nothing. */
	{
		ds_optim *opt = NULL;
		ds_optim_options o = { .kind = "adamw", .weight_decay = 1e-4 };
		int fail = ds_optim_new(&o, train, &opt, &err);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
		size_t before = 0, after = 0;

		for (int step = 0; step < 110 && !fail; step++) {
			if (step == 10)
				before = mallinfo2().uordblks;
			fill_batch(train, 0, 0);
			ds_plan_zero_grad(train);
			fail = ds_plan_forward(train, 1, (uint64_t)step, &err) || ds_plan_backward(train, &err) ||
			       ds_optim_step(opt, 1e-3, &err);
		}
		after = mallinfo2().uordblks;
		ok(!fail && after == before, "100 training steps allocate nothing (%zu -> %zu bytes in use)", before, after);
#else
		ok(!fail, "optimizer for the steady-state check");
		diag("no mallinfo2: allocation in the steady state not measured");
#endif
		ds_optim_free(opt);
	}
out:
	ds_plan_free(train);
	ds_plan_free(infer);
	ds_graph_free(g);
	ds_container_free(params);
}

static const char *bn_json =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 4]},"
	"              {\"name\": \"y\", \"dtype\": \"I32\", \"shape\": [-1]}],"
	" \"nodes\": ["
	"  {\"op\": \"linear\", \"name\": \"fc1\", \"inputs\": [\"x\", \"fc1.weight\", \"fc1.bias\"], \"outputs\": [\"h\"]},"
	"  {\"op\": \"batchnorm\", \"name\": \"bn\", \"inputs\": [\"h\", \"bn.weight\", \"bn.bias\", \"bn.running_mean\", \"bn.running_var\"], \"outputs\": [\"n\"]},"
	"  {\"op\": \"relu\", \"name\": \"relu1\", \"inputs\": [\"n\"], \"outputs\": [\"a\"]},"
	"  {\"op\": \"dropout\", \"name\": \"drop\", \"inputs\": [\"a\"], \"outputs\": [\"d\"], \"attrs\": {\"p\": 0.5}},"
	"  {\"op\": \"linear\", \"name\": \"fc2\", \"inputs\": [\"d\", \"fc2.weight\", \"fc2.bias\"], \"outputs\": [\"logits\"]},"
	"  {\"op\": \"cross_entropy\", \"name\": \"ce\", \"inputs\": [\"logits\", \"y\"], \"outputs\": [\"loss\"]}],"
	" \"outputs\": [\"loss\"]}";

static void test_dropout_batchnorm(void)
{
	ds_container *params = ds_container_new();
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	ds_error err = { 0 };
	float *rv;
	int bad, trainable = 0;
	double worst = 0;

	add_tensor(params, "fc1.weight", 2, H, D, 0.8);
	add_tensor(params, "fc1.bias", 1, H, 0, 0.3);
	add_tensor(params, "bn.weight", 1, H, 0, 1.0);
	add_tensor(params, "bn.bias", 1, H, 0, 0.3);
	add_tensor(params, "bn.running_mean", 1, H, 0, 0.0);
	rv = add_tensor(params, "bn.running_var", 1, H, 0, 0.0)->data;
	for (int j = 0; j < H; j++)
		rv[j] = 1.0f;
	add_tensor(params, "fc2.weight", 2, K, H, 0.8);
	add_tensor(params, "fc2.bias", 1, K, 0, 0.3);
	if (ds_graph_parse(bn_json, params, &g, &err) || ds_plan_new(g, params, B, "loss", DS_CPU, &p, &err)) {
		ok(0, "plan with batchnorm and dropout: %s", err.message);
		goto out;
	}
	for (size_t i = 0; i < ds_plan_param_count(p); i++)
		trainable += ds_plan_param_trainable(p, i);
	is_int(trainable, 6, "running statistics do not train");
	ok(ds_plan_grad(p, 4) == NULL || !ds_plan_param_trainable(p, 4), "and have no gradient");
	fill_batch(p, B, 0);
	{
		float a = plan_loss(p, 1, 7), b = plan_loss(p, 1, 7), c = plan_loss(p, 1, 8), e = plan_loss(p, 0, 7);

		ok(a == b, "the same step draws the same dropout mask");
		ok(a != c, "another step draws another");
		ok(e == plan_loss(p, 0, 9) && e != a, "evaluation mode is deterministic and differs");
	}
	bad = fd_check(p, 7, 2e-3, 2e-2, &worst);
	ok(bad == 0, "gradients through batchnorm and dropout match finite differences (worst %.2g)", worst);
out:
	ds_plan_free(p);
	ds_graph_free(g);
	ds_container_free(params);
}

static const char *residual_json =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 4]},"
	"              {\"name\": \"y\", \"dtype\": \"I32\", \"shape\": [-1]}],"
	" \"nodes\": ["
	"  {\"op\": \"linear\", \"name\": \"fc1\", \"inputs\": [\"x\", \"fc1.weight\", \"fc1.bias\"], \"outputs\": [\"h\"]},"
	"  {\"op\": \"relu\", \"name\": \"relu1\", \"inputs\": [\"h\"], \"outputs\": [\"a\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc2\", \"inputs\": [\"a\", \"fc2.weight\"], \"outputs\": [\"b\"]},"
	"  {\"op\": \"add\", \"name\": \"res\", \"inputs\": [\"h\", \"b\"], \"outputs\": [\"s\"]},"
	"  {\"op\": \"mul\", \"name\": \"sq\", \"inputs\": [\"s\", \"s\"], \"outputs\": [\"q\"]},"
	"  {\"op\": \"linear\", \"name\": \"fc3\", \"inputs\": [\"q\", \"fc3.weight\", \"fc3.bias\"], \"outputs\": [\"logits\"]},"
	"  {\"op\": \"cross_entropy\", \"name\": \"ce\", \"inputs\": [\"logits\", \"y\"], \"outputs\": [\"loss\"]}],"
	" \"outputs\": [\"loss\"]}";

/* A value read by two nodes (h), and one read twice by the same node (s):
 * their gradients gather every contribution. */
static void test_residual(void)
{
	ds_container *params = ds_container_new();
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	ds_error err = { 0 };
	double worst;
	int bad;

	add_tensor(params, "fc1.weight", 2, H, D, 0.8);
	add_tensor(params, "fc1.bias", 1, H, 0, 0.3);
	add_tensor(params, "fc2.weight", 2, H, H, 0.5);
	add_tensor(params, "fc3.weight", 2, K, H, 0.5);
	add_tensor(params, "fc3.bias", 1, K, 0, 0.3);
	if (ds_graph_parse(residual_json, params, &g, &err) || ds_plan_new(g, params, B, "loss", DS_CPU, &p, &err)) {
		ok(0, "plan with a residual add: %s", err.message);
		goto out;
	}
	fill_batch(p, B, 0);
	bad = fd_check(p, 0, 2e-3, 2e-2, &worst);
	ok(bad == 0, "gradients through a residual add and a square match finite differences (worst %.2g)", worst);
out:
	ds_plan_free(p);
	ds_graph_free(g);
	ds_container_free(params);
}

static void test_errors(void)
{
	struct mlp m;
	ds_plan *p = NULL;
	ds_error err = { 0 };

	if (mlp_make(&m) != 0)
		return;
	is_int(ds_plan_new(m.graph, m.params, B, "nope", DS_CPU, &p, &err), DS_ERR_DATA, "an unknown loss is refused");
	ok(p == NULL, "and no plan is returned");
	ds_error_clear(&err);
	is_int(ds_plan_new(m.graph, m.params, B, "logits", DS_CPU, &p, &err), DS_ERR_DATA, "a loss that is not a scalar too");
	ds_error_clear(&err);
	is_int(ds_plan_new(m.graph, m.params, 0, "loss", DS_CPU, &p, &err), DS_ERR_USAGE, "batch 0 is refused");
	ds_error_clear(&err);
	is_int(ds_plan_new(m.graph, m.params, B, "loss", (ds_device){ DS_DEVICE_CUDA, 0 }, &p, &err), DS_ERR_RUN,
	       "CUDA plans are not built yet");
	ds_error_clear(&err);
	if (ds_plan_new(m.graph, m.params, B, "loss", DS_CPU, &p, &err) == 0) {
		int32_t *y;

		fill_batch(p, B, 0);
		y = ds_plan_tensor(p, "y")->data;
		y[2] = 17;
		ds_error_clear(&err);
		ok(ds_plan_forward(p, 1, 0, &err) != 0 && strncmp(err.message, "node 'ce': ", 11) == 0,
		   "a kernel's error names the node: %s", err.message);
		ds_error_clear(&err);
		is_int(ds_plan_keep(p, "nope", &err), DS_ERR_USAGE, "keep of an unknown value is refused");
	}
	ds_plan_free(p);
	mlp_free(&m);
}

/* ------------------------------------------------------------ sparse tables */

#define BAG_V 20     /* table rows; ids stay below BAG_USED */
#define BAG_USED 12
#define BAG_D 5
#define BAG_L 6

static const char *bag_json_fmt =
	"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"I32\", \"shape\": [-1, %d]},"
	"              {\"name\": \"y\", \"dtype\": \"I32\", \"shape\": [-1]}],"
	" \"nodes\": ["
	"  {\"op\": \"embedding_bag\", \"name\": \"bag\", \"inputs\": [\"x\", \"emb\"], \"outputs\": [\"e\"],"
	"   \"attrs\": {\"mode\": \"mean\", \"sparse\": %s}},"
	"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"e\", \"%s\"], \"outputs\": [\"logits\"]},"
	"  {\"op\": \"cross_entropy\", \"name\": \"ce\", \"inputs\": [\"logits\", \"y\"], \"outputs\": [\"loss\"]}],"
	" \"outputs\": [\"loss\"]}";

/* A bag model with the same weights every call (the generator restarts);
 * tied makes the classifier read the table too. */
static ds_plan *bag_plan(const char *sparse, int tied, ds_container **params, ds_graph **g)
{
	char json[1024];
	ds_error err = { 0 };
	ds_plan *p = NULL;

	rng = 0x1234567887654321ull;
	*params = ds_container_new();
	add_tensor(*params, "emb", 2, BAG_V, BAG_D, 0.5);
	add_tensor(*params, "fc.weight", 2, K, BAG_D, 0.5);
	snprintf(json, sizeof json, bag_json_fmt, BAG_L, sparse, tied ? "emb" : "fc.weight");
	if (ds_graph_parse(json, *params, g, &err) || ds_plan_new(*g, *params, B, "loss", DS_CPU, &p, &err))
		diag("bag plan: %s", err.message);
	return p;
}

/* Ids below BAG_USED with repeats and -1 padding, as ds-clean packs text. */
static void bag_batch(ds_plan *p, int n, uint64_t seed)
{
	int32_t *x = ds_plan_tensor(p, "x")->data, *y = ds_plan_tensor(p, "y")->data;

	rng = seed;
	for (int r = 0; r < n; r++) {
		int len = 1 + (int)(uniform() * BAG_L);

		y[r] = (int32_t)(uniform() * K);
		for (int j = 0; j < BAG_L; j++)
			x[r * BAG_L + j] = j < len ? (int32_t)(uniform() * BAG_USED) : -1;
	}
}

static int grads_equal(ds_plan *a, ds_plan *b)
{
	int same = 1;

	for (size_t i = 0; i < ds_plan_param_count(a); i++)
		same &= memcmp(ds_plan_grad(a, i)->data, ds_plan_grad(b, i)->data,
			       ds_tensor_nbytes(ds_plan_grad(a, i))) == 0;
	return same;
}

static int bag_step(ds_plan *p, int n, uint64_t seed)
{
	ds_error err = { 0 };

	bag_batch(p, n, seed);
	if (ds_plan_set_batch(p, n, &err) || ds_plan_forward(p, 1, seed, &err) || ds_plan_backward(p, &err)) {
		diag("bag step: %s", err.message);
		return -1;
	}
	return 0;
}

/* The rows listed are exactly the distinct ids seen since zero_grad. */
static int rows_match(ds_plan *p, const uint64_t *seeds, const int *ns, int k)
{
	ds_grad_rows r;
	int seen[BAG_V] = { 0 }, listed[BAG_V] = { 0 }, want = 0;

	if (!ds_plan_grad_rows(p, 0, &r) || r.width != BAG_D)
		return 0;
	for (int s = 0; s < k; s++) {
		bag_batch(p, ns[s], seeds[s]);
		for (int e = 0; e < ns[s] * BAG_L; e++) {
			int32_t id = ((int32_t *)ds_plan_tensor(p, "x")->data)[e];

			if (id >= 0 && !seen[id]++)
				want++;
		}
	}
	for (size_t i = 0; i < r.count; i++)
		if (r.rows[i] < 0 || r.rows[i] >= BAG_V || listed[r.rows[i]]++ || !seen[r.rows[i]])
			return 0;
	return (int)r.count == want;
}

/* Plain embedding takes "sparse" too; a value other than 0 or 1 is refused. */
static void test_sparse_lookup(void)
{
	static const char *fmt =
		"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"I32\", \"shape\": [-1, 2]},"
		"              {\"name\": \"y\", \"dtype\": \"I32\", \"shape\": [-1]}],"
		" \"nodes\": ["
		"  {\"op\": \"embedding\", \"name\": \"emb\", \"inputs\": [\"x\", \"t\"], \"outputs\": [\"e\"],"
		"   \"attrs\": {\"sparse\": %s}},"
		"  {\"op\": \"flatten\", \"name\": \"f\", \"inputs\": [\"e\"], \"outputs\": [\"h\"]},"
		"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"h\", \"w\"], \"outputs\": [\"logits\"]},"
		"  {\"op\": \"cross_entropy\", \"name\": \"ce\", \"inputs\": [\"logits\", \"y\"], \"outputs\": [\"loss\"]}],"
		" \"outputs\": [\"loss\"]}";
	const char *values[3] = { "0", "1", "2" };
	ds_container *c[3] = { NULL };
	ds_graph *g[3] = { NULL };
	ds_plan *p[3] = { NULL };
	ds_error err = { 0 };
	ds_grad_rows r;
	int rc = 0;

	for (int v = 0; v < 3; v++) {
		char json[1024];
		int32_t *x, *y;

		rng = 99;
		c[v] = ds_container_new();
		add_tensor(c[v], "t", 2, BAG_V, 3, 0.5);
		add_tensor(c[v], "w", 2, K, 6, 0.5);
		snprintf(json, sizeof json, fmt, values[v]);
		ds_error_clear(&err);
		rc = ds_graph_parse(json, c[v], &g[v], &err);
		if (!rc)
			rc = ds_plan_new(g[v], c[v], 4, "loss", DS_CPU, &p[v], &err);
		if (v == 2)
			break;
		if (rc) {
			ok(0, "embedding plan: %s", err.message);
			goto out;
		}
		x = ds_plan_tensor(p[v], "x")->data;
		y = ds_plan_tensor(p[v], "y")->data;
		for (int e = 0; e < 8; e++)
			x[e] = e == 3 ? -1 : (e * 5) % 7;
		for (int e = 0; e < 4; e++)
			y[e] = e % K;
		if (ds_plan_forward(p[v], 1, 0, &err) || ds_plan_backward(p[v], &err)) {
			ok(0, "embedding step: %s", err.message);
			goto out;
		}
	}
	ok(grads_equal(p[0], p[1]), "sparse embedding: the same gradient as the dense one");
	ok(ds_plan_grad_rows(p[1], 0, &r) && r.count == 6 && r.rows[0] == 0 && r.rows[5] == 6,
	   "its rows are the distinct ids, in order");
	ok(rc == DS_ERR_DATA && strstr(err.message, "sparse"), "\"sparse\": 2 is refused: %s", err.message);
out:
	for (int v = 0; v < 3; v++) {
		ds_plan_free(p[v]);
		ds_graph_free(g[v]);
		ds_container_free(c[v]);
	}
}

static void test_sparse_rows(void)
{
	ds_container *cd = NULL, *cs = NULL, *ct = NULL;
	ds_graph *gd = NULL, *gs = NULL, *gt = NULL;
	ds_plan *dense = bag_plan("0", 0, &cd, &gd), *sparse = bag_plan("true", 0, &cs, &gs);
	ds_plan *tied = bag_plan("1", 1, &ct, &gt);
	const uint64_t seeds[2] = { 11, 12 };
	const int ns[2] = { B, B - 3 };
	ds_grad_rows r;
	double nd, ns_norm, worst = 0;
	int zero = 1;

	if (!dense || !sparse || !tied) {
		ok(0, "bag plans");
		goto out;
	}
	ok(!ds_plan_grad_rows(dense, 0, &r), "a table without \"sparse\" keeps a dense gradient");
	ok(ds_plan_grad_rows(sparse, 0, &r) && r.count == 0, "\"sparse\": true gives a row list, empty at first");
	ok(!ds_plan_grad_rows(sparse, 1, &r), "the classifier's weight stays dense");
	ok(!ds_plan_grad_rows(tied, 0, &r), "a table a dense node also reads stays dense");

	bag_step(dense, ns[0], seeds[0]);
	bag_step(sparse, ns[0], seeds[0]);
	ok(grads_equal(dense, sparse), "sparse embedding_bag: the same gradient, bit for bit, as the dense one");
	ok(rows_match(sparse, seeds, ns, 1), "its rows are the distinct ids of the batch");

	/* Accumulation: a second backward (a short batch) adds; the rows are the union. */
	bag_step(dense, ns[1], seeds[1]);
	bag_step(sparse, ns[1], seeds[1]);
	ok(grads_equal(dense, sparse), "accumulated over two backwards: still the dense gradient");
	ok(rows_match(sparse, seeds, ns, 2), "and the rows are the union of both batches'");

	/* Clipping sums the listed rows only: the same norm up to rounding. */
	nd = ds_plan_clip_grad_norm(dense, 0.01);
	ns_norm = ds_plan_clip_grad_norm(sparse, 0.01);
	for (size_t i = 0; i < ds_plan_param_count(dense); i++) {
		const float *a = ds_plan_grad(dense, i)->data, *b = ds_plan_grad(sparse, i)->data;

		for (int64_t e = 0; e < ds_tensor_numel(ds_plan_grad(dense, i)); e++)
			if (fabs(a[e] - b[e]) > worst)
				worst = fabs(a[e] - b[e]);
	}
	ok(nd > 0.01 && fabs(nd - ns_norm) <= 1e-12 * nd, "clipping: the same norm (%.9g, %.9g)", nd, ns_norm);
	ok(worst <= 1e-9, "and the same clipped gradient (worst %.2g)", worst);

	ds_plan_zero_grad(sparse);
	for (size_t i = 0; i < ds_plan_param_count(sparse); i++) {
		const float *g = ds_plan_grad(sparse, i)->data;

		for (int64_t e = 0; e < ds_tensor_numel(ds_plan_grad(sparse, i)); e++)
			zero &= g[e] == 0.0f;
	}
	ok(zero && ds_plan_grad_rows(sparse, 0, &r) && r.count == 0, "zero_grad clears the rows and the list");
	ds_plan_zero_grad(dense);
	bag_step(dense, ns[1], seeds[1]);
	bag_step(sparse, ns[1], seeds[1]);
	ok(grads_equal(dense, sparse) && rows_match(sparse, seeds + 1, ns + 1, 1),
	   "after zero_grad the next backward starts clean");
	test_sparse_lookup();
out:
	ds_plan_free(dense);
	ds_plan_free(sparse);
	ds_plan_free(tied);
	ds_graph_free(gd);
	ds_graph_free(gs);
	ds_graph_free(gt);
	ds_container_free(cd);
	ds_container_free(cs);
	ds_container_free(ct);
}

/* In an inference plan a flatten is a view of its input: the same bytes,
 * no copy, and its input may still be read elsewhere. */
static void test_flatten_view(void)
{
	static const char *json =
		"{\"inputs\": [{\"name\": \"x\", \"dtype\": \"F32\", \"shape\": [-1, 2, 3, 4]}],"
		" \"nodes\": ["
		"  {\"op\": \"relu\", \"name\": \"r\", \"inputs\": [\"x\"], \"outputs\": [\"a\"]},"
		"  {\"op\": \"flatten\", \"name\": \"f\", \"inputs\": [\"a\"], \"outputs\": [\"h\"]},"
		"  {\"op\": \"linear\", \"name\": \"fc\", \"inputs\": [\"h\", \"w\"], \"outputs\": [\"logits\"]},"
		"  {\"op\": \"global_avg_pool\", \"name\": \"g\", \"inputs\": [\"a\"], \"outputs\": [\"m\"]}],"
		" \"outputs\": [\"logits\", \"m\"]}";
	ds_container *c = ds_container_new();
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	ds_error err = { 0 };
	const float *w;
	float *x;
	int good = 1;

	rng = 5;
	w = add_tensor(c, "w", 2, K, 24, 0.5)->data;
	if (ds_graph_parse(json, c, &g, &err) || ds_plan_new(g, c, 3, NULL, DS_CPU, &p, &err)) {
		ok(0, "flatten plan: %s", err.message);
		goto out;
	}
	x = ds_plan_tensor(p, "x")->data;
	for (int i = 0; i < 3 * 24; i++)
		x[i] = (float)(i % 7) - 3.0f;
	if (ds_plan_forward(p, 0, 0, &err)) {
		ok(0, "flatten forward: %s", err.message);
		goto out;
	}
	ok(ds_plan_tensor(p, "h")->data == ds_plan_tensor(p, "a")->data, "a flatten in inference is a view of its input");
	for (int n = 0; n < 3; n++) {
		const float *h = ds_plan_tensor(p, "a")->data, *y = ds_plan_tensor(p, "logits")->data;
		const float *m = ds_plan_tensor(p, "m")->data;

		for (int k = 0; k < K; k++) {
			float s = 0.0f;

			for (int i = 0; i < 24; i++)
				s += h[n * 24 + i] * w[k * 24 + i];
			good &= fabsf(s - y[n * K + k]) < 1e-5f;
		}
		for (int ch = 0; ch < 2; ch++) {
			float s = 0.0f;

			for (int i = 0; i < 12; i++)
				s += x[(n * 2 + ch) * 12 + i] > 0.0f ? x[(n * 2 + ch) * 12 + i] : 0.0f;
			good &= fabsf(s / 12.0f - m[n * 2 + ch]) < 1e-5f;
		}
	}
	ok(good, "and the layer and the pool read the same values");
out:
	ds_plan_free(p);
	ds_graph_free(g);
	ds_container_free(c);
}

int main(void)
{
	test_mlp();
	test_training();
	test_arena();
	test_dropout_batchnorm();
	test_residual();
	test_errors();
	test_sparse_rows();
	test_flatten_view();
	return done_testing();
}
