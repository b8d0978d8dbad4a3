// Package server is the node API: HTTPS on port 10250 behind authentication
// and authorization, healthz on 127.0.0.1:10248, and the read-only port when
// it is configured. It sees the rest of the agent through Host, read-only.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/metrics/legacyregistry"
	internalapi "k8s.io/cri-api/pkg/apis"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
)

// Host is what the node API reads from the agent.
type Host interface {
	// Pod finds a pod this node runs by namespace and name.
	Pod(namespace, name string) (*corev1.Pod, bool)
	// Pods lists this node's pods with the statuses the agent holds.
	Pods() []*corev1.Pod
	// RunningPods lists the pods the runtime runs.
	RunningPods(ctx context.Context) ([]*corev1.Pod, error)
	// Container finds a container's runtime ID and log file; previous asks
	// for the instance before the latest.
	Container(ctx context.Context, pod *corev1.Pod, name string, previous bool) (id, logPath string, err error)
	// Runtime is the CRI runtime, for streaming and logs.
	Runtime() internalapi.RuntimeService
	// Healthy reports the agent's health (sync loop, PLEG).
	Healthy() error
	// Configz is the running KubeletConfiguration.
	Configz() any
	// Spec is the machine's description.
	Spec() any
}

// StatsSource reports resource usage.
type StatsSource interface {
	Summary(ctx context.Context) (*statsapi.Summary, error)
	WriteResourceMetrics(ctx context.Context, w io.Writer) error
	WriteCadvisorMetrics(ctx context.Context, w io.Writer) error
}

// Config says where and how to serve.
type Config struct {
	Address        string                                               // address:port of the API ("" disables: enableServer false)
	HealthzAddress string                                               // address:port of healthz ("" disables)
	ReadOnlyAddr   string                                               // address:port of the read-only API ("" disables)
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error) // the serving certificate, re-read each handshake
	MinTLSVersion  uint16                                               // tlsMinVersion
	CipherSuites   []uint16                                             // tlsCipherSuites
	// CurvePreferences are tlsCurvePreferences (nil: Go's defaults).
	CurvePreferences []tls.CurveID
	IdleTimeout      time.Duration // streamingConnectionIdleTimeout
	LogDir           string        // the folder /logs/ serves (/var/log)
	PodLogsDir       string        // podLogsDir: links under LogDir into it are followed
	Debugging        bool          // enableDebuggingHandlers: logs, exec, attach, port-forward, run
	SystemLogs       bool          // enableSystemLogHandler: /logs/ (with Debugging)
	Profiling        bool          // enableProfilingHandler: /debug/pprof/
	DebugFlags       bool          // enableDebugFlagsHandler: PUT /debug/flags/v sets the log verbosity
	Stats            StatsSource   // /stats/summary, /metrics/resource, /metrics/cadvisor (nil: not served)
	ProbeMetrics     http.Handler  // /metrics/probes (nil: not served)
}

// Server is the node API.
type Server struct {
	cfg  Config
	host Host
	auth *Auth
}

// New checks cfg and builds the server.
func New(cfg Config, host Host, auth *Auth) (*Server, error) {
	if cfg.GetCertificate == nil || host == nil || auth == nil {
		return nil, errors.New("server: a certificate, a host and auth are required")
	}
	return &Server{cfg: cfg, host: host, auth: auth}, nil
}

// setVerbosity is PUT /debug/flags/v: the body is the new log verbosity,
// answered in upstream's words.
func setVerbosity(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64))
	if err != nil {
		writeText(w, http.StatusBadRequest, "error reading request body: "+err.Error())
		return
	}
	answer, err := logs.GlogSetter(strings.TrimSpace(string(body)))
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	writeText(w, http.StatusOK, answer)
}

// route is one pattern of the secure API.
type route struct {
	pattern string       // ServeMux pattern, with its method
	handler http.Handler // unauthenticated handler
}

