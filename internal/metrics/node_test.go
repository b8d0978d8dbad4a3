package metrics

import (
	"reflect"
	"testing"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"
)

// Paths are bucketed as upstream buckets them: the first segment, two under
// /metrics, "other" for a path the node API does not serve; methods outside
// HTTP's are "other"; exec and attach are long-running, portForward is not
// (upstream's map says "portforward").
func TestHTTPLabels(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		readOnly     bool
		want         []string
	}{
		{"GET", "/pods", false, []string{"GET", "pods", "readwrite", "false"}},
		{"GET", "/metrics/cadvisor", false, []string{"GET", "metrics/cadvisor", "readwrite", "false"}},
		{"GET", "/metrics", true, []string{"GET", "metrics", "readonly", "false"}},
		{"POST", "/exec/ns/pod/c", false, []string{"POST", "exec", "readwrite", "true"}},
		{"POST", "/portForward/ns/pod", false, []string{"POST", "portForward", "readwrite", "false"}},
		{"GET", "/stats/summary", false, []string{"GET", "stats", "readwrite", "false"}},
		{"BREW", "/../etc/passwd", false, []string{"other", "other", "readwrite", "false"}},
	} {
		if got := HTTPLabels(tc.method, tc.path, tc.readOnly); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %s: %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestStartupRecord(t *testing.T) {
	Register("node-1")
	boot := time.Unix(1000, 0)
	Startup{Boot: boot, AgentStart: boot.Add(30 * time.Second), RegistrationStart: boot.Add(31 * time.Second),
		Registered: boot.Add(33 * time.Second), Ready: boot.Add(40 * time.Second)}.Record()
	for _, tc := range []struct {
		name  string
		gauge metrics.GaugeMetric
		want  float64
	}{
		{"total", nodeStartup, 40}, {"pre-agent", nodeStartupPreAgent, 30}, {"pre-registration", nodeStartupPreRegistration, 1},
		{"registration", nodeStartupRegistration, 2}, {"post-registration", nodeStartupPostRegistration, 7},
	} {
		got, err := testutil.GetGaugeMetricValue(tc.gauge)
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
