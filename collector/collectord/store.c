/* collectord's store: ended processes' reports on disk, one versioned file each, read back at start. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* ---------------------------------------------------------------- format */

uint32_t store_crc32(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1; /* loop thread only; the table is the same if two threads race */
    }
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t store_encode(const Stackwatch__StoredProcess *sp, uint8_t **out)
{
    size_t n = stackwatch__stored_process__get_packed_size(sp);
    if (n + STORE_HDR > STORE_MAX_FILE)
        return 0;
    uint8_t *buf = malloc(n + STORE_HDR);
    if (!buf)
        return 0;
    memcpy(buf, STORE_MAGIC, 8);
    put32(buf + 8, STORE_VERSION);
    put32(buf + 12, (uint32_t)n);
    stackwatch__stored_process__pack(sp, buf + STORE_HDR);
    put32(buf + 16, store_crc32(buf + STORE_HDR, n));
    *out = buf;
    return n + STORE_HDR;
}

static int counts_ok(const Stackwatch__StackReport *s)
{
    if (!s->may_leak || !s->expired || !s->free_expired || !s->alloc || !s->free || !s->live ||
        !s->exit_live || !s->uncertain)
        return 0;
    for (size_t i = 0; i < s->n_pids; i++)
        if (!s->pids[i]->may_leak || !s->pids[i]->live || !s->pids[i]->alloc)
            return 0;
    for (size_t i = 0; i < s->n_python; i++)
        if (!s->python[i]->live || !s->python[i]->expired || !s->python[i]->may_leak)
            return 0;
    return 1;
}

/* A stack's frames by reference (frame_refs): each in the table. A record
 * re-encoded after a decode carries both, as many of each (the frames
 * then win). */
static int refs_ok(const Stackwatch__StoredProcess *sp, const Stackwatch__StackReport *s)
{
    if (!s->n_frame_refs)
        return 1;
    if (s->n_frames && s->n_frames != s->n_frame_refs)
        return 0;
    for (size_t i = 0; i < s->n_frame_refs; i++)
        if (s->frame_refs[i] >= sp->n_frame_table || !sp->frame_table[s->frame_refs[i]])
            return 0;
    return 1;
}

/* Gives each stack stored by reference its frames (pointers into the
 * record's table, in an array of ours: store_sp_free takes it back). */
static int refs_expand(Stackwatch__StoredProcess *sp, Stackwatch__StackReport **st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        Stackwatch__StackReport *s = st[i];
        if (!s->n_frame_refs || s->n_frames)
            continue;
        Stackwatch__Frame **f = malloc(s->n_frame_refs * sizeof *f);
        if (!f)
            return -ENOMEM;
        for (size_t k = 0; k < s->n_frame_refs; k++)
            f[k] = sp->frame_table[s->frame_refs[k]];
        s->frames = f;
        s->n_frames = s->n_frame_refs;
    }
    return 0;
}

/* Our arrays only: an expanded stack's first frame is the table's own
 * (frames decoded with the record are allocations of their own). */
static void refs_unexpand(const Stackwatch__StoredProcess *sp, Stackwatch__StackReport **st,
                          size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (st[i]->n_frame_refs && st[i]->n_frames && st[i]->frames &&
            st[i]->frame_refs[0] < sp->n_frame_table &&
            st[i]->frames[0] == sp->frame_table[st[i]->frame_refs[0]]) {
            free(st[i]->frames);
            st[i]->frames = NULL;
            st[i]->n_frames = 0;
        }
}

void store_sp_free(Stackwatch__StoredProcess *sp)
{
    if (!sp)
        return;
    refs_unexpand(sp, sp->stacks, sp->n_stacks);
    refs_unexpand(sp, sp->since_mark, sp->n_since_mark);
    stackwatch__stored_process__free_unpacked(sp, NULL);
}

