// Package objectcache serves the ConfigMaps and Secrets that pods use
// (volumes, environment, image pull secrets) as upstream's
// configMapAndSecretChangeDetectionStrategy does:
//
//   - Watch (the default): one watch per object, started when a pod first
//     asks for it (a list and watch with a metadata.name field selector,
//     which the node authorizer allows for the objects of the node's pods),
//     answered from memory from then on, and stopped once no pod has asked
//     for it for a while, or once the apiserver refuses it to the node;
//   - Cache: a GET at most once per TTL (the Node's
//     node.alpha.kubernetes.io/ttl annotation, which the controller-manager
//     sets, else a minute);
//   - Get: a GET every time.
package objectcache

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Strategies, as configMapAndSecretChangeDetectionStrategy names them.
const (
	Watch = "Watch"
	Cache = "Cache"
	Get   = "Get"
)

// Config wires a Store.
type Config struct {
	Client   kubernetes.Interface
	Strategy string // Watch (""), Cache or Get
	// Idle is how long a watch lives with no one asking for its object
	// (default 5 minutes: pods ask on every sync, once a minute).
	Idle time.Duration
	// TTL is the Cache strategy's time to live (nil or a negative answer:
	// a minute), from the Node's annotation.
	TTL func() (time.Duration, bool)
	// SyncTimeout bounds the wait for a new watch's first list (10 s).
	SyncTimeout time.Duration
	Now         func() time.Time
}

// Store answers for ConfigMaps and Secrets.
type Store struct {
	cfg   Config
	mu    sync.Mutex
	items map[key]*item
}

type key struct{ kind, namespace, name string }

type item struct {
	informer cache.SharedInformer // Watch
	stop     chan struct{}
	mu       sync.Mutex
	listErr  error // the last list or watch failure, until a sync
	lastUsed time.Time
	obj      runtime.Object // Cache: the object and when it was read
	fetched  time.Time
}

// New returns a store; Run stops idle watches until ctx ends.
func New(cfg Config) *Store {
	if cfg.Strategy == "" {
		cfg.Strategy = Watch
	}
	if cfg.Idle == 0 {
		cfg.Idle = 5 * time.Minute
	}
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, items: map[key]*item{}}
}

// ConfigMap returns a ConfigMap (a copy: the caller's to change).
func (s *Store) ConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	obj, err := s.get(ctx, key{"configmaps", ns, name})
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.ConfigMap).DeepCopy(), nil
}

// Secret returns a Secret (a copy: the caller's to change).
func (s *Store) Secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	obj, err := s.get(ctx, key{"secrets", ns, name})
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.Secret).DeepCopy(), nil
}

func (s *Store) fetch(ctx context.Context, k key) (runtime.Object, error) {
	if k.kind == "configmaps" {
		return s.cfg.Client.CoreV1().ConfigMaps(k.namespace).Get(ctx, k.name, metav1.GetOptions{})
	}
	return s.cfg.Client.CoreV1().Secrets(k.namespace).Get(ctx, k.name, metav1.GetOptions{})
}

func (s *Store) get(ctx context.Context, k key) (runtime.Object, error) {
	switch s.cfg.Strategy {
	case Get:
		return s.fetch(ctx, k)
	case Cache:
		return s.cached(ctx, k)
	}
	return s.watched(ctx, k)
}

// cached is the Cache strategy: a GET once per TTL.
func (s *Store) cached(ctx context.Context, k key) (runtime.Object, error) {
	ttl := time.Minute
	if s.cfg.TTL != nil {
		if t, ok := s.cfg.TTL(); ok && t >= 0 {
			ttl = t
		}
	}
	now := s.cfg.Now()
	s.mu.Lock()
	it := s.items[k]
	if it == nil {
		it = &item{}
		s.items[k] = it
	}
	it.lastUsed = now
	s.mu.Unlock()
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.obj != nil && now.Sub(it.fetched) < ttl {
		return it.obj, nil
	}
	obj, err := s.fetch(ctx, k)
	if err != nil {
		it.obj = nil
		return nil, err
	}
	it.obj, it.fetched = obj, now
	return obj, nil
}

