/* optim.c - SGD (momentum, Nesterov) and AdamW over a training plan's
 * trainable parameters, updated in place from their gradients.
 *
 * The arithmetic follows torch.optim (SGD with dampening 0, AdamW without
 * amsgrad) operation by operation in float32, so that a run started from the
 * same weights and batches tracks PyTorch's within rounding:
 *   SGD:   g = grad + wd * w;  buf = momentum * buf + g;
 *          g = nesterov ? g + momentum * buf : buf;  w -= lr * g
 *   AdamW: w *= 1 - lr * wd;  m = lerp(m, grad, 1 - b1);
 *          v = b2 * v + (1 - b2) * grad^2;
 *          w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * PyTorch's first momentum step copies the gradient into the buffer; with
 * the buffer starting at zero and no dampening the formula gives the same.
 *
 * Row-sparse gradients (embedding tables marked "sparse", ds_plan_grad_rows)
 * are updated lazily, as torch.optim.SparseAdam does: only the rows the
 * step's batches touched change, each by the same arithmetic as the dense
 * update; the weights, momentum and m, v of the other rows stay as they
 * are (no decay of the moments, no weight decay).  The bias corrections
 * still count every step.
 *
 * State travels in checkpoints as tensors opt.m.<param> (and opt.v.<param>
 * for AdamW) and the metadata ds.optim = {"kind", "step", "options"}.
 */
#include "config.h"
#include "internal.h"
#include "cpu/kernels.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements the threads cost more than they save. */
#define PARALLEL_MIN 32768

struct ds_optim {
	ds_optim_options o;
	int adamw;
	ds_plan *plan;
	size_t n;                /* the plan's parameters */
	ds_tensor **m, **v;      /* per parameter; NULL where there is no state */
	int64_t step;
};

static int check_options(ds_optim_options *o, int *adamw, ds_error *err)
{
	if (!o->kind || (strcmp(o->kind, "sgd") != 0 && strcmp(o->kind, "adamw") != 0))
		return ds_error_set(err, DS_ERR_USAGE, "bad_optimizer", "unknown optimizer '%s' (sgd or adamw)",
				    o->kind ? o->kind : "(null)");
	*adamw = strcmp(o->kind, "adamw") == 0;
	if (*adamw) {
		if (o->beta1 == 0.0)
			o->beta1 = 0.9;
		if (o->beta2 == 0.0)
			o->beta2 = 0.999;
		if (o->eps == 0.0)
			o->eps = 1e-8;
	}
	if (!(o->momentum >= 0.0 && o->momentum < 1.0))
		return ds_error_set(err, DS_ERR_USAGE, "bad_optimizer", "momentum %g is outside [0, 1)", o->momentum);
	if (o->nesterov && !*adamw && o->momentum == 0.0)
		return ds_error_set(err, DS_ERR_USAGE, "bad_optimizer", "nesterov needs a momentum above 0");
	if (!(o->weight_decay >= 0.0 && isfinite(o->weight_decay)))
		return ds_error_set(err, DS_ERR_USAGE, "bad_optimizer", "weight decay %g is below 0",
				    o->weight_decay);
	if (!(o->beta1 >= 0.0 && o->beta1 < 1.0) || !(o->beta2 >= 0.0 && o->beta2 < 1.0))
		return ds_error_set(err, DS_ERR_USAGE, "bad_optimizer", "betas %g, %g are outside [0, 1)",
				    o->beta1, o->beta2);
	if (!(o->eps >= 0.0 && isfinite(o->eps)))
		return ds_error_set(err, DS_ERR_USAGE, "bad_optimizer", "eps %g is below 0", o->eps);
	return 0;
}

