/* Exported symbols of an ELF file (.dynsym), to call them in another process. */
#include "elfsym.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <string.h>
#include <unistd.h>

int elfsym_lookup(const char *path, const char *const *names, uint64_t *values, size_t n,
                  elfsym_t *info)
{
    for (size_t i = 0; i < n; i++)
        values[i] = 0;
    if (elf_version(EV_CURRENT) == EV_NONE)
        return -ENOSYS;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = -ENOEXEC;
    Elf *e = elf_begin(fd, ELF_C_READ, NULL);
    GElf_Ehdr eh;
    if (!e || elf_kind(e) != ELF_K_ELF || !gelf_getehdr(e, &eh))
        goto out;
    memset(info, 0, sizeof *info);
    info->machine = eh.e_machine;
    size_t phn = 0;
    if (elf_getphdrnum(e, &phn) == 0) {
        for (size_t i = 0; i < phn; i++) {
            GElf_Phdr ph;
            if (gelf_getphdr(e, (int)i, &ph) && ph.p_type == PT_LOAD) {
                info->load_off = ph.p_offset;
                info->load_vaddr = ph.p_vaddr;
                break;
            }
        }
    }
    Elf_Scn *scn = NULL, *dynsym = NULL, *versym = NULL;
    GElf_Shdr dsh = { 0 };
    while ((scn = elf_nextscn(e, scn))) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh))
            continue;
        if (sh.sh_type == SHT_DYNSYM) {
            dynsym = scn;
            dsh = sh;
        } else if (sh.sh_type == SHT_GNU_versym) {
            versym = scn;
        }
    }
    if (!dynsym || dsh.sh_entsize == 0)
        goto out;
    Elf_Data *d = elf_getdata(dynsym, NULL);
    Elf_Data *vd = versym ? elf_getdata(versym, NULL) : NULL;
    if (!d)
        goto out;
    size_t count = dsh.sh_size / dsh.sh_entsize;
    uint8_t hidden_only[64] = { 0 };
    for (size_t k = 0; k < count; k++) {
        GElf_Sym sym;
        if (!gelf_getsym(d, (int)k, &sym) || sym.st_shndx == SHN_UNDEF || !sym.st_value)
            continue;
        const char *nm = elf_strptr(e, dsh.sh_link, sym.st_name);
        if (!nm)
            continue;
        int hidden = 0;
        GElf_Versym vs;
        if (vd && gelf_getversym(vd, (int)k, &vs))
            hidden = (vs & 0x8000) != 0;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(nm, names[i]) != 0)
                continue;
            /* The default version (dlopen@@GLIBC_2.34) wins over a hidden
             * compatibility one (dlopen@GLIBC_2.2.5). */
            if (!values[i] || (i < sizeof hidden_only && hidden_only[i] && !hidden)) {
                values[i] = sym.st_value;
                if (i < sizeof hidden_only)
                    hidden_only[i] = (uint8_t)hidden;
            }
        }
    }
    rc = 0;
out:
    if (e)
        elf_end(e);
    close(fd);
    return rc;
}
