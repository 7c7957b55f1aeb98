/* test_grad_compute.c - conv2d, linear and pooling: gradients against finite
 * differences, the convolution kernels against the seven-loop reference,
 * backward accumulating into its gradients, and a timing diag for the
 * reference CNN's convolutions (not an assertion). */
#include "config.h"

#include <cblas.h>
#include <time.h>

#include "cpu/conv.h"
#include "gradcheck.h"

#define TOL 1e-2

static const ds_dtype F[GC_MAX_IN] = { DS_F32, DS_F32, DS_F32, DS_F32 };

static void conv(const char *attrs, const int64_t *x, const int64_t *w, const int64_t *b)
{
	const int64_t *shapes[3] = { x, w, b };

	gc_check("conv2d", attrs, shapes, F, b ? 3 : 2, 0, 1, TOL);
}

static void conv_grads(void)
{
	conv("{}", (int64_t[]){ 1, 2, 5, 5, -1 }, (int64_t[]){ 3, 2, 3, 3, -1 }, (int64_t[]){ 3, -1 });
	conv("{\"stride\": 2}", (int64_t[]){ 3, 2, 7, 5, -1 }, (int64_t[]){ 4, 2, 3, 3, -1 },
	     (int64_t[]){ 4, -1 });
	conv("{\"padding\": 1}", (int64_t[]){ 1, 3, 7, 5, -1 }, (int64_t[]){ 2, 3, 3, 3, -1 }, NULL);
	conv("{\"stride\": 2, \"padding\": 2}", (int64_t[]){ 3, 2, 7, 5, -1 },
	     (int64_t[]){ 3, 2, 3, 3, -1 }, (int64_t[]){ 3, -1 });
	conv("{\"dilation\": 2, \"padding\": 2}", (int64_t[]){ 1, 2, 7, 7, -1 },
	     (int64_t[]){ 2, 2, 3, 3, -1 }, (int64_t[]){ 2, -1 });
	conv("{\"groups\": 2, \"padding\": 1}", (int64_t[]){ 3, 4, 7, 5, -1 },
	     (int64_t[]){ 6, 2, 3, 3, -1 }, (int64_t[]){ 6, -1 });
	conv("{\"stride\": [2, 1], \"padding\": [1, 0]}", (int64_t[]){ 1, 3, 7, 5, -1 },
	     (int64_t[]){ 2, 3, 2, 3, -1 }, (int64_t[]){ 2, -1 });
	/* depthwise: groups == channels, with and without a channel multiplier */
	conv("{\"groups\": 4, \"padding\": 1}", (int64_t[]){ 3, 4, 7, 5, -1 },
	     (int64_t[]){ 4, 1, 3, 3, -1 }, (int64_t[]){ 4, -1 });
	conv("{\"groups\": 4, \"padding\": 1, \"stride\": 2}", (int64_t[]){ 1, 4, 7, 5, -1 },
	     (int64_t[]){ 4, 1, 3, 3, -1 }, NULL);
	conv("{\"groups\": 3, \"padding\": 1}", (int64_t[]){ 3, 3, 6, 6, -1 },
	     (int64_t[]){ 6, 1, 3, 3, -1 }, (int64_t[]){ 6, -1 });
	conv("{\"groups\": 2, \"padding\": 2, \"stride\": 2, \"dilation\": 2}",
	     (int64_t[]){ 3, 2, 9, 7, -1 }, (int64_t[]){ 2, 1, 3, 3, -1 }, (int64_t[]){ 2, -1 });
	conv("{\"groups\": 3, \"padding\": 2}", (int64_t[]){ 1, 3, 7, 5, -1 },
	     (int64_t[]){ 3, 1, 5, 5, -1 }, NULL);
	/* pointwise */
	conv("{}", (int64_t[]){ 3, 4, 5, 5, -1 }, (int64_t[]){ 6, 4, 1, 1, -1 }, (int64_t[]){ 6, -1 });
	conv("{}", (int64_t[]){ 1, 4, 7, 5, -1 }, (int64_t[]){ 3, 4, 1, 1, -1 }, NULL);
	conv("{\"stride\": 2}", (int64_t[]){ 3, 4, 7, 5, -1 }, (int64_t[]){ 3, 4, 1, 1, -1 },
	     (int64_t[]){ 3, -1 });
}

