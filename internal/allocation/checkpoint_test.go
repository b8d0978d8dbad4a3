package allocation

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Written by the upstream kubelet v1.36.3's own code
// (k8s.io/kubernetes/pkg/kubelet/allocation/state) for one pod, then two.
const (
	upstreamOne = `{"data":"{\"entries\":{\"uid-1\":{\"ContainerResources\":{\"c\":{\"limits\":{\"cpu\":\"200m\"},\"requests\":{\"cpu\":\"100m\",\"memory\":\"64Mi\"}},\"d\":{}},\"PodLevelResources\":null}}}","checksum":3760489345}`
	upstreamTwo = `{"data":"{\"entries\":{\"uid-1\":{\"ContainerResources\":{\"c\":{\"limits\":{\"cpu\":\"200m\"},\"requests\":{\"cpu\":\"100m\",\"memory\":\"64Mi\"}},\"d\":{}},\"PodLevelResources\":null},\"uid-2\":{\"ContainerResources\":{\"x\":{\"requests\":{\"cpu\":\"1\"}}},\"PodLevelResources\":{\"limits\":{\"memory\":\"1Gi\"}}}}}","checksum":4163490705}`
)

func TestReadsAndWritesUpstreamsFile(t *testing.T) {
	for _, file := range []string{upstreamOne, upstreamTwo} {
		entries, err := decode([]byte(file))
		if err != nil {
			t.Fatalf("upstream's file: %v", err)
		}
		c := entries["uid-1"].ContainerResources["c"]
		if cpu := c.Requests.Cpu(); cpu.Cmp(resource.MustParse("100m")) != 0 {
			t.Errorf("uid-1/c requests cpu %v", cpu)
		}
		out, err := encode(entries)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != file {
			t.Errorf("Bosun writes\n%s\nupstream wrote\n%s", out, file)
		}
	}
}

func TestCorruptFileIsRefused(t *testing.T) {
	tampered := strings.Replace(upstreamOne, `100m`, `900m`, 1)
	if _, err := decode([]byte(tampered)); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("tampered file: %v", err)
	}
	if _, err := decode([]byte(`{"data":`)); err == nil {
		t.Error("truncated file accepted")
	}
}
