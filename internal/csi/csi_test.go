package csi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/bosun-dev/bosun/internal/mounts"
)

// fakeDriver is a CSI node service that records its calls and makes (and
// removes) the target folders, mounting nothing.
type fakeDriver struct {
	csipb.UnimplementedNodeServer
	mu      sync.Mutex
	calls   []string
	publish []*csipb.NodePublishVolumeRequest
	stage   bool
	group   bool
	expand  []*csipb.NodeExpandVolumeRequest
}

func (f *fakeDriver) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeDriver) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDriver) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	return &csipb.NodeGetInfoResponse{NodeId: "id-of-node", MaxVolumesPerNode: 7,
		AccessibleTopology: &csipb.Topology{Segments: map[string]string{"topology.example/zone": "z1"}}}, nil
}

func (f *fakeDriver) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	var caps []*csipb.NodeServiceCapability
	add := func(t csipb.NodeServiceCapability_RPC_Type) {
		caps = append(caps, &csipb.NodeServiceCapability{Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: t}}})
	}
	if f.stage {
		add(csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME)
	}
	if f.group {
		add(csipb.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP)
	}
	add(csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS)
	add(csipb.NodeServiceCapability_RPC_EXPAND_VOLUME)
	return &csipb.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (f *fakeDriver) NodeStageVolume(_ context.Context, r *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
	f.record("stage " + r.VolumeId + " " + r.StagingTargetPath)
	return &csipb.NodeStageVolumeResponse{}, nil
}

func (f *fakeDriver) NodeUnstageVolume(_ context.Context, r *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	f.record("unstage " + r.VolumeId)
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

func (f *fakeDriver) NodePublishVolume(_ context.Context, r *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	f.record("publish " + r.VolumeId + " " + r.TargetPath)
	f.mu.Lock()
	f.publish = append(f.publish, r)
	f.mu.Unlock()
	if r.VolumeCapability.GetBlock() != nil { // a device node, as a block driver's
		return &csipb.NodePublishVolumeResponse{}, unix.Mknod(r.TargetPath, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 250)))
	}
	return &csipb.NodePublishVolumeResponse{}, os.MkdirAll(r.TargetPath, 0o750)
}

func (f *fakeDriver) NodeGetVolumeStats(_ context.Context, r *csipb.NodeGetVolumeStatsRequest) (*csipb.NodeGetVolumeStatsResponse, error) {
	f.record("stats " + r.VolumeId + " " + r.VolumePath + " " + r.StagingTargetPath)
	return &csipb.NodeGetVolumeStatsResponse{Usage: []*csipb.VolumeUsage{
		{Unit: csipb.VolumeUsage_BYTES, Total: 100, Available: 60, Used: 40},
		{Unit: csipb.VolumeUsage_INODES, Total: 10, Available: 7, Used: 3},
	}}, nil
}

func (f *fakeDriver) NodeExpandVolume(_ context.Context, r *csipb.NodeExpandVolumeRequest) (*csipb.NodeExpandVolumeResponse, error) {
	f.record("expand " + r.VolumeId)
	f.mu.Lock()
	f.expand = append(f.expand, r)
	f.mu.Unlock()
	return &csipb.NodeExpandVolumeResponse{CapacityBytes: r.GetCapacityRange().GetRequiredBytes()}, nil
}

func (f *fakeDriver) NodeUnpublishVolume(_ context.Context, r *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	f.record("unpublish " + r.VolumeId)
	return &csipb.NodeUnpublishVolumeResponse{}, os.Remove(r.TargetPath)
}

const nodeName = "node-a"

