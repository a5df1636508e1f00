/* A 1C Native API host for the Windows builds of the add-in (x64 and x86), in C: it lays out
 * the interfaces as MSVC does (one destructor slot per vtable; `this` first), with MSVC's
 * calling conventions, which g++'s Itanium vtables cannot check: on x64 the Microsoft x64
 * convention for everything; on x86 the interface methods are __stdcall with `this` pushed
 * as the first stack argument (1C's ADDIN_API), the destructor slot is __thiscall (`this` in
 * ECX), the exports are cdecl. The host's own interfaces (memory manager, IAddInDefBase) are
 * declared the same way, as the add-in calls them. Compiled with mingw-w64 and run under wine
 * (32-bit wine for x86) by tests/windows.rs.
 *
 * Usage: addin_win_host.exe DLL URL. Drives both host orders (1C: Init then setMemManager,
 * teardown by DestroyObject; OneScript: setMemManager then Init, teardown by Done and the
 * scalar deleting destructor), calls GetImages with PWSTR and EMPTY parameters, reads
 * LastResult as BLOB, checks AddError for a wrong type, and counts host allocations down to
 * zero. Prints one line per check; exits 1 on any failure. */
#include <windows.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t WCHAR_T;

#if defined(__i386__)
#define ADDIN_API __attribute__((stdcall))
#define THISCALL __attribute__((thiscall))
#else
#define ADDIN_API
#define THISCALL
#endif

enum { VT_EMPTY_ = 0, VT_I4_ = 3, VT_PWSTR_ = 22, VT_BLOB_ = 23 };

typedef struct {
    union {
        int32_t lVal;
        int64_t llVal;
        double dblVal;
        bool bVal;
        int tmVal[9]; /* struct tm on Windows: 36 bytes */
        struct { char *pstrVal; uint32_t strLen; } s;
        struct { WCHAR_T *pwstrVal; uint32_t wstrLen; } w;
    } u;
    uint32_t cbElements;
    uint16_t vt;
} tVariant;
/* The same on x64 and x86: MSVC aligns int64_t and double to 8 in structs on both. */
_Static_assert(sizeof(tVariant) == 48, "tVariant is 48 bytes on Windows");
_Static_assert(offsetof(tVariant, cbElements) == 40, "cbElements at 40 on Windows");
_Static_assert(offsetof(tVariant, vt) == 44, "vt at 44 on Windows");
_Static_assert(offsetof(tVariant, u.w.wstrLen) == sizeof(void *), "wstrLen after the pointer");
_Static_assert(offsetof(tVariant, u.s.strLen) == sizeof(void *), "strLen after the pointer");

static int failures = 0;
#define CHECK(cond, ...) do { bool ok_ = (cond); printf("%s ", ok_ ? "ok  " : "FAIL"); printf(__VA_ARGS__); printf("\n"); if (!ok_) failures++; } while (0)

/* ---- the host's memory manager (IMemoryManager): destructor, AllocMemory, FreeMemory ---- */
typedef struct MemoryManager MemoryManager;
typedef struct {
    void *(THISCALL *destructor)(MemoryManager *, unsigned);
    bool (ADDIN_API *AllocMemory)(MemoryManager *, void **, unsigned long);
    void (ADDIN_API *FreeMemory)(MemoryManager *, void **);
} MemoryManagerVtbl;
struct MemoryManager { const MemoryManagerVtbl *vtbl; long live; };

static void *THISCALL mm_destructor(MemoryManager *m, unsigned f) { (void)f; return m; }
static bool ADDIN_API mm_alloc(MemoryManager *m, void **p, unsigned long bytes) {
    *p = malloc(bytes ? bytes : 1);
    if (*p) m->live++;
    return *p != NULL;
}
static void ADDIN_API mm_free(MemoryManager *m, void **p) {
    if (*p) { free(*p); m->live--; *p = NULL; }
}
static const MemoryManagerVtbl MM_VTBL = { mm_destructor, mm_alloc, mm_free };

/* ---- the host (IAddInDefBase): destructor, AddError, then slots the add-in does not use ---- */
typedef struct Host Host;
typedef bool (ADDIN_API *AddErrorFn)(Host *, unsigned short, const WCHAR_T *, const WCHAR_T *, long);
typedef struct { void *(THISCALL *destructor)(Host *, unsigned); AddErrorFn AddError; void *rest[9]; } HostVtbl;
struct Host { const HostVtbl *vtbl; int errors; char last_error[512]; };

static void *THISCALL host_destructor(Host *h, unsigned f) { (void)f; return h; }
static bool ADDIN_API host_add_error(Host *h, unsigned short code, const WCHAR_T *src, const WCHAR_T *descr, long scode) {
    (void)code; (void)src; (void)scode;
    h->errors++;
    WideCharToMultiByte(CP_UTF8, 0, (const wchar_t *)descr, -1, h->last_error, sizeof h->last_error, NULL, NULL);
    return true;
}
static const HostVtbl HOST_VTBL = { host_destructor, host_add_error, {0} };

