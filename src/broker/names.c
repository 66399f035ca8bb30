/*
 * names.c — validation of the names and ids of API.md §2, and the error
 * helpers every broker file uses.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "broker/broker_int.h"
#include "coyote.h"

int berr(struct broker_error *err, int status, const char *code, const char *location,
         const char *fmt, ...)
{
    if (err) {
        err->status = status;
        err->code = code;
        snprintf(err->location, sizeof err->location, "%s", location ? location : "");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof err->detail, fmt, ap);
        va_end(ap);
    }
    return status == 422 || status == 400 ? CY_EINVAL : CY_EREADONLY;
}

int berr_storage(struct broker_error *err, int rc)
{
    if (rc == CY_EREADONLY || rc == -ENOSPC || rc == -EIO || rc == -EDQUOT) {
        berr(err, 503, "storage_unavailable", NULL,
             "The message log cannot be written (%s); nothing was acknowledged.",
             cy_strerror(rc));
        return rc;
    }
    berr(err, 500, "internal_error", NULL, "Internal error: %s.", cy_strerror(rc));
    return rc;
}

bool bstr_eq(struct bstr a, const char *p, size_t n)
{
    return a.n == n && (n == 0 || memcmp(a.p, p, n) == 0);
}

int broker_check_namespace_name(struct bstr s, const char *field, struct broker_error *err)
{
    if (s.n < 1 || s.n > 256)
        return berr(err, 422, "invalid_data", field,
                    "Namespace name must be 1 to 256 bytes long.");
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '/' || c == '_' || c == '.' || c == '=' || c == '+';
        if (!ok)
            return berr(err, 422, "invalid_data", field,
                        "Namespace name may only contain letters, digits and - / _ . = +.");
    }
    return 0;
}

int broker_check_group_name(struct bstr s, const char *field, struct broker_error *err)
{
    if (s.n < 1 || s.n > 64)
        return berr(err, 422, "invalid_data", field,
                    "Consumer group name must be 1 to 64 bytes long.");
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok)
            return berr(err, 422, "invalid_data", field,
                        "Consumer group name may only contain letters, digits and _ . -.");
    }
    return 0;
}

/* Length of the valid UTF-8 sequence at p (code point in *cp), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

static int check_topic_name(struct bstr s, const char *field, struct broker_error *err)
{
    if (s.n < 1 || s.n > 64)
        return berr(err, 422, "invalid_data", field, "Topic name must be 1 to 64 bytes long.");
    const unsigned char *p = (const unsigned char *)s.p;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        size_t k = utf8_seq(p + i, s.n - i, &cp);
        if (!k)
            return berr(err, 422, "invalid_data", field, "Topic name must be valid UTF-8.");
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F))
            return berr(err, 422, "invalid_data", field,
                        "Topic name must not contain control characters.");
        if (cp == '~')
            return berr(err, 422, "invalid_data", field, "Topic name must not contain '~'.");
        i += k;
    }
    return 0;
}

int broker_parse_topic_ref(struct bstr s, const char *field, struct broker_topic_ref *out,
                           struct broker_error *err)
{
    size_t tilde = s.n;
    for (size_t i = s.n; i-- > 0;)
        if (s.p[i] == '~') {
            tilde = i;
            break;
        }
    out->name.p = s.p;
    out->name.n = tilde;
    out->partition = -1;
    if (tilde < s.n) {
        size_t nd = s.n - tilde - 1;
        uint32_t v = 0;
        if (nd == 0)
            return berr(err, 422, "invalid_data", field,
                        "Partition in '<topic>~<partition>' must be a decimal number below 64.");
        for (size_t i = tilde + 1; i < s.n; i++) {
            if (s.p[i] < '0' || s.p[i] > '9')
                return berr(err, 422, "invalid_data", field,
                            "Partition in '<topic>~<partition>' must be a decimal number below "
                            "64.");
            /* leading zeros are the same number, however many; saturates */
            if (v < BROKER_MAX_PARTITIONS)
                v = v * 10 + (uint32_t)(s.p[i] - '0');
        }
        if (v >= BROKER_MAX_PARTITIONS)
            return berr(err, 422, "invalid_data", field,
                        "Partition in '<topic>~<partition>' must be a decimal number below 64.");
        out->partition = (int32_t)v;
    }
    return check_topic_name(out->name, field, err);
}

int broker_parse_msg_id(struct bstr s, const char *field, struct broker_msg_id *out,
                        struct broker_error *err)
{
    size_t colon = s.n;
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] == ':') {
            colon = i;
            break;
        }
    uint64_t p = 0, o = 0;
    bool ok = colon > 0 && colon < s.n - 1 && colon <= 2;
    for (size_t i = 0; ok && i < colon; i++) {
        ok = s.p[i] >= '0' && s.p[i] <= '9';
        p = p * 10 + (uint64_t)(s.p[i] - '0');
    }
    for (size_t i = colon + 1; ok && i < s.n; i++) {
        ok = s.p[i] >= '0' && s.p[i] <= '9';
        uint64_t d = (uint64_t)(s.p[i] - '0');
        if (ok && o > (UINT64_MAX - d) / 10)
            ok = false;
        o = o * 10 + d;
    }
    if (!ok || p >= BROKER_MAX_PARTITIONS)
        return berr(err, 422, "invalid_data", field,
                    "Message id must look like '<partition>:<offset>'.");
    out->partition = (uint32_t)p;
    out->offset = o;
    return 0;
}
