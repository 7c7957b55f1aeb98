/* ds-quantize - quantize a model to int8.
 *
 * Its work arrives with its own issue; until then the program knows the
 * shared options (--help, --version, --device ...) and says plainly that it
 * is not built, with status 1, rather than pretending to succeed. */
#include "ds.h"

/* Options of ds-quantize itself; the shared ones are added by the cli layer. */
static const ds_option options[] = {
	{ .name = NULL },
};

static const ds_program program = {
	.name = "ds-quantize",
	.usage = "[OPTIONS] [MODEL|-]",
	.summary = "Quantize a model's weights to int8, calibrated on a tensor stream.",
	.options = options,
	.formats = "text,json",
	.min_args = 0,
	.max_args = 1,
};

int main(int argc, char **argv)
{
	ds_error err = { 0 };
	ds_cli *cli;
	int done, status;

	status = ds_cli_start(&cli, &program, argc, argv, &done);
	if (status || done)
		return status;
	status = ds_error_set(&err, DS_ERR_RUN, "not_built",
			      "%s is not built yet: it arrives with its own issue", program.name);
	return ds_cli_finish(cli, status, &err);
}
