#!/usr/bin/env bash
# hack/step.sh NAME CMD...: runs one step of make test with its output shown
# and kept in _output/steps/NAME.log. When the step fails, a line naming it and
# the go test cases that failed in it is added to _output/steps/failed, which
# make test prints last: CI keeps only the end of a run's output, so the end
# must say what failed.
set -uo pipefail
name=$1; shift
dir=_output/steps
mkdir -p "$dir"
log="$dir/$name.log"
"$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  {
    echo "FAILED: $name (exit $rc, output in $log)"
    # go test and ginkgo name their failed cases; a tool of our own (the
    # crash loop, the bench) says PROBLEMS or fails with its last lines.
    if grep -qE '^\s*--- FAIL: |^FAIL\s|^\s*\[FAIL\]|^panic: ' "$log"; then
      grep -E '^\s*--- FAIL: |^FAIL\s|^\s*\[FAIL\]|^panic: ' "$log" | sort -u | head -40
    else
      grep -E 'PROBLEMS|left:|^[a-z-]+: ' "$log" | head -20
      echo "(last lines)"; tail -n 8 "$log"
    fi | cut -c1-400 | sed 's/^/    /'
  } >> "$dir/failed"
fi
exit "$rc"
