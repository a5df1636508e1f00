// A 1C Native API host of our own, for tests: it loads the add-in the way 1C:Enterprise and
// OneScript do and checks every interface entry, so that g++'s own vtable layout checks the
// Rust side. The declarations below are written from the Native API's published description
// (not copied from 1C's headers).
//
// Usage: host LIBRARY URL OUT_DIR VERSION [--keep-loaded] [--cycles N]
//   LIBRARY  path of libopi_openai.so
//   URL      base URL of the local test server (answers like an image API; URL + "big/"
//            answers a JSON body of more than 1 MiB, URL + "slow/" answers after 1 s,
//            URL + "hang/" does not answer for 20 s)
//   OUT_DIR  where each scenario's results are written, for the Rust test to parse
//   VERSION  the crate's version, which Version must return
//   --keep-loaded  skip the final dlclose. For valgrind: the library keeps process-wide caches
//            (the HTTP agents) in statics, which are reachable while it is loaded and look
//            "definitely lost" once it is unmapped; 1C and OneScript keep add-ins loaded.
//   --cycles N  create/Init/Done/destroy cycles in one process (default 1000)
//   --panic-probe  only check that panics (a debug build's probe) become internal errors
// Prints one line per check ("ok - ..." or "FAIL - ..."); exits 0 only when all pass.

#include <dirent.h>
#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

typedef char16_t WCHAR_T;

// ---- Our declarations of the Native API --------------------------------------------------

enum : uint16_t {
    VTYPE_EMPTY = 0, VTYPE_NULL = 1, VTYPE_I2 = 2, VTYPE_I4 = 3, VTYPE_R4 = 4, VTYPE_R8 = 5,
    VTYPE_DATE = 6, VTYPE_TM = 7, VTYPE_PSTR = 8, VTYPE_INTERFACE = 9, VTYPE_ERROR = 10,
    VTYPE_BOOL = 11, VTYPE_VARIANT = 12, VTYPE_I1 = 13, VTYPE_UI1 = 14, VTYPE_UI2 = 15,
    VTYPE_UI4 = 16, VTYPE_I8 = 17, VTYPE_UI8 = 18, VTYPE_INT = 19, VTYPE_UINT = 20,
    VTYPE_HRESULT = 21, VTYPE_PWSTR = 22, VTYPE_BLOB = 23, VTYPE_CLSID = 24
};

struct Guid { uint32_t d1; uint16_t d2; uint16_t d3; uint8_t d4[8]; };

struct tVariant {
    union {
        int8_t i8Val; int16_t shortVal; int32_t lVal; int32_t intVal; uint32_t uintVal;
        int64_t llVal; uint8_t ui8Val; uint16_t ushortVal; uint32_t ulVal; uint64_t ullVal;
        int32_t errCode; long hRes; float fltVal; double dblVal; bool bVal; char chVal;
        double date; Guid IDVal; tVariant* pvarVal; struct tm tmVal;
        struct { void* ptr; Guid iid; } iface;
        struct { char* ptr; uint32_t len; } str;     // PSTR, BLOB: len in bytes
        struct { WCHAR_T* ptr; uint32_t len; } wstr; // PWSTR: len in UTF-16 units
    };
    uint32_t cbElements;
    uint16_t vt;
};
#if defined(__x86_64__)
static_assert(sizeof(tVariant) == 64, "tVariant is 64 bytes on Linux x86_64");
static_assert(offsetof(tVariant, vt) == 60, "vt is at 60 on Linux x86_64");
#elif defined(__i386__)
// g++ -m32: struct tm is 44 bytes and 8-byte members are 4-aligned (System V i386).
static_assert(sizeof(tVariant) == 52, "tVariant is 52 bytes on Linux x86");
static_assert(offsetof(tVariant, vt) == 48, "vt is at 48 on Linux x86");
#endif

class IMemoryManager {
public:
    virtual ~IMemoryManager() {}
    virtual bool AllocMemory(void** memory, unsigned long bytes) = 0;
    virtual void FreeMemory(void** memory) = 0;
};

class IAddInDefBase {
public:
    virtual ~IAddInDefBase() {}
    virtual bool AddError(unsigned short code, const WCHAR_T* source, const WCHAR_T* descr, long scode) = 0;
    virtual bool Read(WCHAR_T* name, tVariant* value, long* error, WCHAR_T** description) = 0;
    virtual bool Write(WCHAR_T* name, tVariant* value) = 0;
    virtual bool RegisterProfileAs(WCHAR_T* name) = 0;
    virtual bool SetEventBufferDepth(long depth) = 0;
    virtual long GetEventBufferDepth() = 0;
    virtual bool ExternalEvent(WCHAR_T* source, WCHAR_T* message, WCHAR_T* data) = 0;
    virtual void CleanEventBuffer() = 0;
    virtual bool SetStatusLine(WCHAR_T* line) = 0;
    virtual void ResetStatusLine() = 0;
};

class IInitDoneBase {
public:
    virtual ~IInitDoneBase() {}
    virtual bool Init(void* host) = 0;
    virtual bool setMemManager(void* memory) = 0;
    virtual long GetInfo() = 0;
    virtual void Done() = 0;
};

class ILanguageExtenderBase {
public:
    virtual ~ILanguageExtenderBase() {}
    virtual bool RegisterExtensionAs(WCHAR_T** name) = 0;
    virtual long GetNProps() = 0;
    virtual long FindProp(const WCHAR_T* name) = 0;
    virtual const WCHAR_T* GetPropName(long num, long alias) = 0;
    virtual bool GetPropVal(const long num, tVariant* value) = 0;
    virtual bool SetPropVal(const long num, tVariant* value) = 0;
    virtual bool IsPropReadable(const long num) = 0;
    virtual bool IsPropWritable(const long num) = 0;
    virtual long GetNMethods() = 0;
    virtual long FindMethod(const WCHAR_T* name) = 0;
    virtual const WCHAR_T* GetMethodName(const long num, const long alias) = 0;
    virtual long GetNParams(const long num) = 0;
    virtual bool GetParamDefValue(const long method, const long param, tVariant* value) = 0;
    virtual bool HasRetVal(const long num) = 0;
    virtual bool CallAsProc(const long num, tVariant* params, const long count) = 0;
    virtual bool CallAsFunc(const long num, tVariant* ret, tVariant* params, const long count) = 0;
};

class LocaleBase {
public:
    virtual ~LocaleBase() {}
    virtual void SetLocale(const WCHAR_T* locale) = 0;
};

class UserLanguageBase {
public:
    virtual ~UserLanguageBase() {}
    virtual void SetUserInterfaceLanguageCode(const WCHAR_T* code) = 0;
};

class IComponentBase : public IInitDoneBase, public ILanguageExtenderBase, public LocaleBase,
                       public UserLanguageBase {
public:
    virtual ~IComponentBase() {}
};

typedef const WCHAR_T* (*GetClassNamesFn)();
typedef long (*GetClassObjectFn)(const WCHAR_T*, IComponentBase**);
typedef long (*DestroyObjectFn)(IComponentBase**);
typedef int (*SetPlatformCapabilitiesFn)(int);
typedef int (*GetAttachTypeFn)();

// ---- Checks and text ---------------------------------------------------------------------

static int failures = 0;
static std::string scenario = "setup";
static std::mutex check_lock;  // checks may run on the add-in's worker threads

static void check(bool ok, const char* format, ...) {
    char text[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    std::lock_guard<std::mutex> guard(check_lock);
    printf("%s - [%s] %s\n", ok ? "ok" : "FAIL", scenario.c_str(), text);
    if (!ok) failures++;
}

static double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Threads of this process (/proc/self/task), to show that no worker thread is left behind.
static int thread_count() {
    int n = 0;
    if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] != '.') n++;
        }
        closedir(d);
    }
    return n;
}

// The thread count once it has come down to `want`, waiting up to a second for that: a thread
// already joined can stay listed in /proc/self/task for a moment (pthread_join returns when the
// kernel clears its tid, before the kernel reaps it). A thread left running stays listed.
static int settled_thread_count(int want) {
    int n = thread_count();
    for (int i = 0; i < 100 && n != want; i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        n = thread_count();
    }
    return n;
}

