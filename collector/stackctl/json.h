/* A small streaming JSON writer (stackctl's --json output). */
#ifndef STACKWATCH_COLLECTOR_JSON_H
#define STACKWATCH_COLLECTOR_JSON_H

#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 32

typedef struct json_s {
    FILE *f;
    int depth;                    /* open containers */
    int count[JSON_MAX_DEPTH];    /* members written in each */
    int pretty;                   /* indent with two spaces */
} json_t;

void json_init(json_t *j, FILE *f, int pretty);

/* key is the member name inside an object, NULL inside an array or at top. */
void json_obj_begin(json_t *j, const char *key);
void json_obj_end(json_t *j);
void json_arr_begin(json_t *j, const char *key);
void json_arr_end(json_t *j);
void json_str(json_t *j, const char *key, const char *v);   /* NULL writes null */
void json_u64(json_t *j, const char *key, uint64_t v);
void json_i64(json_t *j, const char *key, int64_t v);
void json_bool(json_t *j, const char *key, int v);
void json_null(json_t *j, const char *key);
void json_hex(json_t *j, const char *key, uint64_t v, int width); /* "0x..." string */
void json_double(json_t *j, const char *key, double v); /* finite, %.6g; else null */

/* Writes s as a JSON string literal: escapes, and invalid UTF-8 as U+FFFD. */
void json_write_string(FILE *f, const char *s);

#endif
