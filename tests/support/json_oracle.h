/*
 * json_oracle.h — the jansson-based JSON reader that codec_parse_json
 * replaced, for tests and fuzz targets only (tests/support/json_oracle.c):
 * the reference the hand-written parser is compared with.
 */
#ifndef COYOTE_TESTS_JSON_ORACLE_H
#define COYOTE_TESTS_JSON_ORACLE_H

#include <stddef.h>
#include <stdint.h>

#include "server/codec.h"

/* Exactly codec_parse_json's contract (codec.h), through jansson. */
enum codec_err json_oracle_parse(const uint8_t *body, size_t len, struct arena *a, struct val **out,
                                 char *detail, size_t detail_len, char *location,
                                 size_t location_len);

#endif
