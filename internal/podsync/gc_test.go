package podsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	apitest "k8s.io/cri-api/pkg/apis/testing"

	"github.com/bosun-dev/bosun/internal/volumes"
)

var gcNow = time.Unix(10_000, 0)

func deadCtr(id, uid, name, sandbox string, state runtimeapi.ContainerState, ageSeconds int64) *apitest.FakeContainer {
	return &apitest.FakeContainer{SandboxID: sandbox, ContainerStatus: runtimeapi.ContainerStatus{
		Id: id, State: state, CreatedAt: gcNow.Add(-time.Duration(ageSeconds) * time.Second).UnixNano(),
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Labels:   map[string]string{labelPodUID: uid, labelContainerName: name, labelPodName: "p-" + uid, labelPodNamespace: "ns"},
	}}
}

func fakeSandbox(id, uid string, state runtimeapi.PodSandboxState, ageSeconds int64) *apitest.FakePodSandbox {
	return &apitest.FakePodSandbox{PodSandboxStatus: runtimeapi.PodSandboxStatus{
		Id: id, State: state, CreatedAt: gcNow.Add(-time.Duration(ageSeconds) * time.Second).UnixNano(),
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p-" + uid, Namespace: "ns", Uid: uid},
		Labels:   map[string]string{labelPodUID: uid},
	}}
}

func asContainers(fs []*apitest.FakeContainer) []*runtimeapi.Container {
	var out []*runtimeapi.Container
	for _, f := range fs {
		out = append(out, &runtimeapi.Container{Id: f.Id, PodSandboxId: f.SandboxID, State: f.State, CreatedAt: f.CreatedAt, Labels: f.Labels, Metadata: f.Metadata})
	}
	return out
}

func TestDeadToRemove(t *testing.T) {
	exited, running, created := runtimeapi.ContainerState_CONTAINER_EXITED, runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerState_CONTAINER_CREATED
	ctrs := asContainers([]*apitest.FakeContainer{
		deadCtr("a-run", "a", "app", "sa", running, 10),
		deadCtr("a-1", "a", "app", "sa", exited, 20),
		deadCtr("a-2", "a", "app", "sa", exited, 30),
		deadCtr("a-3", "a", "app", "sa", exited, 40),
		deadCtr("a-init", "a", "init", "sa", exited, 50), // the only instance: kept
		deadCtr("b-1", "b", "app", "sb", created, 5),
		deadCtr("b-2", "b", "app", "sb", exited, 100),
		deadCtr("gone-1", "gone", "app", "sg", exited, 100), // unknown pod: the orphan cleanup's
		deadCtr("gone-2", "gone", "app", "sg", exited, 200),
	})
	known := func(uid string) bool { return uid != "gone" }
	for _, tc := range []struct {
		policy GCPolicy
		want   []string
	}{
		{GCPolicy{MaxPerPodContainer: 1}, []string{"a-2", "a-3", "b-2"}},
		{GCPolicy{MaxPerPodContainer: 0}, []string{"a-2", "a-3", "b-2"}}, // never fewer than one
		{GCPolicy{MaxPerPodContainer: 2}, []string{"a-3"}},
		{GCPolicy{MaxPerPodContainer: 1, MinAge: 25 * time.Second}, []string{"a-3"}}, // younger ones are not counted
	} {
		got := deadToRemove(ctrs, known, tc.policy, gcNow)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%+v: removes %v, want %v", tc.policy, got, tc.want)
		}
	}
}

