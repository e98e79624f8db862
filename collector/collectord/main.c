/* collectord: start (daemonized or -f), stop, status. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "collector/common/cli_call.h"
#include "collector/common/rundir.h"
#include "srv.h"
#include "sym.h"
#include "wrap.h"
#include "collector/common/signame.h"
#include "store.h"
#include "collector/common/version.h"

#define EXIT_NOT_RUNNING 3

static void usage(FILE *f)
{
    fprintf(f,
            "usage: collectord start [--dir DIR] [--expire SECONDS] [-f|--foreground]\n"
            "                        [--retain N] [--retain-time SECONDS] [--debuginfod]\n"
            "                        [--max-live N] [--on-leak SIG] [--python-captures N]\n"
            "                        [--wrapper REGEX]... [--debug-dir DIR]\n"
            "                        [--metrics ADDR] [--metrics-top N] [--metrics-clients N]\n"
            "                        [--state-dir DIR|none] [--idle-timeout SECONDS]\n"
            "                        [--max-reply BYTES]\n"
            "       collectord stop [--dir DIR]\n"
            "       collectord status [--dir DIR]\n"
            "       collectord --version\n"
            "\n"
            "  --dir DIR            runtime directory (default: $STACKWATCH_DIR,\n"
            "                       else $XDG_RUNTIME_DIR/stackwatch, else /tmp/stackwatch-UID)\n"
            "  --expire SECONDS     age at which an unfreed block counts as expired (default 10)\n"
            "  -f, --foreground     do not daemonize; log to stderr\n"
            "  --retain N           ended processes kept for queries (default 64), in memory\n"
            "                       and in the store\n"
            "  --retain-time SECS   ... for at most this long (default 3600)\n"
            "  --state-dir DIR      where ended processes' reports are stored so they survive a\n"
            "                       restart (default: DIR/state with --dir or STACKWATCH_DIR,\n"
            "                       else $XDG_STATE_HOME/stackwatch, else\n"
            "                       ~/.local/state/stackwatch); 'none': keep nothing on disk\n"
            "  --metrics ADDR       serve Prometheus/OpenMetrics text at http://ADDR/metrics:\n"
            "                       HOST:PORT (127.0.0.1:9464; port 0 picks one) or a Unix\n"
            "                       socket path\n"
            "  --metrics-top N      stacks exported per process, by rank (default 10)\n"
            "  --metrics-clients N  running processes exported (default 64)\n"
            "  --debuginfod         let libdw ask debuginfod servers (DEBUGINFOD_URLS)\n"
            "  --max-live N         live blocks tracked per process (default 67108864; one\n"
            "                       process's instance tokens share it); beyond it\n"
            "                       allocations are counted, not tracked\n"
            "  --max-reply BYTES    cut a query's reply to stackctl to this size, with a note\n"
            "                       (default and most 267386880, i.e. 255 MiB; least 65536)\n"
            "  --on-leak SIG        when a stack first becomes may-leak, signal its process\n"
            "                       (if it handles SIG) and arm the stack to raise SIG in the\n"
            "                       thread of its next allocation\n"
            "  --wrapper REGEX      also hide leading frames whose function matches (allocation\n"
            "                       wrappers; a built-in list covers new, g_malloc, PyMem_...)\n"
            "  --test-clock         (tests) time advances only by Tick requests on the control\n"
            "                       socket, each running one aging and classification pass\n"
            "  --debug-dir DIR      also look for separate debug info in DIR (by build-id:\n"
            "                       DIR/.build-id/xx/rest.debug, or by path/debuglink)\n"
            "  --idle-timeout SECS  close a connection that sends no Hello (agent) or no whole\n"
            "                       request (control) within SECS, or leaves a reply unread\n"
            "                       that long (default 10)\n"
            "  --python-captures N  Python tracebacks captured per leaking stack of a Python\n"
            "                       process with no command given, per round (default 32;\n"
            "                       up to 4 rounds while none stays live; 0: off)\n");
}

static int parse_seconds(const char *s, uint64_t *ns)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0.001 || v > 86400 * 365)
        return -EINVAL;
    *ns = (uint64_t)(v * 1e9);
    return 0;
}

/* Reports start-up success or an error to the waiting parent, if any. */
static void notify(int fd, const char *msg)
{
    if (fd < 0)
        return;
    ssize_t w = write(fd, msg, strlen(msg));
    (void)w;
    close(fd);
}

