/* The agent's lifecycle: start, sessions, fork, the end of the process (exit, main's return). */
#include "agent.h"
#include "arm.h"
#include "note.h"
#include "pyframes.h"
#include "sample.h"
#include "state.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "emit.h"
#include "flush.h"
#include "got.h"
#include "intern.h"
#include "log.h"
#include "modmap.h"
#include "real.h"
#include "tstate.h"
#include "unwind.h"

#define INTERN_SLOTS (1u << 17)      /* distinct stacks per process */
#define INTERN_POOL_PCS (1u << 22)   /* 32 MiB of pcs, reserved, touched on use */
#define EXPORT __attribute__((visibility("default")))

void agent_begin_end(const char *why)
{
    if (!agent.enabled || !agent.started)
        return;
    /* Before the end is stamped: what other threads free meanwhile is
     * still recorded, so the scan sees the heap as it is. */
    if (!atomic_load(&agent.end_ts))
        flush_scan_at_end(why);
    uint64_t none = 0, ts = clock_now_ns();
    if (!atomic_compare_exchange_strong(&agent.end_ts, &none, ts))
        return;
    atomic_store(&agent.end_why, why);
    /* After end_ts: a thread that saw recording still on stamps after it,
     * and the flusher holds such events back until the Ending is out. */
    atomic_store(&agent.recording, 0);
    flush_kick();
}

/* ---------------------------------------------------------------- the end of the process */

/* exit() and a return from main begin the end of the process: atexit
 * handlers, C++ static destructors and library destructors then free what
 * the program held, and that is teardown, not behaviour (the report keeps
 * the verdicts of its last live moment). _exit and abort free nothing. */
EXPORT void exit(int status)
{
    agent_begin_end("exit");
    if (!real_ready() || !real_fn.exit)
        _exit(status);
    real_fn.exit(status);
    __builtin_unreachable();
}

/* exit under a name that binds inside the agent: attach mode patches the
 * program's exit entries to it (hook_targets). */
extern __typeof(exit) agent_self_exit
    __attribute__((alias("exit"), copy(exit), visibility("hidden")));

static int (*app_main)(int, char **, char **);

/* The linker's bounds of the section holding main_then_end. */
extern const char __start_sw_mainwrap[] __attribute__((visibility("hidden")));
extern const char __stop_sw_mainwrap[] __attribute__((visibility("hidden")));

/* Where the main wrapper's code is (hidden from stacks). */
static void main_wrapper_range(uint64_t *lo, uint64_t *hi)
{
    *lo = (uint64_t)(uintptr_t)__start_sw_mainwrap;
    *hi = (uint64_t)(uintptr_t)__stop_sw_mainwrap;
}

/* main as the program wrote it, then the start of its end. This frame sits
 * between main and libc in every stack of the main thread: the unwinder
 * drops agent frames wherever they are. */
__attribute__((noinline, section("sw_mainwrap"))) static int main_then_end(int argc, char **argv,
                                                                          char **envp)
{
    int rc = app_main(argc, argv, envp);
    agent_begin_end("main returned");
    return rc;
}

/* glibc calls main from here (the program's _start calls it through the
 * PLT); libc's own exit after main is not interposable, so main is wrapped. */
EXPORT int __libc_start_main(int (*main_fn)(int, char **, char **), int argc, char **argv,
                             void (*init)(void), void (*fini)(void), void (*rtld_fini)(void),
                             void *stack_end)
{
    if (!real_ready() || !real_fn.libc_start_main)
        _exit(127); /* cannot happen: libc is loaded before any program starts */
    app_main = main_fn;
    int wrap = agent.started && agent.enabled;
    return real_fn.libc_start_main(wrap ? main_then_end : main_fn, argc, argv, init, fini,
                                   rtld_fini, stack_end);
}

/* ---------------------------------------------------------------- start, sessions, fork */

static uint64_t new_instance(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != sizeof v)
        v = clock_realtime_ns() ^ ((uint64_t)getpid() << 32) ^ clock_now_ns();
    return v ? v : 1;
}

