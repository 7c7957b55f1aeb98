/* device.c - choosing where to run, and device memory for tensors. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef DS_HAVE_CUDA
#include "cuda/cuda.h"
#endif

int ds_cuda_built(void)
{
#ifdef DS_HAVE_CUDA
	return 1;
#else
	return 0;
#endif
}

int ds_cuda_device_count(void)
{
#ifdef DS_HAVE_CUDA
	static int count = -1;

	if (count < 0)
		count = dsk_cuda_device_count();
	return count;
#else
	return 0;
#endif
}

int ds_device_parse(const char *text, ds_device *out, int *is_auto, ds_error *err)
{
	char *end;
	long index;

	if (is_auto)
		*is_auto = 0;
	*out = DS_CPU;
	if (!text || strcmp(text, "auto") == 0) {
		if (is_auto)
			*is_auto = 1;
		return 0;
	}
	if (strcmp(text, "cpu") == 0)
		return 0;
	if (strncmp(text, "cuda", 4) == 0) {
		out->kind = DS_DEVICE_CUDA;
		if (text[4] == 0)
			return 0;
		if (text[4] == ':' && text[5] >= '0' && text[5] <= '9') {
			index = strtol(text + 5, &end, 10);
			if (*end == 0 && index < 1024) {
				out->index = (int)index;
				return 0;
			}
		}
	}
	return ds_error_set(err, DS_ERR_USAGE, "bad_device",
			    "--device: '%s' is not a device (auto, cpu, cuda or cuda:N)", text);
}

int ds_device_resolve(const char *text, ds_device *out, ds_error *err)
{
	int is_auto, count, rc;

	if ((rc = ds_device_parse(text, out, &is_auto, err)) != 0)
		return rc;
	count = ds_cuda_device_count();
	if (is_auto) {
		/* The GPU path arrives with the CUDA backend; until every op runs
		 * there, auto means the CPU. */
		*out = DS_CPU;
		return 0;
	}
	if (out->kind != DS_DEVICE_CUDA)
		return 0;
	if (!ds_cuda_built())
		return ds_error_set(err, DS_ERR_RUN, "no_cuda",
				    "--device %s: this ds was built without CUDA", text);
	if (count == 0)
		return ds_error_set(err, DS_ERR_RUN, "no_gpu",
				    "--device %s: no CUDA device found (is the NVIDIA driver loaded?)", text);
	if (out->index >= count)
		return ds_error_set(err, DS_ERR_RUN, "no_gpu",
				    "--device %s: only %d CUDA device%s found", text, count, count == 1 ? "" : "s");
	return 0;
}

const char *ds_device_name(ds_device dev, char *buf, size_t len)
{
	if (dev.kind == DS_DEVICE_CUDA)
		snprintf(buf, len, "cuda:%d", dev.index);
	else
		snprintf(buf, len, "cpu");
	return buf;
}

#ifdef DS_HAVE_CUDA
static int cuda_status(int rc, const char *msg, ds_error *err)
{
	if (rc == DS_CUDA_OK)
		return 0;
	if (rc == DS_CUDA_NOMEM)
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_device_memory", "%s", msg);
	return ds_error_set(err, DS_ERR_RUN, "cuda_error", "%s", msg);
}
#endif

int ds_cuda_alloc(int device, size_t bytes, void **out, ds_error *err)
{
#ifdef DS_HAVE_CUDA
	char msg[256] = "";
	int rc = dsk_cuda_malloc(device, bytes, out, msg, sizeof msg);

	if (rc == DS_CUDA_NOMEM) {
		size_t free_bytes = 0, total = 0;

		dsk_cuda_device_info(device, NULL, 0, &free_bytes, &total);
		return ds_error_set(err, DS_ERR_NOMEM, "out_of_device_memory",
				    "cuda:%d: out of device memory: asked for %zu bytes, %zu of %zu free",
				    device, bytes, free_bytes, total);
	}
	return cuda_status(rc, msg, err);
#else
	(void)device;
	(void)bytes;
	*out = NULL;
	return ds_error_set(err, DS_ERR_RUN, "no_cuda", "this ds was built without CUDA");
#endif
}

void ds_cuda_release(void *ptr)
{
#ifdef DS_HAVE_CUDA
	dsk_cuda_free(ptr);
#else
	(void)ptr;
#endif
}

int ds_cuda_copy(void *dst, ds_device dst_dev, const void *src, ds_device src_dev, size_t bytes, ds_error *err)
{
#ifdef DS_HAVE_CUDA
	char msg[256] = "";
	int rc = dsk_cuda_memcpy(dst, dst_dev.kind == DS_DEVICE_CUDA ? dst_dev.index : -1, src,
				 src_dev.kind == DS_DEVICE_CUDA ? src_dev.index : -1, bytes, msg, sizeof msg);

	return cuda_status(rc, msg, err);
#else
	(void)dst, (void)dst_dev, (void)src, (void)src_dev, (void)bytes;
	return ds_error_set(err, DS_ERR_RUN, "no_cuda", "this ds was built without CUDA");
#endif
}
