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
 * LastResult as BLOB, checks AddError for a wrong type (and the error JSON as the value), runs
 * asynchronous jobs (StartGetImages returning at once, ExternalEvent from the worker thread,
 * WaitJob, JobResult, CancelJob, a streaming job's partial_image events, teardown with jobs in
 * flight), 1000 create/Init/Done/destroy cycles, and counts host allocations down to zero.
 * The server is the add-in host server of tests/support/addin.rs (slow/, hang/, stream/).
 * Prints one line per check; exits 1 on any failure. */
#include <windows.h>
#include <tlhelp32.h>

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

enum { VT_EMPTY_ = 0, VT_I4_ = 3, VT_R8_ = 5, VT_BOOL_ = 11, VT_PWSTR_ = 22, VT_BLOB_ = 23 };

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

/* The caller's stack pointer, as seen from a call made here: a method whose convention is not
 * the one declared (cdecl where __stdcall is due: the callee does not pop its arguments)
 * leaves it moved, which -O0 code would otherwise survive unnoticed. */
static uintptr_t __attribute__((noinline)) stack_pointer(void) {
    return (uintptr_t)__builtin_frame_address(0);
}
#define BALANCED(order, what, call)                                                         \
    do {                                                                                    \
        uintptr_t sp0_ = stack_pointer();                                                   \
        call;                                                                               \
        uintptr_t sp1_ = stack_pointer();                                                   \
        CHECK(sp0_ == sp1_, "%s: %s leaves the stack as it was (moved %ld bytes)", order,   \
              what, (long)(sp0_ - sp1_));                                                  \
    } while (0)
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

/* ---- the host (IAddInDefBase): destructor, AddError, Read, Write, RegisterProfileAs,
 * SetEventBufferDepth, GetEventBufferDepth, ExternalEvent, CleanEventBuffer, SetStatusLine,
 * ResetStatusLine ---- */
typedef struct Host Host;
typedef struct {
    void *(THISCALL *destructor)(Host *, unsigned);
    bool (ADDIN_API *AddError)(Host *, unsigned short, const WCHAR_T *, const WCHAR_T *, long);
    bool (ADDIN_API *Read)(Host *, WCHAR_T *, void *, long *, WCHAR_T **);
    bool (ADDIN_API *Write)(Host *, WCHAR_T *, void *);
    bool (ADDIN_API *RegisterProfileAs)(Host *, WCHAR_T *);
    bool (ADDIN_API *SetEventBufferDepth)(Host *, long);
    long (ADDIN_API *GetEventBufferDepth)(Host *);
    bool (ADDIN_API *ExternalEvent)(Host *, WCHAR_T *, WCHAR_T *, WCHAR_T *);
    void (ADDIN_API *CleanEventBuffer)(Host *);
    bool (ADDIN_API *SetStatusLine)(Host *, WCHAR_T *);
    void (ADDIN_API *ResetStatusLine)(Host *);
} HostVtbl;
#define MAX_EVENTS 64
struct Host {
    const HostVtbl *vtbl;
    int errors;
    char last_error[512];
    CRITICAL_SECTION lock; /* events arrive on the add-in's worker threads */
    long depth;
    DWORD host_thread;
    int events;
    int late_events; /* events after teardown: must stay 0 */
    bool alive;
    char event_message[MAX_EVENTS][32];
    char event_data[MAX_EVENTS][512];
    bool event_on_worker[MAX_EVENTS];
};

