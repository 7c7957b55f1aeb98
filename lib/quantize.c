/* quantize.c - ds-quantize: post-training INT8 quantization of a model.
 *
 * Three steps.  Batch norm is folded first (ds_optimize_model at -O2), so
 * that every convolution carries its own scale.  The float graph is then
 * analysed: convolutions and linear layers become qconv2d and qlinear,
 * absorbing a ReLU or ReLU6 that alone reads them; residual additions
 * become qadd, and pooling, flatten and reshape keep U8 codes when their
 * input has them, so activations stay INT8 through a chain.  Values read
 * by INT8 nodes but made in float get a quantize node; float readers of
 * U8 values a dequantize node; graph outputs stay F32 (the last layer
 * writes F32 directly).  Last, the float model runs on calibration data
 * with every quantized value kept, and each value's range is chosen by
 * min/max, a percentile, or the KL divergence over a histogram (TensorRT's
 * entropy calibration); weights are symmetric per output channel.
 *
 * In the dynamic mode only the weights are quantized: qconv2d and qlinear
 * read F32 and quantize it per call over its own range, and write F32.
 *
 * Quantization-aware training (ds-train --qat) shares the analysis: the
 * values it decides to quantize get a fake_quant node in the float graph,
 * and the weights of every INT8 product one of their own, so that training
 * sees the grid INT8 inference computes on.  Given such a model, this
 * program takes each activation range from its fake_quant node instead of
 * calibrating, and drops the nodes. */
#include "config.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "bias_correct.h"
#include "cpu/quant.h"
#include "graph_edit.h"
#include "internal.h"

#define HIST_BINS 2048

enum role { R_FLOAT, R_COMPUTE, R_ADD, R_PASS, R_FUSED };

struct qnode {
	const ds_node *n;            /* in the float graph */
	enum role role;
	int int8;                    /* becomes an INT8 op */
	int out_q;                   /* writes U8 codes */
	const char *act;             /* fused activation, or NULL */
	const char *out;             /* the value it writes once fused */
	int fused_into;              /* R_FUSED: the node that took it */
	const char *why;             /* why it stays float */
};

struct vstat {
	const char *name;
	double lo, hi;               /* seen */
	double *hist;                /* HIST_BINS over [hlo, hhi] */
	double hlo, hhi;
	float scale;
	int32_t zp;
	double qlo, qhi;             /* the range chosen */
};

struct qctx {
	ds_container *model;
	const ds_quantize_options *o;
	int dynamic, method;         /* method: 0 minmax, 1 percentile, 2 entropy */
	json_t *graph;               /* the float graph's document */
	ds_graph *g;
	struct qnode *nodes;
	size_t n;
	struct vstat *stats;
	size_t n_stats;
	int64_t calib_items;
	int qat;                     /* analysing for ds-train --qat: dropout passes values through */
	json_t *ranges;              /* value -> [lo, hi] learned by QAT, or NULL */
	int ranges_used;             /* every range came from them: no calibration */
	ds_bias_taps *taps;          /* per node: its input's sums for bias correction
				      * (real NULL: none) */
	int corrected;               /* layers whose bias was corrected */
};

static int nomem(ds_error *err)
{
	return ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
}

/* ------------------------------------------------------------- analysis */

static ds_tensor *param(const struct qctx *q, const char *name)
{
	return name ? ds_container_get(q->model, name) : NULL;
}

static ssize_t producer(const struct qctx *q, const char *value)
{
	for (size_t i = 0; i < q->n; i++)
		if (q->nodes[i].role != R_FUSED && q->nodes[i].out && !strcmp(q->nodes[i].out, value))
			return (ssize_t)i;
	return -1;
}

static int is_graph_output(const struct qctx *q, const char *value)
{
	for (size_t i = 0; i < ds_graph_output_count(q->g); i++)
		if (!strcmp(ds_graph_output_name(q->g, i), value))
			return 1;
	return 0;
}

/* Readers of value among the live nodes, and the first of them. */
static size_t readers(const struct qctx *q, const char *value, ssize_t *first)
{
	size_t count = 0;

	*first = -1;
	for (size_t i = 0; i < q->n; i++) {
		if (q->nodes[i].role == R_FUSED)
			continue;
		for (size_t j = 0; j < ds_node_input_count(q->nodes[i].n); j++)
			if (!strcmp(ds_node_input(q->nodes[i].n, j), value)) {
				if (*first < 0)
					*first = (ssize_t)i;
				count++;
			}
	}
	return count;
}

static int skipped(const struct qctx *q, const char *name)
{
	for (size_t i = 0; i < q->o->skip_count; i++)
		if (!fnmatch(q->o->skip[i], name, 0))
			return 1;
	return 0;
}

static enum role role_of(const struct qctx *q, const ds_node *n, const char **why)
{
	const char *op = ds_node_op(n), *act;
	const json_t *attrs = ds_node_attrs(n);
	ds_tensor *w;

	*why = NULL;
	if (!strcmp(op, "conv2d") || !strcmp(op, "linear")) {
		w = param(q, ds_node_input(n, 1));
		act = json_string_value(json_object_get(attrs, "activation"));
		if (param(q, ds_node_input(n, 0)) || !w || w->dtype != DS_F32 ||
		    (ds_node_input_count(n) > 2 && (!param(q, ds_node_input(n, 2)) ||
						    param(q, ds_node_input(n, 2))->dtype != DS_F32))) {
			*why = "weights are not F32 parameters";
			return R_FLOAT;
		}
		if (act && strcmp(act, "relu") != 0 && strcmp(act, "relu6") != 0) {
			*why = "its fused activation has no INT8 form";
			return R_FLOAT;
		}
		if (json_object_get(attrs, "pool")) {
			*why = "its fused pooling has no INT8 form";
			return R_FLOAT;
		}
		if (ds_node_input_count(n) > 3) {
			*why = "its fused residual has no INT8 form";
			return R_FLOAT;
		}
		return R_COMPUTE;
	}
	if (q->dynamic)
		return R_FLOAT;
	if (!strcmp(op, "add")) {
		const ds_shape *a = ds_graph_shape(q->g, ds_node_input(n, 0)), *b = ds_graph_shape(q->g, ds_node_input(n, 1));

		if (param(q, ds_node_input(n, 0)) || param(q, ds_node_input(n, 1)) || !a || !b || a->ndim != b->ndim ||
		    memcmp(a->dim, b->dim, (size_t)a->ndim * sizeof a->dim[0]) || a->dtype != DS_F32) {
			*why = "not a residual addition of two equal shapes";
			return R_FLOAT;
		}
		return R_ADD;
	}
	if (!strcmp(op, "max_pool") || !strcmp(op, "global_avg_pool") || !strcmp(op, "flatten") ||
	    !strcmp(op, "reshape"))
		return R_PASS;
	/* ds-quantize drops dropout before it looks; a training graph keeps it,
	 * and the values it carries are those of its input at inference. */
	if (q->qat && !strcmp(op, "dropout"))
		return R_PASS;
	*why = ds_op_find(op) ? "no INT8 form" : "unknown op: passed through untouched";
	return R_FLOAT;
}

/* A ReLU or ReLU6 that alone reads node i's output joins it. */
static void fuse(struct qctx *q, size_t i)
{
	struct qnode *qn = &q->nodes[i];
	ssize_t r;
	const char *op;

	if (qn->act || is_graph_output(q, qn->out) || readers(q, qn->out, &r) != 1)
		return;
	op = ds_node_op(q->nodes[r].n);
	if ((strcmp(op, "relu") != 0 && strcmp(op, "relu6") != 0) || json_object_size(ds_node_attrs(q->nodes[r].n)))
		return;
	q->nodes[r].role = R_FUSED;
	q->nodes[r].fused_into = (int)i;
	qn->act = op;
	qn->out = ds_node_output(q->nodes[r].n, 0);
}

static void unfuse(struct qctx *q, size_t i)
{
	for (size_t r = 0; r < q->n; r++)
		if (q->nodes[r].role == R_FUSED && q->nodes[r].fused_into == (int)i) {
			q->nodes[r].role = R_FLOAT;
			q->nodes[i].act = NULL;
			q->nodes[i].out = ds_node_output(q->nodes[i].n, 0);
		}
}