// routeTable is every route of the secure API; Routes and the authorization
// coverage test both read it.
func (s *Server) routeTable() []route {
	ok := func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") }
	rs := []route{
		{"GET /healthz", http.HandlerFunc(s.healthz)},
		{"GET /healthz/ping", http.HandlerFunc(ok)},
		{"GET /healthz/log", http.HandlerFunc(ok)},
		{"GET /healthz/syncloop", http.HandlerFunc(s.healthz)},
		{"GET /pods", http.HandlerFunc(s.pods)},
		{"GET /pods/", http.HandlerFunc(s.pods)},
		{"GET /runningpods/", http.HandlerFunc(s.runningPods)},
		{"GET /configz", s.jsonOf(func() any { return map[string]any{"kubeletconfig": s.host.Configz()} })},
		{"GET /spec/", s.jsonOf(s.host.Spec)},
		{"GET /metrics", legacyregistry.Handler()},
	}
	// pprof and the verbosity flag only with the debugging handlers, as
	// upstream serves them.
	if s.cfg.Profiling && s.cfg.Debugging {
		rs = append(rs, route{"GET /debug/pprof/", http.HandlerFunc(pprof.Index)},
			route{"GET /debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline)},
			route{"GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile)},
			route{"GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol)},
			route{"POST /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol)},
			route{"GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace)})
	}
	if s.cfg.DebugFlags && s.cfg.Debugging {
		rs = append(rs, route{"PUT /debug/flags/v", http.HandlerFunc(setVerbosity)})
	}
	if s.cfg.ProbeMetrics != nil {
		rs = append(rs, route{"GET /metrics/probes", s.cfg.ProbeMetrics})
	}
	if st := s.cfg.Stats; st != nil {
		summary := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sum, err := st.Summary(r.Context())
			if err != nil {
				writeText(w, http.StatusInternalServerError, "failed to get the summary: "+err.Error())
				return
			}
			writeJSON(w, sum)
		})
		text := func(write func(context.Context, io.Writer) error) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
				var out io.Writer = w
				if acceptsGzip(r.Header) {
					out = gzipResponse{w}
				}
				if err := write(r.Context(), out); err != nil {
					writeText(w, http.StatusInternalServerError, err.Error())
				}
			}
		}
		rs = append(rs, route{"GET /stats/summary", summary}, route{"GET /stats/summary/", summary},
			route{"GET /metrics/resource", text(st.WriteResourceMetrics)}, route{"GET /metrics/cadvisor", text(st.WriteCadvisorMetrics)})
	}
	if !s.cfg.Debugging {
		return rs
	}
	rs = append(rs,
		route{"GET /containerLogs/{namespace}/{pod}/{container}", http.HandlerFunc(s.containerLogs)},
		route{"POST /run/{namespace}/{pod}/{container}", http.HandlerFunc(s.run)},
		route{"POST /run/{namespace}/{pod}/{uid}/{container}", http.HandlerFunc(s.run)},
	)
	if s.cfg.SystemLogs {
		rs = append(rs, route{"GET /logs/", http.StripPrefix("/logs", http.HandlerFunc(s.varLogs))})
	}
	for _, method := range []string{"GET", "POST"} {
		rs = append(rs,
			route{method + " /exec/{namespace}/{pod}/{container}", http.HandlerFunc(s.exec)},
			route{method + " /exec/{namespace}/{pod}/{uid}/{container}", http.HandlerFunc(s.exec)},
			route{method + " /attach/{namespace}/{pod}/{container}", http.HandlerFunc(s.attach)},
			route{method + " /attach/{namespace}/{pod}/{uid}/{container}", http.HandlerFunc(s.attach)},
			route{method + " /portForward/{namespace}/{pod}", http.HandlerFunc(s.portForward)},
			route{method + " /portForward/{namespace}/{pod}/{uid}", http.HandlerFunc(s.portForward)},
		)
	}
	return rs
}

// Routes is every path of the secure API, unauthenticated. Handler wraps it.
func (s *Server) Routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, r := range s.routeTable() {
		mux.Handle(r.pattern, r.handler)
	}
	return mux
}

// healthz answers ok while the agent is healthy.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := s.host.Healthy(); err != nil {
		writeText(w, http.StatusInternalServerError, "[-]syncloop failed: "+err.Error()+"\nhealthz check failed")
		return
	}
	writeText(w, http.StatusOK, "ok")
}

// Handler is the secure API: every route behind authentication and
// authorization.
func (s *Server) Handler() http.Handler { return instrument(s.auth.Filter(s.Routes()), false) }

// instrument counts and times each request as upstream's server does:
// kubelet_http_requests_total, _duration_seconds and kubelet_http_inflight_requests,
// whatever the answer (an unauthorized request too).
func instrument(next http.Handler, readOnly bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		labels := bmetrics.HTTPLabels(r.Method, r.URL.Path, readOnly)
		bmetrics.HTTPRequests.WithLabelValues(labels...).Inc()
		inflight := bmetrics.HTTPInflightRequests.WithLabelValues(labels...)
		inflight.Inc()
		defer inflight.Dec()
		defer bmetrics.HTTPRequestsDuration.ObserveSince(time.Now(), labels...)()
		next.ServeHTTP(w, r)
	})
}

