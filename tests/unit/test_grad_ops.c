/* test_grad_ops.c - forward values and gradients of the ops other than
 * convolution, linear and pooling: activations, dropout, softmax, batchnorm,
 * layernorm, add, mul, concat, flatten, reshape, cross_entropy, embedding
 * and embedding_bag, on the CPU. */
#include "config.h"

#include <inttypes.h>

#include "gradcheck.h"

#define S(...) ((const int64_t[]){ __VA_ARGS__, -1 })

static const ds_dtype F1[] = { DS_F32 };
static const ds_dtype F2[] = { DS_F32, DS_F32 };
static const ds_dtype F3[] = { DS_F32, DS_F32, DS_F32 };
static const ds_dtype F5[] = { DS_F32, DS_F32, DS_F32, DS_F32, DS_F32 };

typedef void (*prep_fn)(struct gc_case *c);

static float *fdata(const ds_tensor *t)
{
	return (float *)t->data;
}

/* gc_check with a hook that adjusts the random inputs first (inputs away
 * from an activation's kink, positive running variances, padding ids). */
static double check(const char *op, const char *attrs, const int64_t *const *shapes, const ds_dtype *dtypes,
		    int n_in, int int_max, int training, double tol, prep_fn prep)
{
	return gc_check_prep(op, attrs, shapes, dtypes, n_in, int_max, training, tol, prep);
}

/* Inputs at least 0.1 from 0, the kink of relu, relu6 and leaky_relu
 * (finite differences step 0.01). */
static void away_from_zero(struct gc_case *c)
{
	float *x = fdata(c->in[0]);

	for (int64_t k = 0; k < ds_tensor_numel(c->in[0]); k++)
		x[k] = x[k] < 0 ? x[k] * 0.9f - 0.1f : x[k] * 0.9f + 0.1f;
}

/* relu6's upper kink: spread over [-2, 8), away from 0 and 6. */
static void around_six(struct gc_case *c)
{
	float *x = fdata(c->in[0]);

	for (int64_t k = 0; k < ds_tensor_numel(c->in[0]); k++) {
		float v = x[k] * 5.0f + 3.0f;

		if (fabsf(v) < 0.1f || fabsf(v - 6.0f) < 0.1f)
			v += 0.25f;
		x[k] = v;
	}
}

/* hardswish has kinks at -3 and 3: spread over [-5, 5] away from them. */
static void hardswish_range(struct gc_case *c)
{
	float *x = fdata(c->in[0]);

	for (int64_t k = 0; k < ds_tensor_numel(c->in[0]); k++) {
		float v = x[k] * 5.0f;

		if (fabsf(fabsf(v) - 3.0f) < 0.1f)
			v += 0.25f;
		x[k] = v;
	}
}

static void positive_running_var(struct gc_case *c)
{
	float *v = fdata(c->in[4]);

	for (int64_t k = 0; k < ds_tensor_numel(c->in[4]); k++)
		v[k] = fabsf(v[k]) + 0.5f;
}

/* Every third id padding, and the whole of bag 1. */
static void pad_ids(struct gc_case *c)
{
	int32_t *ids = c->in[0]->data;
	int64_t len = c->in[0]->shape[1];

	for (int64_t k = 0; k < ds_tensor_numel(c->in[0]); k++)
		if (k % 3 == 2 || k / len == 1)
			ids[k] = -1;
}

static void activations(void)
{
	const int64_t *x[] = { S(3, 4, 5) };
	const int64_t *big[] = { S(64, 32, 24) };

	check("relu", NULL, x, F1, 1, 0, 1, 1e-3, away_from_zero);
	check("relu6", NULL, x, F1, 1, 0, 1, 1e-3, around_six);
	check("leaky_relu", NULL, x, F1, 1, 0, 1, 1e-3, away_from_zero);
	check("leaky_relu", "{\"alpha\":0.2}", x, F1, 1, 0, 1, 1e-3, away_from_zero);
	check("gelu", NULL, x, F1, 1, 0, 1, 1e-2, NULL);
	check("gelu", "{\"approximate\":\"tanh\"}", x, F1, 1, 0, 1, 1e-2, NULL);
	check("gelu", "{\"approximate\":\"none\"}", x, F1, 1, 0, 1, 1e-2, hardswish_range);
	check("sigmoid", NULL, x, F1, 1, 0, 1, 1e-2, NULL);
	check("tanh", NULL, x, F1, 1, 0, 1, 1e-2, NULL);
	check("silu", NULL, x, F1, 1, 0, 1, 1e-2, hardswish_range);
	check("hardswish", NULL, x, F1, 1, 0, 1, 1e-2, hardswish_range);
	/* Large enough for the OpenMP paths. */
	check("relu", NULL, big, F1, 1, 0, 1, 1e-3, away_from_zero);
	check("silu", NULL, big, F1, 1, 0, 1, 1e-2, NULL);
}

