package memorymanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	"github.com/bosun-dev/bosun/internal/topology"
)

const gi = uint64(1) << 30

// twoNodes is a machine of two NUMA nodes of 4 GiB, 1 GiB of node 0
// reserved.
func twoNodes(t *testing.T, root string) *Manager {
	t.Helper()
	m, err := New(Config{Policy: PolicyStatic, RootDir: root,
		Nodes:       []Node{{ID: 0, Memory: 4 * gi}, {ID: 1, Memory: 4 * gi}},
		Reservation: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi"), corev1.ResourceCPU: resource.MustParse("1")},
		Reserved:    []kubeletv1beta1.MemoryReservation{{NumaNode: 0, Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(klog.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

func guaranteedPod(uid string, init string, mem ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), Name: uid, Namespace: "ns"}}
	res := func(m string) corev1.ResourceRequirements {
		r := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse(m)}
		return corev1.ResourceRequirements{Requests: r, Limits: r}
	}
	if init != "" {
		pod.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: res(init)}}
	}
	for i, m := range mem {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Resources: res(m)})
	}
	return pod
}

func admit(m *Manager, pod *corev1.Pod) error {
	tm, err := topology.New(topology.PolicyNone, "", nil, topology.NUMA{})
	if err != nil {
		return err
	}
	return tm.Admit(context.Background(), pod, m)
}

func free(m *Manager, node int) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.machine[node].MemoryMap[corev1.ResourceMemory].Free
}

func TestReservedMemoryMustMatchTheReservation(t *testing.T) {
	nodes := []Node{{ID: 0, Memory: 4 * gi}}
	for _, tc := range []struct {
		reservation corev1.ResourceList
		reserved    []kubeletv1beta1.MemoryReservation
		want        string
	}{
		{corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}, nil,
			`the total amount "0" of type "memory" is not equal to the value "1Gi" determined by Node Allocatable feature`},
		{corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			[]kubeletv1beta1.MemoryReservation{{NumaNode: 3, Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}},
			"the reserved memory configuration references a NUMA node 3 that does not exist on this machine"},
		{corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			[]kubeletv1beta1.MemoryReservation{{NumaNode: 0, Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi"), "hugepages-2Mi": resource.MustParse("2Mi")}}},
			`the total amount "2Mi" of type "hugepages-2Mi" is not equal to the value "0" determined by Node Allocatable feature`},
	} {
		_, err := New(Config{Policy: PolicyStatic, RootDir: t.TempDir(), Nodes: nodes, Reservation: tc.reservation, Reserved: tc.reserved})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: %v, want %q", tc.reserved, err, tc.want)
		}
	}
	if _, err := New(Config{Policy: "BestEffort", RootDir: t.TempDir(), Nodes: nodes}); err == nil {
		t.Error("an unknown policy was accepted")
	}
}

func TestStaticPolicyPlacesGuaranteedMemoryOnNUMANodes(t *testing.T) {
	root := t.TempDir()
	m := twoNodes(t, root)
	if got := free(m, 0); got != 3*gi {
		t.Fatalf("node 0 free %d, want 3Gi (1Gi reserved)", got)
	}
	a := guaranteedPod("a", "", "2Gi")
	if err := admit(m, a); err != nil {
		t.Fatal(err)
	}
	if got := m.ForContainer("a", "c0"); got != "0" {
		t.Fatalf("pod a on nodes %q, want 0", got)
	}
	b := guaranteedPod("b", "", "2Gi")
	if err := admit(m, b); err != nil {
		t.Fatal(err)
	}
	if got := m.ForContainer("b", "c0"); got != "1" {
		t.Fatalf("pod b on nodes %q, want 1 (node 0 has 1Gi left)", got)
	}
	// Neither node has 3 GiB, and both already hold memory of their own:
	// no group can take it.
	err := admit(m, guaranteedPod("c", "", "3Gi"))
	var ae *AdmissionError
	if !errors.As(err, &ae) || ae.Reason() != "UnexpectedAdmissionError" ||
		err.Error() != "Allocate failed due to [memorymanager] failed to get the default NUMA affinity, no NUMA nodes with enough memory is available, which is unexpected" {
		t.Fatalf("3Gi: %v", err)
	}
	if free(m, 0) != gi || free(m, 1) != 2*gi || m.ForContainer("c", "c0") != "" {
		t.Fatalf("a refused pod changed the state: free %d/%d", free(m, 0), free(m, 1))
	}
	burstable := guaranteedPod("d", "", "1Gi")
	burstable.Spec.Containers[0].Resources.Limits = nil
	if h := m.ContainerHints(burstable, &burstable.Spec.Containers[0]); h != nil || admit(m, burstable) != nil || m.ForContainer("d", "c0") != "" {
		t.Fatalf("a burstable pod got memory: hints %v", h)
	}
	// A restart reads the same state back.
	again := twoNodes(t, root)
	if got := again.ForContainer("a", "c0"); got != "0" || free(again, 0) != gi {
		t.Fatalf("after a restart: pod a on %q, node 0 free %d", got, free(again, 0))
	}
	// Pod a ends: node 0 is whole again.
	m.Release(klog.Background(), func(uid types.UID) bool { return uid != "a" })
	if free(m, 0) != 3*gi || m.ForContainer("a", "c0") != "" {
		t.Fatalf("after pod a ended: node 0 free %d", free(m, 0))
	}
	if blocks := m.Allocatable(); len(blocks) != 2 || blocks[0].Size != 3*gi || blocks[1].Size != 4*gi {
		t.Fatalf("allocatable %+v", blocks)
	}
}

