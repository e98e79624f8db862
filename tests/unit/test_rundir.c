/* Unit tests of the runtime directory: path resolution, safety checks, pid file lock, socket probe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "collector/common/rundir.h"

/* A scratch directory under /tmp and the environment as it was. */
typedef struct fix_s {
    char base[64];
    char *env_dir;   /* saved STACKWATCH_DIR (NULL: unset) */
    char *env_xdg;   /* saved XDG_RUNTIME_DIR */
    mode_t umask;
    rundir_t rd;
    char err[512];
} fix_t;

static char *save_env(const char *name)
{
    const char *v = getenv(name);
    return v ? strdup(v) : NULL;
}

static void restore_env(const char *name, char *v)
{
    if (v)
        setenv(name, v, 1);
    else
        unsetenv(name);
    free(v);
}

static int setup(void **state)
{
    fix_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->base, sizeof f->base, "/tmp/swtest-rundir-XXXXXX");
    if (!mkdtemp(f->base)) {
        free(f);
        return -1;
    }
    f->env_dir = save_env("STACKWATCH_DIR");
    f->env_xdg = save_env("XDG_RUNTIME_DIR");
    unsetenv("STACKWATCH_DIR");
    unsetenv("XDG_RUNTIME_DIR");
    f->umask = umask(022);
    *state = f;
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    fix_t *f = *state;
    nftw(f->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    restore_env("STACKWATCH_DIR", f->env_dir);
    restore_env("XDG_RUNTIME_DIR", f->env_xdg);
    umask(f->umask);
    free(f);
    return 0;
}

/* base/name as a path. */
static const char *in_base(fix_t *f, const char *name)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", f->base, name);
    return p;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode;
}

/* ------------------------------------------------------------------ resolve */