/* Forward values against the definitions, in double. */
static void activation_values(void)
{
	static const struct {
		const char *op, *attrs;
	} ops[] = {
		{ "relu", NULL }, { "relu6", NULL }, { "leaky_relu", "{\"alpha\":0.1}" }, { "gelu", NULL },
		{ "gelu", "{\"approximate\":\"tanh\"}" }, { "sigmoid", NULL }, { "tanh", NULL },
		{ "silu", NULL }, { "hardswish", NULL },
	};
	const int64_t *x[] = { S(40) };

	for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
		struct gc_case c;
		ds_error err = { 0 };
		double worst = 0;

		if (gc_setup(&c, ops[o].op, ops[o].attrs, x, F1, 1, 0, 0) || gc_forward(&c, &err)) {
			ok(0, "%s forward: %s", ops[o].op, err.message);
			gc_free(&c);
			continue;
		}
		for (int k = 0; k < 40; k++) {
			double v = -8.0 + 16.0 * k / 39.0, want = 0;
			const char *op = ops[o].op;

			fdata(c.in[0])[k] = (float)v;
			if (!strcmp(op, "relu"))
				want = v > 0 ? v : 0;
			else if (!strcmp(op, "relu6"))
				want = fmin(fmax(v, 0), 6);
			else if (!strcmp(op, "leaky_relu"))
				want = v > 0 ? v : 0.1 * v;
			else if (!strcmp(op, "gelu") && !ops[o].attrs)
				want = 0.5 * v * (1 + erf(v / sqrt(2)));
			else if (!strcmp(op, "gelu"))
				want = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
			else if (!strcmp(op, "sigmoid"))
				want = 1 / (1 + exp(-v));
			else if (!strcmp(op, "tanh"))
				want = tanh(v);
			else if (!strcmp(op, "silu"))
				want = v / (1 + exp(-v));
			else if (!strcmp(op, "hardswish"))
				want = v * fmin(fmax(v + 3, 0), 6) / 6;
			fdata(c.r[0])[k] = (float)want;
		}
		gc_forward(&c, &err);
		for (int k = 0; k < 40; k++)
			worst = fmax(worst, fabs(fdata(c.out[0])[k] - fdata(c.r[0])[k]));
		ok(worst < 1e-5, "%s %s forward matches its definition (worst %.2g)", ops[o].op,
		   ops[o].attrs ? ops[o].attrs : "", worst);
		gc_free(&c);
	}
}

