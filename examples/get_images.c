/* Generate an image through opi_openai from C.
 *
 *   cc -Wall -Wextra -Werror -Iinclude examples/get_images.c -Ltarget/release -lopi_openai -o get_images
 *   OPENAI_TOKEN=sk-... LD_LIBRARY_PATH=target/release ./get_images https://api.openai.com/v1 gpt-image-1.5 "A yellow alpaca"
 *
 * Arguments: URL [MODEL [PROMPT]]. The token comes from OPENAI_TOKEN (never from argv, so it
 * does not show in the process list). Prints the result JSON and exits 0 when it has no
 * "error" key, 1 when it has one, 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opi_openai.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s URL [MODEL [PROMPT]]   (token from OPENAI_TOKEN)\n", argv[0]);
        return 2;
    }
    const char *url = argv[1];
    const char *model = argc > 2 ? argv[2] : "gpt-image-1.5";
    const char *prompt = argc > 3 ? argv[3] : "Yellow alpaca";
    const char *token = getenv("OPENAI_TOKEN"); /* NULL is fine: no Authorization header */

    /* Build the description with the library (OPI's GetImageDescriptionStructure). */
    char *descr = opi_openai_get_image_description_structure(prompt, 1, NULL, "1024x1024",
                                                             "{'quality':'medium'}");
    /* Additional headers: optional, here one for illustration. */
    const char *headers = "{\"X-Client\": \"opi_openai C example\"}";

    char *result = opi_openai_get_images(url, token, model, descr, headers);
    opi_free_string(descr);

    /* A result is never NULL; a caller checks one key, "error". */
    int failed = strstr(result, "\"error\"") != NULL;
    printf("opi_openai %s\n%s\n", opi_version(), result);
    opi_free_string(result); /* exactly once */
    return failed ? 1 : 0;
}
