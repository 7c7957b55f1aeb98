/* norm.c - batch norm and layer norm on the CPU.
 *
 * Statistics take two passes (mean, then squared deviations) with float
 * vector partial sums gathered in double: one pass of sum and sum of
 * squares loses the variance of large activations to cancellation.  Every
 * channel or row is reduced by one thread in a fixed order, so results do
 * not depend on the thread count.
 */
#include "config.h"
#include "cpu/elementwise.h"

#include <math.h>
#include <string.h>

static inline float plane_sum(const float *p, int64_t hw)
{
	float s = 0.0f;

#pragma omp simd reduction(+ : s)
	for (int64_t j = 0; j < hw; j++)
		s += p[j];
	return s;
}

static inline float plane_sqdev(const float *p, int64_t hw, float mean)
{
	float s = 0.0f;

#pragma omp simd reduction(+ : s)
	for (int64_t j = 0; j < hw; j++) {
		float d = p[j] - mean;

		s += d * d;
	}
	return s;
}

static inline void plane_affine(const float *p, float *q, int64_t hw, float scale, float shift)
{
#pragma omp simd
	for (int64_t j = 0; j < hw; j++)
		q[j] = p[j] * scale + shift;
}

void ds_cpu_batchnorm_train(const float *x, int64_t n, int64_t c, int64_t hw, const float *gamma,
			    const float *beta, float eps, float momentum, float *running_mean,
			    float *running_var, float *y, float *mean, float *invstd)
{
	int64_t count = n * hw;

#pragma omp parallel for schedule(static) if (n * c * hw >= DS_CPU_PAR_MIN && c > 1)
	for (int64_t ch = 0; ch < c; ch++) {
		double acc = 0, dev = 0;
		float mu, var, inv, scale;

		for (int64_t i = 0; i < n; i++)
			acc += plane_sum(x + (i * c + ch) * hw, hw);
		mu = (float)(acc / (double)count);
		for (int64_t i = 0; i < n; i++)
			dev += plane_sqdev(x + (i * c + ch) * hw, hw, mu);
		var = (float)(dev / (double)count);
		inv = (float)(1.0 / sqrt((double)var + (double)eps));
		scale = gamma[ch] * inv;
		for (int64_t i = 0; i < n; i++)
			plane_affine(x + (i * c + ch) * hw, y + (i * c + ch) * hw, hw, scale,
				     beta[ch] - mu * scale);
		running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * mu;
		if (count > 1)
			running_var[ch] = (1.0f - momentum) * running_var[ch] +
					  momentum * (float)(dev / (double)(count - 1));
		if (mean)
			mean[ch] = mu;
		if (invstd)
			invstd[ch] = inv;
	}
}

void ds_cpu_batchnorm_infer(const float *x, int64_t n, int64_t c, int64_t hw, const float *gamma,
			    const float *beta, float eps, const float *running_mean,
			    const float *running_var, float *y, float *mean, float *invstd)
{
	for (int64_t ch = 0; ch < c; ch++) {
		float inv = (float)(1.0 / sqrt((double)running_var[ch] + (double)eps));

		if (mean)
			mean[ch] = running_mean[ch];
		if (invstd)
			invstd[ch] = inv;
	}
#pragma omp parallel for schedule(static) if (n * c * hw >= DS_CPU_PAR_MIN && n * c > 1)
	for (int64_t p = 0; p < n * c; p++) {
		int64_t ch = p % c;
		float inv = (float)(1.0 / sqrt((double)running_var[ch] + (double)eps));
		float scale = gamma[ch] * inv;

		plane_affine(x + p * hw, y + p * hw, hw, scale, beta[ch] - running_mean[ch] * scale);
	}
}