// An app container reuses what the init container before it held: the pod
// takes the larger of the two, the init container's rest is given back when
// the app container is created, and the whole once the pod ends.
func TestInitContainerMemoryIsReused(t *testing.T) {
	m := twoNodes(t, t.TempDir())
	pod := guaranteedPod("p", "2Gi", "1Gi")
	if err := admit(m, pod); err != nil {
		t.Fatal(err)
	}
	if got := free(m, 0); got != gi {
		t.Fatalf("node 0 free %d, want 1Gi: the pod holds 2Gi at most", got)
	}
	// Once the app container is created, the init container (done) gives
	// back what the app container did not take over.
	m.ContainerCreated(pod, "init")
	if got := free(m, 0); got != gi {
		t.Fatalf("node 0 free %d after the init container was created, want 1Gi still", got)
	}
	m.ContainerCreated(pod, "c0")
	if got := free(m, 0); got != 2*gi || m.ForContainer("p", "init") != "" || m.ForContainer("p", "c0") != "0" {
		t.Fatalf("node 0 free %d after the app container was created, want 2Gi", got)
	}
	m.Release(klog.Background(), func(types.UID) bool { return false })
	if got := free(m, 0); got != 3*gi {
		t.Fatalf("node 0 free %d after the pod ended, want 3Gi", got)
	}
}

// A state file whose machine state does not follow from its assignments
// stops the agent with upstream's words and advice.
func TestInconsistentStateIsRefused(t *testing.T) {
	root := t.TempDir()
	m := twoNodes(t, root)
	if err := admit(m, guaranteedPod("a", "", "1Gi")); err != nil {
		t.Fatal(err)
	}
	c, err := readState(filepath.Join(root, StateFile), PolicyStatic)
	if err != nil {
		t.Fatal(err)
	}
	c.MachineState[0].MemoryMap[corev1.ResourceMemory].Free += gi
	if err := writeState(filepath.Join(root, StateFile), PolicyStatic, c.MachineState, c.Entries); err != nil {
		t.Fatal(err)
	}
	again, _ := New(Config{Policy: PolicyStatic, RootDir: root, Nodes: m.nodes,
		Reservation: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
		Reserved:    []kubeletv1beta1.MemoryReservation{{NumaNode: 0, Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}}})
	err = again.Start(klog.Background())
	if err == nil || !strings.Contains(err.Error(), "[memorymanager] the expected machine state is different from the real one") ||
		!strings.Contains(err.Error(), "please drain this node and delete the memory manager checkpoint file") {
		t.Fatalf("tampered state: %v", err)
	}
	// A None agent does not read a Static file.
	none, _ := New(Config{Policy: PolicyNone, RootDir: root})
	if err := none.Start(klog.Background()); err == nil || !strings.Contains(err.Error(), `configured policy "None" differs from state checkpoint policy "Static"`) {
		t.Fatalf("None over a Static file: %v", err)
	}
}

func TestDiscoverReadsNodeMemoryAndHugePages(t *testing.T) {
	root := t.TempDir()
	write := func(path, content string) {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("devices/system/node/node0/meminfo", "Node 0 MemTotal:       4194304 kB\nNode 0 MemFree:  100 kB\n")
	write("devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", "16\n")
	write("devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages", "0\n")
	nodes, err := Discover(root, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Memory != 4*gi || nodes[0].HugePages[2048] != 16 || len(nodes[0].HugePages) != 2 {
		t.Fatalf("%+v", nodes)
	}
	m, err := New(Config{Policy: PolicyStatic, RootDir: t.TempDir(), Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	machine := m.defaultMachine()
	if h := machine[0].MemoryMap["hugepages-2Mi"]; h == nil || h.TotalMemSize != 32<<20 {
		t.Fatalf("hugepages-2Mi: %+v", h)
	}
	if mem := machine[0].MemoryMap[corev1.ResourceMemory]; mem.Allocatable != 4*gi-32<<20 {
		t.Fatalf("memory allocatable %d, want the node's memory less its huge pages", mem.Allocatable)
	}
}
