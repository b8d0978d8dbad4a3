//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

const csiDriverName = "bosun.csi.example"

// A CSI driver (hack/csi-hostpath, run on node 1 as a driver's node plugin
// would be) registers through plugins_registry: the node's CSINode lists it
// with its node ID and topology key, and the Node carries its nodeid
// annotation and topology label. A pod with a claim bound to a static CSI
// PersistentVolume and an inline CSI volume runs with both: the persistent
// one staged once under plugins/kubernetes.io/csi and published per pod, the
// pod's information and a service account token in the inline one's volume
// context, the pod's fsGroup on the volume (fsGroupPolicy File). The agent
// restarts with the pod running and unpublishes nothing. When the pod goes,
// both are unpublished and the persistent one unstaged; what it wrote is
// there for the next pod, which mounts the claim read-only and finishes:
// its volumes go once it has finished, before its object does. While the
// first pod runs, the Summary API and /metrics report the volumes'
// statistics.
func TestCSIVolumes(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	node := env["NODE_NAME"]
	root := env["ROOT_DIR"]

	data := t.TempDir()
	driverLog := startCSIDriver(t, env, data)

	// Registration: CSINode, the nodeid annotation, the topology label.
	var lastNode string
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		cn, err := cs.StorageV1().CSINodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			lastNode = err.Error()
			return false, nil
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		lastNode = fmt.Sprintf("CSINode drivers %+v, owners %+v; Node annotation %q, label %q", cn.Spec.Drivers, cn.OwnerReferences,
			n.Annotations["csi.volume.kubernetes.io/nodeid"], n.Labels["topology.bosun.example/node"])
		for _, d := range cn.Spec.Drivers {
			if d.Name == csiDriverName && d.NodeID == node && strings.Join(d.TopologyKeys, ",") == "topology.bosun.example/node" &&
				d.Allocatable != nil && d.Allocatable.Count != nil && *d.Allocatable.Count == 9 &&
				strings.Contains(n.Annotations["csi.volume.kubernetes.io/nodeid"], `"`+csiDriverName+`":"`+node+`"`) &&
				n.Labels["topology.bosun.example/node"] == node && len(cn.OwnerReferences) == 1 && cn.OwnerReferences[0].UID == n.UID {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("the driver is not registered: %s; driver log: %s", lastNode, driverLog())
	}

	// A static PV pre-bound to a claim.
	handle := "vol-" + ns
	pvName := staticClaim(t, cs, ns, handle, "1Gi", corev1.PersistentVolumeFilesystem)

	csiPod := func(name, script string, readOnly bool) *corev1.Pod {
		p := busyboxPod(name, corev1.RestartPolicyNever, script)
		p.Spec.NodeName = node
		p.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr(int64(2345))}
		p.Spec.Volumes = []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data", ReadOnly: readOnly}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: csiDriverName, VolumeAttributes: map[string]string{"kind": "scratch"}}}},
		}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "scratch", MountPath: "/scratch"}}
		return p
	}
	create(t, cs, ns, csiPod("writer", "echo hello > /data/hello && echo tmp > /scratch/x && sleep 3600", false))
	writer := waitPod(t, cs, ns, "writer", 90*time.Second, "Running", running)
	if b, err := os.ReadFile(filepath.Join(data, "volumes", handle, "hello")); err != nil || string(b) != "hello\n" {
		t.Errorf("what the pod wrote is not in the driver's volume: %q %v", b, err)
	}
	if out := strings.TrimSpace(execIn(t, env, ns, "writer", "main", "stat -c %g /data /scratch")); out != "2345\n2345" {
		t.Errorf("the volumes' group is %q, want the pod's fsGroup 2345 on both", out)
	}
	staging := filepath.Join(root, "plugins", "kubernetes.io", "csi", csiDriverName, fmt.Sprintf("%x", sha256.Sum256([]byte(handle))), "globalmount")
	if !strings.Contains(driverLog(), `"staging":"`+staging+`"`) {
		t.Errorf("the volume was not staged at %s: driver log: %s", staging, driverLog())
	}
	target := filepath.Join(root, "pods", string(writer.UID), "volumes", "kubernetes.io~csi", pvName, "mount")
	if !strings.Contains(driverLog(), `"target":"`+target+`"`) {
		t.Errorf("the volume was not published at %s: driver log: %s", target, driverLog())
	}
	inline := fmt.Sprintf("csi-%x", sha256.Sum256([]byte(string(writer.UID)+"scratch")))
	var record struct {
		Context map[string]string `json:"context"`
	}
	if b, err := os.ReadFile(filepath.Join(data, "publish", inline+".json")); err != nil || json.Unmarshal(b, &record) != nil {
		t.Errorf("no publish record for the inline volume %s: %v", inline, err)
	}
	for k, want := range map[string]string{"kind": "scratch", "csi.storage.k8s.io/pod.name": "writer", "csi.storage.k8s.io/pod.namespace": ns,
		"csi.storage.k8s.io/pod.uid": string(writer.UID), "csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/serviceAccount.name": "default"} {
		if record.Context[k] != want {
			t.Errorf("inline volume context %s = %q, want %q", k, record.Context[k], want)
		}
	}
	if !strings.Contains(record.Context["csi.storage.k8s.io/serviceAccount.tokens"], `"bosun-csi-e2e":{"token":"`) {
		t.Errorf("no token for the CSIDriver's audience: %q", record.Context["csi.storage.k8s.io/serviceAccount.tokens"])
	}

	// The node reports the volume's statistics from the driver; the volume is
	// not in volumesInUse, which lists attachable volumes only (the CSIDriver
	// says attachRequired: false).
	inUse := corev1.UniqueVolumeName("kubernetes.io/csi/" + csiDriverName + "^" + handle)
	if n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil || slices.Contains(n.Status.VolumesInUse, inUse) {
		t.Errorf("node %s lists %s, which needs no attachment, in volumesInUse (%v)", node, inUse, err)
	}
	var volStats string
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		code, body := nodeAPI(t, env, "/stats/summary", "", env["ADMIN_CERT"], env["ADMIN_KEY"])
		if code != 200 {
			return false, nil
		}
		var sum statsapi.Summary
		if json.Unmarshal([]byte(body), &sum) != nil {
			return false, nil
		}
		for _, p := range sum.Pods {
			if p.PodRef.UID != string(writer.UID) {
				continue
			}
			b, _ := json.Marshal(p.VolumeStats)
			volStats = string(b)
			found := map[string]bool{}
			for _, v := range p.VolumeStats {
				switch {
				case v.Name == "data" && v.PVCRef != nil && v.PVCRef.Name == "data" && v.PVCRef.Namespace == ns && v.CapacityBytes != nil && *v.CapacityBytes > 0:
					found["data"] = true
				case v.Name == "scratch" && v.PVCRef == nil && v.UsedBytes != nil:
					found["scratch"] = true
				}
			}
			return found["data"] && found["scratch"], nil
		}
		return false, nil
	}); err != nil {
		t.Errorf("the Summary API has no statistics for the pod's CSI volumes: %s", volStats)
	}
	_, metricsBody := nodeAPI(t, env, "/metrics", "", env["ADMIN_CERT"], env["ADMIN_KEY"])
	if want := `kubelet_volume_stats_capacity_bytes{namespace="` + ns + `",persistentvolumeclaim="data"}`; !strings.Contains(metricsBody, want) {
		t.Errorf("/metrics has no %s", want)
	}

	// The agent restarts under the running pod: nothing is unpublished.
	restartAgent(t, env)
	time.Sleep(15 * time.Second)
	if strings.Contains(driverLog(), "NodeUnpublishVolume") {
		t.Errorf("the agent's restart unpublished a volume of a running pod: %s", driverLog())
	}
	if out := execIn(t, env, ns, "writer", "main", "cat /data/hello"); out != "hello\n" {
		t.Errorf("after the agent's restart the pod reads %q", out)
	}

	// The pod goes: both volumes unpublished, the persistent one unstaged.
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "writer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		l := driverLog()
		return strings.Count(l, `"call":"NodeUnpublishVolume"`) == 2 && strings.Contains(l, `"call":"NodeUnstageVolume"`), nil
	}); err != nil {
		t.Errorf("the pod's volumes were not unpublished and unstaged: %s", driverLog())
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := os.Stat(filepath.Dir(staging))
		return os.IsNotExist(err), nil
	}); err != nil {
		t.Errorf("the staging folder %s is left", filepath.Dir(staging))
	}
	if _, err := os.Stat(filepath.Join(data, "volumes", inline)); !os.IsNotExist(err) {
		t.Errorf("the inline volume outlived its pod: %v", err)
	}

	// The next pod reads what the first wrote, through a read-only claim,
	// and finishes. As upstream, its volumes are unpublished and unstaged
	// once it has finished, while its object stays (a Job's pods), and its
	// log stays readable.
	create(t, cs, ns, csiPod("reader", "cat /data/hello; touch /data/nope 2>/dev/null && echo writable || echo read-only", true))
	reader := waitPod(t, cs, ns, "reader", 90*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if out, err := env.kubectl(ctx, "", "-n", ns, "logs", "reader"); err != nil || out != "hello\nread-only\n" {
		t.Errorf("the second pod saw %q (%v), want the first pod's file on a read-only volume", out, err)
	}
	if !strings.Contains(driverLog(), `"target":"`+filepath.Join(root, "pods", string(reader.UID), "volumes", "kubernetes.io~csi", pvName, "mount")+`"`) {
		t.Errorf("the reader's volume was not published: %s", driverLog())
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		return strings.Count(driverLog(), `"call":"NodeUnstageVolume"`) == 2 && strings.Count(driverLog(), `"call":"NodeUnpublishVolume"`) == 4, nil
	}); err != nil {
		t.Errorf("the finished pod's volumes were not unpublished and unstaged: %s", driverLog())
	}
	if _, err := cs.CoreV1().Pods(ns).Get(ctx, "reader", metav1.GetOptions{}); err != nil {
		t.Errorf("the finished pod's object: %v", err)
	}
	if out, err := env.kubectl(ctx, "", "-n", ns, "logs", "reader"); err != nil || out != "hello\nread-only\n" {
		t.Errorf("after its volumes went, the finished pod's log is %q (%v)", out, err)
	}
}