/* Could a reader of this value take U8 codes? */
static int int8_reader(const struct qctx *q, const char *value)
{
	for (size_t i = 0; i < q->n; i++) {
		const struct qnode *r = &q->nodes[i];

		if (r->role != R_COMPUTE && r->role != R_ADD && r->role != R_PASS)
			continue;
		for (size_t j = 0; j < ds_node_input_count(r->n); j++)
			if (!strcmp(ds_node_input(r->n, j), value) && (r->role != R_COMPUTE || j == 0))
				return 1;
	}
	return 0;
}

static int value_q(const struct qctx *q, const char *value)
{
	ssize_t p = producer(q, value);

	return p >= 0 && q->nodes[p].out_q;
}

static void analyse(struct qctx *q)
{
	ssize_t first = -1, last = -1;

	for (size_t i = 0; i < q->n; i++) {
		q->nodes[i].n = ds_graph_node(q->g, i);
		q->nodes[i].out = ds_node_output(q->nodes[i].n, 0);
		q->nodes[i].role = role_of(q, q->nodes[i].n, &q->nodes[i].why);
		q->nodes[i].act = json_string_value(json_object_get(ds_node_attrs(q->nodes[i].n), "activation"));
		if (q->nodes[i].role == R_COMPUTE) {
			last = (ssize_t)i;
			first = first < 0 ? (ssize_t)i : first;
		}
	}
	for (size_t i = 0; i < q->n; i++) {
		struct qnode *qn = &q->nodes[i];

		if ((qn->role == R_COMPUTE || qn->role == R_ADD) && skipped(q, ds_node_name(qn->n))) {
			qn->role = R_FLOAT;
			qn->why = "--skip";
		}
		if (qn->role == R_COMPUTE && q->o->skip_first_last && ((ssize_t)i == first || (ssize_t)i == last)) {
			qn->role = R_FLOAT;
			qn->why = "--skip-first-last";
		}
	}
	for (size_t i = 0; i < q->n; i++)
		if (q->nodes[i].role == R_COMPUTE || q->nodes[i].role == R_ADD)
			fuse(q, i);
	/* Topological order: a node's inputs are decided before it. */
	for (size_t i = 0; i < q->n; i++) {
		struct qnode *qn = &q->nodes[i];
		int to_q = !q->dynamic && !is_graph_output(q, qn->out) && int8_reader(q, qn->out);

		switch (qn->role) {
		case R_COMPUTE:
			qn->int8 = 1;
			qn->out_q = to_q;
			break;
		case R_ADD:
			qn->int8 = qn->out_q = to_q;
			if (!to_q) {
				unfuse(q, i);
				qn->why = "its output is read in float";
			}
			break;
		case R_PASS:
			qn->int8 = qn->out_q = value_q(q, ds_node_input(qn->n, 0)) && !is_graph_output(q, qn->out);
			if (!qn->int8)
				qn->why = "its input is float";
			break;
		default:
			break;
		}
		if ((qn->role == R_ADD || qn->role == R_PASS) && !qn->int8)
			qn->role = R_FLOAT;
	}
}

/* ---------------------------------------------------------- calibration */

static struct vstat *stat_of(struct qctx *q, const char *value)
{
	for (size_t i = 0; i < q->n_stats; i++)
		if (!strcmp(q->stats[i].name, value))
			return &q->stats[i];
	return NULL;
}

static int want_stat(struct qctx *q, const char *value, ds_error *err)
{
	struct vstat *s;

	if (stat_of(q, value))
		return 0;
	s = realloc(q->stats, (q->n_stats + 1) * sizeof *s);
	if (!s)
		return nomem(err);
	q->stats = s;
	q->stats[q->n_stats++] = (struct vstat){ .name = value, .lo = INFINITY, .hi = -INFINITY };
	return 0;
}

/* The values whose ranges are needed: U8 outputs of INT8 products and
 * additions (pooling and reshapes keep their input's), and float values an
 * INT8 node reads. */
static int list_stats(struct qctx *q, ds_error *err)
{
	int rc;

	for (size_t i = 0; i < q->n && !q->dynamic; i++) {
		const struct qnode *qn = &q->nodes[i];
		size_t reads = qn->role == R_ADD ? 2 : qn->role == R_COMPUTE ? 1 : 0;

		if (!qn->int8)
			continue;
		if ((qn->role == R_COMPUTE || qn->role == R_ADD) && qn->out_q && (rc = want_stat(q, qn->out, err)))
			return rc;
		for (size_t j = 0; j < reads; j++)
			if (!value_q(q, ds_node_input(qn->n, j)) && (rc = want_stat(q, ds_node_input(qn->n, j), err)))
				return rc;
	}
	return 0;
}

static void observe(struct vstat *s, const float *x, int64_t n, int pass, int absolute)
{
	if (pass == 0) {
		for (int64_t i = 0; i < n; i++)
			if (isfinite(x[i])) {
				s->lo = x[i] < s->lo ? x[i] : s->lo;
				s->hi = x[i] > s->hi ? x[i] : s->hi;
			}
		return;
	}
	for (int64_t i = 0; i < n; i++) {
		double v = absolute ? fabs(x[i]) : x[i], at;
		int64_t b;

		/* Exact zeros (a ReLU's) left out of the entropy histogram: its
		 * first bin dwarfed the rest, and the KL search kept about a
		 * third of each range (resnet-s INT8 fell to 68% top-1, 87.6%
		 * now; mobilenet-s 50%, 77% now). */
		if (!isfinite(v) || s->hhi <= s->hlo || (absolute && v == 0))
			continue;
		at = (v - s->hlo) / (s->hhi - s->hlo) * HIST_BINS;
		b = (int64_t)at;
		b = b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b;
		s->hist[b] += 1;
	}
}

/* One pass of the float model over the calibration items: 0 gathers
 * ranges, 1 histograms, 2 the sums of bias correction. */
static int calib_pass(struct qctx *q, ds_dataset *d, ds_plan *p, const char *input, int pass, ds_error *err)
{
	ds_loader_options lo = { .batch = ds_plan_batch(p), .shuffle = 1, .seed = 1 };
	ds_loader *l = NULL;
	int64_t done = 0, limit = q->o->calib_count > 0 ? q->o->calib_count : 1000;
	int rc;

	if ((rc = ds_loader_new(d, &lo, &l, err)))
		return rc;
	while (done < limit) {
		ds_tensor *x, *y, *in;
		int64_t n;

		if ((rc = ds_loader_next(l, &x, &y, &n, err)))
			goto out;
		if (!n)
			break;
		n = n < limit - done ? n : limit - done;
		if ((rc = ds_plan_set_batch(p, n, err)))
			goto out;
		in = ds_plan_tensor(p, input);
		memcpy(in->data, x->data, ds_tensor_nbytes(in));
		if ((rc = ds_plan_forward(p, 0, 0, err)))
			goto out;
		for (size_t i = 0; i < q->n_stats && pass < 2; i++) {
			ds_tensor *t = ds_plan_tensor(p, q->stats[i].name);

			observe(&q->stats[i], t->data, ds_tensor_numel(t), pass, q->method == 2);
		}
		for (size_t i = 0; i < q->n && pass == 2; i++)
			if (q->taps[i].real &&
			    (rc = ds_bias_taps_add(&q->taps[i], ds_plan_tensor(p, ds_node_input(q->nodes[i].n, 0)), err)))
				goto out;
		done += n;
		if (ds_cli_interrupted()) {
			rc = ds_error_set(err, DS_ERR_INTERRUPTED, "interrupted", "interrupted");
			goto out;
		}
	}
	q->calib_items = done;
out:
	ds_loader_free(l);
	return rc;
}

/* TensorRT's entropy calibration: the threshold (in bins of hist) whose
 * clipped and re-binned distribution loses least information. */
