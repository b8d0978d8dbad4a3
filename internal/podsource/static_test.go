package podsource

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

type recorder struct {
	mu      sync.Mutex
	live    map[types.UID]*corev1.Pod
	deletes int
}

func newRecorder() *recorder { return &recorder{live: map[types.UID]*corev1.Pod{}} }

func (r *recorder) Update(p *corev1.Pod) { r.mu.Lock(); r.live[p.UID] = p; r.mu.Unlock() }
func (r *recorder) Delete(p *corev1.Pod) {
	r.mu.Lock()
	delete(r.live, p.UID)
	r.deletes++
	r.mu.Unlock()
}

func (r *recorder) names() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for _, p := range r.live {
		out[p.Name] = true
	}
	return out
}

const manifest = `apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  containers:
  - name: c
    image: busybox
`

func writeManifest(t *testing.T, dir, file, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(sprintf(manifest, name)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestStaticFolderUnreadableKeepsPods(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "manifests")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "web.yaml", "web")
	s := &Static{Dir: dir, NodeName: "n1", current: map[types.UID]*corev1.Pod{}}
	h := newRecorder()
	s.poll(context.Background(), h, false, true)
	if !h.names()["web-n1"] {
		t.Fatalf("static pod not delivered: %v", h.names())
	}
	// The folder becomes unreadable (here: a file where a folder was, so
	// reading it fails with ENOTDIR even for root).
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a folder"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.poll(context.Background(), h, false, true)
	if !h.names()["web-n1"] || h.deletes != 0 {
		t.Errorf("an unreadable static pod folder deleted its pods: live=%v deletes=%d", h.names(), h.deletes)
	}
	// A folder that is gone is no pods, as upstream.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	s.poll(context.Background(), h, false, true)
	if len(h.names()) != 0 {
		t.Errorf("a missing static pod folder must mean no static pods, still have %v", h.names())
	}
}

func TestStaticFolderSkipsFIFO(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", "web")
	if err := syscall.Mkfifo(filepath.Join(dir, "trap.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Static{Dir: dir, NodeName: "n1", current: map[types.UID]*corev1.Pod{}}
	h := newRecorder()
	done := make(chan struct{})
	go func() { s.poll(context.Background(), h, false, true); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a FIFO in the static pod folder hung the source")
	}
	if got := h.names(); len(got) != 1 || !got["web-n1"] {
		t.Errorf("pods = %v, want only web-n1", got)
	}
}

func TestStaticURLTimesOutAndKeepsPods(t *testing.T) {
	var hang sync.Mutex
	hanging := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hang.Lock()
		h := hanging
		hang.Unlock()
		if h {
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
			return
		}
		_, _ = w.Write([]byte(sprintf(manifest, "fromurl")))
	}))
	defer srv.Close()
	old := staticURLClient.Timeout
	staticURLClient.Timeout = 300 * time.Millisecond
	defer func() { staticURLClient.Timeout = old }()
	s := &Static{URL: srv.URL, NodeName: "n1", current: map[types.UID]*corev1.Pod{}}
	h := newRecorder()
	s.poll(context.Background(), h, false, true)
	if !h.names()["fromurl-n1"] {
		t.Fatalf("pod from URL not delivered: %v", h.names())
	}
	hang.Lock()
	hanging = true
	hang.Unlock()
	start := time.Now()
	s.poll(context.Background(), h, false, true)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a URL that does not answer held the source for %s", took)
	}
	if !h.names()["fromurl-n1"] {
		t.Errorf("a URL that timed out deleted its pods: %v", h.names())
	}
}