static void *THISCALL host_destructor(Host *h, unsigned f) { (void)f; return h; }
static bool ADDIN_API host_add_error(Host *h, unsigned short code, const WCHAR_T *src, const WCHAR_T *descr, long scode) {
    (void)code; (void)src; (void)scode;
    h->errors++;
    WideCharToMultiByte(CP_UTF8, 0, (const wchar_t *)descr, -1, h->last_error, sizeof h->last_error, NULL, NULL);
    return true;
}
static bool ADDIN_API host_read(Host *h, WCHAR_T *n, void *v, long *e, WCHAR_T **d) { (void)h; (void)n; (void)v; (void)e; (void)d; return false; }
static bool ADDIN_API host_write(Host *h, WCHAR_T *n, void *v) { (void)h; (void)n; (void)v; return false; }
static bool ADDIN_API host_register_profile_as(Host *h, WCHAR_T *n) { (void)h; (void)n; return false; }
static bool ADDIN_API host_set_depth(Host *h, long depth) {
    EnterCriticalSection(&h->lock);
    h->depth = depth;
    LeaveCriticalSection(&h->lock);
    return true;
}
static long ADDIN_API host_get_depth(Host *h) {
    EnterCriticalSection(&h->lock);
    long depth = h->depth;
    LeaveCriticalSection(&h->lock);
    return depth;
}
static bool ADDIN_API host_external_event(Host *h, WCHAR_T *source, WCHAR_T *message, WCHAR_T *data) {
    EnterCriticalSection(&h->lock);
    bool ok = false;
    if (!h->alive) {
        h->late_events++;
    } else if (h->events < MAX_EVENTS) {
        char src[64];
        WideCharToMultiByte(CP_UTF8, 0, (const wchar_t *)source, -1, src, sizeof src, NULL, NULL);
        if (strcmp(src, "OPI_OpenAI") == 0) {
            int i = h->events++;
            WideCharToMultiByte(CP_UTF8, 0, (const wchar_t *)message, -1, h->event_message[i], sizeof h->event_message[i], NULL, NULL);
            WideCharToMultiByte(CP_UTF8, 0, (const wchar_t *)data, -1, h->event_data[i], sizeof h->event_data[i], NULL, NULL);
            h->event_on_worker[i] = GetCurrentThreadId() != h->host_thread;
            ok = true;
        }
    }
    LeaveCriticalSection(&h->lock);
    return ok;
}
static void ADDIN_API host_clean_event_buffer(Host *h) { (void)h; }
static bool ADDIN_API host_set_status_line(Host *h, WCHAR_T *l) { (void)h; (void)l; return false; }
static void ADDIN_API host_reset_status_line(Host *h) { (void)h; }
static const HostVtbl HOST_VTBL = {
    host_destructor, host_add_error, host_read, host_write, host_register_profile_as, host_set_depth,
    host_get_depth, host_external_event, host_clean_event_buffer, host_set_status_line, host_reset_status_line,
};

static void host_init(Host *h) {
    memset(h, 0, sizeof *h);
    h->vtbl = &HOST_VTBL;
    InitializeCriticalSection(&h->lock);
    h->depth = 1;
    h->host_thread = GetCurrentThreadId();
    h->alive = true;
}

/* Waits up to `ms` for a done or failed event naming job `id`; returns its index, or -1. */
static int wait_final_event(Host *h, const char *id, int ms) {
    char tag[64];
    snprintf(tag, sizeof tag, "\"job\":\"%s\"", id);
    for (int waited = 0; waited <= ms; waited += 5) {
        int found = -1;
        EnterCriticalSection(&h->lock);
        for (int i = 0; i < h->events; i++) {
            if (strstr(h->event_data[i], tag) &&
                (strcmp(h->event_message[i], "done") == 0 || strcmp(h->event_message[i], "failed") == 0)) {
                found = i;
            }
        }
        LeaveCriticalSection(&h->lock);
        if (found >= 0) return found;
        Sleep(5);
    }
    return -1;
}

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


static double now_ms(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart * 1000.0 / (double)f.QuadPart;
}

/* Threads of this process, to show that no worker thread is left behind. */
static int thread_count(void) {
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
    if (snap == INVALID_HANDLE_VALUE) return -1;
    THREADENTRY32 t;
    t.dwSize = sizeof t;
    int n = 0;
    DWORD pid = GetCurrentProcessId();
    if (Thread32First(snap, &t)) {
        do {
            if (t.th32OwnerProcessID == pid) n++;
        } while (Thread32Next(snap, &t));
    }
    CloseHandle(snap);
    return n;
}

/* The thread count once it has come down to `want`, waiting up to a second for that: a thread
 * already joined can stay listed for a moment while the system reaps it. A thread left running
 * stays listed. */
static int settled_thread_count(int want) {
    int n = thread_count();
    for (int i = 0; i < 100 && n != want; i++) {
        Sleep(10);
        n = thread_count();
    }
    return n;
}

