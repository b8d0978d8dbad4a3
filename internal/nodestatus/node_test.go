package nodestatus

import (
	"context"
	"net"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"
)

func testParams() Params {
	return Params{
		NodeName: "node-1", Hostname: "node-1", NodeIPs: []net.IP{net.ParseIP("10.0.0.5")},
		Labels: map[string]string{"role": "worker"}, MaxPods: 220, Port: 10250,
		Taints:         []corev1.Taint{{Key: "dedicated", Value: "x", Effect: corev1.TaintEffectNoSchedule}},
		SystemReserved: map[string]string{"cpu": "500m"}, KubeReserved: map[string]string{"memory": "1Gi"},
		EvictionHard: map[string]string{"memory.available": "100Mi", "nodefs.available": "10%"},
		AttachDetach: true,
		Machine: &Machine{Cores: 4, MemoryBytes: 8 << 30, RootFSBytes: 100 << 30, OperatingSystem: "linux", Architecture: "amd64",
			MachineID: "mid", SystemUUID: "uuid", BootID: "boot", KernelVersion: "6.1", OSImage: "Debian",
			HugePages: map[string]resource.Quantity{"hugepages-2Mi": resource.MustParse("0")}},
	}
}

func TestNewNodeLabelsAndTaints(t *testing.T) {
	n := NewNode(testParams())
	for k, v := range map[string]string{"kubernetes.io/hostname": "node-1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "role": "worker"} {
		if n.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, n.Labels[k], v)
		}
	}
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "dedicated" {
		t.Errorf("taints %v", n.Spec.Taints)
	}
	if n.Annotations["volumes.kubernetes.io/controller-managed-attach-detach"] != "true" {
		t.Errorf("annotations %v", n.Annotations)
	}
}

func TestCapacityAndAllocatable(t *testing.T) {
	p := testParams()
	c := Capacity(p)
	a := Allocatable(p, c)
	check := func(list corev1.ResourceList, name corev1.ResourceName, want string) {
		t.Helper()
		q := list[name]
		if q.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("%s = %s, want %s", name, q.String(), want)
		}
	}
	check(c, corev1.ResourceCPU, "4")
	check(c, corev1.ResourcePods, "220")
	check(c, corev1.ResourceMemory, "8Gi")
	check(a, corev1.ResourceCPU, "3500m")
	check(a, corev1.ResourceMemory, "7068Mi") // 8Gi - 1Gi - 100Mi
	pods := PodsLimit(p)
	check(pods, corev1.ResourceMemory, "7Gi") // 8Gi - 1Gi: the eviction threshold stays with the pods
	check(pods, corev1.ResourceCPU, "3500m")
	check(a, corev1.ResourceEphemeralStorage, "92160Mi")
	check(a, "hugepages-2Mi", "0")
	// Reservations above capacity floor at zero.
	p.KubeReserved = map[string]string{"memory": "64Gi"}
	a = Allocatable(p, c)
	check(a, corev1.ResourceMemory, "0")
	// podsPerCore caps pods at podsPerCore × cores when that is fewer.
	p.PodsPerCore = 10
	check(Capacity(p), corev1.ResourcePods, "40")
	p.PodsPerCore = 100
	check(Capacity(p), corev1.ResourcePods, "220")
}

func TestNewNodeProviderID(t *testing.T) {
	p := testParams()
	p.ProviderID = "aws:///eu-west-1a/i-0abc"
	if n := NewNode(p); n.Spec.ProviderID != p.ProviderID {
		t.Errorf("spec.providerID %q, want %q", n.Spec.ProviderID, p.ProviderID)
	}
}

