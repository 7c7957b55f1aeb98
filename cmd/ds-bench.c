/* ds-bench - measure the speed and accuracy of models.
 *
 * Its work arrives with its own issue; until then the program knows the
 * shared options (--help, --version, --device ...) and says plainly that it
 * is not built, with status 1, rather than pretending to succeed. */
#include "ds.h"

/* Options of ds-bench itself; the shared ones are added by the cli layer. */
static const ds_option options[] = {
	{ .name = NULL },
};

static const ds_program program = {
	.name = "ds-bench",
	.usage = "[OPTIONS]",
	.summary = "Measure the speed and accuracy of models, side by side.",
	.options = options,
	.formats = "md,csv,json,jsonl",
	.min_args = 0,
	.max_args = 0,
};

int main(int argc, char **argv)
{
	return ds_cli_main_not_built(&program, argc, argv);
}
