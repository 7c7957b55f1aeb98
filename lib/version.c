/* version.c */
#include "internal.h"

const char *ds_version(void)
{
	return PACKAGE_VERSION;
}
