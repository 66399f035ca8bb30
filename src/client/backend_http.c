/*
 * backend_http.c — the http:// backend of libcoyote: every operation is one
 * POST {base}/api/<op> to a coyoted over a keep-alive HTTP/1.1 connection
 * (API.md §1), made with one libcurl easy handle per backend.
 *
 * URL: "http://host[:port][/prefix]" — host a name, an IPv4 address or a
 * bracketed IPv6 address; port 1..65535, default 8624; the prefix (a reverse
 * proxy's mount point) is kept without its trailing '/'. Rejected (CY_EINVAL):
 * another scheme, userinfo ("user@"), an empty host, a bad port, a query or
 * a fragment.
 *
 * Invariants:
 *  1. One easy handle per backend, reused by every call: its connection cache
 *     keeps the keep-alive connection between calls (calls are serialized by
 *     the client, so there is at most one).
 *  2. A call resets resp, then returns 0 with the HTTP status and the whole
 *     response body in it, or a negative code with *status = 0 (then resp
 *     holds nothing meaningful). timeout_ms bounds the whole call, connection
 *     included (0: no limit); connecting alone gives up after 5 s.
 *  3. A request is sent at most twice. It is sent again, once, on a fresh
 *     connection, only when it went out on a reused connection that failed
 *     before a single response byte came back (the server closed the idle
 *     connection: restart, idle timeout). Never after a timeout. libcurl does
 *     this itself (Curl_retry_request: a reused connection, no byte back); the
 *     retry here covers a libcurl that reports such a failure instead
 *     (CURLOPT_FORBID_RETRY_ON_REUSE in 8.16+, other versions' code paths).
 *     Either way the second attempt is on a new connection and is never
 *     retried. So a request may reach the server twice only when the
 *     server dropped the connection after reading it but before answering:
 *     publishes that must not repeat carry an idempotency key.
 *  4. A 2xx answer carries the requested format in its Content-Type, or the
 *     call is CY_EPROTOCOL: client.c never decodes JSON as MessagePack.
 *  5. Nothing here aborts or signals the host process: CURLOPT_NOSIGNAL (no
 *     SIGALRM for timeouts, MSG_NOSIGNAL instead of SIGPIPE), and allocation
 *     failures are CY_ENOMEM.
 *
 * Error mapping (no answer had):
 *   resolve / connect failure, or a timeout before the connection was up  CY_ECONNECT
 *   timeout after the request went out (its outcome is unknown)           CY_ETIMEDOUT
 *   connection reset / closed before any response byte                    CY_ECONNECT
 *   anything else: a cut-off or malformed answer, a body over 64 MiB      CY_EPROTOCOL
 *   libcurl or the response buffer out of memory                          CY_ENOMEM
 *
 * libcurl's global state: curl_global_init/curl_global_cleanup are reference
 * counted by libcurl itself; each backend takes one reference at open and
 * drops it at close, under one mutex (the calls are not thread-safe in older
 * libcurls), so the last close frees everything and a host program that uses
 * libcurl too keeps working.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "client/backend.h"
#include "coyote.h"

#define DEFAULT_PORT 8624
#define CONNECT_TIMEOUT_MS 5000L
/* Under the server's 120 s idle timeout (http.c), so a connection is retired
 * by the client before the server closes it. */
#define MAX_CONN_AGE_S 60L
#define MAX_RESPONSE_BYTES ((size_t)64 << 20)
#define MAX_HOST_LEN 253
#define MAX_PREFIX_LEN 1024
#define MAX_OP_LEN 128

struct http_backend {
    struct cy_backend base; /* first: the client holds a struct cy_backend * */
    CURL *curl;
    struct curl_slist *headers[2]; /* by enum codec_format */
    char *url;                     /* "http://host:port/prefix/api/" + room for an op */
    size_t base_len;               /* strlen of the part before the op */
};

/* Where one transfer's answer goes (CURLOPT_WRITEDATA / HEADERDATA / PREREQDATA). */
struct sink {
    struct buf *resp;
    size_t header_bytes; /* response bytes seen: headers ... */
    size_t body_bytes;   /* ... and body */
    bool sent;           /* the connection was up and the request about to go out */
    int err;             /* why the write callback refused: CY_ENOMEM or CY_EPROTOCOL */
};

/* ---- libcurl's global state -------------------------------------------------------- */

static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;

static int global_acquire(void)
{
    pthread_mutex_lock(&global_lock);
    CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_unlock(&global_lock);
    return cc == CURLE_OK ? 0 : CY_ENOMEM;
}

