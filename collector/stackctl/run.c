/* stackctl run: one program under the agent, its leak report when it ends, and an exit status a CI job can gate on. */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attach.h"
#include "collector/common/cli_call.h"
#include "py.h"
#include "render.h"
#include "collector/common/rundir.h"

#define RUN_QUERY_MS 120000
#define RUN_START_MS 30000   /* for a private collectord to answer */
#define RUN_SETTLE_MS 10000  /* for the run's processes to be seen ended */
#define RUN_STOP_MS 10000    /* for a private collectord to stop when asked */
#define RUN_MAX_PIDS 4096

enum { FAIL_LEAK = 1, FAIL_GROWING = 2, FAIL_UNREACHABLE = 4, NOT_TRACED = 8 };

typedef struct run_s {
    rundir_t rd;
    int shared;            /* the user's running collectord */
    int made_dir;          /* rd.dir is a directory this run created */
    pid_t coll;            /* a private collectord (our child), 0: none */
    pid_t prog;            /* the program (our child) */
    uint64_t t0_ns;        /* CLOCK_REALTIME before the program started */
    uint32_t pids[RUN_MAX_PIDS]; /* the program and its traced descendants */
    size_t npids;
} run_t;

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: stackctl [--dir DIR] run [--expire S] [--sample R] [--top N]\n"
            "                    [--json | --html FILE] [-o FILE] [--agent PATH] [--all-frames]\n"
            "                    [--fail-on leak|growing|unreachable[,...]] -- PROGRAM ARGS...\n"
            "\n"
            "  Runs PROGRAM with the agent preloaded, using the collectord running in DIR\n"
            "  or else a private one for this run (stopped after), and prints the leak\n"
            "  report of PROGRAM and its children on stderr when it ends.\n"
            "  --expire S    a private collectord's expire time (default 1 s)\n"
            "  --sample R    STACKWATCH_SAMPLE for the program (e.g. 512k)\n"
            "  --top N       at most N stacks in the report (default 10 in text, 20 in\n"
            "                HTML, all in JSON; 0: all)\n"
            "  --json        the report as JSON; --html FILE: an HTML report to FILE\n"
            "  -o FILE       the report to FILE instead of stderr\n"
            "  --all-frames  text and HTML: every frame of CPython itself, not folded\n"
            "  --fail-on C   exit 23 when a stack of class C (leak, growing) or an\n"
            "                unreachable block is found (and the program exited 0);\n"
            "                unreachable: each process is scanned as it ends (exit or a\n"
            "                return from main) and before a terminating signal is passed on\n"
            "  exit status: the program's; 128+N if signal N killed it; 23 (--fail-on);\n"
            "  125 when the run itself failed (with --fail-on: also when nothing was\n"
            "  traced); 126/127 program not executable/not found\n");
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The directory stackctl runs from. */
static int self_dir(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    if (n <= 0)
        return -1;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    return 0;
}

/* Waits for our child pid to end, up to ms. 1 ended (*status set), 0 not. */
static int reap_within(pid_t pid, int ms, int *status)
{
    uint64_t until = mono_ms() + (uint64_t)ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD))
            return 1;
        if (mono_ms() >= until)
            return 0;
        nap_ms(10);
    }
}

/* A private collectord in rd's directory, run in the foreground as our
 * child (its own process group: a Ctrl-C for the program must not end it
 * before the report), logging to DIR/collectord.log. Ready once the
 * listener on its control socket is that very child (SO_PEERCRED) and
 * answers a ping. Returns 0 or -1 (said). */
