/* bench.h - private to ds-bench. */
#ifndef DS_BENCH_H
#define DS_BENCH_H
#endif