static void global_release(void)
{
    pthread_mutex_lock(&global_lock);
    curl_global_cleanup();
    pthread_mutex_unlock(&global_lock);
}

/* ---- the URL ------------------------------------------------------------------------- */

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* RFC 3986 pchar (unreserved, pct-encoded, sub-delims, ':' '@') and '/'. */
static bool is_path_char(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-._~%!$&'()*+,;=:@/", c) != NULL;
}

static bool is_op_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* Parse url (see the top of this file) into a malloc'd "http://host:port/prefix/api/"
 * with MAX_OP_LEN + 1 spare bytes for the op; *base_len gets its length.
 * 0, CY_EINVAL or CY_ENOMEM. */
static int parse_url(const char *url, char **out, size_t *base_len)
{
    static const char scheme[] = "http://";
    if (!url || strncasecmp(url, scheme, sizeof scheme - 1))
        return CY_EINVAL;
    const char *auth = url + sizeof scheme - 1;
    size_t auth_len = strcspn(auth, "/?#");
    if (memchr(auth, '@', auth_len))
        return CY_EINVAL; /* userinfo: credentials travel as a token, never in the URL */

    const char *host, *after; /* the host's bytes, and what follows it in auth */
    size_t host_len;
    bool ipv6 = auth[0] == '[';
    if (ipv6) {
        const char *close = memchr(auth, ']', auth_len);
        if (!close)
            return CY_EINVAL;
        host = auth + 1;
        host_len = (size_t)(close - host);
        char addr[INET6_ADDRSTRLEN];
        struct in6_addr in6;
        if (host_len == 0 || host_len >= sizeof addr)
            return CY_EINVAL;
        memcpy(addr, host, host_len);
        addr[host_len] = '\0';
        if (inet_pton(AF_INET6, addr, &in6) != 1)
            return CY_EINVAL; /* also rejects zone ids ("%25eth0") */
        after = close + 1;
    } else {
        host = auth;
        host_len = strcspn(auth, ":/?#");
        if (host_len == 0 || host_len > MAX_HOST_LEN)
            return CY_EINVAL;
        for (size_t i = 0; i < host_len; i++)
            if (!is_host_char(host[i]))
                return CY_EINVAL;
        after = host + host_len;
    }

    const char *end = auth + auth_len;
    unsigned long port = DEFAULT_PORT;
    if (after < end) {
        if (*after != ':' || after + 1 == end || end - (after + 1) > 5)
            return CY_EINVAL;
        port = 0;
        for (const char *p = after + 1; p < end; p++) {
            if (*p < '0' || *p > '9')
                return CY_EINVAL;
            port = port * 10 + (unsigned long)(*p - '0');
        }
        if (port == 0 || port > 65535)
            return CY_EINVAL;
    }

    if (*end == '?' || *end == '#')
        return CY_EINVAL;
    size_t prefix_len = strlen(end);
    for (size_t i = 0; i < prefix_len; i++)
        if (!is_path_char(end[i]))
            return CY_EINVAL;
    while (prefix_len > 0 && end[prefix_len - 1] == '/')
        prefix_len--;
    if (prefix_len > MAX_PREFIX_LEN)
        return CY_EINVAL;

    /* "http://" [ "[" ] host [ "]" ] ":" port prefix "/api/" op NUL */
    size_t cap = sizeof scheme - 1 + 2 + host_len + 6 + prefix_len + 5 + MAX_OP_LEN + 1;
    char *s = malloc(cap);
    if (!s)
        return CY_ENOMEM;
    int n = snprintf(s, cap, "http://%s%.*s%s:%lu%.*s/api/", ipv6 ? "[" : "", (int)host_len, host,
                     ipv6 ? "]" : "", port, (int)prefix_len, end);
    if (n < 0 || (size_t)n + MAX_OP_LEN + 1 > cap) {
        free(s);
        return CY_EINVAL; /* cannot happen: cap counts every byte */
    }
    *out = s;
    *base_len = (size_t)n;
    return 0;
}

/* ---- libcurl callbacks ------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct sink *k = arg;
    size_t n = size * nmemb;
    k->body_bytes += n;
    if (n > MAX_RESPONSE_BYTES - k->resp->len) {
        k->err = CY_EPROTOCOL;
        return 0; /* makes the transfer fail with CURLE_WRITE_ERROR */
    }
    if (buf_reserve(k->resp, n)) {
        k->err = CY_ENOMEM;
        return 0;
    }
    memcpy(k->resp->data + k->resp->len, data, n);
    k->resp->len += n;
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    struct sink *k = arg;
    k->header_bytes += size * nmemb;
    return size * nmemb;
}

