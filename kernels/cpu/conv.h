/* conv.h - CPU kernels for convolution, dense layers and pooling.
 *
 * Tensors are contiguous float32: NCHW images, [out, in/groups, kh, kw]
 * filters, row-major matrices.  Forward kernels overwrite their output;
 * backward kernels ADD into each gradient and skip a NULL one.  No kernel
 * allocates: scratch comes from the caller, sized by the _workspace
 * functions for the largest batch the caller will pass.
 */
#ifndef DS_KERNELS_CPU_CONV_H
#define DS_KERNELS_CPU_CONV_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------- gemm */

/* Threads the kernels use: OpenMP's count, at most 64.  Per-thread scratch
 * is sized with it, so a plan must be made after the count is set. */
int ds_kernel_threads(void);

/* The slice of a workspace the calling thread uses, in [0,
 * ds_kernel_threads()).  Inside a caller's parallel region (a plan running
 * items in chunks, one chunk a thread) the kernel's own team has one
 * thread, and the caller's thread number is the one that tells slices
 * apart. */
int ds_kernel_slice(void);

/* In a kernel's parallel region: this thread's number in its team, and
 * the team's size (0 and 1 without OpenMP). */
int ds_team_thread(void);
int ds_team_size(void);

/* C = alpha * op(A) op(B) + beta * C, row-major.  Outside an OpenMP
 * parallel region a large product is split over the OpenMP threads, each
 * calling cblas_sgemm: OpenBLAS is meant to run single-threaded
 * (openblas_set_num_threads(1)) with all threading done by OpenMP, since
 * Debian's pthreads OpenBLAS spins its own threads after each call and
 * steals the cores from OpenMP's.  Empty sizes are handled here (cblas
 * rejects a leading dimension of 0). */
void ds_gemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
		 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
		 int64_t ldc);

/* ----------------------------------------------------------------- linear */

/* y[m, out] = x[m, in] w[out, in]^T + b (b may be NULL). */
void ds_linear_forward(int64_t m, int64_t in, int64_t out, const float *x, const float *w,
		       const float *b, float *y);
/* The same with every output summed in one fixed order, whatever m and
 * the thread count (dense.c): inference's, so that a record does not
 * depend on the batch it came in. */
void ds_linear_forward_fixed(int64_t m, int64_t in, int64_t out, const float *x, const float *w,
			     const float *b, float *y);
/* gx += gy w, gw += gy^T x, gb += column sums of gy; NULL gradients are
 * skipped (x is only read for gw, w only for gx). */
void ds_linear_backward(int64_t m, int64_t in, int64_t out, const float *x, const float *w,
			const float *gy, float *gx, float *gw, float *gb);

/* ----------------------------------------------------------------- conv2d */

typedef struct ds_conv2d_dims {
	int64_t n, c, h, w;          /* input */
	int64_t o, kh, kw;           /* filters: [o, c / groups, kh, kw] */
	int64_t oh, ow;              /* output */
	int64_t sh, sw, ph, pw, dh, dw;
	int64_t groups;
	int relu;                    /* forward only: ReLU after the bias (and the
				      * residual, when there is one) */
	float cap;                   /* forward only, with relu: an upper clamp (6 for
				      * ReLU6); 0 is none */
	int pool;                    /* forward only: a 2x2, stride-2 max-pool after the
				      * ReLU; y is then [n, o, oh / 2, ow / 2] */
	int tactic;                  /* a ds_conv2d_tactic: what ds-optimize --tune chose */
	int64_t chunk;               /* images per im2col GEMM; 0: from the image size */
	int32_t *argmax;             /* forward with pool, or NULL: per pooled output, where
				      * its maximum was in the convolution's plane
				      * (oy * ow + ox), for ds_conv2d_pooled_backward */
} ds_conv2d_dims;

/* A kernel choice recorded in the model.  A choice this CPU cannot take
 * (direct without AVX-512) falls back to the default: a tuned model runs
 * anywhere. */
typedef enum ds_conv2d_tactic {
	DS_CONV2D_TACTIC_AUTO,
	DS_CONV2D_TACTIC_DIRECT,     /* the direct kernel where it applies */
	DS_CONV2D_TACTIC_GEMM,       /* im2col + GEMM even where direct applies */
	DS_CONV2D_TACTIC_LANES       /* output channels in the lanes (conv_lanes.c) */
} ds_conv2d_tactic;