Stackwatch__StoredProcess *store_decode(const uint8_t *buf, size_t len, const char **why)
{
    if (len < STORE_HDR) {
        *why = len ? "truncated header" : "empty file";
        return NULL;
    }
    if (memcmp(buf, STORE_MAGIC, 8) != 0) {
        *why = "not a stackwatch store record";
        return NULL;
    }
    if (get32(buf + 8) != STORE_VERSION) {
        *why = "record of an unknown store version";
        return NULL;
    }
    uint32_t n = get32(buf + 12);
    if (n != len - STORE_HDR) {
        *why = n > len - STORE_HDR ? "truncated record" : "trailing bytes after the record";
        return NULL;
    }
    if (store_crc32(buf + STORE_HDR, n) != get32(buf + 16)) {
        *why = "checksum mismatch";
        return NULL;
    }
    Stackwatch__StoredProcess *sp = stackwatch__stored_process__unpack(NULL, n, buf + STORE_HDR);
    if (!sp) {
        *why = "undecodable record";
        return NULL;
    }
    int ok = sp->client && sp->client->live && sp->client->pid != 0;
    for (size_t i = 0; ok && i < sp->n_stacks; i++)
        ok = counts_ok(sp->stacks[i]);
    for (size_t i = 0; ok && i < sp->n_since_mark; i++)
        ok = counts_ok(sp->since_mark[i]);
    if (!ok) {
        stackwatch__stored_process__free_unpacked(sp, NULL);
        *why = "record lacks required fields";
        return NULL;
    }
    for (size_t i = 0; ok && i < sp->n_stacks; i++)
        ok = refs_ok(sp, sp->stacks[i]);
    for (size_t i = 0; ok && i < sp->n_since_mark; i++)
        ok = refs_ok(sp, sp->since_mark[i]);
    if (!ok) {
        stackwatch__stored_process__free_unpacked(sp, NULL);
        *why = "a stack's frame reference is out of the record's table";
        return NULL;
    }
    if (refs_expand(sp, sp->stacks, sp->n_stacks) < 0 ||
        refs_expand(sp, sp->since_mark, sp->n_since_mark) < 0) {
        store_sp_free(sp);
        *why = "out of memory";
        return NULL;
    }
    return sp;
}

/* ---------------------------------------------------------------- files */

void store_default_dir(char *out, size_t cap, const char *fallback)
{
    const char *x = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    if (x && x[0] == '/')
        snprintf(out, cap, "%s/stackwatch", x);
    else if (home && home[0] == '/')
        snprintf(out, cap, "%s/.local/state/stackwatch", home);
    else
        snprintf(out, cap, "%s", fallback);
}

