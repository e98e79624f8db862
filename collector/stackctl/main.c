/* stackctl: queries to a running collectord. */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attach.h"
#include "collector/common/cli_call.h"
#include "diff.h"
#include "html.h"
#include "py.h"
#include "render.h"
#include "report.h"
#include "run.h"
#include "collector/common/rundir.h"
#include "collector/common/signame.h"
#include "collector/common/version.h"

#define QUERY_TIMEOUT_MS 120000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: stackctl [--dir DIR] query leaks [--pid PID] [--exe GLOB] [--top N]\n"
            "                 [--min-bytes B] [--class CLASS] [--all] [--by exe]\n"
            "                 [--since-mark] [--reachability] [--all-frames]\n"
            "                 [--json | --format text|json|folded|pprof]\n"
            "                 [-o FILE]\n"
            "       stackctl [--dir DIR] mark [--pid PID] [-o FILE]\n"
            "       stackctl [--dir DIR] snapshot [--pid PID] -o FILE\n"
            "       stackctl [--dir DIR] diff [--top N] [--json] FROM TO\n"
            "       stackctl [--dir DIR] report --html FILE [--pid PID] [--exe GLOB] [--top N]\n"
            "                 [--all-frames]\n"
            "       stackctl [--dir DIR] query clients [--json]\n"
            "       stackctl [--dir DIR] trigger add (--match REGEX | --module REGEX |\n"
            "                                         --stack ID --pid PID) [--frame N]\n"
            "                                         [--min-depth D] [--pid PID] [--leaking]\n"
            "                                         [--signal SIG] [--count N] [--json]\n"
            "       stackctl [--dir DIR] trigger list [--json]\n"
            "       stackctl [--dir DIR] trigger rm ID\n"
            "       stackctl [--dir DIR] run [--expire S] [--sample R] [--top N]\n"
            "                 [--json | --html FILE] [-o FILE] [--agent PATH]\n"
            "                 [--fail-on leak|growing|unreachable] -- PROGRAM ARGS...\n"
            "       stackctl --version\n"
            "       stackctl [--dir DIR] attach PID [--agent PATH] [--timeout MS]\n"
            "       stackctl [--dir DIR] detach PID [--timeout MS]\n"
            "       stackctl [--dir DIR] scan PID [--json]\n"
            "\n"
            "  query leaks     stacks whose blocks outlived the expire time (may-leak),\n"
            "                  largest first; of ended processes also blocks live at exit\n"
            "  query clients   traced processes and their counters\n"
            "  --all           every stack with allocations, not only leaking ones\n"
            "  --class C       leak, growing, retained, cache or transient\n"
            "  --by exe        fold the same stack of every process of one executable\n"
            "  --since-mark    only what was allocated after 'stackctl mark'\n"
            "  --format        text (memleax's shape), json, folded (flamegraph.pl,\n"
            "                  weighted by may-leak bytes) or pprof (gzipped profile.proto)\n"
            "  --all-frames    text and HTML: every frame of CPython itself, not\n"
            "                  '… 9 CPython frames' (JSON, folded, pprof have them all)\n"
            "  mark            a baseline: warm up, mark, then query --since-mark;\n"
            "                  -o FILE also writes a snapshot at the mark\n"
            "  snapshot        every stack as it is now, to FILE, for diff\n"
            "  diff FROM TO    which stacks grew: each a PID (asked now) or a snapshot\n"
            "                  FILE; stacks matched by executable and frames\n"
            "  report --html   one self-contained HTML file: live bytes over time,\n"
            "                  a flame graph of may-leak bytes, the ranked table\n"
            "  trigger add     arm matching stacks (now and later) in their agent: each of\n"
            "                  the next --count (3) allocations logs 'malloc @ PTR for SIZE',\n"
            "                  records its Python stack, and raises --signal in the\n"
            "                  allocating thread if the process handles it\n"
            "    --match/--module  regex on function names / module paths of the report's\n"
            "                  frames; --frame N pins the frame index (innermost = 0)\n"
            "    --leaking     only stacks with may-leak blocks (armed when they first\n"
            "                  expire), not every matching start-up stack\n"
            "  attach PID      trace a running process from now on (ptrace: same user or\n"
            "                  root); settings from this shell's STACKWATCH_* variables\n"
            "  detach PID      stop tracing it; the process runs on\n"
            "  scan PID        reachability: stop the process for a moment, copy its memory,\n"
            "                  find which live blocks no pointer chain reaches (lost)\n"
            "  --reachability  scan every process of the report first (query leaks)\n"
            "  run             PROGRAM under the agent (the running collectord, else a\n"
            "                  private one), its leak report on stderr when it ends;\n"
            "                  'stackctl run --help' for its options and exit statuses\n");
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') {
        fprintf(stderr, "stackctl: %s %s: not a number\n", opt, s);
        return -1;
    }
    uint64_t mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1024ull * 1024 * 1024, end++;
    if (*end) {
        fprintf(stderr, "stackctl: %s %s: not a number\n", opt, s);
        return -1;
    }
    *out = v * mul;
    return 0;
}

