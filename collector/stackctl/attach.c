/* stackctl attach and detach: the agent into a running process and out again.
 *
 * Sequence: stop every thread (tracee.c), pick one that is safe to borrow,
 * let the others go, call dlopen(libstackagent.so) in the borrowed one
 * (inject.c), then the agent's stackwatch_attach, then put the thread back
 * as it was. The agent's constructor does nothing under the dlopen: the
 * work runs in the second call, outside the loader lock.
 *
 * The borrowed thread must not hold a lock the calls need. Best: one
 * blocked in a system call other than futex (read, poll, nanosleep...), at
 * the system-call instruction in libc, below the application's code. Next:
 * one running the program's own code (not libc's, not the dynamic
 * linker's): it cannot be inside malloc with an arena locked. A thread
 * waiting on a futex comes last (it may wait for one lock while holding
 * another). Otherwise the threads run for a moment and are stopped again. */
#include "attach.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "collector/common/cli_call.h"
#include "elfsym.h"
#include "inject.h"
#include "collector/common/procmaps.h"
#include "collector/common/tracee.h"

#define PICK_ROUNDS 60
#define MSG_LEN 1024
#define STACK_ROOM (256u << 10)  /* stack a borrowed thread must have left */
#define AGENT_NAME "libstackagent.so"

extern char **environ;

enum { SCORE_NONE = 0, SCORE_FUTEX = 1, SCORE_USER = 2, SCORE_SYSCALL = 3 };

/* Executable ranges of one module in the map. */
typedef struct span_s {
    uint64_t lo[8], hi[8];
    int n;
} span_t;

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int is_libc(const char *path)
{
    const char *b = base_name(path);
    return !strncmp(b, "libc.so", 7) || !strncmp(b, "libc-2.", 7);
}

static int is_ldso(const char *path)
{
    const char *b = base_name(path);
    return !strncmp(b, "ld-linux", 8) || !strncmp(b, "ld-2.", 5) || !strncmp(b, "ld64.so", 7);
}

static int is_agent(const char *path)
{
    return !strncmp(base_name(path), "libstackagent", 13);
}

static void spans(const maps_t *m, int (*which)(const char *), span_t *s)
{
    s->n = 0;
    for (size_t i = 0; i < m->n && s->n < 8; i++)
        if ((m->e[i].prot & MAPS_X) && m->e[i].path[0] == '/' && which(m->e[i].path)) {
            s->lo[s->n] = m->e[i].lo;
            s->hi[s->n] = m->e[i].hi;
            s->n++;
        }
}

static int in_span(const span_t *s, uint64_t a)
{
    for (int i = 0; i < s->n; i++)
        if (a >= s->lo[i] && a < s->hi[i])
            return 1;
    return 0;
}

/* The path of the mapped module a predicate picks ("" if none). */
static const char *module_path(const maps_t *m, int (*which)(const char *))
{
    for (size_t i = 0; i < m->n; i++)
        if (m->e[i].path[0] == '/' && which(m->e[i].path))
            return m->e[i].path;
    return "";
}