func setup(t *testing.T, f *fakeDriver, objs ...metav1.Object) (*Manager, *fake.Clientset, string) {
	t.Helper()
	sock := filepath.Join(shortDir(t), "csi.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csipb.RegisterNodeServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, UID: "node-uid"}})
	for _, o := range objs {
		switch o := o.(type) {
		case *storagev1.CSIDriver:
			_, err = client.StorageV1().CSIDrivers().Create(context.Background(), o, metav1.CreateOptions{})
		case *storagev1.VolumeAttachment:
			_, err = client.StorageV1().VolumeAttachments().Create(context.Background(), o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	m, err := New(Config{Client: client, NodeName: nodeName, RootDir: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterPlugin(context.Background(), "drv.example", sock, []string{"1.0.0"}); err != nil {
		t.Fatal(err)
	}
	return m, client, root
}

// shortDir is a folder whose path fits in a unix socket address.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("/tmp", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func TestRegisterRecordsTheDriverInCSINodeAndNode(t *testing.T) {
	m, client, _ := setup(t, &fakeDriver{})
	ctx := context.Background()
	cn, err := client.StorageV1().CSINodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cn.OwnerReferences) != 1 || cn.OwnerReferences[0].UID != "node-uid" || cn.OwnerReferences[0].Kind != "Node" {
		t.Errorf("CSINode owner: %+v", cn.OwnerReferences)
	}
	if !strings.Contains(cn.Annotations[corev1.MigratedPluginsAnnotationKey], "kubernetes.io/gce-pd") {
		t.Errorf("CSINode annotations: %v", cn.Annotations)
	}
	if len(cn.Spec.Drivers) != 1 {
		t.Fatalf("drivers: %+v", cn.Spec.Drivers)
	}
	d := cn.Spec.Drivers[0]
	if d.Name != "drv.example" || d.NodeID != "id-of-node" || len(d.TopologyKeys) != 1 || d.TopologyKeys[0] != "topology.example/zone" ||
		d.Allocatable == nil || *d.Allocatable.Count != 7 {
		t.Errorf("driver entry: %+v", d)
	}
	node, _ := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if node.Annotations[NodeIDAnnotation] != `{"drv.example":"id-of-node"}` || node.Labels["topology.example/zone"] != "z1" {
		t.Errorf("node metadata: annotations %v labels %v", node.Annotations, node.Labels)
	}

	m.DeRegisterPlugin("drv.example", "")
	cn, _ = client.StorageV1().CSINodes().Get(ctx, nodeName, metav1.GetOptions{})
	node, _ = client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if len(cn.Spec.Drivers) != 0 || node.Annotations[NodeIDAnnotation] != "" {
		t.Errorf("after deregistration: drivers %+v, annotation %q", cn.Spec.Drivers, node.Annotations[NodeIDAnnotation])
	}
	if _, err := m.SetUp(ctx, pod("p1", nil), Volume{Name: "v", PV: csiPV("pv1", "h1")}); err == nil ||
		!strings.Contains(err.Error(), "driver name drv.example not found in the list of registered CSI drivers") {
		t.Errorf("SetUp with the driver gone: %v", err)
	}
}

func TestValidateRefusesVersionsOtherThan1(t *testing.T) {
	m := &Manager{}
	if err := m.ValidatePlugin("d", "", []string{"0.3.0", "2.0.0"}); err == nil {
		t.Error("CSI 0.3 and 2.0 were accepted")
	}
	if err := m.ValidatePlugin("d", "", []string{"0.3.0", "1.2.0"}); err != nil {
		t.Errorf("CSI 1.2 refused: %v", err)
	}
}

func pod(uid string, fsGroup *int64) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-" + uid, Namespace: "ns", UID: types.UID(uid)},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", SecurityContext: &corev1.PodSecurityContext{FSGroup: fsGroup}}}
}

func csiPV(name, handle string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "drv.example", VolumeHandle: handle}},
	}}
}

var noAttach = &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: "drv.example"}, Spec: storagev1.CSIDriverSpec{
	AttachRequired: ptr.To(false), PodInfoOnMount: ptr.To(true),
	VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent, storagev1.VolumeLifecycleEphemeral},
}}

