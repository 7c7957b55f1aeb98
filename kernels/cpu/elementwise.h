/* elementwise.h - CPU kernels of the ops that are not convolutions, linear
 * layers or pools: activations, dropout, broadcasting add and mul, concat,
 * embeddings (elementwise.c), batchnorm and layernorm (norm.c), softmax and
 * cross-entropy (softmax.c).
 *
 * Kernels work on plain contiguous row-major float arrays and know nothing
 * of tensors, graphs or errors; lib/ops/ reads attributes, checks data and
 * reports.  Forward kernels overwrite their output; backward kernels ADD
 * into every gradient they are given and skip NULL ones.  Results do not
 * depend on the thread count: every sum is taken in a fixed order.
 */
#ifndef DS_KERNELS_CPU_ELEMENTWISE_H
#define DS_KERNELS_CPU_ELEMENTWISE_H

#include <stddef.h>
#include <stdint.h>

/* Below this many elements a loop runs on one thread: starting an OpenMP
 * team costs more than the work. */
#define DS_CPU_PAR_MIN 32768

/* ------------------------------------------------------------ activations */

typedef enum ds_cpu_act {
	DS_CPU_RELU,
	DS_CPU_RELU6,
	DS_CPU_LEAKY_RELU,   /* alpha: the slope below 0 */
	DS_CPU_GELU,         /* exact, with erf */
	DS_CPU_GELU_TANH,    /* PyTorch's approximate="tanh" */
	DS_CPU_SIGMOID,
	DS_CPU_TANH,
	DS_CPU_SILU,
	DS_CPU_HARDSWISH
} ds_cpu_act;

/* Whether backward reads the activation's output (1) or its input (0). */
int ds_cpu_act_uses_output(ds_cpu_act act);
/* y = f(x); y may be x. */
void ds_cpu_act_forward(ds_cpu_act act, float alpha, const float *x, float *y, int64_t n);
/* dx += dy * f'(.), where t is y or x as ds_cpu_act_uses_output says. */
void ds_cpu_act_backward(ds_cpu_act act, float alpha, const float *t, const float *dy, float *dx,
			 int64_t n);

/* Dropout keeps element i with probability 1 - p and scales it by 1/(1-p).
 * The mask is a hash of (seed, i), so backward regenerates it. */
void ds_cpu_dropout_forward(const float *x, float *y, int64_t n, float p, uint64_t seed);
void ds_cpu_dropout_backward(const float *dy, float *dx, int64_t n, float p, uint64_t seed);
/* 1 when element i is kept (for tests). */
int ds_cpu_dropout_keep(uint64_t seed, int64_t i, float p);

/* ------------------------------------------------------------ broadcasting */

#define DS_CPU_BCAST_DIMS 8

/* Two shapes aligned from the right, adjacent dims merged where both
 * operands step through them alike; stride 0 marks a broadcast dim. */
typedef struct ds_cpu_bcast {
	int nd;
	int64_t dim[DS_CPU_BCAST_DIMS];
	int64_t stride[2][DS_CPU_BCAST_DIMS];   /* elements, for a and b */
	int64_t numel;                          /* of the output */
	int64_t numel_in[2];
} ds_cpu_bcast;

/* -1 when the shapes do not broadcast. */
int ds_cpu_bcast_init(ds_cpu_bcast *bc, int nda, const int64_t *da, int ndb, const int64_t *db);
/* y = a + b or a * b (op 0 add, 1 mul). */
void ds_cpu_bcast_forward(const ds_cpu_bcast *bc, int op, const float *a, const float *b, float *y);
/* d(operand which) += sum over its broadcast dims of dy (times the other
 * operand, other != NULL, for mul). */
void ds_cpu_bcast_backward(const ds_cpu_bcast *bc, int which, const float *dy, const float *other,
			   float *dt);

/* ---------------------------------------------------------- copies, concat */

/* dst += src */
void ds_cpu_accumulate(float *dst, const float *src, int64_t n);
/* Rows of bytes: dst[o][dst_off .. + bytes) = src[o][src_off .. + bytes) for
 * outer rows o, each row_dst / row_src bytes long (concat forward). */
void ds_cpu_copy_rows(void *dst, int64_t row_dst, int64_t dst_off, const void *src, int64_t row_src,
		      int64_t src_off, int64_t bytes, int64_t outer);
/* The same, adding floats (concat backward); counts in elements. */
void ds_cpu_add_rows(float *dst, int64_t row_dst, int64_t dst_off, const float *src, int64_t row_src,
		     int64_t src_off, int64_t len, int64_t outer);

/* ------------------------------------------------------------- embeddings */

