/* err.c — cy_strerror: one sentence per error code (negative errno or CY_E*). */
#include <string.h>

#include "coyote.h"

const char *cy_strerror(int code)
{
    switch (code) {
    case CY_OK: return "success";
    case CY_ECORRUPT: return "data is corrupt (checksum or structure check failed)";
    case CY_EFORMAT: return "unknown file format or unsupported format version";
    case CY_EREADONLY: return "storage is read-only after an I/O error; nothing more is acknowledged";
    case CY_ENOTFOUND: return "not found";
    case CY_ELOCKED: return "the data directory is in use by another process";
    case CY_ETOOBIG: return "value exceeds a size limit";
    case CY_ECLOSED: return "the object is closed or shutting down";
    case CY_ENOMEM: return "out of memory";
    case CY_EINVAL: return "invalid argument";
    case CY_ERANGE: return "offset or position is outside the stored range";
    case CY_ESERVER: return "the broker refused the request; cy_last_error says why";
    case CY_ECONNECT: return "the server cannot be reached";
    case CY_ETIMEDOUT: return "the request timed out; its outcome is unknown";
    case CY_EPROTOCOL: return "the server sent an answer this library cannot read";
    default: break;
    }
    if (code <= -1000 && code >= -1999)
        return "unknown error";
    if (code < 0 && code > -4096)
        return strerror(-code); /* glibc: static table, thread-safe for valid codes */
    return "unknown error";
}