// tlsConfig is 10250's TLS: the serving certificate, tlsMinVersion,
// tlsCipherSuites and tlsCurvePreferences, and client certificates asked for
// (x509 authentication).
func (s *Server) tlsConfig() *tls.Config {
	c := &tls.Config{
		GetCertificate: s.cfg.GetCertificate, MinVersion: s.cfg.MinTLSVersion, CipherSuites: s.cfg.CipherSuites,
		CurvePreferences: s.cfg.CurvePreferences, ClientAuth: tls.RequestClientCert, NextProtos: []string{"h2", "http/1.1"},
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	tlsCfg := s.tlsConfig()
	var servers []*http.Server
	errs := make(chan error, 3)
	if s.cfg.Address != "" {
		gate := newConnGate(maxUnauthenticated)
		s.auth.onAuthenticated = gate.authenticated
		secure := newHTTPServer(s.cfg.Address, withLogger(logger, s.Handler()))
		secure.TLSConfig = tlsCfg
		gate.install(secure)
		servers = append(servers, secure)
		go func() { errs <- serveTLS(secure) }()
	}
	if s.cfg.HealthzAddress != "" {
		h := newHTTPServer(s.cfg.HealthzAddress, onlyPath(http.HandlerFunc(s.healthz), "/healthz"))
		h.ReadTimeout, h.WriteTimeout = time.Minute, time.Minute
		servers = append(servers, h)
		go func() { errs <- h.ListenAndServe() }()
	}
	if s.cfg.ReadOnlyAddr != "" {
		ro := newHTTPServer(s.cfg.ReadOnlyAddr, withLogger(logger, instrument(s.readOnly(), true)))
		servers = append(servers, ro)
		go func() { errs <- ro.ListenAndServe() }()
	}
	logger.Info("Serving the node API", "address", s.cfg.Address, "healthz", s.cfg.HealthzAddress, "readOnly", s.cfg.ReadOnlyAddr)
	select {
	case <-ctx.Done():
	case err := <-errs:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			for _, srv := range servers {
				_ = srv.Close()
			}
			return fmt.Errorf("node API server failed: %w", err)
		}
	}
	for _, srv := range servers {
		_ = srv.Close()
	}
	return nil
}

// Connection limits of the node's servers, as the upstream kubelet sets them:
// a keep-alive connection with no request is closed after idleTimeout (the
// keep-alive of Go's default client transport), and a request, streams
// included, may take up to 4 hours to read or write.
var (
	idleTimeout       = 90 * time.Second
	readHeaderTimeout = 30 * time.Second
	streamTimeout     = 4 * time.Hour
)

func newHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{Addr: addr, Handler: h, IdleTimeout: idleTimeout, ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout: streamTimeout, WriteTimeout: streamTimeout, MaxHeaderBytes: 1 << 20}
}

func serveTLS(srv *http.Server) error {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return err
	}
	return srv.Serve(tls.NewListener(ln, srv.TLSConfig))
}

// onlyPath serves exactly one path of h (healthz: no other handler on that
// port, upstream CVE-2019-11248).
func onlyPath(h http.Handler, path string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// readOnly serves the read-only paths without authentication, as the
// read-only port does when an operator turns it on.
func (s *Server) readOnly() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routeTable() {
		switch r.pattern {
		case "GET /healthz", "GET /pods", "GET /pods/", "GET /spec/", "GET /metrics":
			mux.Handle(r.pattern, r.handler)
		}
	}
	return mux
}

func withLogger(logger klog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(klog.NewContext(r.Context(), logger)))
	})
}

func (s *Server) jsonOf(get func() any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, get()) }
}

func writeJSON(w http.ResponseWriter, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

// gzipResponse is a response whose client accepts gzip: a body already
// compressed goes out as it is, with its Content-Encoding.
type gzipResponse struct{ http.ResponseWriter }

func (g gzipResponse) WriteGzip(body []byte) error {
	h := g.Header()
	h.Set("Content-Encoding", "gzip")
	h.Add("Vary", "Accept-Encoding")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, err := g.Write(body)
	return err
}

// acceptsGzip says whether the request's Accept-Encoding takes gzip (and
// does not refuse it with q=0).
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
			if !ok {
				return true
			}
			if f, err := strconv.ParseFloat(q, 64); err == nil && f > 0 {
				return true
			}
		}
	}
	return false
}

// podListEncoder is a Host that encodes /pods itself (PodListCache),
// gzip-compressed when asked.
type podListEncoder interface {
	PodListJSON(gzipped bool) ([]byte, error)
}

// pods lists this node's pods as the agent sees them. A client that takes
// gzip gets the list compressed (about a tenth of its 460 kB with 100 pods).
func (s *Server) pods(w http.ResponseWriter, r *http.Request) {
	if enc, ok := s.host.(podListEncoder); ok {
		gz := acceptsGzip(r.Header)
		data, err := enc.PodListJSON(gz)
		if err != nil {
			writeText(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if gz {
			_ = gzipResponse{w}.WriteGzip(data)
			return
		}
		_, _ = w.Write(data)
		return
	}
	list := corev1.PodList{}
	list.Kind, list.APIVersion = "PodList", "v1"
	for _, p := range s.host.Pods() {
		list.Items = append(list.Items, *p)
	}
	writeJSON(w, list)
}

func (s *Server) runningPods(w http.ResponseWriter, r *http.Request) {
	pods, err := s.host.RunningPods(r.Context())
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	list := corev1.PodList{}
	list.Kind, list.APIVersion = "PodList", "v1"
	for _, p := range pods {
		list.Items = append(list.Items, *p)
	}
	writeJSON(w, list)
}