static int64_t kl_threshold(const double *hist, int levels)
{
	int64_t best = HIST_BINS;
	double best_kl = INFINITY, *p = malloc(HIST_BINS * sizeof *p), *qd = malloc(HIST_BINS * sizeof *qd);

	if (!p || !qd)
		goto out;
	for (int64_t i = levels; i <= HIST_BINS; i += 4) {
		double outliers = 0, psum = 0, qsum = 0, kl = 0;

		for (int64_t b = i; b < HIST_BINS; b++)
			outliers += hist[b];
		for (int64_t b = 0; b < i; b++)
			p[b] = hist[b];
		p[i - 1] += outliers;
		for (int j = 0; j < levels; j++) {
			int64_t b0 = j * i / levels, b1 = (j + 1) * i / levels;
			double sum = 0;
			int nonzero = 0;

			for (int64_t b = b0; b < b1; b++) {
				sum += hist[b];
				nonzero += hist[b] > 0;
			}
			for (int64_t b = b0; b < b1; b++)
				qd[b] = hist[b] > 0 ? sum / nonzero : 0;
		}
		for (int64_t b = 0; b < i; b++) {
			psum += p[b];
			qsum += qd[b];
		}
		if (psum <= 0 || qsum <= 0)
			continue;
		for (int64_t b = 0; b < i; b++) {
			double pb = p[b] / psum, qb = qd[b] / qsum;

			if (pb > 0)
				kl += pb * log(pb / (qb > 0 ? qb : 1e-12));
		}
		if (kl < best_kl) {
			best_kl = kl;
			best = i;
		}
	}
out:
	free(p);
	free(qd);
	return best;
}

static void choose_range(const struct qctx *q, struct vstat *s)
{
	double lo = isfinite(s->lo) ? s->lo : 0, hi = isfinite(s->hi) ? s->hi : 0;
	double width = (s->hhi - s->hlo) / HIST_BINS, total = 0, cum = 0;

	s->qlo = lo;
	s->qhi = hi;
	if (q->method == 1 && s->hist) {
		double keep = (q->o->percentile > 0 ? q->o->percentile : 99.99) / 100.0;
		int found_lo = 0;

		for (int b = 0; b < HIST_BINS; b++)
			total += s->hist[b];
		for (int b = 0; b < HIST_BINS && total > 0; b++) {
			cum += s->hist[b];
			if (!found_lo && cum >= (1 - keep) * total) {
				s->qlo = s->hlo + b * width;
				found_lo = 1;
			}
			if (cum >= keep * total) {
				s->qhi = s->hlo + (b + 1) * width;
				break;
			}
		}
		s->qlo = fmax(s->qlo, lo);
		s->qhi = fmin(s->qhi, hi);
	} else if (q->method == 2 && s->hist) {
		double t = kl_threshold(s->hist, lo >= 0 ? 255 : 128) * width;

		s->qlo = fmax(lo, -t);
		s->qhi = fmin(hi, t);
	}
	ds_qparams_choose((float)s->qlo, (float)s->qhi, &s->scale, &s->zp);
}

static void take_range(struct vstat *s, const json_t *r)
{
	s->lo = s->qlo = json_number_value(json_array_get(r, 0));
	s->hi = s->qhi = json_number_value(json_array_get(r, 1));
	ds_qparams_choose((float)s->qlo, (float)s->qhi, &s->scale, &s->zp);
}

/* The ranges a QAT model learned, where it has them; the name of the first
 * value without one, or NULL when all have. */
static const char *apply_ranges(struct qctx *q)
{
	const char *missing = NULL;

	for (size_t i = 0; i < q->n_stats && q->ranges; i++) {
		const json_t *r = json_object_get(q->ranges, q->stats[i].name);

		if (r)
			take_range(&q->stats[i], r);
		else if (!missing)
			missing = q->stats[i].name;
	}
	return missing;
}

/* The scale and zero point of a U8 value: its own, or for pooling and
 * reshapes their input's. */
static const struct vstat *qparams_of(struct qctx *q, const char *value)
{
	ssize_t p = producer(q, value);

	while (p >= 0 && q->nodes[p].role == R_PASS)
		p = producer(q, value = ds_node_input(q->nodes[p].n, 0));
	return stat_of(q, value);
}

/* Empty bias correction sums for node n (conv2d or linear). */
static int taps_for(ds_bias_taps *t, const ds_node *n, const ds_shape *w, ds_error *err)
{
	int conv = !strcmp(ds_node_op(n), "conv2d");
	ds_conv2d_dims d = { .o = w->dim[0], .c = w->dim[1], .kh = 1, .kw = 1, .sh = 1, .sw = 1, .dh = 1, .dw = 1,
			     .groups = 1 };
	int64_t pair[2];

	if (conv) {
		d.groups = ds_node_attr_int(n, "groups", 1);
		d.c *= d.groups;
		d.kh = w->dim[2], d.kw = w->dim[3];
		pair[0] = pair[1] = 1;
		ds_node_attr_ints(n, "stride", pair, 2);
		d.sh = pair[0], d.sw = pair[1];
		pair[0] = pair[1] = 0;
		ds_node_attr_ints(n, "padding", pair, 2);
		d.ph = pair[0], d.pw = pair[1];
		pair[0] = pair[1] = 1;
		ds_node_attr_ints(n, "dilation", pair, 2);
		d.dh = pair[0], d.dw = pair[1];
	}
	return ds_bias_taps_init(t, conv, &d, err);
}

/* Bias correction's sums for every INT8 convolution and linear layer with
 * a bias, their inputs kept by the plan.  Not for a QAT model: its weights
 * were trained on their INT8 grid. */
static int want_taps(struct qctx *q, ds_plan *p, ds_error *err)
{
	int rc;

	if (q->o->no_bias_correction || q->dynamic || q->ranges)
		return 0;
	if (!(q->taps = ds_calloc(q->n, sizeof *q->taps, err)))
		return DS_ERR_NOMEM;
	for (size_t i = 0; i < q->n; i++) {
		const ds_node *n = q->nodes[i].n;

		if (!q->nodes[i].int8 || q->nodes[i].role != R_COMPUTE || ds_node_input_count(n) != 3)
			continue;
		if ((rc = taps_for(&q->taps[i], n, ds_graph_shape(q->g, ds_node_input(n, 1)), err)) ||
		    (rc = ds_plan_keep(p, ds_node_input(n, 0), err)))
			return rc;
	}
	return 0;
}

/* The sums of the values each layer's input codes stand for, once the
 * ranges are chosen. */
static int gather_taps(struct qctx *q, ds_dataset *d, ds_plan *p, const char *input, ds_error *err)
{
	int any = 0;

	for (size_t i = 0; i < q->n && q->taps; i++) {
		const struct vstat *s = qparams_of(q, ds_node_input(q->nodes[i].n, 0));

		if (!q->taps[i].real)
			continue;
		if (!s) {
			ds_bias_taps_free(&q->taps[i]);
			continue;
		}
		q->taps[i].in_scale = s->scale;
		q->taps[i].in_zero_point = s->zp;
		any = 1;
	}
	return any ? calib_pass(q, d, p, input, 2, err) : 0;
}

static int calibrate(struct qctx *q, ds_error *err)
{
	ds_dataset *d = NULL;
	ds_plan *p = NULL;
	const char *input = ds_graph_input_name(q->g, 0);
	const ds_shape *out = ds_graph_shape(q->g, ds_graph_output_name(q->g, 0));
	int64_t classes = out && out->ndim == 2 ? out->dim[1] : INT64_MAX;
	int64_t batch = q->o->batch > 0 ? q->o->batch : 64;
	int rc;

	if (!q->n_stats)
		return 0;
	if (q->ranges) {
		const char *missing = apply_ranges(q);

		if (!missing) {
			q->ranges_used = 1;
			return 0;
		}
		if (!q->o->calib)
			return ds_error_set(err, DS_ERR_USAGE, "usage",
					    "value '%s' has no range learned by quantization-aware training: "
					    "give --calib DATA", missing);
	}
	if (!q->o->calib)
		return ds_error_set(err, DS_ERR_USAGE, "usage",
				    "static quantization needs calibration data: --calib DATA (or --mode dynamic)");
	if ((rc = ds_dataset_load(q->o->calib, &d, err)) || (rc = ds_dataset_check(d, q->g, classes, err)))
		goto out;
	if ((rc = ds_plan_new(q->g, q->model, batch, NULL, DS_CPU, &p, err)))
		goto out;
	for (size_t i = 0; i < q->n_stats; i++)
		if ((rc = ds_plan_keep(p, q->stats[i].name, err)))
			goto out;
	if ((rc = want_taps(q, p, err)) || (rc = calib_pass(q, d, p, input, 0, err)))
		goto out;
	if (q->method) {
		for (size_t i = 0; i < q->n_stats; i++) {
			struct vstat *s = &q->stats[i];

			if (!(s->hist = ds_calloc(HIST_BINS, sizeof *s->hist, err))) {
				rc = DS_ERR_NOMEM;
				goto out;
			}
			s->hlo = q->method == 2 ? 0 : isfinite(s->lo) ? s->lo : 0;
			s->hhi = q->method == 2 ? fmax(fabs(s->lo), fabs(s->hi)) : isfinite(s->hi) ? s->hi : 0;
			if (!isfinite(s->hhi))
				s->hhi = 0;
		}
		if ((rc = calib_pass(q, d, p, input, 1, err)))
			goto out;
	}
	for (size_t i = 0; i < q->n_stats; i++)
		choose_range(q, &q->stats[i]);
	/* Learned ranges win over calibrated ones. */
	apply_ranges(q);
	rc = gather_taps(q, d, p, input, err);
out:
	ds_plan_free(p);
	ds_dataset_free(d);
	return rc;
}