static void dropout(void)
{
	const int64_t *x[] = { S(4, 50) };
	const int64_t *big[] = { S(64, 1024) };
	struct gc_case c;
	ds_error err = { 0 };
	int64_t n, kept = 0, bad = 0;
	float *first = NULL;
	int same = 1, differ = 0;

	check("dropout", "{\"p\":0.3}", x, F1, 1, 0, 1, 1e-3, NULL);
	check("dropout", "{\"p\":0.3}", x, F1, 1, 0, 0, 1e-3, NULL);

	if (gc_setup(&c, "dropout", "{\"p\":0.25}", big, F1, 1, 0, 1) != 0) {
		ok(0, "dropout set-up");
		return;
	}
	n = ds_tensor_numel(c.in[0]);
	first = malloc((size_t)n * sizeof *first);
	ds_threads_set(1);
	gc_forward(&c, &err);
	memcpy(first, c.out[0]->data, (size_t)n * sizeof *first);
	for (int64_t k = 0; k < n; k++) {
		float x0 = fdata(c.in[0])[k], y = first[k];

		if (y != 0.0f) {
			kept++;
			bad += fabsf(y - x0 / 0.75f) > 1e-6f;
		}
	}
	ok(fabs((double)kept / (double)n - 0.75) < 0.01, "dropout p=0.25 keeps %.4f", (double)kept / (double)n);
	is_int(bad, 0, "dropout scales kept values by 1/(1-p)");
	ds_threads_set(2);
	gc_forward(&c, &err);
	same = memcmp(first, c.out[0]->data, (size_t)n * sizeof *first) == 0;
	ok(same, "dropout mask is the same with 1 and 2 threads for one seed");
	c.seed++;
	gc_forward(&c, &err);
	differ = memcmp(first, c.out[0]->data, (size_t)n * sizeof *first) != 0;
	ok(differ, "another seed drops other elements");
	c.training = 0;
	gc_forward(&c, &err);
	ok(memcmp(c.in[0]->data, c.out[0]->data, (size_t)n * sizeof *first) == 0, "dropout is the identity at inference");
	free(first);
	gc_free(&c);
}

static void softmax(void)
{
	const int64_t *x2[] = { S(4, 7) };
	const int64_t *x3[] = { S(2, 3, 4) };
	struct gc_case c;
	ds_error err = { 0 };
	double worst = 0;

	check("softmax", NULL, x2, F1, 1, 0, 1, 1e-2, NULL);
	check("softmax", "{\"axis\":1}", x3, F1, 1, 0, 1, 1e-2, NULL);
	check("softmax", "{\"axis\":0}", x3, F1, 1, 0, 1, 1e-2, NULL);

	if (gc_setup(&c, "softmax", NULL, x2, F1, 1, 0, 0) == 0 && gc_forward(&c, &err) == 0) {
		for (int r = 0; r < 4; r++) {
			double s = 0;

			for (int k = 0; k < 7; k++)
				s += fdata(c.out[0])[r * 7 + k];
			worst = fmax(worst, fabs(s - 1));
		}
		ok(worst < 1e-6, "softmax rows sum to 1 (worst %.2g)", worst);
		/* Large logits must not overflow. */
		for (int k = 0; k < 7; k++)
			fdata(c.in[0])[k] = 1000.0f + (float)k;
		gc_forward(&c, &err);
		ok(isfinite(fdata(c.out[0])[6]) && fabs(fdata(c.out[0])[6] - (1 - exp(-1)) / (1 - exp(-7))) < 1e-5,
		   "softmax of logits near 1000 is finite and right (%g)", fdata(c.out[0])[6]);
	} else {
		ok(0, "softmax forward: %s", err.message);
	}
	gc_free(&c);
}

