//go:build e2e

package e2e

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// upstreamNames are the families the upstream kubelet v1.36 serves under
// names or labels that promlint faults (counters without _total, camelCase
// labels): dashboards and alerts use these names, so a drop-in keeps them.
var upstreamNames = map[string]bool{
	"cadvisor_version_info": true, "container_cpu_load_d_average_10s": true, "container_fs_inodes_total": true,
	"container_memory_failcnt": true, "kubelet_certificate_manager_client_expiration_renew_errors": true,
	"kubelet_cpu_manager_exclusive_cpu_allocation_count": true, "kubelet_evented_pleg_connection_error_count": true,
	"kubelet_evented_pleg_connection_success_count": true, "kubelet_pleg_discard_events": true,
	"kubelet_server_expiration_renew_errors": true, "kubelet_topology_manager_admission_duration_ms": true,
	// k8s.io/apiserver's bearer token cache, which both agents authenticate
	// through (it has samples once a client such as metrics-server has
	// authenticated with a token).
	"authentication_token_cache_active_fetch_count": true,
}

// Every metric family the node serves passes Prometheus' own linter
// (promlint), on each of the four endpoints operators scrape, but for the
// upstream kubelet's own names, which a drop-in must keep.
func TestMetricsPassPromlint(t *testing.T) {
	env := loadEnv(t)
	for _, path := range []string{"/metrics", "/metrics/cadvisor", "/metrics/probes", "/metrics/resource"} {
		t.Run(path, func(t *testing.T) {
			code, body := nodeAPI(t, env, path, "", env["ADMIN_CERT"], env["ADMIN_KEY"])
			if code != 200 {
				t.Fatalf("%s: HTTP %d", path, code)
			}
			if n := strings.Count(body, "# TYPE "); n == 0 {
				t.Fatalf("%s serves no metric family", path)
			}
			problems, err := promlint.New(strings.NewReader(body)).Lint()
			if err != nil {
				t.Fatalf("%s does not parse as the Prometheus text format: %v", path, err)
			}
			for _, p := range problems {
				if upstreamNames[p.Metric] {
					t.Logf("%s: %s: %s (upstream's name, kept)", path, p.Metric, p.Text)
					continue
				}
				t.Errorf("%s: %s: %s", path, p.Metric, p.Text)
			}
		})
	}
}
