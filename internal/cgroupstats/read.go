package cgroupstats

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

func parsePids(data []byte) []int {
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// readFast reads a small kernel file (a cgroup's or /proc's) with plain
// system calls: os.ReadFile's File also registers each file with the
// network poller, which a collection reading thousands of them a pass paid
// for in CPU. It reads into a reused buffer and returns a copy of just what
// was read (most files hold a number), so that a pass's thousands of reads
// do not each leave a page-sized buffer to the garbage collector. It
// returns nil when the file cannot be read.
func readFast(path string) []byte {
	return readFile(path, false)
}

// readRecord is readFast for a file the kernel writes as one record: a
// cgroup file holding a number or a table it prints in one go
// (memory.stat, cpu.stat, the blkio counters), not one listing a record
// per line (cgroup.procs). The kernel puts such a record whole into the
// first read that has room for it, so a read that left room over has read
// the file to its end, and the read that would have returned nothing more is
// not made. Most of a collection's reads are of these files.
func readRecord(path string) []byte {
	return readFile(path, true)
}

func readFile(path string, record bool) []byte {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	for err == syscall.EINTR {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	bp := readBuffers.Get().(*[]byte)
	defer readBuffers.Put(bp)
	buf := (*bp)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		room := cap(buf) - len(buf)
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			*bp = buf
			return nil
		}
		buf = buf[:len(buf)+n]
		if n == 0 || record && n < room {
			*bp = buf
			return append(make([]byte, 0, len(buf)), buf...)
		}
	}
}

// readBuffers are readFast's buffers.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readFastErr is readRecord with the open's error kept (a missing file tells
// "no such limit" apart from a zero).
func readFastErr(path string) ([]byte, error) {
	if data := readRecord(path); data != nil {
		return data, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s: unreadable", path)
}
