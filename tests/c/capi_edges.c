/* Edge cases of the C ABI, run by tests/capi.rs (and under valgrind): NULLs, invalid UTF-8,
 * bad JSON, hostile headers, free(NULL), the version string, many calls from threads.
 * Usage: capi_edges URL. Prints one line per check; exits non-zero on the first failure. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opi_openai.h"

static int failures = 0;

static void expect(const char *name, char *result, const char *needle1, const char *needle2) {
    int ok = result != NULL && strstr(result, needle1) != NULL &&
             (needle2 == NULL || strstr(result, needle2) != NULL);
    printf("%s %s: %s\n", ok ? "ok  " : "FAIL", name, result ? result : "(NULL)");
    if (!ok) failures++;
    opi_free_string(result);
}

static const char *URL;
/* The base64 image the test server returns (images_handler: the same PNG for every call). */
static char *B64;

/* Checks a whole result of the test server's images_handler for `prompt`:
 * {"created":<digits>,"data":[{"b64_json":"<B64>","revised_prompt":"<prompt>"}]}
 * byte for byte except the created number (it counts requests): a result that is truncated,
 * mixed up with another thread's, or an error fails. */
static int is_images_result(const char *r, const char *prompt) {
    const char *head = "{\"created\":";
    if (r == NULL || strncmp(r, head, strlen(head)) != 0) return 0;
    r += strlen(head);
    if (*r < '0' || *r > '9') return 0;
    while (*r >= '0' && *r <= '9') r++;
    const char *data = ",\"data\":[{\"b64_json\":\"";
    if (strncmp(r, data, strlen(data)) != 0) return 0;
    r += strlen(data);
    if (strncmp(r, B64, strlen(B64)) != 0) return 0;
    r += strlen(B64);
    char tail[256];
    snprintf(tail, sizeof tail, "\",\"revised_prompt\":\"%s\"}]}", prompt);
    return strcmp(r, tail) == 0;
}

static void *worker(void *arg) {
    intptr_t id = (intptr_t)arg; /* long is 32-bit on Windows */
    for (int i = 0; i < 10; i++) {
        char prompt[64], descr[128];
        snprintf(prompt, sizeof prompt, "thread %d call %d", (int)id, i);
        snprintf(descr, sizeof descr, "{\"prompt\":\"%s\"}", prompt);
        char *r = opi_openai_get_images(URL, "sk-c-test", "m", descr, NULL);
        if (!is_images_result(r, prompt)) {
            printf("FAIL thread %d call %d: %.300s\n", (int)id, i, r ? r : "(NULL)");
            __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
        }
        opi_free_string(r);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    URL = argv[1];
    const char *descr = "{'prompt':'Yellow alpaca','n':1}";
    const char bad_utf8[] = {'{', '"', 'p', '"', ':', '"', (char)0xff, (char)0xfe, '"', '}', 0};

    expect("success", opi_openai_get_images(URL, "sk-c-test", "dall-e-3", descr, ""), "\"created\"", NULL);
    expect("NULL token and model", opi_openai_get_images(URL, NULL, NULL, descr, NULL), "\"created\"", NULL);
    expect("NULL url", opi_openai_get_images(NULL, "t", "m", descr, NULL), "\"invalid_argument\"", "\"param\":\"url\"");
    expect("NULL descr", opi_openai_get_images(URL, "t", "m", NULL, NULL), "\"invalid_argument\"", "\"param\":\"descr\"");
    expect("invalid UTF-8 descr", opi_openai_get_images(URL, "t", "m", bad_utf8, NULL), "\"param\":\"descr\"", "UTF-8");
    expect("invalid UTF-8 token", opi_openai_get_images(URL, bad_utf8, "m", descr, NULL), "\"param\":\"token\"", NULL);
    expect("invalid UTF-8 model", opi_openai_get_images(URL, "t", bad_utf8, descr, NULL), "\"param\":\"model\"", NULL);
    expect("invalid UTF-8 headers", opi_openai_get_images(URL, "t", "m", descr, bad_utf8), "\"param\":\"headers\"", NULL);
    expect("malformed descr", opi_openai_get_images(URL, "t", "m", "{'prompt':", NULL), "\"param\":\"descr\"", NULL);
    expect("header injection", opi_openai_get_images(URL, "t", "m", descr, "{\"X\":\"a\\r\\nB: c\"}"), "\"param\":\"headers\"", NULL);
    expect("bad options", opi_openai_get_images_ex(URL, "t", "m", descr, NULL, "{\"no_such_key\":1}"), "\"param\":\"options\"", "no_such_key");
    expect("options retries 0", opi_openai_get_images_ex(URL, "t", "m", descr, NULL, "{'retries':0}"), "\"created\"", NULL);
    expect("description structure", opi_openai_get_image_description_structure("Yellow alpaca", 1, NULL, "1024x1024", NULL),
           "{\"prompt\":\"Yellow alpaca\",\"n\":1,\"size\":\"1024x1024\"}", NULL);
    expect("description structure all empty", opi_openai_get_image_description_structure(NULL, 0, "", NULL, ""), "{}", NULL);
    expect("description structure bad additional", opi_openai_get_image_description_structure("p", 1, NULL, NULL, "[1]"),
           "\"param\":\"additional\"", NULL);
    opi_free_string(NULL);
    printf("ok   free NULL\n");
    /* Freeing does not read the string (its size was recorded), so a pointer that is not a
     * live result is ignored: twice the same one, the static version string, a stack buffer. */
    char *twice = opi_openai_get_image_description_structure("twice", 1, NULL, NULL, NULL);
    opi_free_string(twice);
    opi_free_string(twice);
    opi_free_string((char *)opi_version());
    char on_stack[8] = "abc";
    opi_free_string(on_stack);
    printf("ok   free twice, free foreign pointers: ignored\n");
    const char *v = opi_version();
    if (v == NULL || strlen(v) == 0) { printf("FAIL version\n"); failures++; } else printf("ok   version %s\n", v);

    /* The image every answer carries, from one call, for the threads' whole-result checks. */
    char *first = opi_openai_get_images(URL, "sk-c-test", "m", "{'prompt':'reference'}", NULL);
    const char *start = first ? strstr(first, "\"b64_json\":\"") : NULL;
    const char *end = start ? strchr(start + 12, '"') : NULL;
    if (end == NULL) {
        printf("FAIL reference call: %s\n", first ? first : "(NULL)");
        return 1;
    }
    start += 12;
    B64 = malloc((size_t)(end - start) + 1);
    memcpy(B64, start, (size_t)(end - start));
    B64[end - start] = 0;
    if (!is_images_result(first, "reference")) {
        printf("FAIL reference result: %s\n", first);
        failures++;
    }
    opi_free_string(first);

    pthread_t threads[8];
    for (intptr_t t = 0; t < 8; t++) pthread_create(&threads[t], NULL, worker, (void *)t);
    for (int t = 0; t < 8; t++) pthread_join(threads[t], NULL);
    printf("%s threads: 80 whole results checked\n", failures ? "FAIL" : "ok  ");
    free(B64);
    return failures ? 1 : 0;
}