int ds_optim_new(const ds_optim_options *o, ds_plan *plan, ds_optim **out, ds_error *err)
{
	ds_optim *opt = NULL;
	ds_optim_options opts = *o;
	int adamw = 0, rc;

	*out = NULL;
	if ((rc = check_options(&opts, &adamw, err)))
		return rc;
	opt = ds_calloc(1, sizeof *opt, err);
	if (!opt)
		return DS_ERR_NOMEM;
	opt->o = opts;
	opt->o.kind = adamw ? "adamw" : "sgd";
	opt->adamw = adamw;
	opt->plan = plan;
	opt->n = ds_plan_param_count(plan);
	opt->m = ds_calloc(opt->n + 1, sizeof *opt->m, err);
	opt->v = ds_calloc(opt->n + 1, sizeof *opt->v, err);
	if (!opt->m || !opt->v) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < opt->n; i++) {
		const ds_tensor *g = ds_plan_grad(plan, i);

		if (!ds_plan_param_trainable(plan, i))
			continue;
		if (!g) {
			rc = ds_error_set(err, DS_ERR_USAGE, "not_training",
					  "an optimizer needs a training plan (one with a loss)");
			goto out;
		}
		if ((adamw || opts.momentum != 0.0) &&
		    !(opt->m[i] = ds_tensor_new(DS_F32, g->ndim, g->shape, g->device, err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		if (adamw && !(opt->v[i] = ds_tensor_new(DS_F32, g->ndim, g->shape, g->device, err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
	}
	*out = opt;
	opt = NULL;
out:
	ds_optim_free(opt);
	return rc;
}

void ds_optim_free(ds_optim *opt)
{
	if (!opt)
		return;
	for (size_t i = 0; i < opt->n; i++) {
		if (opt->m)
			ds_tensor_unref(opt->m[i]);
		if (opt->v)
			ds_tensor_unref(opt->v[i]);
	}
	free(opt->m);
	free(opt->v);
	free(opt);
}

struct sgd_step {
	float lr, wd, mom;
	int nesterov;
};

/* One element; the dense and the row-sparse loops share it so that a
 * touched row changes exactly as under the dense update. */
static inline void sgd_elem(float *w, const float *g, float *buf, int64_t e, const struct sgd_step *s)
{
	float d = g[e];

	if (s->wd != 0.0f)
		d = d + s->wd * w[e];
	if (buf) {
		float b = buf[e] * s->mom + d;

		buf[e] = b;
		d = s->nesterov ? d + s->mom * b : b;
	}
	w[e] = w[e] + -s->lr * d;
}

static void sgd_update(float *w, const float *g, float *buf, int64_t n, const struct sgd_step *s)
{
#pragma omp parallel for if (n > PARALLEL_MIN)
	for (int64_t e = 0; e < n; e++)
		sgd_elem(w, g, buf, e, s);
}

/* Rows of a large table lie far apart, each on its own page: the loop is
 * bound by memory latency, so the rows PREFETCH_AHEAD on are fetched while
 * this one is updated (BENCHMARKS.md, text-bag). */
#define PREFETCH_AHEAD 8

static void prefetch_row(const float *a, int64_t off, int64_t width)
{
	for (int64_t e = 0; e < width; e += 16)
		__builtin_prefetch(a + off + e, 1);
}

static void sgd_rows(float *w, const float *g, float *buf, const ds_grad_rows *r, const struct sgd_step *s)
{
	int64_t count = (int64_t)r->count, width = r->width;

#pragma omp parallel for if (count * width > PARALLEL_MIN)
	for (int64_t k = 0; k < count; k++) {
		int64_t off = r->rows[k] * width;

		if (k + PREFETCH_AHEAD < count) {
			int64_t next = r->rows[k + PREFETCH_AHEAD] * width;

			prefetch_row(w, next, width);
			prefetch_row(g, next, width);
			if (buf)
				prefetch_row(buf, next, width);
		}
#pragma omp simd
		for (int64_t e = off; e < off + width; e++)
			sgd_elem(w, g, buf, e, s);
	}
}

struct adamw_step {
	float decay;        /* 1 - lr * wd */
	float one_minus_b1, b2, one_minus_b2;
	float step_size;    /* lr / (1 - b1^t) */
	float bc2_sqrt;     /* sqrt(1 - b2^t) */
	float eps;
};

static inline void adamw_elem(float *w, const float *g, float *m, float *v, int64_t e,
			      const struct adamw_step *s)
{
	float gi = g[e], mi = m[e], vi = v[e], denom;

	w[e] = w[e] * s->decay;
	/* torch.lerp with a weight below 0.5: start + weight * (end - start) */
	mi = mi + s->one_minus_b1 * (gi - mi);
	vi = vi * s->b2 + s->one_minus_b2 * (gi * gi);
	denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
	w[e] = w[e] + -s->step_size * (mi / denom);
	m[e] = mi;
	v[e] = vi;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_ADAMW_AVX512 1

/* GCC 12 at -O2 leaves adamw_elem scalar (sqrtf keeps errno), and the dense
 * update of every parameter was 6% of a training step of the reference CNN.
 * The same operations in the same order as adamw_elem, 16 at a time, and
 * not fused into FMAs, so that a step is bit for bit the scalar one (the
 * sparse-row update must match the dense one); the tail is left to the
 * caller. */
static __attribute__((target("avx512f"), optimize("fp-contract=off"))) int64_t adamw_avx512(float *w, const float *g, float *m,
								float *v, int64_t n,
								const struct adamw_step *s)
{
	const __m512 decay = _mm512_set1_ps(s->decay), omb1 = _mm512_set1_ps(s->one_minus_b1);
	const __m512 b2 = _mm512_set1_ps(s->b2), omb2 = _mm512_set1_ps(s->one_minus_b2);
	const __m512 step = _mm512_set1_ps(-s->step_size), bc2 = _mm512_set1_ps(s->bc2_sqrt);
	const __m512 eps = _mm512_set1_ps(s->eps);
	int64_t e = 0;

	for (; e + 16 <= n; e += 16) {
		__m512 gi = _mm512_loadu_ps(g + e), mi = _mm512_loadu_ps(m + e), vi = _mm512_loadu_ps(v + e);
		__m512 wi = _mm512_mul_ps(_mm512_loadu_ps(w + e), decay), denom;

		mi = _mm512_add_ps(mi, _mm512_mul_ps(omb1, _mm512_sub_ps(gi, mi)));
		vi = _mm512_add_ps(_mm512_mul_ps(vi, b2), _mm512_mul_ps(omb2, _mm512_mul_ps(gi, gi)));
		denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2), eps);
		wi = _mm512_add_ps(wi, _mm512_mul_ps(step, _mm512_div_ps(mi, denom)));
		_mm512_storeu_ps(w + e, wi);
		_mm512_storeu_ps(m + e, mi);
		_mm512_storeu_ps(v + e, vi);
	}
	return e;
}
#endif

static void adamw_range(float *w, const float *g, float *m, float *v, int64_t e0, int64_t e1,
			const struct adamw_step *s)
{
	int64_t e = e0;

#ifdef HAVE_ADAMW_AVX512
	if (__builtin_cpu_supports("avx512f"))
		e += adamw_avx512(w + e0, g + e0, m + e0, v + e0, e1 - e0, s);
#endif
	for (; e < e1; e++)
		adamw_elem(w, g, m, v, e, s);
}

/* Threads take whole 64-byte lines, so none shares one it writes. */
static void adamw_update(float *w, const float *g, float *m, float *v, int64_t n, const struct adamw_step *s)
{
#pragma omp parallel if (n > PARALLEL_MIN)
	{
		int64_t e0, e1;

		ds_cpu_line_share(n, &e0, &e1);
		if (e0 < e1)
			adamw_range(w, g, m, v, e0, e1, s);
	}
}

static void adamw_rows(float *w, const float *g, float *m, float *v, const ds_grad_rows *r,
		       const struct adamw_step *s)
{
	int64_t count = (int64_t)r->count, width = r->width;

#pragma omp parallel for if (count * width > PARALLEL_MIN)
	for (int64_t k = 0; k < count; k++) {
		int64_t off = r->rows[k] * width;

		if (k + PREFETCH_AHEAD < count) {
			int64_t next = r->rows[k + PREFETCH_AHEAD] * width;

			prefetch_row(w, next, width);
			prefetch_row(g, next, width);
			prefetch_row(m, next, width);
			prefetch_row(v, next, width);
		}
#pragma omp simd
		for (int64_t e = off; e < off + width; e++)
			adamw_elem(w, g, m, v, e, s);
	}
}

int ds_optim_step(ds_optim *opt, double lr, ds_error *err)
{
	struct adamw_step s = { 0 };
	struct sgd_step sg = { (float)lr, (float)opt->o.weight_decay, (float)opt->o.momentum, opt->o.nesterov };

	if (!isfinite(lr))
		return ds_error_set(err, DS_ERR_USAGE, "bad_lr", "learning rate %g is not finite", lr);
	opt->step++;
	if (opt->adamw) {
		double t = (double)opt->step;

		s.decay = (float)(1.0 - lr * opt->o.weight_decay);
		s.one_minus_b1 = (float)(1.0 - opt->o.beta1);
		s.b2 = (float)opt->o.beta2;
		s.one_minus_b2 = (float)(1.0 - opt->o.beta2);
		s.step_size = (float)(lr / (1.0 - pow(opt->o.beta1, t)));
		s.bc2_sqrt = (float)sqrt(1.0 - pow(opt->o.beta2, t));
		s.eps = (float)opt->o.eps;
	}
	for (size_t i = 0; i < opt->n; i++) {
		ds_tensor *w = ds_plan_param(opt->plan, i), *g = ds_plan_grad(opt->plan, i);
		float *buf = opt->m[i] ? opt->m[i]->data : NULL;
		ds_grad_rows rows;
		int64_t n;

		if (!ds_plan_param_trainable(opt->plan, i) || !g)
			continue;
		n = ds_tensor_numel(w);
		if (!ds_plan_grad_rows(opt->plan, i, &rows)) {
			if (opt->adamw)
				adamw_update(w->data, g->data, buf, opt->v[i]->data, n, &s);
			else
				sgd_update(w->data, g->data, buf, n, &sg);
		} else if (opt->adamw)
			adamw_rows(w->data, g->data, buf, opt->v[i]->data, &rows, &s);
		else
			sgd_rows(w->data, g->data, buf, &rows, &sg);
	}
	return 0;
}

/* ------------------------------------------------------------ checkpoints */

static int put_state(ds_container *c, const char *prefix, const char *param, const ds_tensor *t,
		     ds_error *err)
{
	char name[512];
	ds_tensor *copy;
	int rc;

	if ((size_t)snprintf(name, sizeof name, "%s%s", prefix, param) >= sizeof name)
		return ds_error_set(err, DS_ERR_USAGE, "name_too_long", "parameter name '%s' is too long", param);
	copy = ds_tensor_to(t, DS_CPU, err);
	if (!copy)
		return err && err->status ? err->status : DS_ERR_NOMEM;
	ds_container_remove(c, name);
	rc = ds_container_add(c, name, copy, err);
	ds_tensor_unref(copy);
	return rc;
}

int ds_optim_save(const ds_optim *opt, ds_container *c, ds_error *err)
{
	json_t *meta = NULL, *options;
	int rc = 0;

	for (size_t i = 0; i < opt->n && !rc; i++) {
		const char *name = ds_plan_param_name(opt->plan, i);

		if (opt->m[i])
			rc = put_state(c, "opt.m.", name, opt->m[i], err);
		if (!rc && opt->v[i])
			rc = put_state(c, "opt.v.", name, opt->v[i], err);
	}
	if (rc)
		return rc;
	options = json_pack("{s:f, s:b, s:f, s:f, s:f, s:f}", "momentum", opt->o.momentum,
			    "nesterov", opt->o.nesterov, "weight_decay", opt->o.weight_decay,
			    "beta1", opt->o.beta1, "beta2", opt->o.beta2, "eps", opt->o.eps);
	meta = options ? json_pack("{s:s, s:I, s:o}", "kind", opt->o.kind, "step", (json_int_t)opt->step,
				   "options", options) : NULL;
	if (!meta)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
	rc = ds_container_meta_set_json(c, "ds.optim", meta, err);
	json_decref(meta);
	return rc;
}

/* The state tensor for one parameter: present, F32, and shaped like it. */
static int find_state(const ds_container *c, const char *prefix, const char *param, const ds_tensor *like,
		      ds_tensor **out, ds_error *err)
{
	char name[512];
	ds_tensor *t;

	snprintf(name, sizeof name, "%s%s", prefix, param);
	t = ds_container_get(c, name);
	if (!t)
		return ds_error_set(err, DS_ERR_DATA, "bad_checkpoint", "optimizer state '%s' is missing", name);
	if (t->dtype != DS_F32 || t->ndim != like->ndim ||
	    memcmp(t->shape, like->shape, (size_t)like->ndim * sizeof like->shape[0]) != 0)
		return ds_error_set(err, DS_ERR_DATA, "bad_checkpoint",
				    "optimizer state '%s' does not match its parameter's shape", name);
	if (t->device.kind != DS_DEVICE_CPU)
		return ds_error_set(err, DS_ERR_DATA, "bad_checkpoint", "optimizer state '%s' is not in host memory",
				    name);
	*out = t;
	return 0;
}

/* Everything is checked before anything is copied: a failed load leaves the
 * optimizer as it was. */
int ds_optim_load(ds_optim *opt, const ds_container *c, ds_error *err)
{
	json_t *meta = NULL, *kind, *step;
	ds_tensor **from_m = NULL, **from_v = NULL;
	int rc;

	if ((rc = ds_container_meta_json(c, "ds.optim", &meta, err)))
		return rc;
	if (!meta) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_checkpoint", "no optimizer state (ds.optim metadata)");
		goto out;
	}
	kind = json_object_get(meta, "kind");
	step = json_object_get(meta, "step");
	if (!json_is_object(meta) || !json_is_string(kind) || !json_is_integer(step) ||
	    json_integer_value(step) < 0) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_checkpoint", "ds.optim: expected {kind, step, options}");
		goto out;
	}
	if (strcmp(json_string_value(kind), opt->o.kind) != 0) {
		rc = ds_error_set(err, DS_ERR_DATA, "bad_checkpoint",
				  "the checkpoint's optimizer is %s, this run's is %s", json_string_value(kind),
				  opt->o.kind);
		goto out;
	}
	from_m = ds_calloc(opt->n + 1, sizeof *from_m, err);
	from_v = ds_calloc(opt->n + 1, sizeof *from_v, err);
	if (!from_m || !from_v) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < opt->n; i++) {
		const char *name = ds_plan_param_name(opt->plan, i);

		if ((opt->m[i] && (rc = find_state(c, "opt.m.", name, opt->m[i], &from_m[i], err))) ||
		    (opt->v[i] && (rc = find_state(c, "opt.v.", name, opt->v[i], &from_v[i], err))))
			goto out;
	}
	for (size_t i = 0; i < opt->n; i++) {
		if (opt->m[i])
			memcpy(opt->m[i]->data, from_m[i]->data, ds_tensor_nbytes(opt->m[i]));
		if (opt->v[i])
			memcpy(opt->v[i]->data, from_v[i]->data, ds_tensor_nbytes(opt->v[i]));
	}
	opt->step = (int64_t)json_integer_value(step);
out:
	free(from_m);
	free(from_v);
	json_decref(meta);
	return rc;
}