// startCSIDriver makes the test driver's CSIDriver object and runs its node
// plugin, keeping volumes under data; it returns the plugin's log.
func startCSIDriver(t *testing.T, env clusterEnv, data string) func() string {
	t.Helper()
	cs := env.client(t)
	ctx := context.Background()
	drv := &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: csiDriverName}, Spec: storagev1.CSIDriverSpec{
		AttachRequired: ptr(false), PodInfoOnMount: ptr(true), FSGroupPolicy: ptr(storagev1.FileFSGroupPolicy),
		VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent, storagev1.VolumeLifecycleEphemeral},
		TokenRequests:        []storagev1.TokenRequest{{Audience: "bosun-csi-e2e"}},
	}}
	_ = cs.StorageV1().CSIDrivers().Delete(ctx, csiDriverName, metav1.DeleteOptions{})
	if _, err := cs.StorageV1().CSIDrivers().Create(ctx, drv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.StorageV1().CSIDrivers().Delete(context.Background(), csiDriverName, metav1.DeleteOptions{})
	})
	root := env["ROOT_DIR"]
	return startNodePlugin(t, "hack/csi-hostpath", "-name", csiDriverName, "-node", env["NODE_NAME"], "-data", data, "-max-volumes", "9",
		"-endpoint", filepath.Join(root, "plugins", csiDriverName, "csi.sock"), "-registry", filepath.Join(root, "plugins_registry"))
}

