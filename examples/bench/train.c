/* The training run of profile-guided optimisation (scripts/pgo.sh): the calls users make, in
 * roughly the proportions a busy host makes them, against examples/local_server.rs on
 * 127.0.0.1. The instrumented library counts which code runs how often; the optimised build
 * lays that code out together and optimises it for speed (the rest for size).
 *
 *   train HTTP_URL HTTPS_URL CA_FILE SAVE_DIR [first]
 *
 * HTTP_URL and HTTPS_URL are local_server's base URLs (started with --big-mb and --tls-ca
 * CA_FILE); SAVE_DIR is an empty folder for save_dir. With `first`, only a few calls of each
 * kind: what a process's first calls run once (setting up, a TLS handshake, loading the CA
 * file). Code that the whole training ran once counts as never run and is laid out with the
 * cold code, so scripts/pgo.sh runs `first` several times beside one full run. Every call's result is checked: a
 * training run whose calls fail would teach the compiler the error paths, so any unexpected
 * result ends it with status 1 and the result on stderr.
 */
#include "opi_openai.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *http_url, *https_url, *ca_file, *save_dir;
static const char *TOKEN = "sk-train-token";
static const char *MODEL = "gpt-image-1";
/* The descriptions OPI's examples give, in its three forms (JSON, single-quoted JSON). */
static const char *DESCRS[] = {
    "{\"prompt\":\"Yellow alpaca\",\"n\":1,\"size\":\"1024x1024\"}",
    "{'prompt':'Yellow alpaca','background':'transparent','size':'1024x1024'}",
    "{\"prompt\":\"A red fox in the snow, watercolour\",\"quality\":\"high\",\"n\":2}",
};

/* Ends the run unless `result` is an answer (`want_ok`) or an error result (otherwise). */
static void check(char *result, int want_ok, const char *what) {
    int ok = result && strncmp(result, "{\"error\"", 8) != 0;
    if (ok != want_ok) {
        fprintf(stderr, "train: %s: unexpected result: %.400s\n", what, result ? result : "NULL");
        exit(1);
    }
    opi_free_string(result);
}

static void small_calls(const char *url, const char *options, int n) {
    for (int i = 0; i < n; i++) {
        const char *headers = i % 4 == 0 ? "{\"X-Request-Source\":\"train\"}" : NULL;
        const char *descr = DESCRS[i % 3];
        char *r = options ? opi_openai_get_images_ex(url, TOKEN, MODEL, descr, headers, options)
                          : opi_openai_get_images(url, TOKEN, MODEL, descr, headers);
        check(r, 1, "small call");
    }
}

static void *thread_calls(void *arg) {
    (void)arg;
    small_calls(http_url, NULL, 300);
    return NULL;
}

static int on_event(void *user_data, const char *event_json) {
    (*(int *)user_data)++;
    return strstr(event_json, "\"type\"") == NULL; /* 0: go on */
}

