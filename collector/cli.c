/* stackctl: queries to a running collectord. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_call.h"
#include "cli_report.h"
#include "rundir.h"
#include "signame.h"

#define QUERY_TIMEOUT_MS 120000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: stackctl [--dir DIR] query leaks [--pid PID] [--top N] [--min-bytes B]\n"
            "                                        [--all] [--json]\n"
            "       stackctl [--dir DIR] query clients [--json]\n"
            "       stackctl [--dir DIR] trigger add (--match REGEX | --module REGEX |\n"
            "                                         --stack ID --pid PID) [--frame N]\n"
            "                                         [--min-depth D] [--pid PID]\n"
            "                                         [--signal SIG] [--count N] [--json]\n"
            "       stackctl [--dir DIR] trigger list [--json]\n"
            "       stackctl [--dir DIR] trigger rm ID\n"
            "\n"
            "  query leaks     stacks whose blocks outlived the expire time (may-leak),\n"
            "                  largest first; of ended processes also blocks live at exit\n"
            "  query clients   traced processes and their counters\n"
            "  --all           every stack with allocations, not only leaking ones\n"
            "  trigger add     arm matching stacks (now and later) in their agent: each of\n"
            "                  the next --count (3) allocations logs 'malloc @ PTR for SIZE',\n"
            "                  records its Python stack, and raises --signal in the\n"
            "                  allocating thread if the process handles it\n"
            "    --match/--module  regex on function names / module paths of the report's\n"
            "                  frames; --frame N pins the frame index (innermost = 0)\n");
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
    return 0;
}

static int print_rules(const rundir_t *rd, Stackwatch__Request *req, int json)
{
    Stackwatch__Reply *rep = NULL;
    if (call(rd, req, &rep))
        return 1;
    if (rep->body_case != STACKWATCH__REPLY__BODY_RULES) {
        fprintf(stderr, "stackctl: unexpected reply from collectord\n");
        stackwatch__reply__free_unpacked(rep, NULL);
        return 1;
    }
    if (json)
        cli_rules_json(stdout, rep->rules);
    else
        cli_rules_text(stdout, rep->rules);
    stackwatch__reply__free_unpacked(rep, NULL);
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0, all = 0;
    uint64_t pid = 0, top = 0, min_bytes = 0, count = 0, min_depth = 0, stack = 0;
    int64_t frame = -1;
    int sig = 0;
    const char *match = NULL, *module = NULL;
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
        { "signal", required_argument, 0, 'G' },
        { "count", required_argument, 0, 'C' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, "+h", lopts, NULL)) != -1) {
        if (o == 'd')
            dir = optarg;
        else if (o == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind < 2 ||
        (strcmp(argv[optind], "query") != 0 && strcmp(argv[optind], "trigger") != 0)) {
        usage(stderr);
        return 2;
    }
    const char *group = argv[optind];
    const char *what = argv[optind + 1];
    /* Options after the subcommand; positional words stay in sub_argv. */
    int sub_argc = argc - optind - 1;
    char **sub_argv = argv + optind + 1;
    optind = 1;
    while ((o = getopt_long(sub_argc, sub_argv, "h", lopts, NULL)) != -1) {
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
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    rundir_t rd;
    char err[RUNDIR_MAX + 256];
    if (rundir_resolve(&rd, dir, err, sizeof err) < 0) {
        fprintf(stderr, "stackctl: %s\n", err);
        return 1;
    }
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    Stackwatch__Reply *rep = NULL;
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
    if (!strcmp(what, "leaks")) {
        Stackwatch__QueryLeaks q = STACKWATCH__QUERY_LEAKS__INIT;
        q.pid = (uint32_t)pid;
        q.top = (uint32_t)top;
        q.all = all;
        q.min_bytes = min_bytes;
        req.req_case = STACKWATCH__REQUEST__REQ_LEAKS;
        req.leaks = &q;
        if (call(&rd, &req, &rep))
            return 1;
        if (rep->body_case != STACKWATCH__REPLY__BODY_LEAKS) {
            fprintf(stderr, "stackctl: unexpected reply from collectord\n");
            return 1;
        }
        if (json)
            cli_leaks_json(stdout, rep->leaks);
        else
            cli_leaks_text(stdout, rep->leaks);
    } else if (!strcmp(what, "clients")) {
        Stackwatch__QueryClients q = STACKWATCH__QUERY_CLIENTS__INIT;
        req.req_case = STACKWATCH__REQUEST__REQ_CLIENTS;
        req.clients = &q;
        if (call(&rd, &req, &rep))
            return 1;
        if (rep->body_case != STACKWATCH__REPLY__BODY_CLIENTS) {
            fprintf(stderr, "stackctl: unexpected reply from collectord\n");
            return 1;
        }
        const Stackwatch__ClientInfo *const *cs =
            (const Stackwatch__ClientInfo *const *)rep->clients->clients;
        if (json)
            cli_clients_json(stdout, cs, rep->clients->n_clients);
        else
            cli_clients_text(stdout, cs, rep->clients->n_clients);
    } else {
        fprintf(stderr, "stackctl: unknown query '%s' (leaks or clients)\n", what);
        return 2;
    }
    stackwatch__reply__free_unpacked(rep, NULL);
    return fflush(stdout) == 0 ? 0 : 1;
}
