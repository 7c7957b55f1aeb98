/* softmax.c - softmax and cross-entropy on the CPU.
 *
 * Both subtract the row's maximum before exp, so large logits do not
 * overflow.  Sums of exponentials are gathered in double.
 */
#include "config.h"
#include "cpu/elementwise.h"

#include <math.h>

/* One lane: k values step apart. */
static void softmax_lane(const float *x, float *y, int64_t k, int64_t step)
{
	float m = x[0];
	double s = 0;
	float inv;

	for (int64_t j = 1; j < k; j++)
		m = fmaxf(m, x[j * step]);
	for (int64_t j = 0; j < k; j++) {
		float e = expf(x[j * step] - m);

		y[j * step] = e;
		s += e;
	}
	inv = (float)(1.0 / s);
	for (int64_t j = 0; j < k; j++)
		y[j * step] *= inv;
}

void ds_cpu_softmax_forward(const float *x, int64_t outer, int64_t k, int64_t inner, float *y)
{
	int64_t lanes = outer * inner;

#pragma omp parallel for schedule(static) if (lanes * k >= DS_CPU_PAR_MIN / 4 && lanes > 1)
	for (int64_t l = 0; l < lanes; l++) {
		int64_t o = l / inner, i = l % inner;

		softmax_lane(x + o * k * inner + i, y + o * k * inner + i, k, inner);
	}
}

/* dx = y * (dy - sum(dy * y)) */
void ds_cpu_softmax_backward(const float *y, const float *dy, int64_t outer, int64_t k, int64_t inner,
			     float *dx)
{
	int64_t lanes = outer * inner;

#pragma omp parallel for schedule(static) if (lanes * k >= DS_CPU_PAR_MIN && lanes > 1)
	for (int64_t l = 0; l < lanes; l++) {
		int64_t o = l / inner, i = l % inner, base = o * k * inner + i;
		const float *yl = y + base, *gl = dy + base;
		float *dl = dx + base;
		double dot = 0;
		float fd;

		for (int64_t j = 0; j < k; j++)
			dot += (double)gl[j * inner] * yl[j * inner];
		fd = (float)dot;
		for (int64_t j = 0; j < k; j++)
			dl[j * inner] += yl[j * inner] * (gl[j * inner] - fd);
	}
}

static inline int64_t label_at(const void *labels, int labels64, int64_t i)
{
	return labels64 ? ((const int64_t *)labels)[i] : ((const int32_t *)labels)[i];
}

int64_t ds_cpu_labels_check(const void *labels, int labels64, int64_t n, int64_t k)
{
	for (int64_t i = 0; i < n; i++) {
		int64_t y = label_at(labels, labels64, i);

		if (y < 0 || y >= k)
			return i;
	}
	return -1;
}

/* loss of a row = lse - (1 - s) * x[label] - s/k * sum(x), which is
 * (1 - s) * -log p[label] + s/k * sum over classes of -log p. */
static double ce_row(const float *x, int64_t y, int64_t k, float smoothing, float *probs)
{
	float m = x[0];
	double s = 0, sx = 0, lse;

	for (int64_t j = 1; j < k; j++)
		m = fmaxf(m, x[j]);
	for (int64_t j = 0; j < k; j++) {
		s += expf(x[j] - m);
		sx += x[j];
	}
	lse = (double)m + log(s);
	if (probs)
		for (int64_t j = 0; j < k; j++)
			probs[j] = (float)exp((double)x[j] - lse);
	return lse - (1.0 - smoothing) * (double)x[y] - (double)smoothing / (double)k * sx;
}

double ds_cpu_cross_entropy_forward(const float *logits, const void *labels, int labels64, int64_t n,
				    int64_t k, float smoothing, float *probs, double *row_loss)
{
	double total = 0;

	if (!row_loss || n * k < DS_CPU_PAR_MIN / 4) {
		for (int64_t i = 0; i < n; i++)
			total += ce_row(logits + i * k, label_at(labels, labels64, i), k, smoothing,
					probs ? probs + i * k : NULL);
		return n ? total / (double)n : 0.0;
	}
#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < n; i++)
		row_loss[i] = ce_row(logits + i * k, label_at(labels, labels64, i), k, smoothing,
				     probs ? probs + i * k : NULL);
	for (int64_t i = 0; i < n; i++)
		total += row_loss[i];
	return n ? total / (double)n : 0.0;
}

void ds_cpu_cross_entropy_backward(const float *probs, const void *labels, int labels64, int64_t n,
				   int64_t k, float smoothing, float scale, float *dlogits)
{
	float g = n ? scale / (float)n : 0.0f;
	float off = smoothing / (float)k, on = 1.0f - smoothing;

#pragma omp parallel for schedule(static) if (n * k >= DS_CPU_PAR_MIN)
	for (int64_t i = 0; i < n; i++) {
		const float *p = probs + i * k;
		float *d = dlogits + i * k;
		int64_t y = label_at(labels, labels64, i);

#pragma omp simd
		for (int64_t j = 0; j < k; j++)
			d[j] += g * (p[j] - off);
		d[y] -= g * on;
	}
}

/* Knowledge distillation, one row: softened distributions q = softmax(x/T)
 * of student and teacher into qs and qt, and KL(qt || qs) in double. */
static double kd_row(const float *s, const float *t, int64_t k, float temperature, float *qs, float *qt)
{
	double ls = 0, lt = 0, kl = 0, ms = s[0] / temperature, mt = t[0] / temperature;

	for (int64_t j = 1; j < k; j++) {
		ms = fmax(ms, s[j] / temperature);
		mt = fmax(mt, t[j] / temperature);
	}
	for (int64_t j = 0; j < k; j++) {
		ls += exp(s[j] / temperature - ms);
		lt += exp(t[j] / temperature - mt);
	}
	ls = ms + log(ls);
	lt = mt + log(lt);
	for (int64_t j = 0; j < k; j++) {
		double log_qs = s[j] / temperature - ls, log_qt = t[j] / temperature - lt, p = exp(log_qt);

		qs[j] = (float)exp(log_qs);
		qt[j] = (float)p;
		kl += p * (log_qt - log_qs);
	}
	return kl;
}

double ds_cpu_distill_forward(const float *student, const float *teacher, int64_t n, int64_t k,
			      float temperature, float *qs, float *qt, double *row_loss)
{
	double total = 0;

#pragma omp parallel for schedule(static) if (n * k >= DS_CPU_PAR_MIN / 4)
	for (int64_t i = 0; i < n; i++)
		row_loss[i] = kd_row(student + i * k, teacher + i * k, k, temperature, qs + i * k, qt + i * k);
	/* Summed in row order whatever the threads: the loss is reproducible. */
	for (int64_t i = 0; i < n; i++)
		total += row_loss[i];
	return n ? (double)temperature * temperature * total / (double)n : 0.0;
}

void ds_cpu_distill_backward(const float *qs, const float *qt, int64_t n, int64_t k, float temperature,
			     float scale, float *dstudent)
{
	/* d/ds of T^2 KL(qt || softmax(s/T)) is T (qs - qt), per row; the
	 * loss is the mean over rows. */
	float g = n ? scale * temperature / (float)n : 0.0f;

#pragma omp parallel for schedule(static) if (n * k >= DS_CPU_PAR_MIN)
	for (int64_t i = 0; i < n * k; i++)
		dstudent[i] += g * (qs[i] - qt[i]);
}