#if LIBCURL_VERSION_NUM >= 0x075000 /* CURLOPT_PREREQFUNCTION: 7.80.0 */
static int on_prereq(void *arg, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    struct sink *k = arg;
    k->sent = true;
    return CURL_PREREQFUNC_OK;
}
#endif

/* ---- a call ------------------------------------------------------------------------ */

/* The transfer failed on a connection from an earlier call before any byte of
 * an answer came back: the server had closed it (idle timeout, restart). */
static bool stale_connection(CURL *curl, CURLcode cc, const struct sink *k)
{
    if (cc != CURLE_SEND_ERROR && cc != CURLE_RECV_ERROR && cc != CURLE_GOT_NOTHING)
        return false;
    if (k->header_bytes || k->body_bytes)
        return false;
    long connects = -1;
    if (curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects) != CURLE_OK)
        return false;
    return connects == 0; /* no new connection: the transfer reused one */
}

static int map_error(CURLcode cc, const struct sink *k)
{
    switch (cc) {
    case CURLE_OUT_OF_MEMORY: return CY_ENOMEM;
    case CURLE_WRITE_ERROR: return k->err ? k->err : CY_EPROTOCOL;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT: return CY_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT:
#if LIBCURL_VERSION_NUM >= 0x075000
        /* Never connected: nothing was sent, the server is just unreachable. */
        if (!k->sent)
            return CY_ECONNECT;
#endif
        return CY_ETIMEDOUT;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING: return k->header_bytes || k->body_bytes ? CY_EPROTOCOL : CY_ECONNECT;
    default:
        return CY_EPROTOCOL; /* cut-off body, malformed answer, too large (FILESIZE_EXCEEDED) */
    }
}

static int http_call(struct cy_backend *b, const char *op, enum codec_format fmt,
                     const uint8_t *body, size_t len, uint64_t timeout_ms, int *status,
                     struct buf *resp)
{
    struct http_backend *be = (struct http_backend *)b;
    CURL *curl = be->curl;
    *status = 0;
    if (!op || (fmt != FORMAT_JSON && fmt != FORMAT_MSGPACK) || (!body && len))
        return CY_EINVAL;
    size_t op_len = strlen(op);
    if (op_len == 0 || op_len > MAX_OP_LEN)
        return CY_EINVAL;
    for (size_t i = 0; i < op_len; i++)
        if (!is_op_char(op[i]))
            return CY_EINVAL;
    memcpy(be->url + be->base_len, op, op_len + 1);

    struct sink k = {.resp = resp};
    long timeout = timeout_ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)timeout_ms;
    CURLcode cc = curl_easy_setopt(curl, CURLOPT_URL, be->url);
    if (!cc)
        cc = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, be->headers[fmt]);
    if (!cc)
        cc = curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (!cc) /* never NULL: libcurl would read the body from stdin */
        cc = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
    if (!cc)
        cc = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout);
    if (!cc)
        cc = curl_easy_setopt(curl, CURLOPT_WRITEDATA, &k);
    if (!cc)
        cc = curl_easy_setopt(curl, CURLOPT_HEADERDATA, &k);
#if LIBCURL_VERSION_NUM >= 0x075000
    if (!cc)
        cc = curl_easy_setopt(curl, CURLOPT_PREREQDATA, &k);
#endif
    if (cc)
        return cc == CURLE_OUT_OF_MEMORY ? CY_ENOMEM : CY_EPROTOCOL;

    int rc = 0;
    bool fresh = false;
    for (;;) {
        buf_reset(resp);
        k.header_bytes = k.body_bytes = 0;
        k.sent = false;
        k.err = 0;
        cc = curl_easy_perform(curl);
        if (cc == CURLE_OK)
            break;
        if (!fresh && stale_connection(curl, cc, &k)) {
            fresh = true;
            if (curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L) == CURLE_OK)
                continue;
        }
        rc = map_error(cc, &k);
        break;
    }
    if (fresh)
        curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 0L);
    /* Nothing may keep pointing at the caller's memory after the call. */
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, NULL);
#if LIBCURL_VERSION_NUM >= 0x075000
    curl_easy_setopt(curl, CURLOPT_PREREQDATA, NULL);
#endif
    if (rc)
        return rc;

    long code = 0;
    if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code < 100 ||
        code > 999)
        return CY_EPROTOCOL;
    if (code >= 200 && code <= 299) {
        char *ctype = NULL;
        enum codec_format got;
        if (curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ctype) != CURLE_OK ||
            codec_content_type(ctype, &got) != 0 || got != fmt)
            return CY_EPROTOCOL;
    }
    *status = (int)code;
    return 0;
}