/* Which kernel a convolution takes. */
typedef enum ds_conv2d_kind {
	DS_CONV2D_IM2COL,      /* im2col + GEMM per chunk of images and group */
	DS_CONV2D_POINTWISE,   /* 1x1, stride 1, no padding, one group: GEMM on the input */
	DS_CONV2D_DEPTHWISE    /* one group per input channel: direct loops */
} ds_conv2d_kind;

ds_conv2d_kind ds_conv2d_kind_of(const ds_conv2d_dims *d);
/* Images a thread puts side by side in one im2col GEMM (from the image
 * size only, not the batch). */
int64_t ds_conv2d_chunk(const ds_conv2d_dims *d);
/* Floats of scratch forward and backward need: one slice per thread of
 * ds_kernel_threads() (columns of a chunk, its output, a partial weight
 * gradient).  Independent of d->n: any batch fits. */
size_t ds_conv2d_workspace(const ds_conv2d_dims *d);

void ds_conv2d_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
		       float *y, float *ws);
/* The same with a residual r shaped like y (NULL: none) added after the
 * bias and before the ReLU, as a separate add node would: y = relu(conv +
 * b + r), the sum rounded in that order, so the result is the unfused
 * graph's bit for bit.  No pool with a residual. */
void ds_conv2d_forward_res(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   const float *r, float *y, float *ws);
void ds_conv2d_backward(const ds_conv2d_dims *d, const float *x, const float *w, const float *gy,
			float *gx, float *gw, float *gb, float *ws);
/* The seven loops, for tests. */
void ds_conv2d_forward_ref(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   float *y);
/* The im2col path with a chosen chunk, whatever the kind, for tests and
 * timing (ReLU included, no pool); ws holds ds_conv2d_workspace_chunk(d,
 * chunk) floats. */
size_t ds_conv2d_workspace_chunk(const ds_conv2d_dims *d, int64_t chunk);
void ds_conv2d_forward_chunked(const ds_conv2d_dims *d, int64_t chunk, const float *x,
			       const float *w, const float *b, float *y, float *ws);
void ds_conv2d_backward_chunked(const ds_conv2d_dims *d, int64_t chunk, const float *x,
				const float *w, const float *gy, float *gx, float *gw, float *gb,
				float *ws);

/* ---------------------------------------------------------------- pooling */

typedef struct ds_pool_dims {
	int64_t n, c, h, w;          /* input */
	int64_t oh, ow;              /* output */
	int64_t kh, kw, sh, sw, ph, pw;
	int count_include_pad;       /* avg_pool: padding counts in the divisor */
} ds_pool_dims;

/* argmax (may be NULL) gets, per output, the offset of the maximum within
 * its input plane (h * w + x), as int32. */
void ds_max_pool_forward(const ds_pool_dims *d, const float *x, float *y, int32_t *argmax);
void ds_max_pool_backward(const ds_pool_dims *d, const int32_t *argmax, const float *gy, float *gx);
/* The 2x2, stride-2 max-pool of one plane whose rows are ld floats apart
 * (ld >= 2 * ow, 2 * oh rows), into oh x ow packed outputs: the same
 * selects as ds_max_pool_forward, for kernels that pool their own output. */
void ds_max_pool_2x2_plane(const float *x, int64_t ld, int64_t oh, int64_t ow, float *y);
/* The same with argmax as ds_max_pool_forward writes it for a plane whose
 * rows are width apart in the offsets (and ld apart in x). */
void ds_max_pool_2x2_plane_idx(const float *x, int64_t ld, int64_t width, int64_t oh, int64_t ow, float *y,
			       int32_t *argmax);
/* The same after a ReLU (x has no NaN and no -0): plain maxima. */
void ds_max_pool_relu_2x2_plane(const float *x, int64_t ld, int64_t oh, int64_t ow, float *y);
void ds_avg_pool_forward(const ds_pool_dims *d, const float *x, float *y);
void ds_avg_pool_backward(const ds_pool_dims *d, const float *gy, float *gx);
/* planes = n * c, each of size elements. */
void ds_global_avg_pool_forward(int64_t planes, int64_t size, const float *x, float *y);
void ds_global_avg_pool_backward(int64_t planes, int64_t size, const float *gy, float *gx);

/* conv_lanes.c: output channels in the vector lanes, every lane kept on
 * small planes and at any stride; filters packed per call.  Not for
 * grouped or pooled convolutions, and AVX-512 only. */
