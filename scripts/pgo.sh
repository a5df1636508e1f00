#!/usr/bin/env bash
# Profile-guided optimisation (PGO) of the library, for this machine's target (x86_64 Linux:
# the 1C servers' platform; scripts/release.sh uses the profile for AddIn_x64_linux.so).
#
#   1. builds the library instrumented (rustc -Cprofile-generate),
#   2. runs examples/bench/train.c with it against examples/local_server.rs (HTTP and HTTPS on
#      127.0.0.1): small calls on one and four threads, HTTPS, big answers, save_dir,
#      streaming, batches, the usual errors,
#   3. merges the counts into target/pgo/opi_openai.profdata (llvm-profdata of rustup's
#      llvm-tools component, which matches rustc's LLVM),
#   4. unless --profile-only, builds the optimised library with it:
#      target/pgo/build/<host>/release/libopi_openai.so.
#
# The optimised build uses the profile (-Cprofile-use) and target/pgo/hot.ld, a linker script
# that only adds two output sections: the functions the profile found hot (.text.hot.*) are
# laid out together before the rest of the code, and those it never saw run (.text.unlikely.*)
# after it, so a call touches a few hundred KiB of code instead of all of it.
#
# Usage: scripts/pgo.sh [--profile-only] [--zig ZIGTARGET]
#   --zig ZIGTARGET  for a cargo-zigbuild build (x86_64-unknown-linux-gnu.2.17, as
#                    scripts/release.sh builds AddIn_x64_linux.so): the profile is keyed by the
#                    crates' symbol names, which differ between a cargo build and a zigbuild,
#                    so the instrumented build is a zigbuild too; the profile is then
#                    target/pgo/opi_openai-zig.profdata, and the build of step 4 a zigbuild.
# Prints `pgo.sh: RUSTFLAGS=...` (what a build of this target adds to use the profile) and the
# files it wrote. Needs what the library's build needs, rustup (llvm-tools is added when
# missing) and a C compiler. Exit status: 0 on success, 1 when a step failed (said on stderr).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
pgo="$target_dir/pgo"
build=1
zig=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile-only) build=0 ;;
        --zig) zig="${2:?--zig needs a target, e.g. x86_64-unknown-linux-gnu.2.17}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pgo.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "pgo.sh: $*"; }
fail() { echo "pgo.sh: $*" >&2; exit 1; }

host="$(rustc -vV | sed -n 's/^host: //p')"
profdata_tool="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata_tool" ]; then
    rustup component add llvm-tools > /dev/null 2>&1 || true
fi
[ -x "$profdata_tool" ] || fail "no llvm-profdata for this rustc ($profdata_tool): rustup component add llvm-tools"

mkdir -p "$pgo"
if [ -n "$zig" ]; then
    cargo_build=(cargo zigbuild)
    target="$zig"
    triple="${zig%.[0-9]*.[0-9]*}" # the glibc floor is cargo-zigbuild's, not a Rust target's
    suffix=-zig
else
    cargo_build=(cargo build)
    target="$host"
    triple="$host"
    suffix=""
fi
profile="$pgo/opi_openai$suffix.profdata"
script="$pgo/hot.ld"
cat > "$script" << 'EOF'
/* scripts/pgo.sh: hot code first, never-run code last; everything else as the linker's default. */
SECTIONS { .text.hot : { *(.text.hot .text.hot.*) } } INSERT BEFORE .text;
SECTIONS { .text.unlikely : { *(.text.unlikely .text.unlikely.*) } } INSERT AFTER .text;
EOF
# Always with --target: build scripts stay uninstrumented, and the crates' symbol names (which
# the profile is keyed by) are those of every --target build of this triple, zigbuild's too.
common=(--release --lib --no-default-features --locked --target "$target")

generate="-Cprofile-generate=$pgo/raw"
if [ -n "$zig" ]; then
    # rustc links the profiler runtime with `-u __llvm_profile_runtime`, an option zig cc does
    # not know: this linker hands it over as `-Wl,-u,...` to cargo-zigbuild's own linker, which
    # cargo-zigbuild names in the environment it runs cargo in.
    var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER"
    cat > "$pgo/zig-link" << EOF
