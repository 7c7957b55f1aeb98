/* test_train_graph.c - the training graph's rewrites change nothing that
 * training computes.  ReLU after max_pool: on cnn-small and cnn-bn (two
 * relu -> max_pool pairs) and resnet-s (none), the loss and every
 * parameter's gradient of one step are bit-identical with and without it.
 * max_pool into conv2d (cnn-small's two; cnn-bn's pools follow batch norm):
 * the same loss to the bit and the same gradients up to the order of their
 * sums. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tap.h"

/* The zoo's model with a cross-entropy loss over labels "y". */
static json_t *training_graph(ds_container *c)
{
	json_t *g = NULL;

	ds_container_meta_json(c, "ds.graph", &g, NULL);
	json_array_append_new(json_object_get(g, "inputs"),
			      json_pack("{s:s, s:s, s:[i]}", "name", "y", "dtype", "I32", "shape", -1));
	json_array_append_new(json_object_get(g, "nodes"),
			      json_pack("{s:s, s:s, s:[s, s], s:[s]}", "op", "cross_entropy", "name", "loss", "inputs",
					"logits", "y", "outputs", "loss"));
	return g;
}

/* One training step of graph doc: the loss and the gradients, copied. */
static int step(const json_t *doc, ds_container *c, float *loss, float **grads, size_t *bytes, size_t *n)
{
	char *text = json_dumps(doc, JSON_COMPACT);
	ds_graph *g = NULL;
	ds_plan *p = NULL;
	ds_tensor *x, *y;
	int rc;

	if ((rc = ds_graph_parse(text, c, &g, NULL)) || (rc = ds_plan_new(g, c, 8, "loss", DS_CPU, &p, NULL)))
		goto out;
	x = ds_plan_tensor(p, "x");
	y = ds_plan_tensor(p, "y");
	for (int64_t i = 0; i < ds_tensor_numel(x); i++)
		((float *)x->data)[i] = (float)((i * 7919) % 255) / 127.0f - 1.0f;
	for (int64_t i = 0; i < 8; i++)
		((int32_t *)y->data)[i] = (int32_t)(i % 10);
	ds_plan_zero_grad(p);
	if ((rc = ds_plan_forward(p, 1, 1, NULL)) || (rc = ds_plan_backward(p, NULL)))
		goto out;
	*loss = *(const float *)ds_plan_tensor(p, "loss")->data;
	*n = ds_plan_param_count(p);
	for (size_t i = 0; i < *n; i++) {
		ds_tensor *gr = ds_plan_grad(p, i);

		grads[i] = NULL;
		bytes[i] = 0;
		if (!gr || i >= 256)
			continue;
		bytes[i] = ds_tensor_nbytes(gr);
		grads[i] = malloc(ds_tensor_nbytes(gr) + 1);
		memcpy(grads[i], gr->data, ds_tensor_nbytes(gr));
	}
out:
	ds_plan_free(p);
	ds_graph_free(g);
	free(text);
	return rc;
}

/* Largest difference over the largest magnitude, of two gradients. */
static double rel_diff(const float *a, const float *b, size_t n)
{
	double d = 0.0, m = 0.0;

	for (size_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		m = fmax(m, fabs((double)a[i]));
	}
	return m > 0.0 ? d / m : d;
}

static void check(const char *arch, unsigned which, int want_rewrites)
{
	const int exact = which == DS_TRAIN_RELU_AFTER_POOL;
	double worst = 0.0;
	json_t *labels = json_pack("[s,s,s,s,s,s,s,s,s,s]", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9");
	json_t *pre = json_pack("{s:s, s:i, s:i, s:i, s:s, s:s, s:s, s:f}", "kind", "image", "width", 28, "height", 28,
				"channels", 1, "resize", "stretch", "layout", "NHWC", "dtype", "U8", "scale", 1.0 / 255);
	ds_zoo_options zo = { .arch = arch, .preprocess = pre, .labels = labels, .seed = 3 };
	ds_container *c = NULL;
	json_t *plain, *rewritten;
	float loss_a = 0, loss_b = 0, *ga[256], *gb[256];
	size_t na = 0, nb = 0, ba[256], bb[256];
	int rewrites = -1, same = 1;
	ds_error err = { 0 };

	is_int(ds_zoo_build(&zo, &c, &err), 0, "%s: built", arch);
	plain = training_graph(c);
	rewritten = json_deep_copy(plain);
	if (which & DS_TRAIN_POOL_INTO_CONV) {
		/* From the graph with its ReLUs already after the pools. */
		is_int(ds_train_graph_rewrite(plain, c, DS_TRAIN_RELU_AFTER_POOL, &rewrites, &err), 0, "%s: reordered", arch);
		json_decref(rewritten);
		rewritten = json_deep_copy(plain);
	}
	is_int(ds_train_graph_rewrite(rewritten, c, which, &rewrites, &err), 0, "%s: rewritten", arch);
	is_int(rewrites, want_rewrites, "%s: %d rewrites (%s)", arch, want_rewrites,
	       exact ? "relu after max_pool" : "max_pool into conv2d");
	is_int(step(plain, c, &loss_a, ga, ba, &na), 0, "%s: a step of the graph as built", arch);
	is_int(step(rewritten, c, &loss_b, gb, bb, &nb), 0, "%s: a step of the rewritten graph", arch);
	ok(loss_a == loss_b && loss_a > 0, "%s: the same loss (%g, %g)", arch, loss_a, loss_b);
	is_int((int)na, (int)nb, "%s: the same parameters", arch);
	for (size_t i = 0; i < na && i < nb; i++) {
		if (ba[i] != bb[i] || (ba[i] && memcmp(ga[i], gb[i], ba[i]) != 0))
			same = 0;
		if (ba[i] == bb[i] && ba[i])
			worst = fmax(worst, rel_diff(ga[i], gb[i], ba[i] / sizeof(float)));
		free(ga[i]);
		free(gb[i]);
	}
	if (exact)
		ok(same && na > 0, "%s: every gradient bit-identical", arch);
	else
		ok(na > 0 && worst < 1e-5, "%s: every gradient within %g of the largest", arch, worst);
	json_decref(plain);
	json_decref(rewritten);
	json_decref(labels);
	json_decref(pre);
	ds_container_free(c);
}

int main(void)
{
	ds_threads_set(2);
	check("cnn-small", DS_TRAIN_RELU_AFTER_POOL, 2);
	check("cnn-bn", DS_TRAIN_RELU_AFTER_POOL, 2);
	check("resnet-s", DS_TRAIN_RELU_AFTER_POOL, 0);
	check("cnn-small", DS_TRAIN_POOL_INTO_CONV, 2);
	check("cnn-bn", DS_TRAIN_POOL_INTO_CONV, 0);
	check("resnet-s", DS_TRAIN_POOL_INTO_CONV, 0);
	return done_testing();
}