static void linear(const int64_t *x, const int64_t *w, const int64_t *b)
{
	const int64_t *shapes[3] = { x, w, b };

	gc_check("linear", "{}", shapes, F, b ? 3 : 2, 0, 1, TOL);
}

static void linear_grads(void)
{
	linear((int64_t[]){ 4, 5, -1 }, (int64_t[]){ 3, 5, -1 }, (int64_t[]){ 3, -1 });
	linear((int64_t[]){ 4, 5, -1 }, (int64_t[]){ 3, 5, -1 }, NULL);
	linear((int64_t[]){ 2, 3, 5, -1 }, (int64_t[]){ 4, 5, -1 }, (int64_t[]){ 4, -1 });
	linear((int64_t[]){ 2, 3, 5, -1 }, (int64_t[]){ 4, 5, -1 }, NULL);
	linear((int64_t[]){ 5, -1 }, (int64_t[]){ 3, 5, -1 }, (int64_t[]){ 3, -1 });
}

/* gc_check with input 0 refilled by a shuffle of values 0.05 apart, so that
 * no step of the finite difference moves a max-pool window's maximum. */
static void check_untied(const char *op, const char *attrs, const int64_t *x)
{
	const int64_t *shapes[1] = { x };
	struct gc_case c;
	ds_error err = { 0 };
	double worst = 0, scale = 1e-3;
	float *v, *g;
	int64_t n;
	int fail = 0;

	if (gc_setup(&c, op, attrs, shapes, F, 1, 0, 1) != 0) {
		ok(0, "%s %s: set-up", op, attrs);
		gc_free(&c);
		return;
	}
	v = c.in[0]->data;
	g = c.grad_in[0]->data;
	n = ds_tensor_numel(c.in[0]);
	for (int64_t k = 0; k < n; k++)
		v[k] = (float)(0.05 * (double)(k - n / 2));
	for (int64_t k = n - 1; k > 0; k--) {
		int64_t j = (int64_t)(gc_uniform() * (double)(k + 1));
		float t = v[k];

		v[k] = v[j];
		v[j] = t;
	}
	if (gc_forward(&c, &err) || gc_backward(&c, &err)) {
		ok(0, "%s %s: %s", op, attrs, err.message);
		gc_free(&c);
		return;
	}
	for (int64_t k = 0; k < n; k++)
		scale = fmax(scale, fabs(g[k]));
	for (int64_t k = 0; k < n; k++) {
		float keep = v[k];
		const float h = 1e-2f;
		double up, down, e;

		v[k] = keep + h;
		gc_forward(&c, &err);
		up = gc_loss(&c);
		v[k] = keep - h;
		gc_forward(&c, &err);
		down = gc_loss(&c);
		v[k] = keep;
		e = fabs((up - down) / (2.0 * h) - g[k]) / scale;
		worst = fmax(worst, e);
		if (e > TOL && !fail) {
			diag("%s %s: d/d in0[%lld]: backward %.6g, finite difference %.6g", op, attrs,
			     (long long)k, g[k], (up - down) / (2.0 * h));
			fail = 1;
		}
	}
	ok(!fail, "gradcheck %s %s, untied input (worst relative error %.2g)", op, attrs, worst);
	gc_free(&c);
}