typedef struct ready_s {
    int fd;              /* the waiting parent's pipe, or -1 in the foreground */
    const char *dir;
} ready_t;

static void announce(void *arg)
{
    ready_t *r = arg;
    if (r->fd >= 0) {
        char ok[32];
        snprintf(ok, sizeof ok, "OK %d", (int)getpid());
        notify(r->fd, ok);
    } else {
        printf("collectord running in the foreground (pid %d) in %s\n", (int)getpid(), r->dir);
        fflush(stdout);
    }
}

static int cmd_start(const rundir_t *rd, srv_opts_t *opts, int foreground)
{
    char err[RUNDIR_MAX + 512];
    if (rundir_prepare(rd, err, sizeof err) < 0) {
        fprintf(stderr, "collectord: %s\n", err);
        return 1;
    }
    pid_t other = 0;
    int probe = rundir_lock_pidfile(rd, &other);
    if (probe == -EEXIST) {
        fprintf(stderr, "collectord: already running (pid %d) in %s\n", (int)other, rd->dir);
        return 1;
    }
    if (probe >= 0)
        close(probe); /* re-taken by the process that will serve */

    int ready = -1;
    if (!foreground) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
            perror("collectord: pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("collectord: fork");
            return 1;
        }
        if (pid > 0) {
            close(p[1]);
            char msg[RUNDIR_MAX + 512];
            size_t n = 0;
            ssize_t r;
            while (n < sizeof msg - 1 && (r = read(p[0], msg + n, sizeof msg - 1 - n)) > 0)
                n += (size_t)r;
            msg[n] = '\0';
            close(p[0]);
            if (strncmp(msg, "OK ", 3) == 0) {
                printf("collectord started (pid %s) in %s\n", msg + 3, rd->dir);
                return 0;
            }
            fprintf(stderr, "collectord: %s\n", n ? msg : "the daemon exited during start-up");
            return 1;
        }
        close(p[0]);
        ready = p[1];
        setsid();
        pid = fork();
        if (pid < 0)
            _exit(1);
        if (pid > 0)
            _exit(0);
        if (chdir("/") < 0)
            _exit(1);
        umask(077);
        int null = open("/dev/null", O_RDWR);
        int logfd = open(rd->logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
                         0600);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        /* No log (a symlink planted there, say): stderr goes nowhere rather
         * than holding the caller's terminal or pipe open. */
        if (logfd >= 0 || null >= 0)
            dup2(logfd >= 0 ? logfd : null, 2);
        if (logfd > 2)
            close(logfd);
        if (null > 2)
            close(null);
    }

    int pidfd = rundir_lock_pidfile(rd, &other);
    if (pidfd < 0) {
        if (pidfd == -EEXIST)
            snprintf(err, sizeof err, "already running (pid %d) in %s", (int)other, rd->dir);
        else if (pidfd == -EINVAL)
            snprintf(err, sizeof err, "%s is not a regular file of yours with one link; "
                     "refusing to use it (remove it)", rd->pidfile);
        else
            snprintf(err, sizeof err, "cannot lock %s: %s", rd->pidfile, strerror(-pidfd));
        if (ready >= 0)
            notify(ready, err);
        else
            fprintf(stderr, "collectord: %s\n", err);
        return 1;
    }
    rundir_write_pid(pidfd, getpid());
    if (!opts->debuginfod)
        unsetenv("DEBUGINFOD_URLS"); /* libdw would query the network for every miss */
    else if (!getenv("DEBUGINFOD_TIMEOUT"))
        setenv("DEBUGINFOD_TIMEOUT", "5", 1); /* a short wait per lookup, not 90 s */

    /* One fd per agent, control client and open module: take what the hard
     * limit allows (up to 64 Ki) rather than the usual soft 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 && rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
        rl.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    srv_t s;
    memset(&s, 0, sizeof s);
    s.rd = *rd;
    s.opts = *opts;
    s.metrics.fd = -1;
    s.metrics.top = opts->metrics_top;
    s.metrics.max_clients = opts->metrics_clients;
    if (opts->metrics_addr && metrics_listen(&s.metrics, opts->metrics_addr, err, sizeof err) < 0) {
        if (ready >= 0)
            notify(ready, err);
        else
            fprintf(stderr, "collectord: %s\n", err);
        unlink(rd->pidfile);
        close(pidfd);
        return 1;
    }
    if (srv_listen(&s, err, sizeof err) < 0) {
        if (ready >= 0)
            notify(ready, err);
        else
            fprintf(stderr, "collectord: %s\n", err);
        unlink(rd->pidfile);
        close(pidfd);
        return 1;
    }
    if (opts->test_clock) {
        srv_clock_virtual();
        srv_log("test clock: time advances only by Tick requests");
    }
    srv_log("listening in %s (expire %.3fs)", rd->dir, (double)opts->expire_ns / 1e9);
    if (s.metrics.fd >= 0) {
        srv_log("metrics on %s%s/metrics", s.metrics.unix_path[0] ? "unix:" : "http://",
                s.metrics.bound);
        /* Where a port picked by the kernel (:0) can be read back. */
        char path[RUNDIR_MAX + 32];
        snprintf(path, sizeof path, "%s/metrics.addr", rd->dir);
        FILE *f = fopen(path, "we");
        if (f) {
            fprintf(f, "%s\n", s.metrics.bound);
            fclose(f);
        }
    }
    if (opts->state_dir) {
        if (store_open(&s.store, opts->state_dir, opts->retain_max, opts->retain_ns, err,
                       sizeof err) < 0)
            srv_log("store: %s; ended reports will not survive a restart", err);
        else
            srv_log("store: %s (%u report(s) read back, %llu set aside)", opts->state_dir,
                    store_count(&s.store), (unsigned long long)s.store.set_aside);
    }
    ready_t rt = { ready, rd->dir };
    srv_run(&s, announce, &rt);
    srv_log("stopped");
    unlink(rd->pidfile);
    close(pidfd);
    return 0;
}

