package stats

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/bosun-dev/bosun/internal/cgroupstats"
)

// benchSnapshot is a collection of 100 pods, each a pod row, a sandbox
// row and a container row, with the labels a real node gives them.
func benchSnapshot() *snapshot {
	s := &snapshot{at: time.Now()}
	st := &cgroupstats.Stats{}
	st.CPU.HasLimits, st.CPU.Shares, st.CPU.PeriodUS = true, 2, 100000
	st.Memory.HasLimits, st.Memory.Limit, st.Memory.Usage = true, 1<<62+1, 123456789
	st.IO = []cgroupstats.DeviceIO{{Major: 8, Minor: 0, ReadBytes: 4096, WriteBytes: 8192, Reads: 1, Writes: 2}}
	for i := range 100 {
		uid := fmt.Sprintf("0e3c1f2a-5b6d-4c7e-8f90-%012d", i)
		pod := "/kubepods/besteffort/pod" + uid
		for _, r := range []cgroupSnap{
			{id: pod, pod: fmt.Sprintf("p-%03d", i), namespace: "perf"},
			{id: pod + fmt.Sprintf("/%064d", i), name: fmt.Sprintf("%064d", i), image: "registry.k8s.io/pause:3.10.1", pod: fmt.Sprintf("p-%03d", i), namespace: "perf",
				net: []netSnap{{iface: "eth0", rxBytes: 1234}}},
			{id: pod + fmt.Sprintf("/%064x", i), name: fmt.Sprintf("%064x", i), image: "registry.k8s.io/e2e-test-images/busybox:1.37.0-1", container: "c",
				pod: fmt.Sprintf("p-%03d", i), namespace: "perf", fs: &fsSnap{device: "/dev/vda", usage: 4096}},
		} {
			r.at, r.st, r.created = s.at, st, s.at
			s.cgroups = append(s.cgroups, r)
		}
	}
	return s
}

func BenchmarkRenderCadvisor(b *testing.B) {
	s := benchSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		if err := renderCadvisor(s, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// gzipDiscard takes the compressed page, as an HTTP response to Prometheus does.
type gzipDiscard struct{ io.Writer }

func (gzipDiscard) WriteGzip([]byte) error { return nil }

// BenchmarkCadvisorPage renders and compresses the page of a new collection.
func BenchmarkCadvisorPage(b *testing.B) {
	var pg page
	b.ReportAllocs()
	for b.Loop() {
		if err := pg.write(gzipDiscard{io.Discard}, benchSnapshot(), renderCadvisor); err != nil {
			b.Fatal(err)
		}
	}
}