static int call(const rundir_t *rd, Stackwatch__Request *req, Stackwatch__Reply **rep)
{
    int rc = cli_call(rd->control_sock, req, QUERY_TIMEOUT_MS, rep);
    if (rc == -ENOENT || rc == -ECONNREFUSED) {
        fprintf(stderr,
                "stackctl: no collectord is running in %s (start one with: collectord start)\n",
                rd->dir);
        return 1;
    }
    if (rc == -EPERM) {
        fprintf(stderr, "stackctl: the collectord at %s runs as another user; not talking to it\n",
                rd->control_sock);
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "stackctl: talking to collectord at %s: %s\n", rd->control_sock,
                strerror(-rc));
        return 1;
    }
    if ((*rep)->error) {
        fprintf(stderr, "stackctl: collectord: %s\n",
                (*rep)->message && *(*rep)->message ? (*rep)->message : strerror(-(*rep)->error));
        stackwatch__reply__free_unpacked(*rep, NULL);
        return 1;
    }
    if ((*rep)->message && *(*rep)->message) /* a note with an answer: a cut reply */
        fprintf(stderr, "stackctl: note: %s\n", (*rep)->message);
    return 0;
}

/* Writes the reply in format; an unexpected reply is an error. Frees rep. */
static int render(Stackwatch__Reply *rep, int want, const char *format, FILE *out,
                  unsigned flags)
{
    int rc = cli_render(out, rep, want, format, flags);
    stackwatch__reply__free_unpacked(rep, NULL);
    if (rc == -EPROTO) {
        fprintf(stderr, "stackctl: unexpected reply from collectord\n");
        return 1;
    }
    return rc < 0 ? 1 : 0;
}

static int print_rules(const rundir_t *rd, Stackwatch__Request *req, int json)
{
    Stackwatch__Reply *rep = NULL;
    if (call(rd, req, &rep))
        return 1;
    if (render(rep, CLI_WANT_RULES, json ? "json" : "text", stdout, 0))
        return 1;
    return fflush(stdout) == 0 ? 0 : 1;
}

/* --reachability: a scan of each connected process the report covers
 * first. A process that cannot be scanned is said so, the report goes on.
 * Returns 0, or -1 when collectord cannot be asked at all. */
static int scan_before(const rundir_t *rd, uint32_t pid, const char *exe)
{
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    Stackwatch__QueryClients qc = STACKWATCH__QUERY_CLIENTS__INIT;
    req.req_case = STACKWATCH__REQUEST__REQ_CLIENTS;
    req.clients = &qc;
    Stackwatch__Reply *rep = NULL;
    if (call(rd, &req, &rep))
        return -1;
    uint32_t pids[1024];
    size_t n = 0;
    for (size_t i = 0; rep->body_case == STACKWATCH__REPLY__BODY_CLIENTS &&
                       i < rep->clients->n_clients && n < 1024; i++) {
        const Stackwatch__ClientInfo *c = rep->clients->clients[i];
        if (strcmp(c->state, "connected") != 0 || (pid && c->pid != pid))
            continue;
        if (exe && *exe) {
            const char *base = strrchr(c->exe, '/') ? strrchr(c->exe, '/') + 1 : c->exe;
            if (fnmatch(exe, c->exe, 0) != 0 && fnmatch(exe, base, 0) != 0)
                continue;
        }
        pids[n++] = c->pid;
    }
    stackwatch__reply__free_unpacked(rep, NULL);
    if (pid && n == 0)
        fprintf(stderr, "stackctl: pid %u is not connected: no reachability scan\n", pid);
    for (size_t i = 0; i < n; i++) {
        Stackwatch__Request sr = STACKWATCH__REQUEST__INIT;
        Stackwatch__Scan sc = STACKWATCH__SCAN__INIT;
        sc.pid = pids[i];
        sr.req_case = STACKWATCH__REQUEST__REQ_SCAN;
        sr.scan = &sc;
        Stackwatch__Reply *r = NULL;
        int rc = cli_call(rd->control_sock, &sr, QUERY_TIMEOUT_MS * 5, &r);
        if (rc < 0) {
            fprintf(stderr, "stackctl: scan of pid %u: %s\n", pids[i], strerror(-rc));
            continue;
        }
        if (r->error)
            fprintf(stderr, "stackctl: %s\n", r->message && *r->message ? r->message
                                                                       : strerror(-r->error));
        stackwatch__reply__free_unpacked(r, NULL);
    }
    return 0;
}