// staticClaim makes a PersistentVolume of the test driver with the given
// handle, size and volume mode, pre-bound to a claim "data" in ns, and
// waits for the claim to be bound; it returns the PV's name.
func staticClaim(t *testing.T, cs kubernetes.Interface, ns, handle, size string, mode corev1.PersistentVolumeMode) string {
	t.Helper()
	ctx := context.Background()
	pvName := "pv-" + ns
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName}, Spec: corev1.PersistentVolumeSpec{
		Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: "", VolumeMode: &mode,
		PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
		ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "data"},
		PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: csiDriverName, VolumeHandle: handle}},
	}}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr(""), VolumeName: pvName, VolumeMode: &mode,
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
	}}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		c, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
		return err == nil && c.Status.Phase == corev1.ClaimBound, nil
	}); err != nil {
		t.Fatalf("the claim is not bound: %v", err)
	}
	return pvName
}

// The controller's part of an online expansion done by hand (no external
// resizer runs here): the PersistentVolume grows to 2Gi and the claim's
// status says the node's part is pending. The agent has the driver grow the
// published volume (NodeExpandVolume with the pod's publish path and the
// staging path), records FileSystemResizeSuccessful on the pod and the
// claim, and sets the claim's capacity, clearing the resize status and
// condition, while the pod runs on.
func TestCSIVolumeExpansion(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	root := env["ROOT_DIR"]
	driverLog := startCSIDriver(t, env, t.TempDir())
	handle := "grow-" + ns
	pvName := staticClaim(t, cs, ns, handle, "1Gi", corev1.PersistentVolumeFilesystem)
	pod := busyboxPod("user", corev1.RestartPolicyNever, "sleep 3600")
	pod.Spec.NodeName = env["NODE_NAME"]
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	create(t, cs, ns, pod)
	user := waitPod(t, cs, ns, "user", 90*time.Second, "Running", running)

	pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("2Gi")
	if _, err := cs.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pvc.Status.AllocatedResources = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("2Gi")}
	pvc.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: corev1.PersistentVolumeClaimNodeResizePending}
	pvc.Status.Conditions = []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimFileSystemResizePending, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.Now(), Message: "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	var last string
	if err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 180*time.Second, true, func(ctx context.Context) (bool, error) {
		c, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		capacity := c.Status.Capacity[corev1.ResourceStorage]
		last = fmt.Sprintf("capacity %s, resize statuses %v, conditions %+v", capacity.String(), c.Status.AllocatedResourceStatuses, c.Status.Conditions)
		return capacity.String() == "2Gi" && len(c.Status.AllocatedResourceStatuses) == 0 && len(c.Status.Conditions) == 0, nil
	}); err != nil {
		t.Fatalf("the claim's expansion did not finish: %s; driver log: %s", last, driverLog())
	}
	var req struct {
		Req struct {
			VolumeID          string `json:"volume_id"`
			VolumePath        string `json:"volume_path"`
			StagingTargetPath string `json:"staging_target_path"`
			CapacityRange     struct {
				RequiredBytes int64 `json:"required_bytes"`
			} `json:"capacity_range"`
		} `json:"req"`
	}
	for _, line := range strings.Split(driverLog(), "\n") {
		if strings.Contains(line, `"call":"NodeExpandVolume"`) {
			_ = json.Unmarshal([]byte(line), &req)
		}
	}
	target := filepath.Join(root, "pods", string(user.UID), "volumes", "kubernetes.io~csi", pvName, "mount")
	staging := filepath.Join(root, "plugins", "kubernetes.io", "csi", csiDriverName, fmt.Sprintf("%x", sha256.Sum256([]byte(handle))), "globalmount")
	if req.Req.VolumeID != handle || req.Req.VolumePath != target || req.Req.StagingTargetPath != staging || req.Req.CapacityRange.RequiredBytes != 2<<30 {
		t.Errorf("NodeExpandVolume %+v, want volume %s at %s staged at %s to 2Gi", req.Req, handle, target, staging)
	}
	for _, name := range []string{"user", "data"} {
		if e := firstEvent(t, cs, ns, name, "FileSystemResizeSuccessful"); e == nil || e.Message != fmt.Sprintf("MountVolume.NodeExpandVolume succeeded for volume %q %s", pvName, env["NODE_NAME"]) {
			t.Errorf("%s's FileSystemResizeSuccessful event: %+v", name, e)
		}
	}
	if out := execIn(t, env, ns, "user", "main", "touch /data/after && echo ok"); out != "ok\n" {
		t.Errorf("the pod after the expansion: %q", out)
	}
}