static int start_private(run_t *r, const char *expire)
{
    char self[PATH_MAX], coll[PATH_MAX + 32];
    int beside = self_dir(self, sizeof self) == 0;
    if (beside) {
        snprintf(coll, sizeof coll, "%s/collectord", self);
        beside = access(coll, X_OK) == 0;
    }
    int log = open(r->rd.logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (log < 0) {
        fprintf(stderr, "stackctl: run: cannot open %s: %s\n", r->rd.logfile, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "stackctl: run: fork: %s\n", strerror(errno));
        close(log);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* A stackctl killed outright leaves no daemon behind. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0)
            dup2(null, 0);
        dup2(log, 1);
        dup2(log, 2);
        char *args[] = { beside ? coll : (char *)"collectord", (char *)"start", (char *)"-f",
                         (char *)"--dir", r->rd.dir, (char *)"--state-dir", (char *)"none",
                         (char *)"--expire", (char *)expire, NULL };
        unsetenv("LD_PRELOAD");
        if (beside)
            execv(coll, args);
        else
            execvp("collectord", args);
        fprintf(stderr, "stackctl: run: cannot execute collectord: %s\n", strerror(errno));
        _exit(127);
    }
    close(log);
    r->coll = pid;
    uint64_t until = mono_ms() + RUN_START_MS;
    for (;;) {
        cli_daemon_t d;
        int rc = cli_find(&r->rd, 1, 2000, &d);
        cli_daemon_close(&d);
        if (rc == 0 && d.pid == pid)
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->coll = 0;
            fprintf(stderr, "stackctl: run: collectord ended during start-up (see %s)\n",
                    r->rd.logfile);
            return -1;
        }
        if (rc == 0) {
            fprintf(stderr, "stackctl: run: another collectord (pid %d) answers in %s\n",
                    (int)d.pid, r->rd.dir);
            return -1;
        }
        if (mono_ms() >= until) {
            fprintf(stderr, "stackctl: run: collectord did not answer within %d s (see %s)\n",
                    RUN_START_MS / 1000, r->rd.logfile);
            return -1;
        }
        nap_ms(20);
    }
}

/* Stops the private collectord: a Shutdown through the connection to our
 * child, then SIGTERM and SIGKILL to that child (never reaped before, so
 * its pid is still ours) if it does not end. Removes a directory we made. */
static void stop_private(run_t *r)
{
    if (r->coll > 0) {
        cli_daemon_t d;
        if (cli_find(&r->rd, 1, 5000, &d) == 0 && d.pid == r->coll) {
            Stackwatch__Shutdown sd = STACKWATCH__SHUTDOWN__INIT;
            Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
            req.req_case = STACKWATCH__REQUEST__REQ_SHUTDOWN;
            req.shutdown = &sd;
            Stackwatch__Reply *rep = NULL;
            if (cli_exchange(d.fd, &req, 5000, &rep) == 0)
                stackwatch__reply__free_unpacked(rep, NULL);
        }
        cli_daemon_close(&d);
        int st;
        if (!reap_within(r->coll, RUN_STOP_MS, &st)) {
            kill(r->coll, SIGTERM);
            if (!reap_within(r->coll, 5000, &st)) {
                kill(r->coll, SIGKILL);
                waitpid(r->coll, &st, 0);
            }
        }
        r->coll = 0;
    }
    if (r->made_dir) {
        unlink(r->rd.agent_sock);
        unlink(r->rd.control_sock);
        unlink(r->rd.pidfile);
        unlink(r->rd.logfile);
        rmdir(r->rd.dir); /* left if anything else is in it */
        r->made_dir = 0;
    }
}

/* A fresh directory for a private collectord: $XDG_RUNTIME_DIR/stackwatch-run.XXXXXX,
 * else /tmp/stackwatch-run-UID.XXXXXX (0700, made by mkdtemp). */
static int make_private_dir(run_t *r)
{
    char tmpl[RUNDIR_MAX - 200];
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg == '/' && strlen(xdg) < sizeof tmpl - 64)
        snprintf(tmpl, sizeof tmpl, "%s/stackwatch-run.XXXXXX", xdg);
    else
        snprintf(tmpl, sizeof tmpl, "/tmp/stackwatch-run-%u.XXXXXX", (unsigned)geteuid());
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "stackctl: run: cannot make a directory %s: %s\n", tmpl,
                strerror(errno));
        return -1;
    }
    r->made_dir = 1;
    if (cli_resolve_dir(&r->rd, tmpl, "stackctl: run") < 0) {
        rmdir(tmpl);
        r->made_dir = 0;
        return -1;
    }
    return 0;
}

/* Signals passed on to the program. Terminal job control (TSTP, TTIN,
 * TTOU) and CONT stop and continue the whole process group as usual. */