/* Every stack of pid (0: all) as it is now, stacks keyed by executable and
 * frames (by exe). NULL on failure (said). */
static Stackwatch__Reply *query_snapshot(const rundir_t *rd, uint32_t pid)
{
    Stackwatch__QueryLeaks q = STACKWATCH__QUERY_LEAKS__INIT;
    q.pid = pid;
    q.all = 1;
    q.by_exe = 1;
    q.class_ = (char *)"";
    q.exe = (char *)"";
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    req.req_case = STACKWATCH__REQUEST__REQ_LEAKS;
    req.leaks = &q;
    Stackwatch__Reply *rep = NULL;
    if (call(rd, &req, &rep))
        return NULL;
    if (rep->body_case != STACKWATCH__REPLY__BODY_LEAKS) {
        fprintf(stderr, "stackctl: unexpected reply from collectord\n");
        stackwatch__reply__free_unpacked(rep, NULL);
        return NULL;
    }
    return rep;
}

static int cmd_snapshot(const rundir_t *rd, uint32_t pid, const char *path)
{
    Stackwatch__Reply *rep = query_snapshot(rd, pid);
    if (!rep)
        return 1;
    FILE *f = strcmp(path, "-") ? fopen(path, "wb") : stdout;
    if (!f) {
        fprintf(stderr, "stackctl: cannot write %s: %s\n", path, strerror(errno));
        stackwatch__reply__free_unpacked(rep, NULL);
        return 1;
    }
    int rc = cli_snapshot_write(f, rep->leaks);
    size_t nst = rep->leaks->n_stacks;
    stackwatch__reply__free_unpacked(rep, NULL);
    if ((fflush(f) != 0 || (f != stdout && fclose(f) != 0)) && rc == 0)
        rc = -errno;
    if (rc < 0) {
        fprintf(stderr, "stackctl: writing %s: %s\n", path, strerror(-rc));
        return 1;
    }
    if (f != stdout)
        fprintf(stderr, "stackctl: wrote %s (%zu stack(s))\n", path, nst);
    return 0;
}

/* One side of a diff: a pid (all digits) asked of collectord now, or a
 * snapshot file. Sets *rep (to free) or *snap. Returns 0 or 1 (said). */
static int diff_side(const rundir_t *rd, const char *arg, Stackwatch__Reply **rep,
                     Stackwatch__LeakReport **snap)
{
    *rep = NULL;
    *snap = NULL;
    size_t digits = strspn(arg, "0123456789");
    if (digits && !arg[digits] && digits < 11) {
        *rep = query_snapshot(rd, (uint32_t)strtoul(arg, NULL, 10));
        return *rep ? 0 : 1;
    }
    char why[4200];
    *snap = cli_snapshot_read(arg, why, sizeof why);
    if (!*snap) {
        fprintf(stderr, "stackctl: %s\n", why);
        return 1;
    }
    return 0;
}

