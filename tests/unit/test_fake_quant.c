/* test_fake_quant.c - the fake_quant op of quantization-aware training: its
 * forward rounds to the grid ds-quantize's INT8 kernels compute on (U8
 * activations over a learned range, I8 weights per output channel), the
 * range follows the batches while training and stays put at inference, and
 * backward is the straight-through estimator.  The rounded function is
 * piecewise constant, so finite differences check it where they apply:
 * with a step wide against the grid (slope 1 inside the range), and outside
 * the range (slope 0). */
#include "config.h"

#include "gradcheck.h"
#include "cpu/quant.h"

static const int64_t x_shape[] = { 4, 3, 5, 5, -1 };
static const int64_t range_shape[] = { 2, -1 };
static const int64_t *const act_shapes[] = { x_shape, range_shape };
static const int64_t w_shape[] = { 6, 3, 3, 3, -1 };
static const int64_t *const w_shapes[] = { w_shape };
static const ds_dtype f32s[] = { DS_F32, DS_F32 };

static float *fd(ds_tensor *t)
{
	return t->data;
}

static void set_range(struct gc_case *c, float lo, float hi)
{
	fd(c->in[1])[0] = lo;
	fd(c->in[1])[1] = hi;
}

/* Every input at least 0.2 outside [-0.1, 0.1]: all of it clips. */
static void outside(struct gc_case *c)
{
	float *x = fd(c->in[0]);

	for (int64_t k = 0; k < ds_tensor_numel(c->in[0]); k++)
		x[k] = x[k] < 0 ? x[k] - 0.3f : x[k] + 0.3f;
	set_range(c, -0.1f, 0.1f);
}

static void test_weights(void)
{
	struct gc_case c;
	ds_error err = { 0 };
	int exact = 1, on_grid = 1, within = 1, identity = 1;

	if (gc_setup(&c, "fake_quant", NULL, w_shapes, f32s, 1, 0, 1) != 0) {
		ok(0, "fake_quant weights: set-up");
		return;
	}
	ok(gc_forward(&c, &err) == 0, "fake_quant weights: forward");
	for (int64_t o = 0; o < 6; o++) {
		const float *w = fd(c.in[0]) + o * 27, *y = fd(c.out[0]) + o * 27;
		float amax = 0, s;

		for (int k = 0; k < 27; k++)
			amax = fmaxf(amax, fabsf(w[k]));
		s = amax / 127.0f;
		for (int k = 0; k < 27; k++) {
			long q = lrintf(w[k] / s);
			float code = y[k] / s;

			exact &= y[k] == (float)q * s;
			on_grid &= fabsf(code - roundf(code)) < 1e-3f && fabsf(code) <= 127.001f;
			within &= fabsf(y[k] - w[k]) <= s / 2 * 1.0001f;
		}
	}
	ok(exact, "fake_quant weights: q * s with s = amax / 127 per output channel, as ds-quantize rounds");
	ok(on_grid, "fake_quant weights: every value on the I8 grid [-127, 127]");
	ok(within, "fake_quant weights: within half a step of the weight");
	memset(fd(c.grad_in[0]), 0, ds_tensor_nbytes(c.grad_in[0]));
	ok(gc_backward(&c, &err) == 0, "fake_quant weights: backward");
	for (int64_t k = 0; k < ds_tensor_numel(c.in[0]); k++)
		identity &= fd(c.grad_in[0])[k] == fd(c.grad_out[0])[k];
	ok(identity, "fake_quant weights: the gradient passes straight through");
	gc_free(&c);
}

