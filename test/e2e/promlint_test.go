//go:build e2e

package e2e

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// Every metric family the node serves passes Prometheus' own linter
// (promlint), on each of the four endpoints operators scrape.
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
				t.Errorf("%s: %s: %s", path, p.Metric, p.Text)
			}
		})
	}
}
