/* opi_openai against libcurl: the same POST to the same local server, in one process.
 *
 * Built and run by examples/bench/run.sh; by hand:
 *   cc -O2 -Wall -Wextra -Werror -Iinclude examples/bench/bench.c \
 *      -Ltarget/release -Wl,-rpath,$PWD/target/release -lopi_openai $(curl-config --libs) -lpthread \
 *      -o /tmp/opi_bench
 *   /tmp/opi_bench http://127.0.0.1:PORT/      (a local_server started with --big-mb N)
 *
 * Options: --small N (sequential small calls per round), --threads T, --per-thread M,
 *          --big K (big-body calls per round), --rounds R, --no-big.
 *
 * Both sides make the same request: POST BASE/v1/images/generations with the body
 * {"model":"dall-e-3","prompt":"Yellow alpaca","n":1,"size":"1024x1024"} and the headers
 * opi_openai sends (Accept, Accept-Charset, Accept-Encoding: gzip, Connection: keep-alive,
 * Content-Type, User-Agent, Authorization), over a kept-alive connection, and hand the caller
 * a NUL-terminated heap string that the caller frees. libcurl: one easy handle per thread,
 * reused, the body gathered in a buffer that doubles as it grows. opi_openai: the C ABI as a
 * user calls it (it also checks the body is JSON and UTF-8, which libcurl does not).
 *
 * Each figure is the median of R rounds; the sides alternate within a round so that both
 * see the same machine state. Two measures: the rate (calls/s or MiB/s, wall clock, server
 * included, ratio = ours / libcurl) and the client's CPU time per call or per MiB (user +
 * system of this process, server excluded, ratio = libcurl / ours). Every ratio reads the
 * same way: above 1, ours is better.
 * Exit status: 0, or 1 when any call of either side did not return the expected answer. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "opi_openai.h"

#define MAX_ROUNDS 15
#define MAX_THREADS 64

static const char *DESCR = "{\"prompt\":\"Yellow alpaca\",\"n\":1,\"size\":\"1024x1024\"}";
static const char *BODY = "{\"model\":\"dall-e-3\",\"prompt\":\"Yellow alpaca\",\"n\":1,\"size\":\"1024x1024\"}";
static const char *TOKEN = "sk-bench";
static const char *MODEL = "dall-e-3";

static char base_small[512], base_big[512], url_small[600], url_big[600];
static int failures;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *who, const char *what, const char *text) {
    pthread_mutex_lock(&fail_lock);
    if (failures++ < 5)
        fprintf(stderr, "bench: %s: %s: %.200s\n", who, what, text ? text : "(null)");
    pthread_mutex_unlock(&fail_lock);
}

/* An image answer: a JSON object with "created" and "data", not an error. */
static void check(const char *who, const char *text) {
    if (!text || strncmp(text, "{\"created\":", 11) != 0 || !strstr(text, "\"data\"") ||
        strstr(text, "\"error\""))
        fail(who, "unexpected answer", text);
}

/* ---- opi_openai ------------------------------------------------------------------------ */

static char *ours_call(const char *base) {
    return opi_openai_get_images(base, TOKEN, MODEL, DESCR, NULL);
}

/* ---- libcurl --------------------------------------------------------------------------- */

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
    snprintf(ua, sizeof ua, "User-Agent: opi_openai/%s", opi_version());
    c->headers = NULL;
    c->headers = curl_slist_append(c->headers, "Accept: */*");
    c->headers = curl_slist_append(c->headers, "Accept-Charset: utf-8");
    c->headers = curl_slist_append(c->headers, "Connection: keep-alive");
    c->headers = curl_slist_append(c->headers, "Content-Type: application/json; charset=utf-8");
    c->headers = curl_slist_append(c->headers, ua);
    c->headers = curl_slist_append(c->headers, auth);
    c->easy = curl_easy_init();
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->easy, CURLOPT_ACCEPT_ENCODING, "gzip"); /* sends it, decodes gzip */
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, BODY);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(BODY));
}

static void curl_client_free(struct curl_client *c) {
    curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
}

