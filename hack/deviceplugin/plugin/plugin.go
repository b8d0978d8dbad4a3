// Package plugin is a small device plugin for tests (test equipment, not
// product): it serves devices named <prefix>-0..n-1 of one resource, gives
// each allocation an environment variable listing the devices and a mount
// of a host folder, and registers with the node agent as real plugins do.
package plugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Plugin is one resource's device plugin.
type Plugin struct {
	Resource                              string // e.g. example.com/dev
	Dir                                   string // the agent's device plugin folder
	Socket                                string // this plugin's socket name in Dir
	PreStartRequired, PreferredAllocation bool   // the options the plugin advertises
	HostMount                             string // a host folder each allocation mounts at /dev-info ("" for none)

	mu       sync.Mutex
	devices  []*pluginapi.Device
	update   chan struct{}
	server   *grpc.Server
	Allocs   [][]string // device IDs of each Allocate call
	PreStart [][]string // device IDs of each PreStartContainer call
	pluginapi.UnimplementedDevicePluginServer
}

// New returns a plugin with n healthy devices.
func New(resource, dir, socket string, n int) *Plugin {
	p := &Plugin{Resource: resource, Dir: dir, Socket: socket, update: make(chan struct{}, 1)}
	prefix := resource[strings.LastIndexByte(resource, '/')+1:]
	for i := range n {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprintf("%s-%d", prefix, i), Health: pluginapi.Healthy})
	}
	return p
}

// SetNUMA sets the NUMA nodes a device says it is attached to (none: no
// topology) and tells the agent.
func (p *Plugin) SetNUMA(id string, nodes ...int64) {
	p.mu.Lock()
	for _, d := range p.devices {
		if d.ID != id {
			continue
		}
		d.Topology = nil
		if len(nodes) > 0 {
			d.Topology = &pluginapi.TopologyInfo{}
			for _, n := range nodes {
				d.Topology.Nodes = append(d.Topology.Nodes, &pluginapi.NUMANode{ID: n})
			}
		}
	}
	p.mu.Unlock()
	select {
	case p.update <- struct{}{}:
	default:
	}
}

// SetHealth changes one device's health and tells the agent.
func (p *Plugin) SetHealth(id, health string) {
	p.mu.Lock()
	for _, d := range p.devices {
		if d.ID == id {
			d.Health = health
		}
	}
	p.mu.Unlock()
	select {
	case p.update <- struct{}{}:
	default:
	}
}

// Serve listens on the plugin's socket (until Stop).
func (p *Plugin) Serve() error {
	path := filepath.Join(p.Dir, p.Socket)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	p.server = grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(p.server, p)
	go func() { _ = p.server.Serve(ln) }()
	return nil
}

// Stop closes the plugin's socket and streams.
func (p *Plugin) Stop() {
	if p.server != nil {
		p.server.Stop()
	}
	_ = os.Remove(filepath.Join(p.Dir, p.Socket))
}

// Register calls the agent's registration socket.
func (p *Plugin) Register(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(p.Dir, "kubelet.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: p.Socket, ResourceName: p.Resource, Options: p.options()})
	return err
}

// RegisterAgain registers whenever the agent's socket is made anew (the
// agent restarted), as real plugins do, until ctx ends.
func (p *Plugin) RegisterAgain(ctx context.Context, registered func(error)) {
	sock := filepath.Join(p.Dir, "kubelet.sock")
	var last time.Time
	for ctx.Err() == nil {
		if st, err := os.Stat(sock); err == nil && !st.ModTime().Equal(last) {
			err := p.Register(ctx)
			if err == nil {
				last = st.ModTime() // else try again
			}
			if registered != nil {
				registered(err)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (p *Plugin) options() *pluginapi.DevicePluginOptions {
	return &pluginapi.DevicePluginOptions{PreStartRequired: p.PreStartRequired, GetPreferredAllocationAvailable: p.PreferredAllocation}
}

func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return p.options(), nil
}

func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, s pluginapi.DevicePlugin_ListAndWatchServer) error {
	for {
		p.mu.Lock()
		list := make([]*pluginapi.Device, len(p.devices))
		for i, d := range p.devices {
			list[i] = &pluginapi.Device{ID: d.ID, Health: d.Health, Topology: d.Topology}
		}
		p.mu.Unlock()
		if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: list}); err != nil {
			return err
		}
		select {
		case <-s.Context().Done():
			return nil
		case <-p.update:
		}
	}
}

func (p *Plugin) Allocate(_ context.Context, r *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	out := &pluginapi.AllocateResponse{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range r.ContainerRequests {
		ids := slices.Clone(c.DevicesIds)
		slices.Sort(ids)
		p.Allocs = append(p.Allocs, ids)
		resp := &pluginapi.ContainerAllocateResponse{
			Envs:        map[string]string{"BOSUN_TEST_DEVICES": strings.Join(ids, ",")},
			Annotations: map[string]string{"example.com/devices": strings.Join(ids, ",")},
		}
		if p.HostMount != "" {
			resp.Mounts = []*pluginapi.Mount{{ContainerPath: "/dev-info", HostPath: p.HostMount, ReadOnly: true}}
		}
		out.ContainerResponses = append(out.ContainerResponses, resp)
	}
	return out, nil
}

// GetPreferredAllocation prefers the highest-numbered devices, so that a
// test sees the agent follow the preference.
func (p *Plugin) GetPreferredAllocation(_ context.Context, r *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	out := &pluginapi.PreferredAllocationResponse{}
	for _, c := range r.ContainerRequests {
		ids := slices.Clone(c.MustIncludeDeviceIDs)
		avail := slices.Clone(c.AvailableDeviceIDs)
		slices.Sort(avail)
		slices.Reverse(avail)
		for _, id := range avail {
			if len(ids) >= int(c.AllocationSize) {
				break
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		out.ContainerResponses = append(out.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return out, nil
}

func (p *Plugin) PreStartContainer(_ context.Context, r *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	p.mu.Lock()
	p.PreStart = append(p.PreStart, slices.Clone(r.DevicesIds))
	p.mu.Unlock()
	return &pluginapi.PreStartContainerResponse{}, nil
}

// ServeRegistry registers the plugin through the plugin watcher instead:
// a registration socket in registryDir (<root-dir>/plugins_registry) that
// answers GetInfo with the plugin's socket, and records the agent's verdict.
// The returned stop removes the registration socket (the agent then
// deregisters the plugin).
func (p *Plugin) ServeRegistry(registryDir string, status func(ok bool, msg string)) (stop func(), err error) {
	path := filepath.Join(registryDir, strings.ReplaceAll(p.Resource, "/", "_")+"-reg.sock")
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &registration{p: p, status: status})
	go func() { _ = srv.Serve(ln) }()
	return func() { srv.Stop(); _ = os.Remove(path) }, nil
}

type registration struct {
	p      *Plugin
	status func(bool, string)
	registerapi.UnimplementedRegistrationServer
}

func (r *registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: r.p.Resource,
		Endpoint: filepath.Join(r.p.Dir, r.p.Socket), SupportedVersions: []string{pluginapi.Version}}, nil
}

func (r *registration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if r.status != nil {
		r.status(s.PluginRegistered, s.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