static void batchnorm(void)
{
	const int64_t *nchw[] = { S(4, 3, 5, 5), S(3), S(3), S(3), S(3) };
	const int64_t *nc[] = { S(8, 3), S(3), S(3), S(3), S(3) };
	const int64_t *big[] = { S(16, 32, 12, 12), S(32), S(32), S(32), S(32) };
	struct gc_case c;
	ds_error err = { 0 };

	check("batchnorm", NULL, nchw, F5, 5, 0, 1, 1e-2, NULL);
	check("batchnorm", NULL, nc, F5, 5, 0, 1, 1e-2, NULL);
	check("batchnorm", "{\"eps\":0.001}", big, F5, 5, 0, 1, 1e-2, NULL);
	check("batchnorm", NULL, nchw, F5, 5, 0, 0, 1e-2, positive_running_var);
	check("batchnorm", NULL, nc, F5, 5, 0, 0, 1e-2, positive_running_var);

	/* Training normalises each channel to mean 0 and variance 1 and moves
	 * the running statistics as PyTorch does. */
	if (gc_setup(&c, "batchnorm", "{\"momentum\":0.2}", nchw, F5, 5, 0, 1) == 0) {
		double worst_mean = 0, worst_var = 0, worst_run = 0;
		float rm0[3], rv0[3];

		for (int ch = 0; ch < 3; ch++) {
			fdata(c.in[1])[ch] = 1.0f;
			fdata(c.in[2])[ch] = 0.0f;
			rm0[ch] = fdata(c.in[3])[ch];
			rv0[ch] = fdata(c.in[4])[ch] = fabsf(fdata(c.in[4])[ch]);
		}
		for (int64_t k = 0; k < ds_tensor_numel(c.in[0]); k++)
			fdata(c.in[0])[k] = fdata(c.in[0])[k] * 3.0f + 2.0f;
		if (gc_forward(&c, &err) != 0)
			diag("%s", err.message);
		for (int ch = 0; ch < 3; ch++) {
			double s = 0, s2 = 0, xs = 0, xs2 = 0, m, var_u;
			int cnt = 4 * 25;

			for (int i = 0; i < 4; i++)
				for (int j = 0; j < 25; j++) {
					double y = fdata(c.out[0])[(i * 3 + ch) * 25 + j];
					double x = fdata(c.in[0])[(i * 3 + ch) * 25 + j];

					s += y;
					s2 += y * y;
					xs += x;
				}
			m = xs / cnt;
			for (int i = 0; i < 4; i++)
				for (int j = 0; j < 25; j++) {
					double d = fdata(c.in[0])[(i * 3 + ch) * 25 + j] - m;

					xs2 += d * d;
				}
			var_u = xs2 / (cnt - 1);
			worst_mean = fmax(worst_mean, fabs(s / cnt));
			/* Biased variance over (var + eps): just under 1. */
			worst_var = fmax(worst_var, fabs(s2 / cnt - (xs2 / cnt) / (xs2 / cnt + 1e-5)));
			worst_run = fmax(worst_run, fabs(fdata(c.in[3])[ch] - (0.8 * rm0[ch] + 0.2 * m)));
			worst_run = fmax(worst_run, fabs(fdata(c.in[4])[ch] - (0.8 * rv0[ch] + 0.2 * var_u)));
		}
		ok(worst_mean < 1e-5, "batchnorm output has mean 0 per channel (worst %.2g)", worst_mean);
		ok(worst_var < 1e-5, "batchnorm output has variance 1 per channel (worst %.2g)", worst_var);
		ok(worst_run < 1e-5, "running mean and unbiased variance move by momentum (worst %.2g)", worst_run);

		/* Inference uses the running statistics. */
		c.training = 0;
		for (int ch = 0; ch < 3; ch++) {
			fdata(c.in[1])[ch] = 2.0f;
			fdata(c.in[2])[ch] = 0.5f;
			fdata(c.in[3])[ch] = 1.0f;
			fdata(c.in[4])[ch] = 4.0f;
		}
		gc_forward(&c, &err);
		ok(fabs(fdata(c.out[0])[7] - (2.0 * (fdata(c.in[0])[7] - 1.0) / sqrt(4.0 + 1e-5) + 0.5)) < 1e-5,
		   "batchnorm at inference: gamma * (x - running_mean) / sqrt(running_var + eps) + beta");
		ok(fdata(c.in[3])[0] == 1.0f && fdata(c.in[4])[0] == 4.0f, "inference leaves the running statistics");
	} else {
		ok(0, "batchnorm set-up");
	}
	gc_free(&c);
}

static void layernorm(void)
{
	const int64_t *last[] = { S(4, 6), S(6), S(6) };
	const int64_t *two[] = { S(2, 3, 4), S(3, 4), S(3, 4) };
	const int64_t *plain[] = { S(3, 5) };
	const int64_t *gamma_only[] = { S(5, 8), S(8) };
	struct gc_case c;
	ds_error err = { 0 };

	check("layernorm", NULL, last, F3, 3, 0, 1, 1e-2, NULL);
	check("layernorm", "{\"axis\":1}", two, F3, 3, 0, 1, 1e-2, NULL);
	check("layernorm", NULL, plain, F1, 1, 0, 1, 1e-2, NULL);
	check("layernorm", "{\"eps\":0.01}", gamma_only, F2, 2, 0, 1, 1e-2, NULL);

	if (gc_setup(&c, "layernorm", NULL, plain, F1, 1, 0, 1) == 0 && gc_forward(&c, &err) == 0) {
		double worst = 0;

		for (int r = 0; r < 3; r++) {
			double s = 0, s2 = 0;

			for (int j = 0; j < 5; j++) {
				s += fdata(c.out[0])[r * 5 + j];
				s2 += fdata(c.out[0])[r * 5 + j] * fdata(c.out[0])[r * 5 + j];
			}
			worst = fmax(worst, fabs(s / 5) + fabs(s2 / 5 - 1) * 1e-2);
		}
		ok(worst < 1e-4, "layernorm rows have mean 0 and variance about 1 (%.2g)", worst);
	} else {
		ok(0, "layernorm forward: %s", err.message);
	}
	gc_free(&c);
}