static int mkdir_p(const char *path)
{
    char tmp[STORE_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* A directory of the store: ours, and (nofollow) not a symlink itself. The
 * state directory may be reached through one (a home on another disk).
 * Returns 0 or -errno with a message in err. */
static int check_dir(const char *path, int nofollow, char *err, size_t errlen)
{
    struct stat sb;
    if ((nofollow ? lstat(path, &sb) : stat(path, &sb)) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot inspect %s: %s", path, strerror(e));
        return -e;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "%s is not a directory%s; refusing to use it", path,
                 S_ISLNK(sb.st_mode) ? " (a symbolic link)" : "");
        return -ENOTDIR;
    }
    if (sb.st_uid != geteuid()) {
        snprintf(err, errlen, "%s is owned by uid %u, not by you (uid %u); refusing to use it",
                 path, (unsigned)sb.st_uid, (unsigned)geteuid());
        return -EPERM;
    }
    return 0;
}

static void rec_name(char *out, size_t cap, uint32_t pid, uint64_t instance)
{
    snprintf(out, cap, "p%u-%016" PRIx64 ".swr", pid, instance);
}

static store_rec_t *rec_find(store_t *st, uint32_t pid, uint64_t instance)
{
    for (uint32_t i = 0; i < st->n; i++)
        if (st->recs[i].pid == pid && st->recs[i].instance == instance)
            return &st->recs[i];
    return NULL;
}

static store_rec_t *rec_add(store_t *st)
{
    if (st->n == st->cap) {
        uint32_t ncap = st->cap ? st->cap * 2 : 32;
        store_rec_t *nr = realloc(st->recs, ncap * sizeof *nr);
        if (!nr)
            return NULL;
        st->recs = nr;
        st->cap = ncap;
    }
    store_rec_t *r = &st->recs[st->n++];
    memset(r, 0, sizeof *r);
    return r;
}

/* Frees a record's report, deleting its file first if unlink_file. */
static void rec_release(const store_t *st, store_rec_t *r, int unlink_file)
{
    if (unlink_file) {
        char path[STORE_PATH_MAX];
        snprintf(path, sizeof path, "%s/reports/%s", st->dir, r->name);
        if (unlink(path) < 0 && errno != ENOENT)
            log_msg("store: cannot delete %s: %s", path, strerror(errno));
    }
    if (r->sp)
        store_sp_free(r->sp);
}

static void rec_drop(store_t *st, uint32_t i, int unlink_file)
{
    rec_release(st, &st->recs[i], unlink_file);
    st->recs[i] = st->recs[--st->n];
}

/* Opens a store file of ours for reading: never waits (a FIFO planted
 * there would block open and read), follows no symlink, and takes only a
 * regular file owned by our effective uid. Returns the fd with *sb filled,
 * or -errno with *why set. */
static int open_regular(const char *path, struct stat *sb, const char **why)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        *why = e == ELOOP ? "a symbolic link" : strerror(e);
        return -e;
    }
    int rc = 0;
    if (fstat(fd, sb) < 0) {
        rc = -errno;
        *why = strerror(-rc);
    } else if (!S_ISREG(sb->st_mode)) {
        rc = -EINVAL;
        *why = "not a regular file";
    } else if (sb->st_uid != geteuid()) {
        rc = -EPERM;
        *why = "owned by another user";
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

/* Reads the whole file (bounded). Returns 0, or -errno with *why set. */
static int read_file(const char *path, uint8_t **buf, size_t *len, const char **why)
{
    struct stat sb;
    int fd = open_regular(path, &sb, why);
    if (fd < 0)
        return fd;
    if (sb.st_size > STORE_MAX_FILE) {
        close(fd);
        *why = "larger than a record can be";
        return -EFBIG;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        close(fd);
        *why = "out of memory";
        return -ENOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *buf = p;
    *len = got;
    return 0;
}

static void set_aside(store_t *st, const char *path, const char *why)
{
    char aside[STORE_PATH_MAX + 16];
    snprintf(aside, sizeof aside, "%s.corrupt", path);
    if (rename(path, aside) == 0)
        log_msg("store: %s: %s; set aside as %s", path, why, aside);
    else
        log_msg("store: %s: %s; cannot set it aside (%s), ignored", path, why, strerror(errno));
    st->set_aside++;
}

static int load_one(store_t *st, const char *name)
{
    char path[STORE_PATH_MAX];
    snprintf(path, sizeof path, "%s/reports/%s", st->dir, name);
    uint8_t *buf = NULL;
    size_t len = 0;
    const char *why = NULL;
    int rc = read_file(path, &buf, &len, &why);
    if (rc < 0) {
        if (rc == -ENOMEM)
            return rc;
        set_aside(st, path, why);
        return 0;
    }
    Stackwatch__StoredProcess *sp = store_decode(buf, len, &why);
    free(buf);
    if (!sp) {
        set_aside(st, path, why);
        return 0;
    }
    store_rec_t *old = rec_find(st, sp->client->pid, sp->instance);
    if (old) { /* two files of one process image: keep the later */
        if (old->end_ns >= sp->end_realtime_ns) {
            store_sp_free(sp);
            unlink(path);
            return 0;
        }
        rec_drop(st, (uint32_t)(old - st->recs), 1);
    }
    store_rec_t *r = rec_add(st);
    if (!r) {
        store_sp_free(sp);
        return -ENOMEM;
    }
    r->pid = sp->client->pid;
    r->instance = sp->instance;
    r->end_ns = sp->end_realtime_ns;
    r->snapshot = sp->snapshot;
    r->sp = sp;
    rec_name(r->name, sizeof r->name, r->pid, r->instance);
    if (strcmp(r->name, name) != 0) {
        /* Renamed by hand: keep serving it, under its canonical name from now on. */
        char canon[STORE_PATH_MAX];
        snprintf(canon, sizeof canon, "%s/reports/%s", st->dir, r->name);
        if (rename(path, canon) < 0)
            snprintf(r->name, sizeof r->name, "%.63s", name);
    }
    st->loaded++;
    return 0;
}

int store_open(store_t *st, const char *dir, uint32_t retain_max, uint64_t retain_ns,
               char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    st->lockfd = -1;
    st->retain_max = retain_max;
    st->retain_ns = retain_ns;
    if (snprintf(st->dir, sizeof st->dir, "%s", dir) >= (int)sizeof st->dir) {
        snprintf(err, errlen, "state directory %s: path too long", dir);
        return -ENAMETOOLONG;
    }
    char path[STORE_PATH_MAX];
    snprintf(path, sizeof path, "%s/reports", st->dir);
    int rc = mkdir_p(path);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(-rc));
        return rc;
    }
    rc = check_dir(st->dir, 0, err, errlen);
    if (rc == 0)
        rc = check_dir(path, 1, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(path, sizeof path, "%s/store.lock", st->dir);
    st->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    struct stat sb;
    if (st->lockfd < 0 || fstat(st->lockfd, &sb) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(-rc));
        if (st->lockfd >= 0)
            close(st->lockfd);
        st->lockfd = -1;
        return rc;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_uid != geteuid()) {
        snprintf(err, errlen, "%s is not a regular file of yours; refusing to use it", path);
        close(st->lockfd);
        st->lockfd = -1;
        return -EINVAL;
    }
    if (flock(st->lockfd, LOCK_EX | LOCK_NB) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s is in use by another collectord (%s)", st->dir,
                 strerror(-rc));
        close(st->lockfd);
        st->lockfd = -1;
        return rc == -EWOULDBLOCK ? -EBUSY : rc;
    }
    snprintf(path, sizeof path, "%s/reports", st->dir);
    DIR *d = opendir(path);
    if (!d) {
        rc = -errno;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(-rc));
        close(st->lockfd);
        st->lockfd = -1;
        return rc;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        if (nl > 4 && !strcmp(de->d_name + nl - 4, ".tmp")) {
            char tmp[STORE_PATH_MAX + 256];
            snprintf(tmp, sizeof tmp, "%s/%s", path, de->d_name);
            unlink(tmp); /* a write cut short by a crash: its rename never happened */
            continue;
        }
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".swr") != 0)
            continue;
        if (load_one(st, de->d_name) < 0)
            break;
    }
    closedir(d);
    st->on = 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    store_prune(st, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    return 0;
}