static void set_number(tVariant *v, double d) {
    memset(v, 0, sizeof *v);
    v->vt = VT_R8_;
    v->u.dblVal = d;
}

static void free_params(tVariant *p, int n) {
    for (int i = 0; i < n; i++) {
        if (p[i].vt == VT_PWSTR_) free(p[i].u.w.pwstrVal);
        memset(&p[i], 0, sizeof p[i]);
    }
}

/* Calls method `name`: a String value goes to `out` as UTF-8, a Boolean to *flag; returns
 * CallAsFunc's answer. A refused call's value (the error JSON) goes to `out` too. */
static bool call_method(const LanguageExtenderVtbl *lang, void *lang_if, MemoryManager *mem, const wchar_t *name,
                        tVariant *params, long n, char *out, int out_size, bool *flag) {
    long m = lang->FindMethod(lang_if, (const WCHAR_T *)name);
    tVariant ret;
    memset(&ret, 0, sizeof ret);
    bool ok = lang->CallAsFunc(lang_if, m, &ret, params, n);
    if (out) out[0] = 0;
    if (ret.vt == VT_PWSTR_) {
        if (out) to_utf8(ret.u.w.pwstrVal, out, out_size);
        mem->vtbl->FreeMemory(mem, (void **)&ret.u.w.pwstrVal);
    }
    if (ret.vt == VT_BOOL_ && flag) *flag = ret.u.bVal;
    return ok;
}

