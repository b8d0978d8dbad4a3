// Package mounts reads the mount table (/proc/self/mountinfo): which mount
// points lie at or below a folder, and whether a folder is one.
package mounts

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Under lists mount points at or below dir, deepest first, from
// /proc/self/mountinfo (octal escapes such as \040 decoded).
func Under(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, " ") // fields are space-separated; a path's own whitespace is escaped, or not (\v, \f)
		if len(f) > 4 {
			mp := unescape.Replace(f[4])
			if mp == dir || strings.HasPrefix(mp, dir+"/") {
				out = append(out, mp)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// At tells whether path is itself a mount point in the mount table. It
// compares the table's escaped mount points with path escaped once, line by
// line, without splitting the table: pod start asks this for each volume,
// and with many pods the table is long.
func At(path string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	return inTable(data, path)
}

// inTable tells whether mountinfo text data lists mount point path.
func inTable(data []byte, path string) bool {
	want := []byte(mangle.Replace(path))
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		// id parent major:minor root mount-point ...
		for k := 0; k < 4 && line != nil; k++ {
			if i := bytes.IndexByte(line, ' '); i >= 0 {
				line = line[i+1:]
			} else {
				line = nil
			}
		}
		if i := bytes.IndexByte(line, ' '); i >= 0 {
			line = line[:i]
		}
		if line != nil && bytes.Equal(line, want) {
			return true
		}
	}
	return false
}

// unescape decodes the kernel's escapes in a mount table's path.
var unescape = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// mangle escapes a path as the kernel writes it in the mount table.
var mangle = strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`)

// IsMountPoint tells whether dir is a mount point: its device differs from
// its parent's, or (a bind mount of a folder on the same file system) the
// mount table lists it.
func IsMountPoint(dir string) bool {
	var st, parent syscall.Stat_t
	if syscall.Lstat(dir, &st) != nil || syscall.Lstat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev || At(dir)
}
