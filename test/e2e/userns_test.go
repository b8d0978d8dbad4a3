//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Pods with hostUsers: false run in their own user namespace: root in the
// pod is a range of 65536 host IDs, a multiple of 65536 and never 0, kept in
// upstream's <root-dir>/pods/<uid>/userns file; two pods get two ranges. The
// pod's volumes are mapped as it is: what its root writes to an emptyDir is
// the host's root's, and a configMap the host's root owns is its root's. The
// agent restarts under the pod and the range stays.
func TestUserNamespaces(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	node, err := cs.CoreV1().Nodes().Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	supported := false
	for _, h := range node.Status.RuntimeHandlers {
		if h.Name == "" && h.Features != nil && h.Features.UserNamespaces != nil && *h.Features.UserNamespaces {
			supported = true
		}
	}
	if !supported {
		t.Skipf("the node's runtime does not support user namespaces (%+v)", node.Status.RuntimeHandlers)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"key": "value"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	no := false
	userPod := func(name string) *corev1.Pod {
		p := busyboxPod(name, corev1.RestartPolicyNever, "echo hello > /data/file; sleep 3600")
		p.Spec.NodeName = env["NODE_NAME"]
		p.Spec.HostUsers = &no
		p.Spec.Volumes = []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "cfg", MountPath: "/cfg"}}
		return p
	}
	mapRE := regexp.MustCompile(`^\s*0\s+(\d+)\s+65536\s*$`)
	hostID := func(name string) (uint64, string) {
		out := execIn(t, env, ns, name, "main", "cat /proc/self/uid_map")
		m := mapRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s's uid_map is %q, want one range of 65536 from 0", name, out)
		}
		if g := execIn(t, env, ns, name, "main", "cat /proc/self/gid_map"); g != out {
			t.Errorf("%s's gid_map %q differs from its uid_map %q", name, g, out)
		}
		id, _ := strconv.ParseUint(m[1], 10, 32)
		return id, out
	}
	create(t, cs, ns, userPod("first"))
	create(t, cs, ns, userPod("second"))
	first := waitPod(t, cs, ns, "first", 90*time.Second, "Running", running)
	waitPod(t, cs, ns, "second", 90*time.Second, "Running", running)
	a, mapA := hostID("first")
	b, _ := hostID("second")
	if a == 0 || a%65536 != 0 || b == 0 || b%65536 != 0 || a == b {
		t.Errorf("host ranges %d and %d: want two different non-zero multiples of 65536", a, b)
	}

	// Upstream's file, which either agent reads.
	data, err := os.ReadFile(filepath.Join(env["ROOT_DIR"], "pods", string(first.UID), "userns"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		UIDMappings []struct{ HostID, ContainerID, Length uint64 } `json:"uidMappings"`
		GIDMappings []struct{ HostID, ContainerID, Length uint64 } `json:"gidMappings"`
	}
	if err := json.Unmarshal(data, &file); err != nil || len(file.UIDMappings) != 1 || len(file.GIDMappings) != 1 ||
		file.UIDMappings[0].HostID != a || file.UIDMappings[0].Length != 65536 || file.GIDMappings[0] != file.UIDMappings[0] {
		t.Errorf("pods/%s/userns is %s (%v), want the pod's range %d", first.UID, data, err, a)
	}

	// The volumes are ID-mapped: root in the pod is root on them.
	if out := execIn(t, env, ns, "first", "main", "id -u; stat -c %u /data/file /cfg/key; cat /cfg/key"); out != "0\n0\n0\nvalue" {
		t.Errorf("in the pod: %q, want root owning its emptyDir file and the configMap", out)
	}
	st, err := os.Stat(filepath.Join(env["ROOT_DIR"], "pods", string(first.UID), "volumes", "kubernetes.io~empty-dir", "data", "file"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Errorf("the file the pod's root wrote is the host's uid %d, want 0 through the ID-mapped mount", uid)
	}

	restartAgent(t, env)
	time.Sleep(10 * time.Second)
	if _, again := hostID("first"); again != mapA {
		t.Errorf("after the agent's restart the pod's uid_map is %q, was %q", again, mapA)
	}
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, "first", metav1.GetOptions{}); err != nil || p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the pod after the agent's restart: %v %s", err, fmt.Sprint(p.Status.ContainerStatuses))
	}
}
