package volumes

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Stats measures a pod's volumes as the Summary API reports them: folders
// the agent makes (emptyDir, configMap, secret, downwardAPI, projected) by
// their file system and what is under them; CSI volumes through the
// driver's NodeGetVolumeStats; local PersistentVolumes by their file system.
// hostPath and image volumes have no statistics, as upstream. Volumes from
// a claim carry a reference to it.
func (m *Manager) Stats(ctx context.Context, pod *corev1.Pod) []statsapi.VolumeStats {
	var ephemeral, persistent []statsapi.VolumeStats
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		dir := func(plugin string) string {
			return filepath.Join(m.podVolumesDir(pod), "kubernetes.io~"+plugin, v.Name)
		}
		var fs *statsapi.FsStats
		switch {
		case v.EmptyDir != nil:
			fs = dirStats(dir("empty-dir"))
		case v.ConfigMap != nil:
			fs = dirStats(dir("configmap"))
		case v.Secret != nil:
			fs = dirStats(dir("secret"))
		case v.DownwardAPI != nil:
			fs = dirStats(dir("downward-api"))
		case v.Projected != nil:
			fs = dirStats(dir("projected"))
		case v.CSI != nil && m.CSI != nil:
			fs = m.CSI.VolumeStats(ctx, pod.UID, v.Name)
		case v.PersistentVolumeClaim != nil, v.Ephemeral != nil:
			if s := m.claimStats(ctx, pod, v); s != nil {
				persistent = append(persistent, *s)
			}
			continue
		}
		if fs != nil {
			ephemeral = append(ephemeral, statsapi.VolumeStats{Name: v.Name, FsStats: *fs})
		}
	}
	return append(ephemeral, persistent...)
}

func (m *Manager) claimStats(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) *statsapi.VolumeStats {
	m.mu.Lock()
	b, ok := m.bound[boundKey(pod.UID, v.Name)]
	m.mu.Unlock()
	if !ok {
		return nil // not set up (yet)
	}
	var fs *statsapi.FsStats
	switch {
	case b.pv.Spec.CSI != nil && m.CSI != nil:
		fs = m.CSI.VolumeStats(ctx, pod.UID, b.pv.Name)
	case b.pv.Spec.Local != nil:
		fs = statfs(b.pv.Spec.Local.Path)
		if fs != nil {
			used := *fs.CapacityBytes - *fs.AvailableBytes
			fs.UsedBytes = &used
		}
	}
	if fs == nil {
		return nil
	}
	claim := pod.Name + "-" + v.Name
	if v.PersistentVolumeClaim != nil {
		claim = v.PersistentVolumeClaim.ClaimName
	}
	return &statsapi.VolumeStats{Name: v.Name, FsStats: *fs, PVCRef: &statsapi.PVCReference{Name: claim, Namespace: pod.Namespace}}
}

// statfs is the capacity, free space and inodes of the file system holding path.
func statfs(path string) *statsapi.FsStats {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return nil
	}
	bs := uint64(st.Bsize) //nolint:gosec // a block size is positive
	capacity, avail, inodes, free := st.Blocks*bs, st.Bavail*bs, st.Files, st.Ffree
	used := inodes - free
	now := metav1.Now()
	return &statsapi.FsStats{Time: now, CapacityBytes: &capacity, AvailableBytes: &avail, Inodes: &inodes, InodesFree: &free, InodesUsed: &used}
}

// dirStats is upstream's du-based measure: the file system's capacity and
// free space, and the bytes and inodes used under dir.
func dirStats(dir string) *statsapi.FsStats {
	if _, err := os.Lstat(dir); err != nil {
		return nil
	}
	fs := statfs(dir)
	if fs == nil {
		return nil
	}
	used := uint64(diskUsage(dir)) //nolint:gosec // a sum of block counts
	inodes := countInodes(dir)
	fs.UsedBytes, fs.InodesUsed = &used, &inodes
	return fs
}

// countInodes counts the files and folders under dir on dir's file system.
func countInodes(dir string) uint64 {
	root, err := os.Lstat(dir)
	if err != nil {
		return 0
	}
	dev := root.Sys().(*syscall.Stat_t).Dev
	var n uint64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Dev != dev {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		n++
		return nil
	})
	return n
}

// StatsCache keeps each running pod's volume statistics, measured in the
// background at most once per Period (upstream's volumeStatsAggPeriod), so
// that the Summary API and /metrics never walk a volume on a request.
type StatsCache struct {
	Volumes *Manager
	Period  time.Duration // 1 minute when 0

	mu      sync.Mutex
	entries map[types.UID]*statsEntry
}

type statsEntry struct {
	at      time.Time
	running bool
	stats   []statsapi.VolumeStats
}

// Get returns the pod's last measured volume statistics (none before the
// first measure) and starts a new measure when they are older than Period.
func (c *StatsCache) Get(pod *corev1.Pod) []statsapi.VolumeStats {
	period := c.Period
	if period == 0 {
		period = time.Minute
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[types.UID]*statsEntry{}
	}
	e := c.entries[pod.UID]
	if e == nil {
		e = &statsEntry{}
		c.entries[pod.UID] = e
	}
	if !e.running && time.Since(e.at) >= period {
		e.running = true
		go c.measure(pod, e)
	}
	return e.stats
}

func (c *StatsCache) measure(pod *corev1.Pod, e *statsEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := c.Volumes.Stats(ctx, pod)
	c.mu.Lock()
	defer c.mu.Unlock()
	e.stats, e.at, e.running = s, time.Now(), false
}

// Drop forgets a pod that has gone.
func (c *StatsCache) Drop(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, uid)
}

// Claims lists the kept statistics of volumes from claims, one per claim.
func (c *StatsCache) Claims() []statsapi.VolumeStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[statsapi.PVCReference]bool{}
	var out []statsapi.VolumeStats
	for _, e := range c.entries {
		for _, s := range e.stats {
			if s.PVCRef != nil && !seen[*s.PVCRef] {
				seen[*s.PVCRef] = true
				out = append(out, s)
			}
		}
	}
	return out
}
