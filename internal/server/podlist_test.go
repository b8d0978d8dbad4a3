package server

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPodListCache(t *testing.T) {
	pods := []*corev1.Pod{{}, {}}
	pods[0].Name, pods[0].UID, pods[0].ResourceVersion, pods[0].Status.Phase = "a", "ua", "1", corev1.PodRunning
	pods[1].Name, pods[1].UID, pods[1].ResourceVersion, pods[1].Status.Phase = "b", "ub", "2", corev1.PodPending
	built := map[types.UID]int{}
	entries := func(keys ...string) []PodEntry {
		var out []PodEntry
		for i, p := range pods {
			out = append(out, PodEntry{UID: p.UID, Key: keys[i], Pod: func() (*corev1.Pod, string) { built[p.UID]++; return p, keys[i] }})
		}
		return out
	}
	want := func() string {
		list := corev1.PodList{}
		list.Kind, list.APIVersion = "PodList", "v1"
		for _, p := range pods {
			list.Items = append(list.Items, *p)
		}
		data, _ := json.Marshal(list)
		return string(data)
	}
	c := &PodListCache{}
	for round, keys := range [][]string{{"1/1", "2/1"}, {"1/1", "2/1"}, {"1/1", "2/2"}, {"", "2/2"}} {
		if keys[1] == "2/2" {
			pods[1].Status.Phase = corev1.PodRunning
		}
		got, err := c.Encode(entries(keys...))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want() {
			t.Errorf("round %d: %s\nwant %s", round, got, want())
		}
	}
	// a: built in round 0 and again in round 3 (no key); b: in rounds 0 and 2.
	if built["ua"] != 2 || built["ub"] != 2 {
		t.Errorf("pods built %v, want each twice", built)
	}
	empty, _ := c.Encode(nil)
	list := corev1.PodList{}
	list.Kind, list.APIVersion = "PodList", "v1"
	data, _ := json.Marshal(list)
	if string(empty) != string(data) {
		t.Errorf("no pods: %s, want %s", empty, data)
	}
}

func TestPodListCacheReusesTheWholeListAndItsGzip(t *testing.T) {
	pods := []*corev1.Pod{{}, {}}
	pods[0].Name, pods[0].UID = "a", "ua"
	pods[1].Name, pods[1].UID = "b", "ub"
	built := 0
	entries := func(order []int, keys ...string) []PodEntry {
		var out []PodEntry
		for _, i := range order {
			p, key := pods[i], keys[i]
			out = append(out, PodEntry{UID: p.UID, Key: key, Pod: func() (*corev1.Pod, string) { built++; return p, key }})
		}
		return out
	}
	gunzip := func(gz []byte) string {
		t.Helper()
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	c := &PodListCache{}
	first, _ := c.Encode(entries([]int{0, 1}, "1/1", "2/1"))
	if built != 2 {
		t.Fatalf("built %d pods for the first list, want 2", built)
	}
	// The same pods in another order: the last list again, nothing built.
	again, _ := c.Encode(entries([]int{1, 0}, "1/1", "2/1"))
	if !sameBytes(first, again) || built != 2 {
		t.Errorf("unchanged pods: same list %v, built %d (want the last list, 2 built)", sameBytes(first, again), built)
	}
	gz1, err := c.Gzip(again)
	if err != nil {
		t.Fatal(err)
	}
	gz2, _ := c.Gzip(again)
	if gunzip(gz1) != string(first) || !sameBytes(gz1, gz2) {
		t.Errorf("gzip of the list: %q, compressed once %v", gunzip(gz1), sameBytes(gz1, gz2))
	}
	// b changes: only b is built, a's JSON comes from the last list.
	pods[1].Status.Phase = corev1.PodRunning
	changed, _ := c.Encode(entries([]int{0, 1}, "1/1", "2/2"))
	if built != 3 || sameBytes(changed, first) || !strings.Contains(string(changed), `"phase":"Running"`) {
		t.Errorf("b changed: built %d (want 3), list %s", built, changed)
	}
	gz3, _ := c.Gzip(changed)
	if gunzip(gz3) != string(changed) {
		t.Errorf("gzip after the change: %q, want %q", gunzip(gz3), changed)
	}
	// A pod gone, or one without a key, is a new list.
	fewer, _ := c.Encode(entries([]int{0}, "1/1", "2/2"))
	if strings.Contains(string(fewer), `"name":"b"`) {
		t.Errorf("b gone: %s", fewer)
	}
	c.Encode(entries([]int{0, 1}, "", "2/2"))
	n := built
	c.Encode(entries([]int{0, 1}, "", "2/2"))
	if built != n+1 {
		t.Errorf("a pod without a key: built %d after %d, want it built at each list", built, n)
	}
}
