/* fuzz_config.c - libFuzzer target for --config files: any bytes either
 * parse into an object of options or fail with a usage error, never crash. */
#include "config.h"
#include "ds.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ds_error err = { 0 };
	json_t *config = NULL;
	int rc = ds_config_parse((const char *)data, size, "fuzz.json", &config, &err);

	if (rc == 0 && !json_is_object(config))
		abort();
	if (rc != 0 && (config || err.status != rc || !err.message[0]))
		abort();
	json_decref(config);
	return 0;
}
