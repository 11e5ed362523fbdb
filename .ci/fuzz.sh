#!/usr/bin/env bash
# Bounded fuzzing of every cargo-fuzz target in fuzz/ (issue 5).
#
#   bash .ci/fuzz.sh                      # every target, 60 s each
#   FUZZ_SECONDS=600 bash .ci/fuzz.sh     # longer local runs
#   FUZZ_TARGETS="apdu_dispatch file_header" bash .ci/fuzz.sh
#
# Each target starts from a temporary copy of its seed corpus
# (fixtures/fuzz/<target>/), so nothing is written into fixtures/. A crash,
# a broken invariant (a panic in the target), a hang (-timeout) or running
# out of memory fails the target: its log tail and the crashing input (hex)
# are printed, the other targets still run, and the script exits 1.
#
# Only a stable toolchain is available: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass the -Z flags it needs (sanitizer, coverage instrumentation). The fuzz
# crate is its own workspace with its own target dir (fuzz/target), so the
# main workspace's build is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
export RUSTC_BOOTSTRAP=1
t0=$(date +%s)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    ti=$(date +%s)
    cargo install cargo-fuzz --locked --quiet
    echo "fuzz: installed cargo-fuzz in $(($(date +%s) - ti)) s"
fi
echo "fuzz: $(cargo fuzz --version), ${seconds} s per target"

# shellcheck disable=SC2207
targets=(${FUZZ_TARGETS:-$(cargo fuzz list)})
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz: no targets"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cardvault-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "fuzz: building ${#targets[@]} targets"
tb=$(date +%s)
if ! cargo fuzz build >"$work/build.log" 2>&1; then
    tail -n 60 "$work/build.log"
    echo "fuzz: build failed"
    exit 1
fi
echo "fuzz: built in $(($(date +%s) - tb)) s"

passed=0
failed=0
for t in "${targets[@]}"; do
    seeds="fixtures/fuzz/$t"
    corpus="$work/$t/corpus"
    artifacts="$work/$t/artifacts"
    log="$work/$t.log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ]; then
        cp "$seeds"/* "$corpus"/
    else
        echo "fuzz: $t: warning: no seed corpus in $seeds"
    fi
    n_seeds=$(find "$corpus" -type f | wc -l)
    ts=$(date +%s)
    status=ok
    cargo fuzz run "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=FAILED
    elapsed=$(($(date +%s) - ts))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    n_corpus=$(find "$corpus" -type f | wc -l)
    if [ "$status" = ok ] && [ -n "$(ls -A "$artifacts")" ]; then
        status=FAILED
    fi
    echo "fuzz: $t: $status: ${runs:-?} runs in ${elapsed} s (${rate:-?} exec/s), coverage ${cov:-?}, corpus ${n_seeds} -> ${n_corpus}"
    if [ "$status" = ok ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        # The panic message (a broken invariant names the APDU and what
        # changed), libFuzzer's verdict, without the stack frames.
        echo "---- $t: what failed"
        grep -E -A2 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|ALARM:|SUMMARY:' "$log" |
            grep -v -E '^\s+#[0-9]+ 0x|^\s+[0-9]+: |^\s+at |^stack backtrace|^--$' | head -n 30
        for a in "$artifacts"/*; do
            [ -f "$a" ] || continue
            echo "---- $t: input $(basename "$a") ($(stat -c %s "$a") bytes), hex:"
            od -An -v -tx1 "$a" | tr -d ' \n'
            echo
            echo "     replay: xxd -r -p <hex file> crash.bin && RUSTC_BOOTSTRAP=1 cargo fuzz run $t crash.bin"
        done
        echo "----"
    fi
done

echo "fuzz: done in $(($(date +%s) - t0)) s"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