static int thread_name_is(pid_t pid, pid_t tid, const char *want)
{
    char path[96], name[32] = "";
    snprintf(path, sizeof path, "/proc/%d/task/%d/comm", (int)pid, (int)tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    if (!fgets(name, sizeof name, f))
        name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    return strcmp(name, want) == 0;
}

static int score(pid_t pid, const trc_thread_t *t, const maps_t *m, const span_t *libc,
                 const span_t *ld, const span_t *agent)
{
    if (!t->stopped || t->sig)
        return SCORE_NONE;
    if (thread_name_is(pid, t->tid, "stackwatch"))
        return SCORE_NONE; /* the agent's own flusher */
    const maps_ent_t *st = maps_find(m, t->regs.rsp);
    if (!st || !(st->prot & MAPS_W))
        return SCORE_NONE;
    if (strcmp(st->path, "[stack]") != 0 && t->regs.rsp - st->lo < STACK_ROOM)
        return SCORE_NONE;
    long nr = (long)t->regs.orig_rax, rax = (long)t->regs.rax;
    /* Stopped inside a blocking call: -ERESTARTSYS, -ERESTARTNOINTR,
     * -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK, or -EINTR. */
    if (nr >= 0 && (rax == -512 || rax == -513 || rax == -514 || rax == -516 || rax == -EINTR))
        return nr == SYS_futex ? SCORE_FUTEX : SCORE_SYSCALL;
    if (nr < 0 && !in_span(libc, t->regs.rip) && !in_span(ld, t->regs.rip) &&
        !in_span(agent, t->regs.rip))
        return SCORE_USER;
    return SCORE_NONE;
}

/* Opens the file a process maps at path: through /proc/PID/root (its mount
 * namespace) when that is the same file, else path. Writes the one to use. */
static void file_for(pid_t pid, const char *path, uint64_t inode, char *out, size_t len)
{
    char root[PATH_MAX + 64];
    struct stat st;
    snprintf(root, sizeof root, "/proc/%d/root%s", (int)pid, path);
    if (stat(root, &st) == 0 && (!inode || st.st_ino == inode))
        snprintf(out, len, "%s", root);
    else
        snprintf(out, len, "%s", path);
}

/* Address of sym in the module mapped from path in pid. 0 on failure, with
 * err set. */
static uint64_t remote_sym(pid_t pid, const maps_t *m, const char *path, const char *sym,
                           char *err, size_t errlen)
{
    uint64_t inode = 0;
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->e[i].path, path)) {
            inode = m->e[i].inode;
            break;
        }
    char file[PATH_MAX + 64];
    file_for(pid, path, inode, file, sizeof file);
    const char *names[1] = { sym };
    uint64_t v = 0, bias = 0;
    elfsym_t info;
    int rc = elfsym_lookup(file, names, &v, 1, &info);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read the symbols of %s (%s)", path, strerror(-rc));
        return 0;
    }
    if (info.machine != EM_X86_64) {
        snprintf(err, errlen, "%s is not an x86_64 object (attaching supports x86_64 only)",
                 path);
        return 0;
    }
    if (!v) {
        snprintf(err, errlen, "%s has no symbol %s", path, sym);
        return 0;
    }
    if (maps_bias(m, path, info.load_off, info.load_vaddr, &bias) < 0) {
        snprintf(err, errlen, "%s is not mapped the way its headers say", path);
        return 0;
    }
    return bias + v;
}

/* Stops pid's threads and keeps one that is safe to borrow (the others go
 * on). Returns 0 with *tr holding just that thread, or -errno with err. */
static int borrow_thread(trc_t *tr, pid_t pid, char *err, size_t errlen)
{
    for (int round = 0; round < PICK_ROUNDS; round++) {
        maps_t m;
        int rc = maps_read(&m, pid);
        if (rc < 0) {
            trc_explain(pid, -rc, err, errlen);
            return rc;
        }
        rc = trc_freeze(tr, pid, 0, 2000, err, errlen);
        if (rc < 0) {
            maps_free(&m);
            return rc;
        }
        span_t libc, ld, agent;
        spans(&m, is_libc, &libc);
        spans(&m, is_ldso, &ld);
        spans(&m, is_agent, &agent);
        int best = SCORE_NONE;
        pid_t pick = 0;
        for (size_t i = 0; i < tr->n; i++) {
            int s = score(pid, &tr->t[i], &m, &libc, &ld, &agent);
            /* The main thread first among equals (most programs' safest). */
            if (s > best || (s == best && s && tr->t[i].tid == pid)) {
                best = s;
                pick = tr->t[i].tid;
            }
        }
        maps_free(&m);
        if (best >= SCORE_USER || (best == SCORE_FUTEX && round >= PICK_ROUNDS / 2)) {
            trc_release_except(tr, pick);
            return 0;
        }
        trc_release(tr);
        /* Let them run a little, longer each time, and look again. */
        struct timespec ts = { 0, (long)(round + 1) * 500000L };
        nanosleep(&ts, NULL);
    }
    snprintf(err, errlen, "no thread of pid %d stopped at a safe point in %d tries (all of them "
                          "busy inside libc or the dynamic linker); try again", (int)pid,
             PICK_ROUNDS);
    return -EAGAIN;
}

