package objectcache

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// counting records the verbs the store sends, by resource.
type counting struct {
	mu    sync.Mutex
	verbs map[string]int
}

func (c *counting) react(a k8stesting.Action) (bool, runtime.Object, error) {
	c.mu.Lock()
	c.verbs[a.GetVerb()+" "+a.GetResource().Resource]++
	c.mu.Unlock()
	return false, nil, nil
}

func (c *counting) count(verb string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verbs[verb]
}

func newClient(objs ...runtime.Object) (*fake.Clientset, *counting) {
	cs := fake.NewClientset(objs...)
	c := &counting{verbs: map[string]int{}}
	cs.PrependReactor("*", "*", c.react)
	cs.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		_, _, _ = c.react(a)
		return false, nil, nil
	})
	return cs, c
}

func cm(data string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cfg"}, Data: map[string]string{"k": data}}
}

// The Watch strategy lists and watches each object once and answers every
// later ask from memory, with the object's changes as they come; a missing
// object is NotFound; an idle watch stops.
func TestWatchServesFromMemory(t *testing.T) {
	cs, calls := newClient(cm("one"))
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	s := New(Config{Client: cs, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	ctx := context.Background()
	for range 5 {
		got, err := s.ConfigMap(ctx, "ns", "cfg")
		if err != nil || got.Data["k"] != "one" {
			t.Fatalf("ConfigMap: %v %v", got, err)
		}
	}
	if calls.count("get configmaps") != 0 || calls.count("list configmaps") != 1 {
		t.Errorf("calls %v: want one list and no GET", calls.verbs)
	}
	got, _ := s.ConfigMap(ctx, "ns", "cfg")
	got.Data["k"] = "mine" // a copy
	if _, err := cs.CoreV1().ConfigMaps("ns").Update(ctx, cm("two"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := s.ConfigMap(ctx, "ns", "cfg")
		if err == nil && got.Data["k"] == "two" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the update did not arrive: %v %v", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Secret(ctx, "ns", "missing"); !apierrors.IsNotFound(err) {
		t.Errorf("a missing secret: %v", err)
	}
	if n := s.Watches(); n != 2 {
		t.Errorf("%d watches, want 2", n)
	}
	mu.Lock()
	now = now.Add(6 * time.Minute)
	mu.Unlock()
	s.sweep()
	if n := s.Watches(); n != 0 {
		t.Errorf("%d watches after 6 idle minutes", n)
	}
}

// A list the apiserver refuses is the caller's error at once, not a wait;
// the next ask lists again.
func TestWatchRefusedListIsAnError(t *testing.T) {
	cs, _ := newClient()
	var mu sync.Mutex
	lists := 0
	cs.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		lists++
		mu.Unlock()
		return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), "s", nil)
	})
	s := New(Config{Client: cs, SyncTimeout: 20 * time.Second})
	start := time.Now()
	_, err := s.Secret(context.Background(), "ns", "s")
	if !apierrors.IsForbidden(err) || time.Since(start) > 5*time.Second {
		t.Fatalf("refused list: %v after %s", err, time.Since(start))
	}
	_, _ = s.Secret(context.Background(), "ns", "s")
	mu.Lock()
	defer mu.Unlock()
	if lists < 2 {
		t.Errorf("%d lists: the second ask did not list again", lists)
	}
}

// A watch the apiserver later refuses (its pods are gone, and with them the
// node authorizer's leave) stops at the first refusal instead of asking
// again every back-off until the idle sweep; a later ask watches afresh.
func TestWatchRefusedLaterStops(t *testing.T) {
	cs, _ := newClient(cm("one"))
	var mu sync.Mutex
	lists, refuse := 0, false
	cs.PrependReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		lists++
		if refuse {
			return true, nil, apierrors.NewForbidden(corev1.Resource("configmaps"), "cfg", nil)
		}
		return false, nil, nil
	})
	first := watch.NewFake()
	watches := 0
	cs.PrependWatchReactor("configmaps", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		watches++
		if watches == 1 {
			return true, first, nil
		}
		return true, nil, apierrors.NewForbidden(corev1.Resource("configmaps"), "cfg", nil)
	})
	s := New(Config{Client: cs})
	if _, err := s.ConfigMap(context.Background(), "ns", "cfg"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	refuse = true
	mu.Unlock()
	first.Stop() // the watch ends, as at its timeout: the reflector lists again
	deadline := time.Now().Add(5 * time.Second)
	for s.Watches() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the refused watch still runs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // the reflector's back-off would have asked again by now
	mu.Lock()
	if lists != 2 {
		t.Errorf("%d lists: want the first and the one refused", lists)
	}
	refuse = false
	mu.Unlock()
	if _, err := s.ConfigMap(context.Background(), "ns", "cfg"); err != nil || s.Watches() != 1 {
		t.Errorf("a later ask: %v, %d watches", err, s.Watches())
	}
}

// Get asks every time; Cache once per TTL (the Node's annotation).
func TestGetAndCacheStrategies(t *testing.T) {
	cs, calls := newClient(cm("one"))
	ctx := context.Background()
	get := New(Config{Client: cs, Strategy: Get})
	for range 3 {
		if _, err := get.ConfigMap(ctx, "ns", "cfg"); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.count("get configmaps"); n != 3 {
		t.Errorf("Get: %d GETs, want 3", n)
	}
	now := time.Unix(1000, 0)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "30"}}}
	cached := New(Config{Client: cs, Strategy: Cache, Now: func() time.Time { return now }, TTL: func() (time.Duration, bool) { return NodeTTL(node) }})
	for range 3 {
		if _, err := cached.ConfigMap(ctx, "ns", "cfg"); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.count("get configmaps"); n != 4 {
		t.Errorf("Cache: %d GETs in all, want one more", n)
	}
	now = now.Add(31 * time.Second)
	if _, err := cached.ConfigMap(ctx, "ns", "cfg"); err != nil || calls.count("get configmaps") != 5 {
		t.Errorf("Cache after the TTL: %v, %d GETs", err, calls.count("get configmaps"))
	}
	if d, ok := NodeTTL(&corev1.Node{}); ok || d != 0 {
		t.Errorf("no annotation: %v %v", d, ok)
	}
}