/* Asynchronous jobs, as the C++ host checks them on Linux. */
static void jobs(Host *host, MemoryManager *mem, const LanguageExtenderVtbl *lang, void *lang_if, const char *url,
                 const char *order) {
    static char out[1 << 16], sync[1 << 16];
    char base[512], id[64], id2[64], tag[64];
    tVariant p[6], w[2], j[1];
    bool flag = false;

    snprintf(base, sizeof base, "%sslow/", url);
    set_text(&p[0], base);
    set_text(&p[1], "sk-windows-test");
    set_text(&p[2], "dall-e-3");
    set_text(&p[3], "{'prompt':'Windows alpaca','n':1}");
    double t0 = now_ms();
    bool ok = call_method(lang, lang_if, mem, L"StartGetImages", p, 4, id, sizeof id, NULL);
    double ms = now_ms() - t0;
    printf("figure %s: StartGetImages returned in %.3f ms (the server takes 1000 ms)\n", order, ms);
    CHECK(ok && id[0], "%s: StartGetImages returns a job id (%s)", order, id);
    CHECK(ms < 500, "%s: StartGetImages returns at once (%.3f ms)", order, ms);
    CHECK(host_get_depth(host) >= 64, "%s: the event buffer depth was raised (%ld)", order, host_get_depth(host));
    set_text(&w[0], id);
    set_number(&w[1], 0.05);
    flag = true;
    CHECK(call_method(lang, lang_if, mem, L"WaitJob", w, 2, NULL, 0, &flag) && !flag,
          "%s: WaitJob with a 50 ms timeout is false while the server works", order);
    set_number(&w[1], 30);
    CHECK(call_method(lang, lang_if, mem, L"ОжидатьЗадание", w, 2, NULL, 0, &flag) && flag,
          "%s: WaitJob is true once the job is done", order);
    int e = wait_final_event(host, id, 20000);
    CHECK(e >= 0 && strcmp(host->event_message[e], "done") == 0 && host->event_on_worker[e],
          "%s: done arrived through ExternalEvent from the worker thread (%s)", order, e >= 0 ? host->event_data[e] : "");
    set_text(&j[0], id);
    CHECK(call_method(lang, lang_if, mem, L"JobResult", j, 1, out, sizeof out, NULL) && strstr(out, "b64_json"),
          "%s: JobResult returns the images", order);
    free_params(j, 1);
    CHECK(call_method(lang, lang_if, mem, L"GetImages", p, 4, sync, sizeof sync, NULL), "%s: GetImages", order);
    const char *a = strstr(out, "\"data\""), *b = strstr(sync, "\"data\"");
    CHECK(a && b && strcmp(a, b) == 0, "%s: JobResult equals GetImages for the same request (apart from created)", order);

    /* CancelJob on a job waiting for a server that does not answer. */
    free(p[0].u.w.pwstrVal);
    snprintf(base, sizeof base, "%shang/", url);
    set_text(&p[0], base);
    CHECK(call_method(lang, lang_if, mem, L"StartGetImages", p, 4, id2, sizeof id2, NULL), "%s: a job on a silent server", order);
    set_text(&j[0], id2);
    t0 = now_ms();
    CHECK(call_method(lang, lang_if, mem, L"CancelJob", j, 1, NULL, 0, &flag) && flag, "%s: CancelJob is true", order);
    free_params(w, 2);
    set_text(&w[0], id2);
    set_number(&w[1], 10);
    CHECK(call_method(lang, lang_if, mem, L"WaitJob", w, 2, NULL, 0, &flag) && flag, "%s: the cancelled job finishes", order);
    ms = now_ms() - t0;
    printf("figure %s: a cancelled job finished %.1f ms after CancelJob\n", order, ms);
    e = wait_final_event(host, id2, 10000);
    CHECK(e >= 0 && strcmp(host->event_message[e], "failed") == 0 && strstr(host->event_data[e], "cancelled"),
          "%s: a cancelled job sends failed (%s)", order, e >= 0 ? host->event_data[e] : "");
    free_params(j, 1);
    free_params(w, 2);

    /* A streaming job: partial_image events in order, then done. */
    free(p[0].u.w.pwstrVal);
    free(p[3].u.w.pwstrVal);
    snprintf(base, sizeof base, "%sstream/", url);
    set_text(&p[0], base);
    set_text(&p[3], "{'prompt':'Windows alpaca','partial_images':3}");
    CHECK(call_method(lang, lang_if, mem, L"StartGetImages", p, 4, id, sizeof id, NULL), "%s: a streaming job", order);
    wait_final_event(host, id, 20000);
    char sequence[256] = "";
    snprintf(tag, sizeof tag, "\"job\":\"%s\"", id);
    EnterCriticalSection(&host->lock);
    for (int i = 0; i < host->events; i++) {
        if (strstr(host->event_data[i], tag)) {
            strncat(sequence, host->event_message[i], sizeof sequence - strlen(sequence) - 2);
            strcat(sequence, " ");
        }
    }
    LeaveCriticalSection(&host->lock);
    CHECK(strcmp(sequence, "partial_image partial_image partial_image done ") == 0,
          "%s: partial images in order, then done: %s", order, sequence);
    set_text(&j[0], id);
    CHECK(call_method(lang, lang_if, mem, L"JobResult", j, 1, out, sizeof out, NULL) && strstr(out, "\"data\""),
          "%s: the streaming job's result", order);
    free_params(j, 1);

    /* A wrong type: false, AddError, and the error JSON as the value (for OneScript). */
    free(p[0].u.w.pwstrVal);
    memset(&p[0], 0, sizeof p[0]);
    p[0].vt = VT_I4_;
    CHECK(!call_method(lang, lang_if, mem, L"StartGetImages", p, 4, out, sizeof out, NULL) &&
              strstr(out, "\"param\":\"url\"") && strstr(out, "invalid_argument"),
          "%s: a refused argument's value is the error JSON: %s", order, out);
    free_params(p, 4);

    /* A job still in flight when the component is torn down. */
    snprintf(base, sizeof base, "%shang/", url);
    set_text(&p[0], base);
    set_text(&p[3], "{'prompt':'Windows alpaca'}");
    CHECK(call_method(lang, lang_if, mem, L"StartGetImages", p, 4, id, sizeof id, NULL), "%s: a job in flight", order);
    free_params(p, 4);
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
    static Host host;
    host_init(&host);
    int threads = thread_count();
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
    long info = 0;
    BALANCED(order, "GetInfo", info = init->GetInfo(init_if));
    CHECK(info == 2000, "%s: GetInfo is 2000", order);
    locale->SetLocale(locale_if, (const WCHAR_T *)L"ru_RU");

    WCHAR_T *name = NULL;
    CHECK(lang->RegisterExtensionAs(lang_if, &name) && name, "%s: RegisterExtensionAs", order);
    to_utf8(name, text, sizeof text);
    CHECK(strcmp(text, "Main") == 0, "%s: extension name \"%s\"", order, text);
    mem.vtbl->FreeMemory(&mem, (void **)&name);

    long m = -1;
    BALANCED(order, "FindMethod", m = lang->FindMethod(lang_if, (const WCHAR_T *)L"getimages"));
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
    bool called = false;
    BALANCED(order, "CallAsFunc", called = lang->CallAsFunc(lang_if, m, &ret, params, 5));
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

    jobs(&host, &mem, lang, lang_if, url, order);

    double t0 = now_ms();
    init->Done(init_if);
    if (onescript_order) {
        (*(const InitDoneVtbl **)obj)->destructor(obj, 1); /* delete through the virtual destructor */
    } else {
        CHECK(DestroyObject(&obj) == 0 && obj == NULL, "%s: DestroyObject", order);
    }
    double ms = now_ms() - t0;
    EnterCriticalSection(&host.lock);
    host.alive = false;
    LeaveCriticalSection(&host.lock);
    printf("figure %s: teardown with a job in flight took %.1f ms\n", order, ms);
    CHECK(ms < 5000, "%s: teardown cancels the job in flight at once (%.1f ms)", order, ms);
    int left = settled_thread_count(threads);
    CHECK(left == threads, "%s: no worker thread left behind (%d, was %d)", order, left, threads);
    Sleep(50);
    CHECK(host.late_events == 0, "%s: no event after teardown", order);
    CHECK(mem.live == 0, "%s: host allocations back to zero (%ld live)", order, mem.live);
    DeleteCriticalSection(&host.lock);
}

