#!/usr/bin/env bash
# Builds OPI_OpenAI.zip, the add-in as 1C:Enterprise and OneScript attach it:
#   AttachAddIn("<path>/OPI_OpenAI.zip", "OPI_OpenAI", AddInType.Native)
# A thin caller of scripts/release.sh (see its --help), which builds each of the four
# libraries this machine can build and writes the zip alone here.
#
# Usage: examples/1c/package.sh [--no-build] [--out FILE]
#   --no-build  do not build; package what is already built
#   --out FILE  where to write the zip (default: $CARGO_TARGET_DIR/OPI_OpenAI.zip,
#               or target/OPI_OpenAI.zip)
# OPI_ADDIN_X64_WINDOWS, OPI_ADDIN_X86_WINDOWS, OPI_ADDIN_X64_LINUX, OPI_ADDIN_X86_LINUX name
# a library to zip explicitly. Exits 0 when a zip was written, even without all four.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${CARGO_TARGET_DIR:-$root/target}/OPI_OpenAI.zip"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) args+=(--no-build) ;;
        --out) out="${2:?--out needs a file name}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
        *) echo "package.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
status=0
"$root/scripts/release.sh" ${args[@]+"${args[@]}"} --zip-only "$out" || status=$?
# 1: fewer than four libraries, which is fine for a zip made on one machine.
[ "$status" = 1 ] && exit 0
exit "$status"