/* ---- the component's interfaces, as MSVC lays them out ---- */
typedef struct {
    void *(THISCALL *destructor)(void *, unsigned);
    bool (ADDIN_API *Init)(void *, void *);
    bool (ADDIN_API *setMemManager)(void *, void *);
    long (ADDIN_API *GetInfo)(void *);
    void (ADDIN_API *Done)(void *);
} InitDoneVtbl;
typedef struct {
    void *(THISCALL *destructor)(void *, unsigned);
    bool (ADDIN_API *RegisterExtensionAs)(void *, WCHAR_T **);
    long (ADDIN_API *GetNProps)(void *);
    long (ADDIN_API *FindProp)(void *, const WCHAR_T *);
    const WCHAR_T *(ADDIN_API *GetPropName)(void *, long, long);
    bool (ADDIN_API *GetPropVal)(void *, long, tVariant *);
    bool (ADDIN_API *SetPropVal)(void *, long, tVariant *);
    bool (ADDIN_API *IsPropReadable)(void *, long);
    bool (ADDIN_API *IsPropWritable)(void *, long);
    long (ADDIN_API *GetNMethods)(void *);
    long (ADDIN_API *FindMethod)(void *, const WCHAR_T *);
    const WCHAR_T *(ADDIN_API *GetMethodName)(void *, long, long);
    long (ADDIN_API *GetNParams)(void *, long);
    bool (ADDIN_API *GetParamDefValue)(void *, long, long, tVariant *);
    bool (ADDIN_API *HasRetVal)(void *, long);
    bool (ADDIN_API *CallAsProc)(void *, long, tVariant *, long);
    bool (ADDIN_API *CallAsFunc)(void *, long, tVariant *, tVariant *, long);
} LanguageExtenderVtbl;
typedef struct { void *(THISCALL *destructor)(void *, unsigned); void (ADDIN_API *SetLocale)(void *, const WCHAR_T *); } LocaleVtbl;

typedef const WCHAR_T *(*GetClassNamesFn)(void);
typedef long (*GetClassObjectFn)(const WCHAR_T *, void **);
typedef long (*DestroyObjectFn)(void **);

static void to_utf8(const WCHAR_T *w, char *out, int size) {
    out[0] = 0;
    if (w) WideCharToMultiByte(CP_UTF8, 0, (const wchar_t *)w, -1, out, size, NULL, NULL);
}

static WCHAR_T *wide(const char *s) {
    int n = MultiByteToWideChar(CP_UTF8, 0, s, -1, NULL, 0);
    WCHAR_T *w = malloc(sizeof(WCHAR_T) * n);
    MultiByteToWideChar(CP_UTF8, 0, s, -1, (wchar_t *)w, n);
    return w;
}

static void set_text(tVariant *v, const char *s) {
    memset(v, 0, sizeof *v);
    v->vt = VT_PWSTR_;
    v->u.w.pwstrVal = wide(s);
    v->u.w.wstrLen = (uint32_t)wcslen((const wchar_t *)v->u.w.pwstrVal);
}

