package eviction

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/bosun-dev/bosun/internal/pullrecords"
)

// ImageGC removes unused images as upstream's image manager does: those
// unused for longer than MaxAge (once the agent has run that long), and,
// when the image filesystem is used above High percent, the least recently
// used ones until it is below Low percent. Images in use by any container,
// pinned images and images first seen less than MinAge ago are kept.
type ImageGC struct {
	Runtime internalapi.RuntimeService
	Images  internalapi.ImageManagerService
	FsPath  string        // a path on the image filesystem ("": the runtime's ImageFsInfo says)
	High    int           // imageGCHighThresholdPercent
	Low     int           // imageGCLowThresholdPercent
	MinAge  time.Duration // imageMinimumGCAge
	MaxAge  time.Duration // imageMaximumGCAge (0: none)
	Keep    []string      // references never removed (the pod infra image)
	// Mounted lists the image references that pods mount as image volumes:
	// in use though no container runs them (nil: none).
	Mounted func() []string
	// Records, when set, forgets the pulls of images no longer on the node.
	Records *pullrecords.Manager
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu       sync.Mutex
	began    time.Time            // the first pass
	seen     map[string]time.Time // image ID -> first seen
	lastUsed map[string]time.Time // image ID -> last seen in use
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

func (g *ImageGC) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Collect runs one pass.
func (g *ImageGC) Collect(ctx context.Context) error {
	listed := g.now()
	images, err := g.Images.ListImages(ctx, &runtimeapi.ImageFilter{})
	if err != nil {
		return err
	}
	ids := make([]string, len(images))
	present := make(map[string]bool, len(images))
	for i, img := range images {
		ids[i] = img.Id
		present[img.Id] = true
	}
	g.Records.Prune(ctx, ids, listed)
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
	used := func(img *runtimeapi.Image) bool {
		u := inUse[img.Id]
		for _, tag := range img.RepoTags {
			u = u || inUse[tag]
		}
		return u
	}
	now := g.now()
	g.mu.Lock()
	if g.seen == nil {
		g.seen, g.lastUsed, g.began = map[string]time.Time{}, map[string]time.Time{}, now
	}
	for _, img := range images {
		if _, ok := g.seen[img.Id]; !ok {
			g.seen[img.Id] = now
		}
		if used(img) {
			g.lastUsed[img.Id] = now
		}
	}
	// Unused images in upstream's eviction order: least recently used
	// first (never used before used), then first seen.
	var unused []*runtimeapi.Image
	for _, img := range images {
		kept := used(img) || img.Pinned
		for _, tag := range img.RepoTags {
			kept = kept || keep[tag]
		}
		if !kept {
			unused = append(unused, img)
		}
	}
	lastUsed, seen := maps.Clone(g.lastUsed), maps.Clone(g.seen)
	for id := range g.seen {
		if !present[id] {
			delete(g.seen, id)
			delete(g.lastUsed, id)
		}
	}
	oldEnough := g.MaxAge > 0 && now.Sub(g.began) > g.MaxAge
	g.mu.Unlock()
	sort.SliceStable(unused, func(i, j int) bool {
		a, b := unused[i].Id, unused[j].Id
		if !lastUsed[a].Equal(lastUsed[b]) {
			return lastUsed[a].Before(lastUsed[b])
		}
		return seen[a].Before(seen[b])
	})
	logger := klog.FromContext(ctx)
	if oldEnough {
		// As upstream: only once the agent has run for MaxAge, so that
		// images are not judged on a partial record.
		var left []*runtimeapi.Image
		for _, img := range unused {
			if now.Sub(lastUsed[img.Id]) <= g.MaxAge {
				left = append(left, img)
				continue
			}
			logger.Info("Removing image unused for longer than imageMaximumGCAge", "image", img.RepoTags, "id", img.Id, "maxAge", g.MaxAge)
			if err := g.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: img.Id}); err != nil {
				return fmt.Errorf("wanted to free images older than %v, encountered errors in image deletion: %w", g.MaxAge, err)
			}
		}
		unused = left
	}
	fsPath, err := g.imageFs(ctx)
	if err != nil {
		return err
	}
	usedPct, err := usedPercent(fsPath)
	if err != nil || usedPct < g.High {
		return err
	}
	for _, img := range unused {
		if now.Sub(seen[img.Id]) < g.MinAge {
			continue
		}
		if usedPct, _ = usedPercent(fsPath); usedPct < g.Low {
			break
		}
		logger.Info("Removing unused image", "image", img.RepoTags, "id", img.Id)
		if err := g.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: img.Id}); err != nil {
			return err
		}
	}
	return nil
}
