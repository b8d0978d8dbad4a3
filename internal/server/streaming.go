package server

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/proxy"
	translator "k8s.io/apiserver/pkg/util/proxy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// streamTarget resolves the pod (checking the optional UID) and container.
func (s *Server) streamTarget(w http.ResponseWriter, r *http.Request, needContainer bool) (*corev1.Pod, string, bool) {
	pod, ok := s.host.Pod(r.PathValue("namespace"), r.PathValue("pod"))
	if !ok || (r.PathValue("uid") != "" && types.UID(r.PathValue("uid")) != pod.UID) {
		writeText(w, http.StatusNotFound, "pod does not exist")
		return nil, "", false
	}
	if !needContainer {
		return pod, "", true
	}
	id, _, err := s.host.Container(r.Context(), pod, r.PathValue("container"), false)
	if err != nil {
		writeText(w, http.StatusNotFound, err.Error())
		return nil, "", false
	}
	return pod, id, true
}

// proxyStream hands the client's upgrade to the runtime's streaming server.
// The connection to the runtime is made per request and never reused, so a
// failed upgrade cannot leave a backend connection for another client
// (CVE-2018-1002105). WebSocket v5 clients are translated to SPDY.
func (s *Server) proxyStream(w http.ResponseWriter, r *http.Request, target string, opts *remotecommandserver.Options) {
	u, err := url.Parse(target)
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	var h http.Handler = proxy.NewUpgradeAwareHandler(u, nil, false, true, &responder{})
	if opts != nil && wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
		h = translator.NewStreamTranslatorHandler(u, nil, 0, translator.Options{Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr, Tty: opts.TTY})
	}
	h.ServeHTTP(withIdleTimeout(w, s.cfg.IdleTimeout), r)
}

type responder struct{}

func (responder) Error(w http.ResponseWriter, r *http.Request, err error) {
	klog.FromContext(r.Context()).Error(err, "Error while proxying a stream to the container runtime")
	writeText(w, http.StatusInternalServerError, err.Error())
}

// remoteCommand serves exec and attach: read the stream options, find the
// container, ask the runtime for a stream URL (what says how), proxy to it.
func (s *Server) remoteCommand(w http.ResponseWriter, r *http.Request, what string,
	open func(id string, o *remotecommandserver.Options) (string, error)) {
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	_, id, ok := s.streamTarget(w, r, true)
	if !ok {
		return
	}
	url, err := open(id, opts)
	if err != nil {
		writeText(w, http.StatusInternalServerError, fmt.Sprintf("failed to %s container %s: %v", what, r.PathValue("container"), err))
		return
	}
	s.proxyStream(w, r, url, opts)
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	s.remoteCommand(w, r, "exec in", func(id string, o *remotecommandserver.Options) (string, error) {
		resp, err := s.host.Runtime().Exec(r.Context(), &runtimeapi.ExecRequest{
			ContainerId: id, Cmd: r.URL.Query()["command"], Tty: o.TTY, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr,
		})
		return resp.GetUrl(), err
	})
}

func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	s.remoteCommand(w, r, "attach to", func(id string, o *remotecommandserver.Options) (string, error) {
		resp, err := s.host.Runtime().Attach(r.Context(), &runtimeapi.AttachRequest{
			ContainerId: id, Tty: o.TTY, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr,
		})
		return resp.GetUrl(), err
	})
}

func (s *Server) portForward(w http.ResponseWriter, r *http.Request) {
	tunnel := wsstream.IsWebSocketRequestWithTunnelingProtocol(r)
	var ports []int32
	if !tunnel {
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			writeText(w, http.StatusBadRequest, err.Error())
			return
		}
		ports = opts.Ports
	}
	pod, _, ok := s.streamTarget(w, r, false)
	if !ok {
		return
	}
	sandboxID, err := s.sandboxOf(r, pod)
	if err != nil {
		writeText(w, http.StatusNotFound, err.Error())
		return
	}
	resp, err := s.host.Runtime().PortForward(r.Context(), &runtimeapi.PortForwardRequest{PodSandboxId: sandboxID, Port: ports})
	if err != nil {
		writeText(w, http.StatusInternalServerError, fmt.Sprintf("failed to port-forward to pod %s: %v", pod.Name, err))
		return
	}
	u, err := url.Parse(resp.Url)
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	var h http.Handler = proxy.NewUpgradeAwareHandler(u, nil, false, true, &responder{})
	if tunnel {
		h = translator.NewTunnelingHandler(h)
	}
	h.ServeHTTP(withIdleTimeout(w, s.cfg.IdleTimeout), r)
}

// sandboxOf finds the pod's ready sandbox.
func (s *Server) sandboxOf(r *http.Request, pod *corev1.Pod) (string, error) {
	list, err := s.host.Runtime().ListPodSandbox(r.Context(), &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.uid": string(pod.UID)},
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
	})
	if err != nil || len(list) == 0 {
		return "", fmt.Errorf("pod %s/%s has no running sandbox", pod.Namespace, pod.Name)
	}
	return list[0].Id, nil
}

// run executes a command and returns its combined output (POST /run).
func (s *Server) run(w http.ResponseWriter, r *http.Request) {
	_, id, ok := s.streamTarget(w, r, true)
	if !ok {
		return
	}
	cmd := strings.Fields(r.URL.Query().Get("cmd"))
	if len(cmd) == 0 {
		writeText(w, http.StatusBadRequest, "missing cmd")
		return
	}
	stdout, stderr, err := s.host.Runtime().ExecSync(r.Context(), id, cmd, 0)
	if err != nil {
		writeText(w, http.StatusInternalServerError, fmt.Sprintf("failed to run in container: %v", err))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write(append(stdout, stderr...))
}