/* STACKWATCH_* of our environment (but the directory) and the directory:
 * "NAME=value\0...\0\0". Returns its length with both NULs, 0 on overflow. */
static size_t settings(const rundir_t *rd, char *buf, size_t cap)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "STACKWATCH_", 11) != 0 || !strncmp(*e, "STACKWATCH_DIR=", 15))
            continue;
        size_t l = strlen(*e) + 1;
        if (n + l + 1 >= cap)
            return 0;
        memcpy(buf + n, *e, l);
        n += l;
    }
    int w = snprintf(buf + n, cap - n, "STACKWATCH_DIR=%s", rd->dir);
    if (w < 0 || n + (size_t)w + 2 > cap)
        return 0;
    n += (size_t)w + 1;
    buf[n++] = '\0';
    return n;
}

/* The agent library to load: --agent, $STACKWATCH_AGENT, next to stackctl,
 * or ../lib next to it (an installed layout). */
int cli_agent_file(const char *opt, char *out, size_t len, char *err, size_t errlen)
{
    char self[PATH_MAX], cand[PATH_MAX + 64];
    const char *env = getenv("STACKWATCH_AGENT");
    const char *given = opt ? opt : env;
    if (given) {
        if (!realpath(given, out) || access(out, R_OK) != 0) {
            snprintf(err, errlen, "agent library %s: %s", given, strerror(errno));
            return -ENOENT;
        }
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(err, errlen, "cannot find stackctl's own path; use --agent PATH");
        return -ENOENT;
    }
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    const char *tries[] = { "%s/" AGENT_NAME, "%s/../lib/" AGENT_NAME };
    for (int i = 0; i < 2; i++) {
        snprintf(cand, sizeof cand, tries[i], self);
        if (realpath(cand, out) && access(out, R_OK) == 0 && strlen(out) < len)
            return 0;
    }
    snprintf(err, errlen, "no %s next to stackctl or in ../lib from it (%.400s); use --agent "
                          "PATH", AGENT_NAME, self);
    return -ENOENT;
}

/* collectord's view of pid: "connected" etc., or "" if not listed. */
static void client_state(const rundir_t *rd, pid_t pid, char *state, size_t len, int *attached)
{
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    Stackwatch__QueryClients q = STACKWATCH__QUERY_CLIENTS__INIT;
    req.req_case = STACKWATCH__REQUEST__REQ_CLIENTS;
    req.clients = &q;
    Stackwatch__Reply *rep = NULL;
    state[0] = '\0';
    *attached = 0;
    if (cli_call(rd->control_sock, &req, 5000, &rep) < 0)
        return;
    if (rep->body_case == STACKWATCH__REPLY__BODY_CLIENTS) {
        /* Newest first: the latest session of the pid. */
        for (size_t i = 0; i < rep->clients->n_clients; i++) {
            const Stackwatch__ClientInfo *c = rep->clients->clients[i];
            if (c->pid == (uint32_t)pid) {
                snprintf(state, len, "%s", c->state ? c->state : "");
                *attached = c->attached;
                break;
            }
        }
    }
    stackwatch__reply__free_unpacked(rep, NULL);
}

/* The pid of the collectord answering in rd (cli_find: the socket's own
 * word for it, confirmed by its ping). Returns 0 or -errno. */
