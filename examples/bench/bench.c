/* opi_openai against libcurl: the same POST to the same server, every answer checked.
 *
 * Built and run by examples/bench/run.sh (which starts the servers); by hand:
 *   cc -O2 -Wall -Wextra -Werror -Iinclude $(curl-config --cflags) examples/bench/bench.c \
 *      -Wl,-rpath,$PWD/target/release -ldl -lpthread -o /tmp/opi_bench
 * (libopi_openai.so and libcurl.so.4 are loaded at run time: the first through the RUNPATH
 * or LD_LIBRARY_PATH.)
 *   /tmp/opi_bench MODE BASE --ref FILE [options]
 *
 * BASE is the server's base URL (http://127.0.0.1:PORT/ or https://...); both sides POST
 * BASE/v1/images/generations with {"model":"dall-e-3","prompt":"Yellow alpaca","n":1,
 * "size":"1024x1024"} and the headers opi_openai sends, over a kept-alive connection, and hand
 * the caller a NUL-terminated heap string that the caller frees. libcurl: one easy handle per
 * thread, reused, the body gathered in a buffer that doubles as it grows, CURLOPT_CAINFO for
 * HTTPS. opi_openai: the C ABI as a user calls it (options {"ca_file": ...} for HTTPS).
 *
 * Every answer of both sides is checked against --ref FILE (the answer the server gives, saved
 * by run.sh): the same length and the same bytes after `"created":N` (all of them for small
 * answers, 64 bytes every MiB and the last 64 for big ones), else the call counts as failed.
 * A library returning quick errors cannot look fast.
 *
 * Modes:
 *   small  sequential small calls (--small N per round) and T threads x M calls
 *          (--threads T --per-thread M): calls/s and client CPU per call, in this process.
 *          Each round is 10 blocks in which both sides make a tenth of the calls, the side
 *          going first alternating: a machine whose speed drifts slows both alike.
 *   big    --calls K big calls per round, each side in a fresh child process: MiB/s, client
 *          CPU per MiB and the child's peak RSS (its VmHWM). A child loads only its own
 *          side's library.
 *   save   ours only, big calls with {"save_dir": DIR, "drop_b64": true} in a fresh child
 *          (--keep-b64: without drop_b64, the answer keeps its base64): time, peak RSS; the
 *          files are checked (size) and removed. Each round also runs
 *          the same calls without save_dir: the decode+write rate is the base64 bytes over
 *          the time difference (noisy when the difference is small; a 0 means "no slower").
 *   first  one call in a fresh child process per side and round: the first call's time.
 *   count  --side ours|libcurl: --calls K checked calls inside measured_calls(), for callgrind
 *          (run.sh collects only there, for two values of K: instructions per call).
 *   slow   T threads x M calls to a server that waits --delay-ms per call: the time against
 *          the ideal M x delay (ratio above 1 means worse than ideal); and ours as one
 *          opi_openai_get_images_batch call of T x M descriptions with option parallel T.
 * Peak RSS is reported as the child's peak over the body (x_body) and as its growth from
 * before the calls (rss_growth: what the calls added, without the loaded libraries).
 * Common: --rounds R (median of R rounds, with the range), --ca FILE (HTTPS), --key NAME,
 *   --ours-system (ours without the ca_file option: it trusts the system store, which
 *   SSL_CERT_FILE must then make hold the test CA; libcurl gets the same file as --ca).
 *
 * Output: a line per figure for people, and RESULT lines for run.sh:
 *   RESULT key ours=X libcurl=Y unit=U ratio=R ours_range=a..b libcurl_range=a..b
 * Every ratio reads the same way: above 1, ours is better (rates: ours / libcurl; costs:
 * libcurl / ours). Exit status: 0, or 1 when any call of either side failed its check. */
#define _GNU_SOURCE
/* Both libraries are loaded at run time (below), so curl's type-checking macros are off:
 * calls go through pointers of the functions' own types. */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "opi_openai.h"

/* ---- the two libraries, loaded at run time ---------------------------------------------
 * A child process (big, save, first) loads only its own side's library, as a host that uses
 * one of them does: its peak RSS holds that library alone, not the other one as well. The
 * parent (small, slow, count) loads both. Each function is called through a pointer of its
 * own type, under its own name. */
#define CURL_FUNCTIONS(F)                                                                    \
    F(curl_global_init) F(curl_global_cleanup) F(curl_easy_init) F(curl_easy_setopt)         \
    F(curl_easy_perform) F(curl_easy_getinfo) F(curl_easy_strerror) F(curl_easy_cleanup)     \
    F(curl_slist_append) F(curl_slist_free_all)
/* opi_openai_get_images_batch may be absent: the benchmark also runs against builds from
 * before the batch call (OPI_BENCH_LIB); its pointer is then NULL. */
