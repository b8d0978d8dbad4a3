package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	internalapi "k8s.io/cri-api/pkg/apis"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

// fakeAuthn accepts the bearer token "good" as user "alice".
type fakeAuthn struct{}

func (fakeAuthn) AuthenticateRequest(r *http.Request) (*authenticator.Response, bool, error) {
	switch r.Header.Get("Authorization") {
	case "Bearer good":
		return &authenticator.Response{User: &user.DefaultInfo{Name: "alice"}}, true, nil
	case "Bearer broken":
		return nil, false, errors.New("token review failed")
	}
	return nil, false, nil
}

// fakeAuthz allows what allow says, and fails when fail is set.
type fakeAuthz struct {
	allow func(a authorizer.Attributes) bool
	fail  bool
	seen  []authorizer.Attributes
}

func (f *fakeAuthz) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	f.seen = append(f.seen, a)
	if f.fail {
		return authorizer.DecisionNoOpinion, "", errors.New("webhook down")
	}
	if f.allow(a) {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}

type fakeHost struct{ rt *critest.FakeRuntimeService }

func (fakeHost) Pod(string, string) (*corev1.Pod, bool) { return nil, false }
func (fakeHost) Pods() []*corev1.Pod                    { return nil }
func (fakeHost) RunningPods(context.Context) ([]*corev1.Pod, error) {
	return nil, nil
}
func (fakeHost) Container(context.Context, *corev1.Pod, string, bool) (string, string, error) {
	return "", "", errors.New("none")
}
func (h fakeHost) Runtime() internalapi.RuntimeService { return h.rt }
func (fakeHost) Healthy() error                        { return nil }
func (fakeHost) Configz() any                          { return map[string]int{"maxPods": 3} }
func (fakeHost) Spec() any                             { return map[string]int{"num_cores": 2} }

func testServer(t *testing.T, authz *fakeAuthz) *Server {
	t.Helper()
	return &Server{cfg: Config{Debugging: true, SystemLogs: true, Profiling: true, DebugFlags: true, LogDir: t.TempDir()}, host: fakeHost{rt: critest.NewFakeRuntimeService()},
		auth: &Auth{authn: fakeAuthn{}, authz: authz, nodeName: "node-1"}}
}

func TestNewRequiresCertificateHostAndAuth(t *testing.T) {
	if _, err := New(Config{}, fakeHost{}, &Auth{}); err == nil {
		t.Fatal("New accepted a config without a certificate")
	}
}

var param = regexp.MustCompile(`\{[a-z]+\}`)

// samplePath turns a route pattern into a request.
func samplePath(pattern string) (string, string) {
	method, path, _ := strings.Cut(pattern, " ")
	return method, param.ReplaceAllString(path, "x")
}

// Every route is behind authentication and authorization (upstream's
// TestAuthzCoverage idea): 401 without credentials, 403 with the exact body
// when denied, 500 when the authorizer fails, and served when allowed.
func TestEveryRouteIsAuthenticatedAndAuthorized(t *testing.T) {
	deny := &fakeAuthz{allow: func(authorizer.Attributes) bool { return false }}
	allow := &fakeAuthz{allow: func(authorizer.Attributes) bool { return true }}
	broken := &fakeAuthz{fail: true}
	routes := testServer(t, deny).routeTable()
	if len(routes) < 20 {
		t.Fatalf("only %d routes", len(routes))
	}
	for _, r := range routes {
		method, path := samplePath(r.pattern)
		if strings.HasPrefix(path, "/debug/pprof/") {
			path += "?seconds=1" // a profile, allowed, runs for 30 s by default
		}
		for _, tc := range []struct {
			name  string
			authz *fakeAuthz
			token string
			code  int
			body  string
		}{
			{"no credentials", allow, "", http.StatusUnauthorized, "Unauthorized"},
			{"bad token", allow, "Bearer wrong", http.StatusUnauthorized, "Unauthorized"},
			{"authn error", allow, "Bearer broken", http.StatusUnauthorized, "Unauthorized"},
			{"denied", deny, "Bearer good", http.StatusForbidden, "Forbidden (user=alice, verb="},
			{"authz error", broken, "Bearer good", http.StatusInternalServerError, "Authorization error (user=alice"},
		} {
			req := httptest.NewRequest(method, path, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", tc.token)
			}
			rec := httptest.NewRecorder()
			testServer(t, tc.authz).Handler().ServeHTTP(rec, req)
			if rec.Code != tc.code || !strings.HasPrefix(rec.Body.String(), tc.body) {
				t.Errorf("%s %s (%s): %d %q, want %d %q", method, path, tc.name, rec.Code, rec.Body.String(), tc.code, tc.body)
			}
		}
		req := httptest.NewRequest(method, path, nil)
		req.Header.Set("Authorization", "Bearer good")
		rec := httptest.NewRecorder()
		testServer(t, allow).Handler().ServeHTTP(rec, req)
		if rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden {
			t.Errorf("%s %s allowed but got %d", method, path, rec.Code)
		}
	}
}