static void test_resolve_explicit(void **state)
{
    fix_t *f = *state;
    setenv("STACKWATCH_DIR", "/from/env", 1);
    setenv("XDG_RUNTIME_DIR", "/run/user/77", 1);
    assert_int_equal(rundir_resolve(&f->rd, "/srv/sw", f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/srv/sw");
    assert_string_equal(f->rd.agent_sock, "/srv/sw/agent.sock");
    assert_string_equal(f->rd.control_sock, "/srv/sw/control.sock");
    assert_string_equal(f->rd.pidfile, "/srv/sw/collectord.pid");
    assert_string_equal(f->rd.logfile, "/srv/sw/collectord.log");
}

static void test_resolve_environment(void **state)
{
    fix_t *f = *state;
    /* STACKWATCH_DIR first; an empty explicit dir does not count. */
    setenv("STACKWATCH_DIR", "/from/env", 1);
    setenv("XDG_RUNTIME_DIR", "/run/user/77", 1);
    assert_int_equal(rundir_resolve(&f->rd, NULL, f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/from/env");
    assert_int_equal(rundir_resolve(&f->rd, "", f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/from/env");
    assert_string_equal(f->rd.agent_sock, "/from/env/agent.sock");

    /* Then $XDG_RUNTIME_DIR/stackwatch (an empty STACKWATCH_DIR is unset). */
    setenv("STACKWATCH_DIR", "", 1);
    assert_int_equal(rundir_resolve(&f->rd, NULL, f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/run/user/77/stackwatch");
    assert_string_equal(f->rd.control_sock, "/run/user/77/stackwatch/control.sock");

    /* Then /tmp/stackwatch-UID. */
    unsetenv("STACKWATCH_DIR");
    setenv("XDG_RUNTIME_DIR", "", 1);
    assert_int_equal(rundir_resolve(&f->rd, NULL, f->err, sizeof f->err), 0);
    char want[64];
    snprintf(want, sizeof want, "/tmp/stackwatch-%u", (unsigned)getuid());
    assert_string_equal(f->rd.dir, want);
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(rundir_resolve(&f->rd, NULL, f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, want);
}

static void test_resolve_trailing_slashes(void **state)
{
    fix_t *f = *state;
    assert_int_equal(rundir_resolve(&f->rd, "/srv/sw///", f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/srv/sw");
    assert_string_equal(f->rd.agent_sock, "/srv/sw/agent.sock");
    setenv("STACKWATCH_DIR", "/from/env/", 1);
    assert_int_equal(rundir_resolve(&f->rd, NULL, f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/from/env");
    assert_string_equal(f->rd.pidfile, "/from/env/collectord.pid");
    /* The root stays the root. */
    assert_int_equal(rundir_resolve(&f->rd, "/", f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/");
    assert_int_equal(rundir_resolve(&f->rd, "///", f->err, sizeof f->err), 0);
    assert_string_equal(f->rd.dir, "/");
}

static void test_resolve_too_long_for_socket(void **state)
{
    fix_t *f = *state;
    const size_t sun_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    const size_t longest_name = strlen("/control.sock");
    char dir[200];

    /* The longest directory whose control.sock still fits. */
    size_t n = sun_max - longest_name;
    memset(dir, 'd', n);
    dir[0] = '/';
    dir[n] = '\0';
    assert_int_equal(rundir_resolve(&f->rd, dir, f->err, sizeof f->err), 0);
    assert_int_equal(strlen(f->rd.control_sock), sun_max);

    /* One more byte: refused, naming the full path. */
    memset(dir, 'd', n + 1);
    dir[0] = '/';
    dir[n + 1] = '\0';
    f->err[0] = '\0';
    assert_int_equal(rundir_resolve(&f->rd, dir, f->err, sizeof f->err), -ENAMETOOLONG);
    char path[256];
    snprintf(path, sizeof path, "%s/control.sock", dir);
    assert_non_null(strstr(f->err, path));

    /* Well past the limit, through the environment. */
    memset(dir, 'e', 150);
    dir[0] = '/';
    dir[150] = '\0';
    setenv("STACKWATCH_DIR", dir, 1);
    assert_int_equal(rundir_resolve(&f->rd, NULL, f->err, sizeof f->err), -ENAMETOOLONG);
    snprintf(path, sizeof path, "%s/control.sock", dir);
    assert_non_null(strstr(f->err, path));

    /* A small message buffer is respected (ASan checks the bound). */
    char small[16];
    memset(small, 'x', sizeof small);
    assert_int_equal(rundir_resolve(&f->rd, dir, small, sizeof small), -ENAMETOOLONG);
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_resolve_longer_than_buffer(void **state)
{
    fix_t *f = *state;
    size_t n = RUNDIR_MAX + 100;
    char *dir = malloc(n + 1);
    assert_non_null(dir);
    memset(dir, 'z', n);
    dir[0] = '/';
    dir[n] = '\0';
    assert_int_equal(rundir_resolve(&f->rd, dir, f->err, sizeof f->err), -ENAMETOOLONG);
    assert_true(strlen(f->err) > 0);
    free(dir);
}

/* ------------------------------------------------------------------ prepare */

static void resolve_in_base(fix_t *f, const char *name)
{
    assert_int_equal(rundir_resolve(&f->rd, in_base(f, name), f->err, sizeof f->err), 0);
}

static void test_prepare_creates_0700(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "run");
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    mode_t m = mode_of(f->rd.dir);
    assert_true(S_ISDIR(m));
    assert_int_equal(m & 07777, 0700);
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    assert_int_equal(mode_of(f->rd.dir) & 07777, 0700);
}

static void test_prepare_tightens_open_mode(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "open");
    assert_int_equal(mkdir(f->rd.dir, 0755), 0);
    assert_int_equal(chmod(f->rd.dir, 0755), 0);
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    assert_int_equal(mode_of(f->rd.dir) & 07777, 0700);

    assert_int_equal(chmod(f->rd.dir, 0777), 0);
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    assert_int_equal(mode_of(f->rd.dir) & 07777, 0700);
}

static void test_prepare_refuses_symlink(void **state)
{
    fix_t *f = *state;
    char real[256];
    snprintf(real, sizeof real, "%s", in_base(f, "real"));
    assert_int_equal(mkdir(real, 0755), 0);
    assert_int_equal(chmod(real, 0755), 0);
    resolve_in_base(f, "link");
    assert_int_equal(symlink(real, f->rd.dir), 0);
    f->err[0] = '\0';
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), -ELOOP);
    assert_non_null(strstr(f->err, f->rd.dir));
    /* The target was not touched. */
    assert_int_equal(mode_of(real) & 07777, 0755);
    assert_true(S_ISLNK(mode_of(f->rd.dir)));

    /* A dangling link too. */
    resolve_in_base(f, "dangling");
    assert_int_equal(symlink(in_base(f, "nowhere"), f->rd.dir), 0);
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), -ELOOP);
    assert_int_equal(access(in_base(f, "nowhere"), F_OK), -1);
}

static void test_prepare_refuses_regular_file(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "file");
    int fd = open(f->rd.dir, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    f->err[0] = '\0';
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), -ENOTDIR);
    assert_non_null(strstr(f->err, f->rd.dir));
    assert_true(S_ISREG(mode_of(f->rd.dir)));
}

static void test_prepare_missing_parent(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "no/such/parent");
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), -ENOENT);
    assert_non_null(strstr(f->err, f->rd.dir));
}

static void test_prepare_refuses_other_owner(void **state)
{
    fix_t *f = *state;
    if (geteuid() != 0)
        skip(); /* needs chown to another user */
    resolve_in_base(f, "theirs");
    assert_int_equal(mkdir(f->rd.dir, 0700), 0);
    assert_int_equal(chown(f->rd.dir, 65534, 65534), 0);
    f->err[0] = '\0';
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), -EPERM);
    assert_non_null(strstr(f->err, f->rd.dir));
}

/* What stop and status look at: nothing is created, and each refusal says
 * why (with the owner of another user's directory). */
static void test_inspect_creates_nothing(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "absent");
    uid_t owner = 12345;
    assert_int_equal(rundir_inspect(&f->rd, &owner, f->err, sizeof f->err), -ENOENT);
    assert_non_null(strstr(f->err, f->rd.dir));
    assert_int_equal(access(f->rd.dir, F_OK), -1);
    assert_int_equal(mkdir(f->rd.dir, 0755), 0);
    assert_int_equal(chmod(f->rd.dir, 0755), 0);
    assert_int_equal(rundir_inspect(&f->rd, &owner, f->err, sizeof f->err), 0);
    assert_int_equal(owner, geteuid());
    assert_int_equal(mode_of(f->rd.dir) & 07777, 0755); /* only start tightens it */
    if (geteuid() != 0)
        return; /* the rest needs chown to another user */
    assert_int_equal(chown(f->rd.dir, 65534, 65534), 0);
    f->err[0] = '\0';
    assert_int_equal(rundir_inspect(&f->rd, &owner, f->err, sizeof f->err), -EPERM);
    assert_int_equal(owner, 65534);
    assert_non_null(strstr(f->err, "is owned by uid 65534, not by you (uid 0)"));
}

/* ------------------------------------------------------------------ pid file */

static void test_pidfile_lock(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "pid");
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    assert_int_equal(rundir_running_pid(&f->rd), 0); /* no file yet */

    int fd = rundir_lock_pidfile(&f->rd, NULL);
    assert_true(fd >= 0);
    assert_int_equal(mode_of(f->rd.pidfile) & 07777, 0600);
    assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    assert_int_equal(rundir_write_pid(fd, 4321), 0);
    assert_int_equal(rundir_running_pid(&f->rd), 4321);

    /* A second collectord: -EEXIST and the pid of the first. */
    pid_t other = 0;
    assert_int_equal(rundir_lock_pidfile(&f->rd, &other), -EEXIST);
    assert_int_equal(other, 4321);
    assert_int_equal(rundir_lock_pidfile(&f->rd, NULL), -EEXIST);

    /* Rewriting with a shorter pid truncates. */
    assert_int_equal(rundir_write_pid(fd, 99), 0);
    char buf[32] = { 0 };
    int rfd = open(f->rd.pidfile, O_RDONLY);
    assert_true(rfd >= 0);
    assert_int_equal(read(rfd, buf, sizeof buf - 1), 3);
    close(rfd);
    assert_string_equal(buf, "99\n");
    other = 0;
    assert_int_equal(rundir_lock_pidfile(&f->rd, &other), -EEXIST);
    assert_int_equal(other, 99);

    /* Released: a stale file with a pid in it means nobody runs. */
    close(fd);
    assert_int_equal(rundir_running_pid(&f->rd), 0);
    fd = rundir_lock_pidfile(&f->rd, &other);
    assert_true(fd >= 0);
    close(fd);
}

static void test_pidfile_symlink_refused(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "pidlink");
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    assert_int_equal(symlink(in_base(f, "victim"), f->rd.pidfile), 0);
    assert_int_equal(rundir_lock_pidfile(&f->rd, NULL), -ELOOP);
    assert_int_equal(access(in_base(f, "victim"), F_OK), -1);
}

