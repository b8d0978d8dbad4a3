package cgroupstats

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Pass reads many cgroups of one tree at one moment, as a statistics
// collection does: a process is in its container's cgroup and in every
// cgroup above it (pod, QoS class, kubepods, the root), so a Pass reads each
// cgroup folder's own processes, and each process's open files and limits,
// once. A Pass is for one goroutine and one collection.
type Pass struct {
	r     *Reader
	dirs  map[string]*dirProcs // folder of the cpu hierarchy -> its processes
	files map[int][2]uint64    // pid -> fds, sockets
	soft  map[int]softLimit    // pid -> Max open files, soft
}

type dirProcs struct {
	own      []int
	children []string
	all      []int // own and every descendant's; nil until asked
	done     bool
}

type softLimit struct {
	v  int64
	ok bool
}

// NewPass starts a pass over r's tree.
func (r *Reader) NewPass() *Pass {
	r.forgetOldLimits(time.Now())
	return &Pass{r: r, dirs: map[string]*dirProcs{}, files: map[int][2]uint64{}, soft: map[int]softLimit{}}
}

// Read is Reader.Read, with the processes of the cgroup and its descendants
// taken from what the pass has read already.
func (p *Pass) Read(name string) (*Stats, error) {
	return p.r.read(name, func() []int { return p.procs(p.r.dir("cpu", name)) })
}

// procs lists the processes of folder dir and its descendants, reading
// each folder once per pass.
func (p *Pass) procs(dir string) []int {
	d := p.dirs[dir]
	if d == nil {
		d = &dirProcs{}
		p.dirs[dir] = d
		d.own = parsePids(readFast(filepath.Join(dir, "cgroup.procs")))
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				d.children = append(d.children, filepath.Join(dir, e.Name()))
			}
		}
	}
	if !d.done {
		d.all = append([]int(nil), d.own...)
		for _, c := range d.children {
			d.all = append(d.all, p.procs(c)...)
		}
		d.done = true
	}
	return d.all
}

// OpenFiles is the package's OpenFiles, each process read once per pass.
func (p *Pass) OpenFiles(pids []int) (fds, sockets uint64) {
	for _, pid := range pids {
		n, ok := p.files[pid]
		if !ok {
			n[0], n[1] = OpenFiles([]int{pid})
			p.files[pid] = n
		}
		fds += n[0]
		sockets += n[1]
	}
	return fds, sockets
}

// MaxOpenFilesSoft is the package's MaxOpenFilesSoft, once per process.
func (p *Pass) MaxOpenFilesSoft(pid int) (int64, bool) {
	l, ok := p.soft[pid]
	if !ok {
		l.v, l.ok = MaxOpenFilesSoft(pid)
		p.soft[pid] = l
	}
	return l.v, l.ok
}

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
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			*bp = buf
			return nil
		}
		if n == 0 {
			*bp = buf
			return append(make([]byte, 0, len(buf)), buf...)
		}
		buf = buf[:len(buf)+n]
	}
}

// readBuffers are readFast's buffers.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readFastErr is readFast with the open's error kept (a missing file tells
// "no such limit" apart from a zero).
func readFastErr(path string) ([]byte, error) {
	if data := readFast(path); data != nil {
		return data, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s: unreadable", path)
}
