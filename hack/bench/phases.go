package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// phases of a pod's start, each from one timestamp to the next: the bench's
// own (its Create call, the watch seeing the binding and Running) and the
// runtime's (sandbox created, container created and started, in ns).
var phases = []struct{ key, what string }{
	{"schedule", "Create call → bound to the node (the scheduler)"},
	{"agent", "bound → the sandbox's creation time as the runtime records it (the agent sees the pod, admits it, sets up volumes and the pod cgroup, calls RunPodSandbox; containerd takes that time part-way into the call)"},
	{"sandbox", "sandbox created → container created (the rest of RunPodSandbox: network, pause container; image check, the create call)"},
	{"start", "container created → container started"},
	{"status", "container started → Running seen through a watch (status written by the agent)"},
}

// timeline is one pod's start as the bench saw it.
type timeline struct {
	created, bound, running time.Time
}

// runtimeTimes is one pod's start as the runtime recorded it.
type runtimeTimes struct {
	sandbox, created, started time.Time
}

// runtimeTimeline reads, for each running pod of ns, when the runtime
// created its sandbox and created and started its container.
func (c *cluster) runtimeTimeline(ctx context.Context, ns string) (map[string]runtimeTimes, error) {
	sel := map[string]string{"io.kubernetes.pod.namespace": ns}
	sbs, err := c.rs.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel,
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
	if err != nil {
		return nil, err
	}
	out := map[string]runtimeTimes{}
	for _, sb := range sbs {
		out[sb.Labels["io.kubernetes.pod.name"]] = runtimeTimes{sandbox: time.Unix(0, sb.CreatedAt)}
	}
	cs, err := c.rs.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel,
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return nil, err
	}
	for _, ct := range cs {
		st, err := c.rs.ContainerStatus(ctx, ct.Id, false)
		if err != nil {
			return nil, err
		}
		name := ct.Labels["io.kubernetes.pod.name"]
		t := out[name]
		t.created, t.started = time.Unix(0, st.Status.CreatedAt), time.Unix(0, st.Status.StartedAt)
		out[name] = t
	}
	return out, nil
}

// phaseFigures records, under key, p50 and p99 of each phase over the pods
// whose whole timeline is known; an error when a pod's is not.
func phaseFigures(key string, seen map[string]timeline, rt map[string]runtimeTimes, s sample) error {
	durations := map[string][]float64{}
	for name, t := range seen {
		r, ok := rt[name]
		if !ok || r.sandbox.IsZero() || r.created.IsZero() || r.started.IsZero() || t.bound.IsZero() {
			return fmt.Errorf("pod %s: the runtime or the watch lacks a timestamp of its start (runtime %+v, watch %+v)", name, r, t)
		}
		for ph, d := range map[string]time.Duration{
			"schedule": t.bound.Sub(t.created), "agent": r.sandbox.Sub(t.bound), "sandbox": r.created.Sub(r.sandbox),
			"start": r.started.Sub(r.created), "status": t.running.Sub(r.started),
		} {
			durations[ph] = append(durations[ph], d.Seconds())
		}
	}
	for ph, ds := range durations {
		sort.Float64s(ds)
		s[key+".phase."+ph+".p50"], s[key+".phase."+ph+".p99"] = pct(ds, 50), pct(ds, 99)
	}
	return nil
}

// series is one sample line of a Prometheus text exposition.
type series struct {
	labels map[string]string
	value  float64
}

// scrape is a /metrics page by family name (with _sum, _count, _bucket
// lines under their own names).
type scrape map[string][]series

func parseScrape(r io.Reader) scrape {
	out := scrape{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name, rest, _ := strings.Cut(line[:i], "{")
		labels := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), "\",") {
			if k, v, ok := strings.Cut(kv, "=\""); ok {
				labels[k] = strings.TrimSuffix(v, "\"")
			}
		}
		out[name] = append(out[name], series{labels: labels, value: v})
	}
	return out
}

// sum adds the family's samples whose labels include want.
func (s scrape) sum(name string, want map[string]string) (float64, bool) {
	total, found := 0.0, false
outer:
	for _, x := range s[name] {
		for k, v := range want {
			if x.labels[k] != v {
				continue outer
			}
		}
		total += x.value
		found = true
	}
	return total, found
}

// requestsBetween is how many API requests the agent made between two
// scrapes of its /metrics.
func requestsBetween(before, after scrape) (float64, error) {
	r0, _ := before.sum("rest_client_requests_total", nil)
	r1, ok := after.sum("rest_client_requests_total", nil)
	if !ok {
		return 0, fmt.Errorf("the agent's /metrics has no rest_client_requests_total")
	}
	return r1 - r0, nil
}

// apiMethods are the verbs the steady window's requests are told apart by:
// rest_client_requests_total names the method, not the resource (a lease
// renewal is a PUT, a status patch a PATCH, an authentication or
// authorization review or an event a POST, a watch or list a GET).
var apiMethods = []string{"GET", "PUT", "PATCH", "POST", "DELETE"}

// requestsByMethod records, under prefix.METHOD, how many requests of each
// of apiMethods the agent made between two scrapes (0 included).
func requestsByMethod(before, after scrape, prefix string, s sample) {
	for _, m := range apiMethods {
		r0, _ := before.sum("rest_client_requests_total", map[string]string{"method": m})
		r1, _ := after.sum("rest_client_requests_total", map[string]string{"method": m})
		s[prefix+"."+m] = r1 - r0
	}
}

// agentOps are histograms both agents keep of the steps of a pod's start;
// their mean over a batch says where the agent's time went.
var agentOps = []struct {
	key, family string
	labels      map[string]string
	what        string
}{
	{"run_podsandbox", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "run_podsandbox"}, "RunPodSandbox"},
	{"image_status", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "image_status"}, "ImageStatus"},
	{"create_container", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "create_container"}, "CreateContainer"},
	{"start_container", "kubelet_runtime_operations_duration_seconds", map[string]string{"operation_type": "start_container"}, "StartContainer"},
	{"status_sync", "kubelet_pod_status_sync_duration_seconds", nil, "pod status written to the apiserver"},
}

// opMeans records, for each agent operation counted between before and
// after, its mean duration in seconds.
func opMeans(before, after scrape, s sample) {
	for _, op := range agentOps {
		s0, _ := before.sum(op.family+"_sum", op.labels)
		n0, _ := before.sum(op.family+"_count", op.labels)
		s1, ok1 := after.sum(op.family+"_sum", op.labels)
		n1, ok2 := after.sum(op.family+"_count", op.labels)
		if ok1 && ok2 && n1 > n0 {
			s["op."+op.key+".mean"] = (s1 - s0) / (n1 - n0)
			s["op."+op.key+".count"] = n1 - n0
		}
	}
}