// watched is the Watch strategy: the object from its watch, started now if
// it is the first ask.
func (s *Store) watched(ctx context.Context, k key) (runtime.Object, error) {
	s.mu.Lock()
	it := s.items[k]
	if it == nil {
		it = s.startWatch(k)
		s.items[k] = it
	}
	it.mu.Lock()
	it.lastUsed = s.cfg.Now()
	it.mu.Unlock()
	s.mu.Unlock()

	var failed error
	err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, s.cfg.SyncTimeout, true, func(context.Context) (bool, error) {
		if it.informer.HasSynced() {
			return true, nil
		}
		it.mu.Lock()
		failed = it.listErr
		it.mu.Unlock()
		return failed != nil, nil
	})
	if !it.informer.HasSynced() {
		// A failed list (forbidden, not yet known to the node authorizer,
		// the apiserver away) is the caller's error, as a GET's would be;
		// the next ask starts afresh instead of waiting out the watch's
		// back-off.
		s.drop(k, it)
		if failed != nil {
			return nil, failed
		}
		return nil, fmt.Errorf("failed to sync %s cache for %s/%s: %w", k.kind, k.namespace, k.name, err)
	}
	obj, exists, err := it.informer.GetStore().GetByKey(k.namespace + "/" + k.name)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, apierrors.NewNotFound(corev1.Resource(k.kind), k.name)
	}
	return obj.(runtime.Object), nil
}

func (s *Store) startWatch(k key) *item {
	selector := fields.OneTermEqualSelector("metadata.name", k.name).String()
	core := s.cfg.Client.CoreV1()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			if k.kind == "configmaps" {
				return core.ConfigMaps(k.namespace).List(ctx, o)
			}
			return core.Secrets(k.namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			if k.kind == "configmaps" {
				return core.ConfigMaps(k.namespace).Watch(ctx, o)
			}
			return core.Secrets(k.namespace).Watch(ctx, o)
		},
	}
	var example runtime.Object = &corev1.Secret{}
	if k.kind == "configmaps" {
		example = &corev1.ConfigMap{}
	}
	it := &item{informer: cache.NewSharedInformer(cache.ToListWatcherWithWatchListSemantics(lw, s.cfg.Client), example, 0), stop: make(chan struct{})}
	_ = it.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		it.mu.Lock()
		it.listErr = err
		it.mu.Unlock()
		if apierrors.IsForbidden(err) && it.informer.HasSynced() {
			// The node may no longer read the object: the pods that used it
			// are gone, and the node authorizer with them. Retrying would
			// only be refused again, every back-off, until the idle sweep;
			// the next ask (a pod that uses it again) starts a new watch.
			s.drop(k, it)
		}
	})
	go it.informer.Run(it.stop)
	return it
}

// drop stops a watch and forgets it, if it is still the one for k.
func (s *Store) drop(k key, it *item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items[k] == it {
		delete(s.items, k)
		if it.stop != nil {
			close(it.stop)
		}
	}
}

// Run stops the watches (and forgets the cached objects) that no one has
// asked for in Idle, until ctx ends; then every watch.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for k, it := range s.items {
				if it.stop != nil {
					close(it.stop)
				}
				delete(s.items, k)
			}
			s.mu.Unlock()
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// sweep stops what has been idle longer than Idle.
func (s *Store) sweep() {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, it := range s.items {
		it.mu.Lock()
		idle := now.Sub(it.lastUsed) > s.cfg.Idle
		it.mu.Unlock()
		if idle {
			if it.stop != nil {
				close(it.stop)
			}
			delete(s.items, k)
		}
	}
}

// Watches is how many watches run, for tests and metrics.
func (s *Store) Watches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, it := range s.items {
		if it.informer != nil {
			n++
		}
	}
	return n
}

// NodeTTL reads the Cache strategy's TTL from a Node's
// node.alpha.kubernetes.io/ttl annotation (seconds).
func NodeTTL(node *corev1.Node) (time.Duration, bool) {
	if node == nil {
		return 0, false
	}
	v, ok := node.Annotations["node.alpha.kubernetes.io/ttl"]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}
