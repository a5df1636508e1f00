#!/usr/bin/env bash
# Builds OPI_OpenAI.zip, the add-in as 1C:Enterprise and OneScript attach it:
#   AttachAddIn("<path>/OPI_OpenAI.zip", "OPI_OpenAI", AddInType.Native)
# The zip holds MANIFEST.XML (from the template beside this script, keeping only the
# components found) and each binary under the name the manifest gives it.
#
# Usage: examples/1c/package.sh [--no-build] [--out FILE]
#   --no-build  do not run `cargo build --release`; package what is already built
#   --out FILE  where to write the zip (default: $CARGO_TARGET_DIR/OPI_OpenAI.zip,
#               or target/OPI_OpenAI.zip)
#
# Binaries, each taken when present (an environment variable names a file explicitly):
#   AddIn_x64_linux.so     $OPI_ADDIN_X64_LINUX    or <target>/release/libopi_openai.so (on x86_64)
#                                                  or <target>/x86_64-unknown-linux-gnu/release/...
#   AddIn_x86_linux.so     $OPI_ADDIN_X86_LINUX    or <target>/i686-unknown-linux-gnu/release/...
#   AddIn_x64_windows.dll  $OPI_ADDIN_X64_WINDOWS  or <target>/x86_64-pc-windows-{msvc,gnu}/release/opi_openai.dll
#   AddIn_x86_windows.dll  $OPI_ADDIN_X86_WINDOWS  or <target>/i686-pc-windows-{msvc,gnu}/release/opi_openai.dll
# A native build needs the build machine's glibc; for older 1C servers build with
# `cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.17` and run with --no-build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out=""
build=1

while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --out) out="${2:?--out needs a file name}"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "package.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
out="${out:-$target/OPI_OpenAI.zip}"

if [ "$build" = 1 ]; then
    (cd "$root" && cargo build --release --lib)
fi

# A file named by an environment variable must exist: a typo should not silently drop a
# platform from the bundle.
for var in OPI_ADDIN_X64_LINUX OPI_ADDIN_X86_LINUX OPI_ADDIN_X64_WINDOWS OPI_ADDIN_X86_WINDOWS; do
    value="${!var:-}"
    if [ -n "$value" ] && [ ! -f "$value" ]; then
        echo "package.sh: $var names no file: $value" >&2
        exit 1
    fi
done

# first_existing CANDIDATE...: prints the first candidate that is a file, if any.
first_existing() {
    local candidate
    for candidate in "$@"; do
        if [ -n "$candidate" ] && [ -f "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
}

native_x64=""
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then
    native_x64="$target/release/libopi_openai.so"
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
found=()
add() {
    local name="$1" file="$2"
    [ -n "$file" ] || return 0
    cp "$file" "$stage/$name"
    found+=("$name")
    echo "package.sh: $name <- $file"
}
add AddIn_x64_windows.dll "$(first_existing "${OPI_ADDIN_X64_WINDOWS:-}" \
    "$target/x86_64-pc-windows-msvc/release/opi_openai.dll" "$target/x86_64-pc-windows-gnu/release/opi_openai.dll")"
add AddIn_x86_windows.dll "$(first_existing "${OPI_ADDIN_X86_WINDOWS:-}" \
    "$target/i686-pc-windows-msvc/release/opi_openai.dll" "$target/i686-pc-windows-gnu/release/opi_openai.dll")"
# Without a build, an explicit-target (zigbuild, glibc 2.17) library wins over a native one.
if [ "$build" = 1 ]; then
    x64_linux=("$native_x64" "$target/x86_64-unknown-linux-gnu/release/libopi_openai.so")
else
    x64_linux=("$target/x86_64-unknown-linux-gnu/release/libopi_openai.so" "$native_x64")
fi
add AddIn_x64_linux.so "$(first_existing "${OPI_ADDIN_X64_LINUX:-}" "${x64_linux[@]}")"
add AddIn_x86_linux.so "$(first_existing "${OPI_ADDIN_X86_LINUX:-}" \
    "$target/i686-unknown-linux-gnu/release/libopi_openai.so")"

if [ "${#found[@]}" = 0 ]; then
    echo "package.sh: no add-in binary found; build with 'cargo build --release' or drop --no-build" >&2
    exit 1
fi

# The manifest lists exactly the binaries in the zip: 1C refuses a bundle whose manifest
# names a missing file.
awk -v names="${found[*]}" '
    BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) keep[list[i]] = 1 }
    /<component / {
        match($0, /path="[^"]*"/)
        path = substr($0, RSTART + 6, RLENGTH - 7)
        if (!(path in keep)) next
    }
    { print }
' "$here/MANIFEST.XML" > "$stage/MANIFEST.XML"

mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out"
if command -v python3 > /dev/null; then
    python3 - "$out" "$stage" MANIFEST.XML "${found[@]}" <<'PY'
import sys, zipfile, os
out, stage, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name in names:
        z.write(os.path.join(stage, name), name)
PY
elif command -v zip > /dev/null; then
    (cd "$stage" && zip -q -X "$out" MANIFEST.XML "${found[@]}")
else
    echo "package.sh: neither python3 nor zip is installed; install one of them" >&2
    exit 1
fi
echo "package.sh: wrote $out (MANIFEST.XML ${found[*]})"
