package nodestatus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/component-helpers/apimachinery/lease"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Config wires a Controller.
type Config struct {
	Client          kubernetes.Interface               // the node's own client
	Params          Params                             // fixed facts
	Observe         func(ctx context.Context) Observed // the latest runtime/pressure observation
	UpdateFrequency time.Duration                      // nodeStatusUpdateFrequency: how often status is computed
	ReportFrequency time.Duration                      // nodeStatusReportFrequency: patch at least this often
	LeaseDuration   int32                              // nodeLeaseDurationSeconds
	Clock           clock.WithTicker                   // injectable for tests
	// Recorder records the node's status events (nil: none).
	Recorder record.EventRecorder
	// PodCIDR hands the runtime the Node's pod CIDRs (comma-separated) when
	// they change, as upstream's UpdateRuntimeConfig (nil: not handed).
	PodCIDR func(ctx context.Context, cidrs string) error
	// Started is told once, when the node's first Ready status went
	// through: when registration began, when it ended, and that moment
	// (nil: not told).
	Started func(registrationStart, registered, ready time.Time)
}

// Controller registers the Node, keeps its status and renews its Lease.
type Controller struct {
	cfg        Config
	nodes      corelisters.NodeLister // this node, from a watch
	synced     cache.InformerSynced
	informers  informers.SharedInformerFactory
	lastReport time.Time // when status was last patched
	// stale is set when Lease renewals fail repeatedly (the apiserver is
	// unreachable): the informer's copy of the Node may then be old (the
	// controller-manager may have marked the node Unknown meanwhile), so the
	// next updates read the Node from the apiserver until one succeeds.
	stale      atomic.Bool
	registered chan struct{}
	wake       chan struct{}
	podCIDR    string // the pod CIDRs the runtime was last given
	ready      bool   // the last status computed says Ready
}

// Wake asks for a status update now (the node's resources changed).
func (c *Controller) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// New checks cfg and builds the controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	switch {
	case cfg.Client == nil || cfg.Observe == nil || cfg.Params.Machine == nil:
		return nil, fmt.Errorf("nodestatus: Client, Observe and Params.Machine are required")
	case cfg.Params.NodeName == "":
		return nil, fmt.Errorf("nodestatus: the node name is empty")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	f := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.Params.NodeName).String()
	}))
	inf := f.Core().V1().Nodes()
	return &Controller{cfg: cfg, nodes: inf.Lister(), synced: inf.Informer().HasSynced, informers: f, registered: make(chan struct{}), wake: make(chan struct{}, 1)}, nil
}

// Registered is closed once the Node exists in the apiserver.
func (c *Controller) Registered() <-chan struct{} { return c.registered }

// NodeSynced says whether the node watch has delivered its first list.
func (c *Controller) NodeSynced() bool { return c.synced() }

// NodeLister lists this node as the apiserver last reported it.
func (c *Controller) NodeLister() corelisters.NodeLister { return c.nodes }

// Run registers the node (retrying until it succeeds), then keeps its status
// and Lease current until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	c.informers.Start(ctx.Done())
	registrationStart := c.cfg.Clock.Now()
	created := c.register(ctx)
	registered := c.cfg.Clock.Now()
	close(c.registered)
	// The start-up is told for a Node this agent created (a new node), as
	// upstream's tracker records it: not after a restart or a swap.
	startReported := !created
	onLeaseFailures := func() {
		if !c.stale.Swap(true) {
			logger.Info("Lease renewals keep failing; the node's status will be read from the apiserver until an update succeeds")
		}
	}
	leaseCtl := lease.NewController(c.cfg.Clock, c.cfg.Client, c.cfg.Params.NodeName, c.cfg.LeaseDuration, onLeaseFailures,
		time.Duration(float64(c.cfg.LeaseDuration)*0.25*float64(time.Second)), c.cfg.Params.NodeName,
		corev1.NamespaceNodeLease, c.setLeaseOwner(ctx))
	go leaseCtl.Run(ctx)
	// No wait for the Node informer: after an outage its reflector may back
	// off for half a minute, and until it lists, updates read the Node from
	// the apiserver.
	ticker := c.cfg.Clock.NewTicker(c.cfg.UpdateFrequency)
	defer ticker.Stop()
	for {
		if err := c.updateStatus(ctx); err != nil {
			logger.Error(err, "Error updating node status, will retry", "node", c.cfg.Params.NodeName)
		} else if c.ready && !startReported && c.cfg.Started != nil {
			startReported = true
			c.cfg.Started(registrationStart, registered, c.cfg.Clock.Now())
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		case <-c.wake:
		}
	}
}

