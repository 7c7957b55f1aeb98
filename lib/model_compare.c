/* model_compare.c - two models on the same inputs: how far apart are their
 * outputs?  ds-optimize --verify asks it of a model and its rewrite (they
 * must agree to float rounding); quantization asks it of float and INT8. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "internal.h"
#include "train.h"

struct runner {
	ds_graph *g;
	ds_plan *plan;
	const char *input, *output;
};

static void runner_free(struct runner *r)
{
	ds_plan_free(r->plan);
	ds_graph_free(r->g);
}

static int runner_new(ds_container *m, const char *which, int64_t batch, struct runner *r, ds_error *err)
{
	int rc;

	memset(r, 0, sizeof *r);
	if ((rc = ds_graph_from_model(m, &r->g, err)) ||
	    (rc = ds_plan_new(r->g, m, batch, NULL, DS_CPU, &r->plan, err))) {
		ds_error_prefix(err, "%s model", which);
		return rc;
	}
	if (!ds_graph_input_count(r->g) || !ds_graph_output_count(r->g))
		return ds_error_set(err, DS_ERR_DATA, "bad_graph", "%s model: no input or no output", which);
	r->input = ds_graph_input_name(r->g, 0);
	r->output = ds_graph_output_name(r->g, 0);
	return 0;
}

/* Ids below the vocabulary of the embedding that reads the input, or bytes. */
static int64_t id_limit(const ds_graph *g, const ds_container *m, const char *input)
{
	for (size_t i = 0; i < ds_graph_node_count(g); i++) {
		const ds_node *n = ds_graph_node(g, i);

		if (ds_node_input_count(n) > 1 && !strcmp(ds_node_input(n, 0), input) &&
		    !strncmp(ds_node_op(n), "embedding", 9)) {
			ds_tensor *t = ds_container_get(m, ds_node_input(n, 1));

			if (t && t->ndim == 2)
				return t->shape[0];
		}
	}
	return 256;
}

int ds_model_compare(ds_container *a, ds_container *b, int64_t count, uint64_t seed, json_t **figures,
		     ds_error *err)
{
	struct runner ra = { 0 }, rb = { 0 };
	int64_t batch = count < 64 ? count : 64, done = 0, agree = 0, limit;
	double max_abs = 0, max_ref = 0;
	ds_rng rng;
	int rc;

	*figures = NULL;
	if (count < 1)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "a comparison needs at least one input");
	if ((rc = runner_new(a, "first", batch, &ra, err)) || (rc = runner_new(b, "second", batch, &rb, err)))
		goto out;
	ds_rng_seed(&rng, seed);
	limit = id_limit(ra.g, a, ra.input);
	while (done < count) {
		int64_t n = count - done < batch ? count - done : batch, k;
		ds_tensor *xa, *xb, *ya, *yb;

		if ((rc = ds_plan_set_batch(ra.plan, n, err)) || (rc = ds_plan_set_batch(rb.plan, n, err)))
			goto out;
		xa = ds_plan_tensor(ra.plan, ra.input);
		xb = ds_plan_tensor(rb.plan, rb.input);
		if (!xa || !xb || xa->dtype != xb->dtype || ds_tensor_numel(xa) != ds_tensor_numel(xb)) {
			rc = ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "the two models take different inputs");
			goto out;
		}
		for (int64_t i = 0; i < ds_tensor_numel(xa); i++) {
			if (xa->dtype == DS_F32)
				((float *)xa->data)[i] = (float)ds_rng_uniform(&rng);
			else if (xa->dtype == DS_I32)
				((int32_t *)xa->data)[i] = (int32_t)ds_rng_below(&rng, (uint64_t)limit);
		}
		memcpy(xb->data, xa->data, ds_tensor_nbytes(xa));
		if ((rc = ds_plan_forward(ra.plan, 0, 0, err)) || (rc = ds_plan_forward(rb.plan, 0, 0, err)))
			goto out;
		ya = ds_plan_tensor(ra.plan, ra.output);
		yb = ds_plan_tensor(rb.plan, rb.output);
		if (!ya || !yb || ya->dtype != DS_F32 || yb->dtype != DS_F32 || ds_tensor_numel(ya) != ds_tensor_numel(yb)) {
			rc = ds_error_set(err, DS_ERR_DATA, "shape_mismatch", "the two models give outputs of different shapes");
			goto out;
		}
		k = ds_tensor_numel(ya) / n;
		for (int64_t r = 0; r < n; r++) {
			const float *pa = (const float *)ya->data + r * k, *pb = (const float *)yb->data + r * k;
			int64_t ia = 0, ib = 0;

			for (int64_t j = 0; j < k; j++) {
				double d = fabs((double)pa[j] - pb[j]);

				if (!(d <= max_abs))
					max_abs = d;     /* NaN sticks */
				if (fabs(pa[j]) > max_ref)
					max_ref = fabs(pa[j]);
				ia = pa[j] > pa[ia] ? j : ia;
				ib = pb[j] > pb[ib] ? j : ib;
			}
			agree += ia == ib;
		}
		done += n;
	}
	*figures = json_pack("{s:I, s:f, s:f, s:f}", "inputs", (json_int_t)count, "max_abs_diff", max_abs,
			     "max_rel_diff", max_ref > 0 ? max_abs / max_ref : max_abs, "top1_agreement",
			     (double)agree / (double)count);
	if (!*figures)
		rc = ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
out:
	runner_free(&ra);
	runner_free(&rb);
	return rc;
}
