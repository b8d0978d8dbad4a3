package eviction

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/pullrecords"
)

// ImageGC removes unused images, oldest-seen first, when the image
// filesystem is used above High percent, until it is below Low percent.
// Images in use by any container, pinned images and images first seen less
// than MinAge ago are kept.
type ImageGC struct {
	Runtime internalapi.RuntimeService
	Images  internalapi.ImageManagerService
	FsPath  string        // a path on the image filesystem ("": the runtime's ImageFsInfo says)
	High    int           // imageGCHighThresholdPercent
	Low     int           // imageGCLowThresholdPercent
	MinAge  time.Duration // imageMinimumGCAge
	Keep    []string      // references never removed (the pod infra image)
	// Mounted lists the image references that pods mount as image volumes:
	// in use though no container runs them (nil: none).
	Mounted func() []string
	// Records, when set, forgets the pulls of images no longer on the node.
	Records *pullrecords.Manager
	mu      sync.Mutex
	seen    map[string]time.Time // image ID -> first seen
}

// Run collects every interval until ctx ends.
func (g *ImageGC) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := g.Collect(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Image garbage collection failed")
		}
	}
}

func usedPercent(path string) (int, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	if st.Blocks == 0 {
		return 0, nil
	}
	return int(100 - st.Bavail*100/st.Blocks), nil
}

// imageFs is a path on the filesystem that holds the images.
func (g *ImageGC) imageFs(ctx context.Context) (string, error) {
	if g.FsPath != "" {
		return g.FsPath, nil
	}
	resp, err := g.Images.ImageFsInfo(ctx)
	if err != nil {
		return "", fmt.Errorf("image filesystem: %w", err)
	}
	for _, fs := range resp.GetImageFilesystems() {
		if mp := fs.GetFsId().GetMountpoint(); mp != "" {
			return mp, nil
		}
	}
	return "", fmt.Errorf("the runtime names no image filesystem")
}

// Collect runs one pass.
func (g *ImageGC) Collect(ctx context.Context) error {
	listed := time.Now()
	images, err := g.Images.ListImages(ctx, &runtimeapi.ImageFilter{})
	if err != nil {
		return err
	}
	ids := make([]string, len(images))
	for i, img := range images {
		ids[i] = img.Id
	}
	g.Records.Prune(ctx, ids, listed)
	now := time.Now()
	g.mu.Lock()
	if g.seen == nil {
		g.seen = map[string]time.Time{}
	}
	for _, img := range images {
		if _, ok := g.seen[img.Id]; !ok {
			g.seen[img.Id] = now
		}
	}
	g.mu.Unlock()
	fsPath, err := g.imageFs(ctx)
	if err != nil {
		return err
	}
	used, err := usedPercent(fsPath)
	if err != nil || used < g.High {
		return err
	}
	inUse := map[string]bool{}
	ctrs, err := g.Runtime.ListContainers(ctx, nil)
	if err != nil {
		return err
	}
	for _, c := range ctrs {
		inUse[c.ImageRef] = true
		inUse[c.Image.GetImage()] = true
	}
	if g.Mounted != nil {
		for _, ref := range g.Mounted() {
			inUse[ref] = true
		}
	}
	keep := map[string]bool{}
	for _, k := range g.Keep {
		keep[k] = true
	}
	var victims []*runtimeapi.Image
	for _, img := range images {
		if inUse[img.Id] || img.Pinned || now.Sub(g.seen[img.Id]) < g.MinAge {
			continue
		}
		kept := false
		for _, tag := range img.RepoTags {
			kept = kept || keep[tag] || inUse[tag]
		}
		if !kept {
			victims = append(victims, img)
		}
	}
	sort.Slice(victims, func(i, j int) bool { return g.seen[victims[i].Id].Before(g.seen[victims[j].Id]) })
	for _, img := range victims {
		if used, _ = usedPercent(fsPath); used < g.Low {
			break
		}
		klog.FromContext(ctx).Info("Removing unused image", "image", img.RepoTags, "id", img.Id)
		if err := g.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: img.Id}); err != nil {
			return err
		}
	}
	return nil
}
