/* Unit tests of the Python type reader: ob_type -> tp_name from a scan's copy, bounds-checked (bad pointers, names not NUL-terminated, names cut at a bound). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "collector/collectord/pytype.h"

#define BASE 0x10000000ull
#define SPAN (1u << 16)
#define RO_BASE 0x20000000ull

static uint8_t mem[SPAN];
static reach_run_t one_run = { BASE, BASE + SPAN, mem };
static const reach_img_t img = { &one_run, 1 };

/* Read-only memory (a module's .rodata) for the reader. */
static char ro_mem[512];
static size_t ro_len;

static size_t ro(void *ctx, uint64_t addr, char *buf, size_t len)
{
    (void)ctx;
    if (addr < RO_BASE || addr >= RO_BASE + ro_len)
        return 0;
    size_t off = (size_t)(addr - RO_BASE), n = ro_len - off < len ? ro_len - off : len;
    memcpy(buf, ro_mem + off, n);
    return n;
}

static void put(uint64_t addr, uint64_t v)
{
    assert_true(addr >= BASE && addr + 8 <= BASE + SPAN);
    memcpy(mem + (addr - BASE), &v, 8);
}

static void put_str(uint64_t addr, const char *s, size_t n)
{
    memcpy(mem + (addr - BASE), s, n);
}

#define F_READY (1ull << 12)
#define F_GC (1ull << 14)
#define F_MANAGED_DICT (1ull << 4)
#define F_TYPE_SUB (1ull << 31)

/* type objects: `type` (its own type), a metaclass, and types below. */
#define T_TYPE (BASE + 0x1000)
#define T_META (BASE + 0x1100)
#define T_DICT (BASE + 0x1200)   /* static: name in read-only memory */
#define T_CLS (BASE + 0x1300)    /* a heap type: name in the copy */
#define T_PLAIN (BASE + 0x1400)  /* not GC: objects start at the block */
#define T_META_CLS (BASE + 0x1500) /* its type is the metaclass */
#define T_BAD (BASE + 0x1600)    /* not ready */
#define NAMES (BASE + 0x2000)
#define BLK (BASE + 0x4000)

static void type_at(uint64_t t, uint64_t meta, uint64_t name, uint64_t basic, uint64_t flags)
{
    put(t + 0, 1000);
    put(t + 8, meta);
    put(t + 24, name);
    put(t + 32, basic);
    put(t + 168, flags);
}

static void setup_types(void)
{
    memset(mem, 0, sizeof mem);
    put_str(NAMES, "type", 5);
    type_at(T_TYPE, T_TYPE, NAMES, 880, F_READY | F_GC | F_TYPE_SUB);
    type_at(T_META, T_TYPE, NAMES, 880, F_READY | F_GC | F_TYPE_SUB);
    strcpy(ro_mem, "dict");
    ro_len = 5;
    type_at(T_DICT, T_TYPE, RO_BASE, 48, F_READY | F_GC);
    put_str(NAMES + 0x40, "Holder", 7);
    type_at(T_CLS, T_TYPE, NAMES + 0x40, 96, F_READY | F_GC | F_MANAGED_DICT);
    put_str(NAMES + 0x80, "float", 6);
    type_at(T_PLAIN, T_TYPE, NAMES + 0x80, 24, F_READY);
    put_str(NAMES + 0xc0, "Model", 6);
    type_at(T_META_CLS, T_META, NAMES + 0xc0, 24, F_READY);
    type_at(T_BAD, T_TYPE, NAMES + 0x80, 24, 0);
}

/* An object of type t at offset off of the block at blk. */
static void obj(uint64_t blk, unsigned off, uint64_t t)
{
    put(blk + off, 1);
    put(blk + off + 8, t);
}

static void test_object_offsets(void **state)
{
    (void)state;
    setup_types();
    obj(BLK, 16, T_DICT);           /* behind its PyGC_Head */
    obj(BLK + 0x100, 32, T_CLS);    /* behind a pre-header and its PyGC_Head */
    obj(BLK + 0x200, 0, T_PLAIN);   /* at the block */
    obj(BLK + 0x300, 0, T_META_CLS);
    assert_true(pytype_of(&img, BLK, 64) == T_DICT);
    assert_true(pytype_of(&img, BLK + 0x100, 144) == T_CLS);
    assert_true(pytype_of(&img, BLK + 0x200, 32) == T_PLAIN);
    assert_true(pytype_of(&img, BLK + 0x300, 32) == T_META_CLS);
    /* A GC type's object at the block's start (where the GC head is): no. */
    obj(BLK + 0x400, 0, T_DICT);
    assert_true(pytype_of(&img, BLK + 0x400, 64) == 0);
    /* A basic size larger than the block: no. */
    assert_true(pytype_of(&img, BLK, 48) == 0);
    /* Block too small for the header at all. */
    assert_true(pytype_of(&img, BLK + 0x200, 8) == 0);
}