// A persistent volume is staged once, published per pod in upstream's
// layout, and unstaged only when its last pod is torn down.
func TestStagePublishUnpublishUnstage(t *testing.T) {
	f := &fakeDriver{stage: true}
	m, _, root := setup(t, f, noAttach)
	ctx := context.Background()
	pv := csiPV("pv1", "h1")
	t1, err := m.SetUp(ctx, pod("u1", nil), Volume{Name: "data", PV: pv})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "pods/u1/volumes/kubernetes.io~csi/pv1/mount"); t1 != want {
		t.Errorf("target %s, want %s", t1, want)
	}
	var data map[string]string
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(t1), "vol_data.json"))
	if err != nil || json.Unmarshal(raw, &data) != nil {
		t.Fatalf("vol_data.json: %v %s", err, raw)
	}
	if data["specVolID"] != "pv1" || data["volumeHandle"] != "h1" || data["driverName"] != "drv.example" ||
		data["nodeName"] != nodeName || data["volumeLifecycleMode"] != "Persistent" || !strings.HasPrefix(data["attachmentID"], "csi-") {
		t.Errorf("vol_data.json: %v", data)
	}
	if _, err := m.SetUp(ctx, pod("u2", nil), Volume{Name: "data", PV: pv}); err != nil {
		t.Fatal(err)
	}
	if got := m.InUse(); len(got) != 1 || got[0] != "kubernetes.io/csi/drv.example^h1" {
		t.Errorf("in use before the CSIDriver watch has listed: %q", got)
	}
	if err := m.Init(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && !m.informerSynced(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if got := m.InUse(); got != nil {
		t.Errorf("in use although the CSIDriver says attachRequired: false: %q", got)
	}
	fs := m.VolumeStats(ctx, "u1", "pv1")
	if fs == nil || *fs.CapacityBytes != 100 || *fs.AvailableBytes != 60 || *fs.UsedBytes != 40 || *fs.Inodes != 10 || *fs.InodesFree != 7 || *fs.InodesUsed != 3 {
		t.Errorf("volume stats: %+v", fs)
	}
	if last := f.Calls()[len(f.Calls())-1]; last != "stats h1 "+t1+" "+m.stagingPath("drv.example", "h1") {
		t.Errorf("NodeGetVolumeStats asked as %q", last)
	}
	if fs := m.VolumeStats(ctx, "u9", "pv1"); fs != nil {
		t.Errorf("stats of a volume never published: %+v", fs)
	}
	f.mu.Lock()
	f.calls = f.calls[:len(f.calls)-1]
	f.mu.Unlock()
	if err := m.TearDown(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if got := f.Calls(); !strings.HasPrefix(got[0], "stage h1 ") || strings.Contains(strings.Join(got, ","), "unstage") {
		t.Errorf("calls after the first teardown: %q", got)
	}
	sum := sha256.Sum256([]byte("h1"))
	if got, want := f.Calls()[0], "stage h1 "+filepath.Join(root, "plugins/kubernetes.io/csi/drv.example", hex.EncodeToString(sum[:]), "globalmount"); got != want {
		t.Errorf("staged at %q", got)
	}
	if err := m.TearDown(ctx, "u2"); err != nil {
		t.Fatal(err)
	}
	if got := m.InUse(); got != nil {
		t.Errorf("in use after the last teardown: %q", got)
	}
	got := f.Calls()
	if got[len(got)-1] != "unstage h1" || got[len(got)-2] != "unpublish h1" {
		t.Errorf("calls: %q", got)
	}
	if _, err := os.Stat(filepath.Join(root, "pods/u1/volumes/kubernetes.io~csi")); !os.IsNotExist(err) {
		t.Errorf("the pod's csi folder is left: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(m.stagingPath("drv.example", "h1"))); !os.IsNotExist(err) {
		t.Errorf("the staging folder is left: %v", err)
	}
}

func TestInlineVolumeNeedsItsLifecycleModeAndGetsPodInfo(t *testing.T) {
	f := &fakeDriver{}
	m, client, _ := setup(t, f)
	ctx := context.Background()
	v := Volume{Name: "scratch", Inline: &corev1.CSIVolumeSource{Driver: "drv.example", VolumeAttributes: map[string]string{"size": "1"}}}
	_, err := m.SetUp(ctx, pod("u1", nil), v)
	if err == nil || err.Error() != `volume mode "Ephemeral" not supported by driver drv.example (no CSIDriver object)` {
		t.Errorf("inline volume without a CSIDriver: %v", err)
	}
	if _, err := client.StorageV1().CSIDrivers().Create(ctx, noAttach, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetUp(ctx, pod("u1", nil), v); err != nil {
		t.Fatal(err)
	}
	r := f.publish[0]
	if r.VolumeId != inlineHandle("u1", "scratch") || r.StagingTargetPath != "" {
		t.Errorf("publish: %+v", r)
	}
	want := map[string]string{"size": "1", "csi.storage.k8s.io/pod.name": "pod-u1", "csi.storage.k8s.io/pod.namespace": "ns",
		"csi.storage.k8s.io/pod.uid": "u1", "csi.storage.k8s.io/serviceAccount.name": "sa", "csi.storage.k8s.io/ephemeral": "true"}
	for k, val := range want {
		if r.VolumeContext[k] != val {
			t.Errorf("volume context %s = %q, want %q", k, r.VolumeContext[k], val)
		}
	}
}

func TestAttachRequiredWaitsForTheVolumeAttachment(t *testing.T) {
	f := &fakeDriver{}
	name := attachmentName("h1", "drv.example", nodeName)
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: name}}
	m, client, _ := setup(t, f, va)
	ctx := context.Background()
	_, err := m.SetUp(ctx, pod("u1", nil), Volume{Name: "d", PV: csiPV("pv1", "h1")})
	if err == nil || !strings.Contains(err.Error(), "is not attached to node node-a yet") {
		t.Errorf("SetUp before attachment: %v", err)
	}
	va.Status = storagev1.VolumeAttachmentStatus{Attached: true, AttachmentMetadata: map[string]string{"dev": "/dev/x"}}
	if _, err := client.StorageV1().VolumeAttachments().Update(ctx, va, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SetUp(ctx, pod("u1", nil), Volume{Name: "d", PV: csiPV("pv1", "h1")}); err != nil {
		t.Fatal(err)
	}
	if f.publish[0].PublishContext["dev"] != "/dev/x" {
		t.Errorf("publish context: %v", f.publish[0].PublishContext)
	}
	if err := m.Init(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && !m.informerSynced(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if got := m.InUse(); len(got) != 1 || got[0] != "kubernetes.io/csi/drv.example^h1" {
		t.Errorf("an attachable volume in use: %q", got)
	}
}

func TestMountGroupGoesToTheDriver(t *testing.T) {
	f := &fakeDriver{group: true}
	m, _, _ := setup(t, f, noAttach)
	if _, err := m.SetUp(context.Background(), pod("u1", ptr.To[int64](1234)), Volume{Name: "d", PV: csiPV("pv1", "h1")}); err != nil {
		t.Fatal(err)
	}
	if g := f.publish[0].VolumeCapability.GetMount().VolumeMountGroup; g != "1234" {
		t.Errorf("volume mount group %q", g)
	}
}

func TestSetOwnership(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	gid := int64(os.Getgid())
	if err := SetOwnership(dir, gid, nil, false); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{filepath.Join(dir, "sub"): 0o770 | os.ModeSetgid, filepath.Join(dir, "sub", "f"): 0o660} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode()&(os.ModePerm|os.ModeSetgid) != want || int64(info.Sys().(*syscall.Stat_t).Gid) != gid {
			t.Errorf("%s: mode %v gid %d", path, info.Mode(), info.Sys().(*syscall.Stat_t).Gid)
		}
	}
	if needsChange(dir, gid, 0o660) {
		t.Error("OnRootMismatch would change a root that matches")
	}
}

func TestApplyFSGroupFollowsThePolicy(t *testing.T) {
	g := ptr.To[int64](5)
	rwo := spec{mode: storagev1.VolumeLifecyclePersistent, fsType: "ext4", accessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}
	rwx := spec{mode: storagev1.VolumeLifecyclePersistent, fsType: "ext4", accessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}}
	withPolicy := func(p storagev1.FSGroupPolicy) *storagev1.CSIDriver {
		return &storagev1.CSIDriver{Spec: storagev1.CSIDriverSpec{FSGroupPolicy: &p}}
	}
	cases := []struct {
		name string
		obj  *storagev1.CSIDriver
		s    spec
		g    *int64
		want bool
	}{
		{"default, RWO with fsType", nil, rwo, g, true},
		{"default, RWX", nil, rwx, g, false},
		{"default, no fsType", nil, spec{mode: storagev1.VolumeLifecyclePersistent, accessModes: rwo.accessModes}, g, false},
		{"File, RWX", withPolicy(storagev1.FileFSGroupPolicy), rwx, g, true},
		{"None", withPolicy(storagev1.NoneFSGroupPolicy), rwo, g, false},
		{"no fsGroup", nil, rwo, nil, false},
		{"read-only", withPolicy(storagev1.FileFSGroupPolicy), spec{readOnly: true}, g, false},
	}
	for _, c := range cases {
		if got := applyFSGroup(c.obj, c.s, c.g); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// A raw block volume is staged and published in upstream's volumeDevices
// layout, mapped again per pod, linked for the pod's containers, and torn
// down in the reverse order, unstaged with its last pod.
func TestBlockVolumeMapAndUnmap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("maps devices with bind mounts: needs root")
	}
	f := &fakeDriver{stage: true}
	m, _, root := setup(t, f, noAttach)
	ctx := context.Background()
	pv := csiPV("pv-b", "hb")
	block := corev1.PersistentVolumeBlock
	pv.Spec.VolumeMode = &block
	link, err := m.SetUpBlock(ctx, pod("u1", nil), Volume{Name: "raw", PV: pv})
	if err != nil {
		t.Fatal(err)
	}
	devs := filepath.Join(root, "plugins/kubernetes.io/csi/volumeDevices")
	if want := filepath.Join(root, "pods/u1/volumeDevices/kubernetes.io~csi/pv-b"); link != want {
		t.Errorf("link %s, want %s", link, want)
	}
	if target, _ := os.Readlink(link); target != filepath.Join(devs, "publish/pv-b/u1") || !isDevice(link) {
		t.Errorf("link to %q (a device: %v)", target, isDevice(link))
	}
	if !mounts.IsMountPoint(filepath.Join(devs, "pv-b/dev/u1")) {
		t.Error("the device is not mapped under the volume's dev folder")
	}
	calls := f.Calls()
	if len(calls) != 2 || calls[0] != "stage hb "+filepath.Join(devs, "staging/pv-b") || calls[1] != "publish hb "+filepath.Join(devs, "publish/pv-b/u1") {
		t.Errorf("calls %q", calls)
	}
	if r := f.publish[0]; r.VolumeCapability.GetBlock() == nil || r.StagingTargetPath != filepath.Join(devs, "staging/pv-b") {
		t.Errorf("publish request %v", r)
	}
	if again, err := m.SetUpBlock(ctx, pod("u1", nil), Volume{Name: "raw", PV: pv}); err != nil || again != link || len(f.Calls()) != 2 {
		t.Errorf("a second set-up: %s %v, calls %q", again, err, f.Calls())
	}
	// Growing a block volume names its per-pod publish path and its block
	// staging path, with a block capability, as upstream's block mapper.
	if err := m.Expand(ctx, "u1", pv, resource.MustParse("2Gi")); err != nil {
		t.Fatal(err)
	}
	if r := f.expand[0]; r.VolumePath != filepath.Join(devs, "publish/pv-b/u1") || r.StagingTargetPath != filepath.Join(devs, "staging/pv-b") ||
		r.VolumeCapability.GetBlock() == nil || r.CapacityRange.GetRequiredBytes() != 2<<30 {
		t.Errorf("expand request %v", r)
	}
	if err := m.Expand(ctx, "u2", pv, resource.MustParse("2Gi")); err == nil {
		t.Error("a pod the volume is not published for was expanded")
	}
	if err := m.TearDown(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if got := f.Calls(); len(got) != 5 || got[3] != "unpublish hb" || got[4] != "unstage hb" {
		t.Errorf("calls after the teardown: %q", got)
	}
	for _, p := range []string{link, filepath.Join(devs, "pv-b"), filepath.Join(devs, "publish/pv-b"), filepath.Join(root, "pods/u1/volumeDevices")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is left: %v", p, err)
		}
	}
}

// One volume's operations take turns; once none holds or waits for its
// lock, the lock is forgotten (the node's volumes come and go).
func TestVolumeLockTakesTurnsAndIsForgotten(t *testing.T) {
	m := &Manager{vols: map[string]*volumeLock{}}
	unlock := m.lockVolume("d", "v")
	got, done := make(chan struct{}), make(chan struct{})
	go func() {
		release := m.lockVolume("d", "v")
		close(got)
		release()
		close(done)
	}()
	select {
	case <-got:
		t.Fatal("a second operation on the volume ran while the first held it")
	case <-time.After(50 * time.Millisecond):
	}
	other := m.lockVolume("d", "w") // another volume does not wait
	other()
	unlock()
	<-done
	m.volMu.Lock()
	defer m.volMu.Unlock()
	if len(m.vols) != 0 {
		t.Errorf("%d volume locks kept after every operation ended", len(m.vols))
	}
}