/* Ids are int32 (ids64 0) or int64 (ids64 1); a negative id is padding:
 * its row is zeros and it takes no gradient. */
int64_t ds_cpu_id_at(const void *ids, int ids64, int64_t i);
/* Index of the first id >= vocab, or -1. */
int64_t ds_cpu_ids_check(const void *ids, int ids64, int64_t n, int64_t vocab);
/* out[i] = table[ids[i]], rows of dim floats. */
void ds_cpu_embedding_forward(const void *ids, int ids64, int64_t n, const float *table, int64_t dim,
			      float *out);
void ds_cpu_embedding_backward(const void *ids, int ids64, int64_t n, const float *dy, int64_t dim,
			       float *dtable);
/* out[b] = sum (mean: average) of table rows of the ids of bag b (len ids
 * each); a bag of padding only is zeros. */
void ds_cpu_embedding_bag_forward(const void *ids, int ids64, int64_t bags, int64_t len,
				  const float *table, int64_t dim, int mean, float *out);
void ds_cpu_embedding_bag_backward(const void *ids, int ids64, int64_t bags, int64_t len,
				   const float *dy, int64_t dim, int mean, float *dtable);

/* ------------------------------------------------------------ norm.c */

/* Batch norm over x [n, c, hw].  Training normalises with the batch's mean
 * and biased variance and moves the running statistics toward the batch's
 * mean and unbiased variance by momentum (not when the batch has a single
 * value per channel, whose unbiased variance does not exist).  mean and
 * invstd [c] (may be NULL) receive what backward needs. */
void ds_cpu_batchnorm_train(const float *x, int64_t n, int64_t c, int64_t hw, const float *gamma,
			    const float *beta, float eps, float momentum, float *running_mean,
			    float *running_var, float *y, float *mean, float *invstd);
/* Inference: the running statistics; mean and invstd as above. */
void ds_cpu_batchnorm_infer(const float *x, int64_t n, int64_t c, int64_t hw, const float *gamma,
			    const float *beta, float eps, const float *running_mean,
			    const float *running_var, float *y, float *mean, float *invstd);
/* training: the statistics were the batch's (they depend on x). */
void ds_cpu_batchnorm_backward(const float *x, const float *dy, int64_t n, int64_t c, int64_t hw,
			       const float *gamma, const float *mean, const float *invstd, int training,
			       float *dx, float *dgamma, float *dbeta);

/* Layer norm of rows of d values; gamma, beta may be NULL; mean, invstd
 * [rows] may be NULL. */
void ds_cpu_layernorm_forward(const float *x, int64_t rows, int64_t d, const float *gamma,
			      const float *beta, float eps, float *y, float *mean, float *invstd);
void ds_cpu_layernorm_backward(const float *x, const float *dy, int64_t rows, int64_t d,
			       const float *gamma, const float *mean, const float *invstd, float *dx,
			       float *dgamma, float *dbeta);

/* ---------------------------------------------------------- softmax.c */

/* Softmax over the middle dim of x [outer, k, inner]. */
void ds_cpu_softmax_forward(const float *x, int64_t outer, int64_t k, int64_t inner, float *y);
void ds_cpu_softmax_backward(const float *y, const float *dy, int64_t outer, int64_t k, int64_t inner,
			     float *dx);

/* Index of the first label outside [0, k), or -1. */
int64_t ds_cpu_labels_check(const void *labels, int labels64, int64_t n, int64_t k);
/* Mean over n rows of cross-entropy with label smoothing s (PyTorch's: the
 * target is (1-s) on the label plus s/k everywhere).  probs [n, k] (may be
 * NULL) receives the softmax; row_loss [n] (may be NULL) is scratch that
 * lets rows run in parallel with a sum in a fixed order. */
double ds_cpu_cross_entropy_forward(const float *logits, const void *labels, int labels64, int64_t n,
				    int64_t k, float smoothing, float *probs, double *row_loss);
/* dlogits += scale * (probs - target) / n */
void ds_cpu_cross_entropy_backward(const float *probs, const void *labels, int labels64, int64_t n,
				   int64_t k, float smoothing, float scale, float *dlogits);

/* Knowledge distillation: T^2 * mean over rows of KL(softmax(teacher/T) ||
 * softmax(student/T)).  qs and qt (n * k floats each) keep the softened
 * distributions for backward; row_loss holds n doubles of scratch. */
double ds_cpu_distill_forward(const float *student, const float *teacher, int64_t n, int64_t k,
			      float temperature, float *qs, float *qt, double *row_loss);
/* dstudent += scale * T * (qs - qt) / n */
void ds_cpu_distill_backward(const float *qs, const float *qt, int64_t n, int64_t k, float temperature,
			     float scale, float *dstudent);

#endif
