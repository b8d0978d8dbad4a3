package mounts

import "testing"

func TestInTable(t *testing.T) {
	table := []byte(`22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
30 22 0:30 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/my\040data rw - tmpfs tmpfs rw
31 22 0:31 / /var/lib/kubelet/pods/u1/volumes/back\134slash rw - tmpfs tmpfs rw
32 22 0:32 / /mnt/a rw - tmpfs tmpfs rw`)
	for path, want := range map[string]bool{
		"/proc": true,
		"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/my data": true,
		`/var/lib/kubelet/pods/u1/volumes/back\slash`:                      true,
		"/mnt/a":  true,
		"/mnt":    false,
		"/mnt/ab": false,
		"/mnt/a/": false,
		"rw":      false,
		"0:32":    false,
		"":        false,
	} {
		if got := inTable(table, path); got != want {
			t.Errorf("%q: got %v, want %v", path, got, want)
		}
	}
	if !At("/proc") {
		t.Error("/proc is not a mount point in this process's mount table")
	}
	if At("/proc/self") {
		t.Error("/proc/self is a mount point?")
	}
}
