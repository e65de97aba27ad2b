#!/usr/bin/env bash
# Fuzzes wiremesh-core: runs each cargo-fuzz target for a while, one after the other.
#
#   native/core/fuzz/run.sh [SECONDS] [TARGET...]      (npm run fuzz -- [SECONDS] [TARGET...])
#
# SECONDS per target: the argument, else $FUZZ_SECONDS, else 60. TARGETs: all by default
# (decoder, mesh). Installs cargo-fuzz from crates.io if it is missing. Uses the nightly
# toolchain (cargo-fuzz needs -Z flags), or the stable one with RUSTC_BOOTSTRAP=1 where no
# nightly is installed.
#
# Fails if a target finds a crash, a leak (AddressSanitizer, LeakSanitizer) or a hang; the
# input that did it is then in native/core/fuzz/artifacts/<target>/, and the end of the
# fuzzer's log is printed. Each target reads the committed corpus in corpus/<target> and
# writes what it finds to target/corpus/<target> (never committed; see README.md to
# minimize it into the committed corpus). Full logs: target/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-60}"
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(decoder mesh)
fi

# The fuzzer's options per target: the longest input, and how long one input may run
# before it counts as a hang (the mesh target fails an input itself after 10 s).
options() {
  case "$1" in
    decoder) echo "-max_len=4096 -timeout=10" ;;
    mesh) echo "-max_len=2048 -timeout=30" ;;
    *) echo "-timeout=30" ;;
  esac
}

toolchain=()
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  echo "== no nightly toolchain: fuzzing with the stable one and RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  started=$SECONDS
  cargo install cargo-fuzz --locked --version 0.13.2
  echo "== installed cargo-fuzz in $((SECONDS - started)) s"
fi
cargo fuzz --version

echo "== building the fuzz targets"
started=$SECONDS
cargo "${toolchain[@]}" fuzz build --sanitizer address
echo "== built in $((SECONDS - started)) s"

passed=0
failed=()
mkdir -p target/logs
for target in "${targets[@]}"; do
  mkdir -p "target/corpus/$target" "artifacts/$target"
  log="target/logs/$target.log"
  echo "== fuzzing $target for $seconds s (log: native/core/fuzz/$log)"
  # shellcheck disable=SC2046 # the options are words
  if cargo "${toolchain[@]}" fuzz run --sanitizer address "$target" \
    "target/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 $(options "$target") >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
    passed=$((passed + 1))
  else
    echo "!! $target failed: the end of its log follows"
    tail -n 80 "$log"
    echo "!! the input is in native/core/fuzz/artifacts/$target/:"
    ls -t "artifacts/$target" | head -n 5
    failed+=("$target")
  fi
done

# A closing line in the form CI reads.
echo "fuzz: $passed passed, ${#failed[@]} failed"
if [[ ${#failed[@]} -gt 0 ]]; then
  exit 1
fi
