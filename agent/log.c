/* The agent's rare diagnostics: formatted into a stack buffer, written with write(2). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fdguard.h"

static fdguard_t log_g = { .fd = -1 };

static void put_c(char *buf, size_t cap, size_t *n, char c)
{
    if (*n + 1 < cap)
        buf[*n] = c;
    (*n)++;
}

static void put_s(char *buf, size_t cap, size_t *n, const char *s)
{
    if (!s)
        s = "(null)";
    while (*s)
        put_c(buf, cap, n, *s++);
}

static void put_u(char *buf, size_t cap, size_t *n, unsigned long long v, unsigned base)
{
    char tmp[24];
    int i = 0;
    do {
        unsigned d = (unsigned)(v % base);
        tmp[i++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    while (i > 0)
        put_c(buf, cap, n, tmp[--i]);
}

static void put_d(char *buf, size_t cap, size_t *n, long long v)
{
    if (v < 0) {
        put_c(buf, cap, n, '-');
        put_u(buf, cap, n, (unsigned long long)(-(v + 1)) + 1, 10);
    } else {
        put_u(buf, cap, n, (unsigned long long)v, 10);
    }
}

size_t log_vfmt(char *buf, size_t cap, const char *fmt, va_list ap)
{
    size_t n = 0;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put_c(buf, cap, &n, *p);
            continue;
        }
        p++;
        int lng = 0, sz = 0;
        while (*p == 'l') {
            lng++;
            p++;
        }
        if (*p == 'z') {
            sz = 1;
            p++;
        }
        switch (*p) {
        case 's':
            put_s(buf, cap, &n, va_arg(ap, const char *));
            break;
        case 'c':
            put_c(buf, cap, &n, (char)va_arg(ap, int));
            break;
        case 'd':
            if (lng >= 2)
                put_d(buf, cap, &n, va_arg(ap, long long));
            else if (lng == 1)
                put_d(buf, cap, &n, va_arg(ap, long));
            else
                put_d(buf, cap, &n, va_arg(ap, int));
            break;
        case 'u':
        case 'x': {
            unsigned base = *p == 'x' ? 16 : 10;
            if (sz)
                put_u(buf, cap, &n, va_arg(ap, size_t), base);
            else if (lng >= 2)
                put_u(buf, cap, &n, va_arg(ap, unsigned long long), base);
            else if (lng == 1)
                put_u(buf, cap, &n, va_arg(ap, unsigned long), base);
            else
                put_u(buf, cap, &n, va_arg(ap, unsigned), base);
            break;
        }
        case 'p':
            put_s(buf, cap, &n, "0x");
            put_u(buf, cap, &n, (uintptr_t)va_arg(ap, void *), 16);
            break;
        case '%':
            put_c(buf, cap, &n, '%');
            break;
        case '\0':
            p--;
            break;
        default:
            put_c(buf, cap, &n, '%');
            put_c(buf, cap, &n, *p);
            break;
        }
    }
    if (cap > 0)
        buf[n < cap ? n : cap - 1] = '\0';
    return n < cap ? n : (cap ? cap - 1 : 0);
}

size_t log_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = log_vfmt(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

void log_open(const char *spec)
{
    int saved = errno;
    fdguard_close(&log_g);
    if (!spec || !*spec || strcmp(spec, "stderr") == 0) {
        fdguard_dup(&log_g, 2);
    } else if (strncmp(spec, "fd:", 3) == 0) {
        int fd = 0;
        const char *p = spec + 3;
        for (; *p >= '0' && *p <= '9' && fd < (1 << 20); p++)
            fd = fd * 10 + (*p - '0');
        if (p == spec + 3 || *p) {
            fdguard_dup(&log_g, 2);
            log_msg("STACKWATCH_LOG=%s is not fd:N (a descriptor number); writing to stderr",
                    spec);
        } else if (fdguard_dup(&log_g, fd) < 0) {
            fdguard_dup(&log_g, 2);
            log_msg("STACKWATCH_LOG=%s: descriptor %d is not open; writing to stderr", spec,
                    fd);
        }
    } else if (strcmp(spec, "none") != 0) {
        int fd = open(spec, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            fdguard_take(&log_g, fd);
        } else {
            int e = errno;
            fdguard_dup(&log_g, 2);
            log_msg("STACKWATCH_LOG=%s: cannot open it (%s); writing to stderr", spec,
                    strerror(e));
        }
    }
    errno = saved;
}

void log_close(void)
{
    fdguard_close(&log_g);
}

int log_fd(void)
{
    return fdguard_valid(&log_g) ? log_g.fd : -1;
}

void log_msg(const char *fmt, ...)
{
    int saved = errno;
    char buf[1024];
    size_t n = log_fmt(buf, sizeof buf, "stackwatch[%d]: ", (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    n += log_vfmt(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    buf[n++] = '\n';
    int fd = log_fd();
    if (fd >= 0) {
        ssize_t w = write(fd, buf, n);
        (void)w;
    }
    errno = saved;
}