static int collector_pid(const rundir_t *rd, pid_t *pid)
{
    cli_daemon_t d;
    int rc = cli_find(rd, 0, 5000, &d);
    cli_daemon_close(&d);
    *pid = rc == 0 ? d.pid : 0;
    return rc;
}

static int wait_state(const rundir_t *rd, pid_t pid, const char *want, int ms)
{
    uint64_t until = trc_now_ns() + (uint64_t)ms * 1000000u;
    char st[32];
    int att;
    do {
        client_state(rd, pid, st, sizeof st, &att);
        if (!strcmp(st, want))
            return 1;
        struct timespec ts = { 0, 20000000 };
        nanosleep(&ts, NULL);
    } while (trc_now_ns() < until);
    return 0;
}

/* After a detach: waits until collectord lists the session as detached.
 * Any other ended state (the Goodbye was lost) will not turn into it by
 * waiting: 0 at once then (the next attach names it detached). */
static int wait_detached(const rundir_t *rd, pid_t pid, int ms)
{
    uint64_t until = trc_now_ns() + (uint64_t)ms * 1000000u;
    char st[32];
    int att;
    do {
        client_state(rd, pid, st, sizeof st, &att);
        if (!strcmp(st, "detached"))
            return 1;
        if (st[0] && strcmp(st, "connected") != 0)
            return 0;
        struct timespec ts = { 0, 20000000 };
        nanosleep(&ts, NULL);
    } while (trc_now_ns() < until);
    return 0;
}

/* Checks that apply to both commands. Returns 0 or 1 (exit status). */
static int preflight(const rundir_t *rd, pid_t pid)
{
#if !defined(__x86_64__)
    (void)rd;
    fprintf(stderr, "stackctl: attaching is implemented for x86_64 only\n");
    return 1;
#else
    pid_t cpid = 0;
    if (pid == getpid()) {
        fprintf(stderr, "stackctl: that is this stackctl\n");
        return 1;
    }
    int rc = collector_pid(rd, &cpid);
    if (rc < 0) {
        fprintf(stderr, "stackctl: no collectord is running in %s (start one with: collectord "
                        "start)\n", rd->dir);
        return 1;
    }
    if (cpid == pid) {
        fprintf(stderr, "stackctl: pid %d is collectord itself\n", (int)pid);
        return 1;
    }
    char exe[64];
    struct stat st;
    snprintf(exe, sizeof exe, "/proc/%d", (int)pid);
    if (stat(exe, &st) != 0) {
        fprintf(stderr, "stackctl: no process %d\n", (int)pid);
        return 1;
    }
    return 0;
#endif
}

/* Reads a NUL-terminated string of the target (up to len - 1 bytes). */
static void get_str(inj_t *j, uint64_t addr, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!addr)
        return;
    for (size_t off = 0; off + 1 < len; off += 64) {
        size_t n = len - 1 - off < 64 ? len - 1 - off : 64;
        if (inj_get(j, addr + off, buf + off, n) < 0)
            break;
        buf[off + n] = '\0';
        if (memchr(buf + off, '\0', n))
            return;
    }
    buf[len - 1] = '\0';
}

