// Package logrotate keeps container logs within containerLogMaxSize and
// containerLogMaxFiles: a log over the size is renamed with a timestamp,
// the runtime reopens a fresh file (CRI ReopenContainerLog) so no line is
// lost, and the oldest rotated files beyond the count are removed.
package logrotate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// Rotator rotates the logs of running containers.
type Rotator struct {
	Runtime  internalapi.RuntimeService
	MaxSize  int64         // containerLogMaxSize in bytes
	MaxFiles int           // containerLogMaxFiles, the live file included
	Every    time.Duration // containerLogMonitorInterval
	Now      func() time.Time

	// logPaths are the running containers' log files, asked of the runtime
	// once per container: a container's log path is set at its creation.
	logPaths map[string]string
}

// Run checks every interval until ctx ends.
func (r *Rotator) Run(ctx context.Context) {
	if r.Now == nil {
		r.Now = time.Now
	}
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.rotateAll(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Container log rotation failed")
		}
	}
}

func (r *Rotator) rotateAll(ctx context.Context) error {
	ctrs, err := r.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil {
		return err
	}
	paths := make(map[string]string, len(ctrs))
	for _, c := range ctrs {
		path, ok := r.logPaths[c.Id]
		if !ok {
			st, err := r.Runtime.ContainerStatus(ctx, c.Id, false)
			if err != nil {
				continue
			}
			path = st.GetStatus().GetLogPath()
		}
		paths[c.Id] = path
		if path == "" {
			continue
		}
		if err := r.Rotate(ctx, c.Id, path); err != nil {
			klog.FromContext(ctx).Error(err, "Failed to rotate a container log", "containerID", c.Id)
		}
	}
	r.logPaths = paths
	return nil
}

// Rotate rotates one container's log if it is over the size.
func (r *Rotator) Rotate(ctx context.Context, id, path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() < r.MaxSize {
		return nil
	}
	rotated := fmt.Sprintf("%s.%s", path, r.Now().Format("20060102-150405.000000"))
	if err := os.Rename(path, rotated); err != nil {
		return err
	}
	if err := r.Runtime.ReopenContainerLog(ctx, id); err != nil {
		// Put the file back so the runtime keeps writing where readers look.
		_ = os.Rename(rotated, path)
		return fmt.Errorf("failed to reopen the log of container %s: %w", id, err)
	}
	return r.prune(path)
}

// prune keeps the MaxFiles-1 newest rotated files.
func (r *Rotator) prune(path string) error {
	matches, err := filepath.Glob(path + ".*")
	if err != nil {
		return err
	}
	var rotated []string
	for _, m := range matches {
		if !strings.HasSuffix(m, ".tmp") {
			rotated = append(rotated, m)
		}
	}
	sort.Strings(rotated) // timestamps sort by time
	for len(rotated) > r.MaxFiles-1 {
		if err := os.Remove(rotated[0]); err != nil {
			return err
		}
		rotated = rotated[1:]
	}
	return nil
}
