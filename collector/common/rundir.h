/* The runtime directory: where the sockets and the pid file live, and its safety checks. */
#ifndef STACKWATCH_COLLECTOR_RUNDIR_H
#define STACKWATCH_COLLECTOR_RUNDIR_H

#include <stddef.h>
#include <sys/types.h>

#define RUNDIR_MAX 4096

typedef struct rundir_s {
    char dir[RUNDIR_MAX - 64]; /* the directory (room left for the file names) */
    char agent_sock[RUNDIR_MAX];   /* dir/agent.sock */
    char control_sock[RUNDIR_MAX]; /* dir/control.sock */
    char pidfile[RUNDIR_MAX];  /* dir/collectord.pid */
    char logfile[RUNDIR_MAX];  /* dir/collectord.log */
} rundir_t;

/* Fills rd from an explicit dir (--dir) or the environment: STACKWATCH_DIR,
 * else $XDG_RUNTIME_DIR/stackwatch, else /tmp/stackwatch-UID. Returns 0, or
 * -ENAMETOOLONG with a message in err (naming the full path) when a socket
 * path does not fit sockaddr_un. */
int rundir_resolve(rundir_t *rd, const char *explicit_dir, char *err, size_t errlen);

/* Checks the directory without creating it: 0 for a real directory (not a
 * symlink) owned by our effective uid; else -ENOENT (absent), -ELOOP
 * (symlink), -ENOTDIR, -EPERM (another owner, in *owner if set) or -errno,
 * with a sentence naming the directory in err. What start, stop and status
 * all require before they touch anything in it. */
int rundir_inspect(const rundir_t *rd, uid_t *owner, char *err, size_t errlen);

/* Creates the directory 0700 if missing; refuses one that is not a directory,
 * is a symlink or is owned by another user; tightens a too-open mode of our
 * own. Returns 0 or -errno with a message in err. */
int rundir_prepare(const rundir_t *rd, char *err, size_t errlen);

/* Opens and locks the pid file (flock, non-blocking). Returns the fd (keep it
 * open for the daemon's life), -EEXIST with the running pid in *other when
 * another collectord holds it, -ELOOP for a symlink, -EINVAL for anything but
 * a regular file of ours with one link (a FIFO, a hard link), or -errno. */
int rundir_lock_pidfile(const rundir_t *rd, pid_t *other);

/* Writes pid into the locked pid file. Returns 0 or -errno. */
int rundir_write_pid(int fd, pid_t pid);

/* The number written in the pid file while someone holds its lock, 0 if
 * nobody does. Only what the file claims: for messages, never a pid to
 * signal (anyone who could write the directory could have written it). */
pid_t rundir_running_pid(const rundir_t *rd);

/* A socket file at path: 1 if something accepts connections on it, 0 if it
 * is stale (nothing listens) or absent, -errno on other errors. */
int rundir_probe_socket(const char *path);

/* Connects to a Unix stream socket. Returns the fd or -errno. */
int rundir_connect(const char *path);

#endif