func TestForbiddenBodyIsUpstreams(t *testing.T) {
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Authorization", "Bearer good")
	rec := httptest.NewRecorder()
	testServer(t, &fakeAuthz{allow: func(authorizer.Attributes) bool { return false }}).Handler().ServeHTTP(rec, req)
	if want := "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[metrics])\n"; rec.Body.String() != want {
		t.Fatalf("body %q, want %q", rec.Body.String(), want)
	}
	req = httptest.NewRequest("GET", "/pods", nil)
	req.Header.Set("Authorization", "Bearer good")
	rec = httptest.NewRecorder()
	testServer(t, &fakeAuthz{allow: func(authorizer.Attributes) bool { return false }}).Handler().ServeHTTP(rec, req)
	if want := "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[pods proxy])\n"; rec.Body.String() != want {
		t.Fatalf("body %q, want %q", rec.Body.String(), want)
	}
}

// The fine-grained subresource is tried first; proxy admits as a fallback.
func TestAttributes(t *testing.T) {
	a := &Auth{nodeName: "node-1"}
	cases := []struct {
		method, path string
		verb         string
		subs         []string
	}{
		{"GET", "/metrics", "get", []string{"metrics"}},
		{"GET", "/metrics/cadvisor", "get", []string{"metrics"}},
		{"GET", "/stats/summary", "get", []string{"stats"}},
		{"GET", "/logs/syslog", "get", []string{"log"}},
		{"GET", "/debug/pprof/profile", "get", []string{"proxy"}},
		{"GET", "/pods", "get", []string{"pods", "proxy"}},
		{"GET", "/runningpods/", "get", []string{"pods", "proxy"}},
		{"GET", "/healthz", "get", []string{"healthz", "proxy"}},
		{"GET", "/configz", "get", []string{"configz", "proxy"}},
		{"GET", "/spec/", "get", []string{"proxy"}},
		{"GET", "/containerLogs/ns/p/c", "get", []string{"proxy"}},
		{"GET", "/exec/ns/p/c", "create", []string{"proxy"}},
		{"POST", "/exec/ns/p/c", "create", []string{"proxy"}},
		{"GET", "/attach/ns/p/c", "create", []string{"proxy"}},
		{"GET", "/portForward/ns/p", "create", []string{"proxy"}},
		{"POST", "/run/ns/p/c", "create", []string{"proxy"}},
		{"GET", "/podsx", "get", []string{"proxy"}},
		{"DELETE", "/pods", "delete", []string{"pods", "proxy"}},
	}
	for _, tc := range cases {
		attrs := a.Attributes(&user.DefaultInfo{Name: "u"}, httptest.NewRequest(tc.method, tc.path, nil))
		var subs []string
		for _, at := range attrs {
			subs = append(subs, at.Subresource)
			if at.Verb != tc.verb || at.Resource != "nodes" || at.Name != "node-1" || at.APIVersion != "v1" || !at.ResourceRequest {
				t.Errorf("%s %s: %+v", tc.method, tc.path, at)
			}
		}
		if strings.Join(subs, ",") != strings.Join(tc.subs, ",") {
			t.Errorf("%s %s: subresources %v, want %v", tc.method, tc.path, subs, tc.subs)
		}
	}
}