static void test_activations(void)
{
	struct gc_case c;
	ds_error err = { 0 };
	float lo = INFINITY, hi = -INFINITY, s, blo = INFINITY, bhi = -INFINITY, want_lo, want_hi;
	int32_t zp;
	int64_t n;
	uint8_t *codes;
	float *back;
	int same = 1, mask = 1, inside = 0, clipped = 0;

	if (gc_setup(&c, "fake_quant", "{\"momentum\":0.25}", act_shapes, f32s, 2, 0, 1) != 0) {
		ok(0, "fake_quant activations: set-up");
		return;
	}
	n = ds_tensor_numel(c.in[0]);
	ok(c.grad_in[1] == NULL, "fake_quant: the range takes no gradient");
	/* The first training batch sets an unset range to its min and max. */
	set_range(&c, 0, 0);
	for (int64_t k = 0; k < n; k++) {
		lo = fminf(lo, fd(c.in[0])[k]);
		hi = fmaxf(hi, fd(c.in[0])[k]);
	}
	ok(gc_forward(&c, &err) == 0, "fake_quant activations: forward");
	ok(fd(c.in[1])[0] == lo && fd(c.in[1])[1] == hi, "the first batch sets the range to its min and max");
	/* The output is what quantize then dequantize give on that grid. */
	ds_qparams_choose(lo, hi, &s, &zp);
	codes = malloc((size_t)n);
	back = malloc((size_t)n * sizeof *back);
	ds_quantize_f32(n, fd(c.in[0]), s, zp, codes);
	ds_dequantize_u8(n, codes, s, zp, back);
	for (int64_t k = 0; k < n; k++)
		same &= back[k] == fd(c.out[0])[k];
	ok(same, "fake_quant output equals dequantize(quantize(x)) bit for bit");
	/* Later batches move it by momentum. */
	for (int64_t k = 0; k < n; k++) {
		fd(c.in[0])[k] *= 2.0f;
		blo = fminf(blo, fd(c.in[0])[k]);
		bhi = fmaxf(bhi, fd(c.in[0])[k]);
	}
	want_lo = lo + 0.25f * (blo - lo);
	want_hi = hi + 0.25f * (bhi - hi);
	gc_forward(&c, &err);
	ok(fabsf(fd(c.in[1])[0] - want_lo) < 1e-6f && fabsf(fd(c.in[1])[1] - want_hi) < 1e-6f,
	   "a later batch moves the range by momentum (%g, %g)", fd(c.in[1])[0], fd(c.in[1])[1]);
	/* At inference the range stays. */
	c.training = 0;
	set_range(&c, -0.5f, 0.5f);
	gc_forward(&c, &err);
	ok(fd(c.in[1])[0] == -0.5f && fd(c.in[1])[1] == 0.5f, "inference leaves the range as it is");
	/* Straight through inside the grid, zero where it clips. */
	memset(fd(c.grad_in[0]), 0, ds_tensor_nbytes(c.grad_in[0]));
	ok(gc_backward(&c, &err) == 0, "fake_quant activations: backward");
	for (int64_t k = 0; k < n; k++) {
		float x = fd(c.in[0])[k], g = fd(c.grad_in[0])[k];

		if (fabsf(x) < 0.49f) {
			mask &= g == fd(c.grad_out[0])[k];
			inside++;
		} else if (fabsf(x) > 0.51f) {
			mask &= g == 0.0f;
			clipped++;
		}
	}
	ok(mask && inside > 10 && clipped > 10, "the gradient passes inside the range (%d) and stops outside (%d)", inside,
	   clipped);
	/* Finite differences with a step wide against the grid: slope 1 inside. */
	{
		double worst = 0;
		const float h = 0.1f;
		int checked = 0;

		for (int64_t k = 0; k < n; k++) {
			float *x = fd(c.in[0]) + k, keep = *x, up, down;

			if (fabsf(keep) > 0.5f - h - 0.02f)
				continue;
			*x = keep + h;
			gc_forward(&c, &err);
			up = fd(c.out[0])[k];
			*x = keep - h;
			gc_forward(&c, &err);
			down = fd(c.out[0])[k];
			*x = keep;
			worst = fmax(worst, fabs((up - down) / (2.0 * h) - 1.0));
			checked++;
		}
		/* One step of the grid over the width 2h at most. */
		ok(checked > 10 && worst <= (1.0 / 255.0) / (2.0 * h) * 1.01 + 1e-6,
		   "finite differences give slope 1 inside the range within a grid step (worst %.3g over %d)", worst,
		   checked);
	}
	free(codes);
	free(back);
	gc_free(&c);
}

int main(void)
{
	test_weights();
	test_activations();
	/* Clipped everywhere: the function is flat and the gradient zero. */
	gc_check_prep("fake_quant", NULL, act_shapes, f32s, 2, 0, 0, 1e-6, outside);
	return done_testing();
}
