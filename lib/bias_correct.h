/* bias_correct.h - the mean shift that INT8 puts on a layer's outputs, for
 * ds-quantize to take out of its bias.
 *
 * A convolution or linear layer in INT8 computes W_q x_q where the float
 * model computed W x: rounded weights, and inputs rounded and clipped to
 * their calibrated range.  Per output channel the mean of the difference
 * over the calibration data is a constant the bias can absorb, which is
 * the bias correction of Nagel et al. (data-free quantization, 2019) and
 * of OpenVINO's NNCF.  The layer is linear in its input, so the mean of
 * W x over every image and output position is W applied to the mean input
 * seen by each filter tap: these sums are all the correction needs, and
 * gathering them costs a pass over the calibration inputs, not a
 * convolution per layer. */
#ifndef DS_BIAS_CORRECT_H
#define DS_BIAS_CORRECT_H

#include <stdint.h>

#include "cpu/conv.h"
#include "ds.h"

typedef struct ds_bias_taps {
	ds_conv2d_dims d;            /* c, o, kh, kw, strides, padding, dilation, groups;
				      * a linear layer: c, o, and 1 for the rest */
	int conv;                    /* input [N, C, H, W]; else rows of C */
	float in_scale;              /* how the INT8 layer sees its input */
	int32_t in_zero_point;
	double *real, *coded;        /* [c * kh * kw]: sums of the float input, and of
				      * the value its U8 code stands for, per tap */
	int64_t positions;           /* output positions summed over */
} ds_bias_taps;

/* Empty sums for a layer of geometry d (a convolution when conv, else a
 * linear layer of d->c inputs and d->o outputs).  Status 4 when out of
 * memory. */
int ds_bias_taps_init(ds_bias_taps *t, int conv, const ds_conv2d_dims *d, ds_error *err);
/* Add one batch of the layer's float input: x [N, C, H, W] for a
 * convolution, [.., C] for a linear layer.  Status 4 when out of memory. */
int ds_bias_taps_add(ds_bias_taps *t, const ds_tensor *x, ds_error *err);
/* The mean of (W_q x_q - W x) for output channel o: w its float filter,
 * codes and scale its I8 filter and scale, each c / groups * kh * kw
 * weights. */
double ds_bias_taps_shift(const ds_bias_taps *t, int64_t o, const float *w, const int8_t *codes, float scale);
void ds_bias_taps_free(ds_bias_taps *t);

#endif
