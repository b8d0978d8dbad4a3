// Package dra is the kubelet side of dynamic resource allocation: DRA
// drivers register through the plugin watcher (registerapi.DRAPlugin, the
// v1.DRAPlugin or v1beta1.DRAPlugin gRPC service); before a pod's containers start, the
// ResourceClaims reserved for it are prepared by their drivers
// (NodePrepareResources), and the CDI devices the drivers name go into the
// containers that ask for the claims; once the pod is gone its claims are
// unprepared (NodeUnprepareResources) unless another pod still uses them.
// What is prepared is kept in upstream's checkpoint, <root-dir>/dra_manager_state,
// so either agent can unprepare what the other prepared. The drivers' device
// health goes into the containers' statuses (health.go).
package dra

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1alpha1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	drapbv1beta1 "k8s.io/kubelet/pkg/apis/dra/v1beta1"
)

// Timeout bounds each call to a driver, as upstream's default.
const Timeout = 45 * time.Second

// wipeAfter is how long a driver may be gone before its ResourceSlices for
// this node are deleted, as upstream waits.
const wipeAfter = 30 * time.Second

// Config is what the DRA manager needs.
type Config struct {
	Client   kubernetes.Interface // ResourceClaims, ResourceSlices
	NodeName string
	RootDir  string // --root-dir: the checkpoint's folder
	// ExtendedResources prepares the claim the scheduler made for a pod's
	// extended resources (the DRAExtendedResource gate; extended.go).
	ExtendedResources bool
}

// Manager keeps the registered drivers and the prepared claims.
type Manager struct {
	cfg Config

	mu sync.Mutex
	// drivers are the registered plugins by driver name, oldest first: a
	// rolling update registers the new instance (another socket) before the
	// old one goes, and the newest is the one called, as upstream.
	drivers map[string][]*driver
	gone    map[string]*time.Timer

	claimsMu sync.Mutex             // held across a pod's prepare or unprepare
	claims   map[string]*claimState // by namespace/name
	prepared map[string]bool        // claim UIDs prepared since this agent started

	healthMu sync.Mutex
	health   map[string]driverHealth // by driver name
	wake     func([]types.UID)       // syncs pods whose devices changed health
}

type driver struct {
	name, endpoint string
	conn           *grpc.ClientConn
	node           drapb.DRAPluginClient
	stopHealth     context.CancelFunc
}

// New loads the checkpoint and returns a manager with no drivers.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil || cfg.NodeName == "" || cfg.RootDir == "" {
		return nil, errors.New("dra: Client, NodeName and RootDir are required")
	}
	m := &Manager{cfg: cfg, drivers: map[string][]*driver{}, gone: map[string]*time.Timer{}, prepared: map[string]bool{}}
	claims, err := loadCheckpoint(m.checkpointPath())
	if err != nil {
		return nil, err
	}
	m.claims = claims
	m.loadHealth()
	return m, nil
}

// services are the DRAPlugin gRPC services Bosun speaks, as upstream.
var services = []string{drapb.DRAPluginService, drapbv1beta1.DRAPluginService}

// chooseService is the first service in the plugin's list that Bosun
// speaks, as upstream chooses.
func chooseService(name, endpoint string, offered []string) (string, error) {
	if len(offered) == 0 {
		return "", fmt.Errorf("invalid supported gRPC versions of DRA driver plugin %s at endpoint %s: empty list of supported gRPC services (aka supported versions)", name, endpoint)
	}
	for _, s := range offered {
		if slices.Contains(services, s) {
			return s, nil
		}
	}
	return "", fmt.Errorf("invalid supported gRPC versions of DRA driver plugin %s at endpoint %s: none of services supported by the plugin (%q) are supported by the kubelet (%q)",
		name, endpoint, offered, services)
}

// ValidatePlugin accepts a driver that offers the v1 or v1beta1 DRAPlugin service.
func (m *Manager) ValidatePlugin(name, endpoint string, offered []string) error {
	_, err := chooseService(name, endpoint, offered)
	return err
}

// RegisterPlugin connects to a driver's DRA service.
func (m *Manager) RegisterPlugin(ctx context.Context, name, endpoint string, offered []string) error {
	service, err := chooseService(name, endpoint, offered)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return fmt.Errorf("create gRPC connection to DRA driver %s plugin at endpoint %s: %w", name, endpoint, err)
	}
	conn.Connect()
	m.mu.Lock()
	var old *driver
	list := m.drivers[name]
	for i, d := range list {
		if d.endpoint == endpoint { // the same plugin registering again
			old = d
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	client := drapb.NewDRAPluginClient(conn)
	if service == drapbv1beta1.DRAPluginService { // spoken through upstream's conversions
		client = drapbv1beta1.V1Beta1ClientWrapper{DRAPluginClient: drapbv1beta1.NewDRAPluginClient(conn)}
	}
	healthCtx, stopHealth := context.WithCancel(context.WithoutCancel(ctx))
	drv := &driver{name: name, endpoint: endpoint, conn: conn, node: client, stopHealth: stopHealth}
	m.drivers[name] = append(list, drv)
	go m.watchHealth(healthCtx, drv, drahealth.NewDRAResourceHealthClient(conn))
	if t := m.gone[name]; t != nil {
		t.Stop()
		delete(m.gone, name)
	}
	m.mu.Unlock()
	if old != nil {
		old.stopHealth()
		_ = old.conn.Close()
	}
	klog.FromContext(ctx).Info("Registered DRA driver", "driver", name, "endpoint", endpoint, "service", service)
	return nil
}

// DeRegisterPlugin forgets the plugin whose socket went away. The driver's
// other instances (a rolling update's) stay; when none is left and none
// comes back within 30 s, its ResourceSlices for this node are deleted.
func (m *Manager) DeRegisterPlugin(name, endpoint string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := m.drivers[name]
	for i, d := range list {
		if d.endpoint == endpoint {
			d.stopHealth()
			_ = d.conn.Close()
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) > 0 {
		m.drivers[name] = list
		return
	}
	delete(m.drivers, name)
	if t := m.gone[name]; t != nil {
		t.Stop()
	}
	m.gone[name] = time.AfterFunc(wipeAfter, func() { m.wipeSlices(name) })
}

func (m *Manager) wipeSlices(name string) {
	m.mu.Lock()
	back := len(m.drivers[name]) > 0
	delete(m.gone, name)
	m.mu.Unlock()
	if back {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	selector := "spec.nodeName=" + m.cfg.NodeName + ",spec.driver=" + name
	if err := m.cfg.Client.ResourceV1().ResourceSlices().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{FieldSelector: selector}); err != nil {
		klog.FromContext(ctx).Error(err, "Failed to delete the ResourceSlices of a DRA driver that went away", "driver", name)
	}
}

func (m *Manager) driver(name string) (*driver, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if list := m.drivers[name]; len(list) > 0 {
		return list[len(list)-1], nil // the newest instance
	}
	return nil, fmt.Errorf("DRA driver %s is not registered", name)
}