/* Says what rd's directory holds when no collectord of ours can be asked
 * there (rc from rundir_inspect or cli_find, d as cli_find left it) and
 * returns the exit status: EXIT_NOT_RUNNING when nothing runs there, 1
 * when something does that is not ours to use, or on an error. */
static int say_not_ours(const rundir_t *rd, int rc, const cli_daemon_t *d, const char *err)
{
    switch (rc) {
    case -ENOENT:
    case -ECONNREFUSED: {
        pid_t claimed = rundir_running_pid(rd);
        if (claimed) {
            /* A pid written in a file is no collectord to talk to or signal. */
            fprintf(stderr, "collectord: nothing answers on %s, yet %s is locked (it names pid "
                    "%d): a collectord starting, or stuck before listening; not signalled\n",
                    rd->control_sock, rd->pidfile, (int)claimed);
            return 1;
        }
        printf("collectord is not running in %s\n", rd->dir);
        return EXIT_NOT_RUNNING;
    }
    case -EPERM:
        fprintf(stderr, "collectord: %s is served by uid %u (pid %d), not by you (uid %u): "
                "another user's collectord\n", rd->control_sock, (unsigned)d->uid, (int)d->pid,
                (unsigned)geteuid());
        return 1;
    case -ETIMEDOUT:
        fprintf(stderr, "collectord: the collectord in %s (pid %d) does not answer: %s\n",
                rd->dir, (int)d->pid, strerror(-rc));
        return 1;
    case -ESRCH:
        fprintf(stderr, "collectord: the listener on %s (pid %d) answers with another pid: "
                "not a collectord to trust\n", rd->control_sock, (int)d->pid);
        return 1;
    default:
        if (err && *err)
            fprintf(stderr, "collectord: %s\n", err);
        else
            fprintf(stderr, "collectord: cannot ask the collectord in %s: %s\n", rd->dir,
                    strerror(-rc));
        return 1;
    }
}

/* The directory is not ours: says who owns it and, where we can see, who
 * listens in it; nothing there is used or signalled. Returns 1. */
