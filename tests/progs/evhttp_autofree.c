/* A real leak in Debian 12's libevent 2.1.12, kept as a test: an outgoing
 * evhttp_connection set to free itself on completion
 * (evhttp_connection_free_on_completion) is never freed when its connect
 * fails. Reported as https://github.com/libevent/libevent/issues/1535
 * ("May bug in evhttp_connection_free_on_completion when the
 * evhttp_connection fail to connect", valgrind's leak report there; gone
 * in libevent's later master). valgrind names the root, the connection
 * made in evhttp_connection_base_bufferevent_new (definitely lost), and
 * the bufferevent with its buffers (bufferevent_socket_new) as indirectly
 * lost. Makes N (argument, default 3) requests to a closed local port,
 * each on its own event base, then prints "ready PID failed F" and waits
 * for EOF on stdin (the heap is then what it is at exit). */
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "scrub.h"

static void done(struct evhttp_request *req, void *arg)
{
    (void)req;
    (*(int *)arg)++;
}

/* A local port nothing listens on: bound, never listened to, closed. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &l) < 0)
        exit(2);
    close(s);
    return ntohs(a.sin_port);
}

__attribute__((noinline)) static void request_once(int port, int *failed)
{
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE); /* @LEAK bev */
    struct evhttp_connection *evcon = evhttp_connection_base_bufferevent_new( /* @LEAK evcon */
        base, NULL, bev, "127.0.0.1", (unsigned short)port);
    evhttp_connection_free_on_completion(evcon);
    struct evhttp_request *req = evhttp_request_new(done, failed);
    evhttp_make_request(evcon, req, EVHTTP_REQ_GET, "/");
    event_base_dispatch(base);
    event_base_free(base);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3, port = closed_port(), failed = 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 0; i < n; i++)
        request_once(port, &failed);
    scrub();
    printf("ready %d failed %d\n", (int)getpid(), failed);
    char b[64];
    while (read(0, b, sizeof b) > 0)
        ;
    return 0;
}
