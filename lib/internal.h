/* internal.h - what libds's own files share and programs do not see. */
#ifndef DS_INTERNAL_H
#define DS_INTERNAL_H

#include "config.h"
#include "ds.h"

#define DS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Seconds on the monotonic clock, for durations (lib/progress.c). */
double ds_seconds(void);

/* Rewrite a training graph's document (lib/train_graph.c) into one that
 * computes the same loss and gradients with less work; which: the
 * rewrites to make, *rewrites counts them.  params: names already taken. */
#define DS_TRAIN_RELU_AFTER_POOL 1u   /* exact: the same bits */
#define DS_TRAIN_POOL_INTO_CONV 2u    /* the same loss; gradients summed in another order */
#define DS_TRAIN_REWRITES_ALL (DS_TRAIN_RELU_AFTER_POOL | DS_TRAIN_POOL_INTO_CONV)
int ds_train_graph_rewrite(json_t *graph, const ds_container *params, unsigned which, int *rewrites,
			   ds_error *err);

/* Allocation that reports through err: NULL and status 4 on failure. */
void *ds_malloc(size_t bytes, ds_error *err);
void *ds_calloc(size_t count, size_t size, ds_error *err);
void *ds_realloc(void *p, size_t bytes, ds_error *err);
char *ds_strdup(const char *s, ds_error *err);

/* Host memory for tensor data: 64-byte aligned, freed with ds_aligned_free. */
void *ds_aligned_alloc(size_t bytes, ds_error *err);
void ds_aligned_free(void *p);

/* A malloc'd storage that frees data with ds_aligned_free. */
ds_storage *ds_storage_host(void *data, size_t bytes);
void *ds_storage_data(const ds_storage *s);
size_t ds_storage_bytes(const ds_storage *s);

/* OpenBLAS on its AVX-512 kernels where the CPU has them (lib/blas.c):
 * may execute the program again with OPENBLAS_CORETYPE set. */
void ds_blas_prefer_avx512(char **argv);

/* Device memory (lib/device.c); without CUDA these fail with status 1. */
int ds_cuda_alloc(int device, size_t bytes, void **out, ds_error *err);
void ds_cuda_release(void *ptr);
int ds_cuda_copy(void *dst, ds_device dst_dev, const void *src, ds_device src_dev, size_t bytes, ds_error *err);

/* Row-sparse parameter gradients (plan.c, read by optim.c).  An embedding
 * table whose every gradient-taking reader is an embedding or embedding_bag
 * node with "sparse": 1 keeps, beside its dense gradient tensor, the list of
 * rows that backward has added into since the last ds_plan_zero_grad: the
 * gradient is zero outside them.  The list holds each row once and is
 * preallocated at plan time. */
typedef struct ds_grad_rows {
	const int64_t *rows;
	size_t count;
	int64_t width;           /* floats per row */
} ds_grad_rows;

/* 1 and *out filled when parameter i's gradient is row-sparse (the rows
 * then in ascending order); 0 when it is dense (any element may be
 * nonzero). */
int ds_plan_grad_rows(ds_plan *p, size_t i, ds_grad_rows *out);

#endif
