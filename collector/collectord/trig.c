/* Trigger rules: which symbolized stacks to arm in their agent, and what a firing does. */
#include "trig.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sym.h"

static void rule_free(trig_rule_t *r)
{
    if (r->match)
        regfree(&r->re_match);
    if (r->module)
        regfree(&r->re_module);
    free(r->match);
    free(r->module);
    free(r);
}

static int compile(regex_t *re, const char *pat, const char *what, char *err, size_t errlen)
{
    int rc = regcomp(re, pat, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[256];
        regerror(rc, re, msg, sizeof msg);
        snprintf(err, errlen, "%s regex '%s': %s", what, pat, msg);
        return -EINVAL;
    }
    return 0;
}

int trig_add(trig_t *t, const char *match, const char *module, uint64_t stack_id, int frame,
             uint32_t min_depth, uint32_t pid, int sig, uint32_t count, char *err, size_t errlen)
{
    if (match && !*match)
        match = NULL;
    if (module && !*module)
        module = NULL;
    if (!match && !module && !stack_id) {
        snprintf(err, errlen, "a rule needs --match, --module or --stack");
        return -EINVAL;
    }
    if (stack_id && !pid) {
        snprintf(err, errlen, "--stack needs --pid: stack ids belong to one process");
        return -EINVAL;
    }
    if (sig < 0 || sig > 64 || sig == SIGKILL || sig == SIGSTOP) {
        snprintf(err, errlen, "signal %d cannot be used", sig);
        return -EINVAL;
    }
    if (t->n >= TRIG_RULES_MAX) {
        snprintf(err, errlen, "at most %d rules", TRIG_RULES_MAX);
        return -ENOSPC;
    }
    trig_rule_t *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int rc;
    if (match) {
        if ((rc = compile(&r->re_match, match, "--match", err, errlen)) < 0)
            goto err;
        if (!(r->match = strdup(match))) {
            regfree(&r->re_match);
            rc = -ENOMEM;
            goto err;
        }
    }
    if (module) {
        if ((rc = compile(&r->re_module, module, "--module", err, errlen)) < 0)
            goto err;
        if (!(r->module = strdup(module))) {
            regfree(&r->re_module);
            rc = -ENOMEM;
            goto err;
        }
    }
    r->id = ++t->next_id;
    r->stack_id = stack_id;
    r->frame = frame;
    r->min_depth = min_depth;
    r->pid = pid;
    r->sig = sig;
    r->count = count ? count : TRIG_COUNT_DEFAULT;
    trig_rule_t **pp = &t->rules;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
    t->n++;
    return (int)r->id;
err:
    if (r->match) {
        regfree(&r->re_match);
        free(r->match);
    }
    free(r);
    return rc;
}

int trig_rm(trig_t *t, uint32_t id)
{
    for (trig_rule_t **pp = &t->rules; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            trig_rule_t *r = *pp;
            *pp = r->next;
            t->n--;
            rule_free(r);
            return 0;
        }
    }
    return -ENOENT;
}

trig_rule_t *trig_get(trig_t *t, uint32_t id)
{
    for (trig_rule_t *r = t->rules; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

int trig_needs_symbols(const trig_t *t)
{
    for (const trig_rule_t *r = t->rules; r; r = r->next)
        if (r->match || r->module)
            return 1;
    return 0;
}

static int frame_matches(const trig_rule_t *r, const symframe_t *f)
{
    if (r->match && (!f->function || regexec(&r->re_match, f->function, 0, NULL, 0) != 0))
        return 0;
    if (r->module && (!f->module || regexec(&r->re_module, f->module, 0, NULL, 0) != 0))
        return 0;
    return 1;
}

static int rule_matches(const trig_rule_t *r, const client_t *c, const cstack_t *s)
{
    if (r->pid && r->pid != c->pid)
        return 0;
    if (r->leaking && s->klass != CLASS_LEAK && s->klass != CLASS_GROWING)
        return 0; /* not (yet) a leak: evaluated again when it becomes one */
    if (r->stack_id && r->stack_id != s->id)
        return 0;
    if (!r->match && !r->module)
        return s->npcs >= r->min_depth;
    /* The report's frames: allocation wrappers (s->skip) are not counted. */
    const symres_t *sr = cstack_sym(c, s);
    uint32_t skip = sr && s->skip < sr->n ? s->skip : 0;
    if (!sr || sr->n - skip < r->min_depth)
        return 0;
    if (r->frame >= 0)
        return (uint32_t)r->frame < sr->n - skip && frame_matches(r, &sr->f[skip + r->frame]);
    for (uint32_t i = skip; i < sr->n; i++)
        if (frame_matches(r, &sr->f[i]))
            return 1;
    return 0;
}

trig_rule_t *trig_match(trig_t *t, const client_t *c, const cstack_t *s)
{
    for (trig_rule_t *r = t->rules; r; r = r->next)
        if (rule_matches(r, c, s))
            return r;
    return NULL;
}

void trig_free(trig_t *t)
{
    while (t->rules) {
        trig_rule_t *r = t->rules;
        t->rules = r->next;
        rule_free(r);
    }
    t->n = 0;
}