#define OURS_FUNCTIONS(F) F(opi_openai_get_images_ex) F(opi_free_string) F(opi_version)
#define POINTER(f) static __typeof__(&f) p_##f;
CURL_FUNCTIONS(POINTER)
OURS_FUNCTIONS(POINTER)
POINTER(opi_openai_get_images_batch)
/* curl.h defines these two as macros of themselves */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init p_curl_global_init
#define curl_global_cleanup p_curl_global_cleanup
#define curl_easy_init p_curl_easy_init
#define curl_easy_setopt p_curl_easy_setopt
#define curl_easy_perform p_curl_easy_perform
#define curl_easy_getinfo p_curl_easy_getinfo
#define curl_easy_strerror p_curl_easy_strerror
#define curl_easy_cleanup p_curl_easy_cleanup
#define curl_slist_append p_curl_slist_append
#define curl_slist_free_all p_curl_slist_free_all
#define opi_openai_get_images_ex p_opi_openai_get_images_ex
#define opi_free_string p_opi_free_string
#define opi_version p_opi_version
#define opi_openai_get_images_batch p_opi_openai_get_images_batch

/* dlopen `name` (found through this program's RUNPATH, or LD_LIBRARY_PATH) or exit. */
static void *load_library(const char *name) {
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "bench: cannot load %s: %s\n", name, dlerror());
        exit(2);
    }
    return lib;
}

#define RESOLVE(f)                                                                           \
    if (!(p_##f = (__typeof__(p_##f))dlsym(lib, #f))) {                                      \
        fprintf(stderr, "bench: %s has no %s\n", name, #f);                                  \
        exit(2);                                                                             \
    }

static void load_libcurl(void) {
    const char *name = "libcurl.so.4";
    void *lib = load_library(name);
    CURL_FUNCTIONS(RESOLVE)
}

static void load_ours(void) {
    const char *name = "libopi_openai.so";
    void *lib = load_library(name);
    OURS_FUNCTIONS(RESOLVE)
    p_opi_openai_get_images_batch =
        (__typeof__(p_opi_openai_get_images_batch))dlsym(lib, "opi_openai_get_images_batch");
}

extern char **environ;

#define MAX_ROUNDS 15
#define MAX_THREADS 64

static const char *DESCR = "{\"prompt\":\"Yellow alpaca\",\"n\":1,\"size\":\"1024x1024\"}";
static const char *BODY = "{\"model\":\"dall-e-3\",\"prompt\":\"Yellow alpaca\",\"n\":1,\"size\":\"1024x1024\"}";
static const char *TOKEN = "sk-bench-token";
static const char *MODEL = "dall-e-3";

/* Settings from the command line. */
static const char *base, *ca, *ref_path, *key = "run", *dir, *self;
static int keep_b64; /* save: without drop_b64 */
/* opi_version(), for libcurl's User-Agent; a libcurl child (which does not load our library)
 * is given it by the parent (--our-version). */
static const char *our_version = "";
static char url[700], options[1200];
static int failures;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) of this process: the client only, the server is another one. */
static double cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void fail(const char *who, const char *what, const char *text) {
    pthread_mutex_lock(&fail_lock);
    if (failures++ < 5)
        fprintf(stderr, "bench: %s: %s: %.200s\n", who, what, text ? text : "(null)");
    pthread_mutex_unlock(&fail_lock);
}

/* ---- the expected answer ---------------------------------------------------------------- */

/* The reference answer: small ones in memory, big ones read where sampled. */
static struct {
    int fd;
    size_t len, from; /* from: just after `"created":N` (which local_server varies) */
    char *data;       /* the whole answer when small, else NULL */
} ref = {-1, 0, 0, NULL};

#define SMALL_REF (1 << 20)
#define SAMPLE 64

static void ref_load(const char *path) {
    ref.fd = open(path, O_RDONLY);
    struct stat st;
    if (ref.fd < 0 || fstat(ref.fd, &st) != 0 || st.st_size < 16) {
        fprintf(stderr, "bench: cannot read the reference answer %s\n", path);
        exit(2);
    }
    ref.len = (size_t)st.st_size;
    char head[64] = {0};
    if (pread(ref.fd, head, sizeof head - 1, 0) < 16 || strncmp(head, "{\"created\":", 11) != 0 ||
        !strchr(head, ',')) {
        fprintf(stderr, "bench: %s is not an image answer\n", path);
        exit(2);
    }
    ref.from = (size_t)(strchr(head, ',') - head);
    if (ref.len <= SMALL_REF) {
        ref.data = malloc(ref.len);
        if (!ref.data || pread(ref.fd, ref.data, ref.len, 0) != (ssize_t)ref.len) exit(2);
    }
}

static int same_at(const char *text, size_t at, size_t n) {
    char want[SAMPLE];
    if (n > SAMPLE) n = SAMPLE;
    if (pread(ref.fd, want, n, (off_t)at) != (ssize_t)n) return 0;
    return memcmp(text + at, want, n) == 0;
}

/* The answer is the expected one: `{"created":<digits>` then the reference's bytes. */
static int answer_ok(const char *text) {
    if (!text || strncmp(text, "{\"created\":", 11) != 0) return 0;
    size_t len = strlen(text);
    if (len != ref.len) return 0;
    for (size_t i = 11; i < ref.from; i++)
        if (text[i] < '0' || text[i] > '9') return 0;
    if (ref.data) return memcmp(text + ref.from, ref.data + ref.from, len - ref.from) == 0;
    for (size_t at = ref.from; at + SAMPLE < len; at += 1 << 20)
        if (!same_at(text, at, SAMPLE)) return 0;
    return same_at(text, len - SAMPLE, SAMPLE);
}

static void check(const char *who, const char *text) {
    if (!answer_ok(text)) fail(who, "not the expected answer", text);
}

/* ---- the two sides --------------------------------------------------------------------- */

enum side { OURS, LIBCURL };
static const char *SIDE_NAME[] = {"opi_openai", "libcurl"};

static char *ours_call(const char *opts) {
    return opi_openai_get_images_ex(base, TOKEN, MODEL, DESCR, NULL, opts);
}

struct buf {
    char *data;
    size_t len, cap;
};

static size_t on_data(char *ptr, size_t size, size_t n, void *userdata) {
    struct buf *b = userdata;
    size_t add = size * n;
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (b->len + add + 1 > cap) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) return 0;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, add);
    b->len += add;
    return add;
}