static const int fwd_signals[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
                                   SIGALRM, SIGWINCH };

static int has_pid(const run_t *r, uint32_t pid)
{
    for (size_t i = 0; i < r->npids; i++)
        if (r->pids[i] == pid)
            return 1;
    return 0;
}

/* Whether a client entry is one of the run's processes (pid in the set,
 * started after the run began: an older process with a reused pid is not). */
static int is_ours(const run_t *r, uint32_t pid, uint64_t start_ns)
{
    return has_pid(r, pid) && start_ns + 10000000u >= r->t0_ns;
}

/* Grows the run's pid set from collectord's client list: a client started
 * after the run whose parent is in the set. Returns how many of the run's
 * processes are still connected, or -1 when collectord cannot be asked. */
static int refresh_pids(run_t *r)
{
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    Stackwatch__QueryClients q = STACKWATCH__QUERY_CLIENTS__INIT;
    req.req_case = STACKWATCH__REQUEST__REQ_CLIENTS;
    req.clients = &q;
    Stackwatch__Reply *rep = NULL;
    if (cli_call(r->rd.control_sock, &req, RUN_QUERY_MS, &rep) < 0)
        return -1;
    if (rep->error || rep->body_case != STACKWATCH__REPLY__BODY_CLIENTS || !rep->clients) {
        stackwatch__reply__free_unpacked(rep, NULL);
        return -1;
    }
    const Stackwatch__ClientList *cl = rep->clients;
    for (int grew = 1; grew;) {
        grew = 0;
        for (size_t i = 0; i < cl->n_clients; i++) {
            const Stackwatch__ClientInfo *c = cl->clients[i];
            if (!has_pid(r, c->pid) && has_pid(r, c->ppid) &&
                c->start_realtime_ns + 10000000u >= r->t0_ns && r->npids < RUN_MAX_PIDS) {
                r->pids[r->npids++] = c->pid;
                grew = 1;
            }
        }
    }
    int live = 0;
    for (size_t i = 0; i < cl->n_clients; i++) {
        const Stackwatch__ClientInfo *c = cl->clients[i];
        if (is_ours(r, c->pid, c->start_realtime_ns) && c->state && !strcmp(c->state, "connected"))
            live++;
    }
    stackwatch__reply__free_unpacked(rep, NULL);
    return live;
}

/* --fail-on unreachable: a reachability scan of each of the run's
 * processes still connected (the program's last live moment we can
 * catch: before a terminating signal is passed on). */
static void scan_ours(run_t *r)
{
    if (refresh_pids(r) < 0)
        return;
    for (size_t i = 0; i < r->npids; i++) {
        Stackwatch__Request sr = STACKWATCH__REQUEST__INIT;
        Stackwatch__Scan sc = STACKWATCH__SCAN__INIT;
        sc.pid = r->pids[i];
        sr.req_case = STACKWATCH__REQUEST__REQ_SCAN;
        sr.scan = &sc;
        Stackwatch__Reply *rep = NULL;
        int rc = cli_call(r->rd.control_sock, &sr, RUN_QUERY_MS * 5, &rep);
        if (rc < 0)
            fprintf(stderr, "stackctl: run: scan of pid %u: %s\n", r->pids[i], strerror(-rc));
        else if (rep->error && rep->error != -ESRCH)
            fprintf(stderr, "stackctl: run: %s\n",
                    rep->message && *rep->message ? rep->message : strerror(-rep->error));
        if (rc == 0)
            stackwatch__reply__free_unpacked(rep, NULL);
    }
}

static int is_terminating(int sig)
{
    return sig == SIGHUP || sig == SIGINT || sig == SIGQUIT || sig == SIGTERM;
}

/* Runs the program with signals passed on; returns its wait status, or -1
 * (said) with *code set to the run's exit status when it could not run. */