static void pool_grads(void)
{
	const int64_t *shapes[1];

	check_untied("max_pool", "{\"kernel\": 2}", (int64_t[]){ 3, 2, 6, 6, -1 });
	check_untied("max_pool", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1}", (int64_t[]){ 1, 2, 7, 5, -1 });
	check_untied("max_pool", "{\"kernel\": 2, \"ceil_mode\": true}", (int64_t[]){ 3, 2, 7, 5, -1 });
	check_untied("max_pool", "{\"kernel\": 3, \"stride\": 1}", (int64_t[]){ 1, 3, 5, 6, -1 });
	check_untied("max_pool", "{\"kernel\": [2, 3], \"stride\": [2, 1], \"padding\": [1, 1]}",
		     (int64_t[]){ 3, 2, 7, 5, -1 });
	shapes[0] = (int64_t[]){ 3, 2, 7, 5, -1 };
	gc_check("avg_pool", "{\"kernel\": 2}", shapes, F, 1, 0, 1, TOL);
	gc_check("avg_pool", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1}", shapes, F, 1, 0, 1, TOL);
	gc_check("avg_pool", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1, \"count_include_pad\": false}",
		 shapes, F, 1, 0, 1, TOL);
	gc_check("avg_pool", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1, \"ceil_mode\": true}", shapes,
		 F, 1, 0, 1, TOL);
	gc_check("avg_pool",
		 "{\"kernel\": 3, \"stride\": 2, \"padding\": 1, \"ceil_mode\": true, \"count_include_pad\": false}",
		 shapes, F, 1, 0, 1, TOL);
	gc_check("avg_pool", "{\"kernel\": 2, \"ceil_mode\": true}", shapes, F, 1, 0, 1, TOL);
	shapes[0] = (int64_t[]){ 3, 4, 5, 7, -1 };
	gc_check("global_avg_pool", "{}", shapes, F, 1, 0, 1, TOL);
	shapes[0] = (int64_t[]){ 1, 2, 1, 1, -1 };
	gc_check("global_avg_pool", "{}", shapes, F, 1, 0, 1, TOL);
}

/* PyTorch's divisors on a 4x4 plane of ones, kernel 3, stride 2, padding 1,
 * ceil_mode: 3x3 outputs, the last window cut by the end of the padding. */
static void avg_pool_divisors(void)
{
	ds_pool_dims d = { .n = 1, .c = 1, .h = 4, .w = 4, .oh = 3, .ow = 3, .kh = 3, .kw = 3,
			   .sh = 2, .sw = 2, .ph = 1, .pw = 1, .count_include_pad = 1 };
	const float with_pad[9] = { 4 / 9.f, 6 / 9.f, 2 / 6.f, 6 / 9.f, 1, 3 / 6.f, 2 / 6.f, 3 / 6.f, 1 / 4.f };
	float x[16], y[9];
	int good = 1;

	for (int i = 0; i < 16; i++)
		x[i] = 1;
	ds_avg_pool_forward(&d, x, y);
	for (int i = 0; i < 9; i++)
		good &= fabsf(y[i] - with_pad[i]) < 1e-6f;
	ok(good, "avg_pool count_include_pad divisors as PyTorch's (ceil_mode window cut at the padding)");
	d.count_include_pad = 0;
	ds_avg_pool_forward(&d, x, y);
	good = 1;
	for (int i = 0; i < 9; i++)
		good &= fabsf(y[i] - 1) < 1e-6f;
	ok(good, "avg_pool without count_include_pad averages only the input");
}

static int64_t rnd(int64_t lo, int64_t hi)
{
	return lo + (int64_t)(gc_uniform() * (double)(hi - lo + 1));
}

static float *rnd_floats(int64_t n)
{
	float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);

	for (int64_t i = 0; i < n; i++)
		v[i] = (float)(gc_uniform() * 2 - 1);
	return v;
}

/* Relative error of a against b over n values, against b's largest. */
static double rel_err(const float *a, const float *b, int64_t n)
{
	double scale = 1e-6, worst = 0;

	for (int64_t i = 0; i < n; i++)
		scale = fmax(scale, fabs(b[i]));
	for (int64_t i = 0; i < n; i++)
		worst = fmax(worst, fabs((double)a[i] - b[i]));
	return worst / scale;
}