func TestSetStatusConditions(t *testing.T) {
	p := testParams()
	p.DeclaredFeatures = []string{"ExtendWebSocketsToKubelet"}
	node := NewNode(p)
	t0 := metav1.NewTime(time.Unix(1000, 0))
	SetStatus(node, p, Observed{RuntimeVersion: "containerd://1.6.20", RuntimeReady: false, NotReadyReason: "container runtime network not ready"}, t0)
	ready := findCondition(node, corev1.NodeReady)
	if ready.Status != corev1.ConditionFalse || ready.Reason != "KubeletNotReady" || ready.Message != "container runtime network not ready" {
		t.Fatalf("ready %+v", ready)
	}
	if node.Status.NodeInfo.KubeletVersion != "v1.36.3" || node.Status.NodeInfo.ContainerRuntimeVersion != "containerd://1.6.20" {
		t.Errorf("nodeInfo %+v", node.Status.NodeInfo)
	}
	if len(node.Status.Addresses) != 2 || node.Status.Addresses[0].Type != corev1.NodeInternalIP || node.Status.Addresses[1].Type != corev1.NodeHostName {
		t.Errorf("addresses %v", node.Status.Addresses)
	}
	if f := node.Status.DeclaredFeatures; len(f) != 1 || f[0] != "ExtendWebSocketsToKubelet" {
		t.Errorf("declaredFeatures %v", f)
	}
	if node.Status.DaemonEndpoints.KubeletEndpoint.Port != 10250 {
		t.Errorf("port %d", node.Status.DaemonEndpoints.KubeletEndpoint.Port)
	}
	t1 := metav1.NewTime(time.Unix(2000, 0))
	SetStatus(node, p, Observed{RuntimeReady: true}, t1)
	ready = findCondition(node, corev1.NodeReady)
	if ready.Status != corev1.ConditionTrue || ready.Reason != "KubeletReady" || !ready.LastTransitionTime.Equal(&t1) {
		t.Errorf("after ready: %+v", ready)
	}
	mem := findCondition(node, corev1.NodeMemoryPressure)
	if !mem.LastTransitionTime.Equal(&t0) || !mem.LastHeartbeatTime.Equal(&t1) || mem.Reason != "KubeletHasSufficientMemory" {
		t.Errorf("unchanged condition lost its transition time or missed its heartbeat: %+v", mem)
	}
}

