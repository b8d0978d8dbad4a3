package topology

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func h(preferred bool, nodes ...int) Hint {
	return Hint{Affinity: NewMask(nodes...), Preferred: preferred}
}

func numa(n int) NUMA {
	out := NUMA{Distances: map[int][]uint64{}}
	for i := range n {
		out.Nodes = append(out.Nodes, i)
	}
	return out
}

func TestEachMaskGoesFromNarrowToWide(t *testing.T) {
	var got []string
	EachMask([]int{0, 1, 2}, func(m Mask) { got = append(got, m.String()) })
	want := []string{"0", "1", "2", "0,1", "0,2", "1,2", "0,1,2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("masks %v, want %v", got, want)
	}
}

func TestGenerateMarksTheNarrowestFittingMasksPreferred(t *testing.T) {
	// Two nodes of four units each; node 0 has one unit free, node 1 three.
	free := map[int]int{0: 1, 1: 3}
	count := func(m Mask, per map[int]int) int {
		n := 0
		for _, id := range m.Nodes() {
			n += per[id]
		}
		return n
	}
	total := func(m Mask) int { return count(m, map[int]int{0: 4, 1: 4}) }
	got := Generate([]int{0, 1}, 3, total, func(m Mask) (int, bool) { return count(m, free), true })
	want := []Hint{h(true, 1), h(false, 0, 1)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("3 units: %v, want %v", got, want)
	}
	// Five units need both nodes even on an empty machine: that is preferred.
	got = Generate([]int{0, 1}, 5, total, func(m Mask) (int, bool) { return count(m, map[int]int{0: 4, 1: 4}), true })
	if want := []Hint{h(true, 0, 1)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("5 units: %v, want %v", got, want)
	}
	// A mask the caller rules out (reused units outside it) gives no hint.
	got = Generate([]int{0, 1}, 1, total, func(m Mask) (int, bool) { return count(m, free), m.Has(1) })
	if want := []Hint{h(true, 1), h(false, 0, 1)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ruled out: %v, want %v", got, want)
	}
}

func TestMergeAsUpstreamPolicies(t *testing.T) {
	two := numa(2)
	for _, tc := range []struct {
		name    string
		policy  string
		answers []Hints
		want    Hint
		admit   bool
	}{
		{"no provider has a preference", PolicyRestricted, []Hints{nil, {"cpu": nil}}, h(true, 0, 1), true},
		{"common preferred node", PolicyRestricted,
			[]Hints{{"cpu": {h(true, 0), h(true, 1), h(false, 0, 1)}}, {"dev": {h(true, 1), h(false, 0, 1)}}}, h(true, 1), true},
		{"narrowest and lowest of equals", PolicyBestEffort,
			[]Hints{{"cpu": {h(true, 0), h(true, 1)}}}, h(true, 0), true},
		{"disjoint preferred nodes: restricted refuses", PolicyRestricted,
			[]Hints{{"cpu": {h(true, 0), h(false, 0, 1)}}, {"dev": {h(true, 1), h(false, 0, 1)}}}, h(false, 0), false},
		{"disjoint preferred nodes: best-effort admits", PolicyBestEffort,
			[]Hints{{"cpu": {h(true, 0), h(false, 0, 1)}}, {"dev": {h(true, 1), h(false, 0, 1)}}}, h(false, 0), true},
		{"a resource that cannot be placed", PolicyRestricted, []Hints{{"cpu": {}}}, h(false, 0, 1), false},
		{"single-numa-node drops wide hints", PolicySingleNUMANode,
			[]Hints{{"cpu": {h(true, 0, 1)}}}, h(false), false},
		{"single-numa-node with no preference", PolicySingleNUMANode, []Hints{{"dev": nil}}, h(true), true},
		{"single-numa-node on one node", PolicySingleNUMANode,
			[]Hints{{"cpu": {h(true, 1), h(false, 0, 1)}}}, h(true, 1), true},
	} {
		got, admit := merge(tc.policy, Options{}, two, tc.answers)
		if got != tc.want || admit != tc.admit {
			t.Errorf("%s: %v admit %v, want %v admit %v", tc.name, got, admit, tc.want, tc.admit)
		}
	}
}

