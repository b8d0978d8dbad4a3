package podsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// ContainerLogsDir holds the legacy per-container log symlinks that log
// shippers read (/var/log/containers/<pod>_<ns>_<container>-<id>.log).
const ContainerLogsDir = "/var/log/containers"

// legacyLogSymlink is the /var/log/containers name of a container's log,
// shortened as upstream does so that the name fits in 255 bytes.
func legacyLogSymlink(dir, podName, namespace, container, id string) string {
	prefix := fmt.Sprintf("%s_%s_%s", podName, namespace, container)
	suffix := "-" + id + ".log"
	if over := len(prefix) + len(suffix) - 255; over > 0 && over < len(prefix) {
		prefix = prefix[:len(prefix)-over]
	}
	return filepath.Join(dir, prefix+suffix)
}

// linkContainerLog points the legacy symlink at a started container's log.
func (s *Syncer) linkContainerLog(podName, namespace, container, id, logPath string) {
	if s.cfg.Node.ContainerLogsDir == "" || logPath == "" {
		return
	}
	if err := os.MkdirAll(s.cfg.Node.ContainerLogsDir, 0o755); err != nil {
		return
	}
	link := legacyLogSymlink(s.cfg.Node.ContainerLogsDir, podName, namespace, container, id)
	_ = os.Remove(link)
	if err := os.Symlink(logPath, link); err != nil {
		klog.Background().V(2).Info("Could not link the container log", "link", link, "err", err)
	}
}

// removeContainer removes a container, its log files and its legacy link.
// st is the container's status when the caller has it (nil: asked here).
func (s *Syncer) removeContainer(ctx context.Context, id string, st *runtimeapi.ContainerStatus) error {
	if st == nil {
		if resp, err := s.cfg.Runtime.ContainerStatus(ctx, id, false); err == nil {
			st = resp.GetStatus()
		}
	}
	logPath, md, labels := st.GetLogPath(), st.GetMetadata(), st.GetLabels()
	if err := s.cfg.Runtime.RemoveContainer(ctx, id); err != nil {
		return err
	}
	if logPath != "" {
		_ = os.Remove(logPath)
		rotated, _ := filepath.Glob(logPath + ".*")
		for _, f := range rotated {
			_ = os.Remove(f)
		}
	}
	if s.cfg.Node.ContainerLogsDir != "" && md != nil {
		_ = os.Remove(legacyLogSymlink(s.cfg.Node.ContainerLogsDir, labels[labelPodName], labels[labelPodNamespace], md.Name, id))
	}
	return nil
}

// GCPolicy is how many dead containers to keep.
type GCPolicy struct {
	MinAge             time.Duration // a dead container younger than this stays
	MaxPerPodContainer int           // dead instances kept per pod and container name (at least 1)
}

// deadToRemove picks the dead containers (exited, or created and never
// started) of known pods beyond the policy: per pod and container name the
// newest MaxPerPodContainer stay (never fewer than one, since the pod's
// status — restart count, last state, init completion — reads it), as do
// any younger than MinAge. Pods known does not report are left to the
// orphan cleanup, which removes them whole.
func deadToRemove(ctrs []*runtimeapi.Container, known func(uid string) bool, p GCPolicy, now time.Time) []string {
	keep := max(p.MaxPerPodContainer, 1)
	groups := map[string][]*runtimeapi.Container{}
	var out []string
	for _, c := range ctrs {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING || c.State == runtimeapi.ContainerState_CONTAINER_UNKNOWN {
			continue
		}
		uid := c.Labels[labelPodUID]
		if uid == "" || c.Labels[labelContainerName] == "" || !known(uid) || now.Sub(time.Unix(0, c.CreatedAt)) < p.MinAge {
			continue
		}
		key := uid + "/" + c.Labels[labelContainerName]
		groups[key] = append(groups[key], c)
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g := groups[k]
		sort.Slice(g, func(i, j int) bool { return g[i].CreatedAt > g[j].CreatedAt })
		for _, c := range g[min(keep, len(g)):] {
			out = append(out, c.Id)
		}
	}
	return out
}

// oldSandboxes picks the not-ready sandboxes of known pods that are not the
// pod's newest and hold no container any more.
func oldSandboxes(sandboxes []*runtimeapi.PodSandbox, ctrs []*runtimeapi.Container, removed map[string]bool, known func(uid string) bool) []string {
	used := map[string]bool{}
	for _, c := range ctrs {
		if !removed[c.Id] {
			used[c.PodSandboxId] = true
		}
	}
	newest := map[string]*runtimeapi.PodSandbox{}
	for _, sb := range sandboxes {
		uid := sb.Labels[labelPodUID]
		if n := newest[uid]; n == nil || sb.CreatedAt > n.CreatedAt {
			newest[uid] = sb
		}
	}
	var out []string
	for _, sb := range sandboxes {
		uid := sb.Labels[labelPodUID]
		if uid == "" || !known(uid) || newest[uid] == sb || used[sb.Id] || sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		out = append(out, sb.Id)
	}
	return out
}

// CollectGarbage removes dead containers beyond the policy and the empty,
// superseded sandboxes of the pods known(uid) says this agent runs.
func (s *Syncer) CollectGarbage(ctx context.Context, p GCPolicy, known func(uid string) bool) error {
	ctrs, err := s.cfg.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{})
	if err != nil {
		return fmt.Errorf("failed to list containers: %w", err)
	}
	sandboxes, err := s.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{})
	if err != nil {
		return fmt.Errorf("failed to list sandboxes: %w", err)
	}
	removed := map[string]bool{}
	var errs []error
	for _, id := range deadToRemove(ctrs, known, p, time.Now()) {
		if err := s.removeContainer(ctx, id, nil); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
			continue
		}
		removed[id] = true
	}
	withSandbox := map[string]bool{}
	for _, sb := range sandboxes {
		withSandbox[sb.Labels[labelPodUID]] = true
	}
	errs = append(errs, s.orphanedCgroups(known, withSandbox)...)
	errs = append(errs, s.orphanedPodDirs(ctx, known, withSandbox)...)
	for _, id := range oldSandboxes(sandboxes, ctrs, removed, known) {
		if err := s.cfg.Runtime.RemovePodSandbox(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: %w", id, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("garbage collection: %v", errs)
	}
	return nil
}

// orphanedPodDirs removes the folders (<root-dir>/pods/<uid>, with their
// volumes unmounted) and logs of pods that are neither known nor have a
// sandbox: what a pod removed while the agent was down, or a removal cut
// short, left behind.
func (s *Syncer) orphanedPodDirs(ctx context.Context, known func(uid string) bool, sandboxUIDs map[string]bool) []error {
	if s.cfg.Node.RootDir == "" {
		return nil
	}
	entries, _ := os.ReadDir(filepath.Join(s.cfg.Node.RootDir, "pods"))
	var errs []error
	for _, e := range entries {
		uid := e.Name()
		if !e.IsDir() || known(uid) || sandboxUIDs[uid] {
			continue
		}
		orphan := &corev1.Pod{}
		orphan.UID = types.UID(uid)
		if err := s.Remove(ctx, orphan); err != nil {
			errs = append(errs, fmt.Errorf("orphaned pod %s: %w", uid, err))
		}
	}
	return errs
}
