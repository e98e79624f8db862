/* Exported symbols of an ELF file (.dynsym), to call them in another process. */
#ifndef STACKWATCH_COLLECTOR_ELFSYM_H
#define STACKWATCH_COLLECTOR_ELFSYM_H

#include <stddef.h>
#include <stdint.h>

typedef struct elfsym_s {
    uint16_t machine;      /* e_machine (EM_X86_64) */
    uint64_t load_off;     /* the first PT_LOAD's p_offset */
    uint64_t load_vaddr;   /* ... and p_vaddr */
} elfsym_t;

/* Opens path and looks up each of names[0..n) among the defined symbols of
 * .dynsym (a symbol's default version wins over hidden ones); values[i] is
 * its st_value, 0 if not found. Returns 0, or -errno (-ENOEXEC: not an ELF
 * file with a dynamic symbol table). */
int elfsym_lookup(const char *path, const char *const *names, uint64_t *values, size_t n,
                  elfsym_t *info);

#endif