static int say_foreign_dir(const rundir_t *rd, uid_t owner, const char *lead)
{
    cli_daemon_t d;
    int rc = cli_find(rd, 1, 5000, &d); /* refuses another uid before sending anything */
    cli_daemon_close(&d);
    char found[128];
    if (rc == -EPERM)
        snprintf(found, sizeof found, "a collectord of uid %u (pid %d) runs there, not yours",
                 (unsigned)d.uid, (int)d.pid);
    else if (rc == -ENOENT || rc == -ECONNREFUSED)
        snprintf(found, sizeof found, "no collectord listens there");
    else
        snprintf(found, sizeof found, "whether a collectord runs there is not yours to see");
    fprintf(stderr, "collectord: %s%s is owned by uid %u, not by you (uid %u); %s\n", lead,
            rd->dir, (unsigned)owner, (unsigned)geteuid(), found);
    return 1;
}

/* What stop and status start with: the directory checked as start checks
 * it, then the daemon looked for (cli_find, our uid only; *rc its result,
 * d to close). Returns -1 to go on, else the exit status (said). */
static int look(const rundir_t *rd, const char *lead, cli_daemon_t *d, int *rc)
{
    char err[RUNDIR_MAX + 256];
    uid_t owner = 0;
    int r = rundir_inspect(rd, &owner, err, sizeof err);
    if (r == -ENOENT) {
        printf("collectord is not running in %s\n", rd->dir);
        return EXIT_NOT_RUNNING;
    }
    if (r == -EPERM)
        return say_foreign_dir(rd, owner, lead);
    if (r < 0)
        return say_not_ours(rd, r, NULL, err);
    *rc = cli_find(rd, 1, 5000, d);
    return -1;
}

static int cmd_status(const rundir_t *rd)
{
    cli_daemon_t d;
    int rc, st = look(rd, "", &d, &rc);
    if (st >= 0)
        return st;
    cli_daemon_close(&d);
    if (rc < 0)
        return say_not_ours(rd, rc, &d, NULL);
    printf("collectord running: pid %d, %u client(s), expire %.3fs, dir %s\n", (int)d.pid,
           d.clients, d.expire_ms / 1000.0, d.dir);
    return 0;
}

/* Waits up to ms for the process behind pidfd to end. 1: it ended, 0: not
 * yet, -errno. */
