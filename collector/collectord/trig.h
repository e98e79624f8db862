/* Trigger rules: which symbolized stacks to arm in their agent, and what a firing does. */
#ifndef STACKWATCH_COLLECTOR_TRIG_H
#define STACKWATCH_COLLECTOR_TRIG_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"

#define TRIG_COUNT_DEFAULT 3
#define TRIG_RULES_MAX 256

typedef struct trig_rule_s {
    uint32_t id;             /* assigned, never reused in one collectord run */
    char *match;             /* regex on function names (NULL: none) */
    char *module;            /* regex on module paths (NULL: none) */
    regex_t re_match, re_module;
    uint64_t stack_id;       /* a stack fingerprint (0: none) */
    int frame;               /* frame index the match must be at (-1: any) */
    uint32_t min_depth;      /* frames the stack must have at least */
    uint32_t pid;            /* 0: every process */
    int sig;                 /* signal to raise on a firing (0: none) */
    uint32_t count;          /* firings per stack */
    uint64_t fired;          /* firings reported (notes received) */
    uint32_t armed;          /* stacks armed by this rule */
    int leaking;             /* only stacks with may-leak blocks */
    struct trig_rule_s *next;
} trig_rule_t;

typedef struct trig_s {
    trig_rule_t *rules;      /* in creation order */
    uint32_t n;
    uint32_t next_id;
} trig_t;

/* Adds a rule (copies strings, compiles regexes). Needs one of match,
 * module, stack_id. Returns the id, or -EINVAL with a message in err, or
 * -ENOSPC past TRIG_RULES_MAX, -ENOMEM. */
int trig_add(trig_t *t, const char *match, const char *module, uint64_t stack_id, int frame,
             uint32_t min_depth, uint32_t pid, int sig, uint32_t count, char *err, size_t errlen);

/* Removes a rule. Returns 0 or -ENOENT. */
int trig_rm(trig_t *t, uint32_t id);

trig_rule_t *trig_get(trig_t *t, uint32_t id);

/* The first rule matching a stack of client c, given its report frames (from
 * the symbolizer; NULL when not symbolized: only stack-id rules can match).
 * NULL if none. */
trig_rule_t *trig_match(trig_t *t, const client_t *c, const cstack_t *s);

/* 1 if some rule needs function or module names (stacks must be symbolized). */
int trig_needs_symbols(const trig_t *t);

void trig_free(trig_t *t);

#endif
