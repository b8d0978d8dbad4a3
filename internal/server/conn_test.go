package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

// An idle keep-alive connection and a client that never finishes its headers
// are both closed by the server, not held for ever.
func TestServerClosesIdleAndSlowConnections(t *testing.T) {
	oldIdle, oldHeader := idleTimeout, readHeaderTimeout
	idleTimeout, readHeaderTimeout = 200*time.Millisecond, 200*time.Millisecond
	defer func() { idleTimeout, readHeaderTimeout = oldIdle, oldHeader }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(ln.Addr().String(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	closedWithin := func(t *testing.T, conn net.Conn, r *bufio.Reader, limit time.Duration) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(limit))
		if _, err := r.ReadByte(); err == nil {
			t.Fatal("read a byte from a connection the server should have closed")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection still open after %s", limit)
		}
	}

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		r := bufio.NewReader(conn)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" || strings.EqualFold(resp.Header.Get("Connection"), "close") {
			t.Fatalf("want a kept-alive answer ok, got %q (Connection: %q)", body, resp.Header.Get("Connection"))
		}
		closedWithin(t, conn, r, 3*time.Second)
	})
	t.Run("slow headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n")
		closedWithin(t, conn, bufio.NewReader(conn), 3*time.Second)
	})
}

// PUT /debug/flags/v (enableDebugFlagsHandler) sets the log verbosity, in
// upstream's words; a value that is not a level is a bad request.
func TestSetVerbosity(t *testing.T) {
	defer func() { _, _ = logs.GlogSetter("0") }()
	put := func(body string) (int, string) {
		rec := httptest.NewRecorder()
		setVerbosity(rec, httptest.NewRequest("PUT", "/debug/flags/v", strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	if code, body := put("4\n"); code != http.StatusOK || !strings.Contains(body, "successfully set klog.logging.verbosity to 4") || !klog.V(4).Enabled() {
		t.Errorf("PUT 4: %d %q, verbosity 4 enabled: %v", code, body, klog.V(4).Enabled())
	}
	if code, _ := put("loud"); code != http.StatusBadRequest {
		t.Errorf("PUT loud: %d, want 400", code)
	}
}

// Every request through the node API is counted and timed with upstream's
// labels, an unauthorized one too.
func TestHTTPRequestMetrics(t *testing.T) {
	bmetrics.Register("node-1")
	labels := []string{"GET", "pods", "readwrite", "false"}
	before, _ := testutil.GetCounterMetricValue(bmetrics.HTTPRequests.WithLabelValues(labels...))
	h := testServer(t, &fakeAuthz{allow: func(authorizer.Attributes) bool { return true }}).Handler()
	for _, token := range []string{"Bearer good", ""} {
		req := httptest.NewRequest("GET", "/pods", nil)
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	after, _ := testutil.GetCounterMetricValue(bmetrics.HTTPRequests.WithLabelValues(labels...))
	if after-before != 2 {
		t.Errorf("kubelet_http_requests_total for GET pods went up by %v, want 2", after-before)
	}
	if n, _ := testutil.GetHistogramMetricCount(bmetrics.HTTPRequestsDuration.WithLabelValues(labels...)); n < 2 {
		t.Errorf("kubelet_http_requests_duration_seconds count %d, want at least 2", n)
	}
	if v, _ := testutil.GetGaugeMetricValue(bmetrics.HTTPInflightRequests.WithLabelValues(labels...)); v != 0 {
		t.Errorf("kubelet_http_inflight_requests %v after the requests ended", v)
	}
}