static int cmd_diff(const rundir_t *rd, int argc, char **argv, uint32_t top, int json)
{
    if (argc != 2) {
        fprintf(stderr, "stackctl: usage: stackctl diff [--top N] [--json] FROM TO "
                        "(each a PID or a snapshot FILE)\n");
        return 2;
    }
    Stackwatch__Reply *ra, *rb;
    Stackwatch__LeakReport *sa, *sb;
    if (diff_side(rd, argv[0], &ra, &sa))
        return 1;
    if (diff_side(rd, argv[1], &rb, &sb)) {
        if (ra)
            stackwatch__reply__free_unpacked(ra, NULL);
        if (sa)
            stackwatch__leak_report__free_unpacked(sa, NULL);
        return 1;
    }
    Stackwatch__LeakReport *a = ra ? ra->leaks : sa, *b = rb ? rb->leaks : sb;
    char la[300], lb[300];
    snprintf(la, sizeof la, "%s%s", ra ? "pid " : "", argv[0]);
    snprintf(lb, sizeof lb, "%s%s", rb ? "pid " : "", argv[1]);
    if (json)
        cli_diff_json(stdout, a, b, la, lb, top);
    else {
        cli_scrub(&a->base); /* a terminal's text: see cli_render */
        cli_scrub(&b->base);
        cli_diff_text(stdout, a, b, la, lb, top);
    }
    if (ra)
        stackwatch__reply__free_unpacked(ra, NULL);
    if (rb)
        stackwatch__reply__free_unpacked(rb, NULL);
    if (sa)
        stackwatch__leak_report__free_unpacked(sa, NULL);
    if (sb)
        stackwatch__leak_report__free_unpacked(sb, NULL);
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0, all = 0, by_exe = 0, since_mark = 0, leaking = 0, reach = 0;
    unsigned flags = 0; /* CLI_ALL_FRAMES */
    const char *format = NULL, *outpath = NULL, *klass = NULL, *exe = NULL, *html = NULL;
    uint64_t pid = 0, top = 0, min_bytes = 0, count = 0, min_depth = 0, stack = 0;
    int64_t frame = -1;
    int sig = 0;
    const char *match = NULL, *module = NULL, *agent = NULL;
    uint64_t timeout_ms = 60000;
    static const struct option lopts[] = {
        { "dir", required_argument, 0, 'd' },
        { "json", no_argument, 0, 'j' },
        { "pid", required_argument, 0, 'p' },
        { "top", required_argument, 0, 'n' },
        { "min-bytes", required_argument, 0, 'm' },
        { "all", no_argument, 0, 'a' },
        { "match", required_argument, 0, 'M' },
        { "module", required_argument, 0, 'O' },
        { "stack", required_argument, 0, 'S' },
        { "frame", required_argument, 0, 'F' },
        { "min-depth", required_argument, 0, 'D' },
        { "leaking", no_argument, 0, 'L' },
        { "signal", required_argument, 0, 'G' },
        { "count", required_argument, 0, 'C' },
        { "format", required_argument, 0, 'f' },
        { "output", required_argument, 0, 'o' },
        { "class", required_argument, 0, 'K' },
        { "exe", required_argument, 0, 'E' },
        { "by", required_argument, 0, 'B' },
        { "since-mark", no_argument, 0, 'Z' },
        { "html", required_argument, 0, 'H' },
        { "version", no_argument, 0, 'V' },
        { "agent", required_argument, 0, 'A' },
        { "timeout", required_argument, 0, 'T' },
        { "reachability", no_argument, 0, 'R' },
        { "all-frames", no_argument, 0, 'X' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, "+h", lopts, NULL)) != -1) {
        if (o == 'd')
            dir = optarg;
        else if (o == 'V') {
            printf("stackctl (stackwatch) %s\n", STACKWATCH_VERSION);
            return 0;
        } else if (o == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind < 1) {
        usage(stderr);
        return 2;
    }
    const char *group = argv[optind];
    if (!strcmp(group, "run")) /* its own options, then the program's (run.c) */
        return cli_run(dir, argc - optind, argv + optind);
    int one_word = !strcmp(group, "mark") || !strcmp(group, "report") ||
                   !strcmp(group, "snapshot") || !strcmp(group, "diff") ||
                   !strcmp(group, "attach") || !strcmp(group, "detach") ||
                   !strcmp(group, "scan");
    if (!one_word && (argc - optind < 2 ||
                      (strcmp(group, "query") != 0 && strcmp(group, "trigger") != 0))) {
        usage(stderr);
        return 2;
    }
    const char *what = one_word ? group : argv[optind + 1];
    /* Options after the subcommand; positional words stay in sub_argv. */
    int sub_argc = argc - optind - (one_word ? 0 : 1);
    char **sub_argv = argv + optind + (one_word ? 0 : 1);
    optind = 0; /* 0: GNU getopt starts over (and permutes again: "attach PID --agent X") */
    while ((o = getopt_long(sub_argc, sub_argv, "ho:", lopts, NULL)) != -1) {
        char *end;
        switch (o) {
        case 'd': dir = optarg; break;
        case 'j': json = 1; break;
        case 'a': all = 1; break;
        case 'p':
            if (parse_u64("--pid", optarg, &pid) < 0)
                return 2;
            break;
        case 'n':
            if (parse_u64("--top", optarg, &top) < 0)
                return 2;
            break;
        case 'm':
            if (parse_u64("--min-bytes", optarg, &min_bytes) < 0)
                return 2;
            break;
        case 'M': match = optarg; break;
        case 'O': module = optarg; break;
        case 'S':
            errno = 0;
            stack = strtoull(optarg, &end, 16);
            if (errno || *end || !*optarg || stack == 0) {
                fprintf(stderr, "stackctl: --stack %s: not a stack id (hex, from a report)\n",
                        optarg);
                return 2;
            }
            break;
        case 'F': {
            uint64_t v;
            if (parse_u64("--frame", optarg, &v) < 0 || v > 1000)
                return 2;
            frame = (int64_t)v;
            break;
        }
        case 'D':
            if (parse_u64("--min-depth", optarg, &min_depth) < 0)
                return 2;
            break;
        case 'L':
            leaking = 1;
            break;
        case 'G':
            sig = signame_parse(optarg);
            if (sig < 0) {
                fprintf(stderr, "stackctl: --signal %s: not a signal (USR1, SIGUSR1 or a number; "
                                "not KILL or STOP)\n", optarg);
                return 2;
            }
            break;
        case 'C':
            if (parse_u64("--count", optarg, &count) < 0 || count == 0 || count > 1000000) {
                fprintf(stderr, "stackctl: --count wants 1..1000000\n");
                return 2;
            }
            break;
        case 'f': format = optarg; break;
        case 'o': outpath = optarg; break;
        case 'K': klass = optarg; break;
        case 'E': exe = optarg; break;
        case 'Z': since_mark = 1; break;
        case 'H': html = optarg; break;
        case 'A': agent = optarg; break;
        case 'R': reach = 1; break;
        case 'X': flags |= CLI_ALL_FRAMES; break;
        case 'T':
            if (parse_u64("--timeout", optarg, &timeout_ms) < 0 || timeout_ms == 0 ||
                timeout_ms > 3600000) {
                fprintf(stderr, "stackctl: --timeout wants 1..3600000 ms\n");
                return 2;
            }
            break;
        case 'B':
            if (strcmp(optarg, "exe") != 0) {
                fprintf(stderr, "stackctl: --by %s: only --by exe is supported\n", optarg);
                return 2;
            }
            by_exe = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (json && format && strcmp(format, "json") != 0) {
        fprintf(stderr, "stackctl: --json and --format %s contradict each other\n", format);
        return 2;
    }
    if (json)
        format = "json";
    if (!format)
        format = "text";
    if (!strcmp(format, "html")) {
        fprintf(stderr, "stackctl: --format html: the HTML report is a command of its own: "
                        "stackctl report --html FILE\n");
        return 2;
    }
    if (strcmp(format, "text") && strcmp(format, "json") && strcmp(format, "folded") &&
        strcmp(format, "pprof")) {
        fprintf(stderr, "stackctl: --format %s: text, json, folded or pprof\n", format);
        return 2;
    }
    if (klass && strcmp(klass, "leak") && strcmp(klass, "growing") && strcmp(klass, "retained") &&
        strcmp(klass, "cache") && strcmp(klass, "transient")) {
        fprintf(stderr, "stackctl: --class %s: leak, growing, retained, cache or transient\n",
                klass);
        return 2;
    }
    rundir_t rd;
    if (cli_resolve_dir(&rd, dir, "stackctl") < 0)
        return 1;
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    Stackwatch__Reply *rep = NULL;
    if (!strcmp(group, "diff"))
        return cmd_diff(&rd, sub_argc - optind, sub_argv + optind, (uint32_t)top, json);
    if (!strcmp(group, "snapshot") && !outpath) {
        fprintf(stderr, "stackctl: snapshot needs -o FILE\n");
        return 2;
    }
    if (!strcmp(group, "snapshot") || (!strcmp(group, "mark") && outpath)) {
        if (optind != sub_argc) {
            fprintf(stderr, "stackctl: unexpected argument '%s'\n", sub_argv[optind]);
            return 2;
        }
    }
    if (!strcmp(group, "snapshot"))
        return cmd_snapshot(&rd, (uint32_t)pid, outpath);
    if (!strcmp(group, "mark")) {
        Stackwatch__Mark mk = STACKWATCH__MARK__INIT;
        mk.pid = (uint32_t)pid;
        req.req_case = STACKWATCH__REQUEST__REQ_MARK;
        req.mark = &mk;
        if (call(&rd, &req, &rep))
            return 1;
        if (render(rep, CLI_WANT_MARK, "text", stdout, 0))
            return 1;
        if (outpath)
            return cmd_snapshot(&rd, (uint32_t)pid, outpath);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (!strcmp(group, "scan")) {
        uint64_t tpid;
        if (sub_argc - optind != 1 || parse_u64(group, sub_argv[optind], &tpid) < 0 ||
            tpid == 0 || tpid > 0x7fffffff) {
            fprintf(stderr, "stackctl: usage: stackctl scan PID [--json]\n");
            return 2;
        }
        Stackwatch__Scan sc = STACKWATCH__SCAN__INIT;
        sc.pid = (uint32_t)tpid;
        req.req_case = STACKWATCH__REQUEST__REQ_SCAN;
        req.scan = &sc;
        if (call(&rd, &req, &rep))
            return 1;
        if (rep->body_case != STACKWATCH__REPLY__BODY_SCAN) {
            fprintf(stderr, "stackctl: unexpected reply from collectord\n");
            return 1;
        }
        if (json) {
            cli_scan_json(stdout, rep->scan);
        } else {
            cli_scrub(&rep->base); /* a terminal's text: see cli_render */
            cli_scan_text(stdout, rep->scan);
        }
        stackwatch__reply__free_unpacked(rep, NULL);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (!strcmp(group, "attach") || !strcmp(group, "detach")) {
        uint64_t tpid;
        if (sub_argc - optind != 1 || parse_u64(group, sub_argv[optind], &tpid) < 0 ||
            tpid == 0 || tpid > 0x7fffffff) {
            fprintf(stderr, "stackctl: usage: stackctl %s PID\n", group);
            return 2;
        }
        cli_attach_opts_t ao = { .agent = agent, .timeout_ms = (int)timeout_ms,
                                 .wait_ms = 10000 };
        fflush(stdout);
        return !strcmp(group, "attach") ? cli_attach(&rd, (pid_t)tpid, &ao)
                                        : cli_detach(&rd, (pid_t)tpid, &ao);
    }
    if (!strcmp(group, "trigger")) {
        if (!strcmp(what, "add")) {
            if (optind != sub_argc) {
                fprintf(stderr, "stackctl: unexpected argument '%s'\n", sub_argv[optind]);
                return 2;
            }
            if (!match && !module && !stack) {
                fprintf(stderr, "stackctl: trigger add needs --match REGEX, --module REGEX or "
                                "--stack ID\n");
                return 2;
            }
            Stackwatch__Rule r = STACKWATCH__RULE__INIT;
            r.match = (char *)(match ? match : "");
            r.module = (char *)(module ? module : "");
            r.stack = stack;
            r.frame = (int32_t)frame;
            r.min_depth = (uint32_t)min_depth;
            r.pid = (uint32_t)pid;
            r.signal = sig;
            r.count = (uint32_t)count;
            r.leaking = leaking;
            Stackwatch__TriggerAdd ta = STACKWATCH__TRIGGER_ADD__INIT;
            ta.rule = &r;
            req.req_case = STACKWATCH__REQUEST__REQ_TRIGGER_ADD;
            req.trigger_add = &ta;
            return print_rules(&rd, &req, json);
        }
        if (!strcmp(what, "list")) {
            Stackwatch__TriggerList tl = STACKWATCH__TRIGGER_LIST__INIT;
            req.req_case = STACKWATCH__REQUEST__REQ_TRIGGER_LIST;
            req.trigger_list = &tl;
            return print_rules(&rd, &req, json);
        }
        if (!strcmp(what, "rm")) {
            uint64_t id;
            if (sub_argc - optind != 1 || parse_u64("rm", sub_argv[optind], &id) < 0) {
                fprintf(stderr, "stackctl: usage: stackctl trigger rm ID\n");
                return 2;
            }
            Stackwatch__TriggerRm tr = STACKWATCH__TRIGGER_RM__INIT;
            tr.id = (uint32_t)id;
            req.req_case = STACKWATCH__REQUEST__REQ_TRIGGER_RM;
            req.trigger_rm = &tr;
            return print_rules(&rd, &req, json);
        }
        fprintf(stderr, "stackctl: unknown trigger command '%s' (add, list or rm)\n", what);
        return 2;
    }
    if (optind != sub_argc) {
        fprintf(stderr, "stackctl: unexpected argument '%s'\n", sub_argv[optind]);
        return 2;
    }
    if (!strcmp(what, "leaks") || !strcmp(group, "report")) {
        int is_report = !strcmp(group, "report");
        if (is_report && !html) {
            fprintf(stderr, "stackctl: report needs --html FILE\n");
            return 2;
        }
        if (reach && scan_before(&rd, (uint32_t)pid, exe) < 0)
            return 1;
        Stackwatch__QueryLeaks q = STACKWATCH__QUERY_LEAKS__INIT;
        q.pid = (uint32_t)pid;
        q.top = (uint32_t)(top ? top : (is_report ? 20 : 0));
        q.all = all;
        q.min_bytes = min_bytes;
        q.class_ = (char *)(klass ? klass : "");
        q.exe = (char *)(exe ? exe : "");
        q.by_exe = by_exe;
        q.since_mark = since_mark;
        q.series = is_report;
        /* Text and HTML lead with rank; JSON keeps the may-leak order. */
        q.by_rank = is_report || !strcmp(format, "text");
        req.req_case = STACKWATCH__REQUEST__REQ_LEAKS;
        req.leaks = &q;
        if (call(&rd, &req, &rep))
            return 1;
        if (rep->body_case != STACKWATCH__REPLY__BODY_LEAKS || !rep->leaks) {
            fprintf(stderr, "stackctl: unexpected reply from collectord\n");
            stackwatch__reply__free_unpacked(rep, NULL);
            return 1;
        }
        if (pid && rep->leaks->n_clients == 0)
            fprintf(stderr, "stackctl: pid %llu runs but has not connected to collectord (yet): "
                            "was it started with LD_PRELOAD=.../libstackagent.so?\n",
                    (unsigned long long)pid);
        const char *path = is_report ? html : outpath;
        FILE *out = stdout;
        if (path && strcmp(path, "-") != 0 && !(out = fopen(path, "w"))) {
            fprintf(stderr, "stackctl: cannot write %s: %s\n", path, strerror(errno));
            stackwatch__reply__free_unpacked(rep, NULL);
            return 1;
        }
        int rc = render(rep, CLI_WANT_LEAKS, is_report ? "html" : format, out, flags);
        if ((fflush(out) != 0 || (out != stdout && fclose(out) != 0)) && rc == 0) {
            fprintf(stderr, "stackctl: writing %s: %s\n", path ? path : "stdout", strerror(errno));
            return 1;
        }
        if (rc == 0 && path && out != stdout)
            fprintf(stderr, "stackctl: wrote %s\n", path);
        return rc;
    } else if (!strcmp(what, "clients")) {
        Stackwatch__QueryClients q = STACKWATCH__QUERY_CLIENTS__INIT;
        req.req_case = STACKWATCH__REQUEST__REQ_CLIENTS;
        req.clients = &q;
        if (call(&rd, &req, &rep))
            return 1;
        if (render(rep, CLI_WANT_CLIENTS, json ? "json" : "text", stdout, 0))
            return 1;
    } else {
        fprintf(stderr, "stackctl: unknown query '%s' (leaks or clients)\n", what);
        return 2;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
