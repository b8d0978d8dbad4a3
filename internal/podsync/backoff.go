package podsync

import (
	"sync"
	"time"
)

// Backoff tracks per-key restart delays: the first retry is immediate, then
// the delay starts at Initial and doubles to Max. An entry untouched for
// twice Max is forgotten, so a container that ran well starts over.
type Backoff struct {
	Initial time.Duration    // first delay (10s for containers and image pulls)
	Max     time.Duration    // ceiling (5m)
	Now     func() time.Time // the clock
	mu      sync.Mutex
	entries map[string]*backoffEntry
}

type backoffEntry struct {
	delay time.Duration // current delay
	last  time.Time     // when it was last advanced
}

// NewBackoff returns upstream's container backoff: 10s doubling to 5m.
func NewBackoff() *Backoff {
	return &Backoff{Initial: 10 * time.Second, Max: 5 * time.Minute, Now: time.Now, entries: map[string]*backoffEntry{}}
}

// stale says whether e was last advanced over twice Max before now.
func (b *Backoff) stale(e *backoffEntry, now time.Time) bool {
	return now.Sub(e.last) > 2*b.Max
}

func (b *Backoff) entry(key string) *backoffEntry {
	e, ok := b.entries[key]
	if ok && b.stale(e, b.Now()) {
		delete(b.entries, key)
		return nil
	}
	return e
}

// InBackOffSince reports whether a retry for key must still wait, counting
// the delay from since (the last failure).
func (b *Backoff) InBackOffSince(key string, since time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entry(key)
	return e != nil && b.Now().Sub(since) < e.delay
}

// InBackOffSinceUpdate reports whether a retry for key must still wait,
// counting the delay from the last failure recorded with Next (upstream's
// IsInBackOffSinceUpdate, for image pulls).
func (b *Backoff) InBackOffSinceUpdate(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entry(key)
	return e != nil && b.Now().Sub(e.last) < e.delay
}

// Next records a retry for key and lengthens its delay.
func (b *Backoff) Next(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entry(key)
	if e == nil {
		// A new entry: drop the stale ones of keys never asked about again
		// (a pod gone before its next retry), which entry alone would keep.
		now := b.Now()
		for k, old := range b.entries {
			if b.stale(old, now) {
				delete(b.entries, k)
			}
		}
		b.entries[key] = &backoffEntry{delay: b.Initial, last: now}
		return
	}
	e.delay = min(2*e.delay, b.Max)
	e.last = b.Now()
}

// Delay is key's current delay (0 when it has none).
func (b *Backoff) Delay(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.entry(key); e != nil {
		return e.delay
	}
	return 0
}

// Forget drops every entry whose key starts with prefix.
func (b *Backoff) Forget(prefix string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.entries {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			delete(b.entries, k)
		}
	}
}
