// Package selfmem gives back to the kernel the pages of the agent's own
// program that only its start touched.
//
// Starting runs every package's initialisation, parses the configuration,
// bootstraps certificates and registers the Node: code and read-only data
// spread over most of the executable. Those pages stay mapped, and counted
// in the agent's resident memory, long after they were last used. Once the
// agent has settled, Release asks the kernel to reclaim the executable's
// read-only mappings (MADV_PAGEOUT, with MADV_RANDOM so that a page touched
// again comes back alone) and drops the file's unmapped pages from the page
// cache (FADV_DONTNEED). The pages the running agent still uses come back
// on their next touch. Writable mappings (the program's data, the heap) are
// left alone.
package selfmem

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// mapping is one line of /proc/self/maps.
type mapping struct {
	start, end uintptr
	perms      string
	path       string
}

// programMappings returns the read-only mappings of the executable file
// named exe in the maps text.
func programMappings(maps []byte, exe string) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 {
			continue
		}
		path := strings.TrimSuffix(strings.Join(fs[5:], " "), " (deleted)")
		if path != exe || strings.Contains(fs[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(fs[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps line %q: no address range", sc.Text())
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("maps line %q: bad address range", sc.Text())
		}
		out = append(out, mapping{start: uintptr(start), end: uintptr(end), perms: fs[1], path: path})
	}
	return out, sc.Err()
}

// rssFileKiB is the file-backed part of the process's resident memory, from
// /proc/self/status (0 when it cannot be read).
func rssFileKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb
			}
		}
	}
	return 0
}

// Release asks the kernel to reclaim the resident pages of the executable's
// read-only mappings. It returns the file-backed resident memory before and
// right after, in KiB. A kernel without MADV_PAGEOUT (before 5.4) returns
// an error and nothing changes.
func Release() (before, after int64, err error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, 0, err
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, 0, err
	}
	ms, err := programMappings(maps, exe)
	if err != nil {
		return 0, 0, err
	}
	if len(ms) == 0 {
		return 0, 0, fmt.Errorf("no read-only mapping of %s in /proc/self/maps", exe)
	}
	before = rssFileKiB()
	for _, m := range ms {
		// The range stays mapped for the life of the process (the program's
		// own text and read-only data), so it is named by address alone.
		// MADV_RANDOM first: without it, each page the agent touches again
		// is read back with its neighbours (readahead) and mapped with them
		// (fault-around), and most of what was given back returns.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_RANDOM); e != 0 {
			return before, rssFileKiB(), fmt.Errorf("madvise(MADV_RANDOM) on %x-%x of %s: %w", m.start, m.end, exe, e)
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_PAGEOUT); e != 0 {
			return before, rssFileKiB(), fmt.Errorf("madvise(MADV_PAGEOUT) on %x-%x of %s: %w", m.start, m.end, exe, e)
		}
	}
	// Pages no longer mapped can now leave the page cache too; left there,
	// a touch maps them back with their cached neighbours (fault-around).
	if f, err := os.Open(exe); err == nil {
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
	}
	return before, rssFileKiB(), nil
}

// ReleaseWhenSettled waits for settled to close, then for quiet more, and
// releases the start-up pages once, logging what it gave back.
func ReleaseWhenSettled(ctx context.Context, settled <-chan struct{}, quiet time.Duration) {
	select {
	case <-settled:
	case <-ctx.Done():
		return
	}
	select {
	case <-time.After(quiet):
	case <-ctx.Done():
		return
	}
	logger := klog.FromContext(ctx)
	before, after, err := Release()
	if err != nil {
		logger.V(2).Info("Kept the program's start-up pages", "err", err)
		return
	}
	logger.V(2).Info("Gave back the program's start-up pages", "residentFileKiBBefore", before, "residentFileKiBAfter", after)
}