struct curl_client {
    CURL *easy;
    struct curl_slist *headers;
};

static void curl_client_init(struct curl_client *c) {
    char auth[128], ua[64];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", TOKEN);
    snprintf(ua, sizeof ua, "User-Agent: opi_openai/%s", our_version);
    c->headers = NULL;
    c->headers = curl_slist_append(c->headers, "Accept: */*");
    c->headers = curl_slist_append(c->headers, "Accept-Charset: utf-8");
    c->headers = curl_slist_append(c->headers, "Connection: keep-alive");
    c->headers = curl_slist_append(c->headers, "Content-Type: application/json; charset=utf-8");
    c->headers = curl_slist_append(c->headers, ua);
    c->headers = curl_slist_append(c->headers, auth);
    c->easy = curl_easy_init();
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->easy, CURLOPT_ACCEPT_ENCODING, "gzip"); /* sends it, decodes gzip */
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, BODY);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(BODY));
    if (ca) curl_easy_setopt(c->easy, CURLOPT_CAINFO, ca);
}

static void curl_client_free(struct curl_client *c) {
    curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
}

/* The answer as a NUL-terminated heap string the caller frees, as opi_openai returns it;
 * NULL (and a failure counted) unless the transfer worked with status 200. */
static char *curl_call(struct curl_client *c) {
    struct buf b = {0};
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(c->easy);
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK || status != 200) {
        fail("libcurl", rc != CURLE_OK ? curl_easy_strerror(rc) : "HTTP status not 200", b.data);
        free(b.data);
        return NULL;
    }
    if (!b.data) return calloc(1, 1);
    b.data[b.len] = '\0';
    return b.data;
}

/* One checked call by one side. */
static void one_call(enum side side, struct curl_client *c) {
    if (side == LIBCURL) {
        char *r = curl_call(c);
        if (r) check("libcurl", r);
        free(r);
    } else {
        char *r = ours_call(options[0] ? options : NULL);
        check("opi_openai", r);
        opi_free_string(r);
    }
}

/* ---- figures ---------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct stat3 {
    double med, lo, hi;
};

static struct stat3 stats(const double *v, int n) {
    double s[MAX_ROUNDS];
    memcpy(s, v, n * sizeof *v);
    qsort(s, n, sizeof *s, cmp_double);
    double med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    return (struct stat3){med, s[0], s[n - 1]};
}

/* Decimals a figure is printed with: memory against the body ("x") to the thousandth (the
 * HTTPS peak lies within a few KiB of its target, 1.1x: 52.8 MiB for 48 MiB); the rest to
 * the tenth. */
static int decimals(const char *unit) { return strcmp(unit, "x") == 0 ? 3 : 1; }

/* One figure: the medians of both sides, their ranges, and the ratio (above 1: ours is
 * better; `higher_better` says which way the unit goes). */
static void report(const char *name, const char *unit, const double *ours, const double *curl,
                   int rounds, int higher_better) {
    struct stat3 o = stats(ours, rounds), c = stats(curl, rounds);
    double ratio = higher_better ? o.med / c.med : c.med / o.med;
    int d = decimals(unit);
    printf("%-34s ours %10.*f [%.*f..%.*f]  libcurl %10.*f [%.*f..%.*f] %-8s ratio %.2f\n", name,
           d, o.med, d, o.lo, d, o.hi, d, c.med, d, c.lo, d, c.hi, unit, ratio);
    printf("RESULT %s ours=%.*f libcurl=%.*f unit=%s ratio=%.3f ours_range=%.*f..%.*f "
           "libcurl_range=%.*f..%.*f\n",
           name, d, o.med, d, c.med, unit, ratio, d, o.lo, d, o.hi, d, c.lo, d, c.hi);
    fflush(stdout);
}

