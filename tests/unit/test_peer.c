/* Unit tests of the peer pidfd taken at accept (collector/collectord/peer.c), both
 * paths: SO_PEERPIDFD, and pidfd_open verified against the socket
 * (STACKWATCH_TEST_NO_PEERPIDFD=1). A live peer gets a pidfd of itself; a
 * peer that ended before the accept, its pid since reused by another
 * process (clone3 with set_tid, as root), never yields a pidfd that can
 * signal that other process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "collector/collectord/peer.h"

static char sock_path[108];

static int listener(void)
{
    snprintf(sock_path, sizeof sock_path, "/tmp/sw-peer-%d.sock", (int)getpid());
    unlink(sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, sock_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    return fd;
}

static void connect_to(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, sock_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        _exit(3);
    /* As an agent does (its Hello): data waiting must not read as a gone peer. */
    if (write(fd, "hello", 5) != 5)
        _exit(4);
}

/* The pid a pidfd names ("Pid:" in its fdinfo; -1 once it ended), or -2. */
static int pidfd_pid(int pidfd)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    FILE *f = fopen(path, "re");
    if (!f)
        return -2;
    int pid = -2;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %d", &pid) == 1)
            break;
    fclose(f);
    return pid;
}

static pid_t peer_of(int conn)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    assert_int_equal(getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cr, &len), 0);
    return cr.pid;
}

static void live_peer(int fallback)
{
    if (fallback)
        setenv("STACKWATCH_TEST_NO_PEERPIDFD", "1", 1);
    else
        unsetenv("STACKWATCH_TEST_NO_PEERPIDFD");
    int l = listener();
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves none behind */
        close(go[1]);
        connect_to();
        char c;
        while (read(go[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(go[0]);
    int conn = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(conn >= 0);
    int how = -1;
    int pidfd = peer_pidfd(conn, peer_of(conn), &how);
    assert_true(pidfd >= 0);
    assert_int_equal(how, fallback ? PEER_VERIFIED : PEER_KERNEL);
    assert_int_equal(pidfd_pid(pidfd), child);
    assert_int_equal(syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0), 0);
    close(go[1]);
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    close(pidfd);
    close(conn);
    close(l);
    unlink(sock_path);
}

static void test_live_peer_kernel(void **state)
{
    (void)state;
    live_peer(0);
}

static void test_live_peer_fallback(void **state)
{
    (void)state;
    live_peer(1);
}

/* A process with pid want (clone3 set_tid) that waits to be killed; 0 if
 * the pid could not be had (taken meanwhile, or no privilege). */
static pid_t spawn_at(pid_t want)
{
    struct clone_args a;
    memset(&a, 0, sizeof a);
    a.exit_signal = SIGCHLD;
    a.set_tid = (uint64_t)(uintptr_t)&want;
    a.set_tid_size = 1;
    long r = syscall(SYS_clone3, &a, sizeof a);
    if (r == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;)
            pause();
    }
    return r > 0 ? (pid_t)r : 0;
}

static void reused_pid(int fallback)
{
    if (fallback)
        setenv("STACKWATCH_TEST_NO_PEERPIDFD", "1", 1);
    else
        unsetenv("STACKWATCH_TEST_NO_PEERPIDFD");
    int l = listener();
    int tried = 0;
    for (int attempt = 0; attempt < 20 && !tried; attempt++) {
        pid_t a = fork();
        assert_true(a >= 0);
        if (a == 0) {
            connect_to();
            _exit(0); /* connected, then gone before the accept */
        }
        int st;
        assert_int_equal(waitpid(a, &st, 0), a);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        pid_t b = spawn_at(a);
        if (!b && (errno == EPERM || errno == ENOSYS || errno == EINVAL)) {
            printf("    (skipped: cannot choose a child's pid here: %s)\n", strerror(errno));
            int conn = accept4(l, NULL, NULL, SOCK_CLOEXEC);
            close(conn);
            tried = 1;
            break;
        }
        int conn = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        assert_true(conn >= 0);
        if (!b) { /* the pid was taken by another process meanwhile: again */
            close(conn);
            continue;
        }
        assert_int_equal(b, a);
        assert_int_equal(peer_of(conn), a);
        int how = -1;
        int pidfd = peer_pidfd(conn, a, &how);
        /* Whatever it returned must not reach b. */
        if (pidfd >= 0) {
            assert_int_not_equal(pidfd_pid(pidfd), b);
            assert_int_equal(syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0), -1);
            assert_int_equal(errno, ESRCH);
            close(pidfd);
        }
        if (fallback)
            assert_int_equal(pidfd, -1);
        /* b still lives: nothing signalled it. */
        assert_int_equal(waitpid(b, &st, WNOHANG), 0);
        kill(b, SIGKILL);
        assert_int_equal(waitpid(b, &st, 0), b);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        close(conn);
        tried = 1;
    }
    assert_true(tried); /* 20 times the pid was taken by another process first */
    close(l);
    unlink(sock_path);
}

static void test_reused_pid_kernel(void **state)
{
    (void)state;
    reused_pid(0);
}

static void test_reused_pid_fallback(void **state)
{
    (void)state;
    reused_pid(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_peer_kernel),
        cmocka_unit_test(test_live_peer_fallback),
        cmocka_unit_test(test_reused_pid_kernel),
        cmocka_unit_test(test_reused_pid_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