static int run_program(run_t *r, char **argv, const char *agent, const char *sample,
                       int fail_on, int *code)
{
    sigset_t set, old;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof fwd_signals / sizeof *fwd_signals; i++)
        sigaddset(&set, fwd_signals[i]);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0) {
        fprintf(stderr, "stackctl: run: pipe: %s\n", strerror(errno));
        sigprocmask(SIG_SETMASK, &old, NULL);
        *code = CLI_RUN_EXIT_FAILED;
        return -1;
    }
    r->t0_ns = realtime_ns();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "stackctl: run: fork: %s\n", strerror(errno));
        close(ep[0]);
        close(ep[1]);
        sigprocmask(SIG_SETMASK, &old, NULL);
        *code = CLI_RUN_EXIT_FAILED;
        return -1;
    }
    if (pid == 0) {
        close(ep[0]);
        const char *pre = getenv("LD_PRELOAD");
        size_t n = strlen(agent) + (pre ? strlen(pre) : 0) + 2;
        char *ld = malloc(n);
        if (ld) {
            snprintf(ld, n, "%s%s%s", agent, pre && *pre ? ":" : "", pre ? pre : "");
            setenv("LD_PRELOAD", ld, 1);
        }
        setenv("STACKWATCH_DIR", r->rd.dir, 1);
        if (sample)
            setenv("STACKWATCH_SAMPLE", sample, 1);
        if (fail_on & FAIL_UNREACHABLE)
            setenv("STACKWATCH_SCAN_AT_EXIT", "1", 0); /* each process scanned as it ends */
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[0], argv);
        int e = errno;
        if (write(ep[1], &e, sizeof e) < 0)
            _exit(CLI_RUN_EXIT_FAILED);
        _exit(e == ENOENT ? CLI_RUN_EXIT_NOTFOUND : CLI_RUN_EXIT_NOEXEC);
    }
    close(ep[1]);
    /* A closed stderr must not kill us before the exit status is passed on
     * (the program keeps its own SIGPIPE: set after the fork). */
    signal(SIGPIPE, SIG_IGN);
    r->prog = pid;
    r->pids[0] = (uint32_t)pid;
    r->npids = 1;
    int e = 0, status = 0;
    ssize_t got;
    while ((got = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    if (got == (ssize_t)sizeof e) {
        fprintf(stderr, "stackctl: run: cannot execute %s: %s\n", argv[0], strerror(e));
        waitpid(pid, &status, 0);
        sigprocmask(SIG_SETMASK, &old, NULL);
        *code = e == ENOENT ? CLI_RUN_EXIT_NOTFOUND : CLI_RUN_EXIT_NOEXEC;
        return -1;
    }
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            fprintf(stderr, "stackctl: run: waiting for pid %d: %s\n", (int)pid, strerror(errno));
            sigprocmask(SIG_SETMASK, &old, NULL);
            *code = CLI_RUN_EXIT_FAILED;
            return -1;
        }
        siginfo_t si;
        int sig = sigwaitinfo(&set, &si);
        if (sig < 0 || sig == SIGCHLD)
            continue;
        /* A terminal's Ctrl-C, Ctrl-\, resize or hangup reached the program
         * already (the same foreground process group); one sent to us is
         * passed on. The program is our child, not yet reaped: its pid is
         * still its own. */
        if (si.si_code == SI_KERNEL &&
            (sig == SIGINT || sig == SIGQUIT || sig == SIGWINCH || sig == SIGHUP))
            continue;
        if ((fail_on & FAIL_UNREACHABLE) && is_terminating(sig))
            scan_ours(r);
        kill(pid, sig);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return status;
}

/* Keeps only the run's own clients and stacks in lr (a shared collectord
 * serves other processes too), and at most top stacks (0: all). The
 * arrays are reordered in place; n_ counts restored by restore_report. */
typedef struct kept_s {
    size_t n_clients, n_stacks; /* as received */
    size_t ours;                /* the run's stacks, first in lr->stacks */
} kept_t;

