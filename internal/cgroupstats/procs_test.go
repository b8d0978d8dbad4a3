package cgroupstats

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// A cgroup's processes are its own cgroup.procs, as cAdvisor counts them: a
// pod's or QoS class's row does not repeat its containers' processes.
func TestProcsAreTheCgroupsOwn(t *testing.T) {
	root := t.TempDir()
	for dir, procs := range map[string]string{
		"kubepods":                    "",
		"kubepods/besteffort":         "1\n",
		"kubepods/besteffort/poda":    "",
		"kubepods/besteffort/poda/c1": "11\n12\n",
		"kubepods/besteffort/poda/c2": "13\n",
	} {
		write(t, filepath.Join(root, "cpu", dir), map[string]string{"cgroup.procs": procs, "cpu.shares": "2\n"})
	}
	r := New(root)
	for name, want := range map[string][]int{
		"/kubepods":                    nil,
		"/kubepods/besteffort":         {1},
		"/kubepods/besteffort/poda":    nil,
		"/kubepods/besteffort/poda/c1": {11, 12},
		"/kubepods/besteffort/poda/c2": {13},
	} {
		s, err := r.Read(name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Procs, want) {
			t.Errorf("%s: processes %v, want %v", name, s.Procs, want)
		}
	}
}

// OpenFiles counts what a process has open now.
func TestOpenFiles(t *testing.T) {
	pid := os.Getpid()
	before, _ := OpenFiles([]int{pid})
	if before == 0 {
		t.Fatal("no open files counted for the test's own process")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if after, _ := OpenFiles([]int{pid}); after != before+1 {
		t.Errorf("counted %d open files, want %d with one more opened", after, before+1)
	}
	if twice, _ := OpenFiles([]int{pid, pid}); twice != 2*(before+1) {
		t.Errorf("counted %d for the process given twice, want %d", twice, 2*(before+1))
	}
	fds, sockets := OpenFiles([]int{pid})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fds2, sockets2 := OpenFiles([]int{pid}); fds2 < fds+1 || sockets2 != sockets+1 {
		t.Errorf("with a listening socket more: %d open files, %d sockets; before %d, %d", fds2, sockets2, fds, sockets)
	}
	if fds, _ := OpenFiles([]int{1 << 30}); fds != 0 {
		t.Errorf("a process that is not there has %d open files", fds)
	}
	if v, ok := MaxOpenFilesSoft(pid); !ok || v == 0 {
		t.Errorf("soft open-files limit %d, %v", v, ok)
	}
}

// FileCounts counts a process's open files at every call and its sockets
// again when that number changed, or a minute after its last count.
func TestFileCounts(t *testing.T) {
	pid := os.Getpid()
	var c FileCounts
	now := time.Now()
	fds, sockets := c.Count([]int{pid}, now)
	if want, _ := OpenFiles([]int{pid}); fds != want || fds == 0 {
		t.Fatalf("counted %d open files, OpenFiles %d", fds, want)
	}
	x, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(x)
	now = now.Add(10 * time.Second)
	if f, s := c.Count([]int{pid}, now); f != fds+1 || s != sockets {
		t.Fatalf("with a file more: %d files, %d sockets; want %d, %d", f, s, fds+1, sockets)
	}
	// A socket more: the number of files changed, the sockets are counted.
	sock, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	if f, s := c.Count([]int{pid}, now); f != fds+2 || s != sockets+1 {
		t.Fatalf("with a socket more: %d files, %d sockets; want %d, %d", f, s, fds+2, sockets+1)
	}
	// The file at x replaced by a socket: as many files as before, and the
	// socket count kept until a minute after it was made.
	if err := syscall.Dup3(sock, x, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	if f, s := c.Count([]int{pid}, now); f != fds+2 || s != sockets+1 {
		t.Fatalf("a file swapped for a socket, right after: %d files, %d sockets; want %d, %d kept", f, s, fds+2, sockets+1)
	}
	now = now.Add(socketsRecountEvery)
	if f, s := c.Count([]int{pid}, now); f != fds+2 || s != sockets+2 {
		t.Errorf("a minute after the swap: %d files, %d sockets; want %d, %d", f, s, fds+2, sockets+2)
	}
	syscall.Close(sock)
	if f, s := c.Count([]int{pid}, now); f != fds+1 || s != sockets+1 {
		t.Errorf("a socket closed: %d files, %d sockets; want %d, %d", f, s, fds+1, sockets+1)
	}
	// A process no longer asked about is forgotten.
	c.Count(nil, now.Add(2*socketsRecountEvery))
	if len(c.procs) != 0 {
		t.Errorf("%d processes remembered after none was asked about for two minutes", len(c.procs))
	}
}
