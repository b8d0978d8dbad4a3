package eviction

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

// An image that a pod mounts as an image volume is in use: garbage
// collection keeps it though no container runs it.
func TestImageGCKeepsImagesMountedAsVolumes(t *testing.T) {
	images := critest.NewFakeImageService()
	images.SetFakeImages([]string{"registry.k8s.io/e2e-test-images/kitten:1.8", "registry.k8s.io/e2e-test-images/nautilus:1.8"})
	g := &ImageGC{Runtime: critest.NewFakeRuntimeService(), Images: images, FsPath: t.TempDir(), High: 0, Low: 0,
		Mounted: func() []string { return []string{"registry.k8s.io/e2e-test-images/kitten:1.8"} }}
	if err := g.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	left, err := images.ListImages(context.Background(), &runtimeapi.ImageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].RepoTags[0] != "registry.k8s.io/e2e-test-images/kitten:1.8" {
		var tags [][]string
		for _, i := range left {
			tags = append(tags, i.RepoTags)
		}
		t.Fatalf("images left %v, want only the mounted kitten", tags)
	}
}

// Without a configured path the image filesystem is the one the runtime
// reports (containerd's root may be anywhere); a runtime that reports none
// is an error, not a pass over the wrong disk.
func TestImageGCAsksTheRuntimeForItsFilesystem(t *testing.T) {
	images := critest.NewFakeImageService()
	images.SetFakeImages([]string{"registry.k8s.io/e2e-test-images/kitten:1.8"})
	g := &ImageGC{Runtime: critest.NewFakeRuntimeService(), Images: images}
	if err := g.Collect(context.Background()); err == nil {
		t.Fatal("no image filesystem reported, yet no error")
	}
	images.SetFakeFilesystemUsage([]*runtimeapi.FilesystemUsage{{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: t.TempDir()}}})
	if err := g.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left, _ := images.ListImages(context.Background(), &runtimeapi.ImageFilter{}); len(left) != 0 {
		t.Errorf("with the runtime's filesystem over the threshold, %d images were kept", len(left))
	}
}

// imageMaximumGCAge, as upstream: once the agent has run that long, an
// image no container has used for that long goes whatever the disk's
// usage; one used more recently, a pinned one and one in use stay.
func TestImageGCRemovesImagesUnusedForMaxAge(t *testing.T) {
	images := critest.NewFakeImageService()
	images.SetFakeImagePinned("pinned", true)
	images.SetFakeImages([]string{"recent", "never-used", "pinned", "running"})
	rt := critest.NewFakeRuntimeService()
	ctr := func(id, image string) *critest.FakeContainer {
		return &critest.FakeContainer{ContainerStatus: runtimeapi.ContainerStatus{Id: id, ImageRef: image,
			Image: &runtimeapi.ImageSpec{Image: image}}}
	}
	rt.SetFakeContainers([]*critest.FakeContainer{ctr("a", "running")})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	g := &ImageGC{Runtime: rt, Images: images, FsPath: t.TempDir(), High: 100, Low: 99, MaxAge: time.Hour,
		Now: func() time.Time { return now }}
	left := func() []string {
		imgs, err := images.ListImages(context.Background(), &runtimeapi.ImageFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range imgs {
			out = append(out, i.Id)
		}
		sort.Strings(out)
		return out
	}
	collect := func(at time.Duration) {
		t.Helper()
		now = t0.Add(at)
		if err := g.Collect(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	collect(0)
	rt.SetFakeContainers([]*critest.FakeContainer{ctr("a", "running"), ctr("b", "recent")})
	collect(30 * time.Minute)
	rt.SetFakeContainers([]*critest.FakeContainer{ctr("a", "running")})
	collect(59 * time.Minute)
	if got := fmt.Sprint(left()); got != "[never-used pinned recent running]" {
		t.Fatalf("before the agent ran for imageMaximumGCAge: %s", got)
	}
	collect(61 * time.Minute)
	if got := fmt.Sprint(left()); got != "[pinned recent running]" {
		t.Fatalf("after an hour: %s, want the never-used image gone", got)
	}
	collect(91 * time.Minute)
	if got := fmt.Sprint(left()); got != "[pinned running]" {
		t.Fatalf("an hour after its last use: %s, want recent gone", got)
	}
}