static void filter_report(const run_t *r, Stackwatch__LeakReport *lr, uint32_t top, kept_t *k)
{
    k->n_clients = lr->n_clients;
    k->n_stacks = lr->n_stacks;
    if (r->shared) {
        size_t n = 0;
        for (size_t i = 0; i < lr->n_clients; i++) {
            Stackwatch__ClientInfo *c = lr->clients[i];
            if (is_ours(r, c->pid, c->start_realtime_ns)) {
                lr->clients[i] = lr->clients[n];
                lr->clients[n++] = c;
            } else if (has_pid(r, c->pid)) {
                /* Stacks name a pid only: an earlier process collectord
                 * still keeps under the same pid cannot be told apart. */
                fprintf(stderr, "stackctl: run: pid %u was also an earlier process's that "
                                "collectord keeps: its stacks may be mixed into the report\n",
                        c->pid);
            }
        }
        lr->n_clients = n;
        n = 0;
        for (size_t i = 0; i < lr->n_stacks; i++) {
            Stackwatch__StackReport *s = lr->stacks[i];
            if (has_pid(r, s->pid)) {
                lr->stacks[i] = lr->stacks[n];
                lr->stacks[n++] = s;
            }
        }
        lr->n_stacks = n;
    }
    k->ours = lr->n_stacks;
    if (top && lr->n_stacks > top)
        lr->n_stacks = top;
}

static void restore_report(Stackwatch__LeakReport *lr, const kept_t *k)
{
    lr->n_clients = k->n_clients;
    lr->n_stacks = k->n_stacks;
}

/* What --fail-on found in the (filtered) report: FAIL_* bits. */
static int found_classes(const Stackwatch__LeakReport *lr, size_t n_stacks)
{
    int found = 0;
    for (size_t i = 0; i < n_stacks; i++) {
        const Stackwatch__StackReport *s = lr->stacks[i];
        if (s->class_ && !strcmp(s->class_, "leak"))
            found |= FAIL_LEAK;
        if (s->class_ && !strcmp(s->class_, "growing"))
            found |= FAIL_GROWING;
        if (s->unreachable && s->unreachable->count > 0)
            found |= FAIL_UNREACHABLE;
    }
    return found;
}

/* The run's report, written as asked. Returns the FAIL_* bits found, or -1
 * (said) when there is no report. */
static int report(run_t *r, uint32_t top, int json, const char *html, const char *outpath,
                  unsigned flags)
{
    /* The program ended; its children may run on a while. */
    uint64_t until = mono_ms() + RUN_SETTLE_MS;
    int live;
    while ((live = refresh_pids(r)) > 0 && mono_ms() < until)
        nap_ms(20);
    if (live < 0) {
        fprintf(stderr, "stackctl: run: collectord at %s does not answer; no report\n",
                r->rd.control_sock);
        return -1;
    }
    if (live > 0)
        fprintf(stderr, "stackctl: run: %d process(es) of the run still run; their part of the "
                        "report is as of now\n", live);
    Stackwatch__QueryLeaks q = STACKWATCH__QUERY_LEAKS__INIT;
    q.top = 0; /* the run's own stacks are counted and cut here */
    q.class_ = (char *)"";
    q.exe = (char *)"";
    q.series = html != NULL;
    q.by_rank = html != NULL || !json;
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    req.req_case = STACKWATCH__REQUEST__REQ_LEAKS;
    req.leaks = &q;
    Stackwatch__Reply *rep = NULL;
    int rc = cli_call(r->rd.control_sock, &req, RUN_QUERY_MS, &rep);
    if (rc < 0 || rep->error || rep->body_case != STACKWATCH__REPLY__BODY_LEAKS || !rep->leaks) {
        fprintf(stderr, "stackctl: run: no report from collectord: %s\n",
                rc < 0 ? strerror(-rc)
                       : rep->error && rep->message ? rep->message : "unexpected reply");
        if (rep)
            stackwatch__reply__free_unpacked(rep, NULL);
        return -1;
    }
    kept_t k;
    filter_report(r, rep->leaks, top, &k);
    /* Classes are judged on every stack of the run, not only those shown. */
    int found = found_classes(rep->leaks, k.ours);
    /* A process's last scan, kept after it ended (its stacks then no longer
     * carry the scan's counts). */
    for (size_t i = 0; i < rep->leaks->n_clients; i++) {
        const Stackwatch__ClientInfo *c = rep->leaks->clients[i];
        if (c->scan && c->scan->unreachable && c->scan->unreachable->count > 0)
            found |= FAIL_UNREACHABLE;
    }
    if (rep->leaks->n_clients == 0) {
        found |= NOT_TRACED;
        fprintf(stderr, "stackctl: run: the program never connected to collectord (a static "
                        "binary, a setuid one, or excluded by STACKWATCH_EXE or "
                        "STACKWATCH_DISABLE?)\n");
    }
    int fail = 0;
    FILE *out = stderr;
    const char *path = html ? html : outpath;
    if (path && strcmp(path, "-") != 0 && !(out = fopen(path, "w"))) {
        fprintf(stderr, "stackctl: run: cannot write %s: %s\n", path, strerror(errno));
        fail = 1;
    }
    if (!fail) {
        fflush(stdout);
        if (out == stderr)
            fputc('\n', stderr);
        if (cli_render(out, rep, CLI_WANT_LEAKS, html ? "html" : json ? "json" : "text",
                       flags) < 0)
            fail = 1;
        if ((fflush(out) != 0 || (out != stderr && out != stdout && fclose(out) != 0)) && !fail) {
            fprintf(stderr, "stackctl: run: writing %s: %s\n", path ? path : "stderr",
                    strerror(errno));
            fail = 1;
        } else if (!fail && path && out != stderr) {
            fprintf(stderr, "stackctl: wrote %s\n", path);
        }
        if (!fail && k.ours > rep->leaks->n_stacks)
            fprintf(stderr, "stackctl: run: %zu more stack(s) not shown (--top 0 shows all)\n",
                    k.ours - rep->leaks->n_stacks);
    }
    restore_report(rep->leaks, &k);
    stackwatch__reply__free_unpacked(rep, NULL);
    return fail ? -1 : found;
}

