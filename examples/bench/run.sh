#!/usr/bin/env bash
# The benchmark: opi_openai against its anchors (libcurl from C, the official openai-python
# SDK from Python), the same requests to the same local servers, every answer of both sides
# checked; prints the figures (median of the rounds, [range]) and a summary of ratios. Every
# ratio reads the same way: above 1, ours is better.
#
#   bash examples/bench/run.sh            # a few minutes once built
#   bash examples/bench/run.sh --quick    # fewer calls and rounds
#   bash examples/bench/run.sh --smoke    # seconds, debug build: only checks the harness (CI)
#
# Servers, all on 127.0.0.1, started here and stopped on exit:
# - nginx (Debian's), a neutral static server, config written at run time: plain HTTP and
#   HTTPS (TLS 1.3) with a test CA and server certificate made here with openssl (trusted by both sides
#   through CURLOPT_CAINFO and our ca_file option). POST to a static file is answered by
#   `error_page 405 =200 $uri`.
# - examples/local_server.rs, the project's own server (more work per request): small calls,
#   and 50 ms answers under /slow/ for the concurrency figure.
# Figures (examples/bench/bench.c): small calls sequential and in THREADS threads (calls/s,
# client CPU per call); a BIG_MB MiB b64_json answer over HTTP and HTTPS (MiB/s, CPU, peak RSS
# of the client process against the body), the same with save_dir + drop_b64 and with save_dir
# alone (ours); the first call in a fresh process over HTTPS; THREADS threads x 25 calls at
# 50 ms server time against the ideal; then the Python anchor; the stripped library's size.
#
# Needs: cargo, cc, libcurl's headers, nginx, openssl, python3 (Debian: apt-get install gcc
# libcurl4-openssl-dev nginx-light openssl python3); says what is missing. Installs nothing but
# this: when `python3 -c "import openai"` fails (not in --smoke), a venv at
# $TARGET/bench-venv with `pip install openai`.
# Settings (environment): CARGO_TARGET_DIR (default ./target), BIG_MB (48), ROUNDS (5; the
# small-call figures, a few seconds a round and the noisiest, take SMALL_ROUNDS: 15),
# THREADS (8), OPI_BENCH_PYTHON (a python that has openai), OPI_BENCH_LIB (a libopi_openai.so
# to measure instead of the one built here, e.g. an older build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
MODE="${1:-full}"
BIG_MB="${BIG_MB:-48}"
THREADS="${THREADS:-8}"
ROUNDS="${ROUNDS:-5}"
SMALL_ROUNDS="${SMALL_ROUNDS:-15}"
SMALL=2000 PER_THREAD=300 BIG_CALLS=4 SAVE_CALLS=4 PY_CALLS=400 PY_ROUNDS=$ROUNDS INSTR_N1=20 INSTR_N2=120
case "$MODE" in
    full) ;;
    --quick) SMALL=300 PER_THREAD=60 BIG_CALLS=2 SAVE_CALLS=2 PY_CALLS=60 ROUNDS=3 SMALL_ROUNDS=3 PY_ROUNDS=3 INSTR_N1=10 INSTR_N2=60 ;;
    --smoke) BIG_MB=2 THREADS=2 SMALL=20 PER_THREAD=5 BIG_CALLS=1 SAVE_CALLS=1 PY_CALLS=5 ROUNDS=1 SMALL_ROUNDS=1 PY_ROUNDS=1 INSTR_N1=1 INSTR_N2=2 ;;
    *) echo "usage: run.sh [--quick|--smoke]" >&2; exit 2 ;;
esac