static void add_mul(void)
{
	const int64_t *same[] = { S(3, 4), S(3, 4) };
	const int64_t *bias[] = { S(2, 3, 4, 5), S(3, 1, 1) };
	const int64_t *outer[] = { S(4, 1), S(1, 5) };
	const int64_t *row[] = { S(2, 3, 4), S(4) };
	const int64_t *lead[] = { S(1, 3), S(4, 2, 1) };
	const int64_t *big[] = { S(64, 32, 8, 8), S(32, 1, 1) };
	const int64_t *bigsame[] = { S(64, 1024), S(64, 1024) };
	struct gc_case c;
	ds_error err = { 0 };

	for (int m = 0; m < 2; m++) {
		const char *op = m ? "mul" : "add";

		check(op, NULL, same, F2, 2, 0, 1, 1e-3, NULL);
		check(op, NULL, bias, F2, 2, 0, 1, 1e-3, NULL);
		check(op, NULL, outer, F2, 2, 0, 1, 1e-3, NULL);
		check(op, NULL, row, F2, 2, 0, 1, 1e-3, NULL);
		check(op, NULL, lead, F2, 2, 0, 1, 1e-3, NULL);
		check(op, NULL, big, F2, 2, 0, 1, 1e-2, NULL);
		check(op, NULL, bigsame, F2, 2, 0, 1, 1e-2, NULL);
	}

	/* [2,3,4,5] op [3,1,1] against plain indexing. */
	for (int m = 0; m < 2; m++) {
		double worst = 0;

		if (gc_setup(&c, m ? "mul" : "add", NULL, bias, F2, 2, 0, 0) || gc_forward(&c, &err)) {
			ok(0, "broadcast forward: %s", err.message);
			gc_free(&c);
			continue;
		}
		for (int i = 0; i < 2 * 3 * 4 * 5; i++) {
			float a = fdata(c.in[0])[i], b = fdata(c.in[1])[(i / 20) % 3];

			worst = fmax(worst, fabs(fdata(c.out[0])[i] - (m ? a * b : a + b)));
		}
		ok(worst == 0, "%s [2,3,4,5] with [3,1,1] broadcasts over channels", m ? "mul" : "add");
		gc_free(&c);
	}
	if (gc_setup(&c, "mul", NULL, outer, F2, 2, 0, 0) == 0 && gc_forward(&c, &err) == 0) {
		double worst = 0;

		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 5; j++)
				worst = fmax(worst, fabs(fdata(c.out[0])[i * 5 + j] -
							 fdata(c.in[0])[i] * fdata(c.in[1])[j]));
		ok(worst == 0, "mul [4,1] with [1,5] is the outer product");
	} else {
		ok(0, "mul outer set-up: %s", err.message);
	}
	gc_free(&c);
}