static int parse_fail_on(const char *s, int *bits)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        if (!strcmp(w, "leak"))
            *bits |= FAIL_LEAK;
        else if (!strcmp(w, "growing"))
            *bits |= FAIL_GROWING;
        else if (!strcmp(w, "unreachable"))
            *bits |= FAIL_UNREACHABLE;
        else
            return -1;
    }
    return 0;
}

int cli_run(const char *dir, int argc, char **argv)
{
    const char *expire = NULL, *sample = NULL, *html = NULL, *outpath = NULL, *agent_opt = NULL;
    int json = 0, fail_on = 0, top_given = 0;
    unsigned flags = 0; /* CLI_ALL_FRAMES */
    uint32_t top = 0;
    static const struct option lopts[] = {
        { "expire", required_argument, 0, 'e' },
        { "sample", required_argument, 0, 's' },
        { "top", required_argument, 0, 'n' },
        { "json", no_argument, 0, 'j' },
        { "html", required_argument, 0, 'H' },
        { "output", required_argument, 0, 'o' },
        { "fail-on", required_argument, 0, 'F' },
        { "agent", required_argument, 0, 'A' },
        { "all-frames", no_argument, 0, 'X' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    optind = 0;
    int o;
    /* '+': options end at the program's name (or at --). */
    while ((o = getopt_long(argc, argv, "+ho:", lopts, NULL)) != -1) {
        char *end;
        switch (o) {
        case 'e': {
            errno = 0;
            double v = strtod(optarg, &end);
            if (errno || end == optarg || *end || v < 0.001 || v > 86400) {
                fprintf(stderr, "stackctl: run: --expire %s: seconds, 0.001..86400\n", optarg);
                return CLI_RUN_EXIT_FAILED;
            }
            expire = optarg;
            break;
        }
        case 's': sample = optarg; break;
        case 'n': {
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || *optarg == '-' || v > 1000000) {
                fprintf(stderr, "stackctl: run: --top %s: not a number\n", optarg);
                return CLI_RUN_EXIT_FAILED;
            }
            top = (uint32_t)v;
            top_given = 1;
            break;
        }
        case 'j': json = 1; break;
        case 'H': html = optarg; break;
        case 'o': outpath = optarg; break;
        case 'A': agent_opt = optarg; break;
        case 'X': flags |= CLI_ALL_FRAMES; break;
        case 'F':
            if (parse_fail_on(optarg, &fail_on) < 0) {
                fprintf(stderr, "stackctl: run: --fail-on %s: leak, growing or unreachable "
                                "(comma-separated)\n", optarg);
                return CLI_RUN_EXIT_FAILED;
            }
            break;
        case 'h': run_usage(stdout); return 0;
        default: run_usage(stderr); return CLI_RUN_EXIT_FAILED;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "stackctl: run: no program given\n");
        run_usage(stderr);
        return CLI_RUN_EXIT_FAILED;
    }
    if (json && html) {
        fprintf(stderr, "stackctl: run: --json and --html: one of them\n");
        return CLI_RUN_EXIT_FAILED;
    }
    if (html && outpath) {
        fprintf(stderr, "stackctl: run: --html FILE is the output: no -o with it\n");
        return CLI_RUN_EXIT_FAILED;
    }
    if (!top_given && !json)
        top = html ? 20 : 10; /* the text report leads with the 10 first by rank */
    char **prog = argv + optind;
    char agent[PATH_MAX], err[1024];
    if (cli_agent_file(agent_opt, agent, sizeof agent, err, sizeof err) < 0) {
        fprintf(stderr, "stackctl: run: %s\n", err);
        return CLI_RUN_EXIT_FAILED;
    }
    /* An ignored SIGCHLD (inherited) would reap the program for the
     * kernel, and its status would be lost. */
    signal(SIGCHLD, SIG_DFL);
    static run_t r; /* large (pid set, paths): not on the stack */
    memset(&r, 0, sizeof r);
    if (cli_resolve_dir(&r.rd, dir, "stackctl: run") < 0)
        return CLI_RUN_EXIT_FAILED;
    cli_daemon_t d;
    int rc = cli_find(&r.rd, 1, 5000, &d);
    cli_daemon_close(&d);
    if (rc == 0) {
        r.shared = 1;
        if (expire && (uint64_t)(strtod(expire, NULL) * 1000 + 0.5) != d.expire_ms)
            fprintf(stderr, "stackctl: run: the collectord running in %s has its own expire "
                            "time (%.3f s); --expire %s applies only to a private one\n",
                    r.rd.dir, d.expire_ms / 1000.0, expire);
    } else {
        /* Nothing of ours answers there: a private collectord, in --dir
         * if one was given, else in a directory of its own. */
        if (!dir && make_private_dir(&r) < 0)
            return CLI_RUN_EXIT_FAILED;
        if (dir) {
            char perr[RUNDIR_MAX + 256];
            if (rundir_prepare(&r.rd, perr, sizeof perr) < 0) {
                fprintf(stderr, "stackctl: run: %s\n", perr);
                return CLI_RUN_EXIT_FAILED;
            }
        }
        if (start_private(&r, expire ? expire : "1") < 0) {
            stop_private(&r);
            return CLI_RUN_EXIT_FAILED;
        }
    }
    fprintf(stderr, "stackctl: run: %s collectord in %s (stackctl --dir %s query leaks)\n",
            r.shared ? "the running" : "a private", r.rd.dir, r.rd.dir);
    int code = 0;
    int status = run_program(&r, prog, agent, sample, fail_on, &code);
    int found = 0;
    if (status >= 0) {
        if (WIFEXITED(status))
            code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
            code = 128 + WTERMSIG(status);
        found = report(&r, top, json, html, outpath, flags);
    }
    stop_private(&r);
    if (status < 0 || code != 0)
        return code; /* the program's own failure (or it did not run) says most */
    if (found < 0)
        return CLI_RUN_EXIT_FAILED;
    if (fail_on && (found & NOT_TRACED)) {
        fprintf(stderr, "stackctl: run: --fail-on: nothing was traced, nothing to judge; exit %d\n",
                CLI_RUN_EXIT_FAILED);
        return CLI_RUN_EXIT_FAILED;
    }
    if (found & fail_on) {
        fprintf(stderr, "stackctl: run: --fail-on:%s%s%s found; exit %d\n",
                found & fail_on & FAIL_LEAK ? " leak" : "",
                found & fail_on & FAIL_GROWING ? " growing" : "",
                found & fail_on & FAIL_UNREACHABLE ? " unreachable" : "", CLI_RUN_EXIT_LEAKS);
        return CLI_RUN_EXIT_LEAKS;
    }
    return 0;
}
