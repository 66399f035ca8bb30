/*
 * coyote.h — the public C API of Coyote.
 *
 * Conventions (STYLE.md): every function returns int, 0 on success and a
 * negative code on failure — a negative errno (-ENOSPC, -EIO, ...) or one of
 * the CY_E* codes below, which live in the reserved range [-1999, -1000].
 * cy_strerror() turns any of them into a sentence.
 */
#ifndef COYOTE_H
#define COYOTE_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CY_OK = 0,
    CY_ECORRUPT = -1001,   /* data failed a checksum or a structural check */
    CY_EFORMAT = -1002,    /* unknown magic number or unsupported format version */
    CY_EREADONLY = -1003,  /* storage is in its error state: nothing more is acknowledged */
    CY_ENOTFOUND = -1004,  /* no such item */
    CY_ELOCKED = -1005,    /* the data directory is in use by another process */
    CY_ETOOBIG = -1006,    /* a value exceeds a size limit */
    CY_ECLOSED = -1007,    /* the object is closed or shutting down */
    CY_ENOMEM = -1008,     /* out of memory (the client library never aborts) */
    CY_EINVAL = -1009,     /* an argument breaks the function's contract */
    CY_ERANGE = -1010,     /* an offset or position is outside what is stored */
};

/* A sentence describing `code` (0, a negative errno or a CY_E* code).
 * The string is static; never NULL. */
const char *cy_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
