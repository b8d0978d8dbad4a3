package podsync

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Upstream's limits on a pod's resolver configuration.
const (
	maxDNSSearchPaths = 32
	maxDNSNameservers = 3
)

// hostResolver is the host's resolv.conf, read for dnsPolicy Default.
type hostResolver struct {
	servers, searches, options []string
}

func readResolvConf(path string) (hostResolver, error) {
	var r hostResolver
	if path == "" {
		return r, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return r, fmt.Errorf("failed to read resolvConf %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			r.servers = append(r.servers, fields[1])
		case "search":
			r.searches = fields[1:]
		case "options":
			r.options = append(r.options, fields[1:]...)
		}
	}
	return r, sc.Err()
}

// DNSConfig is the pod's resolver configuration from its dnsPolicy and
// dnsConfig: ClusterFirst (cluster DNS, search <ns>.svc.<domain>,
// svc.<domain>, <domain> and the host's, ndots:5), Default (the host's),
// None (dnsConfig only), ClusterFirstWithHostNet (cluster DNS even with
// hostNetwork). A ClusterFirst pod with hostNetwork, or any ClusterFirst pod
// when no clusterDNS is configured, falls back to Default, as upstream does.
func DNSConfig(n NodeSettings, pod *corev1.Pod) (*runtimeapi.DNSConfig, error) {
	host, err := readResolvConf(n.ResolvConf)
	if err != nil {
		return nil, err
	}
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	if (policy == corev1.DNSClusterFirst || policy == corev1.DNSClusterFirstWithHostNet) && len(n.ClusterDNS) == 0 {
		policy = corev1.DNSDefault
	}
	cfg := &runtimeapi.DNSConfig{}
	switch policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		cfg.Servers = append([]string{}, n.ClusterDNS...)
		if n.ClusterDomain != "" {
			d := strings.TrimSuffix(n.ClusterDomain, ".")
			cfg.Searches = []string{pod.Namespace + ".svc." + d, "svc." + d, d}
		}
		cfg.Searches = append(cfg.Searches, host.searches...)
		cfg.Options = []string{"ndots:5"}
	case corev1.DNSDefault:
		cfg.Servers, cfg.Searches, cfg.Options = host.servers, host.searches, host.options
	case corev1.DNSNone:
	default:
		return nil, fmt.Errorf("unsupported dnsPolicy %q", policy)
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		cfg.Servers = dedupe(append(cfg.Servers, dc.Nameservers...))
		cfg.Searches = dedupe(append(cfg.Searches, dc.Searches...))
		cfg.Options = mergeOptions(cfg.Options, dc.Options)
	}
	if len(cfg.Servers) > maxDNSNameservers {
		cfg.Servers = cfg.Servers[:maxDNSNameservers]
	}
	if len(cfg.Searches) > maxDNSSearchPaths {
		cfg.Searches = cfg.Searches[:maxDNSSearchPaths]
	}
	return cfg, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// mergeOptions lets dnsConfig options override same-named ones.
func mergeOptions(base []string, extra []corev1.PodDNSConfigOption) []string {
	order := []string{}
	vals := map[string]string{}
	add := func(name, val string) {
		if _, ok := vals[name]; !ok {
			order = append(order, name)
		}
		vals[name] = val
	}
	for _, o := range base {
		name, val, _ := strings.Cut(o, ":")
		add(name, val)
	}
	for _, o := range extra {
		val := ""
		if o.Value != nil {
			val = *o.Value
		}
		add(o.Name, val)
	}
	out := make([]string, 0, len(order))
	for _, name := range order {
		if vals[name] == "" {
			out = append(out, name)
		} else {
			out = append(out, name+":"+vals[name])
		}
	}
	return out
}