static int tracing(void)
{
    return agent.enabled && agent.started &&
           (agent.mode == AGENT_PRELOADED || agent.mode == AGENT_ATTACHED);
}

static int fork_locked; /* the prepare handler took the lock */
static int fork_gate_late;        /* ... while a thread was still inside the agent */
static int fork_map_locked;       /* ... and the module map's lock */
static _Atomic int fork_gate_logged;

static void fork_prepare(void)
{
    got_fork_prepare();
    fork_locked = tracing();
    if (fork_locked) {
        /* No thread inside libunwind when the child is made (tstate.h). A
         * thread held up longer (stopped in a debugger) is not waited for. */
        fork_gate_late = tstate_fork_gate_close((uint32_t)syscall(SYS_gettid), 1000) < 0;
        fork_map_locked = modmap_lock(1000) == 0;
    }
}

static void fork_parent(void)
{
    if (fork_locked) {
        if (fork_map_locked)
            modmap_unlock();
        tstate_fork_gate_open();
        if (fork_gate_late && !atomic_exchange(&fork_gate_logged, 1))
            log_msg("fork: a thread stayed inside the agent for 1 s (stopped?); forked "
                    "anyway (logged once)");
    }
    got_fork_parent();
}

/* The child keeps nothing of the parent's tracing but the interned stacks
 * and the module map: no rings, no connection, no thread. It starts on its
 * first event, so a child that only execs never shows up as a client. */
static void fork_child(void)
{
    got_fork_child();
    int loader_held = 0;
    if (fork_locked) {
        loader_held = modmap_fork_child() < 0;
        tstate_fork_gate_open();
    }
    if (!tracing())
        return;
    intern_fork_child();
    tstate_fork_child();
    note_fork_child();
    arm_fork_child();
    flush_fork_child();
    atomic_store(&agent.recording, 0);
    agent.ppid = agent.pid;
    agent.pid = getpid();
    agent.parent_instance = agent.instance;
    agent.instance = new_instance();
    agent.start_realtime_ns = clock_realtime_ns();
    atomic_store(&agent.failed_calls, 0);
    atomic_store(&agent.unwind_failures, 0);
    atomic_store(&agent.intern_full, 0);
    atomic_store(&agent.end_ts, 0);
    atomic_store(&agent.child_pending, 1);
    if (loader_held) {
        /* Forked while another thread iterated the loaded objects: the
         * loader's lock stays held in this child, and tracing it (module
         * polls, the unwinder) would block in it. The child runs untraced,
         * as it would without the agent; a parent that execs soon after
         * loses nothing, the exec'd program is traced afresh. */
        agent.enabled = 0;
        atomic_store(&agent.recording, 0);
        atomic_store(&agent.child_pending, 0);
        log_msg("fork: another thread was inside dl_iterate_phdr at the fork (glibc keeps "
                "its lock held in the child): pid %d runs untraced", (int)getpid());
    }
}

int agent_child_start(void)
{
    int expect = 1;
    if (!atomic_compare_exchange_strong(&agent.child_pending, &expect, 2))
        return atomic_load(&agent.recording);
    int rc = flush_connect();
    if (flush_start() == 0 && rc == 0)
        atomic_store(&agent.recording, 1);
    atomic_store(&agent.child_pending, 0);
    return atomic_load(&agent.recording);
}

void agent_new_session(void)
{
    /* Attached again after a detach (the same process image): the session
     * before ended with that detach. */
    agent.previous_session = agent.mode == AGENT_DETACHED ? agent.instance : 0;
    agent.pid = getpid();
    agent.ppid = getppid();
    agent.instance = new_instance();
    agent.parent_instance = 0;
    agent.start_realtime_ns = clock_realtime_ns();
}

