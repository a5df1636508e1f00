#!/usr/bin/env bash
# The benchmark: opi_openai against its anchors (libcurl from C, the official openai-python
# SDK from Python), the same requests to the same local server, in one run; prints the
# figures and a summary of ratios. Every ratio reads the same way: above 1, ours is better
# (rates: ours / anchor, wall clock, server included; *_cpu: anchor / ours, the client
# process's CPU time per call or per MiB, server excluded).
#
#   bash examples/bench/run.sh            # about a minute once built
#   bash examples/bench/run.sh --quick    # fewer calls, for a smoke run
#
# Needs: cargo, a C compiler, libcurl's headers (Debian: apt-get install libcurl4-openssl-dev;
# without them the C part is skipped and said so), python3. Installs nothing but this: when
# `python3 -c "import openai"` fails, a venv at $TARGET/bench-venv with `pip install openai`.
# Settings (environment): CARGO_TARGET_DIR (default ./target), BIG_MB (48), ROUNDS (5 for C,
# 3 for Python), THREADS (8), OPI_BENCH_PYTHON (a python that has openai).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIG_MB="${BIG_MB:-48}"
THREADS="${THREADS:-8}"
C_ARGS=(--small 2000 --threads "$THREADS" --per-thread 300 --big 4 --rounds "${ROUNDS:-5}")
PY_ARGS=(--calls 400 --rounds "${ROUNDS:-3}")
if [[ "${1:-}" == "--quick" ]]; then
    BIG_MB=8
    C_ARGS=(--small 200 --threads "$THREADS" --per-thread 50 --big 2 --rounds 3)
    PY_ARGS=(--calls 50 --rounds 3)
fi
OUT="$TARGET/bench"
mkdir -p "$OUT"
LOG="$OUT/last-run.txt"
: >"$LOG"
say() { echo "$@" | tee -a "$LOG"; }

say "== build (release)"
cargo build --release --lib --examples 2>&1 | tail -n 3
LIB="$TARGET/release/libopi_openai.so"
SERVER_BIN="$TARGET/release/examples/local_server"
[[ -f "$LIB" && -x "$SERVER_BIN" ]] || { echo "run.sh: build did not produce $LIB and $SERVER_BIN" >&2; exit 1; }

HAVE_C=0
if command -v cc >/dev/null && command -v curl-config >/dev/null; then
    cc -O2 -Wall -Wextra -Werror -I"$ROOT/include" "$ROOT/examples/bench/bench.c" \
        -L"$TARGET/release" -Wl,-rpath,"$TARGET/release" -lopi_openai \
        $(curl-config --libs) -lpthread -o "$OUT/opi_bench"
    HAVE_C=1
else
    say "C part skipped: needs cc and libcurl's headers (apt-get install libcurl4-openssl-dev)"
fi

PY="${OPI_BENCH_PYTHON:-python3}"
if ! "$PY" -c "import openai" 2>/dev/null; then
    VENV="$TARGET/bench-venv"
    if ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
        say "== installing the openai SDK into $VENV (python3 -m venv; pip install openai)"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet openai
    fi
    PY="$VENV/bin/python"
fi

# The server: its standard input is our pipe, so it stops when we close it or exit.
coproc SERVER { exec "$SERVER_BIN" --big-mb "$BIG_MB"; }
SERVER_IN="${SERVER[1]}"
stop_server() {
    if [[ -n "${SERVER_PID:-}" ]]; then
        eval "exec ${SERVER_IN}>&-" 2>/dev/null || true
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap stop_server EXIT
read -r -t 60 LINE <&"${SERVER[0]}" || { echo "run.sh: local_server did not start" >&2; exit 1; }
BASE="${LINE#listening }"
say "== server $BASE (big body: $BIG_MB MiB under ${BASE}big/); $(nproc) cores"

STATUS=0
if [[ $HAVE_C == 1 ]]; then
    say "== C: opi_openai vs libcurl"
    "$OUT/opi_bench" "$BASE" "${C_ARGS[@]}" 2>&1 | tee -a "$LOG" || STATUS=1
fi
say "== Python: opi_openai (ctypes) vs openai-python"
"$PY" "$ROOT/examples/bench/bench_openai.py" "$BASE" --lib "$LIB" "${PY_ARGS[@]}" 2>&1 | tee -a "$LOG" || STATUS=1

stop_server
trap - EXIT

echo
echo "== summary (ratio above 1: ours is better; rates ours/anchor, *_cpu anchor/ours)"
printf '%-22s %-14s %17s %17s %7s\n' figure anchor ours anchor ratio
grep '^RESULT ' "$LOG" | while read -r _ key rest; do
    ours="" anchor="" name="" unit="" ratio=""
    for kv in $rest; do
        case "$kv" in
            ours=*) ours="${kv#ours=}" ;;
            libcurl=*) anchor="${kv#libcurl=}" name=libcurl ;;
            openai_sdk=*) anchor="${kv#openai_sdk=}" name=openai-python ;;
            unit=*) unit="${kv#unit=}" ;;
            ratio=*) ratio="${kv#ratio=}" ;;
        esac
    done
    printf '%-22s %-14s %17s %17s %7s\n' "$key" "$name" "$ours $unit" "$anchor $unit" "$ratio"
done | tee "$OUT/summary.txt"
echo "(full output: $LOG)"
exit $STATUS
