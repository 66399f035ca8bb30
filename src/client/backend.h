/*
 * backend.h — what a libcoyote backend provides: one primitive, "run this
 * operation of API.md with this body and give me the response body". The
 * typed API (client.c) encodes requests and decodes responses once, for every
 * backend (go-msg style: this table is also where other brokers plug in).
 *
 *   http://host:port   backend_http.c      POST /api/<op> over keep-alive HTTP/1.1
 *   file:///dir        backend_embedded.c  the broker in this process, requests
 *                                          handled by the server's own api_handle
 *
 * Bodies are MessagePack or JSON (fmt), the same format both ways. A call
 * returns 0 with the HTTP status in *status (200, or the error status with an
 * error body {code, detail, location?}) and the body in resp; or a negative
 * code when no answer was had (CY_ECONNECT, CY_ETIMEDOUT, CY_ENOMEM, ...).
 * Calls are serialized by the client; a backend need not be thread-safe.
 */
#ifndef COYOTE_CLIENT_BACKEND_H
#define COYOTE_CLIENT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "server/codec.h"

struct cy_backend;

struct cy_backend_ops {
    const char *name; /* "http", "file" */
    int (*call)(struct cy_backend *be, const char *op, enum codec_format fmt, const uint8_t *body,
                size_t len, uint64_t timeout_ms, int *status, struct buf *resp);
    int (*close)(struct cy_backend *be);
};

struct cy_backend {
    const struct cy_backend_ops *ops;
};

struct cy_backend_config {
    const char *url;   /* the whole URL given to cy_open */
    const char *token; /* may be NULL */
    const char *fsync; /* embedded only; may be NULL */
};

/* Open the backend for cfg->url's scheme. 0, CY_EINVAL (bad URL or scheme),
 * CY_ELOCKED, CY_ENOMEM, or another negative code. */
int backend_http_open(const struct cy_backend_config *cfg, struct cy_backend **out);
int backend_embedded_open(const struct cy_backend_config *cfg, struct cy_backend **out);

#endif