func findCondition(n *corev1.Node, typ corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func TestStatusChangedIgnoresHeartbeats(t *testing.T) {
	p := testParams()
	a := NewNode(p)
	SetStatus(a, p, Observed{RuntimeReady: true}, metav1.NewTime(time.Unix(1, 0)))
	b := a.DeepCopy()
	SetStatus(b, p, Observed{RuntimeReady: true}, metav1.NewTime(time.Unix(99, 0)))
	if statusChanged(&a.Status, &b.Status) {
		t.Error("a heartbeat alone counted as a change")
	}
	SetStatus(b, p, Observed{RuntimeReady: false, NotReadyReason: "x"}, metav1.NewTime(time.Unix(100, 0)))
	if !statusChanged(&a.Status, &b.Status) {
		t.Error("Ready flipping was not a change")
	}
}

func TestControllerRegistersAndTakesOver(t *testing.T) {
	started := make(chan [3]time.Time, 2)
	existing := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"old": "label"}}}
	client := fake.NewClientset(existing)
	clk := testingclock.NewFakeClock(time.Now())
	ctl, err := New(Config{Client: client, Params: testParams(), Clock: clk, UpdateFrequency: 10 * time.Second,
		ReportFrequency: time.Minute, LeaseDuration: 40,
		Observe: func(context.Context) Observed { return Observed{RuntimeReady: true} },
		Started: func(a, b, c time.Time) { started <- [3]time.Time{a, b, c} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ctl.Run(ctx)
	defer func() {
		// A Node taken over (a restart, a swap) is no node start-up.
		select {
		case ts := <-started:
			t.Errorf("start-up told for a Node taken over: %v", ts)
		case <-time.After(300 * time.Millisecond):
		}
	}()
	select {
	case <-ctl.Registered():
	case <-time.After(5 * time.Second):
		t.Fatal("not registered")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, _ := client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		if n != nil && n.Labels["kubernetes.io/hostname"] == "node-1" && n.Labels["old"] == "label" && findCondition(n, corev1.NodeReady).Status == corev1.ConditionTrue {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	n, _ := client.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	t.Fatalf("node not taken over with labels and a Ready status: %+v", n)
}

// A Node the agent creates: the start-up times are told once, in order,
// after its first Ready status.
func TestControllerTellsTheStartOfANewNode(t *testing.T) {
	started := make(chan [3]time.Time, 2)
	ctl, err := New(Config{Client: fake.NewClientset(), Params: testParams(), Clock: testingclock.NewFakeClock(time.Now()),
		UpdateFrequency: 10 * time.Second, ReportFrequency: time.Minute, LeaseDuration: 40,
		Observe: func(context.Context) Observed { return Observed{RuntimeReady: true} },
		Started: func(a, b, c time.Time) { started <- [3]time.Time{a, b, c} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ctl.Run(ctx)
	select {
	case ts := <-started:
		if ts[1].Before(ts[0]) || ts[2].Before(ts[1]) {
			t.Errorf("start-up times out of order: %v", ts)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the start-up of a new node was never told")
	}
	select {
	case ts := <-started:
		t.Errorf("start-up told twice: %v", ts)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestNewRequiresFields(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
}

func TestExtendedResourcesOfOthersAndDevicePlugins(t *testing.T) {
	p := testParams()
	node := NewNode(p)
	now := metav1.NewTime(time.Unix(1, 0))
	SetStatus(node, p, Observed{RuntimeReady: true}, now)
	// A test or an operator advertises an extended resource by patching the status.
	node.Status.Capacity["example.com/fake"] = resource.MustParse("5")
	dev := corev1.ResourceName("example.com/dev")
	SetStatus(node, p, Observed{RuntimeReady: true,
		DeviceCapacity:    corev1.ResourceList{dev: resource.MustParse("3")},
		DeviceAllocatable: corev1.ResourceList{dev: resource.MustParse("2")}}, now)
	for name, want := range map[corev1.ResourceName][2]int64{"example.com/fake": {5, 5}, dev: {3, 2}} {
		c, a := node.Status.Capacity[name], node.Status.Allocatable[name]
		if c.Value() != want[0] || a.Value() != want[1] {
			t.Errorf("%s: capacity %s allocatable %s, want %d and %d", name, c.String(), a.String(), want[0], want[1])
		}
	}
	if cpu := node.Status.Capacity[corev1.ResourceCPU]; cpu.IsZero() {
		t.Error("cpu capacity lost")
	}
	// The plugin is gone for good: zero, and it stays zero.
	SetStatus(node, p, Observed{RuntimeReady: true, RemovedDevices: []string{string(dev)}}, now)
	SetStatus(node, p, Observed{RuntimeReady: true}, now)
	if c, a := node.Status.Capacity[dev], node.Status.Allocatable[dev]; !c.IsZero() || !a.IsZero() {
		t.Errorf("removed resource: capacity %s allocatable %s, want 0", c.String(), a.String())
	}
}

// The status events are upstream's: each pressure condition's when it is
// made and when it turns; Ready's only when it turns.
func TestSetStatusEvents(t *testing.T) {
	p := testParams()
	node := NewNode(p)
	now := metav1.NewTime(time.Unix(1000, 0))
	got := SetStatus(node, p, Observed{RuntimeReady: false, NotReadyReason: "starting"}, now)
	if want := []string{"NodeHasSufficientMemory", "NodeHasNoDiskPressure", "NodeHasSufficientPID"}; !reflect.DeepEqual(got, want) {
		t.Errorf("a new node's events %v, want %v", got, want)
	}
	if got := SetStatus(node, p, Observed{RuntimeReady: false, NotReadyReason: "starting"}, now); len(got) != 0 {
		t.Errorf("nothing changed, events %v", got)
	}
	if got := SetStatus(node, p, Observed{RuntimeReady: true}, now); !reflect.DeepEqual(got, []string{"NodeReady"}) {
		t.Errorf("turned Ready: %v", got)
	}
	if got := SetStatus(node, p, Observed{RuntimeReady: true, MemoryPressure: true, PIDPressure: true}, now); !reflect.DeepEqual(got, []string{"NodeHasInsufficientMemory", "NodeHasInsufficientPID"}) {
		t.Errorf("under pressure: %v", got)
	}
	if got := SetStatus(node, p, Observed{RuntimeReady: false, NotReadyReason: "x"}, now); !reflect.DeepEqual(got, []string{"NodeHasSufficientMemory", "NodeHasSufficientPID", "NodeNotReady"}) {
		t.Errorf("recovered and not ready: %v", got)
	}
}

// The Node's pod CIDRs reach the runtime once, when they are set or change;
// a failed hand-over is tried again.
func TestUpdatePodCIDR(t *testing.T) {
	var given []string
	fail := true
	c := &Controller{cfg: Config{PodCIDR: func(_ context.Context, cidrs string) error {
		given = append(given, cidrs)
		if fail {
			fail = false
			return context.DeadlineExceeded
		}
		return nil
	}}}
	node := &corev1.Node{}
	ctx := context.Background()
	c.updatePodCIDR(ctx, node) // none allocated yet
	node.Spec.PodCIDRs = []string{"10.244.1.0/24", "fd00:1::/64"}
	c.updatePodCIDR(ctx, node) // fails
	c.updatePodCIDR(ctx, node) // tried again
	c.updatePodCIDR(ctx, node) // unchanged: not handed again
	node.Spec.PodCIDRs = []string{"10.244.2.0/24"}
	c.updatePodCIDR(ctx, node)
	want := []string{"10.244.1.0/24,fd00:1::/64", "10.244.1.0/24,fd00:1::/64", "10.244.2.0/24"}
	if !reflect.DeepEqual(given, want) {
		t.Errorf("runtime given %v, want %v", given, want)
	}
}