func TestCollectGarbageRemovesContainersLogsAndOldSandboxes(t *testing.T) {
	dir := t.TempDir()
	rt := apitest.NewFakeRuntimeService()
	ctrs := []*apitest.FakeContainer{
		deadCtr("new", "a", "app", "sb-new", runtimeapi.ContainerState_CONTAINER_EXITED, 10),
		deadCtr("old", "a", "app", "sb-old", runtimeapi.ContainerState_CONTAINER_EXITED, 100),
	}
	logs := map[string]string{}
	for _, c := range ctrs {
		c.LogPath = filepath.Join(dir, c.Id+".log")
		logs[c.Id] = c.LogPath
		if err := os.WriteFile(c.LogPath, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.WriteFile(logs["old"]+".20261123-000000", []byte("rotated"), 0o600)
	rt.SetFakeContainers(ctrs)
	rt.SetFakeSandboxes([]*apitest.FakePodSandbox{
		fakeSandbox("sb-new", "a", runtimeapi.PodSandboxState_SANDBOX_READY, 20),
		fakeSandbox("sb-old", "a", runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 200),
		fakeSandbox("sb-older", "a", runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 300),
		fakeSandbox("sb-gone", "gone", runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 300),
	})
	links := filepath.Join(dir, "containers")
	s := &Syncer{cfg: SyncerConfig{Runtime: rt, Node: NodeSettings{ContainerLogsDir: links}}}
	s.linkContainerLog("p-a", "ns", "app", "old", logs["old"])
	if err := s.CollectGarbage(context.Background(), GCPolicy{MaxPerPodContainer: 1}, func(uid string) bool { return uid == "a" }); err != nil {
		t.Fatal(err)
	}
	var left []string
	for id := range rt.Containers {
		left = append(left, id)
	}
	if !slices.Equal(left, []string{"new"}) {
		t.Errorf("containers left: %v", left)
	}
	var sbs []string
	for id := range rt.Sandboxes {
		sbs = append(sbs, id)
	}
	slices.Sort(sbs)
	// sb-old lost its last container in this pass; sb-gone is the orphan cleanup's.
	if !slices.Equal(sbs, []string{"sb-gone", "sb-new"}) {
		t.Errorf("sandboxes left: %v", sbs)
	}
	if _, err := os.Stat(logs["new"]); err != nil {
		t.Errorf("the kept container's log: %v", err)
	}
	rest, _ := filepath.Glob(logs["old"] + "*")
	entries, _ := os.ReadDir(links)
	if len(rest) != 0 || len(entries) != 0 {
		t.Errorf("left behind: logs %v, links %d", rest, len(entries))
	}
}

func TestLegacyLogSymlinkFitsAName(t *testing.T) {
	id := strings.Repeat("c", 64)
	short := legacyLogSymlink("/var/log/containers", "web", "default", "nginx", id)
	if short != "/var/log/containers/web_default_nginx-"+id+".log" {
		t.Errorf("symlink %s", short)
	}
	long := legacyLogSymlink("/d", strings.Repeat("p", 253), "ns", "c", id)
	if base := filepath.Base(long); len(base) != 255 || !strings.HasSuffix(base, "-"+id+".log") {
		t.Errorf("long name %d bytes: %s", len(base), base)
	}
}

type fakeVolumes struct{ torn []string }

func (f *fakeVolumes) Setup(context.Context, *corev1.Pod) (map[string]volumes.Volume, error) {
	return nil, nil
}
func (f *fakeVolumes) Teardown(pod *corev1.Pod) error {
	f.torn = append(f.torn, string(pod.UID))
	return nil
}

func TestOrphanedPodFoldersAreRemoved(t *testing.T) {
	root, logs := t.TempDir(), t.TempDir()
	for _, uid := range []string{"known", "orphan", "with-sandbox"} {
		if err := os.MkdirAll(filepath.Join(root, "pods", uid, "volumes"), 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.MkdirAll(filepath.Join(logs, "ns_p_"+uid, "c"), 0o755)
	}
	rt := apitest.NewFakeRuntimeService()
	rt.SetFakeSandboxes([]*apitest.FakePodSandbox{fakeSandbox("sb", "with-sandbox", runtimeapi.PodSandboxState_SANDBOX_READY, 10)})
	vols := &fakeVolumes{}
	s := &Syncer{cfg: SyncerConfig{Runtime: rt, Volumes: vols, Node: NodeSettings{RootDir: root, PodLogsDir: logs}}, backoff: NewBackoff()}
	if err := s.CollectGarbage(context.Background(), GCPolicy{MaxPerPodContainer: 1}, func(uid string) bool { return uid == "known" }); err != nil {
		t.Fatal(err)
	}
	for uid, want := range map[string]bool{"known": true, "orphan": false, "with-sandbox": true} {
		_, err := os.Stat(filepath.Join(root, "pods", uid))
		_, lerr := os.Stat(filepath.Join(logs, "ns_p_"+uid))
		if (err == nil) != want || (lerr == nil) != want {
			t.Errorf("pod %s: folder kept=%v, logs kept=%v, want %v", uid, err == nil, lerr == nil, want)
		}
	}
	if !slices.Equal(vols.torn, []string{"orphan"}) {
		t.Errorf("volumes torn down for %v", vols.torn)
	}
}

// strictRuntime refuses, as containerd does, to remove a running container.
type strictRuntime struct{ *apitest.FakeRuntimeService }

func (r strictRuntime) RemoveContainer(ctx context.Context, id string) error {
	st, err := r.FakeRuntimeService.ContainerStatus(ctx, id, false)
	if err == nil && st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("cannot delete running task %s: failed precondition", id)
	}
	return r.FakeRuntimeService.RemoveContainer(ctx, id)
}

// A container whose start was still in flight when its pod was killed runs
// after the kill; removing the pod stops it and removes it, instead of
// failing on it at every retry (the crash loop saw such pods never go).
func TestRemoveStopsAContainerStartedAfterTheKill(t *testing.T) {
	rt := apitest.NewFakeRuntimeService()
	rt.SetFakeSandboxes([]*apitest.FakePodSandbox{fakeSandbox("sb", "late", runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 10)})
	rt.SetFakeContainers([]*apitest.FakeContainer{
		deadCtr("started-late", "late", "app", "sb", runtimeapi.ContainerState_CONTAINER_RUNNING, 5),
		deadCtr("exited", "late", "init", "sb", runtimeapi.ContainerState_CONTAINER_EXITED, 8),
	})
	s := &Syncer{cfg: SyncerConfig{Runtime: strictRuntime{rt}, Volumes: &fakeVolumes{}, Node: NodeSettings{RootDir: t.TempDir()}}, backoff: NewBackoff()}
	pod := &corev1.Pod{}
	pod.UID = "late"
	if err := s.Remove(context.Background(), pod); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if len(rt.Containers) != 0 || len(rt.Sandboxes) != 0 {
		t.Errorf("left: %d containers, %d sandboxes", len(rt.Containers), len(rt.Sandboxes))
	}
}