static int wait_gone(int pidfd, int ms)
{
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long spent = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        int r = poll(&p, 1, spent >= ms ? 0 : (int)(ms - spent));
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

#define STOP_WAIT_MS 10000 /* for a graceful stop (stores every report) */
#define TERM_WAIT_MS 5000  /* then after SIGTERM */

/* Stops only a collectord verified through the kernel: in a directory of
 * ours, the listener on its control socket of our uid, named by a pidfd
 * (the socket's SO_PEERPIDFD, or by its pid once it answered as that pid).
 * Success is said only once that process has ended. */
static int cmd_stop(const rundir_t *rd)
{
    cli_daemon_t d;
    int rc, st = look(rd, "refusing to stop anything: ", &d, &rc);
    if (st >= 0)
        return st;
    if (rc < 0 && !(rc == -ETIMEDOUT && d.pidfd >= 0)) {
        cli_daemon_close(&d);
        return say_not_ours(rd, rc, &d, NULL);
    }
    int asked = 0;
    if (rc == 0) {
        Stackwatch__Shutdown sd = STACKWATCH__SHUTDOWN__INIT;
        Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
        req.req_case = STACKWATCH__REQUEST__REQ_SHUTDOWN;
        req.shutdown = &sd;
        Stackwatch__Reply *rep = NULL;
        if (cli_exchange(d.fd, &req, 5000, &rep) == 0) {
            stackwatch__reply__free_unpacked(rep, NULL);
            asked = 1;
        }
    }
    if (d.pidfd < 0) {
        /* No pidfd (a kernel without them): no way to tell the daemon ended. */
        fprintf(stderr, "collectord: %s pid %d to stop, but have no pidfd of it to see it "
                "end (not signalled)\n", asked ? "asked" : "could not ask", (int)d.pid);
        cli_daemon_close(&d);
        return 1;
    }
    int gone = asked ? wait_gone(d.pidfd, STOP_WAIT_MS) : 0;
    int termed = 0;
    if (gone == 0) {
        if (!asked)
            fprintf(stderr, "collectord: pid %d does not answer; sending SIGTERM\n", (int)d.pid);
        if (syscall(SYS_pidfd_send_signal, d.pidfd, SIGTERM, NULL, 0) == 0)
            termed = 1;
        gone = wait_gone(d.pidfd, TERM_WAIT_MS);
    }
    pid_t pid = d.pid;
    cli_daemon_close(&d);
    if (gone == 1) {
        printf("collectord stopped (pid %d)%s\n", (int)pid, termed ? " after SIGTERM" : "");
        return 0;
    }
    fprintf(stderr, "collectord: pid %d did not stop within %d s; it still runs\n", (int)pid,
            ((asked ? STOP_WAIT_MS : 0) + TERM_WAIT_MS) / 1000);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("collectord (stackwatch) %s\n", STACKWATCH_VERSION);
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    const char *dir = NULL;
    int foreground = 0;
    srv_opts_t opts = { .expire_ns = 10ull * 1000000000, .retain_max = 64,
                        .retain_ns = 3600ull * 1000000000, .py_captures = 32,
                        .metrics_top = METRICS_TOP_DEFAULT,
                        .metrics_clients = METRICS_CLIENTS_DEFAULT, .idle_ns = SRV_IDLE_NS };
    const char *state_dir = NULL;
    static const struct option lopts[] = {
        { "dir", required_argument, 0, 'd' },
        { "expire", required_argument, 0, 'e' },
        { "foreground", no_argument, 0, 'f' },
        { "retain", required_argument, 0, 'r' },
        { "retain-time", required_argument, 0, 't' },
        { "debuginfod", no_argument, 0, 'D' },
        { "max-live", required_argument, 0, 'L' },
        { "on-leak", required_argument, 0, 'S' },
        { "python-captures", required_argument, 0, 'P' },
        { "wrapper", required_argument, 0, 'W' },
        { "debug-dir", required_argument, 0, 'G' },
        { "metrics", required_argument, 0, 'M' },
        { "metrics-top", required_argument, 0, 'T' },
        { "metrics-clients", required_argument, 0, 'C' },
        { "state-dir", required_argument, 0, 'A' },
        { "version", no_argument, 0, 'V' },
        { "test-clock", no_argument, 0, 'K' },
        { "idle-timeout", required_argument, 0, 'I' },
        { "max-reply", required_argument, 0, 'R' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "fh", lopts, NULL)) != -1) {
        switch (o) {
        case 'd':
            dir = optarg;
            break;
        case 'e':
            if (parse_seconds(optarg, &opts.expire_ns) < 0) {
                fprintf(stderr, "collectord: --expire %s: not a number of seconds >= 0.001\n",
                        optarg);
                return 2;
            }
            break;
        case 'f':
            foreground = 1;
            break;
        case 'r': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 100000) {
                fprintf(stderr, "collectord: --retain %s: not a count in 0..100000\n", optarg);
                return 2;
            }
            opts.retain_max = (uint32_t)v;
            break;
        }
        case 't':
            if (parse_seconds(optarg, &opts.retain_ns) < 0) {
                fprintf(stderr, "collectord: --retain-time %s: not a positive number of seconds\n",
                        optarg);
                return 2;
            }
            break;
        case 'D':
            opts.debuginfod = 1;
            break;
        case 'I':
            if (parse_seconds(optarg, &opts.idle_ns) < 0) {
                fprintf(stderr, "collectord: --idle-timeout %s: not a number of seconds >= 0.001\n",
                        optarg);
                return 2;
            }
            break;
        case 'K':
            opts.test_clock = 1;
            break;
        case 'R': {
            char *end;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end || v < 65536 || v > SRV_REPLY_MAX || optarg[0] == '-') {
                fprintf(stderr, "collectord: --max-reply %s: not a size in 65536..%llu bytes\n",
                        optarg, (unsigned long long)SRV_REPLY_MAX);
                return 2;
            }
            opts.reply_max = v;
            break;
        }
        case 'L': {
            char *end;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end || v < 1 || v > (1ull << 30) || optarg[0] == '-') {
                fprintf(stderr, "collectord: --max-live %s: not a count in 1..%llu\n", optarg,
                        1ull << 30);
                return 2;
            }
            opts.max_live = v;
            break;
        }
        case 'S': {
            int sig = signame_parse(optarg);
            if (sig < 0) {
                fprintf(stderr, "collectord: --on-leak %s: not a signal (USR1, SIGUSR1 or a "
                                "number)\n", optarg);
                return 2;
            }
            opts.on_leak_sig = sig;
            break;
        }
        case 'P': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 1000) {
                fprintf(stderr, "collectord: --python-captures %s: not a count in 0..1000\n",
                        optarg);
                return 2;
            }
            opts.py_captures = (uint32_t)v;
            break;
        }
        case 'W': {
            char err[512];
            if (wrap_add(optarg, err, sizeof err) < 0) {
                fprintf(stderr, "collectord: %s\n", err);
                return 2;
            }
            break;
        }
        case 'G':
            if (sym_add_debug_dir(optarg) < 0) {
                fprintf(stderr, "collectord: --debug-dir %s: too many or too long\n", optarg);
                return 2;
            }
            break;
        case 'M':
            if (!*optarg) {
                fprintf(stderr, "collectord: --metrics wants HOST:PORT or a socket path\n");
                return 2;
            }
            opts.metrics_addr = optarg;
            break;
        case 'T':
        case 'C': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 0 || v > 1000) {
                fprintf(stderr, "collectord: --metrics-%s %s: not a count in 0..1000\n",
                        o == 'T' ? "top" : "clients", optarg);
                return 2;
            }
            if (o == 'T')
                opts.metrics_top = (uint32_t)v;
            else
                opts.metrics_clients = (uint32_t)v;
            break;
        }
        case 'A':
            if (!*optarg) {
                fprintf(stderr, "collectord: --state-dir wants a directory or 'none'\n");
                return 2;
            }
            state_dir = optarg;
            break;
        case 'V':
            printf("collectord (stackwatch) %s\n", STACKWATCH_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "collectord: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    rundir_t rd;
    if (cli_resolve_dir(&rd, dir, "collectord") < 0)
        return 1;
    /* The store: a private collectord (--dir, STACKWATCH_DIR) keeps its own
     * beside its sockets; the user's default one is in the XDG state dir.
     * Relative paths are made absolute before the daemon leaves the cwd. */
    static char sdir[2 * RUNDIR_MAX + 64], maddr[2 * RUNDIR_MAX + 2], fallback[RUNDIR_MAX + 8];
    char cwd[RUNDIR_MAX];
    if (!getcwd(cwd, sizeof cwd))
        snprintf(cwd, sizeof cwd, "/");
    if (state_dir && !strcmp(state_dir, "none"))
        sdir[0] = '\0';
    else if (state_dir && state_dir[0] != '/')
        snprintf(sdir, sizeof sdir, "%s/%s", cwd, state_dir);
    else if (state_dir)
        snprintf(sdir, sizeof sdir, "%s", state_dir);
    else if (dir || getenv("STACKWATCH_DIR"))
        snprintf(sdir, sizeof sdir, "%s/state", rd.dir);
    else {
        snprintf(fallback, sizeof fallback, "%s/state", rd.dir);
        store_default_dir(sdir, sizeof sdir, fallback);
    }
    opts.state_dir = sdir[0] ? sdir : NULL;
    if (opts.metrics_addr && opts.metrics_addr[0] == '.') {
        snprintf(maddr, sizeof maddr, "%s/%s", cwd, opts.metrics_addr);
        opts.metrics_addr = maddr;
    }
    if (!strcmp(cmd, "start"))
        return cmd_start(&rd, &opts, foreground);
    if (!strcmp(cmd, "stop"))
        return cmd_stop(&rd);
    if (!strcmp(cmd, "status"))
        return cmd_status(&rd);
    fprintf(stderr, "collectord: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
