/* stackctl attach and detach: the entry points the injector calls in a running process.
 *
 * The injected dlopen runs the constructor, which only notices that the
 * program's malloc is not the agent's and stays dormant: it runs under the
 * loader lock, in a thread stopped at an arbitrary point. The work happens
 * here, in a call stackctl makes after dlopen returned, in a thread it chose
 * outside libc and the dynamic linker (or blocked in a system call). */
#include "attach.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>

#include "agent.h"
#include "config.h"
#include "flush.h"
#include "got.h"
#include "hook.h"
#include "log.h"
#include "real.h"
#include "state.h"
#include "tstate.h"
#include "unwind.h"

/* How long a detach waits for threads inside the agent to leave it. */
#define QUIESCE_MS 2000

#define EXPORT __attribute__((visibility("default")))

static void say(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *msg, size_t len, const char *fmt, ...)
{
    if (!msg || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vfmt(msg, len, fmt, ap);
    va_end(ap);
}

EXPORT int stackwatch_attach(const char *list, char *msg, size_t msglen)
{
    int rc;
    tstate_t *t = &tstate;
    int guard = t->guard;
    t->guard = 1; /* nothing this thread allocates here is the program's */
    say(msg, msglen, "%s", "");
    if (agent.mode == AGENT_PRELOADED) {
        say(msg, msglen, "the agent is preloaded in this process (LD_PRELOAD): it is traced "
                         "already");
        rc = -EALREADY;
        goto out;
    }
    if (agent.mode == AGENT_ATTACHED) {
        say(msg, msglen, "already attached");
        rc = -EALREADY;
        goto out;
    }
    if (flush_stuck()) {
        say(msg, msglen, "the flusher of the last session did not stop; cannot attach again");
        rc = -EBUSY;
        goto out;
    }
    if ((rc = real_resolve_global()) < 0) {
        say(msg, msglen, "malloc, free, calloc, realloc or dlopen not found in the process");
        goto out;
    }
    int first = !agent.set_up;
    if (first) {
        rc = agent_setup(list);
        if (rc == -ECANCELED) {
            say(msg, msglen, "STACKWATCH_DISABLE is set, or the directory %s is unusable",
                cfg.dir);
            goto out;
        }
        if (rc < 0) {
            say(msg, msglen, "cannot map the agent's tables (%s)", strerror(-rc));
            goto out;
        }
        if (cfg.py_allocators)
            hook_pyalloc_enable();
        int n;
        const got_target_t *tg = hook_targets(&n);
        if ((rc = got_init(tg, n)) < 0) {
            say(msg, msglen, "cannot map the patch table");
            goto out;
        }
    } else {
        /* Again after a detach: a new session, and the settings given now,
         * but sampling and unwinding stay as the tables were set up. */
        cfg_t before = cfg;
        log_open(cfg_list_get(list, "STACKWATCH_LOG")); /* closed at the detach */
        cfg_load_list(agent.exe, list);
        if (strcmp(before.sample, cfg.sample) != 0 || before.unwind != cfg.unwind)
            log_msg("attach: sampling and unwinding stay as the first attach set them (%s)",
                    before.sample);
        memcpy(cfg.sample, before.sample, sizeof cfg.sample);
        cfg.sample_bytes = before.sample_bytes;
        cfg.unwind = before.unwind;
        cfg.fp_modules = before.fp_modules;
        if (!cfg.enabled) {
            say(msg, msglen, "STACKWATCH_DISABLE is set, or the directory %s is unusable",
                cfg.dir);
            rc = -ECANCELED;
            goto out;
        }
        agent_new_session();
        int n;
        const got_target_t *tg = hook_targets(&n);
        got_init(tg, n);
        tstate_discard(); /* events a stray call left after the last session */
    }
    rc = flush_connect();
    if (rc < 0) {
        say(msg, msglen, "no collector at %s (%s): start one with collectord start", cfg.sock,
            strerror(-rc));
        goto fail;
    }
    agent.mode = AGENT_ATTACHED;
    if ((rc = flush_start()) < 0) {
        say(msg, msglen, "cannot start the flusher thread (%s)", strerror(-rc));
        flush_disconnect();
        agent.mode = AGENT_DETACHED;
        goto fail;
    }
    agent.started = 1;
    atomic_store(&agent.recording, 1);
    rc = got_patch();
    if (rc <= 0) {
        say(msg, msglen, "no allocator entry to patch (a statically linked allocator?)");
        /* Keep the session: the collector shows the process; it records nothing. */
        rc = 0;
        goto out;
    }
    say(msg, msglen, "tracing from now on: %u allocator entries patched in %u modules",
        got_entries(), got_modules());
    rc = 0;
    goto out;
fail:
    if (agent.mode != AGENT_DETACHED)
        agent.mode = first ? AGENT_DORMANT : AGENT_DETACHED;
    /* Nothing of the agent runs (no flusher, nothing patched): the fds it
     * opened for this attach go, as at a detach. */
    flush_close_fds();
    log_close();
out:
    t->guard = guard;
    return rc;
}

EXPORT int stackwatch_detach(char *msg, size_t msglen)
{
    tstate_t *t = &tstate;
    int guard = t->guard;
    int rc = 0;
    t->guard = 1;
    say(msg, msglen, "%s", "");
    if (agent.mode == AGENT_PRELOADED) {
        say(msg, msglen, "the agent is preloaded (LD_PRELOAD), not attached: it cannot detach");
        rc = -EINVAL;
        goto out;
    }
    if (agent.mode != AGENT_ATTACHED) {
        say(msg, msglen, "not attached");
        rc = -ENOTCONN;
        goto out;
    }
    /* No new call enters the hooks once the entries are back; calls in
     * flight finish; recording stops before the last drain. */
    int n = got_restore();
    if (flush_detach() < 0) {
        say(msg, msglen, "detached (%d allocator entries restored); the flusher did not stop "
                         "within its deadline", n);
    } else if (flush_quiesce(QUIESCE_MS) < 0) {
        /* A thread still inside the agent could write to an fd number
         * the program reuses: the agent's fds stay open. */
        say(msg, msglen, "detached: %d allocator entries restored, the process runs on "
                         "untraced; the agent's fds stay open (a thread was still inside it)",
            n);
    } else {
        /* Nothing of the agent runs now: its fds go (the flusher's
         * eventfd, the log's, libunwind's validation pipe); the next
         * attach opens what it needs again. */
        flush_close_fds();
        unwind_close_fds();
        log_close();
        say(msg, msglen, "detached: %d allocator entries restored, the process runs on untraced",
            n);
    }
    agent.started = 0;
    agent.mode = AGENT_DETACHED;
out:
    t->guard = guard;
    return rc;
}
