package cgroupstats

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestReadRecord(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 1, 4095, 4096, 4097, 10000} {
		data := bytes.Repeat([]byte("x"), size)
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for name, read := range map[string]func(string) []byte{"readRecord": readRecord, "readFast": readFast} {
			if got := read(path); !bytes.Equal(got, data) || got == nil {
				t.Errorf("%s of %d bytes: got %d bytes (nil: %v)", name, size, len(got), got == nil)
			}
		}
	}
	if readRecord(filepath.Join(dir, "missing")) != nil {
		t.Error("a missing file read as something")
	}
	// A kernel file of one record, read whole in one go.
	if data := readRecord("/proc/self/stat"); !bytes.HasSuffix(data, []byte("\n")) {
		t.Errorf("/proc/self/stat: %q", data)
	}
}
