/* A host that loads the library, calls it (an IP address and a host name), and unloads it,
 * N times: after each dlclose the library must really have left the process (dlopen with
 * RTLD_NOLOAD finds nothing). Run under valgrind by tests/unload.rs: the process-wide caches
 * must be freed at each unload (0 bytes definitely lost).
 *
 * usage: unload LIBRARY URL_BY_IP URL_BY_NAME N */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef char *(*get_images_ex_fn)(const char *, const char *, const char *, const char *,
                                  const char *, const char *);
typedef void (*free_string_fn)(char *);

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s LIBRARY URL_BY_IP URL_BY_NAME N\n", argv[0]);
        return 2;
    }
    const char *library = argv[1];
    const char *urls[2] = {argv[2], argv[3]};
    int n = atoi(argv[4]);
    for (int i = 0; i < n; i++) {
        void *lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL) {
            fprintf(stderr, "iteration %d: dlopen: %s\n", i, dlerror());
            return 3;
        }
        get_images_ex_fn get_images_ex;
        free_string_fn free_string;
        /* POSIX: a data pointer from dlsym converts to a function pointer this way. */
        *(void **)&get_images_ex = dlsym(lib, "opi_openai_get_images_ex");
        *(void **)&free_string = dlsym(lib, "opi_free_string");
        if (get_images_ex == NULL || free_string == NULL) {
            fprintf(stderr, "iteration %d: dlsym: %s\n", i, dlerror());
            return 3;
        }
        for (int u = 0; u < 2; u++) {
            char *result = get_images_ex(urls[u], "sk-unload-test", "dall-e-3",
                                         "{\"prompt\":\"unload\",\"n\":1}", NULL,
                                         "{\"timeout\": 30}");
            if (result == NULL || strstr(result, "\"created\"") == NULL) {
                fprintf(stderr, "iteration %d, %s: %s\n", i, urls[u],
                        result ? result : "(NULL)");
                return 4;
            }
            free_string(result);
        }
        if (dlclose(lib) != 0) {
            fprintf(stderr, "iteration %d: dlclose: %s\n", i, dlerror());
            return 5;
        }
        void *still = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
        if (still != NULL) {
            fprintf(stderr, "iteration %d: the library is still loaded after dlclose\n", i);
            dlclose(still);
            return 6;
        }
    }
    printf("loaded, called and unloaded %d times\n", n);
    return 0;
}
