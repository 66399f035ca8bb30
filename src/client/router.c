/*
 * router.c — the router of coyote.h (cy_router_*): one handler that sends
 * each message to the handler of its "media_type" header, after checking
 * the value's required fields.
 *
 *   message ─► media_type header? ──no──► fallback, or CY_DEAD "no media_type header"
 *                   │ yes
 *                   ▼
 *              route for it? ──no──► fallback, or CY_DEAD "no route for media_type '<x>'"
 *                   │ yes
 *                   ▼
 *              required fields? ──fail──► CY_DEAD "<x>: <what is wrong>"
 *                   │ ok (or none)
 *                   ▼
 *              the route's handler (its own arg as cy_context.user)
 *
 * Invariants:
 *   1. Routes are fixed once dispatch began: cy_router_add and
 *      cy_router_fallback after the first dispatch fail with CY_EINVAL (a
 *      best-effort check: they are not allowed once the router serves — call
 *      them all before cy_serve_start). So dispatch reads the routes without
 *      a lock, on any number of threads at once.
 *   2. The router owns its routes (media types and the parsed required
 *      fields), not the route handlers' args. The handler given by
 *      cy_router_handler is registered with middleware.c as a chain end that
 *      frees nothing (mw_register_free): cy_handler_free on a chain around
 *      it frees the decorators only; the router is freed by cy_router_free.
 *
 * Decisions (what coyote.h leaves open):
 *   - The header name "media_type" is matched case-insensitively, its value
 *     exactly (bytes, case-sensitive). With several such headers the first
 *     counts. Adding a media type twice is CY_EINVAL.
 *   - A required type "number" accepts integers and reals, "integer" only
 *     JSON integers (1.0 is a real). A value that does not parse as JSON or
 *     is not an object gets "value is not a JSON object"; fields are checked
 *     in the order they were given, the first failure is the reason.
 *   - The media type shown in a reason is cut to 200 bytes (at a UTF-8
 *     boundary); cy_set_dead_reason cuts the whole reason to 1 KiB.
 *   - Dispatch needs no memory of its own except the JSON parse of routes
 *     with required fields; when that runs out of memory the message is
 *     CY_RETRY (not the message's fault).
 */
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client/client_int.h"

#define MEDIA_TYPE_HEADER "media_type"
#define REASON_MEDIA_TYPE_MAX 200
#define REASON_BUF 1100

enum field_type { FT_STRING, FT_NUMBER, FT_INTEGER, FT_BOOLEAN, FT_OBJECT, FT_ARRAY, FT_NULL };

static const char *const type_names[] = {"string", "number", "integer", "boolean",
                                         "object", "array",  "null"};

struct field {
    char *name;
    enum field_type type;
};

struct route {
    char *media_type;
    cy_handler h;
    struct field *fields; /* required, in the order given */
    size_t n_fields;
};

struct cy_router {
    struct route *routes;
    size_t n, cap;
    cy_handler fallback; /* fn NULL: none */
    atomic_bool sealed;  /* dispatch began (invariant 1) */
};

/* ---- building ------------------------------------------------------------------------- */

static void route_clear(struct route *rt)
{
    for (size_t i = 0; i < rt->n_fields; i++)
        free(rt->fields[i].name);
    free(rt->fields);
    free(rt->media_type);
}

/* The chain end cy_handler_free meets: the router is not the chain's to free. */
static void router_free_arg(void *arg, cy_handler *next_out)
{
    (void)arg;
    next_out->fn = NULL;
    next_out->arg = NULL;
}

static cy_outcome router_dispatch(const cy_context *ctx, const cy_received *msg);

int cy_router_new(cy_router **out)
{
    if (!out)
        return CY_EINVAL;
    *out = NULL;
    int rc = mw_register_free(router_dispatch, router_free_arg);
    if (rc)
        return rc;
    cy_router *r = calloc(1, sizeof *r);
    if (!r)
        return CY_ENOMEM;
    atomic_init(&r->sealed, false);
    *out = r;
    return 0;
}

static int parse_type(const char *name, enum field_type *out)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
        if (strcmp(name, type_names[i]) == 0) {
            *out = (enum field_type)i;
            return 0;
        }
    return CY_EINVAL;
}

