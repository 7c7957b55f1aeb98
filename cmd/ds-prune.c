/* ds-prune - remove a model's least important weights or channels.
 *
 * Its work arrives with its own issue; until then the program knows the
 * shared options (--help, --version, --device ...) and says plainly that it
 * is not built, with status 1, rather than pretending to succeed. */
#include "ds.h"

/* Options of ds-prune itself; the shared ones are added by the cli layer. */
static const ds_option options[] = {
	{ .name = NULL },
};

static const ds_program program = {
	.name = "ds-prune",
	.usage = "[OPTIONS] [MODEL|-]",
	.summary = "Remove a model's least important weights or channels.",
	.options = options,
	.formats = "text,json",
	.min_args = 0,
	.max_args = 1,
};

int main(int argc, char **argv)
{
	return ds_cli_main_not_built(&program, argc, argv);
}
