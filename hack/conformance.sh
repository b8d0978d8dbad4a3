#!/usr/bin/env bash
# Runs the upstream NodeConformance specs against the local cluster's node
# agent and writes _output/conformance/<agent>/{junit.xml,summary.txt,run.log}.
# Exits non-zero only when the run itself broke (no report), not for failed
# specs: the summary is the result.
#   KUBELET=bosun|upstream  FOCUS=regexp  SKIP=regexp  PROCS=n  LABELS=expr  OUT=dir
#   FOCUS_FILE=file (one regexp per line, # comments; any may match)
#   STRICT=1: exit 1 when a spec failed (make test's fast subset)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
agent=${KUBELET:-bosun}
procs=${PROCS:-4}
labels=${LABELS:-NodeConformance && !Serial && !Disruptive && !Flaky && !Slow}
out="${OUT:-_output/conformance/$agent}"
source _output/local/env
if [[ "$KUBELET" != "$agent" ]]; then
  echo "the running cluster's agent is $KUBELET, not $agent" >&2
  exit 2
fi
rm -rf "$out" && mkdir -p "$out"
args=(run --procs="$procs" --timeout=60m --no-color --label-filter="$labels" --junit-report=junit.xml --output-dir="$out")
[[ -n "${FOCUS:-}" ]] && args+=(--focus="$FOCUS")
if [[ -n "${FOCUS_FILE:-}" ]]; then
  while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] || args+=(--focus="$line")
  done < "$FOCUS_FILE"
fi
[[ -n "${SKIP:-}" ]] && args+=(--skip="$SKIP")
echo ">>> NodeConformance against KUBELET=$agent ($procs processes; log in $out/run.log)"
start=$SECONDS
_output/bin/ginkgo "${args[@]}" _output/bin/e2e.test -- \
  --kubeconfig="$KUBECONFIG" --provider=skeleton --report-dir="$root/$out" > "$out/run.log" 2>&1
rc=$?
# Some specs write files into the working directory, which ginkgo sets to the
# binary's folder: keep them with this run's report instead.
mkdir -p "$out/artifacts"
find _output/bin -mindepth 1 -maxdepth 1 \( -type d -o -name "junit_*.xml" \) -exec mv -t "$out/artifacts" {} + 2>/dev/null || true
echo $((SECONDS - start)) > "$out/wall-seconds"
git rev-parse --short HEAD > "$out/commit" 2>/dev/null || true
if [[ ! -s "$out/junit.xml" ]]; then
  echo "the conformance run broke (exit $rc) without a report; see $out/run.log" >&2
  tail -20 "$out/run.log" >&2
  exit 1
fi
line=$(go run ./hack/conformance summary "$out" | head -1)
echo "$line"
echo "(details: $out/summary.txt)"
if [[ -n "${STRICT:-}" && ! "$line" =~ " 0 failed" ]]; then
  sed -n '2,$p' "$out/summary.txt" >&2
  exit 1
fi