/* Like report, for figures of ours alone (no libcurl counterpart). */
static void report_one(const char *name, const char *unit, const double *v, int rounds) {
    struct stat3 o = stats(v, rounds);
    int d = decimals(unit);
    printf("%-34s ours %10.*f [%.*f..%.*f] %s\n", name, d, o.med, d, o.lo, d, o.hi, unit);
    printf("RESULT %s ours=%.*f unit=%s ours_range=%.*f..%.*f\n", name, d, o.med, unit, d, o.lo, d,
           o.hi);
    fflush(stdout);
}

struct worker {
    pthread_t thread;
    enum side side;
    int calls;
    pthread_barrier_t *start;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct curl_client c;
    if (w->side == LIBCURL) curl_client_init(&c);
    one_call(w->side, &c); /* this thread's connection, before the clock */
    pthread_barrier_wait(w->start);
    for (int i = 0; i < w->calls; i++) one_call(w->side, &c);
    if (w->side == LIBCURL) curl_client_free(&c);
    return NULL;
}

/* `calls` calls by each of `threads` threads (0: in this thread): wall and CPU seconds. */
static void run_side(enum side side, struct curl_client *c, int calls, int threads, double *wall,
                     double *cpu_s) {
    double t0 = now(), c0 = cpu();
    if (threads > 0) {
        struct worker w[MAX_THREADS];
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, threads + 1);
        for (int i = 0; i < threads; i++) {
            w[i] = (struct worker){.side = side, .calls = calls, .start = &start};
            pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        }
        pthread_barrier_wait(&start);
        t0 = now(); /* from the common start; the CPU of the set-up calls is counted, a little */
        for (int i = 0; i < threads; i++) pthread_join(w[i].thread, NULL);
        pthread_barrier_destroy(&start);
    } else {
        for (int i = 0; i < calls; i++) one_call(side, c);
    }
    *wall = now() - t0;
    *cpu_s = cpu() - c0;
}

/* A pool of worker threads, each with its own libcurl handle (ours keeps a connection per
 * thread in its pool), running blocks of calls of one side on command: the two sides take
 * turns in short blocks, so that a machine whose speed drifts (other load, frequency, a
 * noisy neighbour) slows both alike. */
struct pool {
    int threads;
    pthread_t tid[MAX_THREADS];
    struct curl_client curl[MAX_THREADS];
    pthread_barrier_t start, done;
    enum side side;
    int calls, quit;
};

struct pool_arg {
    struct pool *pool;
    int index;
};

static void *pool_worker(void *arg) {
    struct pool_arg *a = arg;
    struct pool *p = a->pool;
    for (;;) {
        pthread_barrier_wait(&p->start);
        if (p->quit) break;
        for (int i = 0; i < p->calls; i++) one_call(p->side, &p->curl[a->index]);
        pthread_barrier_wait(&p->done);
    }
    return NULL;
}

/* One block: `calls` calls by `side` in each pool thread (threads 0: in this thread, on `c`);
 * wall and CPU seconds of the whole process added to `wall` and `cpu_s`. */
static void run_block(struct pool *p, struct curl_client *c, enum side side, int calls,
                      double *wall, double *cpu_s) {
    double t0 = now(), c0 = cpu();
    if (p->threads > 0) {
        p->side = side;
        p->calls = calls;
        pthread_barrier_wait(&p->start);
        pthread_barrier_wait(&p->done);
    } else {
        for (int i = 0; i < calls; i++) one_call(side, c);
    }
    *wall += now() - t0;
    *cpu_s += cpu() - c0;
}

#define BLOCKS 10

/* calls/s and CPU us/call for `calls` calls per thread (threads 0: sequential) and round. A
 * round is BLOCKS blocks; in each, both sides make calls/BLOCKS calls per thread, the side
 * going first alternating. */
static void figure_calls(const char *what, int calls, int threads, int rounds, struct curl_client *c) {
    double rate[2][MAX_ROUNDS], cost[2][MAX_ROUNDS];
    int per_block = calls / BLOCKS > 0 ? calls / BLOCKS : 1;
    double units = (double)per_block * BLOCKS * (threads > 0 ? threads : 1);
    static struct pool p;
    static struct pool_arg args[MAX_THREADS];
    p = (struct pool){.threads = threads};
    if (threads > 0) {
        pthread_barrier_init(&p.start, NULL, threads + 1);
        pthread_barrier_init(&p.done, NULL, threads + 1);
        for (int i = 0; i < threads; i++) {
            curl_client_init(&p.curl[i]);
            args[i] = (struct pool_arg){&p, i};
            pthread_create(&p.tid[i], NULL, pool_worker, &args[i]);
        }
    }
    double unused_wall = 0, unused_cpu = 0;
    /* Off the clock: every thread's connections open, both sides' answers checked. */
    run_block(&p, c, OURS, 2, &unused_wall, &unused_cpu);
    run_block(&p, c, LIBCURL, 2, &unused_wall, &unused_cpu);
    for (int r = 0; r < rounds; r++) {
        double wall[2] = {0, 0}, cpu_s[2] = {0, 0};
        for (int b = 0; b < BLOCKS; b++)
            for (int k = 0; k < 2; k++) {
                enum side side = (r + b + k) % 2 ? LIBCURL : OURS;
                run_block(&p, c, side, per_block, &wall[side], &cpu_s[side]);
            }
        for (int side = 0; side < 2; side++) {
            rate[side][r] = units / wall[side];
            cost[side][r] = cpu_s[side] * 1e6 / units;
        }
    }
    if (threads > 0) {
        p.quit = 1;
        pthread_barrier_wait(&p.start);
        for (int i = 0; i < threads; i++) {
            pthread_join(p.tid[i], NULL);
            curl_client_free(&p.curl[i]);
        }
        pthread_barrier_destroy(&p.start);
        pthread_barrier_destroy(&p.done);
    }
    char name[160];
    snprintf(name, sizeof name, "%s_%s", key, what);
    report(name, "calls/s", rate[OURS], rate[LIBCURL], rounds, 1);
    snprintf(name, sizeof name, "%s_%s_cpu", key, what);
    report(name, "us/call", cost[OURS], cost[LIBCURL], rounds, 0);
}

