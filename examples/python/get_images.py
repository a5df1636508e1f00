#!/usr/bin/env python3
r"""Generate images through opi_openai from Python, with ctypes only (no package to install).

    cargo build --release
    OPENAI_TOKEN=sk-... python3 examples/python/get_images.py https://api.openai.com/ \
        [MODEL [DESCRIPTION [HEADERS]]]

URL: the server's base URL (required; nothing is started). MODEL defaults to gpt-image-1.5;
DESCRIPTION to {"prompt":"Yellow alpaca","n":1,"size":"1024x1024"} (JSON text, OPI's
single-quoted JSON, or a .json file path); HEADERS: extra headers as a JSON object.
The token comes from OPENAI_TOKEN (not argv, so it stays out of the process list).
The library: OPI_LIB, else target/release/ of this repository (libopi_openai.so, .dylib or
opi_openai.dll).

Prints the result JSON on stdout; exit status 0, or 1 when it has an "error" key.
"""

import ctypes
import json
import os
import sys
from pathlib import Path


def library_path():
    if os.environ.get("OPI_LIB"):
        return os.environ["OPI_LIB"]
    release = Path(__file__).resolve().parents[2] / "target" / "release"
    names = {"win32": "opi_openai.dll", "darwin": "libopi_openai.dylib"}
    return str(release / names.get(sys.platform, "libopi_openai.so"))


def load(path):
    lib = ctypes.CDLL(path)
    # char* results are owned by us and freed with opi_free_string: declare them as plain
    # pointers. With c_char_p, ctypes would copy the text into bytes and drop the pointer,
    # and the string could never be freed.
    lib.opi_openai_get_images.restype = ctypes.c_void_p
    lib.opi_openai_get_images.argtypes = [ctypes.c_char_p] * 5
    lib.opi_free_string.restype = None
    lib.opi_free_string.argtypes = [ctypes.c_void_p]
    lib.opi_version.restype = ctypes.c_char_p  # static: never freed
    lib.opi_version.argtypes = []
    return lib


def get_images(lib, url, token, model, descr, headers=None):
    """OPI's GetImages: the result JSON text (a str)."""
    arg = lambda s: None if s is None else s.encode("utf-8")
    ptr = lib.opi_openai_get_images(arg(url), arg(token), arg(model), arg(descr), arg(headers))
    try:
        return ctypes.string_at(ptr).decode("utf-8")
    finally:
        lib.opi_free_string(ptr)  # exactly once


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    url = argv[1]
    model = argv[2] if len(argv) > 2 else "gpt-image-1.5"
    descr = argv[3] if len(argv) > 3 else '{"prompt":"Yellow alpaca","n":1,"size":"1024x1024"}'
    headers = argv[4] if len(argv) > 4 else None
    lib = load(library_path())
    result = get_images(lib, url, os.environ.get("OPENAI_TOKEN"), model, descr, headers)
    print(result)
    return 1 if "error" in json.loads(result) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