/* Every kernel kind and chunking against the seven loops, on random shapes;
 * backward with one image per chunk against all images in one. */
static void conv_against_reference(void)
{
	double worst_fwd = 0, worst_bwd = 0;
	int kinds[3] = { 0 };

	for (int t = 0; t < 60; t++) {
		ds_conv2d_dims d;
		int64_t groups, cg, og, kind = t % 3;
		float *x, *w, *b, *y, *yref, *ws, *gy, *g1[3], *g2[3];
		int64_t nx, nw, ny;

		do {
			groups = kind == 0 ? 1 : rnd(1, 3);
			cg = kind == 2 ? 1 : rnd(1, 4);
			og = rnd(1, 3);
			d = (ds_conv2d_dims){ .n = rnd(1, 4), .c = groups * cg, .h = rnd(1, 11), .w = rnd(1, 11),
					      .kh = kind == 1 ? 1 : rnd(1, 4), .kw = kind == 1 ? 1 : rnd(1, 4),
					      .sh = rnd(1, 3), .sw = rnd(1, 3), .ph = rnd(0, 2), .pw = rnd(0, 2),
					      .dh = rnd(1, 2), .dw = rnd(1, 2), .groups = groups };
			if (kind == 1 && t % 2)
				d.sh = d.sw = 1, d.ph = d.pw = 0;
			d.o = groups * og;
			d.oh = (d.h + 2 * d.ph - d.dh * (d.kh - 1) - 1) / d.sh + 1;
			d.ow = (d.w + 2 * d.pw - d.dw * (d.kw - 1) - 1) / d.sw + 1;
		} while (d.h + 2 * d.ph < d.dh * (d.kh - 1) + 1 || d.w + 2 * d.pw < d.dw * (d.kw - 1) + 1);
		kinds[ds_conv2d_kind_of(&d)]++;
		nx = d.n * d.c * d.h * d.w;
		nw = d.o * cg * d.kh * d.kw;
		ny = d.n * d.o * d.oh * d.ow;
		x = rnd_floats(nx);
		w = rnd_floats(nw);
		b = t % 4 ? rnd_floats(d.o) : NULL;
		y = calloc((size_t)ny, sizeof *y);
		yref = calloc((size_t)ny, sizeof *yref);
		gy = rnd_floats(ny);
		ws = calloc(ds_conv2d_workspace(&d) + 1, sizeof *ws);
		ds_conv2d_forward_ref(&d, x, w, b, yref);
		ds_conv2d_forward(&d, x, w, b, y, ws);
		worst_fwd = fmax(worst_fwd, rel_err(y, yref, ny));
		/* the im2col path at every chunk size, whatever the kind */
		free(ws);
		ws = calloc(ds_conv2d_workspace_chunk(&d, d.n) + ds_conv2d_workspace(&d), sizeof *ws);
		for (int64_t chunk = 1; chunk <= d.n; chunk++) {
			ds_conv2d_forward_chunked(&d, chunk, x, w, b, y, ws);
			worst_fwd = fmax(worst_fwd, rel_err(y, yref, ny));
		}
		g1[0] = calloc((size_t)nx, sizeof(float));
		g1[1] = calloc((size_t)nw, sizeof(float));
		g1[2] = calloc((size_t)d.o, sizeof(float));
		g2[0] = calloc((size_t)nx, sizeof(float));
		g2[1] = calloc((size_t)nw, sizeof(float));
		g2[2] = calloc((size_t)d.o, sizeof(float));
		ds_conv2d_backward(&d, x, w, gy, g1[0], g1[1], g1[2], ws);
		ds_conv2d_backward_chunked(&d, 1, x, w, gy, g2[0], g2[1], g2[2], ws);
		worst_bwd = fmax(worst_bwd, rel_err(g1[0], g2[0], nx));
		worst_bwd = fmax(worst_bwd, rel_err(g1[1], g2[1], nw));
		worst_bwd = fmax(worst_bwd, rel_err(g1[2], g2[2], d.o));
		for (int i = 0; i < 3; i++) {
			free(g1[i]);
			free(g2[i]);
		}
		free(x);
		free(w);
		free(b);
		free(y);
		free(yref);
		free(gy);
		free(ws);
	}
	ok(worst_fwd < 1e-4, "conv2d forward = seven-loop reference on 60 random shapes (%d im2col, %d pointwise, "
	   "%d depthwise; worst relative error %.2g)", kinds[0], kinds[1], kinds[2], worst_fwd);
	ok(worst_bwd < 1e-4, "conv2d backward: each kernel = im2col one image at a time (worst %.2g)", worst_bwd);
}

