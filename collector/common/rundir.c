/* The runtime directory: where the sockets and the pid file live, and its safety checks. */
#include "rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SUN_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

int rundir_resolve(rundir_t *rd, const char *explicit_dir, char *err, size_t errlen)
{
    const char *d = explicit_dir;
    int n;
    if (d && *d) {
        n = snprintf(rd->dir, sizeof rd->dir, "%s", d);
    } else if ((d = getenv("STACKWATCH_DIR")) && *d) {
        n = snprintf(rd->dir, sizeof rd->dir, "%s", d);
    } else if ((d = getenv("XDG_RUNTIME_DIR")) && *d) {
        n = snprintf(rd->dir, sizeof rd->dir, "%s/stackwatch", d);
    } else {
        n = snprintf(rd->dir, sizeof rd->dir, "/tmp/stackwatch-%u", (unsigned)getuid());
    }
    if (n < 0 || (size_t)n >= sizeof rd->dir) {
        snprintf(err, errlen, "runtime directory path is too long (%d bytes)", n);
        return -ENAMETOOLONG;
    }
    while (n > 1 && rd->dir[n - 1] == '/')
        rd->dir[--n] = '\0';
    for (char *p = rd->dir; *p; p++) /* "XDG/" + "/stackwatch" */
        while (p[0] == '/' && p[1] == '/')
            memmove(p, p + 1, strlen(p));
    const char *sep = strcmp(rd->dir, "/") == 0 ? "" : "/";
    snprintf(rd->agent_sock, sizeof rd->agent_sock, "%s%sagent.sock", rd->dir, sep);
    snprintf(rd->control_sock, sizeof rd->control_sock, "%s%scontrol.sock", rd->dir, sep);
    snprintf(rd->pidfile, sizeof rd->pidfile, "%s%scollectord.pid", rd->dir, sep);
    snprintf(rd->logfile, sizeof rd->logfile, "%s%scollectord.log", rd->dir, sep);
    const char *longest = strlen(rd->agent_sock) > strlen(rd->control_sock) ? rd->agent_sock
                                                                            : rd->control_sock;
    if (strlen(longest) > SUN_MAX) {
        snprintf(err, errlen,
                 "socket path %s is %zu bytes; Unix sockets allow at most %zu. "
                 "Choose a shorter directory with --dir or STACKWATCH_DIR",
                 longest, strlen(longest), SUN_MAX);
        return -ENAMETOOLONG;
    }
    return 0;
}

int rundir_inspect(const rundir_t *rd, uid_t *owner, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(rd->dir, &st) < 0) {
        int e = errno;
        if (e == ENOENT)
            snprintf(err, errlen, "runtime directory %s does not exist", rd->dir);
        else
            snprintf(err, errlen, "cannot inspect runtime directory %s: %s", rd->dir,
                     strerror(e));
        return -e;
    }
    if (owner)
        *owner = st.st_uid;
    if (S_ISLNK(st.st_mode)) {
        snprintf(err, errlen, "runtime directory %s is a symbolic link; refusing to use it",
                 rd->dir);
        return -ELOOP;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "runtime directory %s exists and is not a directory", rd->dir);
        return -ENOTDIR;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "runtime directory %s is owned by uid %u, not by you (uid %u)",
                 rd->dir, (unsigned)st.st_uid, (unsigned)geteuid());
        return -EPERM;
    }
    return 0;
}

int rundir_prepare(const rundir_t *rd, char *err, size_t errlen)
{
    if (mkdir(rd->dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "cannot create runtime directory %s: %s", rd->dir, strerror(e));
        return -e;
    }
    int rc = rundir_inspect(rd, NULL, err, errlen);
    if (rc == -EPERM) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, "; choose another with --dir or STACKWATCH_DIR");
    }
    if (rc < 0)
        return rc;
    struct stat st;
    if (stat(rd->dir, &st) < 0)
        return -errno;
    /* 0700 exactly: mkdir's mode went through the umask. */
    if ((st.st_mode & 0777) != 0700 && chmod(rd->dir, 0700) < 0) {
        int e = errno;
        snprintf(err, errlen, "runtime directory %s has mode %03o and cannot be made 0700: %s",
                 rd->dir, (unsigned)(st.st_mode & 0777), strerror(e));
        return -e;
    }
    return 0;
}

static pid_t read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long v = strtol(buf, NULL, 10);
    return v > 0 ? (pid_t)v : 0;
}

int rundir_lock_pidfile(const rundir_t *rd, pid_t *other)
{
    int fd = open(rd->pidfile, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (fd < 0)
        return -errno;
    /* Planted before the directory was ours alone: a FIFO, a device, a
     * hard link to someone's file or a file of another user is not
     * written to. */
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
        st.st_uid != geteuid()) {
        close(fd);
        return -EINVAL;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        if (other)
            *other = read_pid(fd);
        close(fd);
        return e == EWOULDBLOCK ? -EEXIST : -e;
    }
    return fd;
}

int rundir_write_pid(int fd, pid_t pid)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", (int)pid);
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        return -errno;
    return 0;
}

pid_t rundir_running_pid(const rundir_t *rd)
{
    int fd = open(rd->pidfile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK); /* a FIFO: no wait */
    if (fd < 0)
        return 0;
    pid_t pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK)
        pid = read_pid(fd);
    close(fd);
    return pid;
}

int rundir_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) > SUN_MAX)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int rundir_probe_socket(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    int fd = rundir_connect(path);
    if (fd >= 0) {
        close(fd);
        return 1;
    }
    if (fd == -ECONNREFUSED || fd == -ENOENT)
        return 0;
    return fd;
}