static void shapes(void)
{
	const int64_t *cat3[] = { S(2, 3, 4), S(2, 1, 4), S(2, 2, 4) };
	const int64_t *cat0[] = { S(1, 3), S(2, 3), S(3, 3) };
	const int64_t *x[] = { S(2, 3, 4) };
	struct gc_case c;
	ds_error err = { 0 };

	check("concat", NULL, cat3, F3, 3, 0, 1, 1e-3, NULL);
	check("concat", "{\"axis\":0}", cat0, F3, 3, 0, 1, 1e-3, NULL);
	check("concat", "{\"axis\":-2}", cat3, F3, 3, 0, 1, 1e-3, NULL);
	check("flatten", NULL, x, F1, 1, 0, 1, 1e-3, NULL);
	check("flatten", "{\"axis\":2}", x, F1, 1, 0, 1, 1e-3, NULL);
	check("reshape", "{\"shape\":[4,-1]}", x, F1, 1, 0, 1, 1e-3, NULL);
	check("reshape", "{\"shape\":[0,-1]}", x, F1, 1, 0, 1, 1e-3, NULL);

	if (gc_setup(&c, "concat", NULL, cat3, F3, 3, 0, 0) == 0 && gc_forward(&c, &err) == 0) {
		/* out[1, 3, 2] is in1[1, 0, 2]; out[0, 5, 3] is in2[0, 1, 3]. */
		ok(fdata(c.out[0])[1 * 24 + 3 * 4 + 2] == fdata(c.in[1])[1 * 4 + 2] &&
		   fdata(c.out[0])[0 * 24 + 5 * 4 + 3] == fdata(c.in[2])[0 * 8 + 1 * 4 + 3],
		   "concat on axis 1 places each input's channels in turn");
	} else {
		ok(0, "concat forward: %s", err.message);
	}
	gc_free(&c);
	if (gc_setup(&c, "reshape", "{\"shape\":[-1,6]}", x, F1, 1, 0, 0) == 0 && gc_forward(&c, &err) == 0) {
		ok(c.out[0]->shape[0] == 4 && memcmp(c.in[0]->data, c.out[0]->data, 24 * sizeof(float)) == 0,
		   "reshape [2,3,4] to [-1,6] is [4,6] with the same bytes");
	} else {
		ok(0, "reshape forward: %s", err.message);
	}
	gc_free(&c);
}

/* Distillation: the gradient against the student's logits; the teacher's
 * take none.  A student equal to its teacher has loss 0. */
static void distill(void)
{
	const int64_t *two[] = { S(6, 5), S(6, 5) };
	const int64_t *big[] = { S(300, 10), S(300, 10) };
	static const ds_dtype ff[] = { DS_F32, DS_F32 };
	struct gc_case c;
	ds_error err = { 0 };

	check("distill", NULL, two, ff, 2, 1, 1, 1e-2, NULL);
	check("distill", "{\"temperature\":2, \"weight\":0.5}", two, ff, 2, 1, 1, 1e-2, NULL);
	check("distill", "{\"temperature\":1}", big, ff, 2, 1, 1, 5e-2, NULL);
	if (gc_setup(&c, "distill", "{\"temperature\":3}", two, ff, 2, 1, 1) == 0) {
		memcpy(c.in[1]->data, c.in[0]->data, ds_tensor_nbytes(c.in[0]));
		ok(gc_forward(&c, &err) == 0 && fabs(fdata(c.out[0])[0]) < 1e-6,
		   "distill from an identical teacher is 0");
		ok(c.grad_in[1] == NULL, "the teacher's logits take no gradient");
	} else {
		ok(0, "distill set-up");
	}
	gc_free(&c);
}

