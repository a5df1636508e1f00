#!/usr/bin/env python3
"""opi_openai (through ctypes) against the official openai-python SDK, same server, same call.

    python3 examples/bench/bench_openai.py http://127.0.0.1:PORT/ [--lib PATH] [--calls N] [--rounds R]

Run by examples/bench/run.sh against examples/local_server.rs. Needs `pip install openai`.

Both sides make POST BASE/v1/images/generations with
{"model":"dall-e-3","prompt":"Yellow alpaca","n":1,"size":"1024x1024"} over a kept-alive
connection and give the caller the answer as Python objects:
- SDK: `OpenAI(base_url=BASE + "v1", api_key=..., max_retries=0).images.generate(...)`, which
  returns a parsed `ImagesResponse`;
- ours: `opi_openai_get_images` through ctypes, the JSON text copied into Python bytes, the
  string freed with `opi_free_string`, then `json.loads` (the "ours, parsed" figure; the
  headline ratio). "ours, text" stops at the bytes.
Each figure is the median of R rounds; sides alternate within a round. Two measures: calls/s
(wall clock, server included; ratio = ours / SDK) and the client's CPU time per call
(`time.process_time`, server excluded; ratio = SDK / ours). Above 1, ours is better.
Exit status 1 when any call did not return the expected answer.
"""

import argparse
import ctypes
import json
import os
import statistics
import sys
import time

PROMPT, MODEL, SIZE = "Yellow alpaca", "dall-e-3", "1024x1024"
DESCR = json.dumps({"prompt": PROMPT, "n": 1, "size": SIZE}).encode()


def load_library(path):
    lib = ctypes.CDLL(path)
    # The result is a pointer we must free: c_void_p, not c_char_p (which would copy the
    # text and lose the pointer).
    lib.opi_openai_get_images.restype = ctypes.c_void_p
    lib.opi_openai_get_images.argtypes = [ctypes.c_char_p] * 5
    lib.opi_free_string.restype = None
    lib.opi_free_string.argtypes = [ctypes.c_void_p]
    lib.opi_version.restype = ctypes.c_char_p
    return lib


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="server base URL, e.g. http://127.0.0.1:8080/")
    ap.add_argument("--lib", default=os.environ.get("OPI_LIB", "target/release/libopi_openai.so"))
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    base = args.base if args.base.endswith("/") else args.base + "/"

    import openai  # imported here so that --help works without it

    lib = load_library(args.lib)
    client = openai.OpenAI(base_url=base + "v1", api_key="sk-bench", max_retries=0, timeout=60)
    failures = []

    def ours_text():
        ptr = lib.opi_openai_get_images(base.encode(), b"sk-bench", MODEL.encode(), DESCR, None)
        try:
            return ctypes.string_at(ptr)
        finally:
            lib.opi_free_string(ptr)

    def ours_parsed():
        return json.loads(ours_text())

    def sdk():
        return client.images.generate(model=MODEL, prompt=PROMPT, n=1, size=SIZE)

    def check(name, answer):
        if name == "sdk":
            ok = answer.created > 0 and answer.data and answer.data[0].b64_json
        else:
            obj = json.loads(answer) if isinstance(answer, bytes) else answer
            ok = "error" not in obj and obj.get("created", 0) > 0 and obj["data"][0]["b64_json"]
        if not ok:
            failures.append((name, str(answer)[:200]))

    sides = {"ours, text": ours_text, "ours, parsed": ours_parsed, "sdk": sdk}
    for name, call in sides.items():  # warm-up: connections open, code paths hot
        for _ in range(30):
            check(name, call())

    rates = {name: [] for name in sides}
    costs = {name: [] for name in sides}  # client CPU microseconds per call
    order = list(sides)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else reversed(order):
            call = sides[name]
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(args.calls):
                answer = call()
                if i == 0:
                    check(name, answer)
            rates[name].append(args.calls / (time.perf_counter() - t0))
            costs[name].append((time.process_time() - c0) * 1e6 / args.calls)

    med = {name: statistics.median(v) for name, v in rates.items()}
    cpu = {name: statistics.median(v) for name, v in costs.items()}
    print(f"opi_openai {lib.opi_version().decode()} vs openai-python {openai.__version__} "
          f"(Python {sys.version.split()[0]})\nserver {base}; {args.rounds} rounds, median; "
          f"ratio above 1: ours is better")
    for name in ("ours, text", "ours, parsed"):
        print(f"{'small calls (' + name + ')':26} ours {med[name]:9.1f} calls/s openai SDK "
              f"{med['sdk']:9.1f} calls/s ratio {med[name] / med['sdk']:.2f} | client CPU ours "
              f"{cpu[name]:8.1f} us/call, SDK {cpu['sdk']:8.1f}, ratio {cpu['sdk'] / cpu[name]:.2f}")
    key = {"ours, text": "python_text", "ours, parsed": "python_parsed"}
    for name in ("ours, text", "ours, parsed"):
        print(f"RESULT {key[name]} ours={med[name]:.1f} openai_sdk={med['sdk']:.1f} unit=calls/s "
              f"ratio={med[name] / med['sdk']:.3f}")
        print(f"RESULT {key[name]}_cpu ours={cpu[name]:.1f} openai_sdk={cpu['sdk']:.1f} unit=us/call "
              f"ratio={cpu['sdk'] / cpu[name]:.3f}")
    if failures:
        print(f"bench_openai: {len(failures)} unexpected answers, first: {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
