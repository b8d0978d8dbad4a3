package server

import (
	"encoding/json"
	"testing"

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
