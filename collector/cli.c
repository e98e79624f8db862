/* stackctl: queries to a running collectord. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_call.h"
#include "cli_report.h"
#include "rundir.h"

#define QUERY_TIMEOUT_MS 120000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: stackctl [--dir DIR] query leaks [--pid PID] [--top N] [--min-bytes B]\n"
            "                                        [--all] [--json]\n"
            "       stackctl [--dir DIR] query clients [--json]\n"
            "\n"
            "  query leaks     stacks whose blocks outlived the expire time (may-leak),\n"
            "                  largest first; of ended processes also blocks live at exit\n"
            "  query clients   traced processes and their counters\n"
            "  --all           every stack with allocations, not only leaking ones\n");
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

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0, all = 0;
    uint64_t pid = 0, top = 0, min_bytes = 0;
    static const struct option lopts[] = {
        { "dir", required_argument, 0, 'd' },
        { "json", no_argument, 0, 'j' },
        { "pid", required_argument, 0, 'p' },
        { "top", required_argument, 0, 'n' },
        { "min-bytes", required_argument, 0, 'm' },
        { "all", no_argument, 0, 'a' },
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
    if (argc - optind < 2 || strcmp(argv[optind], "query") != 0) {
        usage(stderr);
        return 2;
    }
    const char *what = argv[optind + 1];
    /* Options after the subcommand. */
    int sub_argc = argc - optind - 1;
    char **sub_argv = argv + optind + 1;
    optind = 1;
    while ((o = getopt_long(sub_argc, sub_argv, "h", lopts, NULL)) != -1) {
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
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != sub_argc) {
        fprintf(stderr, "stackctl: unexpected argument '%s'\n", sub_argv[optind]);
        return 2;
    }
    rundir_t rd;
    char err[RUNDIR_MAX + 256];
    if (rundir_resolve(&rd, dir, err, sizeof err) < 0) {
        fprintf(stderr, "stackctl: %s\n", err);
        return 1;
    }
    Stackwatch__Request req = STACKWATCH__REQUEST__INIT;
    Stackwatch__Reply *rep = NULL;
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
