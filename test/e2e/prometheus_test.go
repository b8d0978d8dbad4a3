//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// promTarget is one of Prometheus' active targets (/api/v1/targets).
type promTarget struct {
	Labels     map[string]string `json:"labels"`
	ScrapeURL  string            `json:"scrapeUrl"`
	Health     string            `json:"health"`
	LastError  string            `json:"lastError"`
	LastScrape time.Time         `json:"lastScrape"`
}

// prometheusAPI asks the local cluster's Prometheus (make up deploys it in
// kube-system) through the apiserver's service proxy.
func prometheusAPI(ctx context.Context, cs kubernetes.Interface, path string, query url.Values) ([]byte, error) {
	req := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/kube-system/services/prometheus:web/proxy" + path)
	for k, vs := range query {
		for _, v := range vs {
			req = req.Param(k, v)
		}
	}
	return req.DoRaw(ctx)
}

// A real Prometheus, with the usual kubelet scrape configuration (service
// discovery of the nodes, HTTPS, the service account's token), scrapes the
// four metrics endpoints of every node: each target up, with no scrape
// error, and the series dashboards read are there for each node.
func TestPrometheusScrapesNodes(t *testing.T) {
	env := loadEnv(t)
	cs := env.client(t)
	nodes := strings.Fields(env["NODE_NAMES"])
	jobs := []string{"kubelet", "kubelet-cadvisor", "kubelet-probes", "kubelet-resource"}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var problems []string
	err := wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		body, err := prometheusAPI(ctx, cs, "/api/v1/targets", url.Values{"state": {"active"}})
		if err != nil {
			problems = []string{"targets: " + err.Error()}
			return false, nil
		}
		var resp struct {
			Data struct {
				ActiveTargets []promTarget `json:"activeTargets"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			problems = []string{"targets: " + err.Error()}
			return false, nil
		}
		found := map[string]promTarget{}
		for _, tg := range resp.Data.ActiveTargets {
			found[tg.Labels["job"]+" "+tg.Labels["instance"]] = tg
		}
		problems = nil
		for _, job := range jobs {
			for _, node := range nodes {
				tg, ok := found[job+" "+node]
				switch {
				case !ok:
					problems = append(problems, job+" "+node+": no target")
				case tg.LastScrape.IsZero() || tg.Health != "up" || tg.LastError != "":
					problems = append(problems, job+" "+node+": "+tg.ScrapeURL+" health "+tg.Health+" error "+tg.LastError)
				}
			}
		}
		return len(problems) == 0, nil
	})
	if err != nil {
		sort.Strings(problems)
		t.Fatalf("Prometheus' targets not all up without errors within 4 minutes:\n  %s", strings.Join(problems, "\n  "))
	}
	// The series dashboards read, per node (probe results from at least one
	// node: a node may run no probed pod).
	for _, q := range []string{
		`count by (instance) (container_cpu_usage_seconds_total{job="kubelet-cadvisor"})`,
		`count by (instance) (container_memory_working_set_bytes{job="kubelet-resource"})`,
		`count by (instance) (kubelet_running_pods{job="kubelet"})`,
		`count by (instance) (prober_probe_total{job="kubelet-probes"})`,
	} {
		perNode := !strings.Contains(q, "prober_probe_total")
		body, err := prometheusAPI(ctx, cs, "/api/v1/query", url.Values{"query": {q}})
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		var resp struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		have := map[string]bool{}
		for _, r := range resp.Data.Result {
			have[r.Metric["instance"]] = true
		}
		if len(have) == 0 {
			t.Errorf("%s: no series (%s)", q, body)
		}
		for _, node := range nodes {
			if perNode && !have[node] {
				t.Errorf("%s: no series from node %s (%s)", q, node, body)
			}
		}
	}
}
