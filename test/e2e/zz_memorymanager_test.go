//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// memoryState is the part of <root-dir>/memory_manager_state the test reads.
type memoryState struct {
	PolicyName   string `json:"policyName"`
	MachineState map[string]struct {
		MemoryMap map[string]struct {
			Allocatable uint64 `json:"allocatable"`
			Reserved    uint64 `json:"reserved"`
		} `json:"memoryMap"`
	} `json:"machineState"`
	Entries map[string]map[string][]struct {
		NUMAAffinity []int  `json:"numaAffinity"`
		Type         string `json:"type"`
		Size         uint64 `json:"size"`
	} `json:"entries"`
}

// The memory manager's Static policy, the node's whole memory reservation
// on NUMA node 0 (reservedMemory): the state file gives node 0 the node's
// allocatable memory; a Guaranteed pod's container gets a block of its
// memory from node 0, recorded in the file and counted as reserved; once
// the pod is gone and the next one admitted, its block is given back.
// Either agent gives the same answers.
func TestMemoryManagerStatic(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	if nodes, _ := filepath.Glob("/sys/devices/system/node/node[0-9]*"); len(nodes) > 1 {
		t.Skipf("the machine has %d NUMA nodes; the test reserves on node 0 alone", len(nodes))
	}
	cs := env.client(t)
	ctx := context.Background()
	node := env["NODE_NAME"]
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	capacity, allocatable := n.Status.Capacity[corev1.ResourceMemory], n.Status.Allocatable[corev1.ResourceMemory]
	reservation := capacity.DeepCopy()
	reservation.Sub(allocatable)
	orig, err := os.ReadFile(env["CONFIG_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(orig), "\nmemoryManagerPolicy:") || strings.Contains(string(orig), "\nreservedMemory:") {
		t.Fatalf("%s sets the memory manager already", env["CONFIG_FILE"])
	}
	stateFile := filepath.Join(env["ROOT_DIR"], "memory_manager_state")
	// A change of policy needs the old state file gone, as upstream.
	t.Cleanup(func() {
		os.Remove(stateFile)
		reconfigureAgentReady(t, env, orig)
	})
	os.Remove(stateFile)
	reconfigureAgentReady(t, env, append(append([]byte{}, orig...), []byte(fmt.Sprintf(
		"memoryManagerPolicy: Static\nreservedMemory:\n- numaNode: 0\n  limits:\n    memory: %d\n", reservation.Value()))...))
	read := func() (memoryState, error) {
		var s memoryState
		data, err := os.ReadFile(stateFile)
		if err != nil {
			return s, err
		}
		if err := json.Unmarshal(data, &s); err != nil {
			return s, fmt.Errorf("%s: %w", stateFile, err)
		}
		return s, nil
	}
	var s memoryState
	eventually(t, 60*time.Second, "the agent's Static state file", func() error {
		if s, err = read(); err == nil && s.PolicyName != "Static" {
			err = fmt.Errorf("policy %q", s.PolicyName)
		}
		return err
	})
	if got := s.MachineState["0"].MemoryMap["memory"].Allocatable; s.PolicyName != "Static" || got != uint64(allocatable.Value()) {
		t.Errorf("state file: policy %q, node 0 allocatable memory %d, want Static and the node's allocatable %d", s.PolicyName, got, allocatable.Value())
	}

	ns := testNamespace(t, cs)
	pod := busyboxPod("pinned", corev1.RestartPolicyAlways, "sleep 3600")
	pod.Spec.NodeName = node
	r := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: r, Limits: r}
	create(t, cs, ns, pod)
	p := waitPod(t, cs, ns, "pinned", 90*time.Second, "Running", running)
	if s, err = read(); err != nil {
		t.Fatal(err)
	}
	blocks := s.Entries[string(p.UID)]["main"]
	if len(blocks) != 1 || blocks[0].Type != "memory" || blocks[0].Size != 64<<20 || len(blocks[0].NUMAAffinity) != 1 || blocks[0].NUMAAffinity[0] != 0 {
		t.Errorf("the Guaranteed container's memory blocks: %+v, want 64Mi of memory on node 0", blocks)
	}
	if got := s.MachineState["0"].MemoryMap["memory"].Reserved; got != 64<<20 {
		t.Errorf("node 0 reserved memory %d, want 64Mi", got)
	}
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "pinned", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "the pod gone", func() error {
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, "pinned", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	// The upstream kubelet gives a gone pod's memory back at the next
	// admission (Bosun also within its 10-s housekeeping): by the time the
	// next Guaranteed pod runs, its block is the only one.
	next := pod.DeepCopy()
	next.ObjectMeta = metav1.ObjectMeta{Name: "next"}
	create(t, cs, ns, next)
	q := waitPod(t, cs, ns, "next", 90*time.Second, "Running", running)
	eventually(t, 30*time.Second, "the gone pod's block given back", func() error {
		s, err := read()
		if err != nil {
			return err
		}
		if _, ok := s.Entries[string(p.UID)]; ok || len(s.Entries[string(q.UID)]["main"]) != 1 || s.MachineState["0"].MemoryMap["memory"].Reserved != 64<<20 {
			return fmt.Errorf("entries %v, node 0 reserved %d", s.Entries, s.MachineState["0"].MemoryMap["memory"].Reserved)
		}
		return nil
	})
}
