#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 30), one after another:
#   scripts/fuzz.sh 300             # 5 minutes per target
#   scripts/fuzz.sh 30 json_scan    # one target
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly --profile minimal`,
# `cargo install cargo-fuzz --locked`). Each target starts from its committed seeds
# (fuzz/seeds/<target>) plus the corpus it grew before (fuzz/corpus/<target>, not committed).
# A crash stops the script with libFuzzer's report; the input is in fuzz/artifacts/<target>/.
# Prints one summary line per target: executions, and the corpus size.
set -euo pipefail
seconds="${1:-30}"
shift || true
cd "$(dirname "$0")/.."
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(json_scan classify inputs addin_variant sse)
fi
# What it needs, installed where missing.
rustup run nightly rustc --version >/dev/null 2>&1 ||
    rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/artifacts/$target/last-run.log"
    echo "fuzz: $target for ${seconds} s"
    if ! cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target FAILED (input saved under fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    summary+=("$target: $runs executions in ${seconds} s, corpus $corpus, no crash")
done
printf 'fuzz: %s\n' "${summary[@]}"
