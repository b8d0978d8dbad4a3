#!/usr/bin/env bash
# Runs upstream e2e.test conformance specs against the local cluster and writes
# _output/conformance/<suite>/<agent>/<pass>/{junit.xml,run.log} with a
# summary of all passes in _output/conformance/<suite>/<agent>/.
# Exits non-zero only when a run itself broke (no report), not for failed
# specs: the summary is the result.
#   SUITE=node       NodeConformance: the parallel specs, then the Serial and
#                    Disruptive ones alone (250 in v1.36.3)
#   SUITE=certified  every [Conformance] spec (the certification's suite): the
#                    parallel ones with PROCS, then the [Serial] ones alone
#   SUITE=fast       the subset in hack/conformance/fast.txt (make test)
#   SUITE=storage    upstream's storage test suites (External Storage [Driver: ...])
#                    against the test CSI driver hack/csi-hostpath, run on the
#                    node for the run with its own provisioner: the parallel
#                    specs, then the [Serial] ones alone; [Feature:...] and
#                    [Disruptive] specs, and those needing a volume populator's
#                    images, are left out (one node only)
#   SUITE=dra        upstream's DRA specs ([DRA]: their test driver runs inside
#                    e2e.test, its sockets proxied by the offline hostpathplugin
#                    image): the GA ones and the Beta ones on by default in
#                    v1.36 (no Alpha or OffByDefault label),
#                    the parallel ones, then the [Serial] ones alone
#   SUITE=resize     the in-place pod resize specs (FeatureGate:InPlacePodVerticalScaling,
#                    not all [Conformance]): deferred resizes, quotas, limit ranges
#   KUBELET=bosun|upstream|mixed  FOCUS=regexp  SKIP=regexp  PROCS=n  OUT=dir
#   PASSES="parallel serial" (the passes to run; naming some keeps the record's
#   other passes, so a suite's passes may run at different times)  STRICT=1: exit 1 when a spec failed
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
agent=${KUBELET:-bosun}
suite=${SUITE:-node}
procs=${PROCS:-4}
source _output/local/env
if [[ "$KUBELET" != "$agent" ]]; then
  echo "the running cluster's agents are KUBELET=$KUBELET, not $agent" >&2
  exit 2
fi
e2e_args=()
# start_csi_driver runs the test CSI driver (hack/csi-hostpath) on the node
# for this run, with its provisioner, and stops it when the run ends.
start_csi_driver() {
  local data=/var/lib/bosun-local/csi-hostpath log=_output/local/logs/csi-hostpath.log
  go build -o _output/bin/csi-hostpath ./hack/csi-hostpath || exit 2
  "$KUBECTL" apply -f hack/conformance/csi-hostpath-driver.yaml >/dev/null || exit 2
  mkdir -p "$data"
  _output/bin/csi-hostpath -name bosun.csi.example -node "$NODE_NAME" -data "$data" -kubeconfig "$KUBECONFIG" \
    -endpoint "$ROOT_DIR/plugins/bosun.csi.example/csi.sock" -registry "$ROOT_DIR/plugins_registry" > "$log" 2>&1 &
  csi_pid=$!
  # Some specs look into /var/lib/kubelet/pods on the node whatever
  # --kubelet-root-dir says: link it to the node's pods for the run.
  pods_link=
  if [[ "$ROOT_DIR" != /var/lib/kubelet && ! -e /var/lib/kubelet/pods ]]; then
    mkdir -p /var/lib/kubelet && ln -s "$ROOT_DIR/pods" /var/lib/kubelet/pods && pods_link=/var/lib/kubelet/pods
  fi
  trap 'kill $csi_pid 2>/dev/null; wait $csi_pid 2>/dev/null; [[ -z "$pods_link" ]] || rm -f "$pods_link"' EXIT
  for _ in $(seq 60); do
    "$KUBECTL" get csinode "$NODE_NAME" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null | grep -qw bosun.csi.example && return
    kill -0 $csi_pid 2>/dev/null || break
    sleep 1
  done
  echo "the test CSI driver did not register with the node; see $log" >&2
  tail -5 "$log" >&2
  exit 2
}
case $suite in
  node)
    parallel='NodeConformance && !Serial && !Disruptive && !Flaky'
    serial='NodeConformance && (Serial || Disruptive) && !Flaky' ;;
  certified)
    parallel='Conformance && !Serial'
    serial='Conformance && Serial' ;;
  resize)
    parallel='FeatureGate:InPlacePodVerticalScaling && !Serial && !Flaky'
    serial='FeatureGate:InPlacePodVerticalScaling && Serial && !Flaky' ;;
  userns)
    parallel='Feature:UserNamespacesSupport && !Serial && !Flaky'
    serial='Feature:UserNamespacesSupport && Serial && !Flaky' ;;
  storage)
    if [[ "$NODES" != 1 ]]; then
      echo "SUITE=storage needs a one-node cluster (the test CSI driver serves one node); this one has $NODES" >&2
      exit 2
    fi
    parallel='!Serial && !Disruptive && !Flaky'
    serial='Serial && !Disruptive && !Flaky'
    FOCUS=${FOCUS:-'External.Storage.*\[Driver: bosun.csi.example\]'}
    # "any volume data source" deploys a volume populator from images that
    # are not built offline; "should not mount / map unused volumes" looks
    # at the node through nsenter into PID 1's mount namespace, which this
    # machine's PID 1 refuses to everyone (root on the host included).
    SKIP=${SKIP:-'\[Feature:|\[Disruptive\]|any volume data source|should not mount / map unused volumes'}
    e2e_args+=(-storage.testdriver="$root/hack/conformance/csi-hostpath.yaml" --kubelet-root-dir="$ROOT_DIR") ;;
  dra)
    parallel='DRA && !Serial && !Disruptive && !Flaky && !Alpha && !Feature:OffByDefault'
    serial='DRA && Serial && !Disruptive && !Flaky && !Alpha && !Feature:OffByDefault'
    e2e_args+=(--kubelet-root-dir="$ROOT_DIR") ;;
  fast)
    parallel='NodeConformance && !Serial && !Disruptive && !Flaky && !Slow'
    serial=''
    FOCUS_FILE=${FOCUS_FILE:-hack/conformance/fast.txt} ;;
  *) echo "SUITE must be node, certified, resize, userns, storage, dra or fast, not $suite" >&2; exit 2 ;;