void ds_cpu_batchnorm_backward(const float *x, const float *dy, int64_t n, int64_t c, int64_t hw,
			       const float *gamma, const float *mean, const float *invstd, int training,
			       float *dx, float *dgamma, float *dbeta)
{
	int64_t count = n * hw;

#pragma omp parallel for schedule(static) if (n * c * hw >= DS_CPU_PAR_MIN && c > 1)
	for (int64_t ch = 0; ch < c; ch++) {
		double sdy = 0, sdyx = 0;
		float mu = mean[ch], inv = invstd[ch];
		float a, b, k;

		for (int64_t i = 0; i < n; i++) {
			const float *xp = x + (i * c + ch) * hw, *gp = dy + (i * c + ch) * hw;
			float s1 = 0.0f, s2 = 0.0f;

#pragma omp simd reduction(+ : s1, s2)
			for (int64_t j = 0; j < hw; j++) {
				s1 += gp[j];
				s2 += gp[j] * (xp[j] - mu);
			}
			sdy += s1;
			sdyx += s2;
		}
		sdyx *= inv;   /* sum of dy * xhat */
		if (dgamma)
			dgamma[ch] += (float)sdyx;
		if (dbeta)
			dbeta[ch] += (float)sdy;
		if (!dx)
			continue;
		/* dx = gamma * inv * (dy - mean(dy) - xhat * mean(dy * xhat)),
		 * the means absent at inference, where the statistics are
		 * constants; written as dx += k * dy + a * x + b. */
		k = gamma[ch] * inv;
		if (training) {
			a = -k * (float)(sdyx / (double)count) * inv;
			b = -k * (float)(sdy / (double)count) - a * mu;
		} else {
			a = 0.0f;
			b = 0.0f;
		}
		for (int64_t i = 0; i < n; i++) {
			const float *xp = x + (i * c + ch) * hw, *gp = dy + (i * c + ch) * hw;
			float *dp = dx + (i * c + ch) * hw;

#pragma omp simd
			for (int64_t j = 0; j < hw; j++)
				dp[j] += k * gp[j] + a * xp[j] + b;
		}
	}
}

void ds_cpu_layernorm_forward(const float *x, int64_t rows, int64_t d, const float *gamma,
			      const float *beta, float eps, float *y, float *mean, float *invstd)
{
#pragma omp parallel for schedule(static) if (rows * d >= DS_CPU_PAR_MIN && rows > 1)
	for (int64_t r = 0; r < rows; r++) {
		const float *xr = x + r * d;
		float *yr = y + r * d;
		float mu = (float)((double)plane_sum(xr, d) / (double)d);
		float var = (float)((double)plane_sqdev(xr, d, mu) / (double)d);
		float inv = (float)(1.0 / sqrt((double)var + (double)eps));

#pragma omp simd
		for (int64_t j = 0; j < d; j++) {
			float v = (xr[j] - mu) * inv;

			if (gamma)
				v *= gamma[j];
			if (beta)
				v += beta[j];
			yr[j] = v;
		}
		if (mean)
			mean[r] = mu;
		if (invstd)
			invstd[r] = inv;
	}
}

/* Rows for dx (each row's two means), then column blocks for dgamma and
 * dbeta, each summing over the rows in order. */
void ds_cpu_layernorm_backward(const float *x, const float *dy, int64_t rows, int64_t d,
			       const float *gamma, const float *mean, const float *invstd, float *dx,
			       float *dgamma, float *dbeta)
{
	if (dx) {
#pragma omp parallel for schedule(static) if (rows * d >= DS_CPU_PAR_MIN && rows > 1)
		for (int64_t r = 0; r < rows; r++) {
			const float *xr = x + r * d, *gr = dy + r * d;
			float *dr = dx + r * d;
			float mu = mean[r], inv = invstd[r];
			float s1 = 0.0f, s2 = 0.0f, m1, m2;

#pragma omp simd reduction(+ : s1, s2)
			for (int64_t j = 0; j < d; j++) {
				float g = gamma ? gr[j] * gamma[j] : gr[j];

				s1 += g;
				s2 += g * (xr[j] - mu) * inv;
			}
			m1 = s1 / (float)d;
			m2 = s2 / (float)d;
#pragma omp simd
			for (int64_t j = 0; j < d; j++) {
				float g = gamma ? gr[j] * gamma[j] : gr[j];
				float xh = (xr[j] - mu) * inv;

				dr[j] += inv * (g - m1 - xh * m2);
			}
		}
	}
	if (dgamma || dbeta) {
		int64_t nblk = (d + 15) / 16;

#pragma omp parallel for schedule(static) if (rows * d >= DS_CPU_PAR_MIN && nblk > 1)
		for (int64_t blk = 0; blk < nblk; blk++) {
			int64_t j0 = blk * 16, j1 = j0 + 16 < d ? j0 + 16 : d;
			float sg[16] = { 0 }, sb[16] = { 0 };

			for (int64_t r = 0; r < rows; r++) {
				const float *xr = x + r * d, *gr = dy + r * d;
				float mu = mean[r], inv = invstd[r];

				if (j1 - j0 == 16) {
#pragma omp simd
					for (int64_t j = 0; j < 16; j++) {
						sg[j] += gr[j0 + j] * (xr[j0 + j] - mu) * inv;
						sb[j] += gr[j0 + j];
					}
				} else {
					for (int64_t j = j0; j < j1; j++) {
						sg[j - j0] += gr[j] * (xr[j] - mu) * inv;
						sb[j - j0] += gr[j];
					}
				}
			}
			for (int64_t j = j0; j < j1; j++) {
				if (dgamma)
					dgamma[j] += sg[j - j0];
				if (dbeta)
					dbeta[j] += sb[j - j0];
			}
		}
	}
}