// Among non-preferred merges, the one as narrow as the widest resource's
// narrowest hint wins over narrower ones (which no combination can give
// every resource), as upstream's bestNonPreferredAffinityCount.
func TestMergeNonPreferredKeepsTheBestReachableWidth(t *testing.T) {
	answers := []Hints{
		{"cpu": {h(false, 0, 1), h(false, 0, 1, 2, 3)}},
		{"dev": {h(false, 0, 1, 2), h(false, 0, 1, 2, 3)}},
	}
	got, admit := merge(PolicyBestEffort, Options{}, numa(4), answers)
	if want := h(false, 0, 1, 2); got != want || !admit {
		t.Fatalf("%v admit %v, want %v", got, admit, want)
	}
}

func TestPreferClosestNUMANodes(t *testing.T) {
	n := numa(4)
	n.Distances = map[int][]uint64{0: {10, 30, 11, 30}, 1: {30, 10, 30, 11}, 2: {11, 30, 10, 30}, 3: {30, 11, 30, 10}}
	answers := []Hints{{"cpu": {h(true, 0, 1), h(true, 0, 2)}}}
	if got, _ := merge(PolicyBestEffort, Options{}, n, answers); got != h(true, 0, 1) {
		t.Errorf("without the option: %v, want the lowest nodes 0,1", got)
	}
	if got, _ := merge(PolicyBestEffort, Options{PreferClosestNUMA: true}, n, answers); got != h(true, 0, 2) {
		t.Errorf("prefer-closest-numa-nodes: %v, want the closest nodes 0,2", got)
	}
}

func TestOptionsAndLimits(t *testing.T) {
	if _, err := ParseOptions(map[string]string{"prefer-closest-numa-nodes": "maybe"}); err == nil {
		t.Error("a bad boolean was accepted")
	}
	if _, err := ParseOptions(map[string]string{"max-allowable-numa-nodes": "4"}); err == nil ||
		err.Error() != `the minimum value of "max-allowable-numa-nodes" should not be less than 8` {
		t.Errorf("max below 8: %v", err)
	}
	if _, err := ParseOptions(map[string]string{"align-by-socket": "true"}); err == nil ||
		err.Error() != `unknown Topology Manager Policy option: "align-by-socket"` {
		t.Errorf("unknown option: %v", err)
	}
	nine := numa(9)
	if _, err := New(PolicyRestricted, ScopeContainer, nil, nine); err == nil ||
		err.Error() != "unsupported on machines with more than 8 NUMA Nodes" {
		t.Errorf("nine nodes: %v", err)
	}
	if _, err := New(PolicyRestricted, ScopeContainer, map[string]string{"max-allowable-numa-nodes": "9"}, nine); err != nil {
		t.Errorf("nine nodes allowed: %v", err)
	}
	if _, err := New(PolicyNone, ScopeContainer, nil, nine); err != nil {
		t.Errorf("none on nine nodes: %v", err)
	}
	if _, err := New(PolicyBestEffort, ScopeContainer, map[string]string{"prefer-closest-numa-nodes": "true"}, numa(2)); err == nil {
		t.Error("prefer-closest-numa-nodes without distances was accepted")
	}
}

func TestDiscoverNUMAReadsNodesAndDistances(t *testing.T) {
	root := t.TempDir()
	for id, d := range map[string]string{"node0": "10 21", "node1": "21 10"} {
		dir := filepath.Join(root, "devices/system/node", id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "distance"), []byte(d+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := DiscoverNUMA(root)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Nodes, []int{0, 1}) || !reflect.DeepEqual(got.Distances[1], []uint64{21, 10}) {
		t.Fatalf("%+v", got)
	}
	if got, _ := DiscoverNUMA(t.TempDir()); !reflect.DeepEqual(got.Nodes, []int{0}) {
		t.Fatalf("no sysfs nodes: %+v", got)
	}
}

// fakeProvider answers fixed hints and records what it was asked to
// allocate.
type fakeProvider struct {
	hints     map[string]Hints // per container
	podHints  Hints
	allocated map[string]Mask
	fail      string // the container whose allocation fails
	aborted   bool
	committed bool
}

func (f *fakeProvider) ContainerHints(_ *corev1.Pod, c *corev1.Container) Hints {
	return f.hints[c.Name]
}
func (f *fakeProvider) PodHints(*corev1.Pod) Hints { return f.podHints }
func (f *fakeProvider) AllocateContainer(_ context.Context, _ *corev1.Pod, c *corev1.Container, h Hint) error {
	if c.Name == f.fail {
		return errors.New("no room")
	}
	f.allocated[c.Name] = h.Affinity
	return nil
}
func (f *fakeProvider) Abort(context.Context, *corev1.Pod)  { f.aborted = true }
func (f *fakeProvider) Commit(context.Context, *corev1.Pod) { f.committed = true }

func twoContainers() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u"}, Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init"}}, Containers: []corev1.Container{{Name: "app"}}}}
}