/* The answer as a NUL-terminated heap string the caller frees, as opi_openai returns it. */
static char *curl_call(struct curl_client *c, const char *url) {
    struct buf b = {0};
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
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

/* ---- measurements ---------------------------------------------------------------------- */

/* CPU seconds (user + system) this process has used: the client side only, as the server is
 * another process. Wall-clock rates include the server's work, which both sides share; CPU
 * per call isolates what each client costs. */
static double cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One side's work for one figure. */
enum side { OURS, LIBCURL };
enum kind { SEQUENTIAL, THREADED, BIG };

struct sample {
    double wall, cpu; /* seconds */
};

/* One call by one side; checks the first answer of a run. */
static void one_call(enum side side, struct curl_client *c, int big, int check_it) {
    if (side == LIBCURL) {
        char *r = curl_call(c, big ? url_big : url_small);
        if (check_it) check("libcurl", r);
        free(r);
    } else {
        char *r = ours_call(big ? base_big : base_small);
        if (check_it) check("opi_openai", r);
        opi_free_string(r);
    }
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
    one_call(w->side, &c, 0, 0); /* this thread's connection, before the clock */
    pthread_barrier_wait(w->start);
    for (int i = 0; i < w->calls; i++) one_call(w->side, &c, 0, i == 0);
    if (w->side == LIBCURL) curl_client_free(&c);
    return NULL;
}

/* `calls` calls (per thread, for THREADED) by one side: wall and client CPU seconds. */
static struct sample run_side(enum kind kind, enum side side, struct curl_client *c, int calls,
                              int threads) {
    double t0 = now(), c0 = cpu();
    if (kind == THREADED) {
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
        for (int i = 0; i < calls; i++) one_call(side, c, kind == BIG, i == 0 || i == calls - 1);
    }
    return (struct sample){now() - t0, cpu() - c0};
}

/* `rounds` rounds of both sides (alternating who goes first); prints the medians of
 * units/s (units = calls or MiB) and of client CPU microseconds per unit. */
static void figure(const char *key, const char *label, const char *unit, enum kind kind,
                   struct curl_client *c, int calls, int threads, double units, int rounds) {
    double rate[2][MAX_ROUNDS], cost[2][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            enum side side = (r + k) % 2 ? LIBCURL : OURS;
            struct sample s = run_side(kind, side, c, calls, threads);
            rate[side][r] = units / s.wall;
            cost[side][r] = s.cpu * 1e6 / units;
        }
    }
    double ours = median(rate[OURS], rounds), curl = median(rate[LIBCURL], rounds);
    double ours_cpu = median(cost[OURS], rounds), curl_cpu = median(cost[LIBCURL], rounds);
    const char *per = strcmp(unit, "MiB/s") == 0 ? "us/MiB" : "us/call";
    printf("%-26s ours %9.1f %-7s libcurl %9.1f %-7s ratio %.2f | client CPU ours %8.1f %s, "
           "libcurl %8.1f, ratio %.2f\n",
           label, ours, unit, curl, unit, ours / curl, ours_cpu, per, curl_cpu, curl_cpu / ours_cpu);
    /* ratio: above 1 means ours is better (faster; or, for CPU, cheaper). */
    printf("RESULT %s ours=%.1f libcurl=%.1f unit=%s ratio=%.3f\n", key, ours, curl, unit, ours / curl);
    printf("RESULT %s_cpu ours=%.1f libcurl=%.1f unit=%s ratio=%.3f\n", key, ours_cpu, curl_cpu, per,
           curl_cpu / ours_cpu);
    fflush(stdout);
}

static int arg_int(int argc, char **argv, const char *name, int def) {
    for (int i = 2; i < argc - 1; i++)
        if (strcmp(argv[i], name) == 0) return atoi(argv[i + 1]);
    return def;
}

static int has_flag(int argc, char **argv, const char *name) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || strncmp(argv[1], "http://", 7) != 0) {
        fprintf(stderr, "usage: %s http://127.0.0.1:PORT/ [--small N] [--threads T] [--per-thread M] "
                        "[--big K] [--rounds R] [--no-big]\n", argv[0]);
        return 2;
    }
    int small = arg_int(argc, argv, "--small", 2000);
    int threads = arg_int(argc, argv, "--threads", 8);
    int per_thread = arg_int(argc, argv, "--per-thread", 300);
    int big = arg_int(argc, argv, "--big", 4);
    int rounds = arg_int(argc, argv, "--rounds", 5);
    int do_big = !has_flag(argc, argv, "--no-big");
    if (rounds < 1 || rounds > MAX_ROUNDS || threads < 1 || threads > MAX_THREADS || small < 1 ||
        per_thread < 1 || big < 1) {
        fprintf(stderr, "bench: bad numbers (rounds 1..%d, threads 1..%d)\n", MAX_ROUNDS, MAX_THREADS);
        return 2;
    }
    const char *base = argv[1];
    const char *slash = base[strlen(base) - 1] == '/' ? "" : "/";
    snprintf(base_small, sizeof base_small, "%s%s", base, slash);
    snprintf(base_big, sizeof base_big, "%s%sbig/", base, slash);
    snprintf(url_small, sizeof url_small, "%sv1/images/generations", base_small);
    snprintf(url_big, sizeof url_big, "%sv1/images/generations", base_big);

    curl_global_init(CURL_GLOBAL_ALL);
    printf("opi_openai %s vs %s\nserver %s; %d rounds, median; ratio above 1: ours is better\n",
           opi_version(), curl_version(), base_small, rounds);
    struct curl_client c;
    curl_client_init(&c);

    /* Warm-up: connections open, code paths hot, both answers checked. */
    run_side(SEQUENTIAL, OURS, &c, 50, 1);
    run_side(SEQUENTIAL, LIBCURL, &c, 50, 1);

    figure("small_sequential", "small calls, sequential", "calls/s", SEQUENTIAL, &c, small, 1, small,
           rounds);
    char label[64], key[64];
    snprintf(label, sizeof label, "small calls, %d threads", threads);
    snprintf(key, sizeof key, "small_threads_%d", threads);
    figure(key, label, "calls/s", THREADED, &c, per_thread, threads, (double)threads * per_thread,
           rounds);

    if (do_big) {
        /* Both sides must hand over the very same bytes. */
        char *a = ours_call(base_big), *b = curl_call(&c, url_big);
        check("opi_openai", a);
        check("libcurl", b);
        if (!a || !b || strcmp(a, b) != 0) fail("big body", "the two sides returned different bytes", NULL);
        double mb = b ? strlen(b) / (1024.0 * 1024.0) : 0;
        opi_free_string(a);
        free(b);
        if (mb > 0) {
            snprintf(label, sizeof label, "%.0f MiB body", mb);
            figure("big_body", label, "MiB/s", BIG, &c, big, 1, big * mb, rounds);
        }
    }

    curl_client_free(&c);
    curl_global_cleanup();
    if (failures) {
        fprintf(stderr, "bench: %d calls failed\n", failures);
        return 1;
    }
    return 0;
}