/* ---- child processes (big, save, first) ------------------------------------------------- */

struct child_result {
    double wall, cpu, rss_mib, base_mib; /* rss: the child's peak; base: before the calls */
    int ok;
};

/* This process's peak RSS in MiB: VmHWM, the high-water mark of its own address space.
 * (getrusage's ru_maxrss is no use in a spawned child: Linux carries the parent's peak over
 * the exec into it, so it would count the parent's memory as the child's.) */
static double peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lf kB", &kib) == 1) break;
    if (f) fclose(f);
    if (kib < 0) {
        fprintf(stderr, "bench: no VmHWM in /proc/self/status\n");
        exit(2);
    }
    return kib / 1024.0;
}

/* In the child: `calls` calls by `side` (with `opts` for ours), timed; prints one line. */
static int child_main(enum side side, const char *what, int calls) {
    double t_start = now();
    int save = strcmp(what, "save") == 0, first = strcmp(what, "first") == 0;
    char opts[1600];
    if (save)
        snprintf(opts, sizeof opts, "{\"save_dir\":\"%s\",\"drop_b64\":%s%s%s%s}", dir,
                 keep_b64 ? "false" : "true", ca ? ",\"ca_file\":\"" : "", ca ? ca : "",
                 ca ? "\"" : "");
    else
        snprintf(opts, sizeof opts, "%s", options);
    struct curl_client c;
    double t0 = t_start, c0 = 0, base_mib = 0, wall = 0;
    int ok = 1;
    if (first) {
        /* Nothing before the clock: library set-up, TLS set-up and the handshake count. */
        if (side == LIBCURL) {
            curl_global_init(CURL_GLOBAL_ALL);
            curl_client_init(&c);
            char *r = curl_call(&c);
            wall = now() - t0;
            ok = answer_ok(r);
            free(r);
            curl_client_free(&c);
        } else {
            char *r = ours_call(opts[0] ? opts : NULL);
            wall = now() - t0;
            ok = answer_ok(r);
            opi_free_string(r);
        }
        double peak = peak_rss_mib();
        printf("CHILD wall=%.6f cpu=%.6f base=%.3f peak=%.3f ok=%d\n", wall, cpu(), peak, peak, ok);
        return 0;
    }
    /* Off the clock: the library set up and the connection open, by one small call to the
     * same server (BASE without its last path segment: .../big/ -> .../). */
    char small_base[700], small_url[760];
    snprintf(small_base, sizeof small_base, "%s", base);
    char *cut = small_base + strlen(small_base) - 1;
    while (cut > small_base && *(cut - 1) != '/') cut--;
    *cut = '\0';
    snprintf(small_url, sizeof small_url, "%sv1/images/generations", small_base);
    char *warm;
    if (side == LIBCURL) {
        curl_global_init(CURL_GLOBAL_ALL);
        curl_client_init(&c);
        curl_easy_setopt(c.easy, CURLOPT_URL, small_url);
        warm = curl_call(&c);
        curl_easy_setopt(c.easy, CURLOPT_URL, url);
        ok &= warm && strncmp(warm, "{\"created\":", 11) == 0;
        free(warm);
    } else {
        warm = opi_openai_get_images_ex(small_base, TOKEN, MODEL, DESCR, NULL, options[0] ? options : NULL);
        ok &= warm && strncmp(warm, "{\"created\":", 11) == 0;
        opi_free_string(warm);
    }
    base_mib = peak_rss_mib();
    t0 = now();
    c0 = cpu();
    for (int i = 0; i < calls; i++) {
        if (side == LIBCURL) {
            char *r = curl_call(&c);
            ok &= answer_ok(r);
            free(r);
        } else if (!save) {
            char *r = ours_call(opts[0] ? opts : NULL);
            ok &= answer_ok(r);
            opi_free_string(r);
        } else {
            char *r = ours_call(opts);
            /* The result names the file and holds no base64; the file holds the decoded
             * bytes (3/4 of the base64 text). Checked and removed off the clock. */
            double pause = now();
            const char *f = r ? strstr(r, "\"file\":\"") : NULL;
            int good = f && strncmp(r, "{\"created\":", 11) == 0 &&
                       (keep_b64 ? strlen(r) > ref.len : !strstr(r, "b64_json")) &&
                       !strstr(r, "\"error\"");
            if (good) {
                char path[1024];
                f += 8;
                size_t n = strcspn(f, "\"");
                snprintf(path, sizeof path, "%.*s", (int)n, f);
                struct stat st;
                /* the base64 text is the reference minus its JSON around it */
                size_t b64 = ref.len - ref.from - strlen(",\"data\":[{\"b64_json\":\"\"}]}");
                good = stat(path, &st) == 0 && (size_t)st.st_size == b64 / 4 * 3;
                unlink(path);
            }
            if (!good) fail("opi_openai save", "no file, or not the expected one", r);
            ok &= good;
            opi_free_string(r);
            t0 += now() - pause;
        }
    }
    wall = now() - t0;
    printf("CHILD wall=%.6f cpu=%.6f base=%.3f peak=%.3f ok=%d\n", wall, cpu() - c0, base_mib,
           peak_rss_mib(), ok);
    if (side == LIBCURL) {
        curl_client_free(&c);
        curl_global_cleanup();
    }
    return 0;
}