static void cross_entropy(void)
{
	const int64_t *ce[] = { S(6, 5), S(6) };
	const int64_t *big[] = { S(512, 100), S(512) };
	const int64_t *known[] = { S(2, 3), S(2) };
	static const ds_dtype fi[] = { DS_F32, DS_I32 }, fl[] = { DS_F32, DS_I64 };
	struct gc_case c;
	ds_error err = { 0 };

	check("cross_entropy", NULL, ce, fi, 2, 5, 1, 1e-2, NULL);
	check("cross_entropy", "{\"label_smoothing\":0.1}", ce, fi, 2, 5, 1, 1e-2, NULL);
	check("cross_entropy", "{\"label_smoothing\":0.3}", ce, fl, 2, 5, 1, 1e-2, NULL);
	/* The rows-in-parallel path.  The mean over 512 rows makes each
	 * gradient entry small against the float rounding of the loss that
	 * finite differences see: a looser bound. */
	check("cross_entropy", NULL, big, fi, 2, 100, 1, 5e-2, NULL);
	check("cross_entropy", "{\"weight\":0.3}", ce, fi, 2, 5, 1, 1e-2, NULL);

	/* logits [[1,2,3],[1,1,1]], labels [2,0]: mean of log(e+e^2+e^3)-3
	 * and log 3; smoothing 0.1 as PyTorch defines it. */
	for (int s = 0; s < 2; s++) {
		static const float logits[] = { 1, 2, 3, 1, 1, 1 };
		double want = s ? 0.80310913 : 0.75310913;

		if (gc_setup(&c, "cross_entropy", s ? "{\"label_smoothing\":0.1}" : NULL, known, fi, 2, 3, 1)) {
			ok(0, "cross_entropy set-up");
			continue;
		}
		memcpy(c.in[0]->data, logits, sizeof logits);
		((int32_t *)c.in[1]->data)[0] = 2;
		((int32_t *)c.in[1]->data)[1] = 0;
		if (gc_forward(&c, &err) != 0)
			diag("%s", err.message);
		is_near(fdata(c.out[0])[0], want, 1e-6, "cross_entropy of a known case%s",
			s ? " with label smoothing 0.1" : "");
		if (!s) {
			/* Labels outside [0, K) are bad data, negative ones too. */
			((int32_t *)c.in[1]->data)[1] = 3;
			is_int(gc_forward(&c, &err), DS_ERR_DATA, "label 3 of 3 classes is status 3");
			is_str(err.code, "bad_label", "... code bad_label");
			ok(strstr(err.message, "row 1") && strstr(err.message, "label 3"), "... naming row and label: %s",
			   err.message);
			ds_error_clear(&err);
			((int32_t *)c.in[1]->data)[1] = -1;
			is_int(gc_forward(&c, &err), DS_ERR_DATA, "label -1 is status 3");
			ds_error_clear(&err);
		}
		gc_free(&c);
	}
}

static void embeddings(void)
{
	const int64_t *emb[] = { S(3, 4), S(7, 5) };
	const int64_t *bag[] = { S(4, 6), S(9, 8) };
	const int64_t *bigbag[] = { S(64, 200), S(1000, 64) };
	static const ds_dtype ii[] = { DS_I32, DS_F32 }, il[] = { DS_I64, DS_F32 };
	struct gc_case c;
	ds_error err = { 0 };

	check("embedding", NULL, emb, ii, 2, 7, 1, 1e-3, NULL);
	check("embedding", NULL, emb, il, 2, 7, 1, 1e-3, NULL);
	check("embedding", NULL, emb, ii, 2, 7, 1, 1e-3, pad_ids);
	check("embedding_bag", "{\"mode\":\"sum\"}", bag, ii, 2, 9, 1, 1e-3, pad_ids);
	check("embedding_bag", "{\"mode\":\"mean\"}", bag, ii, 2, 9, 1, 1e-3, pad_ids);
	check("embedding_bag", NULL, bag, il, 2, 9, 1, 1e-3, NULL);
	check("embedding_bag", "{\"mode\":\"mean\"}", bigbag, ii, 2, 1000, 1, 1e-3, pad_ids);

	if (gc_setup(&c, "embedding_bag", "{\"mode\":\"mean\"}", bag, ii, 2, 9, 1) == 0) {
		int32_t *ids = c.in[0]->data;
		const float *t = fdata(c.in[1]);
		double want;

		pad_ids(&c);
		gc_forward(&c, &err);
		/* Bag 0 holds ids at positions 0, 1, 3, 4. */
		want = (t[ids[0] * 8 + 2] + t[ids[1] * 8 + 2] + t[ids[3] * 8 + 2] + t[ids[4] * 8 + 2]) / 4.0;
		is_near(fdata(c.out[0])[2], want, 1e-6, "embedding_bag mean averages the ids that are not padding");
		ok(fdata(c.out[0])[8] == 0 && fdata(c.out[0])[15] == 0, "a bag of padding only is zeros");
		ids[5] = 9;
		is_int(gc_forward(&c, &err), DS_ERR_DATA, "an id past the table is status 3");
		is_str(err.code, "bad_id", "... code bad_id");
		ok(strstr(err.message, "row 0, position 5") && strstr(err.message, "id 9"), "... naming where: %s",
		   err.message);
	} else {
		ok(0, "embedding_bag set-up");
	}
	gc_free(&c);
}