int main(int argc, char **argv) {
    int first = argc == 6 && strcmp(argv[5], "first") == 0;
    if (argc != 5 && !first) {
        fprintf(stderr, "usage: train HTTP_URL HTTPS_URL CA_FILE SAVE_DIR [first]\n");
        return 2;
    }
    http_url = argv[1], https_url = argv[2], ca_file = argv[3], save_dir = argv[4];
    char tls[1024], save[1024], save_big[1024], big_http[512], big_https[512];
    snprintf(tls, sizeof tls, "{\"ca_file\":\"%s\"}", ca_file);
    snprintf(save, sizeof save, "{\"save_dir\":\"%s\"}", save_dir);
    snprintf(save_big, sizeof save_big, "{\"save_dir\":\"%s\",\"drop_b64\":true}", save_dir);
    snprintf(big_http, sizeof big_http, "%sbig/", http_url);
    snprintf(big_https, sizeof big_https, "%sbig/", https_url);

    if (first) {
        small_calls(http_url, NULL, 3);
        small_calls(https_url, tls, 3);
        check(opi_openai_get_images_ex(big_http, TOKEN, MODEL, DESCRS[0], NULL, save_big), 1,
              "big saving call");
        int events = 0;
        check(opi_openai_get_images_stream(
                  https_url, TOKEN, MODEL,
                  "{\"prompt\":\"Yellow alpaca\",\"stream\":true,\"partial_images\":1}", NULL, tls,
                  on_event, &events),
              1, "streaming call");
        check(opi_openai_get_images_batch(http_url, TOKEN, MODEL, "[{\"prompt\":\"a\"},{\"prompt\":\"b\"}]",
                                          NULL, NULL),
              1, "batch");
        return 0;
    }
    /* Descriptions built by the library (OPI's GetImageDescriptionStructure). */
    for (int i = 0; i < 200; i++)
        check(opi_openai_get_image_description_structure("Yellow alpaca", 1 + i % 2, "opaque",
                                                         "1024x1024", NULL),
              1, "description structure");
    /* Small calls, one thread, then four at once: most of what a 1C server does. */
    small_calls(http_url, NULL, 3000);
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&threads[i], NULL, thread_calls, NULL) != 0) return 1;
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    /* Answers gzip-encoded, as OpenAI's servers send them. */
    char gzip[512];
    snprintf(gzip, sizeof gzip, "%sgzip/", http_url);
    small_calls(gzip, NULL, 500);
    /* HTTPS, trusting the test CA. */
    small_calls(https_url, tls, 1500);
    /* Big answers (local_server --big-mb), plain and over TLS, kept and saved. */
    for (int i = 0; i < 4; i++)
        check(opi_openai_get_images(big_http, TOKEN, MODEL, DESCRS[0], NULL), 1, "big call");
    for (int i = 0; i < 2; i++)
        check(opi_openai_get_images_ex(big_https, TOKEN, MODEL, DESCRS[0], NULL, tls), 1,
              "big HTTPS call");
    for (int i = 0; i < 2; i++)
        check(opi_openai_get_images_ex(big_http, TOKEN, MODEL, DESCRS[0], NULL, save_big), 1,
              "big saving call");
    small_calls(http_url, save, 100);
    /* Streaming: partial images, then the completed event. */
    for (int i = 0; i < 300; i++) {
        int events = 0;
        char *r = opi_openai_get_images_stream(
            http_url, TOKEN, MODEL, "{\"prompt\":\"Yellow alpaca\",\"stream\":true,\"partial_images\":2}",
            NULL, NULL, on_event, &events);
        check(r, 1, "streaming call");
        if (events != 3) {
            fprintf(stderr, "train: streaming call: %d events, not 3\n", events);
            return 1;
        }
    }
    /* Batches. */
    for (int i = 0; i < 50; i++) {
        char *r = opi_openai_get_images_batch(
            http_url, TOKEN, MODEL,
            "[{\"prompt\":\"a\"},{\"prompt\":\"b\",\"n\":2},\"{'prompt':'c'}\",{\"prompt\":\"d\"}]",
            NULL, NULL);
        check(r, 1, "batch");
    }
    /* Errors users meet: a description that is not JSON, an unknown option, a refused
     * connection (port 1 of 127.0.0.1: nothing listens there). */
    for (int i = 0; i < 200; i++) {
        check(opi_openai_get_images(http_url, TOKEN, MODEL, "{\"prompt\": ", NULL), 0, "bad JSON");
        check(opi_openai_get_images_ex(http_url, TOKEN, MODEL, DESCRS[0], NULL, "{\"timeot\":5}"),
              0, "bad option");
        check(opi_openai_get_images_ex("http://127.0.0.1:1/", TOKEN, MODEL, DESCRS[0], NULL,
                                       "{\"retries\":0}"),
              0, "refused");
    }
    printf("train: done\n");
    return 0;
}