static std::string utf8(const std::u16string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        uint32_t c = s[i];
        if (c >= 0xD800 && c < 0xDC00 && i + 1 < s.size() && s[i + 1] >= 0xDC00 && s[i + 1] < 0xE000) {
            c = 0x10000 + ((c - 0xD800) << 10) + (s[i + 1] - 0xDC00);
            i++;
        }
        if (c < 0x80) {
            out += char(c);
        } else if (c < 0x800) {
            out += char(0xC0 | (c >> 6));
            out += char(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out += char(0xE0 | (c >> 12));
            out += char(0x80 | ((c >> 6) & 0x3F));
            out += char(0x80 | (c & 0x3F));
        } else {
            out += char(0xF0 | (c >> 18));
            out += char(0x80 | ((c >> 12) & 0x3F));
            out += char(0x80 | ((c >> 6) & 0x3F));
            out += char(0x80 | (c & 0x3F));
        }
    }
    return out;
}

static std::u16string ascii16(const std::string& s) {
    return std::u16string(s.begin(), s.end());
}

static std::u16string cstr16(const WCHAR_T* p) {
    return p ? std::u16string(p) : std::u16string();
}

static bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

// ---- The host side: memory manager and connection ----------------------------------------

// Counts every allocation the add-in makes through the host; frees must match exactly.
class CountingMemory : public IMemoryManager {
public:
    std::set<void*> live;
    size_t allocations = 0;
    size_t foreign_frees = 0;
    bool refuse_next = false;

    bool AllocMemory(void** memory, unsigned long bytes) override {
        if (refuse_next) {
            refuse_next = false;
            *memory = nullptr;
            return false;
        }
        *memory = malloc(bytes ? bytes : 1);
        if (!*memory) return false;
        live.insert(*memory);
        allocations++;
        return true;
    }

    void FreeMemory(void** memory) override {
        if (!*memory) return;
        if (live.erase(*memory) == 0) {
            foreign_frees++;  // not ours: leave it alone rather than corrupt the heap
        } else {
            free(*memory);
        }
        *memory = nullptr;
    }
};

struct Event {
    std::string source, message, data;
    bool on_host_thread;
    bool file_existed;  // the data's "file" existed when the event arrived
};

// The string value of `key` in a flat JSON object (no escapes expected), or "".
static std::string json_string(const std::string& json, const std::string& key) {
    std::string tag = "\"" + key + "\":\"";
    size_t at = json.find(tag);
    if (at == std::string::npos) return "";
    at += tag.size();
    return json.substr(at, json.find('"', at) - at);
}

static bool file_exists(const std::string& path) {
    FILE* f = path.empty() ? nullptr : fopen(path.c_str(), "rb");
    if (f) fclose(f);
    return f != nullptr;
}

class TestHost : public IAddInDefBase {
public:
    std::vector<std::u16string> errors;
    std::vector<long> scodes;
    std::thread::id host_thread = std::this_thread::get_id();
    // External events, recorded from any thread.
    std::mutex events_lock;
    std::vector<Event> events;
    long depth = 1;           // 1C's default event buffer depth is small
    long depth_sets = 0;
    std::atomic<bool> alive{true};     // false once the component was torn down
    std::atomic<int> late_events{0};   // events after that: must stay 0

