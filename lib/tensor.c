/* tensor.c - tensors and the reference-counted storage under them. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct ds_storage {
	int refs;
	void *data;
	size_t bytes;
	void (*release)(void *ctx);
	void *ctx;
};

void *ds_aligned_alloc(size_t bytes, ds_error *err)
{
	void *p = NULL;

	/* 64 bytes: one cache line, one AVX-512 register. */
	if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
		ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory allocating %zu bytes", bytes);
		return NULL;
	}
	return p;
}

void ds_aligned_free(void *p)
{
	free(p);
}

ds_storage *ds_storage_wrap(void *data, size_t bytes, void (*release)(void *ctx), void *ctx)
{
	ds_storage *s = malloc(sizeof *s);

	if (!s)
		return NULL;
	s->refs = 1;
	s->data = data;
	s->bytes = bytes;
	s->release = release;
	s->ctx = ctx;
	return s;
}

ds_storage *ds_storage_host(void *data, size_t bytes)
{
	return ds_storage_wrap(data, bytes, ds_aligned_free, data);
}

ds_storage *ds_storage_ref(ds_storage *s)
{
	if (s)
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

void ds_storage_unref(ds_storage *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (s->release)
		s->release(s->ctx);
	free(s);
}

void *ds_storage_data(const ds_storage *s)
{
	return s->data;
}

size_t ds_storage_bytes(const ds_storage *s)
{
	return s->bytes;
}

int ds_shape_numel(int ndim, const int64_t *shape, int64_t *numel)
{
	int64_t n = 1;

	*numel = 0;
	if (ndim < 0 || ndim > DS_MAX_DIMS)
		return -1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return -1;
		if (shape[i] == 0) {
			n = 0;
			continue;
		}
		if (n > INT64_MAX / shape[i])
			return -1;
		n *= shape[i];
	}
	/* A zero dimension makes the product 0 even when other dims are huge,
	 * but the huge dims must still each be valid (checked above). */
	*numel = n;
	return 0;
}

int ds_shape_bytes(ds_dtype dtype, int ndim, const int64_t *shape, uint64_t *bytes)
{
	int64_t n;
	size_t size = ds_dtype_size(dtype);

	*bytes = 0;
	if (!size || ds_shape_numel(ndim, shape, &n) != 0)
		return -1;
	if ((uint64_t)n > SIZE_MAX / size)
		return -1;
	*bytes = (uint64_t)n * size;
	return 0;
}

const char *ds_shape_format(int ndim, const int64_t *shape, char *buf, size_t len)
{
	size_t used = 0;

	if (!len)
		return buf;
	buf[0] = 0;
	used += (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < ndim && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
	if (used < len)
		snprintf(buf + used, len - used, "]");
	return buf;
}

static ds_tensor *tensor_header(ds_dtype dtype, int ndim, const int64_t *shape, ds_device dev, ds_error *err)
{
	ds_tensor *t;
	uint64_t bytes;

	if ((unsigned)dtype >= DS_DTYPE_COUNT || ndim < 0 || ndim > DS_MAX_DIMS ||
	    ds_shape_bytes(dtype, ndim, shape, &bytes) != 0) {
		char s[256];

		ds_error_set(err, DS_ERR_DATA, "bad_shape", "invalid tensor shape %s of %s",
			     ds_shape_format(ndim > DS_MAX_DIMS ? DS_MAX_DIMS : (ndim < 0 ? 0 : ndim), shape, s, sizeof s),
			     ds_dtype_name(dtype));
		return NULL;
	}
	t = ds_calloc(1, sizeof *t, err);
	if (!t)
		return NULL;
	t->dtype = dtype;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	t->device = dev;
	t->refs = 1;
	return t;
}

ds_tensor *ds_tensor_new(ds_dtype dtype, int ndim, const int64_t *shape, ds_device dev, ds_error *err)
{
	ds_tensor *t = tensor_header(dtype, ndim, shape, dev, err);
	size_t bytes;

	if (!t)
		return NULL;
	bytes = ds_tensor_nbytes(t);
	if (dev.kind == DS_DEVICE_CUDA) {
		if (ds_cuda_alloc(dev.index, bytes, &t->data, err) != 0)
			goto fail;
		t->storage = ds_storage_wrap(t->data, bytes, ds_cuda_release, t->data);
	} else {
		t->data = ds_aligned_alloc(bytes, err);
		if (!t->data)
			goto fail;
		memset(t->data, 0, bytes);
		t->storage = ds_storage_host(t->data, bytes);
	}
	if (!t->storage) {
		if (dev.kind == DS_DEVICE_CUDA)
			ds_cuda_release(t->data);
		else
			ds_aligned_free(t->data);
		ds_error_set(err, DS_ERR_NOMEM, "out_of_memory", "out of memory");
		goto fail;
	}
	return t;
fail:
	free(t);
	return NULL;
}

ds_tensor *ds_tensor_view(ds_dtype dtype, int ndim, const int64_t *shape, void *data,
			  ds_device dev, ds_storage *storage, ds_error *err)
{
	ds_tensor *t = tensor_header(dtype, ndim, shape, dev, err);

	if (!t)
		return NULL;
	t->data = data;
	t->storage = ds_storage_ref(storage);
	return t;
}

ds_tensor *ds_tensor_ref(ds_tensor *t)
{
	if (t)
		__atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
	return t;
}

void ds_tensor_unref(ds_tensor *t)
{
	if (!t || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	ds_storage_unref(t->storage);
	free(t);
}

int64_t ds_tensor_numel(const ds_tensor *t)
{
	int64_t n;

	ds_shape_numel(t->ndim, t->shape, &n);
	return n;
}

size_t ds_tensor_nbytes(const ds_tensor *t)
{
	return (size_t)ds_tensor_numel(t) * ds_dtype_size(t->dtype);
}

ds_tensor *ds_tensor_to(const ds_tensor *t, ds_device dev, ds_error *err)
{
	ds_tensor *out = ds_tensor_new(t->dtype, t->ndim, t->shape, dev, err);
	size_t bytes = ds_tensor_nbytes(t);

	if (!out)
		return NULL;
	if (t->device.kind == DS_DEVICE_CPU && dev.kind == DS_DEVICE_CPU) {
		if (bytes)
			memcpy(out->data, t->data, bytes);
	} else if (ds_cuda_copy(out->data, dev, t->data, t->device, bytes, err) != 0) {
		ds_tensor_unref(out);
		return NULL;
	}
	return out;
}
