// Package plugins is the plugin watcher of the upstream kubelet
// (k8s.io/kubelet/pkg/apis/pluginregistration/v1): node plugins (CSI
// drivers, DRA drivers, device plugins) put a socket in
// <root-dir>/plugins_registry; the agent asks it GetInfo, hands it to the
// handler of its type, and tells it the outcome with NotifyRegistrationStatus.
// A plugin whose socket goes away is deregistered; one whose socket is made
// anew registers again. A type without a handler is refused with upstream's
// message, so a driver of a kind Bosun does not serve says so in its log.
package plugins

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Handler is what serves one plugin type.
type Handler interface {
	ValidatePlugin(name, endpoint string, versions []string) error
	RegisterPlugin(ctx context.Context, name, endpoint string, versions []string) error
	DeRegisterPlugin(name, endpoint string)
}

// Watcher finds plugin sockets and registers them.
type Watcher struct {
	Dir      string             // <root-dir>/plugins_registry
	Handlers map[string]Handler // by plugin type (registerapi.CSIPlugin, DRAPlugin, DevicePlugin)
	Every    time.Duration      // how often the folder is read (1 s when 0)

	mu     sync.Mutex
	known  map[string]*socket // by socket path
	dialTO time.Duration
}

type socket struct {
	mtime      time.Time
	registered bool // handed to a handler
	typ, name  string
	endpoint   string
	failures   int
	retryAt    time.Time
}

// Run makes the folder and keeps plugins registered until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	if err := os.MkdirAll(w.Dir, 0o750); err != nil {
		return fmt.Errorf("plugin registry: %w", err)
	}
	w.mu.Lock()
	w.known = map[string]*socket{}
	if w.dialTO == 0 {
		w.dialTO = 10 * time.Second
	}
	w.mu.Unlock()
	every := w.Every
	if every == 0 {
		every = time.Second
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			w.Reconcile(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// sockets lists the sockets under the folder (not hidden names, as upstream).
func (w *Watcher) sockets() map[string]time.Time {
	out := map[string]time.Time{}
	_ = filepath.WalkDir(w.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") && path != w.Dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSocket != 0 {
			if info, err := d.Info(); err == nil {
				out[path] = info.ModTime()
			}
		}
		return nil
	})
	return out
}

// Reconcile registers new and remade sockets and deregisters gone ones.
func (w *Watcher) Reconcile(ctx context.Context) {
	log := klog.FromContext(ctx)
	found := w.sockets()
	w.mu.Lock()
	defer w.mu.Unlock()
	for path, s := range w.known {
		if mtime, ok := found[path]; !ok || !mtime.Equal(s.mtime) {
			if s.registered {
				log.Info("Plugin socket went away; deregistering", "path", path, "type", s.typ, "name", s.name)
				w.Handlers[s.typ].DeRegisterPlugin(s.name, s.endpoint)
			}
			delete(w.known, path)
		}
	}
	now := time.Now()
	for path, mtime := range found {
		s := w.known[path]
		if s == nil {
			s = &socket{mtime: mtime}
			w.known[path] = s
		}
		if s.registered || now.Before(s.retryAt) {
			continue
		}
		if err := w.register(ctx, path, s); err != nil {
			s.failures++
			s.retryAt = now.Add(min(time.Duration(1<<min(s.failures, 7))*time.Second, 2*time.Minute))
			log.Error(err, "Plugin registration failed", "path", path)
		}
	}
}

func (w *Watcher) register(ctx context.Context, path string, s *socket) error {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return fmt.Errorf("RegisterPlugin error -- dial failed at socket %s, err: %v", path, err)
	}
	defer func() { _ = conn.Close() }()
	client := registerapi.NewRegistrationClient(conn)
	infoCtx, cancel := context.WithTimeout(ctx, time.Second)
	info, err := client.GetInfo(infoCtx, &registerapi.InfoRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("RegisterPlugin error -- failed to get plugin info using RPC GetInfo at socket %s, err: %v", path, err)
	}
	notify := func(ok bool, msg string) error {
		nctx, cancel := context.WithTimeout(ctx, w.dialTO)
		defer cancel()
		_, err := client.NotifyRegistrationStatus(nctx, &registerapi.RegistrationStatus{PluginRegistered: ok, Error: msg})
		return err
	}
	h, ok := w.Handlers[info.Type]
	if !ok {
		msg := fmt.Sprintf("RegisterPlugin error -- no handler registered for plugin type: %s at socket %s", info.Type, path)
		_ = notify(false, msg)
		return fmt.Errorf("%s", msg)
	}
	if info.Endpoint == "" {
		info.Endpoint = path
	}
	if err := h.ValidatePlugin(info.Name, info.Endpoint, info.SupportedVersions); err != nil {
		_ = notify(false, fmt.Sprintf("RegisterPlugin error -- plugin validation failed with err: %v", err))
		return fmt.Errorf("RegisterPlugin error -- pluginHandler.ValidatePluginFunc failed: %w", err)
	}
	if err := h.RegisterPlugin(ctx, info.Name, info.Endpoint, info.SupportedVersions); err != nil {
		msg := fmt.Sprintf("RegisterPlugin error -- plugin registration failed with err: %v", err)
		_ = notify(false, msg)
		return fmt.Errorf("%s", msg)
	}
	if err := notify(true, ""); err != nil {
		h.DeRegisterPlugin(info.Name, info.Endpoint)
		return fmt.Errorf("RegisterPlugin error -- failed to send registration status at socket %s, err: %v", path, err)
	}
	s.registered, s.typ, s.name, s.endpoint, s.failures = true, info.Type, info.Name, info.Endpoint, 0
	klog.FromContext(ctx).Info("Registered plugin", "type", info.Type, "name", info.Name, "endpoint", info.Endpoint)
	return nil
}
