package server

import (
	"bytes"
	"encoding/json"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// PodListCache encodes /pods from each pod's JSON of the last request when
// the pod has not changed since: a node's pod list is hundreds of kilobytes
// of JSON, and encoding it whole per request cost most of /pods' time with
// many pods.
type PodListCache struct {
	mu    sync.Mutex
	byUID map[types.UID]encodedPod
	size  int // the last list's length, to size the next one's buffer
}

type encodedPod struct {
	key  string
	data []byte
}

// PodEntry is one pod of the list: Key changes whenever the pod's JSON may
// ("" is never reused), Pod builds the pod to encode.
type PodEntry struct {
	UID types.UID
	Key string
	Pod func() (*corev1.Pod, string)
}

// Encode returns the PodList of entries, in their order, as json.Marshal
// of a v1 PodList would write it.
func (c *PodListCache) Encode(entries []PodEntry) ([]byte, error) {
	c.mu.Lock()
	old, size := c.byUID, c.size
	c.mu.Unlock()
	next := make(map[types.UID]encodedPod, len(entries))
	var buf bytes.Buffer
	buf.Grow(size + size/8)
	buf.WriteString(`{"kind":"PodList","apiVersion":"v1","metadata":{},"items":`)
	if len(entries) == 0 {
		buf.WriteString("null")
	}
	for i, e := range entries {
		if i == 0 {
			buf.WriteByte('[')
		} else {
			buf.WriteByte(',')
		}
		if cached, ok := old[e.UID]; ok && e.Key != "" && cached.key == e.Key {
			buf.Write(cached.data)
			next[e.UID] = cached
			continue
		}
		pod, key := e.Pod()
		data, err := json.Marshal(pod)
		if err != nil {
			return nil, err
		}
		buf.Write(data)
		if key != "" {
			next[e.UID] = encodedPod{key: key, data: data}
		}
	}
	if len(entries) > 0 {
		buf.WriteByte(']')
	}
	buf.WriteByte('}')
	c.mu.Lock()
	c.byUID, c.size = next, buf.Len()
	c.mu.Unlock()
	return buf.Bytes(), nil
}
