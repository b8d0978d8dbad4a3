// Package probes runs startup, liveness and readiness probes (exec, httpGet,
// tcpSocket, grpc) for running containers and reports their results: a
// failed liveness or startup probe stops the container, readiness decides
// the container's Ready, startup holds the other two off.
package probes

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Result of one probe run.
type Result int

const (
	Success Result = iota
	Failure
	Unknown // could not run (no IP yet, say): counts as neither
	Warning // passed, with something to report (a redirect to another host)
)

func (r Result) String() string {
	return [...]string{"successful", "failed", "unknown"}[r]
}

// Execer runs a command in a container with a timeout (CRI ExecSync).
type Execer interface {
	ExecSync(ctx context.Context, containerID string, cmd []string, timeout time.Duration) (stdout, stderr []byte, err error)
}

// Target is what a probe acts on.
type Target struct {
	Pod         *corev1.Pod
	Container   *corev1.Container
	ContainerID string
	PodIP       string
}

// maxBody is how much of an HTTP probe's answer is read (and shown).
const maxBody = 10 << 10

// Run performs one probe handler: ProbeHandler is shared by probes and
// (without thresholds) by lifecycle hooks.
func Run(ctx context.Context, exec Execer, h corev1.ProbeHandler, t Target, timeout time.Duration) (Result, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case h.Exec != nil:
		stdout, stderr, err := exec.ExecSync(ctx, t.ContainerID, h.Exec.Command, timeout)
		out := string(stdout) + string(stderr)
		if err != nil {
			if strings.Contains(err.Error(), "exit code") || strings.Contains(err.Error(), "DeadlineExceeded") || ctx.Err() != nil {
				return Failure, strings.TrimSpace(out + " " + err.Error()), nil
			}
			return Unknown, out, err
		}
		return Success, out, nil
	case h.HTTPGet != nil:
		return httpProbe(ctx, h.HTTPGet, t, timeout)
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, t.Container)
		if err != nil {
			return Unknown, "", err
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = t.PodIP
		}
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return Failure, fmt.Sprintf("dial tcp %s: %v", net.JoinHostPort(host, strconv.Itoa(port)), err), nil
		}
		conn.Close()
		return Success, "", nil
	case h.GRPC != nil:
		return grpcProbe(ctx, h.GRPC, t)
	}
	return Unknown, "", fmt.Errorf("probe has no handler")
}

func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("couldn't find port %q in container %s", p.StrVal, c.Name)
}

func httpProbe(ctx context.Context, g *corev1.HTTPGetAction, t Target, timeout time.Duration) (Result, string, error) {
	port, err := resolvePort(g.Port, t.Container)
	if err != nil {
		return Unknown, "", err
	}
	host := g.Host
	if host == "" {
		host = t.PodIP
	}
	if host == "" {
		return Unknown, "", fmt.Errorf("the pod has no IP yet")
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if ref, err := url.Parse(path); err == nil {
		u = u.ResolveReference(ref)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
	if err != nil {
		return Unknown, "", err
	}
	req.Header.Set("User-Agent", "kube-probe/1.36")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}, //nolint:gosec // probes do not verify, as upstream
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			// Redirects to the same host are followed; others end the probe
			// as a success with a warning, as upstream does.
			if r.URL.Hostname() != u.Hostname() || len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return Failure, fmt.Sprintf("Get %q: %v", u.String(), err), nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// A redirect the probe did not follow (another host): it passes,
		// with a warning that shows where it pointed.
		return Warning, "Probe terminated redirects, Response body: " + string(body), nil
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return Success, string(body), nil
	}
	return Failure, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode), nil
}

func grpcProbe(ctx context.Context, g *corev1.GRPCAction, t Target) (Result, string, error) {
	if t.PodIP == "" {
		return Unknown, "", fmt.Errorf("the pod has no IP yet")
	}
	conn, err := grpc.NewClient(net.JoinHostPort(t.PodIP, strconv.Itoa(int(g.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("kube-probe/1.36"))
	if err != nil {
		return Failure, err.Error(), nil
	}
	defer func() { _ = conn.Close() }()
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return Failure, fmt.Sprintf("rpc error: %v", err), nil
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return Failure, fmt.Sprintf("service unhealthy (responded with %q)", resp.Status), nil
	}
	return Success, "", nil
}