func TestVarLogsStaysInside(t *testing.T) {
	base := t.TempDir()
	logDir := filepath.Join(base, "log")
	if err := os.MkdirAll(filepath.Join(logDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(logDir, "sub", "app.log"), []byte("inside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "secret"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "secret"), filepath.Join(logDir, "escape")); err != nil {
		t.Fatal(err)
	}
	// The node agent's own links: containers/x.log -> <pod logs>/x/0.log, an
	// absolute path inside the log folder, and one into a pod log folder
	// elsewhere (podLogsDir).
	podLogs := filepath.Join(base, "pods")
	for _, d := range []string{filepath.Join(logDir, "pods", "p"), filepath.Join(logDir, "containers"), filepath.Join(podLogs, "q")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for file, content := range map[string]string{filepath.Join(logDir, "pods", "p", "0.log"): "line p", filepath.Join(podLogs, "q", "0.log"): "line q"} {
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"p.log": filepath.Join(logDir, "pods", "p", "0.log"), "q.log": filepath.Join(podLogs, "q", "0.log"),
		"out.log": filepath.Join(base, "secret"), "dots.log": filepath.Join(logDir, "..", "secret"),
	} {
		if err := os.Symlink(target, filepath.Join(logDir, "containers", link)); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{cfg: Config{LogDir: logDir, PodLogsDir: podLogs}}
	h := http.StripPrefix("/logs", http.HandlerFunc(s.varLogs))
	get := func(raw string) (int, string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.URL = &url.URL{Path: raw, RawPath: raw}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/logs/sub/app.log"); code != 200 || body != "inside" {
		t.Errorf("inside file: %d %q", code, body)
	}
	if code, body := get("/logs/"); code != 200 || !strings.Contains(body, "sub/") {
		t.Errorf("listing: %d %q", code, body)
	}
	for p, want := range map[string]string{"/logs/containers/p.log": "line p", "/logs/containers/q.log": "line q"} {
		if code, body := get(p); code != 200 || body != want {
			t.Errorf("%s: %d %q, want the linked log %q", p, code, body, want)
		}
	}
	for _, p := range []string{"/logs/../secret", "/logs/sub/../../secret", "/logs/escape", "/logs//etc/passwd", "/logs/%2e%2e/secret",
		"/logs/containers/out.log", "/logs/containers/dots.log"} {
		if code, body := get(p); code == 200 || strings.Contains(body, "outside") || strings.Contains(body, "root:") {
			t.Errorf("%s escaped the log dir: %d %q", p, code, body)
		}
	}
}

func TestLogOptionsFromQuery(t *testing.T) {
	o, err := LogOptionsFromQuery(url.Values{"follow": {"true"}, "tailLines": {"5"}, "limitBytes": {"100"}, "timestamps": {"1"},
		"previous": {"true"}, "sinceSeconds": {"30"}})
	if err != nil {
		t.Fatal(err)
	}
	if !o.Follow || *o.TailLines != 5 || *o.LimitBytes != 100 || !o.Timestamps || !o.Previous || *o.SinceSeconds != 30 {
		t.Errorf("options %+v", o)
	}
	for _, bad := range []url.Values{{"tailLines": {"-1"}}, {"follow": {"maybe"}}, {"sinceTime": {"yesterday"}},
		{"sinceSeconds": {"1"}, "sinceTime": {"2024-01-01T00:00:00Z"}}} {
		if _, err := LogOptionsFromQuery(bad); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

// enableDebuggingHandlers and enableSystemLogHandler take their handlers off
// the API (the first also pprof and /debug/flags/v, as upstream); the rest
// stays.
func TestSwitchesTakeHandlersOff(t *testing.T) {
	paths := []string{"/logs/", "/containerLogs/ns/pod/c", "/exec/ns/pod/c", "/attach/ns/pod/c", "/portForward/ns/pod", "/pods", "/debug/pprof/", "/debug/flags/v"}
	served := func(cfg Config) map[string]bool {
		cfg.DebugFlags = true // enableDebugFlagsHandler's default
		s := &Server{cfg: cfg, host: fakeHost{rt: critest.NewFakeRuntimeService()}}
		mux := s.Routes()
		out := map[string]bool{}
		for _, p := range paths {
			method := "GET"
			if p == "/debug/flags/v" {
				method = "PUT"
			}
			_, pattern := mux.Handler(httptest.NewRequest(method, p, nil))
			out[p] = pattern != ""
		}
		return out
	}
	all := served(Config{Debugging: true, SystemLogs: true, Profiling: true})
	noLogs := served(Config{Debugging: true, SystemLogs: false, Profiling: true})
	noDebug := served(Config{Debugging: false, SystemLogs: true, Profiling: true})
	noProfiling := served(Config{Debugging: true, SystemLogs: true})
	for _, p := range paths {
		if !all[p] {
			t.Errorf("%s not served with every handler on", p)
		}
		if want := p != "/logs/"; noLogs[p] != want {
			t.Errorf("enableSystemLogHandler false: %s served = %v, want %v", p, noLogs[p], want)
		}
		if want := p != "/debug/pprof/"; noProfiling[p] != want {
			t.Errorf("enableProfilingHandler false: %s served = %v, want %v", p, noProfiling[p], want)
		}
		if want := p == "/pods"; noDebug[p] != want {
			t.Errorf("enableDebuggingHandlers false: %s served = %v, want %v", p, noDebug[p], want)
		}
	}
}