func TestAdmitContainerScopeAllocatesEachOnItsOwnAffinity(t *testing.T) {
	m, err := New(PolicyRestricted, ScopeContainer, nil, numa(2))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProvider{allocated: map[string]Mask{}, hints: map[string]Hints{
		"init": {"cpu": {h(true, 1), h(false, 0, 1)}},
		"app":  {"cpu": {h(true, 0), h(false, 0, 1)}},
	}}
	pod := twoContainers()
	if err := m.Admit(context.Background(), pod, f); err != nil {
		t.Fatal(err)
	}
	if want := map[string]Mask{"init": NewMask(1), "app": NewMask(0)}; !reflect.DeepEqual(f.allocated, want) || !f.committed {
		t.Fatalf("allocated %v committed %v, want %v", f.allocated, f.committed, want)
	}
	if got := m.Affinity("u", "app"); got != NewMask(0) {
		t.Errorf("affinity kept for app: %v", got)
	}
	m.ForgetUnless(func(uid types.UID) bool { return uid != "u" })
	if got := m.Affinity("u", "app"); got != 0 {
		t.Errorf("affinity kept after the pod ended: %v", got)
	}
}

func TestAdmitRefusesAndTakesBack(t *testing.T) {
	m, err := New(PolicyRestricted, ScopeContainer, nil, numa(2))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProvider{allocated: map[string]Mask{}, hints: map[string]Hints{
		"init": {"cpu": {h(true, 1)}},
		"app":  {"cpu": {}},
	}}
	err = m.Admit(context.Background(), twoContainers(), f)
	var ae AffinityError
	if !errors.As(err, &ae) || ae.Reason() != "TopologyAffinityError" || err.Error() != "Resources cannot be allocated with Topology locality" {
		t.Fatalf("refusal: %v", err)
	}
	if !f.aborted || f.committed || m.Affinity("u", "init") != 0 {
		t.Fatalf("aborted %v committed %v affinity %v", f.aborted, f.committed, m.Affinity("u", "init"))
	}
	// A provider's own failure is returned as is, and taken back too.
	f = &fakeProvider{allocated: map[string]Mask{}, fail: "app"}
	none, _ := New(PolicyNone, "", nil, numa(1))
	if err := none.Admit(context.Background(), twoContainers(), f); err == nil || err.Error() != "no room" || !f.aborted {
		t.Fatalf("failed allocation: %v aborted %v", err, f.aborted)
	}
}

func TestAdmitPodScopeMergesOnceForThePod(t *testing.T) {
	m, err := New(PolicySingleNUMANode, ScopePod, nil, numa(2))
	if err != nil {
		t.Fatal(err)
	}
	// Each container would fit one node, but the pod needs both: refused.
	f := &fakeProvider{allocated: map[string]Mask{},
		hints:    map[string]Hints{"init": {"cpu": {h(true, 0)}}, "app": {"cpu": {h(true, 1)}}},
		podHints: Hints{"cpu": {h(true, 0, 1)}}}
	if err := m.Admit(context.Background(), twoContainers(), f); !errors.As(err, new(AffinityError)) {
		t.Fatalf("pod needing both nodes under single-numa-node: %v", err)
	}
	f = &fakeProvider{allocated: map[string]Mask{}, podHints: Hints{"cpu": {h(true, 1), h(false, 0, 1)}}}
	if err := m.Admit(context.Background(), twoContainers(), f); err != nil {
		t.Fatal(err)
	}
	if want := map[string]Mask{"init": NewMask(1), "app": NewMask(1)}; !reflect.DeepEqual(f.allocated, want) {
		t.Fatalf("allocated %v, want %v", f.allocated, want)
	}
}
