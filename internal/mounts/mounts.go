// Package mounts reads the mount table (/proc/self/mountinfo): which mount
// points lie at or below a folder, and whether a folder is one.
package mounts

import (
	"os"
	"path/filepath"
	"slices"
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
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
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

// At tells whether path is itself a mount point in the mount table.
func At(path string) bool {
	return slices.Contains(Under(path), path)
}

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