int cli_attach(const rundir_t *rd, pid_t pid, const cli_attach_opts_t *o)
{
    if (preflight(rd, pid))
        return 1;
    char err[1024] = "", agent[PATH_MAX], msg[MSG_LEN] = "";
    if (cli_agent_file(o->agent, agent, sizeof agent, err, sizeof err) < 0) {
        fprintf(stderr, "stackctl: %s\n", err);
        return 1;
    }
    char list[16384];
    size_t listlen = settings(rd, list, sizeof list);
    if (!listlen) {
        fprintf(stderr, "stackctl: STACKWATCH_* settings too long\n");
        return 1;
    }
    char st[32];
    int att = 0;
    client_state(rd, pid, st, sizeof st, &att);
    if (!strcmp(st, "connected")) {
        fprintf(stderr, "stackctl: pid %d is traced already (%s)\n", (int)pid,
                att ? "attached" : "the agent is preloaded");
        return 1;
    }
    maps_t m;
    int rc = maps_read(&m, pid);
    if (rc < 0) {
        trc_explain(pid, -rc, err, sizeof err);
        fprintf(stderr, "stackctl: %s\n", err);
        return 1;
    }
    char libc[PATH_MAX] = "", mapped[PATH_MAX] = "";
    snprintf(libc, sizeof libc, "%s", module_path(&m, is_libc));
    snprintf(mapped, sizeof mapped, "%s", module_path(&m, is_agent));
    uint64_t f_dlopen = 0, f_dlerror = 0;
    if (!mapped[0]) {
        if (!libc[0]) {
            snprintf(err, sizeof err, "pid %d has no libc.so mapped (statically linked?): "
                                      "cannot load the agent", (int)pid);
            goto fail_maps;
        }
        if (!(f_dlopen = remote_sym(pid, &m, libc, "dlopen", err, sizeof err)) ||
            !(f_dlerror = remote_sym(pid, &m, libc, "dlerror", err, sizeof err)))
            goto fail_maps;
    }
    maps_free(&m);
    trc_t tr;
    if ((rc = borrow_thread(&tr, pid, err, sizeof err)) < 0) {
        fprintf(stderr, "stackctl: attach %d: %s\n", (int)pid, err);
        return 1;
    }
    inj_t j;
    if ((rc = inj_begin(&j, tr.t[0].tid, &tr.t[0].regs, err, sizeof err)) < 0)
        goto fail_tr;
    uint64_t ret = 0, a_path = 0, a_list = 0, a_msg = 0;
    if (!mapped[0]) {
        if ((rc = inj_put(&j, agent, strlen(agent) + 1, &a_path)) < 0) {
            snprintf(err, sizeof err, "cannot write to the thread's stack (%s)", strerror(-rc));
            goto fail_inj;
        }
        if ((rc = inj_call(&j, f_dlopen, a_path, RTLD_NOW | RTLD_LOCAL, 0, &ret, o->timeout_ms,
                           err, sizeof err)) < 0)
            goto fail_inj;
        if (!ret) {
            char why[512] = "";
            uint64_t s = 0;
            if (inj_call(&j, f_dlerror, 0, 0, 0, &s, o->timeout_ms, err, sizeof err) == 0)
                get_str(&j, s, why, sizeof why);
            snprintf(err, sizeof err, "dlopen in the process failed: %s%s",
                     why[0] ? why : "(no reason given)",
                     strstr(why, "denied") ? " (the process's user must be able to read the "
                                             "agent library)" : "");
            rc = -ENOENT;
            goto fail_inj;
        }
        snprintf(mapped, sizeof mapped, "%s", agent);
    }
    if ((rc = maps_read(&m, pid)) < 0) {
        trc_explain(pid, -rc, err, sizeof err);
        goto fail_inj;
    }
    if (!module_path(&m, is_agent)[0]) {
        maps_free(&m);
        snprintf(err, sizeof err, "the agent is not in the process's map after dlopen");
        rc = -ENOENT;
        goto fail_inj;
    }
    snprintf(mapped, sizeof mapped, "%s", module_path(&m, is_agent));
    uint64_t f_attach = remote_sym(pid, &m, mapped, "stackwatch_attach", err, sizeof err);
    maps_free(&m);
    if (!f_attach) {
        rc = -ENOENT;
        goto fail_inj;
    }
    if ((rc = inj_put(&j, list, listlen, &a_list)) < 0 ||
        (rc = inj_reserve(&j, MSG_LEN, &a_msg)) < 0) {
        snprintf(err, sizeof err, "cannot write to the thread's stack (%s)", strerror(-rc));
        goto fail_inj;
    }
    if ((rc = inj_call(&j, f_attach, a_list, a_msg, MSG_LEN, &ret, o->timeout_ms, err,
                       sizeof err)) < 0)
        goto fail_inj;
    get_str(&j, a_msg, msg, sizeof msg);
    int arc = (int)(uint32_t)ret;
    if (inj_end(&j) < 0)
        fprintf(stderr, "stackctl: warning: thread %d's registers could not all be restored\n",
                (int)tr.t[0].tid);
    trc_release(&tr);
    if (arc < 0) {
        fprintf(stderr, "stackctl: attach %d: %s\n", (int)pid, msg[0] ? msg : strerror(-arc));
        return 1;
    }
    if (o->wait_ms && !wait_state(rd, pid, "connected", o->wait_ms)) {
        fprintf(stderr, "stackctl: attached to pid %d (%s), but collectord does not list it "
                        "yet\n", (int)pid, msg);
        return 1;
    }
    printf("attached to pid %d: %s\n", (int)pid, msg);
    return 0;
fail_maps:
    maps_free(&m);
    fprintf(stderr, "stackctl: attach %d: %s\n", (int)pid, err);
    return 1;
fail_inj:
    inj_end(&j);
fail_tr:
    trc_release(&tr);
    fprintf(stderr, "stackctl: attach %d: %s\n", (int)pid, err);
    return 1;
}

