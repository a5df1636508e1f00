/* The streaming and batch C API, run by tests/capi.rs (and under valgrind).
 * Usage: stream STREAM_URL BATCH_URL. STREAM_URL answers prompts "normal" with three partial
 * images and a completed event, "slow" with a partial image and then nothing for seconds.
 * BATCH_URL answers every request with one image. Prints one line per check; exits 1 when any
 * check failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opi_openai.h"

static int failures = 0;

static void check(const char *name, int ok, const char *detail) {
    printf("%s %s%s%.300s\n", ok ? "ok  " : "FAIL", name, detail ? ": " : "", detail ? detail : "");
    if (!ok) failures++;
}

static int contains(const char *text, const char *needle) {
    return text != NULL && strstr(text, needle) != NULL;
}

/* What the callback saw: counts per kind, the last index, a copy of the last event. */
struct seen {
    int partial, completed, other;
    int stop_after; /* return nonzero at this event (1-based); 0: never */
    char *last;
};

static int on_event(void *user_data, const char *event_json) {
    struct seen *s = user_data;
    if (contains(event_json, "\"image_generation.partial_image\"")) s->partial++;
    else if (contains(event_json, "\"image_generation.completed\"")) s->completed++;
    else s->other++;
    /* The event string is the library's: copy what is kept. */
    free(s->last);
    s->last = malloc(strlen(event_json) + 1);
    if (s->last != NULL) strcpy(s->last, event_json);
    return s->stop_after != 0 && s->partial + s->completed + s->other >= s->stop_after;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *stream_url = argv[1], *batch_url = argv[2];
    const char *normal = "{'prompt':'normal','partial_images':3}";
    char *r;

    struct seen s = {0, 0, 0, 0, NULL};
    r = opi_openai_get_images_stream(stream_url, "sk-c-stream", "gpt-image-1.5", normal, NULL, NULL, on_event, &s);
    check("stream result", contains(r, "\"created\"") && contains(r, "\"usage\"") && !contains(r, "\"error\""), r);
    check("stream events", s.partial == 3 && s.completed == 1 && s.other == 0, s.last);
    check("stream last event", contains(s.last, "\"b64_json\""), NULL);
    opi_free_string(r);
    free(s.last);

    r = opi_openai_get_images_stream(stream_url, NULL, NULL, normal, NULL, "", NULL, NULL);
    check("stream without a callback", contains(r, "\"data\"") && !contains(r, "\"error\""), r);
    opi_free_string(r);

    struct seen stop = {0, 0, 0, 1, NULL};
    r = opi_openai_get_images_stream(stream_url, "t", "m", "{'prompt':'slow'}", NULL, NULL, on_event, &stop);
    check("nonzero return cancels", contains(r, "\"cancelled\"") && stop.partial == 1, r);
    opi_free_string(r);
    free(stop.last);

    r = opi_openai_get_images_stream(NULL, "t", "m", normal, NULL, NULL, on_event, NULL);
    check("stream NULL url", contains(r, "\"param\":\"url\""), r);
    opi_free_string(r);
    r = opi_openai_get_images_stream(stream_url, "t", "m", NULL, NULL, NULL, NULL, NULL);
    check("stream NULL descr", contains(r, "\"param\":\"descr\""), r);
    opi_free_string(r);
    r = opi_openai_get_images_stream(stream_url, "t", "m", normal, NULL, "{'parallel':99}", NULL, NULL);
    check("stream bad options", contains(r, "\"param\":\"options\""), r);
    opi_free_string(r);

    r = opi_openai_get_images_batch(batch_url, "sk-c-batch", "gpt-image-1-mini",
                                    "[{'prompt':'a'}, \"{'prompt':'b'}\", 7]", NULL, "{'parallel':2}");
    check("batch", contains(r, "{\"results\":[{\"created\"") && contains(r, "\"param\":\"descrs\""), r);
    opi_free_string(r);
    r = opi_openai_get_images_batch(batch_url, "t", "m", NULL, NULL, NULL);
    check("batch NULL descrs", contains(r, "\"param\":\"descrs\""), r);
    opi_free_string(r);
    r = opi_openai_get_images_batch(batch_url, "t", "m", "{'prompt':'not an array'}", NULL, NULL);
    check("batch not an array", contains(r, "must be a JSON array"), r);
    opi_free_string(r);

    printf("%s\n", failures ? "FAILED" : "ALL OK");
    return failures ? 1 : 0;
}
