/* collectord's Prometheus/OpenMetrics endpoint: a tiny HTTP/1.0 server on the loop, rendering from kept state. */
#ifndef STACKWATCH_COLLECTOR_METRICS_H
#define STACKWATCH_COLLECTOR_METRICS_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_REQ_MAX 8192u         /* request head bytes; beyond: 431 and close */
#define METRICS_MAX_CONNS 16u         /* open scrape connections; beyond: closed at accept */
#define METRICS_IDLE_S 10.0           /* a connection silent or stuck this long is closed */
#define METRICS_OUT_MAX (64u << 20)   /* largest response (bounded by the limits below anyway) */
#define METRICS_TOP_DEFAULT 10u       /* stacks exported per process (--metrics-top) */
#define METRICS_CLIENTS_DEFAULT 64u   /* processes exported (--metrics-clients) */
#define METRICS_LABEL_MAX 160u        /* bytes of a label value kept (longer: cut, "...") */
#define METRICS_RATE_SLOTS 10u        /* ingest rate: events over the last 10 one-second ticks */

struct srv_s;

/* A growable output buffer. */
typedef struct mbuf_s {
    char *p;
    size_t len, cap;
    int oom;                  /* an append failed: the content is incomplete */
} mbuf_t;

/* One scrape connection. */
typedef struct mconn_s {
    ev_io io;                 /* readable while reading the request, writable while sending */
    ev_timer idle;            /* closes a connection that stalls */
    struct metrics_s *m;
    int fd;
    char req[METRICS_REQ_MAX];
    size_t req_len;
    mbuf_t out;               /* the response */
    size_t out_off;
    int writing;              /* 0 reading the request, 1 sending, 2 draining after the response */
    struct mconn_s *prev, *next;
} mconn_t;

typedef struct metrics_s {
    struct srv_s *srv;
    int fd;                   /* listening socket, -1 when off */
    char addr[256];           /* as given (--metrics) */
    char bound[300];          /* as bound: "127.0.0.1:9464" or the socket path */
    char unix_path[108];      /* a Unix socket to unlink at stop ("" for TCP) */
    uint32_t top;             /* stacks per process */
    uint32_t max_clients;     /* processes */
    ev_io accept_w;
    ev_timer tick;            /* 1 s: ingest-rate samples */
    mconn_t *conns;
    uint32_t nconns;
    uint64_t scrapes;         /* responses with 200 */
    uint64_t refused;         /* connections closed at accept (too many) */
    uint64_t bad_requests;    /* 4xx answers */
    uint64_t ev_hist[METRICS_RATE_SLOTS]; /* events_total at the last ticks */
    uint32_t ev_n;            /* ticks recorded (<= slots) */
    uint32_t ev_pos;          /* next slot */
} metrics_t;

/* A parsed request head. */
typedef struct metrics_req_s {
    int method;               /* METRICS_GET, METRICS_HEAD, METRICS_OTHER */
    int path_ok;              /* the target is /metrics (query string allowed) */
    int openmetrics;          /* Accept names application/openmetrics-text */
} metrics_req_t;

enum { METRICS_GET = 1, METRICS_HEAD = 2, METRICS_OTHER = 3 };

/* Parses an HTTP request head in buf[0..len). Returns 1 when the head is
 * complete (r filled), 0 when more bytes are needed, -1 when it is malformed.
 * Never reads past len; buf need not be NUL-terminated. */
int metrics_parse_request(const char *buf, size_t len, metrics_req_t *r);

/* Appends a label value escaped for the exposition formats (\\, \", \n),
 * invalid UTF-8 as '?', cut at METRICS_LABEL_MAX bytes. */
void metrics_label(mbuf_t *b, const char *v);

/* Renders every metric of s into b (Prometheus text 0.0.4, or OpenMetrics
 * 1.0 with openmetrics set). Reads only state the loop already keeps; never
 * symbolizes. b->oom is set if memory ran out. */
void metrics_render(struct srv_s *s, const metrics_t *m, int openmetrics, mbuf_t *b);

/* Binds addr: "HOST:PORT" (IPv4, "[IPv6]" or "localhost"; port 0 picks
 * one) or a Unix socket path (starting with '/' or '.'). Returns 0 or
 * -errno with a message in err; m->bound says where it listens. */
int metrics_listen(metrics_t *m, const char *addr, char *err, size_t errlen);

/* Starts the watchers on loop (after metrics_listen). */
void metrics_start(metrics_t *m, struct srv_s *s, struct ev_loop *loop);

/* Closes every connection and the listener. Safe when never started. */
void metrics_stop(metrics_t *m);

void mbuf_free(mbuf_t *b);

#endif
