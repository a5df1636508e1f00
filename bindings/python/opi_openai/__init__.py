"""OPI's GetImages through the opi_openai native library, by ctypes.

    result = opi_openai.get_images(url, token, model, {"prompt": "Yellow alpaca"})

Every function returns the server's JSON as a dict, or raises OpiError when the result has an
``error`` key (an API error from the server, or a local failure: invalid argument, DNS,
connect, TLS, timeout, ...). The library is the one named by the OPI_OPENAI_LIB environment
variable, else one installed beside this package, else the system's ``opi_openai``.
"""

import ctypes
import ctypes.util
import json
import os
import sys
import threading

__all__ = ["get_images", "get_image_description_structure", "version", "OpiError", "library_path"]

_NAMES = {"win32": "opi_openai.dll", "darwin": "libopi_openai.dylib"}
_LOCK = threading.Lock()
_LIB = None


class OpiError(Exception):
    """The result's ``error``: ``code``, ``type``, ``param``, ``message``, the HTTP ``status``
    when there is one, and the whole ``result`` dict."""

    def __init__(self, result):
        error = result.get("error")
        if not isinstance(error, dict):
            error = {"message": str(error)}
        self.result = result
        self.code = error.get("code")
        self.type = error.get("type")
        self.param = error.get("param")
        self.message = error.get("message")
        self.status = error.get("status")
        super().__init__("%s (%s): %s" % (self.code, self.type, self.message))


def library_path():
    """The path of the library this package loads (see the module's documentation)."""
    explicit = os.environ.get("OPI_OPENAI_LIB")
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          _NAMES.get(sys.platform, "libopi_openai.so"))
    if os.path.exists(beside):
        return beside
    found = ctypes.util.find_library("opi_openai")
    if found:
        return found
    raise OSError("the opi_openai library was not found: set OPI_OPENAI_LIB to its path, "
                  "or copy it into %s before installing" % os.path.dirname(beside))


def _lib():
    global _LIB
    with _LOCK:
        if _LIB is None:
            lib = ctypes.CDLL(library_path())
            # Results are declared as void*, not c_char_p: the pointer must be kept to free it.
            for name, args in (
                ("opi_openai_get_images_ex", [ctypes.c_char_p] * 6),
                ("opi_openai_get_image_description_structure",
                 [ctypes.c_char_p, ctypes.c_int64, ctypes.c_char_p, ctypes.c_char_p,
                  ctypes.c_char_p]),
            ):
                function = getattr(lib, name)
                function.argtypes = args
                function.restype = ctypes.c_void_p
            lib.opi_free_string.argtypes = [ctypes.c_void_p]
            lib.opi_free_string.restype = None
            lib.opi_version.argtypes = []
            lib.opi_version.restype = ctypes.c_char_p
            _LIB = lib
    return _LIB


def _arg(value):
    """None stays NULL; dicts and lists become JSON; text is UTF-8."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise TypeError("expected str, bytes, dict or None, got %s" % type(value).__name__)


def _take(pointer):
    """Reads and frees a result; parses it; raises OpiError on an ``error`` key."""
    lib = _lib()
    try:
        text = ctypes.string_at(pointer).decode("utf-8")
    finally:
        lib.opi_free_string(pointer)
    result = json.loads(text)
    if isinstance(result, dict) and "error" in result:
        raise OpiError(result)
    return result


def get_images(url, token, model, descr, headers=None, options=None):
    """OPI's GetImages: POSTs the description to the images endpoint under ``url``.

    ``descr``, ``headers`` and ``options`` are dicts, JSON texts, OPI's single-quoted JSON
    or the path of a .json file; ``token`` and ``model`` may be None or empty. Returns the
    server's JSON as a dict; raises OpiError when it has an ``error`` key.
    """
    return _take(_lib().opi_openai_get_images_ex(
        _arg(url), _arg(token), _arg(model), _arg(descr), _arg(headers), _arg(options)))


def get_image_description_structure(prompt, count=1, background=None, size=None,
                                    additional=None):
    """OPI's GetImageDescriptionStructure: the description dict for ``get_images``."""
    return _take(_lib().opi_openai_get_image_description_structure(
        _arg(prompt), int(count), _arg(background), _arg(size), _arg(additional)))


def version():
    """The library's version."""
    return _lib().opi_version().decode("ascii")