// A raw block volume (volumeMode: Block) of the test driver, which
// publishes a loop device over the volume's file: the pod's container gets
// it as a block device at its devicePath and writes through it into the
// volume; the agent stages and publishes it in upstream's volumeDevices
// layout and links it under the pod's folder; when the pod goes, it is
// unpublished, unstaged and its links removed, and the driver's loop device
// is gone.
func TestCSIBlockVolume(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	root := env["ROOT_DIR"]
	data := t.TempDir()
	driverLog := startCSIDriver(t, env, data)
	handle := "blk-" + ns
	pvName := staticClaim(t, cs, ns, handle, "16Mi", corev1.PersistentVolumeBlock)

	p := busyboxPod("raw", corev1.RestartPolicyNever, "sleep 3600")
	p.Spec.NodeName = env["NODE_NAME"]
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
	p.Spec.Containers[0].VolumeDevices = []corev1.VolumeDevice{{Name: "data", DevicePath: "/dev/xvda"}}
	create(t, cs, ns, p)
	pod := waitPod(t, cs, ns, "raw", 120*time.Second, "Running", running)
	if out := strings.TrimSpace(execIn(t, env, ns, "raw", "main", "test -b /dev/xvda && printf hello-block > /dev/xvda && sync && head -c 11 /dev/xvda")); out != "hello-block" {
		t.Errorf("the container's block device: %q, want a block device reading back hello-block", out)
	}
	img := filepath.Join(data, "volumes", handle, "block.img")
	if b, err := os.ReadFile(img); err != nil || !strings.HasPrefix(string(b), "hello-block") {
		t.Errorf("what the pod wrote is not in the volume's file %s: %v", img, err)
	}
	devices := filepath.Join(root, "plugins", "kubernetes.io", "csi", "volumeDevices")
	publish := filepath.Join(devices, "publish", pvName, string(pod.UID))
	link := filepath.Join(root, "pods", string(pod.UID), "volumeDevices", "kubernetes.io~csi", pvName)
	if target, err := os.Readlink(link); err != nil || target != publish {
		t.Errorf("the pod's device link %s points to %q (%v), want %s", link, target, err, publish)
	}
	if !strings.Contains(driverLog(), `"staging":"`+filepath.Join(devices, "staging", pvName)+`"`) {
		t.Errorf("the volume was not staged at upstream's block staging path: driver log: %s", driverLog())
	}
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "raw", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "the block volume torn down", func() error {
		if _, err := os.Lstat(link); !os.IsNotExist(err) {
			return fmt.Errorf("the pod's link is still there: %v", err)
		}
		if _, err := os.Stat(filepath.Join(devices, pvName)); !os.IsNotExist(err) {
			return fmt.Errorf("the volume's folder is still there: %v", err)
		}
		if !strings.Contains(driverLog(), "NodeUnstageVolume") {
			return fmt.Errorf("not unstaged yet")
		}
		return nil
	})
	if out, _ := exec.Command("losetup", "-j", img).Output(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("the driver's loop device is left: %s", out)
	}
}