/* Runs this program as a child doing `what`; its figures, peak RSS included. */
static struct child_result spawn_child(enum side side, const char *what, int calls) {
    struct child_result res = {0};
    int fds[2];
    if (pipe(fds) != 0) exit(2);
    char calls_s[16];
    snprintf(calls_s, sizeof calls_s, "%d", calls);
    const char *argv[24];
    int n = 0;
    argv[n++] = self;
    argv[n++] = "child";
    argv[n++] = base;
    argv[n++] = "--side";
    argv[n++] = side == OURS ? "ours" : "libcurl";
    argv[n++] = "--what";
    argv[n++] = what;
    argv[n++] = "--calls";
    argv[n++] = calls_s;
    argv[n++] = "--ref";
    argv[n++] = ref_path;
    if (ca) { argv[n++] = "--ca"; argv[n++] = ca; }
    if (dir) { argv[n++] = "--dir"; argv[n++] = dir; }
    if (keep_b64) argv[n++] = "--keep-b64";
    if (ca && !options[0]) argv[n++] = "--ours-system";
    argv[n++] = "--our-version";
    argv[n++] = our_version;
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    pid_t pid;
    fflush(stdout);
    if (posix_spawn(&pid, self, &fa, NULL, (char *const *)argv, environ) != 0) {
        perror("bench: posix_spawn");
        exit(2);
    }
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    char line[256] = {0};
    size_t got = 0;
    ssize_t k;
    while (got < sizeof line - 1 && (k = read(fds[0], line + got, sizeof line - 1 - got)) > 0) got += k;
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid) exit(2);
    if (sscanf(line, "CHILD wall=%lf cpu=%lf base=%lf peak=%lf ok=%d", &res.wall, &res.cpu,
               &res.base_mib, &res.rss_mib, &res.ok) != 5 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        res.ok = 0;
    if (!res.ok) fail(SIDE_NAME[side], "a child's calls failed", line);
    return res;
}