esac
[[ $suite == storage ]] && start_csi_driver
passes=${PASSES:-parallel serial}
[[ -z "$serial" ]] && passes=parallel
out="${OUT:-_output/conformance/$suite/$agent}"
commit=$(git rev-parse --short HEAD 2>/dev/null)
if [[ -n "${PASSES:-}" && -f "$out/run.env" && "$(sed -n 's/^suite=//p' "$out/run.env")" == "$suite" ]]; then
  # Only some passes asked for: the record keeps the other passes' results
  # (each line of $out/passes names the commit it ran).
  for pass in $passes; do rm -rf "${out:?}/$pass"; done
  if [[ -f "$out/passes" ]]; then
    grep -v -E "^($(echo $passes | tr ' ' '|')) " "$out/passes" > "$out/passes.keep" || true
    mv "$out/passes.keep" "$out/passes"
  fi
else
  rm -rf "$out" && mkdir -p "$out"
fi
# What the run measures, written first so that a stopped run still says it.
{
  echo "suite=$suite"
  echo "agent=$agent"
  echo "commit=$commit"
  echo "nodes=$NODES"
  echo "runtime=$RUNTIME"
  echo "machine=$(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, kernel $(uname -r), $(stat -fc %T /sys/fs/cgroup | sed 's/tmpfs/cgroup v1/; s/cgroup2fs/cgroup v2/')"
  echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$out/run.env"
rc_all=0
for pass in $passes; do
  labels=$parallel; n=$procs
  if [[ $pass == serial ]]; then labels=$serial; n=1; fi
  dir="$out/$pass"
  mkdir -p "$dir"
  report="$dir"
  [[ "$report" == /* ]] || report="$root/$dir" # an absolute OUT stays where it points
  args=(run --procs="$n" --timeout=180m --no-color --label-filter="$labels" --junit-report=junit.xml --output-dir="$dir")
  [[ -n "${FOCUS:-}" ]] && args+=(--focus="$FOCUS")
  if [[ -n "${FOCUS_FILE:-}" ]]; then
    while IFS= read -r line; do
      [[ -z "$line" || "$line" == \#* ]] || args+=(--focus="$line")
    done < "$FOCUS_FILE"
  fi
  [[ -n "${SKIP:-}" ]] && args+=(--skip="$SKIP")
  # The specs of the pass before leave their namespaces being deleted: a
  # Serial spec that measures what the node has left must not count their
  # pods, which go a moment later. Wait (up to 5 minutes) for them to go.
  for _ in $(seq 300); do
    [[ -z "$("$KUBECTL" get namespaces --no-headers 2>/dev/null | awk '$2 == "Terminating"')" ]] && break
    sleep 1
  done
  echo ">>> $suite conformance, $pass pass ($labels), against KUBELET=$agent on $NODES node(s), $n process(es); log in $dir/run.log"
  start=$SECONDS
  # Some specs write files into the working directory, which ginkgo sets to
  # the binary's folder: run it through a link in this pass's folder, so that
  # they stay with its report.
  ln -sf "$root/_output/bin/e2e.test" "$dir/e2e.test"
  _output/bin/ginkgo "${args[@]}" "$dir/e2e.test" -- \
    --kubeconfig="$KUBECONFIG" --provider=skeleton --report-dir="$report" "${e2e_args[@]}" > "$dir/run.log" 2>&1
  rc=$?
  echo "$pass procs=$n seconds=$((SECONDS - start)) exit=$rc commit=$commit" >> "$out/passes"
  if [[ ! -s "$dir/junit.xml" ]]; then
    echo "the $pass pass broke (exit $rc) without a report; see $dir/run.log" >&2
    tail -20 "$dir/run.log" >&2
    rc_all=1
  fi
done
echo "finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$out/run.env"
[[ $rc_all == 0 ]] || exit 1
line=$(go run ./hack/conformance summary "$out" | head -1)
echo "$line"
echo "(details: $out/summary.txt)"
if [[ -n "${STRICT:-}" && ! "$line" =~ " 0 failed" ]]; then
  sed -n '2,$p' "$out/summary.txt" >&2
  exit 1
fi
