package plugins

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// fakePlugin is a plugin's registration side.
type fakePlugin struct {
	info   registerapi.PluginInfo
	mu     sync.Mutex
	status []*registerapi.RegistrationStatus
	srv    *grpc.Server
	registerapi.UnimplementedRegistrationServer
}

func (f *fakePlugin) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: f.info.Type, Name: f.info.Name, Endpoint: f.info.Endpoint, SupportedVersions: f.info.SupportedVersions}, nil
}

func (f *fakePlugin) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	f.mu.Lock()
	f.status = append(f.status, s)
	f.mu.Unlock()
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (f *fakePlugin) last() *registerapi.RegistrationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.status) == 0 {
		return nil
	}
	return f.status[len(f.status)-1]
}

// serve makes f answer at path. The socket is bound and listening in a
// folder of its own, then moved to path: the watcher's own loop must never
// see it between bind and listen, where a dial is refused (CI saw that).
func serve(t *testing.T, path string, f *fakePlugin) {
	t.Helper()
	staging, err := os.MkdirTemp("/tmp", "stg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(staging) })
	ln, err := net.Listen("unix", filepath.Join(staging, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Rename(filepath.Join(staging, "s.sock"), path); err != nil {
		t.Fatal(err)
	}
	f.srv = grpc.NewServer()
	registerapi.RegisterRegistrationServer(f.srv, f)
	go func() { _ = f.srv.Serve(ln) }()
	t.Cleanup(f.srv.Stop)
}

type fakeHandler struct {
	validate   error
	registered []string
	gone       []string
}

func (h *fakeHandler) ValidatePlugin(name, _ string, _ []string) error { return h.validate }
func (h *fakeHandler) RegisterPlugin(_ context.Context, name, endpoint string, _ []string) error {
	h.registered = append(h.registered, name+"@"+endpoint)
	return nil
}
func (h *fakeHandler) DeRegisterPlugin(name, _ string) { h.gone = append(h.gone, name) }

func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("/tmp", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestPluginsRegisterDeregisterAndRegisterAgain(t *testing.T) {
	dir := shortDir(t)
	h := &fakeHandler{}
	w := &Watcher{Dir: dir, Handlers: map[string]Handler{registerapi.DevicePlugin: h}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "dev.sock")
	p := &fakePlugin{info: registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: "example.com/dev", SupportedVersions: []string{"v1beta1"}}}
	serve(t, sock, p)
	w.Reconcile(ctx)
	if st := p.last(); st == nil || !st.PluginRegistered {
		t.Fatalf("registration status %v, want registered", st)
	}
	// No endpoint in GetInfo: the registry socket itself is the endpoint.
	if len(h.registered) != 1 || h.registered[0] != "example.com/dev@"+sock {
		t.Fatalf("handler saw %v", h.registered)
	}
	w.Reconcile(ctx)
	if len(h.registered) != 1 {
		t.Errorf("registered again without a change: %v", h.registered)
	}
	// The socket goes: deregistered. It comes back: registered again.
	p.srv.Stop()
	_ = os.Remove(sock)
	w.Reconcile(ctx)
	if len(h.gone) != 1 || h.gone[0] != "example.com/dev" {
		t.Fatalf("deregistered %v", h.gone)
	}
	time.Sleep(10 * time.Millisecond)
	serve(t, sock, p)
	w.Reconcile(ctx)
	if len(h.registered) != 2 {
		t.Errorf("a remade socket did not register again: %v", h.registered)
	}
}

func TestPluginsWithoutAHandlerOrInvalidAreToldWhy(t *testing.T) {
	dir := shortDir(t)
	w := &Watcher{Dir: dir, Handlers: map[string]Handler{registerapi.DevicePlugin: &fakeHandler{validate: errors.New("bad version")}}}
	ctx := context.Background()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	csi := &fakePlugin{info: registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: "csi.example.com", SupportedVersions: []string{"1.0.0"}}}
	serve(t, filepath.Join(dir, "csi.sock"), csi)
	dev := &fakePlugin{info: registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: "example.com/dev"}}
	serve(t, filepath.Join(dir, "dev.sock"), dev)
	// A hidden socket is not a plugin.
	hidden := &fakePlugin{info: registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: "x"}}
	serve(t, filepath.Join(dir, ".hidden.sock"), hidden)
	w.Reconcile(ctx)
	if st := csi.last(); st == nil || st.PluginRegistered || !strings.Contains(st.Error, "no handler registered for plugin type: CSIPlugin") {
		t.Errorf("CSI plugin told %v", st)
	}
	if st := dev.last(); st == nil || st.PluginRegistered || !strings.Contains(st.Error, "plugin validation failed with err: bad version") {
		t.Errorf("invalid plugin told %v", st)
	}
	if hidden.last() != nil {
		t.Error("a hidden socket was asked to register")
	}
	// A failed plugin is not retried at once (back-off).
	n := len(csi.status)
	w.Reconcile(ctx)
	if len(csi.status) != n {
		t.Error("a failed registration was retried without back-off")
	}
}