/* Planted before the directory was ours alone: neither a FIFO (opening
 * it must not block either), nor a hard link to another file, nor a
 * directory is used as the pid file; the other file stays untouched. */
static void test_pidfile_planted_refused(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "pidplant");
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    assert_int_equal(mkfifo(f->rd.pidfile, 0600), 0);
    assert_int_equal(rundir_lock_pidfile(&f->rd, NULL), -EINVAL);
    assert_int_equal(rundir_running_pid(&f->rd), 0); /* returns at once */
    assert_int_equal(unlink(f->rd.pidfile), 0);

    const char *victim = in_base(f, "victim2");
    int vfd = open(victim, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(vfd >= 0);
    assert_int_equal(write(vfd, "precious\n", 9), 9);
    close(vfd);
    assert_int_equal(link(victim, f->rd.pidfile), 0);
    assert_int_equal(rundir_lock_pidfile(&f->rd, NULL), -EINVAL);
    char buf[16] = { 0 };
    vfd = open(victim, O_RDONLY);
    assert_int_equal(read(vfd, buf, sizeof buf - 1), 9);
    close(vfd);
    assert_string_equal(buf, "precious\n");
    assert_int_equal(unlink(f->rd.pidfile), 0);

    assert_int_equal(mkdir(f->rd.pidfile, 0700), 0);
    assert_true(rundir_lock_pidfile(&f->rd, NULL) < 0);
    assert_int_equal(rmdir(f->rd.pidfile), 0);
    int fd = rundir_lock_pidfile(&f->rd, NULL);
    assert_true(fd >= 0);
    close(fd);
}