/* Parse `required` into rt->fields. */
static int parse_required(const char *required, struct route *rt)
{
    json_error_t err;
    json_t *root = json_loads(required, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return CY_EINVAL; /* jansson also fails this way when out of memory */
    int rc = CY_EINVAL;
    if (!json_is_object(root))
        goto done;
    size_t n = json_object_size(root);
    if (n) {
        rt->fields = calloc(n, sizeof *rt->fields);
        if (!rt->fields) {
            rc = CY_ENOMEM;
            goto done;
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        enum field_type t;
        if (!json_is_string(v) || parse_type(json_string_value(v), &t))
            goto done;
        char *name = strdup(key);
        if (!name) {
            rc = CY_ENOMEM;
            goto done;
        }
        rt->fields[rt->n_fields].name = name;
        rt->fields[rt->n_fields].type = t;
        rt->n_fields++;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int cy_router_add(cy_router *r, const char *media_type, cy_handler h, const char *required)
{
    if (!r || !media_type || !h.fn || atomic_load(&r->sealed))
        return CY_EINVAL;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->routes[i].media_type, media_type) == 0)
            return CY_EINVAL;
    struct route rt;
    memset(&rt, 0, sizeof rt);
    rt.h = h;
    int rc;
    if (required && (rc = parse_required(required, &rt)))
        goto fail;
    rc = CY_ENOMEM;
    if (!(rt.media_type = strdup(media_type)))
        goto fail;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        struct route *grown = realloc(r->routes, cap * sizeof *grown);
        if (!grown)
            goto fail;
        r->routes = grown;
        r->cap = cap;
    }
    r->routes[r->n++] = rt;
    return 0;

fail:
    route_clear(&rt);
    return rc;
}

int cy_router_fallback(cy_router *r, cy_handler h)
{
    if (!r || !h.fn || atomic_load(&r->sealed))
        return CY_EINVAL;
    r->fallback = h;
    return 0;
}

cy_handler cy_router_handler(cy_router *r)
{
    return (cy_handler){router_dispatch, r};
}

void cy_router_free(cy_router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        route_clear(&r->routes[i]);
    free(r->routes);
    free(r);
}

/* ---- dispatch ------------------------------------------------------------------------- */

static cy_outcome call(const cy_context *ctx, cy_handler h, const cy_received *msg)
{
    cy_context inner = *ctx;
    inner.user = h.arg;
    return h.fn(&inner, msg);
}

/* How many bytes of s (at most max) to show without splitting a UTF-8 sequence. */
static int shown_len(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    return (int)n;
}

static cy_outcome dead(const cy_context *ctx, const char *reason)
{
    cy_set_dead_reason(ctx, reason);
    return CY_DEAD;
}

static bool has_type(const json_t *v, enum field_type t)
{
    switch (t) {
    case FT_STRING: return json_is_string(v);
    case FT_NUMBER: return json_is_number(v);
    case FT_INTEGER: return json_is_integer(v);
    case FT_BOOLEAN: return json_is_boolean(v);
    case FT_OBJECT: return json_is_object(v);
    case FT_ARRAY: return json_is_array(v);
    default: return json_is_null(v);
    }
}

/* 0: the value has every required field; CY_EINVAL: it does not (reason in
 * buf); CY_ENOMEM. */
static int check_required(const struct route *rt, const cy_received *msg, char *buf, size_t len)
{
    int mt_len = shown_len(rt->media_type, REASON_MEDIA_TYPE_MAX);
    json_error_t err;
    const char *value = msg->value ? (const char *)msg->value : "";
    json_t *root = json_loadb(value, msg->value ? msg->value_len : 0, JSON_DECODE_ANY, &err);
    if (!root && json_error_code(&err) == json_error_out_of_memory)
        return CY_ENOMEM;
    if (!root || !json_is_object(root)) {
        json_decref(root);
        snprintf(buf, len, "%.*s: value is not a JSON object", mt_len, rt->media_type);
        return CY_EINVAL;
    }
    int rc = 0;
    for (size_t i = 0; i < rt->n_fields && !rc; i++) {
        const struct field *f = &rt->fields[i];
        const json_t *v = json_object_get(root, f->name);
        int name_len = shown_len(f->name, REASON_MEDIA_TYPE_MAX);
        if (!v) {
            snprintf(buf, len, "%.*s: field '%.*s' is missing", mt_len, rt->media_type, name_len,
                     f->name);
            rc = CY_EINVAL;
        } else if (!has_type(v, f->type)) {
            snprintf(buf, len, "%.*s: field '%.*s' must be %s", mt_len, rt->media_type, name_len,
                     f->name, type_names[f->type]);
            rc = CY_EINVAL;
        }
    }
    json_decref(root);
    return rc;
}

static const char *media_type_of(const cy_received *msg)
{
    for (size_t i = 0; i < msg->n_headers; i++)
        if (msg->headers[i].name && msg->headers[i].value &&
            strcasecmp(msg->headers[i].name, MEDIA_TYPE_HEADER) == 0)
            return msg->headers[i].value;
    return NULL;
}

static cy_outcome router_dispatch(const cy_context *ctx, const cy_received *msg)
{
    cy_router *r = ctx->user;
    if (!atomic_load_explicit(&r->sealed, memory_order_relaxed))
        atomic_store(&r->sealed, true);
    const char *mt = media_type_of(msg);
    const struct route *rt = NULL;
    for (size_t i = 0; mt && i < r->n && !rt; i++)
        if (strcmp(r->routes[i].media_type, mt) == 0)
            rt = &r->routes[i];
    char reason[REASON_BUF];
    if (!rt) {
        if (r->fallback.fn)
            return call(ctx, r->fallback, msg);
        if (!mt)
            return dead(ctx, "no media_type header");
        snprintf(reason, sizeof reason, "no route for media_type '%.*s'",
                 shown_len(mt, REASON_MEDIA_TYPE_MAX), mt);
        return dead(ctx, reason);
    }
    if (rt->n_fields) {
        int rc = check_required(rt, msg, reason, sizeof reason);
        if (rc == CY_ENOMEM)
            return CY_RETRY;
        if (rc)
            return dead(ctx, reason);
    }
    return call(ctx, rt->h, msg);
}