/* big / save / first: each side (alternating) in its own fresh process per round. */
static void figure_children(const char *what, int calls, int rounds) {
    double rate[2][MAX_ROUNDS], cost[2][MAX_ROUNDS], rss[2][MAX_ROUNDS], grow[2][MAX_ROUNDS],
        ms[2][MAX_ROUNDS];
    double body_mib = ref.len / (1024.0 * 1024.0), units = calls * body_mib;
    int save = strcmp(what, "save") == 0, first = strcmp(what, "first") == 0;
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < 2; k++) {
            enum side side = (r + k) % 2 ? LIBCURL : OURS;
            if (save && side == LIBCURL) {
                /* The same calls without save_dir: the difference is the decoding and writing. */
                struct child_result plain = spawn_child(OURS, "big", calls);
                ms[LIBCURL][r] = plain.wall * 1e3 / calls;
                continue;
            }
            struct child_result c = spawn_child(side, what, calls);
            ms[side][r] = c.wall * 1e3 / (first ? 1 : calls);
            rate[side][r] = units / c.wall;
            cost[side][r] = c.cpu * 1e6 / units / 1e3; /* ms per MiB */
            rss[side][r] = c.rss_mib / body_mib;
            grow[side][r] = (c.rss_mib - c.base_mib) / body_mib;
        }
    char name[160];
    if (first) {
        snprintf(name, sizeof name, "%s_first_call", key);
        report(name, "ms", ms[OURS], ms[LIBCURL], rounds, 0);
        return;
    }
    if (save) {
        snprintf(name, sizeof name, "%s_save_ms_per_call", key);
        report_one(name, "ms", ms[OURS], rounds);
        snprintf(name, sizeof name, "%s_nosave_ms_per_call", key);
        report_one(name, "ms", ms[LIBCURL], rounds);
        /* base64 bytes decoded (and 3/4 of them written) per second of the extra time */
        double gbs[MAX_ROUNDS];
        size_t b64 = ref.len - ref.from - strlen(",\"data\":[{\"b64_json\":\"\"}]}");
        for (int r = 0; r < rounds; r++) {
            double extra = (ms[OURS][r] - ms[LIBCURL][r]) / 1e3;
            gbs[r] = extra > 0 ? b64 / extra / 1e9 : 0;
        }
        snprintf(name, sizeof name, "%s_save_decode_write_gb_s", key);
        report_one(name, "GB/s", gbs, rounds);
        snprintf(name, sizeof name, "%s_save_peak_rss_x_body", key);
        report_one(name, "x", rss[OURS], rounds);
        snprintf(name, sizeof name, "%s_save_rss_growth_x_body", key);
        report_one(name, "x", grow[OURS], rounds);
        return;
    }
    snprintf(name, sizeof name, "%s_big", key);
    report(name, "MiB/s", rate[OURS], rate[LIBCURL], rounds, 1);
    snprintf(name, sizeof name, "%s_big_cpu", key);
    report(name, "ms/MiB", cost[OURS], cost[LIBCURL], rounds, 0);
    snprintf(name, sizeof name, "%s_big_peak_rss_x_body", key);
    report(name, "x", rss[OURS], rss[LIBCURL], rounds, 0);
    snprintf(name, sizeof name, "%s_big_rss_growth_x_body", key);
    report(name, "x", grow[OURS], grow[LIBCURL], rounds, 0);
}

/* ---- slow server: concurrency against the ideal ----------------------------------------- */

/* opi_openai_get_images_batch with threads x per_thread descriptions and option parallel =
 * threads: every item of {"results": [...]} checked as a single answer is. */
static void batch_call(int threads, int per_thread) {
    int n = threads * per_thread;
    size_t one = strlen(DESCR) + 1;
    char *descrs = malloc(n * one + 3), *p = descrs;
    *p++ = '[';
    for (int i = 0; i < n; i++) p += sprintf(p, "%s%s", i ? "," : "", DESCR);
    strcpy(p, "]");
    char opts[1300];
    snprintf(opts, sizeof opts, "{\"parallel\":%d%s%s%s}", threads, ca ? ",\"ca_file\":\"" : "",
             ca ? ca : "", ca ? "\"" : "");
    char *r = opi_openai_get_images_batch(base, TOKEN, MODEL, descrs, NULL, opts);
    /* {"results":[A,B,...]} with every item as long as the reference answer */
    int good = r && ref.data && strncmp(r, "{\"results\":[", 12) == 0 &&
               strlen(r) == 12 + n * ref.len + (n - 1) + 2;
    const char *at = r ? r + 12 : NULL;
    for (int i = 0; good && i < n; i++) {
        good = strncmp(at, "{\"created\":", 11) == 0;
        for (size_t d = 11; good && d < ref.from; d++) good = at[d] >= '0' && at[d] <= '9';
        good = good && memcmp(at + ref.from, ref.data + ref.from, ref.len - ref.from) == 0;
        at += ref.len;
        good = good && *at == (i + 1 < n ? ',' : ']');
        at++;
    }
    if (!good) fail("opi_openai batch", "not the expected answers", r);
    opi_free_string(r);
    free(descrs);
}

static void figure_slow(int threads, int per_thread, int delay_ms, int rounds) {
    double over[2][MAX_ROUNDS], batch[MAX_ROUNDS];
    double ideal = per_thread * delay_ms / 1e3;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            enum side side = (r + k) % 2 ? LIBCURL : OURS;
            double wall, cpu_s;
            run_side(side, NULL, per_thread, threads, &wall, &cpu_s);
            over[side][r] = wall / ideal;
        }
        double t0 = now();
        if (opi_openai_get_images_batch) batch_call(threads, per_thread);
        batch[r] = opi_openai_get_images_batch ? (now() - t0) / ideal : 0;
    }
    char name[160];
    snprintf(name, sizeof name, "%s_x_ideal", key);
    report(name, "x_ideal", over[OURS], over[LIBCURL], rounds, 0);
    snprintf(name, sizeof name, "%s_batch_x_ideal", key);
    report_one(name, "x_ideal", batch, rounds);
}

/* ---- count: calls to run under callgrind ------------------------------------------------ */

/* `calls` checked calls by `side`. run.sh runs `count` under callgrind, collecting only inside
 * this function, twice with different numbers of calls: the difference over the difference of
 * calls is the instructions one call costs the client, set-up excluded. */
__attribute__((noinline)) void measured_calls(enum side side, struct curl_client *c, int calls) {
    for (int i = 0; i < calls; i++) one_call(side, c);
}