/* -------------------------------------------------------------- rewrite */

static void set_qattrs(json_t *attrs, const char *prefix, const struct vstat *s)
{
	char key[32];

	snprintf(key, sizeof key, "%sscale", prefix);
	json_object_set_new(attrs, key, json_real(s->scale));
	snprintf(key, sizeof key, "%szero_point", prefix);
	json_object_set_new(attrs, key, json_integer(s->zp));
}

struct rewrite {
	struct qctx *q;
	json_t *graph;               /* the new document */
	json_t *nodes;               /* its nodes, filled in order */
	json_t *copies;              /* value -> its U8 or F32 copy */
};

static char *fresh_name(struct rewrite *r, const char *base, ds_error *err)
{
	char *name = ds_edit_unique_name(r->q->graph, r->q->model, base, err);
	size_t len;

	if (!name)
		return NULL;
	/* Also unique among the nodes written so far. */
	len = strlen(name) + 24;
	for (unsigned n = 1; ds_edit_producer(r->graph, name) >= 0; n++) {
		char *next = ds_malloc(len, err);

		if (!next) {
			free(name);
			return NULL;
		}
		snprintf(next, len, "%s.%u", base, n);
		free(name);
		name = next;
	}
	return name;
}

/* The name under which value is read in the other domain: a quantize (to
 * U8) or dequantize (to F32) node is added the first time. */
static int convert(struct rewrite *r, const char *value, int to_u8, const char **out, ds_error *err)
{
	const struct vstat *s = qparams_of(r->q, value);
	json_t *node;
	char base[512], *name;

	snprintf(base, sizeof base, "%s.%s", value, to_u8 ? "quant" : "dequant");
	if ((*out = json_string_value(json_object_get(r->copies, base))))
		return 0;
	if (!s)
		return ds_error_set(err, DS_ERR_RUN, "no_range", "value '%s': no calibrated range", value);
	if (!(name = fresh_name(r, base, err)))
		return DS_ERR_NOMEM;
	node = json_pack("{s:s, s:s, s:[s], s:[s], s:{s:f, s:i}}", "op", to_u8 ? "quantize" : "dequantize", "name", name,
			 "inputs", value, "outputs", name, "attrs", "scale", (double)s->scale, "zero_point", (int)s->zp);
	json_object_set_new(r->copies, base, json_string(name));
	free(name);
	if (!node || json_array_append_new(r->nodes, node))
		return nomem(err);
	*out = json_string_value(json_object_get(r->copies, base));
	return 0;
}

/* The node's bias less the mean shift INT8 puts on each of its outputs
 * over the calibration data (bias_correct.h).  A bias other nodes read too
 * is left as it is. */
static int correct_bias(struct qctx *q, const struct qnode *qn, const ds_tensor *w, const ds_tensor *qw,
			const ds_tensor *sc, ds_error *err)
{
	const ds_bias_taps *t = &q->taps[qn - q->nodes];
	const char *bname = ds_node_input(qn->n, 2);
	ds_tensor *b = param(q, bname), *nb;
	int64_t outc = w->shape[0], per = ds_tensor_numel(w) / outc;
	double most = 0;
	int rc;

	if (ds_edit_uses(q->graph, bname) != 1 || !b || b->dtype != DS_F32 || ds_tensor_numel(b) != outc ||
	    t->d.o != outc)
		return 0;
	if (!(nb = ds_tensor_new(DS_F32, 1, &outc, DS_CPU, err)))
		return DS_ERR_NOMEM;
	for (int64_t o = 0; o < outc; o++) {
		double shift = ds_bias_taps_shift(t, o, (const float *)w->data + o * per,
						  (const int8_t *)qw->data + o * per, ((const float *)sc->data)[o]);

		((float *)nb->data)[o] = (float)(((const float *)b->data)[o] - shift);
		most = fmax(most, fabs(shift));
	}
	ds_container_remove(q->model, bname);
	rc = ds_container_add(q->model, bname, nb, err);
	ds_tensor_unref(nb);
	if (!rc) {
		q->corrected++;
		ds_log_verbose(q->o->cli, "quantize: '%s' bias corrected by up to %.3g", ds_node_name(qn->n), most);
	}
	return rc;
}

/* I8 weights symmetric per output channel and their F32 scales, in the
 * container; the node's inputs name them.  The bias is corrected for
 * them, where calibration gathered what that needs. */
