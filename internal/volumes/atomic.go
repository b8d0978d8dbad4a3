// Package volumes sets up a pod's volumes on the node before its containers
// start (emptyDir, hostPath, configMap, secret, downwardAPI, projected) and
// tears them down after the containers are gone.
package volumes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File is one file of an atomically written volume.
type File struct {
	Data []byte      // content
	Mode os.FileMode // permission bits
}

const dataDirName = "..data"

// ValidatePath checks a relative path inside a volume: not absolute, no
// "..", no empty segments, bounded length (upstream's rules for items.path).
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("invalid path: must not be empty")
	case len(p) > 4096:
		return fmt.Errorf("invalid path %q: longer than 4096 characters", p[:64])
	case filepath.IsAbs(p):
		return fmt.Errorf("invalid path %q: must be relative", p)
	case strings.HasPrefix(p, ".."):
		return fmt.Errorf("invalid path %q: must not start with '..'", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return fmt.Errorf("invalid path %q: must not contain '..'", p)
		}
		if seg == "" {
			return fmt.Errorf("invalid path %q: must not contain empty segments", p)
		}
		if len(seg) > 255 {
			return fmt.Errorf("invalid path %q: a segment is longer than 255 characters", p)
		}
	}
	return nil
}

// WriteAtomic makes dir hold exactly files, so that a reader never sees a
// mix of old and new content: the files go into a new timestamped folder,
// the ..data symlink is swapped to it by rename, the user-visible names are
// links through ..data, and the old folder is removed last. Nothing changes
// on disk when the content is the same. gid >= 0 sets the files' group.
func WriteAtomic(dir string, files map[string]File, gid int) (changed bool, err error) {
	for p := range files {
		if err := ValidatePath(p); err != nil {
			return false, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	oldTS, _ := os.Readlink(filepath.Join(dir, dataDirName))
	if oldTS != "" && sameContent(filepath.Join(dir, oldTS), files) {
		return false, nil
	}
	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, err
	}
	for p, f := range files {
		if err := writeOne(filepath.Join(tsDir, p), f, gid); err != nil {
			os.RemoveAll(tsDir)
			return false, err
		}
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		os.RemoveAll(tsDir)
		return false, err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataDirName)); err != nil {
		os.RemoveAll(tsDir)
		return false, err
	}
	if err := linkTopLevel(dir, files); err != nil {
		return true, err
	}
	if oldTS != "" && oldTS != filepath.Base(tsDir) {
		_ = os.RemoveAll(filepath.Join(dir, oldTS))
	}
	return true, nil
}

func writeOne(path string, f File, gid int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, f.Data, f.Mode); err != nil {
		return err
	}
	if err := os.Chmod(path, f.Mode); err != nil { // WriteFile's mode is masked by umask
		return err
	}
	if gid >= 0 {
		return os.Lchown(path, -1, gid)
	}
	return nil
}

// sameContent reports whether folder already holds exactly files.
func sameContent(folder string, files map[string]File) bool {
	seen := 0
	err := filepath.Walk(folder, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(folder, p)
		f, ok := files[rel]
		if !ok || info.Mode().Perm() != f.Mode.Perm() {
			return fmt.Errorf("differs")
		}
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(data, f.Data) {
			return fmt.Errorf("differs")
		}
		seen++
		return nil
	})
	return err == nil && seen == len(files)
}

// linkTopLevel makes dir/<first segment> -> ..data/<first segment> for every
// file, and removes links of names no longer present.
func linkTopLevel(dir string, files map[string]File) error {
	want := map[string]bool{}
	for p := range files {
		want[strings.SplitN(p, "/", 2)[0]] = true
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		link := filepath.Join(dir, n)
		target := filepath.Join(dataDirName, n)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || want[e.Name()] {
			continue
		}
		if e.Type()&os.ModeSymlink != 0 {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}