static int count_main(enum side side, int calls) {
    struct curl_client c;
    if (side == LIBCURL) curl_client_init(&c);
    for (int i = 0; i < 2; i++) one_call(side, &c); /* off the count: set-up, connection */
    measured_calls(side, &c, calls);
    if (side == LIBCURL) curl_client_free(&c);
    return failures ? 1 : 0;
}

/* ---- main ------------------------------------------------------------------------------- */

static const char *arg_str(int argc, char **argv, const char *name, const char *def) {
    for (int i = 3; i < argc - 1; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

/* Whether the flag `name` (which takes no value) is given. */
static int arg_flag(int argc, char **argv, const char *name) {
    for (int i = 3; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

static int arg_int(int argc, char **argv, const char *name, int def) {
    const char *v = arg_str(argc, argv, name, NULL);
    return v ? atoi(v) : def;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strncmp(argv[2], "http://", 7) != 0 && strncmp(argv[2], "https://", 8) != 0)) {
        fprintf(stderr, "usage: %s small|big|save|first|slow|count BASE --ref FILE [--ca FILE] [--key NAME]\n"
                        "  [--rounds R] [--small N] [--threads T] [--per-thread M] [--calls K]\n"
                        "  [--dir DIR] [--keep-b64] [--delay-ms D]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    self = argv[0];
    base = argv[2];
    ca = arg_str(argc, argv, "--ca", NULL);
    ref_path = arg_str(argc, argv, "--ref", NULL);
    key = arg_str(argc, argv, "--key", key);
    dir = arg_str(argc, argv, "--dir", NULL);
    int rounds = arg_int(argc, argv, "--rounds", 5);
    int threads = arg_int(argc, argv, "--threads", 8);
    int calls = arg_int(argc, argv, "--calls", 4);
    if (!ref_path || rounds < 1 || rounds > MAX_ROUNDS || threads < 1 || threads > MAX_THREADS ||
        calls < 1) {
        fprintf(stderr, "bench: --ref is required; rounds 1..%d, threads 1..%d\n", MAX_ROUNDS, MAX_THREADS);
        return 2;
    }
    if (base[strlen(base) - 1] != '/') {
        fprintf(stderr, "bench: BASE must end with /\n");
        return 2;
    }
    snprintf(url, sizeof url, "%sv1/images/generations", base);
    /* --ours-system: ours trusts the system store (SSL_CERT_FILE names a bundle with the test
     * CA), libcurl the same bundle through --ca: both load every system root. */
    int ours_system = arg_flag(argc, argv, "--ours-system");
    keep_b64 = arg_flag(argc, argv, "--keep-b64");
    if (ca && !ours_system) snprintf(options, sizeof options, "{\"ca_file\":\"%s\"}", ca);
    ref_load(ref_path);

    if (strcmp(mode, "child") == 0) {
        enum side side = strcmp(arg_str(argc, argv, "--side", "ours"), "ours") == 0 ? OURS : LIBCURL;
        if (side == OURS)
            load_ours();
        else
            load_libcurl();
        our_version = arg_str(argc, argv, "--our-version", "");
        return child_main(side, arg_str(argc, argv, "--what", "big"), calls);
    }

    load_ours();
    load_libcurl();
    our_version = opi_version();
    curl_global_init(CURL_GLOBAL_ALL);
    if (strcmp(mode, "count") == 0) {
        const char *side = arg_str(argc, argv, "--side", "ours");
        int status = count_main(strcmp(side, "ours") == 0 ? OURS : LIBCURL, calls);
        curl_global_cleanup();
        return status;
    }
    if (strcmp(mode, "small") == 0) {
        struct curl_client c;
        curl_client_init(&c);
        /* Warm-up: connections open, code paths hot, both answers checked. */
        run_side(OURS, &c, 50, 0, &(double){0}, &(double){0});
        run_side(LIBCURL, &c, 50, 0, &(double){0}, &(double){0});
        figure_calls("seq", arg_int(argc, argv, "--small", 2000), 0, rounds, &c);
        char what[32];
        snprintf(what, sizeof what, "t%d", threads);
        figure_calls(what, arg_int(argc, argv, "--per-thread", 300), threads, rounds, &c);
        curl_client_free(&c);
    } else if (strcmp(mode, "big") == 0 || strcmp(mode, "save") == 0 || strcmp(mode, "first") == 0) {
        if (strcmp(mode, "save") == 0 && !dir) {
            fprintf(stderr, "bench: save needs --dir\n");
            return 2;
        }
        figure_children(mode, calls, rounds);
    } else if (strcmp(mode, "slow") == 0) {
        figure_slow(threads, arg_int(argc, argv, "--per-thread", 25), arg_int(argc, argv, "--delay-ms", 50),
                    rounds);
    } else {
        fprintf(stderr, "bench: unknown mode %s\n", mode);
        return 2;
    }
    curl_global_cleanup();
    if (failures) {
        fprintf(stderr, "bench: %d calls failed their check\n", failures);
        return 1;
    }
    return 0;
}