// register creates the Node, or takes over an existing one of that name;
// it says whether it created it.
func (c *Controller) register(ctx context.Context) bool {
	logger := klog.FromContext(ctx)
	backoff := 100 * time.Millisecond
	for {
		created, err := c.tryRegister(ctx)
		if err == nil {
			logger.Info("Successfully registered node", "node", c.cfg.Params.NodeName)
			return created
		}
		logger.Error(err, "Unable to register node with API server", "node", c.cfg.Params.NodeName)
		select {
		case <-ctx.Done():
			return false
		case <-c.cfg.Clock.After(backoff):
		}
		backoff = min(backoff*2, 7*time.Second)
	}
}

func (c *Controller) tryRegister(ctx context.Context) (bool, error) {
	node := NewNode(c.cfg.Params)
	events := SetStatus(node, c.cfg.Params, c.cfg.Observe(ctx), metav1.NewTime(c.cfg.Clock.Now()))
	_, err := c.cfg.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err == nil {
		c.record(events)
		return true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return false, err
	}
	// The node exists (a restart, or a re-installed machine): take it over
	// with our labels; status follows in the first update.
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": node.Labels, "annotations": node.Annotations}})
	_, err = c.cfg.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	return false, err
}

// updatePodCIDR gives the runtime the Node's pod CIDRs once they are set or
// changed; a failure is tried again at the next update.
func (c *Controller) updatePodCIDR(ctx context.Context, node *corev1.Node) {
	if c.cfg.PodCIDR == nil || len(node.Spec.PodCIDRs) == 0 {
		return
	}
	cidrs := strings.Join(node.Spec.PodCIDRs, ",")
	if cidrs == c.podCIDR {
		return
	}
	if err := c.cfg.PodCIDR(ctx, cidrs); err != nil {
		klog.FromContext(ctx).Error(err, "Error updating pod CIDR")
		return
	}
	klog.FromContext(ctx).Info("Updating Pod CIDR", "originalPodCIDR", c.podCIDR, "newPodCIDR", cidrs)
	c.podCIDR = cidrs
}

// updateStatus computes the status and patches it when it changed or the
// report interval has passed.
func (c *Controller) updateStatus(ctx context.Context) (err error) {
	stale := c.stale.Load() || !c.synced()
	var current *corev1.Node
	if !stale {
		current, err = c.nodes.Get(c.cfg.Params.NodeName)
	}
	if stale || err != nil {
		current, err = c.cfg.Client.CoreV1().Nodes().Get(ctx, c.cfg.Params.NodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("failed to get node: %w", err)
		}
	}
	// Once an update built on a fresh copy went through (or had nothing to
	// change), the informer's copy is trusted again.
	defer func() {
		if err == nil {
			c.stale.Store(false)
		}
	}()
	c.updatePodCIDR(ctx, current)
	now := c.cfg.Clock.Now()
	updated := current.DeepCopy()
	events := SetStatus(updated, c.cfg.Params, c.cfg.Observe(ctx), metav1.NewTime(now))
	c.ready = false
	for _, cond := range updated.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			c.ready = cond.Status == corev1.ConditionTrue
		}
	}
	if !statusChanged(&current.Status, &updated.Status) && now.Sub(c.lastReport) < c.cfg.ReportFrequency {
		return nil
	}
	oldJSON, err := json.Marshal(current)
	if err != nil {
		return err
	}
	newJSON, err := json.Marshal(updated)
	if err != nil {
		return err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Node{})
	if err != nil {
		return err
	}
	if _, err := c.cfg.Client.CoreV1().Nodes().PatchStatus(ctx, current.Name, patch); err != nil {
		return err
	}
	c.lastReport = now
	c.record(events)
	return nil
}

// statusChanged compares two statuses, ignoring condition heartbeats.
func statusChanged(a, b *corev1.NodeStatus) bool {
	strip := func(s *corev1.NodeStatus) *corev1.NodeStatus {
		c := s.DeepCopy()
		for i := range c.Conditions {
			c.Conditions[i].LastHeartbeatTime = metav1.Time{}
		}
		return c
	}
	return !apiequality.Semantic.DeepEqual(strip(a), strip(b))
}

// setLeaseOwner makes the Node own its Lease, so deleting the Node deletes it.
func (c *Controller) setLeaseOwner(ctx context.Context) func(*coordinationv1.Lease) error {
	return func(l *coordinationv1.Lease) error {
		if len(l.OwnerReferences) > 0 {
			return nil
		}
		node, err := c.nodes.Get(c.cfg.Params.NodeName)
		if err != nil {
			if node, err = c.cfg.Client.CoreV1().Nodes().Get(ctx, c.cfg.Params.NodeName, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
		return nil
	}
}

// NodeRef is the node as events name it (upstream's: its name as UID).
func NodeRef(name string) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", Name: name, UID: types.UID(name)}
}

// record records the node status events of a status written.
func (c *Controller) record(events []string) {
	if c.cfg.Recorder == nil {
		return
	}
	for _, e := range events {
		c.cfg.Recorder.Eventf(NodeRef(c.cfg.Params.NodeName), corev1.EventTypeNormal, e, "Node %s status is now: %s", c.cfg.Params.NodeName, e)
	}
}
