/* GOT patching for stackctl attach: every module's allocator entries lead to the agent. */
#ifndef STACKWATCH_AGENT_GOT_H
#define STACKWATCH_AGENT_GOT_H

#include <stdint.h>

/* One function the GOT patcher redirects: the name programs call, the
 * interposer, and the real function behind it (hook_targets lists them). */
typedef struct got_target_s {
    const char *name;
    uint64_t mine;    /* the agent's function */
    uint64_t real;    /* what the program's references resolve to */
} got_target_t;

/* Remembers the functions to redirect (kept, not copied) and maps the table
 * of patched entries. Returns 0 or -ENOMEM. */
int got_init(const got_target_t *targets, int n);

/* The function addr (dlsym(RTLD_DEFAULT, name)) leads to. A non-PIE
 * program that takes a function's address makes its own PLT stub the
 * function's official address; dlsym returns that stub, which jumps through
 * the program's GOT entry: once patched, to the interposer, which must not
 * call it. Then the definition is what that entry holds (once bound).
 * Returns addr otherwise. Sets *imported (may be NULL) when addr's module
 * imports name (addr is such a stub). Not for the malloc path. */
uint64_t got_definition(const char *name, uint64_t addr, int *imported);

/* Patches the JUMP_SLOT and GLOB_DAT entries for the targets in every
 * loaded module but the agent and the dynamic linker, where they hold the
 * real function (or, lazily bound, the module's own PLT stub): RELRO pages
 * are made writable for the write and read-only again. Entries that hold
 * anything else (a module with its own allocator, another tool's hook) are
 * left alone. Starts patching (got_refresh patches from then on).
 * Returns the entries patched in all, or -errno. Not for the malloc path. */
int got_patch(void);

/* While patching: patches modules loaded since (and entries something
 * rewrote). No-op otherwise. Called after dlopen and by the flusher. */
void got_refresh(void);

/* Writes back the original value of every patched entry of the modules
 * still loaded that still holds the agent's, and stops patching. Returns
 * the entries written back. */
int got_restore(void);

/* fork: the prepare handler takes the table's lock (a dlopen in another
 * thread may hold it), parent and child release it. */
void got_fork_prepare(void);
void got_fork_parent(void);
void got_fork_child(void);

/* Entries patched now, and modules they are in. */
uint32_t got_entries(void);
uint32_t got_modules(void);

#endif