missing=()
command -v cargo >/dev/null || missing+=("cargo (rustup)")
command -v cc >/dev/null || missing+=("a C compiler (apt-get install gcc)")
command -v curl-config >/dev/null || missing+=("libcurl's headers (apt-get install libcurl4-openssl-dev)")
command -v openssl >/dev/null || missing+=("openssl (apt-get install openssl)")
command -v python3 >/dev/null || missing+=("python3 (apt-get install python3)")
NGINX="$(command -v nginx || true)"
[[ -z "$NGINX" && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
[[ -n "$NGINX" ]] || missing+=("nginx (apt-get install nginx-light)")
if ((${#missing[@]})); then
    echo "run.sh: missing: ${missing[*]}" >&2
    exit 1
fi

OUT="$TARGET/bench"
RUN="$OUT/run"
rm -rf "$RUN"
mkdir -p "$RUN/www/v1/images" "$RUN/www/big/v1/images" "$RUN/tls" "$RUN/nginx-tmp"
LOG="$OUT/last-run.txt"
: >"$LOG"
say() { echo "$@" | tee -a "$LOG"; }

# --smoke checks the harness, not the figures: the debug build that `cargo test` already made.
PROFILE=release
[[ "$MODE" == --smoke ]] && PROFILE=debug
say "== build ($PROFILE)"
BUILD=(cargo build)
[[ $PROFILE == release ]] && BUILD+=(--release)
# The library as a user builds it: alone, and copied before the example is built. Building an
# example also builds the dev-dependencies, whose features cargo unifies into the library's
# own dependencies (jsonschema turns on serde_json's float_roundtrip), and the library is
# built again with them.
"${BUILD[@]}" --lib 2>&1 | tail -n 2
PLAIN_LIB="$TARGET/$PROFILE/libopi_openai.so"
[[ -f "$PLAIN_LIB" ]] || { echo "run.sh: no $PLAIN_LIB" >&2; exit 1; }
PLAINDIR="$RUN/lib-plain"
mkdir -p "$PLAINDIR"
cp "$PLAIN_LIB" "$PLAINDIR/libopi_openai.so"
# What is measured is the library as released for x86_64 Linux (AddIn_x64_linux.so): built by
# cargo-zigbuild for glibc 2.17 with the profile of `scripts/pgo.sh --zig` (profile-guided
# optimisation, hot code laid out together); without cargo-zigbuild, this machine's build
# with its profile (`scripts/pgo.sh`). A plain `cargo build --release` is measured too, for
# small HTTP calls (nginx_http_plain_*).
LIB="$PLAIN_LIB"
if [[ $PROFILE == release && -z "${OPI_BENCH_LIB:-}" ]]; then
    if cargo-zigbuild --version >/dev/null 2>&1 && [[ "$(uname -m)" == x86_64 ]]; then
        PGO=(scripts/pgo.sh --zig x86_64-unknown-linux-gnu.2.17)
    else
        PGO=(scripts/pgo.sh)
        say "run.sh: no cargo-zigbuild: measuring this machine's PGO build, not the released one"
    fi
    "${PGO[@]}" >"$OUT/pgo.log" 2>&1 || { cat "$OUT/pgo.log" >&2; echo "run.sh: ${PGO[*]} failed" >&2; exit 1; }
    LIB="$(sed -n 's/^pgo.sh: built //p' "$OUT/pgo.log")"
    say "library measured: $LIB (${PGO[*]})"
    [[ -f "$LIB" ]] || { echo "run.sh: ${PGO[*]} built no library" >&2; exit 1; }
fi
LIB="${OPI_BENCH_LIB:-$LIB}"
[[ -f "$LIB" ]] || { echo "run.sh: no $LIB" >&2; exit 1; }
LIBDIR="$RUN/lib"
mkdir -p "$LIBDIR"
cp "$LIB" "$LIBDIR/libopi_openai.so"
"${BUILD[@]}" --example local_server 2>&1 | tail -n 2
SERVER_BIN="$TARGET/$PROFILE/examples/local_server"
[[ -x "$SERVER_BIN" ]] || { echo "run.sh: no $SERVER_BIN" >&2; exit 1; }
BENCH="$RUN/opi_bench"
# Both libraries are loaded at run time (each child process only its own side's): ours
# through the RUNPATH, libcurl as libcurl.so.4.
cc -O2 -Wall -Wextra -Werror -I"$ROOT/include" $(curl-config --cflags) "$ROOT/examples/bench/bench.c" \
    -Wl,-rpath,"$LIBDIR" -ldl -lpthread -o "$BENCH"

# ---- servers ------------------------------------------------------------------------------
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "run.sh: nothing listens on port $1" >&2
    return 1
}

# local_server: its standard input is our pipe, so it also stops when this script dies.
coproc SERVER { exec "$SERVER_BIN" --big-mb "$BIG_MB" --delay-ms 50; }
PIDS+=("$SERVER_PID")
read -r -t 60 LINE <&"${SERVER[0]}" || { echo "run.sh: local_server did not start" >&2; exit 1; }
LOCAL="${LINE#listening }"

# The answers both sides must return: as local_server gives them (nginx serves the same bytes).
python3 - "$LOCAL" "$RUN" <<'EOF'
import sys, urllib.request
base, run = sys.argv[1], sys.argv[2]
body = b'{"model":"dall-e-3","prompt":"Yellow alpaca","n":1,"size":"1024x1024"}'
for path, out in (("", "small.json"), ("big/", "big.json")):
    req = urllib.request.Request(base + path + "v1/images/generations", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r, open(f"{run}/{out}", "wb") as f:
        f.write(r.read())
EOF
cp "$RUN/small.json" "$RUN/www/v1/images/generations"
cp "$RUN/big.json" "$RUN/www/big/v1/images/generations"

# The test CA and the server certificate (P-256), for 127.0.0.1.
(
    cd "$RUN/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout ca.key -out ca.crt -subj "/CN=opi_openai bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out server.crt 2>/dev/null
)
CA="$RUN/tls/ca.crt"

HTTP_PORT=$(free_port)
HTTPS_PORT=$(free_port)
USER_LINE=""
[[ $(id -u) == 0 ]] && USER_LINE="user root;"
cat >"$RUN/nginx.conf" <<EOF
$USER_LINE
daemon off;
worker_processes 2;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    types { }
    default_type application/json;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $RUN/nginx-tmp;
    server {
        listen 127.0.0.1:$HTTP_PORT;
        listen 127.0.0.1:$HTTPS_PORT ssl;
        ssl_certificate $RUN/tls/server.crt;
        ssl_certificate_key $RUN/tls/server.key;
        # TLS 1.3 as OpenAI's API and most servers speak it (nginx 1.22 offers 1.2 at most
        # unless told); 1.2 stays for clients that want it.
        ssl_protocols TLSv1.2 TLSv1.3;
        root $RUN/www;
        # POST to a static file: the static module answers 405, turned into the file.
        location / { error_page 405 =200 \$uri; }
    }
}
EOF
"$NGINX" -p "$RUN" -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log" &
PIDS+=("$!")
wait_port "$HTTP_PORT"
wait_port "$HTTPS_PORT"
NGX="http://127.0.0.1:$HTTP_PORT/"
NGXS="https://127.0.0.1:$HTTPS_PORT/"

say "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
say "== servers: nginx $NGX and $NGXS ($("$NGINX" -v 2>&1 | cut -d/ -f2)), local_server $LOCAL; big body $BIG_MB MiB; $ROUNDS rounds ($SMALL_ROUNDS for small calls), median [range]"

STATUS=0
bench() { "$BENCH" "$@" --rounds "$ROUNDS" 2>&1 | tee -a "$LOG" || STATUS=1; }
SMALL_ARGS=(--small "$SMALL" --threads "$THREADS" --per-thread "$PER_THREAD")
SAVE_DIR="/dev/shm/opi-bench-$$"
[[ -d /dev/shm ]] || SAVE_DIR="$RUN/save"
mkdir -p "$SAVE_DIR"

# Small calls run with the client and the servers on one core (taskset, when there is one):
# on a virtual machine, a call that wakes another core pays for the idle core's wake-up
# (here 60-240 us per call against 30-40 us on one core, varying from round to round) and
# which core a side's connection lands on decides its figure; on one core the client's own
# cost is what differs between the sides.
PIN=()
if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null; then
    PIN=(taskset -c 0)
fi
pin_servers() { # cpu list: move the servers (nginx master and workers, local_server) there
    local pid
    ((${#PIN[@]})) || return 0
    for pid in "${PIDS[@]}" $(for p in "${PIDS[@]}"; do pgrep -P "$p"; done); do
        taskset -a -p -c "$1" "$pid" >/dev/null 2>&1 || true
    done
}
pin_servers 0
say "== small calls, keep-alive (calls/s; client CPU us/call)${PIN:+; client and servers on CPU 0}"
bench_pinned() { "${PIN[@]}" "$BENCH" "$@" --rounds "$SMALL_ROUNDS" 2>&1 | tee -a "$LOG" || STATUS=1; }
bench_pinned small "$NGX" --ref "$RUN/small.json" --key nginx_http "${SMALL_ARGS[@]}"
# The plain cargo build, loaded instead through LD_LIBRARY_PATH (searched before the RUNPATH).
LD_LIBRARY_PATH="$PLAINDIR" bench_pinned small "$NGX" --ref "$RUN/small.json" \
    --key nginx_http_plain --threads 1 "${SMALL_ARGS[@]}"
bench_pinned small "$NGXS" --ref "$RUN/small.json" --key nginx_https --ca "$CA" "${SMALL_ARGS[@]}"
bench_pinned small "$LOCAL" --ref "$RUN/small.json" --key local_http "${SMALL_ARGS[@]}"
pin_servers "0-$(($(nproc) - 1))"
# Instructions per call in the client (callgrind counts instructions, not time: the same
# figure whatever else the machine does). Each side runs `count` twice under callgrind,
# collecting only inside measured_calls(); the difference over the difference of calls is one
# call, set-up excluded. glibc's `rep movsb`/`rep stosb` copies are turned off for both sides
# (callgrind counts each byte of them as an instruction; the vector loops instead count as
# what they cost).
INSTR_TUNABLES="glibc.cpu.x86_rep_movsb_threshold=2147483647:glibc.cpu.x86_rep_stosb_threshold=2147483647"
instructions() { # side base n [bench args...]: the client's instructions inside measured_calls
    local side=$1 url=$2 n=$3 out
    shift 3
    out="$RUN/callgrind.$side.$n.out"
    GLIBC_TUNABLES="$INSTR_TUNABLES" valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect=measured_calls "$BENCH" count "$url" --side "$side" --calls "$n" "$@" \
        >/dev/null 2>"$out.log" || { echo "run.sh: count under callgrind failed (see $out.log)" >&2; return 1; }
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}
instr_figure() { # key base n1 n2 [bench args...]
    local name=$1 url=$2 n1=$3 n2=$4 side a b
    shift 4
    declare -A per
    for side in ours libcurl; do
        a=$(instructions "$side" "$url" "$n1" "$@") && b=$(instructions "$side" "$url" "$n2" "$@") || { STATUS=1; return; }
        per[$side]=$(( (b - a) / (n2 - n1) ))
    done
    say "$(printf '%-34s ours %10d  libcurl %10d instr/call ratio %s' "$name" "${per[ours]}" "${per[libcurl]}" \
        "$(awk -v o="${per[ours]}" -v l="${per[libcurl]}" 'BEGIN { printf "%.2f", l / o }')")"
    say "RESULT $name ours=${per[ours]} libcurl=${per[libcurl]} unit=instr/call ratio=$(awk -v o="${per[ours]}" -v l="${per[libcurl]}" 'BEGIN { printf "%.3f", l / o }')"
}
if command -v valgrind >/dev/null; then
    say "== instructions per call in the client (callgrind; steady where timings are not)"
    instr_figure nginx_http_instructions "$NGX" "$INSTR_N1" "$INSTR_N2" --ref "$RUN/small.json"
    instr_figure nginx_https_instructions "$NGXS" "$INSTR_N1" "$INSTR_N2" --ref "$RUN/small.json" --ca "$CA"
    instr_figure nginx_http_big_instructions "${NGX}big/" 1 2 --ref "$RUN/big.json"
else
    say "== instructions per call skipped: valgrind is not installed (apt-get install valgrind)"
fi
say "== $BIG_MB MiB b64_json, each side in a fresh process (MiB/s; CPU ms/MiB; peak RSS / body)"
bench big "${NGX}big/" --ref "$RUN/big.json" --key nginx_http --calls "$BIG_CALLS"
bench big "${NGXS}big/" --ref "$RUN/big.json" --key nginx_https --ca "$CA" --calls "$BIG_CALLS"
say "== $BIG_MB MiB with save_dir ($SAVE_DIR, tmpfs when /dev/shm exists) + drop_b64, ours"
bench save "${NGX}big/" --ref "$RUN/big.json" --key nginx_http --calls "$SAVE_CALLS" --dir "$SAVE_DIR"
say "== the same without drop_b64 (the answer keeps its base64), ours"
bench save "${NGX}big/" --ref "$RUN/big.json" --key nginx_http_keep --calls "$SAVE_CALLS" --dir "$SAVE_DIR" --keep-b64
rm -rf "$SAVE_DIR"
say "== first call in a fresh process, HTTPS (ms): trusting the test CA file (our ca_file adds it to the system roots); then the system store plus the test CA for both"
bench first "$NGXS" --ref "$RUN/small.json" --key nginx_https --ca "$CA"
SYSTEM_BUNDLE=/etc/ssl/certs/ca-certificates.crt
if [[ -f "$SYSTEM_BUNDLE" ]]; then
    cat "$SYSTEM_BUNDLE" "$CA" >"$RUN/tls/system-and-test.crt"
    SSL_CERT_FILE="$RUN/tls/system-and-test.crt" bench first "$NGXS" --ref "$RUN/small.json" \
        --key nginx_https_system --ca "$RUN/tls/system-and-test.crt" --ours-system
fi
say "== $THREADS threads x 25 calls, 50 ms server time (time / ideal)"
bench slow "${LOCAL}slow/" --ref "$RUN/small.json" --key local_slow_t$THREADS --threads "$THREADS" \
    --per-thread 25 --delay-ms 50

PY="${OPI_BENCH_PYTHON:-python3}"
if ! "$PY" -c "import openai" 2>/dev/null; then
    VENV="$TARGET/bench-venv"
    if "$VENV/bin/python" -c "import openai" 2>/dev/null; then
        PY="$VENV/bin/python"
    elif [[ "$MODE" == --smoke ]]; then
        PY=""
        say "== Python anchor skipped in --smoke (openai not importable)"
    else
        say "== installing the openai SDK into $VENV (python3 -m venv; pip install openai)"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet openai
        PY="$VENV/bin/python"
    fi
fi
if [[ -n "$PY" ]]; then
    say "== Python: opi_openai (ctypes) vs openai-python, local_server"
    "$PY" "$ROOT/examples/bench/bench_openai.py" "$LOCAL" --lib "$LIBDIR/libopi_openai.so" \
        --calls "$PY_CALLS" --rounds "$PY_ROUNDS" 2>&1 | tee -a "$LOG" || STATUS=1
fi

strip -o "$RUN/stripped.so" "$LIBDIR/libopi_openai.so"
SIZE=$(stat -c %s "$RUN/stripped.so")
say "RESULT library_stripped_bytes ours=$SIZE unit=bytes"

cleanup
trap - EXIT

echo
echo "== summary: median [range] of $ROUNDS rounds ($SMALL_ROUNDS for small calls); ratio above 1: ours is better"
printf '%-34s %-14s %24s %24s %-8s %6s\n' figure anchor ours anchor unit ratio
grep '^RESULT ' "$LOG" | while read -r _ name rest; do
    ours="" anchor="" who="" unit="" ratio="" orange="" arange=""
    for kv in $rest; do
        case "$kv" in
            ours=*) ours="${kv#ours=}" ;;
            libcurl=*) anchor="${kv#libcurl=}" who=libcurl ;;
            openai_sdk=*) anchor="${kv#openai_sdk=}" who=openai-python ;;
            unit=*) unit="${kv#unit=}" ;;
            ratio=*) ratio="${kv#ratio=}" ;;
            ours_range=*) orange="[${kv#ours_range=}]" ;;
            libcurl_range=*) arange="[${kv#libcurl_range=}]" ;;
        esac
    done
    printf '%-34s %-14s %24s %24s %-8s %6s\n' "$name" "${who:--}" "$ours $orange" "${anchor:--} $arange" "$unit" "${ratio:--}"
done | tee "$OUT/summary.txt"
echo "(full output: $LOG)"
[[ $STATUS == 0 ]] || echo "run.sh: some calls failed their checks (see above)" >&2
exit $STATUS
