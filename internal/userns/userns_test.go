package userns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func pod(uid string, hostUsers *bool) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid)}, Spec: corev1.PodSpec{HostUsers: hostUsers}}
}

func defaultRange(ids uint32) (uint32, uint32, error) {
	return ids, uint32((1 << 32) - uint64(ids)), nil
}

// Pods with hostUsers: false get distinct ranges, written in upstream's
// file and format; a new manager (the agent restarted) keeps them and hands
// out others; a released range goes to the next pod.
func TestRangesArePerPodAndSurviveRestarts(t *testing.T) {
	root := t.TempDir()
	no := false
	m, err := New(Config{RootDir: root, MaxPods: 110, Range: defaultRange})
	if err != nil {
		t.Fatal(err)
	}
	if ns, err := m.Namespace(pod("host", nil)); err != nil || ns.Mode != runtimeapi.NamespaceMode_NODE || ns.Uids != nil {
		t.Fatalf("a pod without hostUsers: %v %v, want the node's namespace", ns, err)
	}
	a, err := m.Namespace(pod("a", &no))
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Namespace(pod("b", &no))
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode != runtimeapi.NamespaceMode_POD || a.Uids[0].HostId != 65536 || a.Uids[0].Length != 65536 || a.Uids[0].ContainerId != 0 ||
		b.Uids[0].HostId != 2*65536 || a.Gids[0].HostId != a.Uids[0].HostId {
		t.Fatalf("ranges a=%v b=%v, want 65536+65536 and 131072+65536, UIDs and GIDs alike", a, b)
	}
	data, err := os.ReadFile(filepath.Join(root, "pods", "a", "userns"))
	if want := `{"uidMappings":[{"hostId":65536,"containerId":0,"length":65536}],"gidMappings":[{"hostId":65536,"containerId":0,"length":65536}]}`; err != nil || string(data) != want {
		t.Fatalf("pods/a/userns = %s (%v), want %s", data, err, want)
	}
	again, _ := m.Namespace(pod("a", &no))
	if again.Uids[0].HostId != 65536 {
		t.Errorf("a's range moved to %d", again.Uids[0].HostId)
	}

	m2, err := New(Config{RootDir: root, MaxPods: 110, Range: defaultRange})
	if err != nil {
		t.Fatal(err)
	}
	if kept, _ := m2.Namespace(pod("b", &no)); kept.Uids[0].HostId != 2*65536 {
		t.Errorf("after a restart b's range is %d", kept.Uids[0].HostId)
	}
	if c, _ := m2.Namespace(pod("c", &no)); c.Uids[0].HostId != 3*65536 {
		t.Errorf("after a restart c got %d, a range taken or skipped", c.Uids[0].HostId)
	}
	m2.Release("a")
	if _, err := os.Stat(filepath.Join(root, "pods", "a", "userns")); !os.IsNotExist(err) {
		t.Errorf("a's file after its release: %v", err)
	}
	if d, _ := m2.Namespace(pod("d", &no)); d.Uids[0].HostId != 65536 {
		t.Errorf("d got %d, want a's released range", d.Uids[0].HostId)
	}
}

func TestRefusals(t *testing.T) {
	no := false
	root := t.TempDir()
	unsupported, err := New(Config{RootDir: root, MaxPods: 110, Range: defaultRange,
		Supports: func(*corev1.Pod) (bool, string, error) { return false, "kata", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unsupported.Namespace(pod("a", &no)); err == nil || err.Error() != "can't set `spec.hostUsers: false`, RuntimeClass handler \"kata\" does not support user namespaces" {
		t.Errorf("a handler without user namespaces: %v", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{IDsPerPod: 1000}, "not a multiple of 65536"},
		{Config{Range: func(uint32) (uint32, uint32, error) { return 0, 1 << 20, nil }}, "must be at least 65536"},
		{Config{MaxPods: 110, Range: func(uint32) (uint32, uint32, error) { return 65536, 10 * 65536, nil }}, "not enough for maxPods 110"},
	} {
		tc.cfg.RootDir = root
		if tc.cfg.Range == nil {
			tc.cfg.Range = defaultRange
		}
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	// A file that is not upstream's, or a range two pods claim, stops the
	// start rather than handing a range out twice.
	bad := t.TempDir()
	for uid, body := range map[string]string{
		"x": `{"uidMappings":[{"hostId":65536,"containerId":0,"length":65536}],"gidMappings":[{"hostId":65536,"containerId":0,"length":65536}]}`,
		"y": `{"uidMappings":[{"hostId":65536,"containerId":0,"length":65536}],"gidMappings":[{"hostId":65536,"containerId":0,"length":65536}]}`,
	} {
		if err := os.MkdirAll(filepath.Join(bad, "pods", uid), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bad, "pods", uid, "userns"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Config{RootDir: bad, MaxPods: 110, Range: defaultRange}); err == nil || !strings.Contains(err.Error(), "already pod") {
		t.Errorf("two pods with one range: %v", err)
	}
}

func TestParseSubIDs(t *testing.T) {
	first, n, err := parseSubIDs("0: kubelet 65536 2147483648\n")
	if err != nil || first != 65536 || n != 2147483648 {
		t.Errorf("%d %d %v", first, n, err)
	}
	if _, _, err := parseSubIDs("0: kubelet 65536 1\n1: kubelet 9 9\n"); err == nil {
		t.Error("two ranges accepted")
	}
}
