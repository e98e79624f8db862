/* The process-wide agent state: lifecycle flags, identity, counters (read by every module). */
#ifndef STACKWATCH_AGENT_STATE_H
#define STACKWATCH_AGENT_STATE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_EXE_MAX 4096
#define AGENT_CMDLINE_MAX 4096

/* How the agent came into the process. */
enum {
    AGENT_DORMANT = 0,    /* loaded with dlopen (or not interposing): waits for stackwatch_attach */
    AGENT_PRELOADED = 1,  /* LD_PRELOAD: the dynamic linker bound the program's calls to it */
    AGENT_ATTACHED = 2,   /* stackctl attach: the program's GOT entries lead to it */
    AGENT_DETACHED = 3,   /* stackctl detach: entries restored, flusher stopped */
};

typedef struct agent_s {
    _Atomic int recording;        /* connected and started: hooks record events */
    int mode;                     /* AGENT_*; changes only in the constructor, attach, detach */
    _Atomic int child_pending;    /* fork child not started yet: 1 pending, 2 starting */
    int enabled;                  /* config allows tracing this process */
    int started;                  /* tracing started (constructor or attach finished) */
    int set_up;                   /* agent_setup succeeded: tables mapped */
    pid_t pid;                    /* getpid() of this process image */
    pid_t ppid;                   /* parent pid */
    uint64_t instance;            /* random per process image (new in a fork child) */
    uint64_t parent_instance;     /* fork child: the parent's instance */
    uint64_t previous_session;    /* attached again: the instance of the detached session */
    uint64_t start_realtime_ns;   /* when tracing started in this process */
    char exe[AGENT_EXE_MAX];      /* resolved /proc/self/exe */
    char cmdline[AGENT_CMDLINE_MAX]; /* NUL-separated argv */
    size_t cmdline_len;           /* bytes used in cmdline */
    _Atomic uint64_t failed_calls;    /* allocation calls that failed */
    _Atomic uint64_t unwind_failures; /* stacks not captured */
    _Atomic uint64_t intern_full;     /* stacks not interned */
    _Atomic uint64_t end_ts;          /* when the process began to end (0: not yet) */
    const char *_Atomic end_why;      /* why: "exit", "main returned", "python finalizing" */
} agent_t;

extern agent_t agent;

/* 0 until the agent started (2: done, 1: starting). */
extern _Atomic int agent_init_state;

/* The interpreter's finalizing word while a known CPython runs (NULL
 * otherwise); the hooks check it. */
extern const _Atomic uintptr_t *agent_py_fin;

/* Reads the process's identity into agent.exe (resolved /proc/self/exe) and
 * agent.cmdline (/proc/self/cmdline, cut at AGENT_CMDLINE_MAX). Set-up only
 * (not for the malloc path: open/read). */
void state_read_identity(void);

#endif
