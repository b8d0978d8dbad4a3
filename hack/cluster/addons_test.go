package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

func TestPodTroubleNamesWaitingReasonAndWarnings(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns-1", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec:       corev1.PodSpec{NodeName: "vm"},
		Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "coredns", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}},
	}
	warn := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "e1", Namespace: "kube-system"},
		InvolvedObject: corev1.ObjectReference{Name: "coredns-1"},
		Type:           corev1.EventTypeWarning, Reason: "FailedCreatePodSandBox", Count: 4,
		Message: `"cni0" already has an IP address different from 10.88.0.1/24`,
	}
	normal := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "e2", Namespace: "kube-system"},
		InvolvedObject: corev1.ObjectReference{Name: "coredns-1"},
		Type:           corev1.EventTypeNormal, Reason: "Scheduled",
	}
	cs := fake.NewSimpleClientset(pod, warn, normal)
	got := podTrouble(context.Background(), cs, "kube-system", "k8s-app=kube-dns")
	for _, want := range []string{`pod coredns-1 on "vm": Pending`, "coredns waiting: ContainerCreating", "FailedCreatePodSandBox (x4)", "already has an IP address"} {
		if !strings.Contains(got, want) {
			t.Errorf("podTrouble() = %q, want it to contain %q", got, want)
		}
	}
	if strings.Contains(got, "Scheduled") {
		t.Errorf("podTrouble() = %q, shows a normal event", got)
	}
	if got := podTrouble(context.Background(), fake.NewSimpleClientset(), "kube-system", "k8s-app=kube-dns"); !strings.Contains(got, "no pods match") {
		t.Errorf("podTrouble() with no pods = %q", got)
	}
}

// The Prometheus deployment's config: one job per node endpoint, each with
// node discovery, HTTPS, the service account's token and the cluster CA.
func TestPrometheusConfig(t *testing.T) {
	cs := fake.NewSimpleClientset()
	if err := (&layout{}).deployPrometheus(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
	cm, err := cs.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "prometheus", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName     string `json:"job_name"`
			Scheme      string `json:"scheme"`
			MetricsPath string `json:"metrics_path"`
			SD          []struct {
				Role string `json:"role"`
			} `json:"kubernetes_sd_configs"`
			TLS struct {
				CAFile string `json:"ca_file"`
			} `json:"tls_config"`
			Authorization struct {
				CredentialsFile string `json:"credentials_file"`
			} `json:"authorization"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["prometheus.yml"]), &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	paths := map[string]bool{}
	for _, j := range cfg.ScrapeConfigs {
		if j.Scheme != "https" || len(j.SD) != 1 || j.SD[0].Role != "node" || !strings.HasSuffix(j.TLS.CAFile, "ca.crt") ||
			!strings.HasSuffix(j.Authorization.CredentialsFile, "token") {
			t.Errorf("job %s: %+v", j.JobName, j)
		}
		paths[j.MetricsPath] = true
	}
	for _, p := range []string{"/metrics", "/metrics/cadvisor", "/metrics/probes", "/metrics/resource"} {
		if !paths[p] {
			t.Errorf("no job scrapes %s", p)
		}
	}
}

// agnhost's fake registry holds the pause image as pause:testing, in the
// registry's storage layout: the tag names the manifest, whose config and
// layers are stored blobs.
func TestFakeRegistryHoldsPause(t *testing.T) {
	l := &layout{root: t.TempDir()}
	if err := os.MkdirAll(filepath.Dir(l.imageFile(pauseImage)), 0o755); err != nil {
		t.Fatal(err)
	}
	pause := newRootfs()
	pause.file("/pause", []byte("binary"), 0o755)
	digest, err := ociArchive(l.imageFile(pauseImage), pauseImage, pause, imageConfig{Entrypoint: []string{"/pause"}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRootfs()
	if err := fillFakeRegistry(l, r); err != nil {
		t.Fatal(err)
	}
	tag := string(r.data[clean("/var/registry/pause/manifests/testing")])
	if strings.TrimSpace(tag) != digest {
		t.Fatalf("tag testing names %q, want the manifest %s", tag, digest)
	}
	hash := strings.TrimPrefix(digest, "sha256:")
	manifest := r.data[clean("/var/registry/pause/manifests/sha256/"+hash[:2]+"/"+hash+"/data")]
	var m struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("stored manifest %s: %v", manifest, err)
	}
	for _, d := range append(m.Layers, m.Config) {
		h := strings.TrimPrefix(d.Digest, "sha256:")
		if b := r.data[clean("/var/registry/pause/blobs/sha256/"+h[:2]+"/"+h+"/data")]; digestOf(b) != d.Digest {
			t.Errorf("blob %s not stored", d.Digest)
		}
	}
}