    bool AddError(unsigned short code, const WCHAR_T* source, const WCHAR_T* descr, long scode) override {
        errors.push_back(cstr16(descr));
        scodes.push_back(scode);
        check(code >= 1000 && code <= 1009, "AddError code %u is an ADDIN_E_* code", code);
        check(cstr16(source) == u"OPI_OpenAI", "AddError source is OPI_OpenAI");
        return true;
    }
    bool Read(WCHAR_T*, tVariant*, long*, WCHAR_T**) override { return false; }
    bool Write(WCHAR_T*, tVariant*) override { return false; }
    bool RegisterProfileAs(WCHAR_T*) override { return false; }
    bool SetEventBufferDepth(long d) override {
        std::lock_guard<std::mutex> guard(events_lock);
        depth = d;
        depth_sets++;
        return true;
    }
    long GetEventBufferDepth() override {
        std::lock_guard<std::mutex> guard(events_lock);
        return depth;
    }
    bool ExternalEvent(WCHAR_T* source, WCHAR_T* message, WCHAR_T* data) override {
        if (!alive) {
            late_events++;
            return false;
        }
        std::string text = utf8(cstr16(data));
        Event e{utf8(cstr16(source)), utf8(cstr16(message)), text, std::this_thread::get_id() == host_thread,
                file_exists(json_string(text, "file"))};
        std::lock_guard<std::mutex> guard(events_lock);
        events.push_back(e);
        return true;
    }
    // The events whose data names job `id`, in arrival order.
    std::vector<Event> events_of(const std::string& id) {
        std::lock_guard<std::mutex> guard(events_lock);
        std::vector<Event> out;
        for (const Event& e : events) {
            if (contains(e.data, "\"job\":\"" + id + "\"")) out.push_back(e);
        }
        return out;
    }
    // Waits up to `ms` for job `id`'s final event (done or failed); returns its events.
    std::vector<Event> wait_final_event(const std::string& id, int ms = 20000) {
        auto start = std::chrono::steady_clock::now();
        for (;;) {
            std::vector<Event> evs = events_of(id);
            if (!evs.empty() && (evs.back().message == "done" || evs.back().message == "failed")) return evs;
            if (ms_since(start) > ms) return evs;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    void CleanEventBuffer() override {}
    bool SetStatusLine(WCHAR_T*) override { return false; }
    void ResetStatusLine() override {}

    std::string last_error() const { return errors.empty() ? std::string() : utf8(errors.back()); }
};

// ---- Variants ----------------------------------------------------------------------------

static tVariant empty_variant() {
    tVariant v;
    memset(&v, 0, sizeof v);
    v.vt = VTYPE_EMPTY;
    return v;
}

// Parameters as 1C passes them: strings in host memory, freed by the host after the call.
class Params {
public:
    Params(CountingMemory& memory) : memory_(memory) {}
    ~Params() {
        for (tVariant& v : values) {
            if (v.vt == VTYPE_PWSTR) memory_.FreeMemory(reinterpret_cast<void**>(&v.wstr.ptr));
            if (v.vt == VTYPE_BLOB || v.vt == VTYPE_PSTR) memory_.FreeMemory(reinterpret_cast<void**>(&v.str.ptr));
        }
    }
    Params& raw(const tVariant& v) {
        values.push_back(v);
        return *this;
    }
    Params& blob(const std::string& bytes) {
        tVariant v = empty_variant();
        void* p = nullptr;
        memory_.AllocMemory(&p, bytes.size());
        memcpy(p, bytes.data(), bytes.size());
        v.vt = VTYPE_BLOB;
        v.str.ptr = static_cast<char*>(p);
        v.str.len = uint32_t(bytes.size());
        values.push_back(v);
        return *this;
    }
    Params& text(const std::u16string& s) {
        tVariant v = empty_variant();
        void* p = nullptr;
        memory_.AllocMemory(&p, (s.size() + 1) * sizeof(WCHAR_T));
        memcpy(p, s.c_str(), (s.size() + 1) * sizeof(WCHAR_T));
        v.vt = VTYPE_PWSTR;
        v.wstr.ptr = static_cast<WCHAR_T*>(p);
        v.wstr.len = uint32_t(s.size());
        values.push_back(v);
        return *this;
    }
    Params& text(const std::string& ascii) { return text(ascii16(ascii)); }
    Params& empty() {
        values.push_back(empty_variant());
        return *this;
    }
    Params& i4(int32_t n) {
        tVariant v = empty_variant();
        v.vt = VTYPE_I4;
        v.lVal = n;
        values.push_back(v);
        return *this;
    }
    Params& r8(double d) {
        tVariant v = empty_variant();
        v.vt = VTYPE_R8;
        v.dblVal = d;
        values.push_back(v);
        return *this;
    }
    Params& boolean(bool b) {
        tVariant v = empty_variant();
        v.vt = VTYPE_BOOL;
        v.bVal = b;
        values.push_back(v);
        return *this;
    }
    tVariant* data() { return values.empty() ? nullptr : values.data(); }
    long count() const { return long(values.size()); }
    std::vector<tVariant> values;

private:
    CountingMemory& memory_;
};

// Takes a returned value: its text (PWSTR as UTF-8, BLOB as bytes), freeing its memory.
static std::string take(CountingMemory& memory, tVariant& v) {
    std::string out;
    if (v.vt == VTYPE_PWSTR) {
        check(v.wstr.ptr != nullptr, "a returned String has memory");
        if (v.wstr.ptr) {
            check(v.wstr.ptr[v.wstr.len] == 0, "a returned String is NUL-terminated at wstrLen");
            check(memory.live.count(v.wstr.ptr) == 1, "a returned String was allocated by the host");
            out = utf8(std::u16string(v.wstr.ptr, v.wstr.len));
            memory.FreeMemory(reinterpret_cast<void**>(&v.wstr.ptr));
        }
    } else if (v.vt == VTYPE_BLOB) {
        check(v.str.ptr != nullptr, "a returned BinaryData is never a NULL pointer (OneScript's Marshal.Copy)");
        if (v.str.ptr) {
            check(memory.live.count(v.str.ptr) == 1, "a returned BinaryData was allocated by the host");
            out.assign(v.str.ptr, v.str.len);
        }
        memory.FreeMemory(reinterpret_cast<void**>(&v.str.ptr));
    }
    v = empty_variant();
    return out;
}

// Takes a returned name (GetMethodName, GetPropName, RegisterExtensionAs).
static std::u16string take_name(CountingMemory& memory, const WCHAR_T* name) {
    if (!name) return std::u16string();
    check(memory.live.count(const_cast<WCHAR_T*>(name)) == 1, "a returned name was allocated by the host");
    std::u16string out(name);
    void* p = const_cast<WCHAR_T*>(name);
    memory.FreeMemory(&p);
    return out;
}

// ---- What the add-in must declare --------------------------------------------------------

enum Default { REQUIRED, EMPTY_STRING, ZERO };
enum Kind { TEXT, NUMBER };

struct ExpectedMethod {
    const char16_t* en;
    const char16_t* ru;
    const char16_t* en_other_case;
    const char16_t* ru_other_case;
    std::vector<Default> params;
    // Each parameter's kind and the C API's name for it (the error result's "param").
    std::vector<std::pair<Kind, const char*>> kinds;
};

static const std::vector<std::pair<Kind, const char*>> IMAGE_PARAMS = {
    {TEXT, "url"}, {TEXT, "token"}, {TEXT, "model"}, {TEXT, "descr"}, {TEXT, "headers"}, {TEXT, "options"}};

static const std::vector<ExpectedMethod> methods = {
    {u"GetImages", u"ПолучитьКартинки", u"GETIMAGES", u"получитькартинки",
     {REQUIRED, EMPTY_STRING, EMPTY_STRING, REQUIRED, EMPTY_STRING},
     {IMAGE_PARAMS.begin(), IMAGE_PARAMS.begin() + 5}},
    {u"GetImagesEx", u"ПолучитьКартинкиРасш", u"getimagesex", u"ПОЛУЧИТЬКАРТИНКИРАСШ",
     {REQUIRED, EMPTY_STRING, EMPTY_STRING, REQUIRED, EMPTY_STRING, EMPTY_STRING}, IMAGE_PARAMS},
    {u"GetImageDescriptionStructure", u"ПолучитьСтруктуруОписанияКартинок",
     u"getimagedescriptionstructure", u"ПОЛУЧИТЬСТРУКТУРУОПИСАНИЯКАРТИНОК",
     {REQUIRED, ZERO, EMPTY_STRING, EMPTY_STRING, EMPTY_STRING},
     {{TEXT, "prompt"}, {NUMBER, "count"}, {TEXT, "background"}, {TEXT, "size"}, {TEXT, "additional"}}},
    {u"Version", u"Версия", u"VERSION", u"версия", {}, {}},
    {u"StartGetImages", u"НачатьПолучениеКартинок", u"startgetimages", u"НАЧАТЬПОЛУЧЕНИЕКАРТИНОК",
     {REQUIRED, EMPTY_STRING, EMPTY_STRING, REQUIRED, EMPTY_STRING, EMPTY_STRING}, IMAGE_PARAMS},
    {u"JobResult", u"РезультатЗадания", u"JOBRESULT", u"результатзадания", {REQUIRED}, {{TEXT, "job_id"}}},
    {u"WaitJob", u"ОжидатьЗадание", u"waitjob", u"ОЖИДАТЬЗАДАНИЕ", {REQUIRED, REQUIRED},
     {{TEXT, "job_id"}, {NUMBER, "timeout"}}},
    {u"CancelJob", u"ОтменитьЗадание", u"CANCELJOB", u"отменитьзадание", {REQUIRED}, {{TEXT, "job_id"}}},
    {u"GetImagesBatch", u"ПолучитьКартинкиПакетом", u"getimagesbatch", u"ПОЛУЧИТЬКАРТИНКИПАКЕТОМ",
     {REQUIRED, EMPTY_STRING, EMPTY_STRING, REQUIRED, EMPTY_STRING, EMPTY_STRING},
     {{TEXT, "url"}, {TEXT, "token"}, {TEXT, "model"}, {TEXT, "descrs"}, {TEXT, "headers"}, {TEXT, "options"}}},
};

struct ExpectedProperty {
    const char16_t* en;
    const char16_t* ru;
    const char16_t* other_case;
    bool writable;
};

static const std::vector<ExpectedProperty> properties = {
    {u"Options", u"Опции", u"опции", true},
    {u"LastResult", u"ПоследнийРезультат", u"lastresult", false},
    {u"Version", u"Версия", u"ВЕРСИЯ", false},
};

static const char* TOKEN = "sk-addin-secret-7f3a9";

// ---- One scenario: create, initialise in a host's order, drive, tear down -----------------

struct Library {
    GetClassNamesFn get_class_names;
    GetClassObjectFn get_class_object;
    DestroyObjectFn destroy_object;
    SetPlatformCapabilitiesFn set_platform_capabilities;
    GetAttachTypeFn get_attach_type;
};

struct Context {
    Library lib;
    std::string url;
    std::string out_dir;
    std::string version;
};

static void save(const Context& ctx, const std::string& name, const std::string& text) {
    std::ofstream(ctx.out_dir + "/" + scenario + "-" + name + ".json", std::ios::binary) << text;
    check(!contains(text, TOKEN), "%s: the token does not appear in the result", name.c_str());
}

static long method(IComponentBase* c, const char16_t* name) { return c->FindMethod(name); }

// The value a refused call returned with its false (the error JSON, for OneScript), or "".
static std::string refusal;
// A partial image a streaming job wrote to the component's temporary folder.
static std::string stream_temp_file;

// Calls a method as a function; returns the text, or "<false>" when the call failed. A
// refused call returns the error JSON as its value too (kept in `refusal`).
static std::string call(CountingMemory& memory, IComponentBase* c, const char16_t* name, Params& params) {
    tVariant ret = empty_variant();
    bool ok = c->CallAsFunc(method(c, name), &ret, params.data(), params.count());
    if (!ok) {
        check(ret.vt == VTYPE_PWSTR || ret.vt == VTYPE_EMPTY, "a failed call's value is the error JSON or EMPTY");
        refusal = take(memory, ret);
        return "<false>";
    }
    check(ret.vt == VTYPE_PWSTR, "%s returns a String", utf8(name).c_str());
    return take(memory, ret);
}

// Calls a method returning a Boolean: 1 true, 0 false, -1 a failed call.
static int call_bool(CountingMemory& memory, IComponentBase* c, const char16_t* name, Params& params) {
    tVariant ret = empty_variant();
    bool ok = c->CallAsFunc(method(c, name), &ret, params.data(), params.count());
    if (!ok) {
        refusal = take(memory, ret);
        return -1;
    }
    check(ret.vt == VTYPE_BOOL, "%s returns a Boolean", utf8(name).c_str());
    return ret.vt == VTYPE_BOOL && ret.bVal ? 1 : 0;
}

static std::string last_result(CountingMemory& memory, IComponentBase* c) {
    tVariant v = empty_variant();
    bool ok = c->GetPropVal(c->FindProp(u"LastResult"), &v);
    check(ok && v.vt == VTYPE_BLOB, "LastResult is BinaryData");
    return take(memory, v);
}

static bool set_options(IComponentBase* c, Params& value) {
    return c->SetPropVal(c->FindProp(u"Options"), value.data());
}

static std::string get_options(CountingMemory& memory, IComponentBase* c) {
    tVariant v = empty_variant();
    check(c->GetPropVal(c->FindProp(u"Опции"), &v) && v.vt == VTYPE_PWSTR, "Options reads as a String");
    return take(memory, v);
}

static void enumerate(CountingMemory& memory, IComponentBase* c) {
    check(c->GetNMethods() == long(methods.size()), "GetNMethods is %zu", methods.size());
    for (size_t i = 0; i < methods.size(); i++) {
        const ExpectedMethod& m = methods[i];
        long n = long(i);
        std::string en = utf8(m.en);
        check(take_name(memory, c->GetMethodName(n, 0)) == m.en, "method %ld is %s in English", n, en.c_str());
        check(take_name(memory, c->GetMethodName(n, 1)) == m.ru, "method %ld is %s in Russian", n, utf8(m.ru).c_str());
        check(c->FindMethod(m.en) == n, "FindMethod(%s)", en.c_str());
        check(c->FindMethod(m.ru) == n, "FindMethod(%s)", utf8(m.ru).c_str());
        check(c->FindMethod(m.en_other_case) == n, "FindMethod(%s)", utf8(m.en_other_case).c_str());
        check(c->FindMethod(m.ru_other_case) == n, "FindMethod(%s)", utf8(m.ru_other_case).c_str());
        check(c->GetNParams(n) == long(m.params.size()), "%s has %zu parameters", en.c_str(), m.params.size());
        check(c->HasRetVal(n), "%s is a function", en.c_str());
        for (size_t p = 0; p < m.params.size(); p++) {
            tVariant v = empty_variant();
            bool has = c->GetParamDefValue(n, long(p), &v);
            switch (m.params[p]) {
            case REQUIRED:
                check(!has && v.vt == VTYPE_EMPTY, "%s parameter %zu is required", en.c_str(), p + 1);
                break;
            case EMPTY_STRING: {
                check(has && v.vt == VTYPE_PWSTR, "%s parameter %zu defaults to a String", en.c_str(), p + 1);
                check(take(memory, v).empty(), "%s parameter %zu defaults to \"\"", en.c_str(), p + 1);
                break;
            }
            case ZERO:
                check(has && v.vt == VTYPE_I4 && v.lVal == 0, "%s parameter %zu defaults to 0", en.c_str(), p + 1);
                break;
            }
        }
        tVariant v = empty_variant();
        check(!c->GetParamDefValue(n, long(m.params.size()), &v), "%s has no parameter beyond the last", en.c_str());
    }
    check(c->GetMethodName(long(methods.size()), 0) == nullptr, "no method beyond the last");
    check(c->GetMethodName(0, 2) == nullptr, "no alias 2");
    check(c->FindMethod(u"NoSuchMethod") == -1, "FindMethod of an unknown name is -1");
    check(c->GetNParams(99) == 0, "an unknown method has no parameters");

    check(c->GetNProps() == long(properties.size()), "GetNProps is %zu", properties.size());
    for (size_t i = 0; i < properties.size(); i++) {
        const ExpectedProperty& p = properties[i];
        long n = long(i);
        std::string en = utf8(p.en);
        check(take_name(memory, c->GetPropName(n, 0)) == p.en, "property %ld is %s in English", n, en.c_str());
        check(take_name(memory, c->GetPropName(n, 1)) == p.ru, "property %ld is %s in Russian", n, utf8(p.ru).c_str());
        check(c->FindProp(p.en) == n && c->FindProp(p.ru) == n && c->FindProp(p.other_case) == n,
              "FindProp finds %s by either name in any case", en.c_str());
        check(c->IsPropReadable(n), "%s is readable", en.c_str());
        check(c->IsPropWritable(n) == p.writable, "%s is %swritable", en.c_str(), p.writable ? "" : "not ");
    }
    check(c->FindProp(u"NoSuchProperty") == -1, "FindProp of an unknown name is -1");
    check(c->GetPropName(99, 0) == nullptr, "no property beyond the last");
}

static void drive(const Context& ctx, CountingMemory& memory, TestHost& host, IComponentBase* c) {
    const std::string descr = "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}";
    c->SetLocale(u"ru_RU");
    c->SetUserInterfaceLanguageCode(u"en");

    {
        tVariant v = empty_variant();
        check(c->GetPropVal(c->FindProp(u"Version"), &v) && take(memory, v) == ctx.version, "the Version property");
        Params none(memory);
        check(call(memory, c, u"Версия", none) == ctx.version, "Version() is %s", ctx.version.c_str());
        check(last_result(memory, c).empty(), "LastResult is empty before any GetImages");
    }
    {
        // PWSTR and EMPTY parameters, the way 1C passes a left-out trailing parameter.
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").text(descr).empty();
        std::string result = call(memory, c, u"GetImages", p);
        save(ctx, "get_images", result);
        check(contains(result, "\"b64_json\"") && !contains(result, "\"error\""), "GetImages returns the images JSON");
        check(last_result(memory, c) == result, "LastResult holds the same JSON as UTF-8 bytes");
    }
    {
        // The Russian name, a left-out (EMPTY) token, headers as JSON, and 1C's own Undefined.
        Params p(memory);
        p.text(ctx.url).empty().text("dall-e-3").text(descr).text("{\"X-Scenario\": \"" + scenario + "\"}");
        std::string result = call(memory, c, u"ПолучитьКартинки", p);
        save(ctx, "get_images_headers", result);
        check(contains(result, "\"b64_json\""), "GetImages with headers and no token returns images");
    }
    {
        // Only four parameters passed at all: the fifth is left out.
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").text(descr);
        std::string result = call(memory, c, u"getimages", p);
        check(contains(result, "\"b64_json\""), "GetImages with four parameters returns images");
    }
    {
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").text("not json at all").empty();
        std::string result = call(memory, c, u"GetImages", p);
        save(ctx, "bad_description", result);
        check(contains(result, "\"invalid_argument\""), "a bad description is an error result");
    }
    {
        // Wrong types: AddError names the parameter (in the interface language), the call fails.
        size_t errors = host.errors.size();
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").i4(42).empty();
        check(call(memory, c, u"GetImages", p) == "<false>", "a Number as Description fails the call");
        check(host.errors.size() == errors + 1, "AddError was called once");
        check(contains(host.last_error(), "Description"), "the error names Description: %s", host.last_error().c_str());
        check(host.scodes.back() != 0, "AddError asks 1C to raise an exception");
        // OneScript ignores the false and AddError: the value itself is the error JSON.
        check(contains(refusal, "\"invalid_argument\"") && contains(refusal, "\"param\":\"descr\""),
              "the refused call's value is the invalid_argument JSON naming descr: %s", refusal.c_str());
        check(last_result(memory, c) == refusal, "LastResult holds the refusal's JSON too");
        save(ctx, "refusal", refusal);

        c->SetUserInterfaceLanguageCode(u"ru");
        Params q(memory);
        q.text(ctx.url).boolean(true).text("dall-e-3").text(descr).empty();
        check(call(memory, c, u"ПолучитьКартинки", q) == "<false>", "a Boolean as Token fails the call");
        check(host.errors.size() == errors + 2, "AddError was called again");
        check(contains(host.last_error(), "Токен"), "the error names Токен in Russian: %s", host.last_error().c_str());
        c->SetUserInterfaceLanguageCode(u"en");

        Params r(memory);
        r.text("Yellow alpaca").text("2");
        check(call(memory, c, u"GetImageDescriptionStructure", r) == "<false>", "a String as Count fails the call");
        check(contains(host.last_error(), "Count"), "the error names Count: %s", host.last_error().c_str());
        check(contains(refusal, "\"param\":\"count\""), "the value names count: %s", refusal.c_str());
    }
    {
        Params p(memory);
        p.text("Yellow alpaca").r8(2.0).empty().text("1024x1024");
        std::string result = call(memory, c, u"GetImageDescriptionStructure", p);
        save(ctx, "description", result);
        check(result == "{\"prompt\":\"Yellow alpaca\",\"n\":2,\"size\":\"1024x1024\"}",
              "GetImageDescriptionStructure with Count as a float Number: %s", result.c_str());
        Params q(memory);
        q.text(u"Жёлтая альпака").i4(3).text("transparent").empty().text("{'quality':'high'}");
        result = call(memory, c, u"ПолучитьСтруктуруОписанияКартинок", q);
        save(ctx, "description_ru", result);
        check(result == "{\"prompt\":\"Жёлтая альпака\",\"n\":3,\"background\":\"transparent\",\"quality\":\"high\"}",
              "GetImageDescriptionStructure with Count as an integer Number: %s", result.c_str());
        Params r(memory);
        r.text("Yellow alpaca").r8(1.5);
        result = call(memory, c, u"GetImageDescriptionStructure", r);
        check(contains(result, "\"count\""), "a fractional Count is an error result naming count");

        // A function called as a procedure still leaves its result in LastResult.
        Params s(memory);
        s.text("Procedure call");
        check(c->CallAsProc(method(c, u"GetImageDescriptionStructure"), s.data(), s.count()), "CallAsProc succeeds");
        check(last_result(memory, c) == "{\"prompt\":\"Procedure call\"}", "CallAsProc's result is in LastResult");
    }
    {
        // Options: checked when set, applied to later calls; a call's own options win.
        const std::string big = ctx.url + "big/";
        Params small(memory);
        small.text("{'max_response_mb': 1}");
        check(set_options(c, small), "Options can be set");
        check(get_options(memory, c) == "{'max_response_mb': 1}", "Options reads back as set");
        Params p(memory);
        p.text(big).text(TOKEN).text("dall-e-3").text(descr);
        std::string result = call(memory, c, u"GetImages", p);
        save(ctx, "too_large", result);
        check(contains(result, "\"too_large\""), "the Options property applies to GetImages");

        size_t errors = host.errors.size();
        Params bad(memory);
        bad.text("{'bogus': 1}");
        check(!set_options(c, bad), "unknown options are refused");
        check(host.errors.size() == errors + 1 && contains(host.last_error(), "bogus"), "AddError says which key");
        Params number(memory);
        number.i4(1);
        check(!set_options(c, number), "a Number as Options is refused");
        check(host.errors.size() == errors + 2 && contains(host.last_error(), "Options"), "AddError names Options");
        check(get_options(memory, c) == "{'max_response_mb': 1}", "refused values leave Options as it was");

        Params ex(memory);
        ex.text(big).text(TOKEN).text("dall-e-3").text(descr).empty().text("{\"max_response_mb\": 4}");
        result = call(memory, c, u"GetImagesEx", ex);
        save(ctx, "big", result);
        check(result.size() > (1u << 20) && !contains(result, "\"error\""), "GetImagesEx's own options win (%zu bytes)",
              result.size());
        check(last_result(memory, c) == result, "LastResult carries a result over 1 MiB intact");

        Params reset(memory);
        reset.empty();
        check(set_options(c, reset) && get_options(memory, c).empty(), "Options resets to defaults with Undefined");
        Params last(memory);
        last.text("x");
        check(!c->SetPropVal(c->FindProp(u"LastResult"), last.data()), "LastResult is read-only");
    }
    {
        // The host refusing memory fails the call cleanly, with nothing leaked.
        memory.refuse_next = true;
        check(c->GetMethodName(0, 0) == nullptr, "no name when the host refuses memory");
        memory.refuse_next = true;
        size_t errors = host.errors.size();
        Params none(memory);
        check(call(memory, c, u"Version", none) == "<false>", "no result when the host refuses memory");
        check(host.errors.size() == errors + 1, "AddError reports the refused memory");
    }
}

// ---- Asynchronous jobs ---------------------------------------------------------------------

static const std::string DESCR = "{'prompt':'Yellow alpaca','n':1,'size':'1024x1024'}";

static void drive_jobs(const Context& ctx, CountingMemory& memory, TestHost& host, IComponentBase* c, bool full) {
    const std::string slow = ctx.url + "slow/", hang = ctx.url + "hang/";
    if (full) {
        Params p(memory);
        p.text(slow).text(TOKEN).text("dall-e-3").text(DESCR).empty().empty();
        auto start = std::chrono::steady_clock::now();
        std::string id = call(memory, c, u"StartGetImages", p);
        double ms = ms_since(start);
        printf("figure - [%s] StartGetImages returned in %.3f ms (the server takes 1000 ms)\n", scenario.c_str(), ms);
        check(id != "<false>" && !id.empty(), "StartGetImages returns a job id: %s", id.c_str());
        check(ms < 500, "StartGetImages returns at once (%.3f ms) while the server takes 1 s", ms);
        check(host.GetEventBufferDepth() >= 64 && host.depth_sets >= 1, "the event buffer depth was raised (to %ld)",
              host.GetEventBufferDepth());

        Params w(memory);
        w.text(id).r8(0.05);
        check(call_bool(memory, c, u"WaitJob", w) == 0, "WaitJob with a 50 ms timeout is false while the server works");
        Params early(memory);
        early.text(id);
        bool refused = call(memory, c, u"JobResult", early) == "<false>";
        check(refused && contains(refusal, "still running") && contains(refusal, "\"param\":\"job_id\""),
              "JobResult of a running job is refused: %s", refusal.c_str());
        Params w2(memory);
        w2.text(id).i4(30);
        check(call_bool(memory, c, u"ОжидатьЗадание", w2) == 1, "WaitJob is true once the job is done");
        printf("figure - [%s] the job took %.0f ms\n", scenario.c_str(), ms_since(start));

        std::vector<Event> evs = host.wait_final_event(id);
        check(evs.size() == 1 && evs[0].message == "done", "one event, done (%zu events)", evs.size());
        if (!evs.empty()) {
            check(evs[0].source == "OPI_OpenAI", "the event's source is OPI_OpenAI");
            check(!evs[0].on_host_thread, "the event came from the worker thread");
            check(evs[0].data == "{\"job\":\"" + id + "\"}", "done's data is the job id: %s", evs[0].data.c_str());
        }

        Params r(memory);
        r.text(id);
        std::string result = call(memory, c, u"JobResult", r);
        save(ctx, "job_result", result);
        check(contains(result, "\"b64_json\"") && !contains(result, "\"error\""), "JobResult returns the images JSON");
        check(last_result(memory, c) == result, "JobResult sets LastResult");
        Params again(memory);
        again.text(id);
        bool refused_again = call(memory, c, u"РезультатЗадания", again) == "<false>";
        check(refused_again && contains(refusal, "\"param\":\"job_id\""), "a job's result is handed over once: %s",
              refusal.c_str());

        Params sync(memory);
        sync.text(slow).text(TOKEN).text("dall-e-3").text(DESCR).empty().empty();
        save(ctx, "sync_result", call(memory, c, u"GetImagesEx", sync));

        // Several jobs at once: each finishes with its own event, none dropped.
        std::vector<std::string> ids;
        for (int i = 0; i < 4; i++) {
            Params q(memory);
            q.text(slow).text(TOKEN).text("dall-e-3").text(DESCR);
            ids.push_back(call(memory, c, u"StartGetImages", q));
        }
        for (const std::string& each : ids) {
            std::vector<Event> e = host.wait_final_event(each);
            check(e.size() == 1 && e[0].message == "done", "job %s of four sent done", each.c_str());
            Params q(memory);
            q.text(each);
            check(contains(call(memory, c, u"JobResult", q), "\"b64_json\""), "job %s of four has images", each.c_str());
        }

        // A streaming job (partial_images in the description): partial_image events in order,
        // each naming a file already written, then done.
        for (bool own_dir : {false, true}) {
            const std::string dir = ctx.out_dir + "/" + scenario + "-stream";
            Params q(memory);
            q.text(ctx.url + "stream/").text(TOKEN).text("gpt-image-1.5")
                .text("{'prompt':'Yellow alpaca','partial_images':3}").empty();
            if (own_dir) q.text("{\"save_dir\": \"" + dir + "\"}");
            std::string job = call(memory, c, u"StartGetImages", q);
            std::vector<Event> evs = host.wait_final_event(job);
            std::string order;
            bool files = true, short_data = true;
            for (size_t i = 0; i < evs.size(); i++) {
                order += evs[i].message + " ";
                if (evs[i].message == "partial_image") {
                    files = files && evs[i].file_existed &&
                            contains(evs[i].data, "\"index\":" + std::to_string(i)) &&
                            (!own_dir || json_string(evs[i].data, "file").rfind(dir, 0) == 0);
                    if (!own_dir && i == 0) stream_temp_file = json_string(evs[i].data, "file");
                }
                short_data = short_data && evs[i].data.size() < 1000 && !contains(evs[i].data, "b64");
            }
            check(order == "partial_image partial_image partial_image done ",
                  "a streaming job sends its partial images in order, then done (%s): %s", own_dir ? "save_dir" : "temporary folder",
                  order.c_str());
            check(files, "each partial_image names its index and a file already written (%s)", evs.empty() ? "" : evs[0].data.c_str());
            check(short_data, "event data is short, with paths, never base64");
            Params r(memory);
            r.text(job);
            std::string result = call(memory, c, u"JobResult", r);
            save(ctx, own_dir ? "stream_result_dir" : "stream_result", result);
            check(contains(result, "\"data\"") && !contains(result, "\"error\""), "the streaming job's result has the image");
        }
    }
    {
        // CancelJob on a job blocked on a server that does not answer.
        Params p(memory);
        p.text(hang).text(TOKEN).text("dall-e-3").text(DESCR);
        std::string id = call(memory, c, u"НачатьПолучениеКартинок", p);
        Params w(memory);
        w.text(id).r8(0.1);
        check(call_bool(memory, c, u"WaitJob", w) == 0, "a job on a silent server is still running after 100 ms");
        auto start = std::chrono::steady_clock::now();
        Params k(memory);
        k.text(id);
        check(call_bool(memory, c, u"CancelJob", k) == 1, "CancelJob of a running job is true");
        Params w2(memory);
        w2.text(id).i4(10);
        check(call_bool(memory, c, u"WaitJob", w2) == 1, "the cancelled job finishes");
        double ms = ms_since(start);
        printf("figure - [%s] a cancelled job finished %.1f ms after CancelJob\n", scenario.c_str(), ms);
        check(ms < 5000, "the cancelled job finished at once (%.1f ms), not at the server's pace", ms);
        std::vector<Event> evs = host.wait_final_event(id);
        check(!evs.empty() && evs.back().message == "failed" && contains(evs.back().data, "\"cancelled\""),
              "a cancelled job sends failed with its code: %s", evs.empty() ? "" : evs.back().data.c_str());
        Params k2(memory);
        k2.text(id);
        check(call_bool(memory, c, u"ОтменитьЗадание", k2) == 0, "CancelJob of a finished job is false");
        Params r(memory);
        r.text(id);
        std::string result = call(memory, c, u"JobResult", r);
        check(contains(result, "\"code\":\"cancelled\""), "the cancelled job's result: %s", result.c_str());
    }
    {
        // A job whose call fails: failed, with the error's code; JobResult has the error.
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").text("not json");
        std::string id = call(memory, c, u"StartGetImages", p);
        std::vector<Event> evs = host.wait_final_event(id);
        check(!evs.empty() && evs.back().message == "failed" && contains(evs.back().data, "invalid_argument"),
              "a failing job sends failed: %s", evs.empty() ? "" : evs.back().data.c_str());
        Params r(memory);
        r.text(id);
        check(contains(call(memory, c, u"JobResult", r), "\"param\":\"descr\""), "its result is the error");
    }
    if (full) {
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3")
            .text("[{\"prompt\":\"Yellow alpaca\",\"n\":1},{\"prompt\":\"Yellow alpaca\",\"n\":2},\"not json\"]");
        std::string result = call(memory, c, u"ПолучитьКартинкиПакетом", p);
        save(ctx, "batch", result);
        check(contains(result, "\"results\""), "GetImagesBatch returns results");
        check(last_result(memory, c) == result, "GetImagesBatch sets LastResult");
    }
    {
        Params p(memory);
        p.text(ctx.url).i4(1);
        bool refused = call(memory, c, u"StartGetImages", p) == "<false>";
        check(refused && contains(refusal, "\"param\":\"token\""), "StartGetImages refuses a wrong type like GetImages: %s",
              refusal.c_str());
    }
}

// Starts jobs that will still be running when the component is torn down.
static void start_jobs_in_flight(const Context& ctx, CountingMemory& memory, IComponentBase* c) {
    Params p(memory);
    p.text(ctx.url + "hang/").text(TOKEN).text("dall-e-3").text(DESCR);
    check(call(memory, c, u"StartGetImages", p) != "<false>", "a job in flight at teardown");
    Params q(memory);
    q.text(ctx.url + "stream-stall/").text(TOKEN).text("gpt-image-1.5").text("{'prompt':'Yellow alpaca','stream':true}");
    check(call(memory, c, u"StartGetImages", q) != "<false>", "a streaming job in flight at teardown");
}

// ---- Hostile inputs ------------------------------------------------------------------------

static tVariant typed(uint16_t vt) {
    tVariant v = empty_variant();
    v.vt = vt;
    switch (vt) {
    case VTYPE_I4: v.lVal = 42; break;
    case VTYPE_R8: v.dblVal = 2.5; break;
    case VTYPE_BOOL: v.bVal = true; break;
    case VTYPE_DATE: v.date = 45000.5; break;
    case VTYPE_UI8: v.ullVal = ~0ull; break;
    case VTYPE_TM: v.tmVal.tm_year = 126; break;
    default: break;  // NULL, INTERFACE (a NULL pointer), CLSID, ...
    }
    return v;
}

static void hostile(const Context& ctx, CountingMemory& memory, TestHost& host, IComponentBase* c) {
    (void)ctx;
    // Each parameter of each method with each wrong type: refused, naming the parameter.
    const std::vector<uint16_t> not_text = {VTYPE_I4, VTYPE_R8, VTYPE_BOOL, VTYPE_DATE, VTYPE_NULL, VTYPE_BLOB,
                                            VTYPE_TM, VTYPE_UI8, VTYPE_INTERFACE, VTYPE_CLSID, 99};
    const std::vector<uint16_t> not_number = {VTYPE_PWSTR, VTYPE_PSTR, VTYPE_BOOL, VTYPE_DATE, VTYPE_NULL,
                                              VTYPE_BLOB, VTYPE_TM, VTYPE_INTERFACE, 99};
    int calls = 0, clean = 0;
    for (const ExpectedMethod& m : methods) {
        for (size_t j = 0; j < m.kinds.size(); j++) {
            for (uint16_t vt : m.kinds[j].first == TEXT ? not_text : not_number) {
                Params p(memory);
                for (size_t k = 0; k < m.kinds.size(); k++) {
                    if (k != j) {
                        if (m.kinds[k].first == NUMBER) p.i4(0);
                        else if (k == 0) p.text("http://127.0.0.1:9/");
                        else p.text("x");
                    } else if (vt == VTYPE_BLOB) {
                        p.blob("blob bytes");
                    } else if (vt == VTYPE_PWSTR) {
                        p.text("2");
                    } else if (vt == VTYPE_PSTR) {
                        tVariant v = typed(VTYPE_PSTR);
                        void* mem = nullptr;
                        memory.AllocMemory(&mem, 1);
                        static_cast<char*>(mem)[0] = '2';
                        v.str.ptr = static_cast<char*>(mem);
                        v.str.len = 1;
                        p.raw(v);
                    } else {
                        p.raw(typed(vt));
                    }
                }
                size_t errors = host.errors.size();
                calls++;
                bool ok = call(memory, c, m.en, p) == "<false>" && host.errors.size() == errors + 1 &&
                          contains(refusal, std::string("\"param\":\"") + m.kinds[j].second + "\"");
                if (ok) clean++;
                else check(false, "%s parameter %zu with type %u: %s", utf8(m.en).c_str(), j + 1, vt, refusal.c_str());
            }
        }
    }
    check(calls > 200 && clean == calls, "every parameter of every method with every wrong type is refused naming "
          "the parameter (%d of %d calls)", clean, calls);
    // The Options property with every wrong type: refused through AddError, left as it was.
    int refused = 0;
    for (uint16_t vt : not_text) {
        Params p(memory);
        if (vt == VTYPE_BLOB) p.blob("{}");
        else p.raw(typed(vt));
        size_t errors = host.errors.size();
        if (!set_options(c, p) && host.errors.size() == errors + 1 && contains(host.last_error(), "Options")) refused++;
    }
    check(refused == int(not_text.size()) && get_options(memory, c).empty(),
          "Options refuses every wrong type, naming itself (%d of %zu)", refused, not_text.size());

    // 10 MB strings: clean answers, never a crash.
    const std::string ten_mb(10u << 20, 'a');
    {
        Params p(memory);
        p.text("http://127.0.0.1:9/" + ten_mb).text(TOKEN).text("dall-e-3").text(DESCR);
        std::string r = call(memory, c, u"GetImages", p);
        check(contains(r, "\"error\"") && r.size() < 100000, "a 10 MB URL is an error result (%zu bytes)", r.size());
    }
    {
        Params p(memory);
        p.text("http://127.0.0.1:9/").text(TOKEN).text("dall-e-3").text("{'prompt':'" + ten_mb + "'}");
        std::string r = call(memory, c, u"GetImages", p);
        check(contains(r, "\"error\"") && r.size() < 100000, "a 10 MB description is an error result here (no server)");
    }
    {
        Params p(memory);
        p.text("http://127.0.0.1:9/").text(ten_mb).text(ten_mb).text(DESCR).text("{\"X-Big\":\"" + ten_mb + "\"}")
            .text(ten_mb);
        std::string r = call(memory, c, u"GetImagesEx", p);
        check(contains(r, "\"error\"") && r.size() < 100000, "10 MB token, model, headers and options: an error result");
    }
    {
        Params p(memory);
        p.text(ten_mb);
        bool refused = call(memory, c, u"JobResult", p) == "<false>";
        check(refused && refusal.size() < 10000 && host.last_error().size() < 10000,
              "a 10 MB job id is refused with a short message (%zu bytes)", refusal.size());
    }
    {
        Params p(memory);
        p.text(ten_mb);
        std::string r = call(memory, c, u"GetImageDescriptionStructure", p);
        check(r.size() == ten_mb.size() + 13, "a 10 MB prompt comes back whole (%zu bytes)", r.size());
        Params o(memory);
        o.text(ten_mb);
        check(!set_options(c, o) && host.last_error().size() < 10000, "a 10 MB Options value is refused briefly");
    }
    // Unpaired UTF-16 surrogates: replaced by U+FFFD, never a crash.
    {
        std::u16string lone = u"{'prompt':'lone ";
        lone += char16_t(0xD800);
        lone += u" and ";
        lone += char16_t(0xDC00);
        lone += u"'}";
        Params p(memory);
        p.text(u"Prompt ");
        p.values[0].wstr.ptr[6] = char16_t(0xDBFF);  // "Prompt" + a lone high surrogate
        std::string r = call(memory, c, u"GetImageDescriptionStructure", p);
        check(contains(r, "\xEF\xBF\xBD") && !contains(r, "\"error\""), "a lone surrogate in a prompt becomes U+FFFD: %s",
              r.c_str());
        Params q(memory);
        q.text("http://127.0.0.1:9/").empty().empty().text(lone);
        r = call(memory, c, u"GetImages", q);
        check(contains(r, "\"error\"") && !contains(r, "invalid_argument"), "a lone surrogate in a description is sent "
              "as U+FFFD (here to no server): %s", r.c_str());
    }
    // A NULL string pointer with a nonzero length reads as "".
    {
        tVariant null_text = empty_variant();
        null_text.vt = VTYPE_PWSTR;
        null_text.wstr.ptr = nullptr;
        null_text.wstr.len = 1000;
        Params p(memory);
        p.raw(null_text).text(TOKEN).text("dall-e-3").text(DESCR);
        std::string r = call(memory, c, u"GetImages", p);
        check(contains(r, "\"param\":\"url\""), "a NULL URL with a length is a missing URL: %s", r.c_str());
        Params q(memory);
        tVariant null_narrow = empty_variant();
        null_narrow.vt = VTYPE_PSTR;
        null_narrow.str.len = 1000;
        q.text("http://127.0.0.1:9/").raw(null_narrow).raw(null_text).raw(null_text);
        r = call(memory, c, u"GetImages", q);
        check(contains(r, "\"param\":\"descr\""), "a NULL description with a length is a missing description: %s",
              r.c_str());
        Params o(memory);
        o.raw(null_text);
        check(set_options(c, o), "a NULL Options value with a length is \"\" (defaults)");
        tVariant null_blob = empty_variant();
        null_blob.vt = VTYPE_BLOB;
        null_blob.str.len = 1000;
        Params b(memory);
        b.raw(null_blob);
        check(!set_options(c, b), "a NULL BinaryData as Options is refused");
    }
}

// ---- Many objects in one process -------------------------------------------------------------

static void cycles(const Context& ctx, int n) {
    scenario = "cycles";
    CountingMemory memory;
    TestHost host;
    int threads = thread_count();
    auto start = std::chrono::steady_clock::now();
    int good = 0;
    for (int i = 0; i < n; i++) {
        IComponentBase* c = nullptr;
        if (!ctx.lib.get_class_object(u"Main", &c) || !c) break;
        bool ok = c->Init(&host) && c->setMemManager(&memory);
        WCHAR_T* name = nullptr;
        ok = ok && c->RegisterExtensionAs(&name) && take_name(memory, name) == u"Main";
        tVariant v = empty_variant();
        ok = ok && c->GetPropVal(c->FindProp(u"LastResult"), &v) && v.vt == VTYPE_BLOB && v.str.ptr;
        take(memory, v);
        c->Done();
        if (i % 2) {
            ok = ok && ctx.lib.destroy_object(&c) == 0;
        } else {
            delete c;
        }
        if (ok) good++;
    }
    double ms = ms_since(start);
    printf("figure - [cycles] %d create/Init/Done/destroy cycles in %.0f ms\n", n, ms);
    check(good == n, "%d of %d cycles clean", good, n);
    check(memory.live.empty() && memory.allocations >= size_t(2 * n),
          "host allocations back to 0 after %d cycles (%zu made, %zu left)", n, memory.allocations, memory.live.size());
    int left = settled_thread_count(threads);
    check(left == threads, "no thread left behind (%d, was %d)", left, threads);
}

// ---- Panics (a debug build's panic probe, see src/boundary.rs) ------------------------------

static void panic_probe(const Context& ctx) {
    scenario = "panic-probe";
    CountingMemory memory;
    TestHost host;
    IComponentBase* c = nullptr;
    if (!ctx.lib.get_class_object(u"Main", &c) || !c) return;
    check(c->Init(&host) && c->setMemManager(&memory), "Init, setMemManager");
    setenv("OPI_OPENAI_PANIC_PROBE", "addin", 1);
    {
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").text(DESCR);
        size_t errors = host.errors.size();
        check(call(memory, c, u"GetImages", p) == "<false>", "a panicking method fails the call");
        save(ctx, "value", refusal);
        check(contains(refusal, "\"code\":\"internal\""), "its value is an internal error: %s", refusal.c_str());
        check(host.errors.size() == errors + 1, "AddError reports it: %s", host.last_error().c_str());
        check(last_result(memory, c) == refusal, "LastResult holds it");
    }
    setenv("OPI_OPENAI_PANIC_PROBE", "job", 1);
    {
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").text(DESCR);
        std::string id = call(memory, c, u"StartGetImages", p);
        std::vector<Event> evs = host.wait_final_event(id);
        check(!evs.empty() && evs.back().message == "failed" && contains(evs.back().data, "\"internal\""),
              "a panicking job sends failed with code internal: %s", evs.empty() ? "" : evs.back().data.c_str());
        Params r(memory);
        r.text(id);
        check(contains(call(memory, c, u"JobResult", r), "\"code\":\"internal\""), "its result is an internal error");
    }
    unsetenv("OPI_OPENAI_PANIC_PROBE");
    {
        Params p(memory);
        p.text(ctx.url).text(TOKEN).text("dall-e-3").text(DESCR);
        check(contains(call(memory, c, u"GetImages", p), "\"b64_json\""), "the object works after the panics");
    }
    c->Done();
    check(ctx.lib.destroy_object(&c) == 0, "DestroyObject");
    check(memory.live.empty(), "every host allocation was freed");
}

enum Order { ONE_C, ONESCRIPT };
enum Teardown { DESTROY_OBJECT, DELETE_COMPONENT, DELETE_LANGUAGE_EXTENDER, DELETE_USER_LANGUAGE };

static void run(const Context& ctx, Order order, Teardown teardown) {
    static const char* order_names[] = {"1c", "onescript"};
    static const char* teardown_names[] = {"destroy", "delete", "delete-via-ilanguageextender",
                                           "delete-via-userlanguage"};
    scenario = std::string(order_names[order]) + "-" + teardown_names[teardown];
    CountingMemory memory;
    TestHost host;
    int threads = thread_count();
    bool first = order == ONE_C && teardown == DESTROY_OBJECT;

    IComponentBase* c = nullptr;
    check(ctx.lib.get_class_object(u"Main", &c) != 0 && c != nullptr, "GetClassObject(Main) creates an object");
    if (!c) return;
    if (order == ONE_C) {
        check(c->Init(&host), "Init");
        check(c->setMemManager(&memory), "setMemManager");
    } else {
        check(c->setMemManager(&memory), "setMemManager");
        check(c->Init(&host), "Init");
    }
    check(c->GetInfo() == 2000, "GetInfo is 2000");
    if (order == ONE_C) {
        // 1C names the type by RegisterExtensionAs; OneScript never calls it.
        WCHAR_T* name = nullptr;
        check(c->RegisterExtensionAs(&name), "RegisterExtensionAs");
        check(take_name(memory, name) == u"Main", "RegisterExtensionAs names the class Main");
    }

    enumerate(memory, c);
    drive(ctx, memory, host, c);
    drive_jobs(ctx, memory, host, c, first || (order == ONESCRIPT && teardown == DELETE_COMPONENT));
    if (first) hostile(ctx, memory, host, c);
    start_jobs_in_flight(ctx, memory, c);

    // Teardown with jobs in flight: they are cancelled and their threads joined before the
    // object's memory is freed; no event reaches the host after that.
    auto teardown_start = std::chrono::steady_clock::now();
    c->Done();
    switch (teardown) {
    case DESTROY_OBJECT:
        check(ctx.lib.destroy_object(&c) == 0 && c == nullptr, "DestroyObject frees the object");
        break;
    case DELETE_COMPONENT:
        delete c;  // OneScript: Done, then delete through the virtual destructor
        break;
    case DELETE_LANGUAGE_EXTENDER:
        delete static_cast<ILanguageExtenderBase*>(c);
        break;
    case DELETE_USER_LANGUAGE:
        delete static_cast<UserLanguageBase*>(c);
        break;
    }
    double teardown_ms = ms_since(teardown_start);
    host.alive = false;
    printf("figure - [%s] teardown with two jobs in flight took %.1f ms\n", scenario.c_str(), teardown_ms);
    check(teardown_ms < 5000, "teardown cancels the jobs in flight at once (%.1f ms)", teardown_ms);
    int left = settled_thread_count(threads);
    check(left == threads, "no worker thread left behind (%d threads, %d before)", left, threads);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    check(host.late_events == 0, "no event after the teardown (%d)", host.late_events.load());
    if (!stream_temp_file.empty()) {
        check(!file_exists(stream_temp_file), "the component's temporary folder is removed with it");
        stream_temp_file.clear();
    }
    check(memory.live.empty(), "every host allocation was freed (%zu made, %zu left)", memory.allocations,
          memory.live.size());
    check(memory.foreign_frees == 0, "the host freed only memory it allocated");
}

int main(int argc, char** argv) {
    bool keep_loaded = false;
    int cycle_count = 1000;
    bool probe = false;
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "--keep-loaded") == 0) {
            keep_loaded = true;
        } else if (strcmp(argv[i], "--panic-probe") == 0) {
            probe = true;
        } else if (strcmp(argv[i], "--cycles") == 0 && i + 1 < argc) {
            cycle_count = atoi(argv[++i]);
        } else {
            argc = 0;
        }
    }
    if (argc < 5) {
        fprintf(stderr, "usage: %s LIBRARY URL OUT_DIR VERSION [--keep-loaded] [--cycles N]\n", argv[0]);
        return 2;
    }
    Context ctx;
    ctx.url = argv[2];
    ctx.out_dir = argv[3];
    ctx.version = argv[4];

    void* so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    check(so != nullptr, "dlopen %s: %s", argv[1], so ? "loaded" : dlerror());
    if (!so) return 1;
    ctx.lib.get_class_names = reinterpret_cast<GetClassNamesFn>(dlsym(so, "GetClassNames"));
    ctx.lib.get_class_object = reinterpret_cast<GetClassObjectFn>(dlsym(so, "GetClassObject"));
    ctx.lib.destroy_object = reinterpret_cast<DestroyObjectFn>(dlsym(so, "DestroyObject"));
    ctx.lib.set_platform_capabilities = reinterpret_cast<SetPlatformCapabilitiesFn>(dlsym(so, "SetPlatformCapabilities"));
    ctx.lib.get_attach_type = reinterpret_cast<GetAttachTypeFn>(dlsym(so, "GetAttachType"));
    check(ctx.lib.get_class_names && ctx.lib.get_class_object && ctx.lib.destroy_object &&
              ctx.lib.set_platform_capabilities && ctx.lib.get_attach_type,
          "the five Native API functions are exported");
    if (!ctx.lib.get_class_names || !ctx.lib.get_class_object || !ctx.lib.destroy_object ||
        !ctx.lib.set_platform_capabilities || !ctx.lib.get_attach_type) {
        return 1;
    }
    check(dlsym(so, "opi_openai_get_images") != nullptr, "the C API is exported beside it");

    check(cstr16(ctx.lib.get_class_names()) == u"Main", "GetClassNames is Main");
    check(ctx.lib.set_platform_capabilities(3) == 3, "SetPlatformCapabilities returns 3");
    check(ctx.lib.get_attach_type() == 3, "GetAttachType is 3 (any)");
    IComponentBase* none = nullptr;
    check(ctx.lib.get_class_object(u"Other", &none) == 0 && none == nullptr, "GetClassObject refuses other names");
    check(ctx.lib.get_class_object(u"main", &none) != 0 && none != nullptr, "GetClassObject matches the name in any case");
    check(ctx.lib.destroy_object(&none) == 0 && none == nullptr, "DestroyObject of an object never initialised");
    check(ctx.lib.destroy_object(&none) == -1, "DestroyObject of NULL is -1");

    if (probe) {
        panic_probe(ctx);
        printf("%s: %d failed check(s)\n", failures ? "FAILED" : "PASSED", failures);
        return failures ? 1 : 0;
    }
    for (Order order : {ONE_C, ONESCRIPT}) {
        for (Teardown teardown : {DESTROY_OBJECT, DELETE_COMPONENT, DELETE_LANGUAGE_EXTENDER, DELETE_USER_LANGUAGE}) {
            run(ctx, order, teardown);
        }
    }

    cycles(ctx, cycle_count);

    scenario = "teardown";
    if (!keep_loaded) check(dlclose(so) == 0, "dlclose unloads the library");
    printf("%s: %d failed check(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