int ds_conv2d_lanes_fits(const ds_conv2d_dims *d);
size_t ds_conv2d_lanes_workspace(const ds_conv2d_dims *d);
void ds_conv2d_lanes_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			     const float *r, float *y, float *ws);

/* conv_pooled.c: the gradients of a convolution whose output only a 2x2
 * max-pool reads (d->pool), from the pooled gradient gy and the argmax
 * its forward wrote.  Three of every four positions of the full gradient
 * are zero, and more after a ReLU: the weight gradient sums over the
 * pooled outputs only, each at the position its maximum came from.  The
 * input gradient goes through ds_conv2d_backward on the full gradient.
 * gx, gw, gb as ds_conv2d_backward. */
size_t ds_conv2d_pooled_backward_workspace(const ds_conv2d_dims *d);
void ds_conv2d_pooled_backward(const ds_conv2d_dims *d, const float *x, const float *w, const float *gy,
			       const int32_t *argmax, float *gx, float *gw, float *gb, float *ws);

/* conv_masked.c: stride-1 convolutions whose output is as wide as their
 * input, on the unpadded planes with the borders masked off in the loads;
 * AVX-512 only.  ws + ds_kernel_slice() * slice holds, with a fused pool,
 * the output planes of 8 channels of as many images as fit (one at least);
 * threads is the team's size. */
int ds_conv2d_masked_fits(const ds_conv2d_dims *d);
void ds_conv2d_masked_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			      const float *r, float *y, float *ws, int64_t slice, int threads);
/* The same at stride 2 where no tap reads past its
 * output's row and column (padding 1 for 3x3 filters, 0 for 1x1): each
 * image split into its even and odd rows and columns, in a workspace of
 * ds_conv2d_masked_s2_workspace floats. */
int ds_conv2d_masked_s2_fits(const ds_conv2d_dims *d);
size_t ds_conv2d_masked_s2_workspace(const ds_conv2d_dims *d);
void ds_conv2d_masked_s2_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
				 const float *r, float *y, float *ws, int threads);

/* conv_blocked.c: the blocked layout NCHW16c, [n][ceil(c / 16)][h][w][16]
 * with the channels past c zero.  Filters packed [ceil(o / 16)][ceil(c /
 * 16)][kh][kw][16 in][16 out] (zero past o and c) by ds_conv2d_blocked_pack.
 * Forward takes x blocked, or plain NCHW when x_blocked is 0, and writes y
 * blocked; b has ceil(o / 16) * 16 floats (or NULL), r (or NULL) is shaped
 * like y.  One group; the epilogue as ds_conv2d_forward_res, or with
 * d->pool (and no r) the 2x2 max-pool after it, y then [n][ceil(o /
 * 16)][oh / 2][ow / 2][16].  ws holds ds_conv2d_blocked_workspace floats
 * (none without a pool: NULL will do). */
size_t ds_conv2d_blocked_packed_floats(const ds_conv2d_dims *d);
void ds_conv2d_blocked_pack(const ds_conv2d_dims *d, const float *w, float *wp);
size_t ds_conv2d_blocked_workspace(const ds_conv2d_dims *d);
void ds_conv2d_blocked_forward(const ds_conv2d_dims *d, int x_blocked, const float *x, const float *wp,
			       const float *b, const float *r, float *y, float *ws);
/* For tests: 1 takes the portable tiles even where AVX-512 is, 0 back. */
void ds_conv2d_blocked_force_portable(int on);
/* n images of c channels of plane positions, NCHW to blocked and back. */
void ds_to_blocked(int64_t n, int64_t c, int64_t plane, const float *x, float *y);
void ds_from_blocked(int64_t n, int64_t c, int64_t plane, const float *x, float *y);
/* The mean of each channel over its plane, from blocked to [n][c]. */
void ds_global_avg_pool_blocked(int64_t n, int64_t c, int64_t plane, const float *x, float *y);

/* conv_dw3.c: 3x3 depthwise convolutions with one filter a channel,
 * padding 1, stride 2 or stride 1 on planes of up to 4096 outputs, a plane
 * at a time from the unpadded input; AVX-512 only.  The epilogue as
 * ds_conv2d_forward_res. */
int ds_conv2d_dw3_fits(const ds_conv2d_dims *d);
void ds_conv2d_dw3_forward(const ds_conv2d_dims *d, const float *x, const float *w, const float *b,
			   const float *r, float *y);

#endif