/* The same call with 1 and 2 threads gives the same bits, forward and
 * backward, for the ops that reduce or scatter. */
static void thread_independence(void)
{
	/* Not static: the shapes are compound literals. */
	const struct {
		const char *op, *attrs;
		int n_in, int_max;
		const int64_t *shape[5];
		ds_dtype dtype[5];
	} cases[] = {
		{ "batchnorm", NULL, 5, 0, { S(32, 16, 10, 10), S(16), S(16), S(16), S(16) }, { DS_F32, DS_F32, DS_F32, DS_F32, DS_F32 } },
		{ "layernorm", NULL, 3, 0, { S(256, 200), S(200), S(200) }, { DS_F32, DS_F32, DS_F32 } },
		{ "add", NULL, 2, 0, { S(64, 32, 8, 8), S(32, 1, 1) }, { DS_F32, DS_F32 } },
		{ "embedding_bag", NULL, 2, 500, { S(128, 300), S(500, 40) }, { DS_I32, DS_F32 } },
		{ "cross_entropy", "{\"label_smoothing\":0.1}", 2, 50, { S(2048, 50), S(2048) }, { DS_F32, DS_I32 } },
	};

	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		struct gc_case c[2];
		ds_error err = { 0 };
		int same = 1;

		for (int t = 0; t < 2; t++) {
			gc_rng = 0x1234567ull + k;
			if (gc_setup(&c[t], cases[k].op, cases[k].attrs, cases[k].shape, cases[k].dtype, cases[k].n_in,
				     cases[k].int_max, 1)) {
				same = 0;
				continue;
			}
			ds_threads_set(t + 1);
			if (gc_forward(&c[t], &err) || gc_backward(&c[t], &err))
				same = 0;
		}
		same = same && memcmp(c[0].out[0]->data, c[1].out[0]->data, ds_tensor_nbytes(c[0].out[0])) == 0;
		for (int i = 0; i < cases[k].n_in && same; i++)
			if (c[0].grad_in[i])
				same = memcmp(c[0].grad_in[i]->data, c[1].grad_in[i]->data,
					      ds_tensor_nbytes(c[0].grad_in[i])) == 0;
		ok(same, "%s: the same bits with 1 and 2 threads", cases[k].op);
		gc_free(&c[0]);
		gc_free(&c[1]);
	}
	ds_threads_set(2);
}

static void registry(void)
{
	static const char *const ops[] = {
		"relu", "relu6", "leaky_relu", "gelu", "sigmoid", "tanh", "silu", "hardswish", "dropout",
		"softmax", "batchnorm", "layernorm", "add", "mul", "concat", "flatten", "reshape",
		"cross_entropy", "embedding", "embedding_bag",
	};
	int missing = 0;

	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		const ds_op *op = ds_op_find(ops[i]);

		if (!op || !op->forward[DS_BACKEND_CPU] || !op->backward[DS_BACKEND_CPU]) {
			diag("%s has no CPU kernels", ops[i]);
			missing++;
		}
	}
	is_int(missing, 0, "every op has CPU forward and backward kernels");
	ok(ds_op_find("batchnorm")->no_grad == ((1u << 3) | (1u << 4)), "batchnorm's running statistics take no gradient");
	ok(ds_op_find("embedding_bag")->no_grad == 1u && ds_op_find("cross_entropy")->no_grad == 2u,
	   "ids and labels take no gradient");
	ok(ds_op_find("relu")->backward_needs == DS_NEEDS_OUT(0) && ds_op_find("add")->backward_needs == 0 &&
	   ds_op_find("mul")->backward_needs == (DS_NEEDS_IN(0) | DS_NEEDS_IN(1)),
	   "backward_needs: relu its output, add nothing, mul both inputs");
}

int main(void)
{
	registry();
	activations();
	activation_values();
	dropout();
	softmax();
	batchnorm();
	layernorm();
	add_mul();
	shapes();
	cross_entropy();
	distill();
	embeddings();
	thread_independence();
	return done_testing();
}