static void http_free(struct http_backend *be)
{
    if (be->curl)
        curl_easy_cleanup(be->curl);
    curl_slist_free_all(be->headers[0]);
    curl_slist_free_all(be->headers[1]);
    free(be->url);
    free(be);
}

static int http_close(struct cy_backend *b)
{
    if (!b)
        return 0;
    http_free((struct http_backend *)b);
    global_release();
    return 0;
}

static const struct cy_backend_ops http_ops = {
    .name = "http",
    .call = http_call,
    .close = http_close,
};

/* ---- open ---------------------------------------------------------------------------- */

/* A bearer token must fit in one header line: visible ASCII, no spaces. */
static bool token_ok(const char *t)
{
    for (; *t; t++)
        if (*t < 0x21 || *t > 0x7e)
            return false;
    return true;
}

/* The fixed headers of every request in fmt; NULL when out of memory. */
static struct curl_slist *make_headers(enum codec_format fmt, const char *auth)
{
    const char *mime = fmt == FORMAT_MSGPACK ? "application/msgpack" : "application/json";
    char ctype[64], accept[64];
    snprintf(ctype, sizeof ctype, "Content-Type: %s", mime);
    snprintf(accept, sizeof accept, "Accept: %s", mime);
    /* "Expect:" — no 100-continue round trip before large bodies. */
    const char *lines[] = {ctype, accept, "Expect:", auth};
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (!lines[i])
            continue;
        struct curl_slist *l = curl_slist_append(list, lines[i]);
        if (!l) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = l;
    }
    return list;
}

/* The options every call shares. 0 or a CURLcode. */
static CURLcode set_fixed_options(CURL *curl)
{
    CURLcode cc = CURLE_OK;
#define SET(opt, val)                              \
    do {                                           \
        if (!cc)                                   \
            cc = curl_easy_setopt(curl, opt, val); \
    } while (0)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    SET(CURLOPT_MAXAGE_CONN, MAX_CONN_AGE_S);
    SET(CURLOPT_MAXCONNECTS, 1L);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MAX_RESPONSE_BYTES);
    /* The broker is talked to directly: no http_proxy from the environment. */
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    SET(CURLOPT_PROTOCOLS_STR, "http");
#else
    SET(CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
    SET(CURLOPT_USERAGENT, "libcoyote/0.1.0");
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_HEADERFUNCTION, on_header);
#if LIBCURL_VERSION_NUM >= 0x075000
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
#endif
#undef SET
    return cc;
}

int backend_http_open(const struct cy_backend_config *cfg, struct cy_backend **out)
{
    if (!out)
        return CY_EINVAL;
    *out = NULL;
    if (!cfg)
        return CY_EINVAL;
    const char *token = cfg->token && cfg->token[0] ? cfg->token : NULL;
    if (token && !token_ok(token))
        return CY_EINVAL;

    char *url;
    size_t base_len;
    int rc = parse_url(cfg->url, &url, &base_len);
    if (rc)
        return rc;
    rc = global_acquire();
    if (rc) {
        free(url);
        return rc;
    }
    struct http_backend *be = calloc(1, sizeof *be);
    if (!be) {
        free(url);
        global_release();
        return CY_ENOMEM;
    }
    be->base.ops = &http_ops;
    be->url = url;
    be->base_len = base_len;

    char *auth = NULL;
    if (token) {
        static const char bearer[] = "Authorization: Bearer ";
        size_t n = strlen(token);
        auth = malloc(sizeof bearer + n);
        if (!auth)
            goto nomem;
        memcpy(auth, bearer, sizeof bearer - 1);
        memcpy(auth + sizeof bearer - 1, token, n + 1);
    }
    be->headers[FORMAT_JSON] = make_headers(FORMAT_JSON, auth);
    be->headers[FORMAT_MSGPACK] = make_headers(FORMAT_MSGPACK, auth);
    free(auth); /* curl_slist_append copied it */
    if (!be->headers[FORMAT_JSON] || !be->headers[FORMAT_MSGPACK])
        goto nomem;
    be->curl = curl_easy_init();
    if (!be->curl)
        goto nomem;
    CURLcode cc = set_fixed_options(be->curl);
    if (cc) {
        rc = cc == CURLE_OUT_OF_MEMORY ? CY_ENOMEM : CY_EPROTOCOL;
        goto fail;
    }
    *out = &be->base;
    return 0;

nomem:
    rc = CY_ENOMEM;
fail:
    http_free(be);
    global_release();
    return rc;
}
