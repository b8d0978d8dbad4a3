package selfmem

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestProgramMappings(t *testing.T) {
	maps := []byte(`00400000-0211a000 r-xp 00000000 fe:00 9986397    /opt/bin/bosun
0211a000-04360000 r--p 01d1a000 fe:00 9986397    /opt/bin/bosun
04360000-04419000 rw-p 03f60000 fe:00 9986397    /opt/bin/bosun
26b821800000-26b822c00000 rw-p 00000000 00:00 0
7fa803f77000-7fa8040cd000 r-xp 00026000 fe:00 326269     /usr/lib/x86_64-linux-gnu/libc.so.6
7fa900000000-7fa900001000 r--p 00000000 fe:00 1     /opt/bin/bosun (deleted)
7fa900001000-7fa900002000 r--p 00000000 fe:00 1     /opt/bin/other bosun
`)
	ms, err := programMappings(maps, "/opt/bin/bosun")
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{
		{0x400000, 0x211a000, "r-xp", "/opt/bin/bosun"},
		{0x211a000, 0x4360000, "r--p", "/opt/bin/bosun"},
		{0x7fa900000000, 0x7fa900001000, "r--p", "/opt/bin/bosun"},
	}
	if len(ms) != len(want) {
		t.Fatalf("got %d mappings %+v, want %+v", len(ms), ms, want)
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, ms[i], want[i])
		}
	}
	if _, err := programMappings([]byte("zz-yy r--p 0 0:0 1 /opt/bin/bosun\n"), "/opt/bin/bosun"); err == nil {
		t.Error("a bad address range was accepted")
	}
}

// TestRelease pages out this test binary's own read-only mappings and
// checks the file-backed resident memory fell.
func TestRelease(t *testing.T) {
	before, after, err := Release()
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("the kernel has no MADV_PAGEOUT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if before <= 0 || after >= before {
		t.Fatalf("resident file-backed memory: %d KiB before, %d KiB after; want it to fall", before, after)
	}
	t.Logf("resident file-backed memory: %d KiB before, %d KiB after", before, after)
}