/* create/Init/Done/destroy cycles in one process: host allocations back to zero. */
static void cycles(HMODULE dll, int n) {
    GetClassObjectFn GetClassObject = (GetClassObjectFn)(void (*)(void))GetProcAddress(dll, "GetClassObject");
    DestroyObjectFn DestroyObject = (DestroyObjectFn)(void (*)(void))GetProcAddress(dll, "DestroyObject");
    MemoryManager mem = { &MM_VTBL, 0 };
    static Host host;
    host_init(&host);
    int good = 0, threads = thread_count();
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        void *obj = NULL;
        if (!GetClassObject((const WCHAR_T *)L"Main", &obj) || !obj) break;
        void *init_if = obj, *lang_if = (char *)obj + sizeof(void *);
        const InitDoneVtbl *init = *(const InitDoneVtbl **)init_if;
        const LanguageExtenderVtbl *lang = *(const LanguageExtenderVtbl **)lang_if;
        bool ok = init->Init(init_if, &host) && init->setMemManager(init_if, &mem);
        WCHAR_T *name = NULL;
        ok = ok && lang->RegisterExtensionAs(lang_if, &name) && name;
        if (name) mem.vtbl->FreeMemory(&mem, (void **)&name);
        tVariant blob;
        memset(&blob, 0, sizeof blob);
        ok = ok && lang->GetPropVal(lang_if, lang->FindProp(lang_if, (const WCHAR_T *)L"LastResult"), &blob) &&
             blob.vt == VT_BLOB_ && blob.u.s.pstrVal != NULL && blob.u.s.strLen == 0;
        if (blob.vt == VT_BLOB_) mem.vtbl->FreeMemory(&mem, (void **)&blob.u.s.pstrVal);
        init->Done(init_if);
        if (i % 2) {
            ok = ok && DestroyObject(&obj) == 0;
        } else {
            (*(const InitDoneVtbl **)obj)->destructor(obj, 1);
        }
        if (ok) good++;
    }
    printf("figure cycles: %d create/Init/Done/destroy cycles in %.0f ms\n", n, now_ms() - t0);
    CHECK(good == n, "cycles: %d of %d clean (LastResult before any call is an empty BinaryData, never NULL)", good, n);
    CHECK(mem.live == 0, "cycles: host allocations back to zero (%ld live)", mem.live);
    CHECK(settled_thread_count(threads) == threads, "cycles: no thread left behind");
    DeleteCriticalSection(&host.lock);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    HMODULE dll = LoadLibraryA(argv[1]);
    CHECK(dll != NULL, "LoadLibrary %s", argv[1]);
    if (!dll) return 1;
    scenario(dll, argv[2], false);
    cycles(dll, 1000);
    scenario(dll, argv[2], true);
    FreeLibrary(dll);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
