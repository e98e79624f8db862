/* A process's memory map, from /proc/PID/maps. */
#include "procmaps.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int maps_read(maps_t *m, pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT ? -ESRCH : -errno;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (getline(&line, &cap, f) > 0) {
        uint64_t lo, hi, off, ino;
        char perms[8];
        unsigned maj, min;
        int pos = 0;
        if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %x:%x %" SCNu64 "%n", &lo, &hi,
                   perms, &off, &maj, &min, &ino, &pos) < 7)
            continue;
        char *p = line + pos;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t len = strcspn(p, "\n");
        if (m->n == m->cap) {
            size_t nc = m->cap ? m->cap * 2 : 256;
            maps_ent_t *ne = realloc(m->e, nc * sizeof *ne);
            if (!ne) {
                rc = -ENOMEM;
                break;
            }
            m->e = ne;
            m->cap = nc;
        }
        maps_ent_t *e = &m->e[m->n];
        e->path = strndup(p, len);
        if (!e->path) {
            rc = -ENOMEM;
            break;
        }
        e->lo = lo;
        e->hi = hi;
        e->offset = off;
        e->inode = ino;
        e->prot = (perms[0] == 'r' ? MAPS_R : 0) | (perms[1] == 'w' ? MAPS_W : 0) |
                  (perms[2] == 'x' ? MAPS_X : 0) | (perms[3] == 's' ? MAPS_SHARED : 0);
        m->n++;
    }
    free(line);
    fclose(f);
    if (rc < 0)
        maps_free(m);
    else if (m->n == 0)
        rc = -ESRCH; /* a zombie has no map */
    return rc;
}

void maps_free(maps_t *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->e[i].path);
    free(m->e);
    memset(m, 0, sizeof *m);
}

const maps_ent_t *maps_find(const maps_t *m, uint64_t addr)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (addr < m->e[mid].lo)
            hi = mid;
        else if (addr >= m->e[mid].hi)
            lo = mid + 1;
        else
            return &m->e[mid];
    }
    return NULL;
}

int maps_open_file(const char *path, int nofollow, uint64_t inode)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
                    (inode && (uint64_t)st.st_ino != inode))) {
        close(fd);
        return -1;
    }
    return fd;
}

int maps_bias(const maps_t *m, const char *path, uint64_t off, uint64_t vaddr, uint64_t *bias)
{
    uint64_t page_off = off & ~(uint64_t)4095, page_va = vaddr & ~(uint64_t)4095;
    for (size_t i = 0; i < m->n; i++) {
        if (m->e[i].offset == page_off && strcmp(m->e[i].path, path) == 0) {
            *bias = m->e[i].lo - page_va;
            return 0;
        }
    }
    return -ENOENT;
}
