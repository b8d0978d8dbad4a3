// Package csi is the node side of the Container Storage Interface, as the
// upstream kubelet drives it: CSI drivers register through the plugin
// watcher (registerapi.CSIPlugin); the agent asks each for NodeGetInfo and
// records it in the node's CSINode object and nodeid annotation; a pod's CSI
// volumes (inline, or a PersistentVolume with spec.csi) are staged once per
// volume under <root-dir>/plugins/kubernetes.io/csi and published per pod
// under <root-dir>/pods/<uid>/volumes/kubernetes.io~csi, with upstream's
// vol_data.json beside each, so that either agent can tear down what the
// other set up.
//
// Usage: New(Config) → Handler() goes into the plugin watcher's handlers;
// Init(ctx) once the Node is registered; SetUp and TearDown from the volume
// manager.
package csi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/klog/v2"
)

// Timeout bounds each call to a driver, as upstream's csiTimeout.
const Timeout = 2 * time.Minute

// Config is what the CSI manager needs.
type Config struct {
	Client   kubernetes.Interface // CSINode, Node metadata, PVs, CSIDrivers, VolumeAttachments, tokens
	NodeName string               // the Node this agent registers
	RootDir  string               // --root-dir
}

// Manager keeps the registered drivers and sets their volumes up.
type Manager struct {
	cfg Config

	mu        sync.Mutex
	drivers   map[string]*driver              // by driver name
	settingUp map[corev1.UniqueVolumeName]int // persistent volumes being set up, by unique name

	nodeMu sync.Mutex // one CSINode/Node update at a time

	informers  informers.SharedInformerFactory // CSIDriver objects, started by Init
	csiDrivers storagelisters.CSIDriverLister
	started    atomic.Bool

	volMu sync.Mutex
	vols  map[string]*volumeLock // per driver^handle: stage, publish, unpublish, unstage in turn
}

// driver is one registered CSI driver.
type driver struct {
	name       string
	endpoint   string
	conn       *grpc.ClientConn
	node       csipb.NodeClient
	stage      bool // STAGE_UNSTAGE_VOLUME
	stats      bool // GET_VOLUME_STATS
	mountGroup bool // VOLUME_MOUNT_GROUP: the driver applies fsGroup itself
	expand     bool // EXPAND_VOLUME
}

// New checks the configuration and returns a manager with no drivers.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil || cfg.NodeName == "" || cfg.RootDir == "" {
		return nil, errors.New("csi: Client, NodeName and RootDir are required")
	}
	m := &Manager{cfg: cfg, drivers: map[string]*driver{}, settingUp: map[corev1.UniqueVolumeName]int{}, vols: map[string]*volumeLock{}}
	m.informers = informers.NewSharedInformerFactory(cfg.Client, 0)
	m.csiDrivers = m.informers.Storage().V1().CSIDrivers().Lister()
	return m, nil
}

// highestVersion picks the newest CSI version 1.x a plugin offers, as
// upstream's validateVersions does.
func highestVersion(name string, versions []string) error {
	if len(versions) == 0 {
		return fmt.Errorf("ValidatePlugin for CSI driver %q failed. Plugin returned an empty list for supported versions", name)
	}
	var errs []string
	for _, v := range versions {
		parsed, err := version.ParseGeneric(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%q: %v", v, err))
			continue
		}
		if parsed.Major() == 1 {
			return nil
		}
		errs = append(errs, fmt.Sprintf("%q is not 1.x", v))
	}
	return fmt.Errorf("ValidatePlugin for CSI driver %q failed. None of the versions specified %q are supported. err=%s", name, versions, strings.Join(errs, "; "))
}

// ValidatePlugin accepts a CSI driver that speaks CSI 1.x.
func (m *Manager) ValidatePlugin(name, _ string, versions []string) error {
	if name == "" {
		return errors.New("ValidatePlugin failed: the CSI driver has no name")
	}
	return highestVersion(name, versions)
}

// RegisterPlugin connects to a driver, asks for its node info and
// capabilities, and records the driver in the CSINode object.
func (m *Manager) RegisterPlugin(ctx context.Context, name, endpoint string, versions []string) error {
	logger := klog.FromContext(ctx)
	logger.Info("Register new CSI driver", "driver", name, "endpoint", endpoint)
	if err := highestVersion(name, versions); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return fmt.Errorf("failed to dial CSI driver %q at %s: %w", name, endpoint, err)
	}
	d := &driver{name: name, endpoint: endpoint, conn: conn, node: csipb.NewNodeClient(conn)}
	callCtx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	info, err := d.node.NodeGetInfo(callCtx, &csipb.NodeGetInfoRequest{})
	if err == nil {
		err = d.capabilities(callCtx)
	}
	if err == nil {
		err = m.installDriver(ctx, name, info.GetNodeId(), info.GetMaxVolumesPerNode(), info.GetAccessibleTopology().GetSegments())
	}
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("failed to register CSI driver %q: %w", name, err)
	}
	m.mu.Lock()
	old := m.drivers[name]
	m.drivers[name] = d
	m.mu.Unlock()
	if old != nil && old.conn != nil {
		_ = old.conn.Close()
	}
	return nil
}

func (d *driver) capabilities(ctx context.Context) error {
	caps, err := d.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	for _, c := range caps.GetCapabilities() {
		switch c.GetRpc().GetType() {
		case csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME:
			d.stage = true
		case csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS:
			d.stats = true
		case csipb.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP:
			d.mountGroup = true
		case csipb.NodeServiceCapability_RPC_EXPAND_VOLUME:
			d.expand = true
		}
	}
	return nil
}

// DeRegisterPlugin forgets a driver whose registration socket went away and
// takes it out of the CSINode object and the nodeid annotation.
func (m *Manager) DeRegisterPlugin(name, _ string) {
	m.mu.Lock()
	d := m.drivers[name]
	delete(m.drivers, name)
	m.mu.Unlock()
	if d != nil && d.conn != nil {
		_ = d.conn.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := m.uninstallDriver(ctx, name); err != nil {
		klog.FromContext(ctx).Error(err, "Failed to remove the CSI driver from the node's CSI records", "driver", name)
	}
}

// driver returns a registered driver, or upstream's error for one that is not.
func (m *Manager) driver(name string) (*driver, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.drivers[name]
	if d == nil {
		return nil, fmt.Errorf("driver name %s not found in the list of registered CSI drivers", name)
	}
	return d, nil
}

// volumeLock serialises the operations on one volume of one driver; users
// counts those holding or waiting for it.
type volumeLock struct {
	mu    sync.Mutex
	users int
}

// lockVolume takes the lock of one volume of one driver and returns its
// release. A lock no one holds or waits for is forgotten, so that the map
// holds the volumes being worked on, not every volume the node ever had.
func (m *Manager) lockVolume(driver, handle string) (unlock func()) {
	key := driver + "^" + handle
	m.volMu.Lock()
	l := m.vols[key]
	if l == nil {
		l = &volumeLock{}
		m.vols[key] = l
	}
	l.users++
	m.volMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.volMu.Lock()
		if l.users--; l.users == 0 {
			delete(m.vols, key)
		}
		m.volMu.Unlock()
	}
}