/* A pid file of another user (root planted it, or the directory changed
 * hands) is not ours to write. */
static void test_pidfile_other_owner_refused(void **state)
{
    fix_t *f = *state;
    if (geteuid() != 0)
        skip();
    resolve_in_base(f, "pidowner");
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);
    int fd = open(f->rd.pidfile, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(chown(f->rd.pidfile, 65534, 65534), 0);
    assert_int_equal(rundir_lock_pidfile(&f->rd, NULL), -EINVAL);
}

/* ------------------------------------------------------------------ sockets */

static int unix_socket_at(const char *path, int do_listen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    assert_true(strlen(path) < sizeof sa.sun_path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    if (do_listen)
        assert_int_equal(listen(fd, 4), 0);
    return fd;
}

static void test_probe_socket(void **state)
{
    fix_t *f = *state;
    resolve_in_base(f, "sock");
    assert_int_equal(rundir_prepare(&f->rd, f->err, sizeof f->err), 0);

    /* Absent. */
    assert_int_equal(rundir_probe_socket(f->rd.agent_sock), 0);

    /* Stale: the file of a socket nobody listens on any more. */
    int s = unix_socket_at(f->rd.agent_sock, 0);
    close(s);
    assert_true(S_ISSOCK(mode_of(f->rd.agent_sock)));
    assert_int_equal(rundir_probe_socket(f->rd.agent_sock), 0);
    /* Bound but not listening is not accepting either. */
    s = unix_socket_at(f->rd.control_sock, 0);
    assert_int_equal(rundir_probe_socket(f->rd.control_sock), 0);
    close(s);

    /* Listening. */
    assert_int_equal(unlink(f->rd.agent_sock), 0);
    s = unix_socket_at(f->rd.agent_sock, 1);
    assert_int_equal(rundir_probe_socket(f->rd.agent_sock), 1);
    int c = rundir_connect(f->rd.agent_sock);
    assert_true(c >= 0);
    close(c);
    close(s);
    /* The listener is gone: stale again. */
    assert_int_equal(rundir_probe_socket(f->rd.agent_sock), 0);
    assert_int_equal(rundir_connect(f->rd.agent_sock), -ECONNREFUSED);
}

static void test_connect_errors(void **state)
{
    fix_t *f = *state;
    char longp[200];
    memset(longp, 'q', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(rundir_connect(longp), -ENAMETOOLONG);
    assert_int_equal(rundir_connect(in_base(f, "absent.sock")), -ENOENT);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_resolve_explicit),
        T(test_resolve_environment),
        T(test_resolve_trailing_slashes),
        T(test_resolve_too_long_for_socket),
        T(test_resolve_longer_than_buffer),
        T(test_prepare_creates_0700),
        T(test_prepare_tightens_open_mode),
        T(test_prepare_refuses_symlink),
        T(test_prepare_refuses_regular_file),
        T(test_prepare_missing_parent),
        T(test_prepare_refuses_other_owner),
        T(test_inspect_creates_nothing),
        T(test_pidfile_lock),
        T(test_pidfile_symlink_refused),
        T(test_pidfile_planted_refused),
        T(test_pidfile_other_owner_refused),
        T(test_probe_socket),
        T(test_connect_errors),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