/* Backward adds: running it twice doubles every gradient. */
static void accumulates(const char *op, const char *attrs, const int64_t *const *shapes, int n_in)
{
	struct gc_case c;
	ds_error err = { 0 };
	double worst = 0;
	int ran = gc_setup(&c, op, attrs, shapes, F, n_in, 0, 1) == 0 && gc_forward(&c, &err) == 0 &&
		  gc_backward(&c, &err) == 0;

	float *once[GC_MAX_IN] = { NULL };

	for (int i = 0; ran && i < n_in; i++) {
		size_t bytes = (size_t)ds_tensor_numel(c.in[i]) * sizeof(float);

		once[i] = malloc(bytes);
		memcpy(once[i], c.grad_in[i]->data, bytes);
	}
	ran = ran && gc_backward(&c, &err) == 0;
	for (int i = 0; ran && i < n_in; i++)
		for (int64_t k = 0; k < ds_tensor_numel(c.in[i]); k++)
			worst = fmax(worst, fabs(((float *)c.grad_in[i]->data)[k] - 2 * once[i][k]) /
					    fmax(1e-3, fabs(once[i][k])));
	for (int i = 0; i < n_in; i++)
		free(once[i]);
	ok(ran && worst < 1e-5, "%s %s: backward adds into its gradients", op, attrs);
	gc_free(&c);
}

static void accumulation(void)
{
	const int64_t *conv_in[3] = { (int64_t[]){ 2, 4, 6, 5, -1 }, (int64_t[]){ 4, 4, 3, 3, -1 },
				      (int64_t[]){ 4, -1 } };
	const int64_t *dw_in[3] = { (int64_t[]){ 2, 4, 6, 5, -1 }, (int64_t[]){ 4, 1, 3, 3, -1 },
				    (int64_t[]){ 4, -1 } };
	const int64_t *pw_in[3] = { (int64_t[]){ 2, 4, 6, 5, -1 }, (int64_t[]){ 3, 4, 1, 1, -1 },
				    (int64_t[]){ 3, -1 } };
	const int64_t *lin_in[3] = { (int64_t[]){ 3, 5, -1 }, (int64_t[]){ 2, 5, -1 }, (int64_t[]){ 2, -1 } };
	const int64_t *pool_in[1] = { (int64_t[]){ 2, 3, 6, 6, -1 } };

	accumulates("conv2d", "{\"padding\": 1}", conv_in, 3);
	accumulates("conv2d", "{\"padding\": 1, \"groups\": 4}", dw_in, 3);
	accumulates("conv2d", "{}", pw_in, 3);
	accumulates("linear", "{}", lin_in, 3);
	accumulates("max_pool", "{\"kernel\": 2}", pool_in, 1);
	accumulates("avg_pool", "{\"kernel\": 3, \"padding\": 1, \"stride\": 2}", pool_in, 1);
	accumulates("global_avg_pool", "{}", pool_in, 1);
}