static int quantize_weights(struct rewrite *r, const struct qnode *qn, json_t *inputs, ds_error *err)
{
	const char *wname = ds_node_input(qn->n, 1);
	ds_tensor *w = param(r->q, wname), *qw = NULL, *sc = NULL;
	int64_t outc = w->shape[0], per = ds_tensor_numel(w) / (outc ? outc : 1);
	char base[512], *qname = NULL, *sname = NULL;
	int rc = 0;

	if (!(qw = ds_tensor_new(DS_I8, w->ndim, w->shape, DS_CPU, err)) ||
	    !(sc = ds_tensor_new(DS_F32, 1, &outc, DS_CPU, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	for (int64_t o = 0; o < outc; o++) {
		const float *src = (const float *)w->data + o * per;
		float amax = 0, s;

		for (int64_t k = 0; k < per; k++)
			amax = fmaxf(amax, fabsf(src[k]));
		s = amax > 0 ? amax / 127.0f : 1.0f;
		((float *)sc->data)[o] = s;
		for (int64_t k = 0; k < per; k++) {
			long v = lrintf(src[k] / s);

			((int8_t *)qw->data)[o * per + k] = (int8_t)(v < -127 ? -127 : v > 127 ? 127 : v);
		}
	}
	if (r->q->taps && r->q->taps[qn - r->q->nodes].real && (rc = correct_bias(r->q, qn, w, qw, sc, err)))
		goto out;
	snprintf(base, sizeof base, "%s_scale", wname);
	if (!(sname = fresh_name(r, base, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	/* The float weights keep their name when this node alone reads them. */
	if (ds_edit_uses(r->q->graph, wname) == 1) {
		if (!(qname = ds_strdup(wname, err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		ds_container_remove(r->q->model, wname);
	} else {
		snprintf(base, sizeof base, "%s.int8", wname);
		if (!(qname = fresh_name(r, base, err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
	}
	if ((rc = ds_container_add(r->q->model, qname, qw, err)) || (rc = ds_container_add(r->q->model, sname, sc, err)))
		goto out;
	json_array_set_new(inputs, 1, json_string(qname));
	json_array_insert_new(inputs, 2, json_string(sname));
out:
	free(qname);
	free(sname);
	ds_tensor_unref(qw);
	ds_tensor_unref(sc);
	return rc;
}

static int write_int8(struct rewrite *r, const struct qnode *qn, ds_error *err)
{
	struct qctx *q = r->q;
	const char *op = ds_node_op(qn->n), *in;
	json_t *node = NULL, *attrs = NULL, *inputs = json_array();
	const json_t *old = ds_node_attrs(qn->n);
	int rc = 0;

	if (!inputs || !(attrs = old ? json_deep_copy(old) : json_object()))
		goto nomem;
	json_object_del(attrs, "activation");
	if (qn->act)
		json_object_set_new(attrs, "activation", json_string(qn->act));
	if (qn->role == R_COMPUTE) {
		in = ds_node_input(qn->n, 0);
		if (!q->dynamic) {
			if (!value_q(q, in) && (rc = convert(r, in, 1, &in, err)))
				goto out;
			set_qattrs(attrs, "x_", qparams_of(q, ds_node_input(qn->n, 0)));
		}
		for (size_t j = 0; j < ds_node_input_count(qn->n); j++)
			json_array_append_new(inputs, json_string(j ? ds_node_input(qn->n, j) : in));
		if ((rc = quantize_weights(r, qn, inputs, err)))
			goto out;
		if (qn->out_q)
			set_qattrs(attrs, "y_", stat_of(q, qn->out));
		op = !strcmp(op, "conv2d") ? "qconv2d" : "qlinear";
	} else if (qn->role == R_ADD) {
		for (size_t j = 0; j < 2; j++) {
			in = ds_node_input(qn->n, j);
			set_qattrs(attrs, j ? "b_" : "a_", qparams_of(q, in));
			if (!value_q(q, in) && (rc = convert(r, in, 1, &in, err)))
				goto out;
			json_array_append_new(inputs, json_string(in));
		}
		set_qattrs(attrs, "y_", stat_of(q, qn->out));
		op = "qadd";
	} else {
		json_array_append_new(inputs, json_string(ds_node_input(qn->n, 0)));
		op = !strcmp(op, "max_pool") ? "qmax_pool" : !strcmp(op, "global_avg_pool") ? "qglobal_avg_pool" : op;
		json_object_del(attrs, "count_include_pad");
	}
	node = json_pack("{s:s, s:s, s:O, s:[s], s:O}", "op", op, "name", ds_node_name(qn->n), "inputs", inputs,
			 "outputs", qn->out, "attrs", attrs);
	if (!node || json_array_append_new(r->nodes, node))
		goto nomem;
	goto out;
nomem:
	rc = nomem(err);
out:
	json_decref(inputs);
	json_decref(attrs);
	return rc;
}

static int write_float(struct rewrite *r, const struct qnode *qn, const json_t *orig, ds_error *err)
{
	json_t *node = json_deep_copy(orig), *inputs = json_object_get(node, "inputs");
	int rc;

	if (!node)
		return nomem(err);
	for (size_t j = 0; j < json_array_size(inputs); j++) {
		const char *in = json_string_value(json_array_get(inputs, j)), *f;

		if (!value_q(r->q, in))
			continue;
		if ((rc = convert(r, in, 0, &f, err))) {
			json_decref(node);
			return rc;
		}
		json_array_set_new(inputs, j, json_string(f));
	}
	(void)qn;
	return json_array_append_new(r->nodes, node) ? nomem(err) : 0;
}

static const json_t *json_node_named(const json_t *graph, const char *name)
{
	for (size_t i = 0; i < ds_edit_node_count(graph); i++)
		if (!strcmp(ds_edit_node_name(ds_edit_node(graph, i)), name))
			return ds_edit_node(graph, i);
	return NULL;
}

static int rewrite(struct qctx *q, json_t **out, ds_error *err)
{
	struct rewrite r = { .q = q };
	int rc = 0;

	*out = NULL;
	if (!(r.graph = json_deep_copy(q->graph)) || !(r.nodes = json_array()) || !(r.copies = json_object()) ||
	    json_object_set(r.graph, "nodes", r.nodes)) {
		rc = nomem(err);
		goto out;
	}
	for (size_t i = 0; i < q->n && !rc; i++) {
		const struct qnode *qn = &q->nodes[i];

		if (qn->role == R_FUSED)
			continue;
		if (qn->int8)
			rc = write_int8(&r, qn, err);
		else
			rc = write_float(&r, qn, json_node_named(q->graph, ds_node_name(qn->n)), err);
		if (rc)
			ds_error_prefix(err, "node '%s'", ds_node_name(qn->n));
	}
	if (!rc) {
		*out = r.graph;
		r.graph = NULL;
	}
out:
	json_decref(r.graph);
	json_decref(r.nodes);
	json_decref(r.copies);
	return rc;
}

/* --------------------------------------------------------------- report */

static json_t *tensor_rows(const ds_container *c)
{
	json_t *rows = json_object();

	for (size_t i = 0; i < ds_container_count(c); i++) {
		const ds_tensor *t = ds_container_tensor(c, i);

		json_object_set_new(rows, ds_container_name(c, i),
				    json_pack("{s:s, s:I}", "dtype", ds_dtype_name(t->dtype), "bytes",
					      (json_int_t)ds_tensor_nbytes(t)));
	}
	return rows;
}

static json_int_t total_bytes(const ds_container *c)
{
	json_int_t sum = 0;

	for (size_t i = 0; i < ds_container_count(c); i++)
		sum += (json_int_t)ds_tensor_nbytes(ds_container_tensor(c, i));
	return sum;
}

static json_t *tensor_table(const json_t *before, const json_t *after)
{
	json_t *rows = json_array(), *v;
	const char *name;

	json_object_foreach((json_t *)before, name, v) {
		const json_t *a = json_object_get(after, name);

		json_array_append_new(rows, json_pack("{s:s, s:O, s:O, s:s, s:I}", "tensor", name, "dtype_before",
						      json_object_get(v, "dtype"), "bytes_before",
						      json_object_get(v, "bytes"), "dtype_after",
						      a ? json_string_value(json_object_get(a, "dtype")) : "-", "bytes_after",
						      a ? json_integer_value(json_object_get(a, "bytes")) : (json_int_t)0));
	}
	json_object_foreach((json_t *)after, name, v)
		if (!json_object_get(before, name))
			json_array_append_new(rows, json_pack("{s:s, s:s, s:i, s:O, s:O}", "tensor", name, "dtype_before",
							      "-", "bytes_before", 0, "dtype_after",
							      json_object_get(v, "dtype"), "bytes_after",
							      json_object_get(v, "bytes")));
	return rows;
}

static int check_weights(const ds_container *c, ds_error *err)
{
	for (size_t i = 0; i < ds_container_count(c); i++) {
		const ds_tensor *t = ds_container_tensor(c, i);

		if (t->dtype != DS_F32)
			continue;
		for (int64_t k = 0; k < ds_tensor_numel(t); k++)
			if (!isfinite(((const float *)t->data)[k]))
				return ds_error_set(err, DS_ERR_DATA, "bad_weights",
						    "tensor '%s': element %" PRId64 " is %s; quantization needs finite weights",
						    ds_container_name(c, i), k,
						    isnan(((const float *)t->data)[k]) ? "NaN" : "infinite");
	}
	return 0;
}

/* ------------------------------------------------------------------ QAT */

/* ds-optimize's passes other than those kept, as its disable list: passes
 * added later stay off until someone decides they suit quantization. */
static char *passes_except(const char *const *keep, ds_error *err)
{
	json_t *doc = ds_optimize_pass_table(), *rows = json_object_get(doc, "passes");
	size_t len = 1, i;
	char *list = NULL;
	const json_t *row;

	if (!json_is_array(rows))
		goto nomem;
	json_array_foreach(rows, i, row)
		len += strlen(json_string_value(json_object_get(row, "pass"))) + 1;
	if (!(list = ds_calloc(len, 1, err)))
		goto out;
	json_array_foreach(rows, i, row) {
		const char *name = json_string_value(json_object_get(row, "pass"));
		int kept = 0;

		for (size_t k = 0; keep[k]; k++)
			kept |= !strcmp(keep[k], name);
		if (kept)
			continue;
		if (*list)
			strcat(list, ",");
		strcat(list, name);
	}
	goto out;
nomem:
	nomem(err);
out:
	json_decref(doc);
	return list;
}

/* An op of a quantized model: such a graph has nothing left to train. */
static int int8_op(const char *op)
{
	static const char *const ops[] = { "quantize", "dequantize", "qconv2d", "qlinear", "qmax_pool",
					   "qglobal_avg_pool", "qadd", NULL };

	for (size_t i = 0; ops[i]; i++)
		if (!strcmp(op, ops[i]))
			return 1;
	return 0;
}

/* Remove the fake_quant nodes of one kind (weights: one input; activations:
 * two) from the model's graph, their readers reading what they read; the
 * activation ones leave their range in ranges under the value they read. */
static int strip_fake_quant(ds_container *model, int activations, json_t *ranges, int *count, ds_error *err)
{
	json_t *graph = NULL, *before = NULL;
	char *in = NULL, *out = NULL;
	int rc;

	if ((rc = ds_container_meta_json(model, "ds.graph", &graph, err)) || !graph)
		return rc;
	if (!(before = json_deep_copy(graph))) {
		rc = nomem(err);
		goto out;
	}
	for (size_t i = 0; i < ds_edit_node_count(graph);) {
		json_t *node = ds_edit_node(graph, i);
		size_t n_in = ds_edit_input_count(node);

		if (strcmp(ds_edit_node_op(node), "fake_quant") != 0 || n_in < 1 || (n_in > 1) != activations) {
			i++;
			continue;
		}
		if (activations) {
			const ds_tensor *r = ds_container_get(model, ds_edit_input(node, 1));
			const float *v = r ? r->data : NULL;

			if (!r || r->dtype != DS_F32 || ds_tensor_numel(r) != 2 || !isfinite(v[0]) || !isfinite(v[1])) {
				rc = ds_error_set(err, DS_ERR_DATA, "bad_range",
						  "fake_quant '%s': its range is not a finite F32 [2] parameter",
						  ds_edit_node_name(node));
				goto out;
			}
			if (json_object_set_new(ranges, ds_edit_input(node, 0), json_pack("[f, f]", (double)v[0], (double)v[1]))) {
				rc = nomem(err);
				goto out;
			}
		}
		/* Copies: removing the node frees its strings. */
		if (!(in = ds_strdup(ds_edit_input(node, 0), err)) || !(out = ds_strdup(ds_edit_output(node, 0), err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		ds_edit_remove_node(graph, i);
		if ((rc = ds_edit_replace_uses(graph, out, in, err)))
			goto out;
		free(in);
		free(out);
		in = out = NULL;
		(*count)++;
	}
	ds_edit_drop_unused_params(graph, before, model);
	rc = ds_container_meta_set_json(model, "ds.graph", graph, err);
out:
	free(in);
	free(out);
	json_decref(graph);
	json_decref(before);
	return rc;
}

struct prepare {
	struct qctx *q;
	json_t *nodes;               /* the new node list */
	json_t *renames;             /* value -> its fake_quant output */
	json_t *weights;             /* weight parameter -> its fake_quant output */
	int n_act, n_weight;
};

/* A fake_quant node reading value, appended; an activation gets a range
 * parameter of its own, [0, 0] until training's first batch sets it. */
static int add_fake_quant(struct prepare *pr, const char *value, int activation, ds_error *err)
{
	struct qctx *q = pr->q;
	char base[512], *name = NULL, *range = NULL;
	ds_tensor *r = NULL;
	int64_t two = 2;
	json_t *node = NULL;
	int rc = 0;

	snprintf(base, sizeof base, "%s.fq", value);
	if (!(name = ds_edit_unique_name(q->graph, q->model, base, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	if (activation) {
		snprintf(base, sizeof base, "%s.qat_range", value);
		if (!(range = ds_edit_unique_name(q->graph, q->model, base, err)) ||
		    !(r = ds_tensor_new(DS_F32, 1, &two, DS_CPU, err))) {
			rc = DS_ERR_NOMEM;
			goto out;
		}
		memset(r->data, 0, ds_tensor_nbytes(r));
		if ((rc = ds_container_add(q->model, range, r, err)))
			goto out;
		node = json_pack("{s:s, s:s, s:[s, s], s:[s]}", "op", "fake_quant", "name", name, "inputs", value, range,
				 "outputs", name);
	} else {
		node = json_pack("{s:s, s:s, s:[s], s:[s]}", "op", "fake_quant", "name", name, "inputs", value, "outputs",
				 name);
	}
	if (!node || json_array_append_new(pr->nodes, node) ||
	    json_object_set_new(activation ? pr->renames : pr->weights, value, json_string(name))) {
		rc = nomem(err);
		goto out;
	}
	if (activation)
		pr->n_act++;
	else
		pr->n_weight++;
out:
	free(name);
	free(range);
	ds_tensor_unref(r);
	return rc;
}

/* The model's graph, as the document to rewrite and parsed, with a record
 * per node. */
static int load_graph(struct qctx *q, ds_container *model, ds_error *err)
{
	int rc;

	if ((rc = ds_container_meta_json(model, "ds.graph", &q->graph, err)) ||
	    (rc = ds_graph_from_model(model, &q->g, err)))
		return rc;
	q->n = ds_graph_node_count(q->g);
	if (!(q->nodes = ds_calloc(q->n + 1, sizeof *q->nodes, err)))
		return DS_ERR_NOMEM;
	return 0;
}

/* Store the rewritten graph as the model's ds.graph.  It must parse, or the
 * rewrite has a bug: status 1 naming what. */
static int store_graph(ds_container *model, const json_t *graph, const char *what, ds_error *err)
{
	char *text = json_dumps(graph, JSON_COMPACT);
	ds_graph *check = NULL;
	int rc;

	if (!text)
		return nomem(err);
	rc = ds_graph_parse(text, model, &check, err);
	free(text);
	ds_graph_free(check);
	if (rc) {
		ds_error_prefix(err, "%s", what);
		return DS_ERR_RUN;
	}
	return ds_container_meta_set_json(model, "ds.graph", graph, err);
}

/* The float graph again, with fake_quant where ds-quantize would put U8
 * values and I8 weights. */
static int insert_fake_quant(struct prepare *pr, ds_error *err)
{
	struct qctx *q = pr->q;
	const json_t *ins = json_object_get(q->graph, "inputs");
	int rc;

	for (size_t j = 0; j < json_array_size(ins); j++) {
		const char *v = json_string_value(json_object_get(json_array_get(ins, j), "name"));

		if (v && stat_of(q, v) && (rc = add_fake_quant(pr, v, 1, err)))
			return rc;
	}
	for (size_t i = 0; i < q->n; i++) {
		const struct qnode *qn = &q->nodes[i];
		json_t *node = json_deep_copy(json_node_named(q->graph, ds_node_name(qn->n)));
		json_t *inputs = json_object_get(node, "inputs");

		if (!node)
			return nomem(err);
		if (qn->int8 && qn->role == R_COMPUTE) {
			const char *w = ds_node_input(qn->n, 1);

			if (!json_object_get(pr->weights, w) && (rc = add_fake_quant(pr, w, 0, err))) {
				json_decref(node);
				return rc;
			}
			json_array_set(inputs, 1, json_object_get(pr->weights, w));
		}
		for (size_t j = 0; j < json_array_size(inputs); j++) {
			const json_t *to = json_object_get(pr->renames, json_string_value(json_array_get(inputs, j)));

			if (to && !(qn->int8 && qn->role == R_COMPUTE && j == 1))
				json_array_set(inputs, j, (json_t *)to);
		}
		if (json_array_append_new(pr->nodes, node))
			return nomem(err);
		for (size_t j = 0; j < ds_node_output_count(qn->n); j++)
			if (stat_of(q, ds_node_output(qn->n, j)) &&
			    (rc = add_fake_quant(pr, ds_node_output(qn->n, j), 1, err)))
				return rc;
	}
	return 0;
}

int ds_quantize_prepare_qat(ds_container *model, const ds_cli *cli, json_t **report, ds_error *err)
{
	ds_quantize_options o = { .cli = cli };
	struct qctx q = { .model = model, .o = &o, .qat = 1 };
	struct prepare pr = { .q = &q };
	/* Batch norm folded as ds-quantize folds it and nothing else: training
	 * refuses fused nodes, and dropout stays for training. */
	static const char *const keep[] = { "fold-batchnorm", NULL };
	ds_optimize_options oo = { .target = "cpu", .level = 2, .batch = 64, .cli = cli };
	char *disable = NULL;
	json_t *opt_report = NULL, *graph = NULL, *newgraph = NULL;
	const char *fmt = ds_container_meta_get(model, "ds.format");
	int rc, n_int8 = 0, n_fq = 0;

	*report = NULL;
	if (fmt && strcmp(fmt, DS_FORMAT_MODEL) != 0)
		return ds_error_set(err, DS_ERR_DATA, "not_model", "ds.format is '%s', not a model (%s)", fmt,
				    DS_FORMAT_MODEL);
	for (size_t i = 0; i < ds_container_count(model); i++)
		if (ds_container_tensor(model, i)->dtype == DS_I8)
			return ds_error_set(err, DS_ERR_DATA, "already_quantized",
					    "tensor '%s' is I8: the model is already quantized; --qat needs the float model",
					    ds_container_name(model, i));
	if ((rc = ds_container_meta_json(model, "ds.graph", &graph, err)))
		return rc;
	for (size_t i = 0; i < ds_edit_node_count(graph); i++) {
		const char *op = ds_edit_node_op(ds_edit_node(graph, i));

		if (int8_op(op)) {
			rc = ds_error_set(err, DS_ERR_DATA, "already_quantized",
					  "node '%s' is %s: the model is already quantized; --qat needs the float model",
					  ds_edit_node_name(ds_edit_node(graph, i)), op);
			goto out;
		}
		n_fq += !strcmp(op, "fake_quant");
	}
	/* A QAT model trains on as it is (a resumed or second QAT run). */
	if (n_fq) {
		*report = json_pack("{s:b, s:i}", "prepared", 0, "fake_quant_nodes", n_fq);
		rc = *report ? 0 : nomem(err);
		goto out;
	}
	if (!(disable = passes_except(keep, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	oo.disable = disable;
	if ((rc = check_weights(model, err)) || (rc = ds_optimize_model(model, &oo, &opt_report, err)))
		goto out;
	if ((rc = load_graph(&q, model, err)))
		goto out;
	for (size_t i = 0; i < q.n; i++) {
		const json_t *attrs = ds_node_attrs(ds_graph_node(q.g, i));

		if (json_object_get(attrs, "activation") || json_object_get(attrs, "pool")) {
			rc = ds_error_set(err, DS_ERR_DATA, "fused_model",
					  "node '%s' has a fused %s: --qat needs the model before ds-optimize",
					  ds_node_name(ds_graph_node(q.g, i)),
					  json_object_get(attrs, "activation") ? "activation" : "pooling");
			goto out;
		}
	}
	analyse(&q);
	for (size_t i = 0; i < q.n; i++)
		n_int8 += q.nodes[i].int8 && q.nodes[i].role == R_COMPUTE;
	if (!n_int8) {
		rc = ds_error_set(err, DS_ERR_DATA, "nothing_to_quantize",
				  "no convolution or linear layer with F32 weights: nothing for --qat to quantize");
		goto out;
	}
	if ((rc = list_stats(&q, err)))
		goto out;
	if (!(newgraph = json_deep_copy(q.graph)) || !(pr.nodes = json_array()) || !(pr.renames = json_object()) ||
	    !(pr.weights = json_object()) || json_object_set(newgraph, "nodes", pr.nodes)) {
		rc = nomem(err);
		goto out;
	}
	if ((rc = insert_fake_quant(&pr, err)))
		goto out;
	if ((rc = store_graph(model, newgraph, "QAT graph", err)))
		goto out;
	ds_log_verbose(cli, "qat: %d INT8 layers, %d activation and %d weight fake_quant nodes", n_int8, pr.n_act,
		       pr.n_weight);
	*report = json_pack("{s:b, s:i, s:i, s:i}", "prepared", 1, "int8_layers", n_int8, "fake_quant_activations",
			    pr.n_act, "fake_quant_weights", pr.n_weight);
	if (!*report)
		rc = nomem(err);
out:
	free(q.stats);
	free(q.nodes);
	ds_graph_free(q.g);
	json_decref(q.graph);
	json_decref(graph);
	json_decref(newgraph);
	json_decref(pr.nodes);
	json_decref(pr.renames);
	json_decref(pr.weights);
	json_decref(opt_report);
	free(disable);
	return rc;
}

int ds_quantize_model(ds_container *model, const ds_quantize_options *o, json_t **report, ds_error *err)
{
	static const char *const methods[] = { "minmax", "percentile", "entropy" };
	struct qctx q = { .model = model, .o = o };
	/* The exact passes whose output the analysis knows.  Pooling and
	 * residual additions stay nodes of their own (qmax_pool and qadd keep
	 * the chain in U8), and passes unknown here stay off. */
	static const char *const keep[] = { "drop-dropout", "drop-identity", "constant-fold", "fold-batchnorm",
					    "gap-linear", "fuse-activation", "dead-nodes", NULL };
	ds_optimize_options oo = { .target = "cpu", .level = 2, .batch = 64, .cli = o->cli };
	char *disable = NULL;
	json_t *opt_report = NULL, *before = NULL, *newgraph = NULL, *layers = NULL, *acts = NULL, *figures = NULL;
	const char *method = o->method ? o->method : "percentile", *mode = o->mode ? o->mode : "static", *fmt;
	json_int_t bytes_before = total_bytes(model);
	int rc, n_int8 = 0, n_float = 0, n_fq = 0;

	*report = NULL;
	if (strcmp(mode, "static") != 0 && strcmp(mode, "dynamic") != 0)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--mode: '%s' is not static or dynamic", mode);
	q.dynamic = !strcmp(mode, "dynamic");
	for (q.method = 0; q.method < 3 && strcmp(methods[q.method], method); q.method++)
		;
	if (q.method == 3)
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--method: '%s' is not minmax, percentile or entropy",
				    method);
	if (o->percentile < 0 || o->percentile > 100 || (o->percentile > 0 && o->percentile < 50))
		return ds_error_set(err, DS_ERR_USAGE, "usage", "--percentile: %g is outside [50, 100]", o->percentile);
	fmt = ds_container_meta_get(model, "ds.format");
	if (fmt && strcmp(fmt, DS_FORMAT_MODEL) != 0)
		return ds_error_set(err, DS_ERR_DATA, "not_model", "ds.format is '%s', not a model (%s)", fmt,
				    DS_FORMAT_MODEL);
	if ((rc = check_weights(model, err)))
		return rc;
	for (size_t i = 0; i < ds_container_count(model); i++)
		if (ds_container_tensor(model, i)->dtype == DS_I8)
			return ds_error_set(err, DS_ERR_DATA, "already_quantized",
					    "tensor '%s' is I8: the model is already quantized",
					    ds_container_name(model, i));
	before = tensor_rows(model);
	if (!(disable = passes_except(keep, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	oo.disable = disable;
	/* A QAT model: its weight fake_quant nodes go before folding, which
	 * would take them for constants; the activation ones after, so that
	 * their ranges are found under the names the analysis will see. */
	if (!(q.ranges = json_object())) {
		rc = nomem(err);
		goto out;
	}
	if ((rc = strip_fake_quant(model, 0, NULL, &n_fq, err)) ||
	    (rc = ds_optimize_model(model, &oo, &opt_report, err)) ||
	    (rc = strip_fake_quant(model, 1, q.ranges, &n_fq, err)))
		goto out;
	if (!json_object_size(q.ranges) || q.dynamic) {
		json_decref(q.ranges);
		q.ranges = NULL;
	}
	if ((rc = load_graph(&q, model, err)))
		goto out;
	analyse(&q);
	if ((rc = list_stats(&q, err)) || (rc = calibrate(&q, err)))
		goto out;
	if (!(layers = json_array()) || !(acts = json_array())) {
		rc = nomem(err);
		goto out;
	}
	for (size_t i = 0; i < q.n; i++) {
		const struct qnode *qn = &q.nodes[i];
		const char *as = qn->role == R_FUSED ? "fused" : !qn->int8 ? "float" : qn->role == R_COMPUTE ?
				 (!strcmp(ds_node_op(qn->n), "conv2d") ? "qconv2d" : "qlinear") : qn->role == R_ADD ? "qadd" :
				 !strcmp(ds_node_op(qn->n), "max_pool") ? "qmax_pool" :
				 !strcmp(ds_node_op(qn->n), "global_avg_pool") ? "qglobal_avg_pool" : ds_node_op(qn->n);
		char note[256] = "";

		if (qn->role == R_FUSED)
			snprintf(note, sizeof note, "into '%s'", ds_node_name(q.nodes[qn->fused_into].n));
		else if (qn->int8)
			snprintf(note, sizeof note, "%s%s%s", qn->act ? qn->act : "", qn->act ? " fused, " : "",
				 qn->out_q ? "U8 out" : "F32 out");
		else if (qn->why)
			snprintf(note, sizeof note, "%s", qn->why);
		n_int8 += qn->int8;
		n_float += !qn->int8 && qn->role != R_FUSED;
		json_array_append_new(layers, json_pack("{s:s, s:s, s:s, s:s}", "node", ds_node_name(qn->n), "op",
							ds_node_op(qn->n), "as", as, "note", note));
		if (qn->int8 || qn->role == R_FUSED)
			ds_log_verbose(o->cli, "quantize: %s '%s' -> %s %s", ds_node_op(qn->n), ds_node_name(qn->n), as,
				       note);
	}
	for (size_t i = 0; i < q.n_stats; i++) {
		const struct vstat *s = &q.stats[i];

		json_array_append_new(acts, json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:i}", "value", s->name, "min",
						      isfinite(s->lo) ? s->lo : 0.0, "max", isfinite(s->hi) ? s->hi : 0.0,
						      "range_lo", s->qlo, "range_hi", s->qhi, "scale", (double)s->scale,
						      "zero_point", (int)s->zp));
	}
	if ((rc = rewrite(&q, &newgraph, err)))
		goto out;
	ds_edit_drop_unused_params(newgraph, q.graph, model);
	if ((rc = store_graph(model, newgraph, "quantized graph", err)))
		goto out;
	figures = json_pack("{s:s, s:s, s:I, s:i, s:i, s:i, s:I, s:I, s:f}", "mode", mode, "method",
			    q.dynamic ? "-" : q.ranges_used ? "qat" : method, "calib_items", (json_int_t)q.calib_items,
			    "bias_corrected", q.corrected, "int8_nodes", n_int8,
			    "float_nodes", n_float, "bytes_before", bytes_before, "bytes_after", total_bytes(model),
			    "size_ratio", bytes_before ? (double)total_bytes(model) / (double)bytes_before : 1.0);
	if (!figures) {
		rc = nomem(err);
		goto out;
	}
	if (n_fq)
		json_object_set_new(figures, "qat_ranges", json_integer((json_int_t)json_object_size(q.ranges)));
	{
		json_t *after = tensor_rows(model);

		*report = json_pack("{s:O, s:O, s:o, s:O}", "figures", figures, "layers", layers, "tensors",
				    tensor_table(before, after), "activations", acts);
		json_decref(after);
	}
	if (!*report)
		rc = nomem(err);
out:
	for (size_t i = 0; i < q.n_stats; i++)
		free(q.stats[i].hist);
	for (size_t i = 0; i < q.n && q.taps; i++)
		ds_bias_taps_free(&q.taps[i]);
	free(q.taps);
	free(q.stats);
	free(q.nodes);
	ds_graph_free(q.g);
	json_decref(q.graph);
	json_decref(q.ranges);
	json_decref(newgraph);
	json_decref(opt_report);
	json_decref(before);
	free(disable);
	json_decref(layers);
	json_decref(acts);
	json_decref(figures);
	return rc;
}

/* --------------------------------------------------------------- compare */

static void softmax(const float *x, int64_t k, double *p)
{
	double m = -INFINITY, s = 0;

	for (int64_t j = 0; j < k; j++)
		m = fmax(m, x[j]);
	for (int64_t j = 0; j < k; j++)
		s += p[j] = exp(x[j] - m);
	for (int64_t j = 0; j < k; j++)
		p[j] /= s;
}

static int64_t argmax(const float *x, int64_t k)
{
	int64_t best = 0;

	for (int64_t j = 1; j < k; j++)
		if (x[j] > x[best])
			best = j;
	return best;
}

int ds_quantize_compare(ds_container *float_model, ds_container *int8_model, const char *data, int64_t count,
			int64_t batch, json_t **figures, ds_error *err)
{
	ds_graph *ga = NULL, *gb = NULL;
	ds_plan *pa = NULL, *pb = NULL;
	ds_dataset *d = NULL;
	ds_loader *l = NULL;
	ds_loader_options lo = { .batch = batch > 0 ? batch : 64 };
	double *sa = NULL, *sb = NULL, kl = 0, max_abs = 0;
	int64_t items = 0, agree = 0, right_a = 0, right_b = 0, k, classes;
	const ds_shape *out;
	int rc;

	*figures = NULL;
	if ((rc = ds_graph_from_model(float_model, &ga, err)) || (rc = ds_graph_from_model(int8_model, &gb, err)))
		goto out;
	out = ds_graph_shape(ga, ds_graph_output_name(ga, 0));
	if (!out || out->ndim != 2) {
		rc = ds_error_set(err, DS_ERR_DATA, "not_classifier", "--compare: the model's output is not [N, K]");
		goto out;
	}
	k = classes = out->dim[1];
	if ((rc = ds_dataset_load(data, &d, err)) || (rc = ds_dataset_check(d, ga, classes, err)) ||
	    (rc = ds_plan_new(ga, float_model, lo.batch, NULL, DS_CPU, &pa, err)) ||
	    (rc = ds_plan_new(gb, int8_model, lo.batch, NULL, DS_CPU, &pb, err)) ||
	    (rc = ds_loader_new(d, &lo, &l, err)))
		goto out;
	if (!(sa = ds_calloc((size_t)k, sizeof *sa, err)) || !(sb = ds_calloc((size_t)k, sizeof *sb, err))) {
		rc = DS_ERR_NOMEM;
		goto out;
	}
	while (count <= 0 || items < count) {
		ds_tensor *x, *y;
		const float *ya, *yb;
		int64_t n;

		if ((rc = ds_loader_next(l, &x, &y, &n, err)))
			goto out;
		if (!n)
			break;
		n = count > 0 && n > count - items ? count - items : n;
		if ((rc = ds_plan_set_batch(pa, n, err)) || (rc = ds_plan_set_batch(pb, n, err)))
			goto out;
		memcpy(ds_plan_tensor(pa, ds_graph_input_name(ga, 0))->data, x->data,
		       ds_tensor_nbytes(ds_plan_tensor(pa, ds_graph_input_name(ga, 0))));
		memcpy(ds_plan_tensor(pb, ds_graph_input_name(gb, 0))->data, x->data,
		       ds_tensor_nbytes(ds_plan_tensor(pb, ds_graph_input_name(gb, 0))));
		if ((rc = ds_plan_forward(pa, 0, 0, err)) || (rc = ds_plan_forward(pb, 0, 0, err)))
			goto out;
		ya = ds_plan_tensor(pa, ds_graph_output_name(ga, 0))->data;
		yb = ds_plan_tensor(pb, ds_graph_output_name(gb, 0))->data;
		for (int64_t i = 0; i < n; i++) {
			int64_t ta = argmax(ya + i * k, k), tb = argmax(yb + i * k, k), label = ((int32_t *)y->data)[i];

			agree += ta == tb;
			right_a += ta == label;
			right_b += tb == label;
			softmax(ya + i * k, k, sa);
			softmax(yb + i * k, k, sb);
			for (int64_t j = 0; j < k; j++) {
				max_abs = fmax(max_abs, fabs((double)ya[i * k + j] - yb[i * k + j]));
				if (sa[j] > 0)
					kl += sa[j] * log(sa[j] / fmax(sb[j], 1e-30));
			}
		}
		items += n;
	}
	*figures = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "items", (json_int_t)items, "top1_agreement",
			     items ? (double)agree / (double)items : 0.0, "kl_divergence", items ? kl / (double)items : 0.0,
			     "max_abs_error", max_abs, "accuracy_float", items ? (double)right_a / (double)items : 0.0,
			     "accuracy_int8", items ? (double)right_b / (double)items : 0.0);
	if (!*figures)
		rc = nomem(err);
out:
	free(sa);
	free(sb);
	ds_loader_free(l);
	ds_dataset_free(d);
	ds_plan_free(pa);
	ds_plan_free(pb);
	ds_graph_free(ga);
	ds_graph_free(gb);
	return rc;
}
