/* infer.h - private to ds-infer's pipeline. */
#ifndef DS_INFER_H
#define DS_INFER_H
#endif
