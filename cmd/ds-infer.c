/* ds-infer - run a model on images, text or a tensor stream.
 *
 * Its work arrives with its own issue; until then the program knows the
 * shared options (--help, --version, --device ...) and says plainly that it
 * is not built, with status 1, rather than pretending to succeed. */
#include "ds.h"

/* Options of ds-infer itself; the shared ones are added by the cli layer. */
static const ds_option options[] = {
	{ .name = NULL },
};

static const ds_program program = {
	.name = "ds-infer",
	.usage = "[OPTIONS] [INPUT...]",
	.summary = "Run a model on images, text or a tensor stream: one result per item.",
	.options = options,
	.formats = "jsonl,csv",
	.min_args = 0,
	.max_args = -1,
};

int main(int argc, char **argv)
{
	return ds_cli_main_not_built(&program, argc, argv);
}