void store_close(store_t *st)
{
    while (st->n)
        rec_drop(st, st->n - 1, 0);
    free(st->recs);
    st->recs = NULL;
    st->cap = 0;
    if (st->lockfd >= 0)
        close(st->lockfd);
    st->lockfd = -1;
    st->on = 0;
}

uint32_t store_count(const store_t *st)
{
    return st->n;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -(w < 0 ? errno : EIO);
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int store_write(store_t *st, const Stackwatch__StoredProcess *sp)
{
    if (!st->on || !sp->client)
        return -ENOTCONN;
    uint8_t *buf = NULL;
    size_t len = store_encode(sp, &buf);
    if (!len) {
        st->write_errors++;
        log_msg("store: the report of pid %u is too large or memory ran out; not stored",
                sp->client->pid);
        return -EFBIG;
    }
    char name[64], path[STORE_PATH_MAX], tmp[STORE_PATH_MAX + 8];
    rec_name(name, sizeof name, sp->client->pid, sp->instance);
    snprintf(path, sizeof path, "%s/reports/%s", st->dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = 0;
    /* Made anew, never opened as found: whatever sits at the name (a FIFO
     * would block the loop, a symlink redirect the write) goes first. */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (fd < 0) {
        rc = -errno;
        goto err;
    }
    rc = write_all(fd, buf, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        goto err;
    }
    /* The rename is durable once the directory is. */
    char rdir[STORE_PATH_MAX];
    snprintf(rdir, sizeof rdir, "%s/reports", st->dir);
    int dfd = open(rdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(buf);
    st->written++;
    store_rec_t *r = rec_find(st, sp->client->pid, sp->instance);
    if (!r && !(r = rec_add(st)))
        return -ENOMEM;
    if (r->merged_serial) {
        /* Its live client still merges the old part (now inside the file too). */
        r->end_ns = sp->end_realtime_ns;
        return 0;
    }
    if (r->sp) {
        store_sp_free(r->sp);
        r->sp = NULL;
    }
    r->pid = sp->client->pid;
    r->instance = sp->instance;
    r->end_ns = sp->end_realtime_ns;
    r->snapshot = sp->snapshot;
    snprintf(r->name, sizeof r->name, "%s", name);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    store_prune(st, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    return 0;
err:
    free(buf);
    st->write_errors++;
    log_msg("store: cannot write %s: %s", path, strerror(-rc));
    return rc;
}

static int by_end_desc(const void *a, const void *b)
{
    const store_rec_t *x = a, *y = b;
    return x->end_ns > y->end_ns ? -1 : x->end_ns < y->end_ns;
}

void store_prune(store_t *st, uint64_t now)
{
    if (st->n > 1)
        qsort(st->recs, st->n, sizeof *st->recs, by_end_desc);
    uint32_t kept = 0, out = 0;
    for (uint32_t i = 0; i < st->n; i++) {
        store_rec_t *r = &st->recs[i];
        int old = st->retain_ns && now > r->end_ns && now - r->end_ns > st->retain_ns;
        /* A snapshot taken over by a live client is rewritten when it ends. */
        if (!r->merged_serial && (kept >= st->retain_max || old)) {
            rec_release(st, r, 1);
            continue;
        }
        if (!r->merged_serial)
            kept++;
        st->recs[out++] = *r;
    }
    st->n = out;
}

store_rec_t *store_find_snapshot(store_t *st, uint32_t pid, uint64_t instance)
{
    store_rec_t *r = rec_find(st, pid, instance);
    return r && r->snapshot && r->sp && !r->merged_serial ? r : NULL;
}