int cli_detach(const rundir_t *rd, pid_t pid, const cli_attach_opts_t *o)
{
    if (preflight(rd, pid))
        return 1;
    char err[1024] = "", msg[MSG_LEN] = "";
    maps_t m;
    int rc = maps_read(&m, pid);
    if (rc < 0) {
        trc_explain(pid, -rc, err, sizeof err);
        fprintf(stderr, "stackctl: %s\n", err);
        return 1;
    }
    char mapped[PATH_MAX];
    snprintf(mapped, sizeof mapped, "%s", module_path(&m, is_agent));
    if (!mapped[0]) {
        maps_free(&m);
        fprintf(stderr, "stackctl: pid %d has no agent loaded: nothing to detach\n", (int)pid);
        return 1;
    }
    uint64_t f_detach = remote_sym(pid, &m, mapped, "stackwatch_detach", err, sizeof err);
    maps_free(&m);
    if (!f_detach) {
        fprintf(stderr, "stackctl: detach %d: %s\n", (int)pid, err);
        return 1;
    }
    trc_t tr;
    if (borrow_thread(&tr, pid, err, sizeof err) < 0) {
        fprintf(stderr, "stackctl: detach %d: %s\n", (int)pid, err);
        return 1;
    }
    inj_t j;
    uint64_t ret = 0, a_msg = 0;
    if ((rc = inj_begin(&j, tr.t[0].tid, &tr.t[0].regs, err, sizeof err)) < 0) {
        trc_release(&tr);
        fprintf(stderr, "stackctl: detach %d: %s\n", (int)pid, err);
        return 1;
    }
    if ((rc = inj_reserve(&j, MSG_LEN, &a_msg)) < 0)
        snprintf(err, sizeof err, "cannot write to the thread's stack (%s)", strerror(-rc));
    else
        rc = inj_call(&j, f_detach, a_msg, MSG_LEN, 0, &ret, o->timeout_ms, err, sizeof err);
    if (rc == 0)
        get_str(&j, a_msg, msg, sizeof msg);
    inj_end(&j);
    trc_release(&tr);
    if (rc < 0) {
        fprintf(stderr, "stackctl: detach %d: %s\n", (int)pid, err);
        return 1;
    }
    int drc = (int)(uint32_t)ret;
    if (drc < 0) {
        fprintf(stderr, "stackctl: detach %d: %s\n", (int)pid, msg[0] ? msg : strerror(-drc));
        return 1;
    }
    if (o->wait_ms && !wait_detached(rd, pid, o->wait_ms))
        fprintf(stderr, "stackctl: warning: collectord does not list pid %d as detached yet\n",
                (int)pid);
    printf("pid %d: %s\n", (int)pid, msg);
    return 0;
}