static double clock_of(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Forward + backward of one convolution at a chunk size, best of reps:
 * wall time, and the process's CPU time, which other load on the machine
 * disturbs less (with OMP_WAIT_POLICY=passive, waiting costs none). */
static double time_conv(const ds_conv2d_dims *d, int64_t chunk, int need_gx, int reps, double *cpu)
{
	int64_t nx = d->n * d->c * d->h * d->w, nw = d->o * d->c / d->groups * d->kh * d->kw;
	int64_t ny = d->n * d->o * d->oh * d->ow;
	float *x = rnd_floats(nx), *w = rnd_floats(nw), *b = rnd_floats(d->o), *gy = rnd_floats(ny);
	float *y = malloc((size_t)ny * sizeof *y), *gx = calloc((size_t)nx, sizeof *gx);
	float *gw = calloc((size_t)nw, sizeof *gw), *gb = calloc((size_t)d->o, sizeof *gb);
	float *ws = malloc(ds_conv2d_workspace_chunk(d, chunk) * sizeof *ws);
	double best = INFINITY;

	*cpu = INFINITY;
	for (int r = 0; r < reps; r++) {
		double t0 = clock_of(CLOCK_MONOTONIC), c0 = clock_of(CLOCK_PROCESS_CPUTIME_ID);

		ds_conv2d_forward_chunked(d, chunk, x, w, b, y, ws);
		ds_conv2d_backward_chunked(d, chunk, x, w, gy, need_gx ? gx : NULL, gw, gb, ws);
		best = fmin(best, clock_of(CLOCK_MONOTONIC) - t0);
		*cpu = fmin(*cpu, clock_of(CLOCK_PROCESS_CPUTIME_ID) - c0);
	}
	free(x);
	free(w);
	free(b);
	free(gy);
	free(y);
	free(gx);
	free(gw);
	free(gb);
	free(ws);
	return best;
}

/* The reference CNN's two convolutions at batch 64 (the first needs no input
 * gradient: its input is the data).  Export OPENBLAS_CORETYPE=SkylakeX for
 * the AVX-512 GEMMs. */
static void timing(void)
{
	ds_conv2d_dims c1 = { .n = 64, .c = 1, .h = 28, .w = 28, .o = 32, .kh = 3, .kw = 3, .oh = 28, .ow = 28,
			      .sh = 1, .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1 };
	ds_conv2d_dims c2 = { .n = 64, .c = 32, .h = 14, .w = 14, .o = 64, .kh = 3, .kw = 3, .oh = 14, .ow = 14,
			      .sh = 1, .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1 };
	const ds_conv2d_dims *layers[2] = { &c1, &c2 };
	const int64_t chunks[] = { 1, 2, 3, 4, 8, 16 };
	int reps = getenv("DS_TIMING_REPS") ? atoi(getenv("DS_TIMING_REPS")) : 3;

	diag("timing (best of %d; OPENBLAS_CORETYPE=%s, %d threads)", reps,
	     getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)", ds_threads_get());
	for (int l = 0; l < 2; l++) {
		const ds_conv2d_dims *d = layers[l];
		/* forward, weight gradient, and input gradient for the second */
		double flops = 2.0 * d->n * d->o * d->oh * d->ow * d->c * d->kh * d->kw * (l ? 3 : 2);

		for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
			double cpu, t = time_conv(d, chunks[i], l, reps, &cpu);

			diag("conv%d [64,%lld,%lld,%lld] fwd+bwd chunk %2lld%s: %7.2f ms, %6.1f GFLOP/s; "
			     "CPU %7.2f ms, %6.1f GFLOP/s per core", l + 1,
			     (long long)d->c, (long long)d->h, (long long)d->w, (long long)chunks[i],
			     chunks[i] == ds_conv2d_chunk(d) ? " (default)" : "          ", t * 1e3,
			     flops / t * 1e-9, cpu * 1e3, flops / cpu * 1e-9);
		}
	}
}

int main(void)
{
	/* As the programs run it: OpenMP threads, each with a one-thread OpenBLAS. */
	openblas_set_num_threads(1);
	conv_grads();
	linear_grads();
	pool_grads();
	avg_pool_divisors();
	conv_against_reference();
	accumulation();
	timing();
	return done_testing();
}
