package cpumanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/cpuset"

	"github.com/bosun-dev/bosun/internal/topology"
)

// fakeSysfs is two sockets, each one NUMA node with two cores of two
// threads: socket 0 has cores {0,4} and {1,5}, socket 1 {2,6} and {3,7}.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write := func(path, content string) {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("devices/system/cpu/online", "0-7")
	for c := 0; c < 8; c++ {
		socket := (c % 4) / 2
		first := c % 4
		write(fmt.Sprintf("devices/system/cpu/cpu%d/topology/physical_package_id", c), fmt.Sprint(socket))
		write(fmt.Sprintf("devices/system/cpu/cpu%d/topology/thread_siblings_list", c), fmt.Sprintf("%d,%d", first, first+4))
	}
	write("devices/system/node/node0/cpulist", "0-1,4-5")
	write("devices/system/node/node1/cpulist", "2-3,6-7")
	return root
}

func TestDiscoverReadsCoresSocketsAndNUMANodes(t *testing.T) {
	topo, err := Discover(fakeSysfs(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := topo.CPUs().String(); got != "0-7" {
		t.Fatalf("CPUs %s", got)
	}
	if c := topo[6]; c != (CPU{Core: 2, Socket: 1, NUMA: 1}) {
		t.Errorf("cpu 6: %+v", c)
	}
	if c := topo[4]; c != (CPU{Core: 0, Socket: 0, NUMA: 0}) {
		t.Errorf("cpu 4: %+v", c)
	}
	if _, err := Discover(t.TempDir()); err == nil {
		t.Error("an empty sysfs gave a topology")
	}
}

// take as upstream's packed allocation: whole NUMA nodes, whole cores,
// then the CPUs of the fullest-used cores first.
func TestTakePacksAsUpstream(t *testing.T) {
	topo, err := Discover(fakeSysfs(t))
	if err != nil {
		t.Fatal(err)
	}
	all := topo.CPUs()
	for _, tc := range []struct {
		available cpuset.CPUSet
		n         int
		want      string
	}{
		{all, 1, "0"},
		{all, 2, "0,4"},
		{all, 4, "0-1,4-5"},
		{all, 6, "0-2,4-6"},
		{all.Difference(cpuset.New(0)), 1, "4"},
		{all.Difference(cpuset.New(0)), 2, "1,5"},
		{all.Difference(cpuset.New(0)), 4, "2-3,6-7"},
		{all.Difference(cpuset.New(0)), 5, "2-4,6-7"},
	} {
		got, err := topo.take(tc.available, tc.n)
		if err != nil {
			t.Errorf("take %d of %s: %v", tc.n, tc.available, err)
			continue
		}
		if got.String() != tc.want {
			t.Errorf("take %d of %s: %s, want %s", tc.n, tc.available, got, tc.want)
		}
	}
	if _, err := topo.take(cpuset.New(1, 2), 3); err == nil || err.Error() != "not enough cpus available to satisfy request: requested=3, available=2" {
		t.Errorf("too many: %v", err)
	}
}

func guaranteed(uid, name string, cpus ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Name: name, Namespace: "ns"}}
	for i, c := range cpus {
		r := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(c), corev1.ResourceMemory: resource.MustParse("10Mi")}
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i),
			Resources: corev1.ResourceRequirements{Requests: r, Limits: r}})
	}
	return pod
}