// staticPodURLHeader goes with each read of the URL; a poll on the file
// period alone (not due for the URL, httpCheckFrequency) keeps the URL's pods
// without reading it.
func TestStaticURLHeaderAndItsOwnPeriod(t *testing.T) {
	var mu sync.Mutex
	reads, auth := 0, ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reads++
		auth = r.Header.Get("Authorization")
		mu.Unlock()
		_, _ = w.Write([]byte(sprintf(manifest, "fromurl")))
	}))
	defer srv.Close()
	s := &Static{URL: srv.URL, NodeName: "n1", current: map[types.UID]*corev1.Pod{},
		Header: http.Header{"Authorization": []string{"Bearer abc"}}}
	h := newRecorder()
	s.poll(context.Background(), h, false, true)
	s.poll(context.Background(), h, false, false)
	mu.Lock()
	defer mu.Unlock()
	if reads != 1 || auth != "Bearer abc" {
		t.Errorf("the URL was read %d times with Authorization %q; want once, with Bearer abc", reads, auth)
	}
	if !h.names()["fromurl-n1"] {
		t.Errorf("a poll with the URL not due dropped its pods: %v", h.names())
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

func TestOrphanedMirrorPodsAreDeleted(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", "web")
	mirror := func(name, hash string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name + "-uid"),
			Annotations: map[string]string{AnnotationConfigMirror: hash}}, Spec: corev1.PodSpec{NodeName: "n1"}}
	}
	s := &Static{Dir: dir, NodeName: "n1", current: map[types.UID]*corev1.Pod{}}
	h := newRecorder()
	s.poll(context.Background(), h, false, true) // learn web's hash
	var webHash string
	for uid := range h.live {
		webHash = string(uid)
	}
	kept, orphan := mirror("web-n1", webHash), mirror("gone-n1", "no-such-static-pod")
	cs := fake.NewClientset(kept, orphan)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = idx.Add(kept)
	_ = idx.Add(orphan)
	s.Client, s.Pods = cs, corelisters.NewPodLister(idx)
	s.poll(context.Background(), h, false, true)
	if _, err := cs.CoreV1().Pods("default").Get(context.Background(), "gone-n1", metav1.GetOptions{}); err == nil {
		t.Error("the mirror pod of a static pod that is gone was not deleted")
	}
	if _, err := cs.CoreV1().Pods("default").Get(context.Background(), "web-n1", metav1.GetOptions{}); err != nil {
		t.Errorf("the mirror pod of a running static pod was deleted: %v", err)
	}
}

// As upstream's file source: a manifest written, removed or half-written
// is seen at once (inotify), not at the next fileCheckFrequency; after an
// event, a file that does not decode keeps its pod.
func TestStaticFilesSeenAtOnce(t *testing.T) {
	dir := t.TempDir()
	s := &Static{Dir: dir, NodeName: "n1", Every: time.Hour}
	h := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { s.Run(ctx, h); close(done) }()
	defer func() { cancel(); <-done }()
	eventually := func(what string, cond func(map[string]bool) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond(h.names()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s within 5 s (the periodic read is an hour away): live %v", what, h.names())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	writeManifest(t, dir, "web.yaml", "web")
	eventually("a new manifest's pod", func(n map[string]bool) bool { return n["web-n1"] })
	// Half-written: the pod stays.
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte("apiVersion: v1\nkind: Po"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, dir, "db.yaml", "db")
	eventually("the second manifest's pod", func(n map[string]bool) bool { return n["db-n1"] })
	if !h.names()["web-n1"] || h.deletes != 0 {
		t.Errorf("a half-written manifest stopped its pod: live %v, deletes %d", h.names(), h.deletes)
	}
	if err := os.Remove(filepath.Join(dir, "db.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually("a removed manifest's pod gone", func(n map[string]bool) bool { return !n["db-n1"] })
}

// Polled turns true only once the folder was read, with the pods in it
// known: the orphan sweep waits for it.
func TestStaticPolledAfterTheFirstRead(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir, "web.yaml", "web")
	s := &Static{Dir: dir, NodeName: "n1", Every: time.Hour}
	if s.Polled() {
		t.Fatal("polled before running")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, newRecorder())
	deadline := time.Now().Add(5 * time.Second)
	for !s.Polled() {
		if time.Now().After(deadline) {
			t.Fatal("never polled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pods := s.StaticPods(); len(pods) != 1 {
		t.Errorf("polled with %d static pods known, want 1", len(pods))
	}
}