static void scenario(HMODULE dll, const char *url, bool onescript_order) {
    const char *order = onescript_order ? "OneScript" : "1C";
    GetClassNamesFn GetClassNames = (GetClassNamesFn)(void (*)(void))GetProcAddress(dll, "GetClassNames");
    GetClassObjectFn GetClassObject = (GetClassObjectFn)(void (*)(void))GetProcAddress(dll, "GetClassObject");
    DestroyObjectFn DestroyObject = (DestroyObjectFn)(void (*)(void))GetProcAddress(dll, "DestroyObject");
    CHECK(GetClassNames && GetClassObject && DestroyObject, "%s: exports found", order);
    if (!GetClassNames || !GetClassObject || !DestroyObject) return;
    char text[4096];
    to_utf8(GetClassNames(), text, sizeof text);
    CHECK(strcmp(text, "Main") == 0, "%s: GetClassNames is \"%s\"", order, text);

    MemoryManager mem = { &MM_VTBL, 0 };
    Host host = { &HOST_VTBL, 0, "" };
    void *obj = NULL;
    CHECK(GetClassObject((const WCHAR_T *)L"Main", &obj) != 0 && obj, "%s: GetClassObject", order);
    if (!obj) return;
    void *init_if = obj, *lang_if = (char *)obj + sizeof(void *), *locale_if = (char *)obj + 2 * sizeof(void *);
    const InitDoneVtbl *init = *(const InitDoneVtbl **)init_if;
    const LanguageExtenderVtbl *lang = *(const LanguageExtenderVtbl **)lang_if;
    const LocaleVtbl *locale = *(const LocaleVtbl **)locale_if;

    if (onescript_order) {
        CHECK(init->setMemManager(init_if, &mem), "%s: setMemManager", order);
        CHECK(init->Init(init_if, &host), "%s: Init", order);
    } else {
        CHECK(init->Init(init_if, &host), "%s: Init", order);
        CHECK(init->setMemManager(init_if, &mem), "%s: setMemManager", order);
    }
    CHECK(init->GetInfo(init_if) == 2000, "%s: GetInfo is 2000", order);
    locale->SetLocale(locale_if, (const WCHAR_T *)L"ru_RU");

    WCHAR_T *name = NULL;
    CHECK(lang->RegisterExtensionAs(lang_if, &name) && name, "%s: RegisterExtensionAs", order);
    to_utf8(name, text, sizeof text);
    CHECK(strcmp(text, "Main") == 0, "%s: extension name \"%s\"", order, text);
    mem.vtbl->FreeMemory(&mem, (void **)&name);

    long m = lang->FindMethod(lang_if, (const WCHAR_T *)L"getimages");
    long m_ru = lang->FindMethod(lang_if, (const WCHAR_T *)L"ПОЛУЧИТЬКАРТИНКИ");
    CHECK(m >= 0 && m == m_ru, "%s: FindMethod by English and Russian name, any case (%ld, %ld)", order, m, m_ru);
    CHECK(lang->GetNParams(lang_if, m) == 5, "%s: GetImages takes 5 parameters", order);
    CHECK(lang->HasRetVal(lang_if, m), "%s: GetImages returns a value", order);
    const WCHAR_T *mname = lang->GetMethodName(lang_if, m, 1);
    to_utf8(mname, text, sizeof text);
    CHECK(strcmp(text, "ПолучитьКартинки") == 0, "%s: Russian method name \"%s\"", order, text);
    mem.vtbl->FreeMemory(&mem, (void **)&mname);
    tVariant def;
    memset(&def, 0, sizeof def);
    CHECK(lang->GetParamDefValue(lang_if, m, 4, &def), "%s: AdditionalHeaders has a default", order);
    if (def.vt == VT_PWSTR_) mem.vtbl->FreeMemory(&mem, (void **)&def.u.w.pwstrVal);

    tVariant params[5], ret;
    set_text(&params[0], url);
    set_text(&params[1], "sk-windows-test");
    set_text(&params[2], "dall-e-3");
    set_text(&params[3], "{'prompt':'Windows alpaca','n':1}");
    memset(&params[4], 0, sizeof params[4]); /* EMPTY: left out */
    memset(&ret, 0, sizeof ret);
    bool called = lang->CallAsFunc(lang_if, m, &ret, params, 5);
    CHECK(called && ret.vt == VT_PWSTR_, "%s: GetImages returned a String (vt %u)", order, ret.vt);
    if (ret.vt == VT_PWSTR_) {
        static char result[1 << 16];
        to_utf8(ret.u.w.pwstrVal, result, sizeof result);
        CHECK(strstr(result, "\"revised_prompt\":\"Windows alpaca\"") != NULL, "%s: result is the server's JSON", order);
        mem.vtbl->FreeMemory(&mem, (void **)&ret.u.w.pwstrVal);
    }

    long p = lang->FindProp(lang_if, (const WCHAR_T *)L"lastresult");
    tVariant blob;
    memset(&blob, 0, sizeof blob);
    CHECK(p >= 0 && lang->GetPropVal(lang_if, p, &blob) && blob.vt == VT_BLOB_ && blob.u.s.strLen > 100,
          "%s: LastResult is BinaryData of %u bytes", order, blob.u.s.strLen);
    if (blob.vt == VT_BLOB_) mem.vtbl->FreeMemory(&mem, (void **)&blob.u.s.pstrVal);

    /* A Number where the URL (a String) is expected: AddError naming it, and false. */
    free(params[0].u.w.pwstrVal);
    memset(&params[0], 0, sizeof params[0]);
    params[0].vt = VT_I4_;
    params[0].u.lVal = 42;
    memset(&ret, 0, sizeof ret);
    int before = host.errors;
    bool wrong = lang->CallAsFunc(lang_if, m, &ret, params, 5);
    CHECK(!wrong && host.errors == before + 1, "%s: a wrong type is refused through AddError: %s", order, host.last_error);
    if (ret.vt == VT_PWSTR_) mem.vtbl->FreeMemory(&mem, (void **)&ret.u.w.pwstrVal);
    for (int i = 1; i < 4; i++) free(params[i].u.w.pwstrVal);

    init->Done(init_if);
    if (onescript_order) {
        (*(const InitDoneVtbl **)obj)->destructor(obj, 1); /* delete through the virtual destructor */
    } else {
        CHECK(DestroyObject(&obj) == 0 && obj == NULL, "%s: DestroyObject", order);
    }
    CHECK(mem.live == 0, "%s: host allocations back to zero (%ld live)", order, mem.live);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    HMODULE dll = LoadLibraryA(argv[1]);
    CHECK(dll != NULL, "LoadLibrary %s", argv[1]);
    if (!dll) return 1;
    scenario(dll, argv[2], false);
    scenario(dll, argv[2], true);
    FreeLibrary(dll);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