func newStatic(t *testing.T, root string) *Manager {
	t.Helper()
	topo, err := Discover(fakeSysfs(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Policy: PolicyStatic, RootDir: root, Topology: topo, ReservedCPU: resource.MustParse("500m")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(klog.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

func all(types.UID) bool { return true }

func TestStaticPolicyGivesGuaranteedContainersTheirOwnCPUs(t *testing.T) {
	root := t.TempDir()
	m := newStatic(t, root)
	if got := m.reserved.String(); got != "0" {
		t.Fatalf("500m reserved: CPUs %s, want 0 (rounded up, taken as an allocation would be)", got)
	}
	pod := guaranteed("p1", "pinned", "2", "500m")
	if err := allocate(m, pod, all); err != nil {
		t.Fatal(err)
	}
	if set, own := m.ForContainer("p1", "c0"); set != "1,5" || !own {
		t.Errorf("whole-CPU container: %q own=%v, want 1,5 of its own", set, own)
	}
	if set, own := m.ForContainer("p1", "c1"); set != "0,2-4,6-7" || own {
		t.Errorf("fractional container: %q own=%v, want the shared pool", set, own)
	}
	burstable := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "p2"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "b",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}}}}}}
	if err := allocate(m, burstable, all); err != nil {
		t.Fatal(err)
	}
	if set, own := m.ForContainer("p2", "b"); own || set != "0,2-4,6-7" {
		t.Errorf("burstable container: %q own=%v", set, own)
	}
	if got := m.Exclusive("p1", "c0"); fmt.Sprint(got) != "[1 5]" {
		t.Errorf("pod resources CPU IDs %v", got)
	}
	if got := m.Allocatable(); fmt.Sprint(got) != "[1 2 3 4 5 6 7]" {
		t.Errorf("allocatable %v", got)
	}
	data, err := os.ReadFile(filepath.Join(root, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"defaultCpuSet":"0,2-4,6-7","entries":{"p1":{"c0":"1,5"}}`) {
		t.Errorf("state file %s", data)
	}

	// A restart keeps the allocation; the same pod admitted again takes
	// nothing more.
	m2 := newStatic(t, root)
	if err := allocate(m2, pod, all); err != nil {
		t.Fatal(err)
	}
	if set, _ := m2.ForContainer("p1", "c0"); set != "1,5" {
		t.Errorf("after a restart: %q", set)
	}
	if set, _ := m2.ForContainer("p3", "x"); set != "0,2-4,6-7" {
		t.Errorf("shared pool after a restart: %q", set)
	}

	// Stopped for good: the CPUs go back.
	m2.Release(klog.Background(), func(uid types.UID) bool { return uid != "p1" })
	if set, own := m2.ForContainer("p1", "c0"); own || set != "0-7" {
		t.Errorf("after release: %q own=%v", set, own)
	}
}

func TestStaticPolicyRefusesAPodItCannotPinWholly(t *testing.T) {
	m := newStatic(t, t.TempDir())
	err := allocate(m, guaranteed("big", "big", "4", "4"), all)
	var ae *AdmissionError
	if err == nil || !asAdmission(err, &ae) {
		t.Fatalf("7 CPUs for 8 asked: %v", err)
	}
	want := "Allocate failed due to not enough cpus available to satisfy request: requested=4, available=3, which is unexpected"
	if err.Error() != want || ae.Reason() != "UnexpectedAdmissionError" {
		t.Errorf("got %q (%s), want %q", err, ae.Reason(), want)
	}
	if set, own := m.ForContainer("big", "c0"); own || set != "0-7" {
		t.Errorf("the refused pod kept CPUs: %q", set)
	}
}

func asAdmission(err error, target **AdmissionError) bool {
	ae, ok := err.(*AdmissionError)
	*target = ae
	return ok
}

// An app container may take the CPUs its pod's init container held.
func TestInitContainerCPUsAreReused(t *testing.T) {
	m := newStatic(t, t.TempDir())
	pod := guaranteed("p", "p", "2")
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: pod.Spec.Containers[0].Resources}}
	if err := allocate(m, pod, all); err != nil {
		t.Fatal(err)
	}
	initSet, _ := m.ForContainer("p", "init")
	appSet, _ := m.ForContainer("p", "c0")
	if initSet != "1,5" || appSet != "1,5" {
		t.Errorf("init %q app %q, want both 1,5", initSet, appSet)
	}
	m.Release(klog.Background(), func(types.UID) bool { return false })
	if got := m.state.defaultSet.String(); got != "0-7" {
		t.Errorf("after release the pool is %s", got)
	}
}

func TestStartRefusesAStateThatDoesNotFit(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, StateFile), []byte(upstreamNone), 0o600)
	topo, _ := Discover(fakeSysfs(t))
	m, err := New(Config{Policy: PolicyStatic, RootDir: root, Topology: topo, ReservedCPU: resource.MustParse("1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(klog.Background()); err == nil || !strings.Contains(err.Error(), `configured policy "static" differs from state checkpoint policy "none"`) ||
		!strings.Contains(err.Error(), "please drain this node and delete the CPU manager checkpoint file") {
		t.Errorf("none file under static: %v", err)
	}
	os.WriteFile(filepath.Join(root, StateFile), []byte(upstreamStatic), 0o600) // CPU 0 reserved but given to nobody's pool? it is in it; 1-2,6,7 pinned
	m, _ = New(Config{Policy: PolicyStatic, RootDir: root, Topology: topo, Reserved: cpuset.New(1)})
	if err := m.Start(klog.Background()); err == nil || !strings.Contains(err.Error(), `not all reserved cpus: "1" are present in defaultCpuSet: "0,3-5"`) {
		t.Errorf("reserved CPU pinned: %v", err)
	}
	if _, err := New(Config{Policy: PolicyStatic, RootDir: root, Topology: topo}); err == nil ||
		!strings.Contains(err.Error(), "the static policy requires systemreserved.cpu + kubereserved.cpu to be greater than zero") {
		t.Errorf("no reservation: %v", err)
	}
	if _, err := New(Config{Policy: PolicyNone, RootDir: root, Topology: topo, Reserved: cpuset.New(9)}); err == nil ||
		!strings.Contains(err.Error(), "reserved-cpus: 9 is not a subset of online-cpus: 0-7") {
		t.Errorf("reserved CPU offline: %v", err)
	}
	none, _ := New(Config{Policy: PolicyNone, RootDir: t.TempDir(), Topology: topo})
	if err := none.Start(klog.Background()); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(none.path)); string(data) != upstreamNone {
		t.Errorf("none policy wrote %s", data)
	}
	if set, own := none.ForContainer("x", "y"); set != "" || own {
		t.Errorf("none policy pins %q", set)
	}
}

type fakeRuntime struct {
	containers []*runtimeapi.Container
	updates    []string
}

func (f *fakeRuntime) ListContainers(context.Context, *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	return f.containers, nil
}

func (f *fakeRuntime) UpdateContainerResources(_ context.Context, id string, r *runtimeapi.ContainerResources) error {
	f.updates = append(f.updates, id+"="+r.GetLinux().GetCpusetCpus())
	return nil
}

// Running containers follow the shared pool as it changes, once per change.
func TestReconcileMovesRunningContainers(t *testing.T) {
	m := newStatic(t, t.TempDir())
	ctr := func(id, uid, name string) *runtimeapi.Container {
		return &runtimeapi.Container{Id: id, State: runtimeapi.ContainerState_CONTAINER_RUNNING,
			Labels: map[string]string{labelPodUID: uid, labelContainerName: name}}
	}
	rt := &fakeRuntime{containers: []*runtimeapi.Container{ctr("a", "shared", "s"), ctr("b", "gone", "g")}}
	active := func(uid types.UID) bool { return uid != "gone" }
	m.Reconcile(context.Background(), rt, active)
	m.Reconcile(context.Background(), rt, active)
	if fmt.Sprint(rt.updates) != "[a=0-7]" {
		t.Fatalf("updates %v, want the shared container once", rt.updates)
	}
	if err := allocate(m, guaranteed("pinned", "pinned", "2"), all); err != nil {
		t.Fatal(err)
	}
	rt.containers = append(rt.containers, ctr("c", "pinned", "c0"))
	rt.updates = nil
	m.Reconcile(context.Background(), rt, active)
	if fmt.Sprint(rt.updates) != "[a=0,2-4,6-7 c=1,5]" {
		t.Errorf("updates %v", rt.updates)
	}
}

// allocate admits a pod as the agent does under the topology manager's none
// policy: pods no longer active give their CPUs back, then each container
// is allocated in turn.
func allocate(m *Manager, pod *corev1.Pod, active func(types.UID) bool) error {
	m.Release(klog.Background(), active)
	tm, err := topology.New(topology.PolicyNone, "", nil, topology.NUMA{})
	if err != nil {
		return err
	}
	return tm.Admit(context.Background(), pod, m)
}

// Under a topology policy the CPUs come from the NUMA node the merged hint
// chose, container by container, and a request no node (or pair) can hold
// is refused by the policy before the CPU manager would fail it.
func TestTopologyAlignsExclusiveCPUs(t *testing.T) {
	ctx := context.Background()
	numa := topology.NUMA{Nodes: []int{0, 1}}
	for _, tc := range []struct {
		scope, policy string
		cpus          []string
		want          []string // the containers' CPUs, or the refusal's reason
	}{
		// Node 0 has 1, 4 and 5 free (0 is reserved), node 1 all four.
		{topology.ScopeContainer, topology.PolicySingleNUMANode, []string{"3", "3"}, []string{"1,4-5", "2-3,6"}},
		{topology.ScopeContainer, topology.PolicyRestricted, []string{"4"}, []string{"2-3,6-7"}},
		{topology.ScopePod, topology.PolicySingleNUMANode, []string{"3", "3"}, []string{"TopologyAffinityError"}},
		{topology.ScopePod, topology.PolicyRestricted, []string{"3", "3"}, []string{"1,4-5", "2-3,6"}}, // both nodes: preferred for 6
		{topology.ScopeContainer, topology.PolicyRestricted, []string{"4", "4"}, []string{"TopologyAffinityError"}},
		{topology.ScopeContainer, topology.PolicyBestEffort, []string{"4", "4"}, []string{"UnexpectedAdmissionError"}},
	} {
		name := tc.scope + "/" + tc.policy + "/" + strings.Join(tc.cpus, "+")
		m := newStatic(t, t.TempDir())
		tm, err := topology.New(tc.policy, tc.scope, nil, numa)
		if err != nil {
			t.Fatal(err)
		}
		pod := guaranteed("uid", "pod", tc.cpus...)
		var got []string
		if err := tm.Admit(ctx, pod, m); err != nil {
			var r interface{ Reason() string }
			if !errors.As(err, &r) {
				t.Fatalf("%s: %v", name, err)
			}
			got = append(got, r.Reason())
			if n := len(m.state.assignments); n != 0 {
				t.Errorf("%s: refused, yet %d pods hold CPUs", name, n)
			}
		} else {
			for _, c := range pod.Spec.Containers {
				set, _ := m.ForContainer(pod.UID, c.Name)
				got = append(got, set)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

func TestCPUHintsFollowWhatIsFree(t *testing.T) {
	m := newStatic(t, t.TempDir())
	pod := guaranteed("uid", "pod", "3")
	got := m.ContainerHints(pod, &pod.Spec.Containers[0])["cpu"]
	want := []topology.Hint{{Affinity: topology.NewMask(0), Preferred: true}, {Affinity: topology.NewMask(1), Preferred: true},
		{Affinity: topology.NewMask(0, 1)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("3 CPUs: %v, want %v", got, want)
	}
	// Four CPUs fit node 1 alone (node 0 has one reserved).
	pod = guaranteed("uid", "pod", "4")
	got = m.ContainerHints(pod, &pod.Spec.Containers[0])["cpu"]
	want = []topology.Hint{{Affinity: topology.NewMask(1), Preferred: true}, {Affinity: topology.NewMask(0, 1)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("4 CPUs: %v, want %v", got, want)
	}
	if h := m.ContainerHints(burstablePod(), &burstablePod().Spec.Containers[0]); h != nil {
		t.Fatalf("a burstable container has hints: %v", h)
	}
}

func burstablePod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "b", Name: "b"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}}}}}
}

func newStaticWith(t *testing.T, root string, opts map[string]string) (*Manager, error) {
	t.Helper()
	topo, err := Discover(fakeSysfs(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Policy: PolicyStatic, RootDir: root, Topology: topo, ReservedCPU: resource.MustParse("500m"), Options: opts, Beta: true})
	if err != nil {
		return nil, err
	}
	return m, m.Start(klog.Background())
}

// full-pcpus-only: whole cores only (two CPUs per core here), and no more
// than the free CPUs outside the reserved CPU's core; upstream's reason and
// messages.
func TestFullPCPUsOnly(t *testing.T) {
	m, err := newStaticWith(t, t.TempDir(), map[string]string{OptionFullPCPUsOnly: "true"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cpus, want string
	}{
		{"1", "SMT Alignment Error: requested 1 cpus not multiple cpus per core = 2"},
		{"8", "SMT Alignment Error: not enough free physical CPUs: available physical CPUs = 6, requested CPUs = 8, CPUs per core = 2"},
		{"2", ""},
	} {
		err := allocate(m, guaranteed("uid-"+tc.cpus, "pod", tc.cpus), all)
		var smt *SMTAlignmentError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s CPUs: %v", tc.cpus, err)
		case tc.want != "" && (!errors.As(err, &smt) || err.Error() != tc.want || smt.Reason() != "SMTAlignmentError"):
			t.Errorf("%s CPUs: %v, want %q", tc.cpus, err, tc.want)
		}
	}
	if set, _ := m.ForContainer("uid-2", "c0"); set != "1,5" {
		t.Errorf("2 CPUs on %s, want the whole core 1,5", set)
	}
	if _, err := newStaticWith(t, t.TempDir(), map[string]string{OptionFullPCPUsOnly: "yes"}); err == nil {
		t.Error("a bad boolean was accepted")
	}
}

// strict-cpu-reservation: the reserved CPU is out of the shared pool too,
// and a state file written without it is refused with upstream's message.
func TestStrictCPUReservation(t *testing.T) {
	root := t.TempDir()
	m, err := newStaticWith(t, root, map[string]string{OptionStrictCPUReservation: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if set, exclusive := m.ForContainer("any", "c"); set != "1-7" || exclusive {
		t.Fatalf("shared pool %s (exclusive %v), want 1-7", set, exclusive)
	}
	if err := allocate(m, guaranteed("uid", "pod", "2"), all); err != nil {
		t.Fatal(err)
	}
	if set, _ := m.ForContainer("other", "c"); strings.Contains(set, "0") {
		t.Fatalf("shared pool %s holds the reserved CPU", set)
	}
	// The same state under the default: reserved CPU 0 missing from the pool.
	if _, err := newStaticWith(t, root, nil); err == nil || !strings.Contains(err.Error(), `not all reserved cpus: "0" are present in defaultCpuSet`) {
		t.Fatalf("strict state read without the option: %v", err)
	}
	// And the other way round.
	other := t.TempDir()
	if _, err := newStaticWith(t, other, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := newStaticWith(t, other, map[string]string{OptionStrictCPUReservation: "true"}); err == nil || !strings.Contains(err.Error(), `some of strictly reserved cpus: "0" are present in defaultCpuSet`) {
		t.Fatalf("default state read with strict-cpu-reservation: %v", err)
	}
}
