package probes

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/component-base/metrics"
)

type fakeExec struct{ err error }

func (f fakeExec) ExecSync(context.Context, string, []string, time.Duration) ([]byte, []byte, error) {
	return []byte("out"), nil, f.err
}

func hostPort(t *testing.T, url string) (string, int) {
	u, _ := net.ResolveTCPAddr("tcp", url[len("http://"):])
	return u.IP.String(), u.Port
}

func TestRunHandlers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("X-Test") != "yes" || r.UserAgent() != "kube-probe/1.36" {
				w.WriteHeader(400)
			}
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/away":
			http.Redirect(w, r, "http://0.0.0.0/", http.StatusFound)
		default:
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)
	c := &corev1.Container{Name: "c", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: int32(port)}}}
	tgt := Target{Container: c, PodIP: ip, ContainerID: "id"}
	hdr := []corev1.HTTPHeader{{Name: "X-Test", Value: "yes"}}
	cases := []struct {
		name string
		h    corev1.ProbeHandler
		ex   Execer
		want Result
	}{
		{"http ok by port name", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ok", Port: intstr.FromString("web"), HTTPHeaders: hdr}}, nil, Success},
		{"http 500", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/bad", Port: intstr.FromInt32(int32(port))}}, nil, Failure},
		{"http redirect on the same host", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/moved", Port: intstr.FromInt32(int32(port)), HTTPHeaders: hdr}}, nil, Success},
		{"http redirect to another host", corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/away", Port: intstr.FromInt32(int32(port))}}, nil, Warning},
		{"tcp open", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}}, nil, Success},
		{"tcp closed", corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(1)}}, nil, Failure},
		{"exec ok", corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, fakeExec{}, Success},
		{"exec exit 1", corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"false"}}}, fakeExec{err: errors.New("command terminated with exit code 1")}, Failure},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, out, err := Run(context.Background(), tc.ex, tc.h, tgt, 2*time.Second)
			if err != nil || got != tc.want {
				t.Fatalf("got %v %q %v, want %v", got, out, err, tc.want)
			}
			if got == Warning && !strings.Contains(out, `Probe terminated redirects, Response body: <a href="http://0.0.0.0/">Found</a>.`) {
				t.Errorf("warning output %q", out)
			}
		})
	}
	if _, _, err := Run(context.Background(), nil, corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("nope")}}, tgt, time.Second); err == nil {
		t.Error("an unknown port name did not error")
	}
}

// A liveness probe that fails failureThreshold times in a row kills the
// container once; readiness flips with successThreshold.
func TestWorkerThresholds(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	ip, port := hostPort(t, srv.URL)
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(int32(port))}},
		PeriodSeconds: 1, FailureThreshold: 2, SuccessThreshold: 1}
	c := &corev1.Container{Name: "c", LivenessProbe: probe, ReadinessProbe: probe}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}, Spec: corev1.PodSpec{Containers: []corev1.Container{*c}}}
	var kills atomic.Int32
	var wakes atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New(ctx, Config{
		Wake: func(types.UID) { wakes.Add(1) },
		Kill: func(context.Context, *corev1.Pod, string, int64, string) { kills.Add(1) },
	})
	m.born = time.Now().Add(-time.Hour) // an agent long up: no restart jitter before the first probes
	if m.Ready(c, "id1") {
		t.Fatal("ready before any probe ran")
	}
	m.Sync(pod, ip, map[string]RunningContainer{"c": {Spec: c, ID: "id1", StartedAt: time.Now()}})
	waitFor(t, func() bool { return m.Ready(c, "id1") }, "ready")
	healthy.Store(false)
	waitFor(t, func() bool { return !m.Ready(c, "id1") && kills.Load() == 1 }, "unready and killed once")
	time.Sleep(2500 * time.Millisecond)
	if kills.Load() != 1 {
		t.Errorf("killed %d times; the liveness worker should stop after its kill", kills.Load())
	}
	if wakes.Load() < 2 {
		t.Errorf("pod worker woken %d times", wakes.Load())
	}
	// Successful probes were timed, failed ones counted but not timed.
	var text strings.Builder
	rec := httptest.NewRecorder()
	metrics.HandlerFor(Registry, metrics.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text.WriteString(rec.Body.String())
	for _, want := range []string{`prober_probe_duration_seconds_count{container="c",namespace="ns",pod="p",probe_type="Liveness"} `,
		`prober_probe_total{container="c",namespace="ns",pod="p",pod_uid="u",probe_type="Liveness",result="failed"} `, "process_start_time_seconds "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("probe metrics lack %q:\n%s", want, text.String())
		}
	}
	m.RemovePod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}})
	if n := len(m.workers); n != 0 {
		t.Errorf("%d workers left after RemovePod", n)
	}
	rec = httptest.NewRecorder()
	metrics.HandlerFor(Registry, metrics.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body := rec.Body.String(); strings.Contains(body, `pod="p"`) {
		t.Errorf("the removed pod's probe series are still served:\n%s", body)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not %s within 10s", what)
}
