package stats

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func u64(v uint64) *uint64 { return &v }

// Summary is the Summary API's answer.
func (p *Provider) Summary(ctx context.Context) (*statsapi.Summary, error) {
	s, err := p.latest(ctx)
	if err != nil {
		return nil, err
	}
	at := metav1.NewTime(s.at)
	n := s.node
	node := statsapi.NodeStats{
		NodeName:  p.NodeName,
		StartTime: metav1.NewTime(n.bootTime),
		CPU:       &statsapi.CPUStats{Time: at, UsageCoreNanoSeconds: u64(n.cpuNanos), UsageNanoCores: u64(n.cpuNanoCores)},
		Memory: &statsapi.MemoryStats{Time: at, AvailableBytes: u64(n.memAvailable), UsageBytes: u64(n.memTotal - n.memFree),
			WorkingSetBytes: u64(sub(n.memTotal-n.memFree, n.memInactiveFile))},
		Fs: &statsapi.FsStats{Time: at, CapacityBytes: u64(n.fsCapacity), AvailableBytes: u64(n.fsAvailable), UsedBytes: u64(n.fsCapacity - n.fsAvailable),
			Inodes: u64(n.fsInodes), InodesFree: u64(n.fsInodesFree), InodesUsed: u64(n.fsInodes - n.fsInodesFree)},
		Runtime: &statsapi.RuntimeStats{ImageFs: &statsapi.FsStats{Time: at, CapacityBytes: u64(n.fsCapacity), AvailableBytes: u64(n.fsAvailable),
			UsedBytes: u64(n.imageFsUsed), InodesUsed: u64(n.imageFsInodes)}},
	}
	node.Swap = &statsapi.SwapStats{Time: at, SwapUsageBytes: u64(sub(n.swapTotal, n.swapFree)), SwapAvailableBytes: u64(n.swapFree)}
	if len(n.net) > 0 {
		node.Network = &statsapi.NetworkStats{Time: at, InterfaceStats: iface(n.net[0])}
		for _, i := range n.net {
			node.Network.Interfaces = append(node.Network.Interfaces, iface(i))
		}
	}
	pods := podStats(s)
	if p.PodVolumes != nil {
		vols := p.PodVolumes()
		for i := range pods {
			pods[i].VolumeStats = vols[pods[i].PodRef.UID]
		}
	}
	return &statsapi.Summary{Node: node, Pods: pods}, nil
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

func iface(n netSnap) statsapi.InterfaceStats {
	return statsapi.InterfaceStats{Name: n.iface, RxBytes: u64(n.rxBytes), RxErrors: u64(n.rxErrors), TxBytes: u64(n.txBytes), TxErrors: u64(n.txErrors)}
}

func podStats(s *snapshot) []statsapi.PodStats {
	at := metav1.NewTime(s.at)
	byPod := map[string]*statsapi.PodStats{}
	var order []string
	for _, c := range s.containers {
		ps, ok := byPod[c.podUID]
		if !ok {
			ps = &statsapi.PodStats{PodRef: statsapi.PodReference{Name: c.podName, Namespace: c.namespace, UID: c.podUID},
				CPU:              &statsapi.CPUStats{Time: at, UsageCoreNanoSeconds: u64(0), UsageNanoCores: u64(0)},
				Memory:           &statsapi.MemoryStats{Time: at, WorkingSetBytes: u64(0), UsageBytes: u64(0), RSSBytes: u64(0)},
				EphemeralStorage: &statsapi.FsStats{Time: at, UsedBytes: u64(0)}}
			if sb, ok := s.sandboxes[c.sandboxID]; ok {
				ps.StartTime = metav1.NewTime(timeOf(sb.CreatedAt))
			}
			if n, ok := s.podNet[c.podUID]; ok {
				ps.Network = &statsapi.NetworkStats{Time: at, InterfaceStats: iface(n), Interfaces: []statsapi.InterfaceStats{iface(n)}}
			}
			byPod[c.podUID] = ps
			order = append(order, c.podUID)
		}
		cs := statsapi.ContainerStats{Name: c.name, StartTime: metav1.NewTime(c.started),
			CPU:    &statsapi.CPUStats{Time: at, UsageCoreNanoSeconds: u64(c.cpuNanos)},
			Memory: &statsapi.MemoryStats{Time: at, WorkingSetBytes: u64(c.memWorking), UsageBytes: u64(c.memUsage), RSSBytes: u64(c.memRSS)},
			Rootfs: &statsapi.FsStats{Time: at, UsedBytes: u64(c.rootfsUsed), InodesUsed: u64(c.rootfsInodes)},
			Logs:   &statsapi.FsStats{Time: at, UsedBytes: u64(c.logsUsed)}}
		if c.hasNanoCores {
			cs.CPU.UsageNanoCores = u64(c.cpuNanoCores)
		}
		if c.memAvailable > 0 {
			cs.Memory.AvailableBytes = u64(c.memAvailable)
		}
		if c.swap != nil {
			cs.Swap = &statsapi.SwapStats{Time: at, SwapUsageBytes: u64(*c.swap)}
			if c.swapAvailable != nil {
				cs.Swap.SwapAvailableBytes = u64(*c.swapAvailable)
			}
			if ps.Swap == nil {
				ps.Swap = &statsapi.SwapStats{Time: at, SwapUsageBytes: u64(0)}
			}
			*ps.Swap.SwapUsageBytes += *c.swap
		}
		ps.Containers = append(ps.Containers, cs)
		*ps.CPU.UsageCoreNanoSeconds += c.cpuNanos
		*ps.CPU.UsageNanoCores += c.cpuNanoCores
		*ps.Memory.WorkingSetBytes += c.memWorking
		*ps.Memory.UsageBytes += c.memUsage
		*ps.Memory.RSSBytes += c.memRSS
		*ps.EphemeralStorage.UsedBytes += c.rootfsUsed + c.logsUsed
	}
	sort.Strings(order)
	out := make([]statsapi.PodStats, 0, len(order))
	for _, uid := range order {
		out = append(out, *byPod[uid])
	}
	return out
}

// metricWriter writes the Prometheus text format. A family's HELP and TYPE
// are written with its first sample, so a family without samples is left
// out, as the Prometheus client does.
type metricWriter struct {
	w       io.Writer
	ts      int64             // milliseconds, on every sample
	pending map[string]string // family -> its HELP and TYPE lines, until its first sample
}

func (m *metricWriter) family(name, kind, help string) {
	if m.pending == nil {
		m.pending = map[string]string{}
	}
	m.pending[name] = fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
}

func (m *metricWriter) sample(name string, value float64, labels ...string) {
	if head, ok := m.pending[name]; ok {
		io.WriteString(m.w, head)
		delete(m.pending, name)
	}
	fmt.Fprintf(m.w, "%s %s %d\n", series(name, labels), strconv.FormatFloat(value, 'g', -1, 64), m.ts)
}

// series is a sample's name with its labels (name/value pairs) as the text
// format writes them: name{l1="v1",l2="v2"}.
func series(name string, labels []string) string {
	if len(labels) == 0 {
		return name
	}
	return string(appendSeries(nil, name, labels))
}

// appendSeries appends name{label="value",...} to b.
func appendSeries(b []byte, name string, labels []string) []byte {
	b = append(b, name...)
	if len(labels) == 0 {
		return b
	}
	b = append(b, '{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPair(b, labels[i], labels[i+1])
	}
	return append(b, '}')
}

// plainLabel says whether a label value is written as it is between
// quotes: printable ASCII without a quote or a backslash.
func plainLabel(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// WriteResourceMetrics writes /metrics/resource: what the metrics server reads.
func (p *Provider) WriteResourceMetrics(ctx context.Context, w io.Writer) error {
	s, err := p.latest(ctx)
	if err != nil {
		m := &metricWriter{w: w, ts: 0}
		m.family("resource_scrape_error", "gauge", "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise")
		m.sample("resource_scrape_error", 1)
		return nil
	}
	return p.resourcePage.write(w, s, renderResource)
}

// renderResource writes the /metrics/resource page of one collection.
func renderResource(s *snapshot, w io.Writer) error {
	m := &metricWriter{w: w, ts: 0}
	m.family("resource_scrape_error", "gauge", "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise")
	m.ts = s.at.UnixMilli()
	m.family("node_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the node in core-seconds")
	m.sample("node_cpu_usage_seconds_total", float64(s.node.cpuNanos)/1e9)
	m.family("node_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the node in bytes")
	m.sample("node_memory_working_set_bytes", float64(sub(s.node.memTotal-s.node.memFree, s.node.memInactiveFile)))
	m.family("node_swap_usage_bytes", "gauge", "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems")
	m.sample("node_swap_usage_bytes", float64(sub(s.node.swapTotal, s.node.swapFree)))
	m.family("container_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the container in core-seconds")
	for _, c := range s.containers {
		m.sample("container_cpu_usage_seconds_total", float64(c.cpuNanos)/1e9, "container", c.name, "namespace", c.namespace, "pod", c.podName)
	}
	m.family("container_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the container in bytes")
	for _, c := range s.containers {
		m.sample("container_memory_working_set_bytes", float64(c.memWorking), "container", c.name, "namespace", c.namespace, "pod", c.podName)
	}
	m.family("container_start_time_seconds", "gauge", "[STABLE] Start time of the container since unix epoch in seconds")
	for _, c := range s.containers {
		m.sample("container_start_time_seconds", float64(c.started.UnixNano())/1e9, "container", c.name, "namespace", c.namespace, "pod", c.podName)
	}
	m.family("container_swap_usage_bytes", "gauge", "[ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems")
	for _, c := range s.containers {
		if c.swap != nil {
			m.sample("container_swap_usage_bytes", float64(*c.swap), "container", c.name, "namespace", c.namespace, "pod", c.podName)
		}
	}
	m.family("container_swap_limit_bytes", "gauge", "[ALPHA] Current amount of the container swap limit in bytes. Reported only on non-windows systems")
	for _, c := range s.containers {
		if c.swapAvailable != nil {
			var used uint64
			if c.swap != nil {
				used = *c.swap
			}
			m.sample("container_swap_limit_bytes", float64(*c.swapAvailable+used), "container", c.name, "namespace", c.namespace, "pod", c.podName)
		}
	}
	pods := podStats(s)
	m.family("pod_cpu_usage_seconds_total", "counter", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds")
	for _, ps := range pods {
		m.sample("pod_cpu_usage_seconds_total", float64(*ps.CPU.UsageCoreNanoSeconds)/1e9, "namespace", ps.PodRef.Namespace, "pod", ps.PodRef.Name)
	}
	m.family("pod_memory_working_set_bytes", "gauge", "[STABLE] Current working set of the pod in bytes")
	for _, ps := range pods {
		m.sample("pod_memory_working_set_bytes", float64(*ps.Memory.WorkingSetBytes), "namespace", ps.PodRef.Namespace, "pod", ps.PodRef.Name)
	}
	m.family("pod_swap_usage_bytes", "gauge", "[ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems")
	for _, ps := range pods {
		if ps.Swap != nil {
			m.sample("pod_swap_usage_bytes", float64(*ps.Swap.SwapUsageBytes), "namespace", ps.PodRef.Namespace, "pod", ps.PodRef.Name)
		}
	}
	m.sample("resource_scrape_error", 0)
	return nil
}

func timeOf(ns int64) time.Time { return time.Unix(0, ns) }
