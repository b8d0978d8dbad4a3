package eviction

import (
	"context"
	"testing"

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
