/* test_tensor.c - tensors, shapes, storage and devices. */
#include <stdint.h>
#include <string.h>

#include "ds.h"
#include "tap.h"

static int released;

static void count_release(void *ctx)
{
	(void)ctx;
	released++;
}

static void test_dtypes(void)
{
	static const char *names[] = { "F32", "F16", "BF16", "I8", "U8", "I32", "I64" };
	static const size_t sizes[] = { 4, 2, 2, 1, 1, 4, 8 };
	ds_dtype d;

	for (int i = 0; i < DS_DTYPE_COUNT; i++) {
		is_str(ds_dtype_name((ds_dtype)i), names[i], "dtype %d is named %s", i, names[i]);
		is_int(ds_dtype_size((ds_dtype)i), sizes[i], "%s is %zu bytes", names[i], sizes[i]);
		ok(ds_dtype_parse(names[i], &d) == 0 && d == (ds_dtype)i, "%s parses back", names[i]);
	}
	ok(ds_dtype_parse("F64", &d) != 0, "F64 is not a ds dtype");
	ok(ds_dtype_parse("f32", &d) != 0, "dtype names are case-sensitive, as in safetensors");
}

static void test_shapes(void)
{
	int64_t n;
	uint64_t bytes;
	int64_t big[] = { INT64_MAX / 2, 3 };
	int64_t zero_big[] = { 0, INT64_MAX };
	int64_t neg[] = { 2, -1 };
	int64_t mb[] = { 1 << 20, 1 << 20, 1 << 20, 8 };
	char buf[64];

	ok(ds_shape_numel(0, NULL, &n) == 0 && n == 1, "a 0-dim tensor has one element");
	ok(ds_shape_numel(2, big, &n) != 0, "an overflowing product is refused");
	ok(ds_shape_numel(2, zero_big, &n) == 0 && n == 0, "a zero dimension makes the product 0");
	ok(ds_shape_numel(2, neg, &n) != 0, "a negative dimension is refused");
	ok(ds_shape_bytes(DS_I64, 4, mb, &bytes) != 0, "bytes past 2^63 are refused");
	ok(ds_shape_numel(DS_MAX_DIMS + 1, mb, &n) != 0, "more than 8 dims are refused");
	is_str(ds_shape_format(2, neg, buf, sizeof buf), "[2, -1]", "shapes print as lists");
	is_str(ds_shape_format(0, NULL, buf, sizeof buf), "[]", "a scalar prints as []");
}

static void test_tensors(void)
{
	ds_error err = { 0 };
	int64_t shape[] = { 2, 3, 5 };
	ds_tensor *t = ds_tensor_new(DS_F32, 3, shape, DS_CPU, &err), *u, *v;
	ds_storage *s;
	float *f;
	int zero = 1;

	ok(t != NULL, "a host tensor is allocated");
	is_int(ds_tensor_numel(t), 30, "numel is the product of the shape");
	is_int(ds_tensor_nbytes(t), 120, "bytes are numel times the dtype size");
	ok(((uintptr_t)t->data & 63) == 0, "host data is 64-byte aligned");
	f = t->data;
	for (int i = 0; i < 30; i++)
		zero &= f[i] == 0.0f;
	ok(zero, "new tensors are zero-filled");
	for (int i = 0; i < 30; i++)
		f[i] = (float)i;
	u = ds_tensor_to(t, DS_CPU, &err);
	ok(u && u->data != t->data && memcmp(u->data, t->data, 120) == 0, "a copy holds the same bytes elsewhere");
	ds_tensor_ref(t);
	ds_tensor_unref(t);
	is_int(t->refs, 1, "ref and unref balance");
	ds_tensor_unref(t);
	ds_tensor_unref(u);

	released = 0;
	s = ds_storage_wrap(f = malloc(64), 64, count_release, NULL);
	v = ds_tensor_view(DS_U8, 1, (int64_t[]){ 64 }, f, DS_CPU, s, &err);
	ds_storage_unref(s);
	is_int(released, 0, "a view keeps its storage alive");
	ds_tensor_unref(v);
	is_int(released, 1, "the last view releases the storage");
	free(f);

	ok(ds_tensor_new(DS_F32, 2, (int64_t[]){ INT64_MAX, 2 }, DS_CPU, &err) == NULL &&
	   err.status == DS_ERR_DATA, "an impossible shape is status 3, not a crash");
}

static void test_devices(void)
{
	ds_error err = { 0 };
	ds_device dev;
	int is_auto;
	char buf[32];

	ok(ds_device_parse("auto", &dev, &is_auto, &err) == 0 && is_auto, "auto parses");
	ok(ds_device_parse("cuda:1", &dev, &is_auto, &err) == 0 && dev.kind == DS_DEVICE_CUDA &&
	   dev.index == 1 && !is_auto, "cuda:1 parses");
	is_str(ds_device_name(dev, buf, sizeof buf), "cuda:1", "devices print as they parse");
	ds_error_clear(&err);
	ok(ds_device_parse("gpu", &dev, &is_auto, &err) == DS_ERR_USAGE, "an unknown device is a usage error");
	ds_error_clear(&err);
	ok(ds_device_parse("cuda:x", &dev, &is_auto, &err) == DS_ERR_USAGE, "cuda:x is a usage error");
	ds_error_clear(&err);
	ok(ds_device_resolve("auto", &dev, &err) == 0 && dev.kind == DS_DEVICE_CPU,
	   "auto resolves to the CPU while there is no CUDA backend");
	ds_error_clear(&err);
	if (ds_cuda_device_count() == 0) {
		ok(ds_device_resolve("cuda", &dev, &err) == DS_ERR_RUN && strstr(err.message, "cuda"),
		   "cuda without a GPU is status 1 with a message");
	} else {
		ok(ds_device_resolve("cuda", &dev, &err) == 0, "cuda resolves on a machine with a GPU");
		ds_tensor *h = ds_tensor_new(DS_F32, 1, (int64_t[]){ 1000 }, DS_CPU, &err);
		ds_tensor *d = ds_tensor_to(h, dev, &err);
		ds_tensor *back = d ? ds_tensor_to(d, DS_CPU, &err) : NULL;

		for (int i = 0; i < 1000; i++)
			((float *)h->data)[i] = (float)i * 0.5f;
		ds_tensor_unref(back);
		ds_tensor_unref(d);
		d = ds_tensor_to(h, dev, &err);
		back = d ? ds_tensor_to(d, DS_CPU, &err) : NULL;
		ok(back && memcmp(back->data, h->data, 4000) == 0, "host -> device -> host keeps the bytes");
		ds_tensor_unref(back);
		ds_tensor_unref(d);
		ds_tensor_unref(h);
	}
}

static void test_errors(void)
{
	ds_error err = { 0 };

	ds_error_set(&err, DS_ERR_DATA, "truncated", "data runs past end of file");
	ds_error_prefix(&err, "tensor '%s'", "x");
	ds_error_prefix(&err, "frame %d", 3);
	ds_error_prefix(&err, "%s", "train.dst");
	is_str(err.message, "train.dst: frame 3: tensor 'x': data runs past end of file",
	       "locations stack in front of the message");
	ds_error_set(&err, DS_ERR_IO, "io_error", "later");
	is_int(err.status, DS_ERR_DATA, "the first error wins");
	is_str(err.code, "truncated", "and keeps its code");
}

int main(void)
{
	test_dtypes();
	test_shapes();
	test_tensors();
	test_devices();
	test_errors();
	return done_testing();
}
