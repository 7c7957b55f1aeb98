/* dtype.c - element types and their safetensors names. */
#include "internal.h"

#include <string.h>

static const struct {
	const char *name;
	size_t size;
} dtypes[DS_DTYPE_COUNT] = {
	[DS_F32] = { "F32", 4 },
	[DS_F16] = { "F16", 2 },
	[DS_BF16] = { "BF16", 2 },
	[DS_I8] = { "I8", 1 },
	[DS_U8] = { "U8", 1 },
	[DS_I32] = { "I32", 4 },
	[DS_I64] = { "I64", 8 },
};

const char *ds_dtype_name(ds_dtype dtype)
{
	return (unsigned)dtype < DS_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

int ds_dtype_parse(const char *name, ds_dtype *out)
{
	for (int i = 0; i < DS_DTYPE_COUNT; i++) {
		if (strcmp(name, dtypes[i].name) == 0) {
			*out = (ds_dtype)i;
			return 0;
		}
	}
	return -1;
}

size_t ds_dtype_size(ds_dtype dtype)
{
	return (unsigned)dtype < DS_DTYPE_COUNT ? dtypes[dtype].size : 0;
}