int agent_setup(const char *list)
{
    if (agent.set_up)
        return -EALREADY;
    state_read_identity();
    log_open(list ? cfg_list_get(list, "STACKWATCH_LOG") : getenv("STACKWATCH_LOG"));
    if (list)
        cfg_load_list(agent.exe, list);
    else
        cfg_load(agent.exe);
    agent.enabled = cfg.enabled;
    if (!agent.enabled)
        return -ECANCELED;
    agent_new_session();
    if (unwind_init(cfg.unwind, cfg.fp_modules) < 0)
        log_msg("cannot locate the agent's own code; its frames may show in stacks");
    uint64_t wlo, whi;
    main_wrapper_range(&wlo, &whi);
    unwind_hide_range(wlo, whi);
    uint64_t py_rate = cfg.py_allocators == CFG_PY_SAMPLED ? cfg.py_sample_bytes : 0;
    if (sample_init(cfg.sample_bytes, py_rate) < 0) {
        log_msg("cannot map the sampled set; recording every allocation");
        memcpy(cfg.sample, "all", 4);
        if (cfg.py_allocators == CFG_PY_SAMPLED)
            cfg.py_allocators = CFG_PY_EXACT;
    }
    py_init();
    /* Its finalizing is the end of the process only when the interpreter is
     * the program: an embedding program may finalize Python and run on. */
    const char *base = strrchr(agent.exe, '/');
    base = base ? base + 1 : agent.exe;
    if (strncmp(base, "python", 6) == 0)
        agent_py_fin = py_finalizing_word();
    if (strncmp(py_status(), "CPython ", 8) == 0)
        log_msg("%s; allocations are traced, Python lines are not", py_status());
    if (intern_init(INTERN_SLOTS, INTERN_POOL_PCS) < 0 || modmap_init(agent.exe) < 0 ||
        flush_init() < 0 || tstate_init() < 0 || arm_init(INTERN_SLOTS) < 0 ||
        note_init() < 0) {
        log_msg("cannot map the agent's tables; not tracing");
        agent.enabled = 0;
        return -ENOMEM;
    }
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    agent.set_up = 1;
    return 0;
}

/* LD_PRELOAD names the agent (by its file name). */
static int named_in_preload(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "libstackagent") != NULL;
}

/* Starts the agent once: from its constructor, or earlier from the first
 * allocation of a library whose constructor runs before ours (ld.so runs
 * the initializers of a program's libraries before the preloaded one's
 * when they do not depend on it). Loaded with dlopen (stackctl attach), it
 * only notes that and waits for stackwatch_attach. */
int agent_init(int interposing)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&agent_init_state, &expect, 1))
        return 0;
    int set_up = 0;
    int guard = tstate.guard;
    tstate.guard = 1; /* our own start-up allocations are not the app's */
    real_resolve();
    if (!interposing) {
        /* Loaded with dlopen (stackctl attach calls stackwatch_attach next),
         * or preloaded into a program whose malloc is its own. */
        agent.mode = AGENT_DORMANT;
        if (named_in_preload()) {
            log_open(getenv("STACKWATCH_LOG"));
            log_msg("malloc here is not the agent's (the program brings its own allocator?); "
                    "not tracing from the start: stackctl attach %d can trace it",
                    (int)getpid());
        }
        goto out;
    }
    agent.mode = AGENT_PRELOADED;
    if (agent_setup(NULL) < 0)
        goto out;
    set_up = 1;
    int rc = flush_connect();
    if (rc < 0 && rc != -EPERM) { /* EPERM: flush_connect said why */
        log_msg("no collector at %s (%s); running untraced, will connect when one starts",
                cfg.sock, strerror(-rc));
        flush_note_unreachable();
    }
    if (flush_start() < 0) {
        log_msg("cannot start the flusher thread; not tracing");
        agent.enabled = 0;
        goto out;
    }
    if (rc == 0)
        atomic_store(&agent.recording, 1);
    agent.started = 1;
out:
    atomic_store(&agent_init_state, 2);
    tstate.guard = guard;
    return set_up;
}

__attribute__((destructor)) static void agent_stop(void)
{
    if (tracing())
        flush_final();
}