#!/usr/bin/env bash
args=()
while [ \$# -gt 0 ]; do
    if [ "\$1" = -u ] && [ \$# -gt 1 ]; then args+=("-Wl,-u,\$2"); shift 2; else args+=("\$1"); shift; fi
done
exec "\${$var:?run by cargo zigbuild}" "\${args[@]}"
EOF
    chmod +x "$pgo/zig-link"
    generate="$generate -Clinker=$pgo/zig-link"
fi

say "1/4 instrumented build (log: $pgo/instrumented.log)"
RUSTFLAGS="$generate" "${cargo_build[@]}" "${common[@]}" \
    --manifest-path "$root/Cargo.toml" --target-dir "$pgo/instrumented$suffix" > "$pgo/instrumented.log" 2>&1 ||
    fail "the instrumented build failed: $(grep -m 1 -E '^error' "$pgo/instrumented.log" || tail -n 1 "$pgo/instrumented.log")"
instrumented="$pgo/instrumented$suffix/$triple/release"

say "2/4 training run (examples/bench/train.c against examples/local_server.rs)"
(cd "$root" && cargo build --example local_server --locked --quiet) || fail "local_server did not build"
server_bin="$target_dir/debug/examples/local_server"
cc -O2 -Wall -Wextra -Werror -I"$root/include" "$root/examples/bench/train.c" \
    -L"$instrumented" -Wl,-rpath,"$instrumented" -lopi_openai -lpthread -o "$pgo/train" ||
    fail "examples/bench/train.c did not compile"
rm -rf "$pgo/raw" "$pgo/save"
mkdir -p "$pgo/raw" "$pgo/save"
# Its standard input is our pipe: the server stops when this script ends, however it ends.
coproc SERVER { exec "$server_bin" --big-mb 8 --tls-ca "$pgo/ca.pem" 2> "$pgo/server.log"; }
read -r -t 60 http_line <&"${SERVER[0]}" || fail "local_server did not start ($pgo/server.log)"
read -r -t 60 https_line <&"${SERVER[0]}" || fail "local_server's HTTPS did not start ($pgo/server.log)"
# LD_LIBRARY_PATH, searched before the RUNPATH, could name a plain build (cargo test sets it).
train() {
    LD_LIBRARY_PATH="$instrumented" LLVM_PROFILE_FILE="$pgo/raw/train-%p-%m.profraw" \
        "$pgo/train" "${http_line#listening }" \
        "${https_line#listening }" "$pgo/ca.pem" "$pgo/save" "$@" > /dev/null ||
        fail "the training run failed"
}
# A process's first calls, several times (see train.c), then the full run.
for _ in 1 2 3 4 5 6 7 8; do train first; done
train
ls "$pgo/raw"/*.profraw > /dev/null 2>&1 ||
    fail "the training run wrote no profile (was the instrumented library the one loaded?)"
exec {SERVER[1]}>&-
rm -rf "$pgo/save"

say "3/4 merging the counts"
"$profdata_tool" merge -o "$profile" "$pgo/raw" || fail "llvm-profdata merge failed"
flags="-Cprofile-use=$profile -Clink-arg=-Wl,-T,$script"
say "wrote $profile"
say "RUSTFLAGS=$flags"
[ "$build" = 1 ] || exit 0

say "4/4 optimised build (log: $pgo/build.log)"
RUSTFLAGS="$flags" "${cargo_build[@]}" "${common[@]}" --manifest-path "$root/Cargo.toml" \
    --target-dir "$pgo/build$suffix" > "$pgo/build.log" 2>&1 ||
    fail "the optimised build failed: $(grep -m 1 -E '^error' "$pgo/build.log" || tail -n 1 "$pgo/build.log")"
say "built $pgo/build$suffix/$triple/release/libopi_openai.so"