static void test_bad_pointers(void **state)
{
    (void)state;
    setup_types();
    obj(BLK, 0, 0x1234);                   /* outside the copy */
    assert_true(pytype_of(&img, BLK, 64) == 0);
    obj(BLK, 0, BASE + SPAN - 16);         /* its fields run off the copy */
    assert_true(pytype_of(&img, BLK, 64) == 0);
    obj(BLK, 0, T_PLAIN + 3);              /* misaligned */
    assert_true(pytype_of(&img, BLK, 64) == 0);
    obj(BLK, 0, T_BAD);                    /* not ready */
    assert_true(pytype_of(&img, BLK, 64) == 0);
    obj(BLK, 0, NAMES);                    /* a string, not a type */
    assert_true(pytype_of(&img, BLK, 64) == 0);
    /* A "type" whose type is not a type subclass. */
    type_at(BASE + 0x1700, T_PLAIN, NAMES + 0x80, 24, F_READY);
    obj(BLK, 0, BASE + 0x1700);
    assert_true(pytype_of(&img, BLK, 64) == 0);
    /* A block outside the copy. */
    assert_true(pytype_of(&img, 0x42, 64) == 0);
    assert_true(pytype_of(&img, BASE + SPAN - 8, 64) == 0);
}

static void test_names(void **state)
{
    (void)state;
    setup_types();
    char out[PYTYPE_NAME_MAX];
    assert_int_equal(pytype_name(&img, T_DICT, ro, NULL, out, sizeof out), 0);
    assert_string_equal(out, "dict");
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), 0);
    assert_string_equal(out, "Holder");
    /* Read-only memory without a reader: no name. */
    assert_int_equal(pytype_name(&img, T_DICT, NULL, NULL, out, sizeof out), -1);
    assert_string_equal(out, "");
    /* tp_name NULL, or pointing nowhere. */
    put(T_CLS + 24, 0);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), -1);
    put(T_CLS + 24, 0x99999999ull);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), -1);
    /* Not NUL-terminated before the copy ends. */
    put_str(BASE + SPAN - 4, "abcd", 4);
    put(T_CLS + 24, BASE + SPAN - 4);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), -1);
    /* ... nor before read-only memory ends. */
    memcpy(ro_mem, "dictionary", 10);
    ro_len = 10;
    assert_int_equal(pytype_name(&img, T_DICT, ro, NULL, out, sizeof out), -1);
    /* Not printable, or empty. */
    put_str(NAMES + 0x100, "ab\x01" "c", 5);
    put(T_CLS + 24, NAMES + 0x100);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), -1);
    put_str(NAMES + 0x100, "", 1);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), -1);
    /* Longer than the buffer: cut, "...". */
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    put_str(NAMES + 0x200, longname, sizeof longname);
    put(T_CLS + 24, NAMES + 0x200);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), 0);
    assert_int_equal(strlen(out), sizeof out - 1);
    assert_string_equal(out + sizeof out - 4, "...");
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, 8), 0);
    assert_string_equal(out, "xxxx...");
    /* No NUL within PYTYPE_READ_MAX bytes, all readable: cut too. */
    char huge[PYTYPE_READ_MAX + 8];
    memset(huge, 'y', sizeof huge);
    put_str(NAMES + 0x400, huge, sizeof huge);
    put(T_CLS + 24, NAMES + 0x400);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, sizeof out), 0);
    assert_string_equal(out + sizeof out - 4, "...");
    /* A buffer too small to say anything. */
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, 4), -1);
    /* Exactly fits. */
    put_str(NAMES + 0x600, "abcdefg", 8);
    put(T_CLS + 24, NAMES + 0x600);
    assert_int_equal(pytype_name(&img, T_CLS, ro, NULL, out, 8), 0);
    assert_string_equal(out, "abcdefg");
}

static void test_interned(void **state)
{
    (void)state;
    setup_types();
    obj(BLK, 16, T_DICT);
    obj(BLK + 0x100, 16, T_DICT);
    obj(BLK + 0x200, 0, T_PLAIN);
    obj(BLK + 0x300, 0, 0x1234);
    pytypes_t *t = pytypes_new(&img, ro, NULL);
    assert_non_null(t);
    long a = pytypes_of(t, BLK, 64), b = pytypes_of(t, BLK + 0x100, 64),
         c = pytypes_of(t, BLK + 0x200, 32);
    assert_true(a >= 0 && a == b && c >= 0 && c != a);
    assert_int_equal(pytypes_of(t, BLK + 0x300, 32), -1);
    /* The cache answers for the type even when the memory changes after. */
    ro_len = 0;
    assert_int_equal(pytypes_of(t, BLK + 0x100, 64), a);
    size_t n;
    char **names = pytypes_take(t, &n);
    assert_int_equal(n, 2);
    assert_string_equal(names[a], "dict");
    assert_string_equal(names[c], "float");
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    pytypes_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object_offsets),
        cmocka_unit_test(test_bad_pointers),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_interned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
