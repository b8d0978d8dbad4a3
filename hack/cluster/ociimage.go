package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// epoch is the modification time of every file in a built image, so that the
// same inputs give the same digests and an unchanged image is not re-imported.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// rootfs is an image's single layer, assembled in memory.
type rootfs struct {
	entries map[string]*tar.Header // by clean path without leading slash
	data    map[string][]byte      // file contents by path
}

func newRootfs() *rootfs {
	return &rootfs{entries: map[string]*tar.Header{}, data: map[string][]byte{}}
}

func (r *rootfs) parents(p string) {
	for dir := path.Dir(p); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if _, ok := r.entries[dir]; !ok {
			r.entries[dir] = &tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: epoch}
		}
	}
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// dir adds a directory with the given mode.
func (r *rootfs) dir(p string, mode int64) {
	p = clean(p)
	r.parents(p)
	r.entries[p] = &tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, ModTime: epoch}
}

// file adds a regular file with the given content and mode.
func (r *rootfs) file(p string, content []byte, mode int64) {
	p = clean(p)
	r.parents(p)
	r.entries[p] = &tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(content)), ModTime: epoch}
	r.data[p] = content
}

// hostFile adds a copy of a file from this machine.
func (r *rootfs) hostFile(p, src string, mode int64) error {
	content, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	r.file(p, content, mode)
	return nil
}

// hostBinaryWithLibs adds a dynamically linked program of this machine at
// the same path, with every shared library ldd names and the loader.
func (r *rootfs) hostBinaryWithLibs(path string) error {
	if err := r.hostFile(path, path, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", path, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if !strings.HasPrefix(f, "/") {
				continue
			}
			real, err := filepath.EvalSymlinks(f)
			if err != nil {
				return err
			}
			if err := r.hostFile(f, real, 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

// symlink adds p pointing at target.
func (r *rootfs) symlink(p, target string) {
	p = clean(p)
	r.parents(p)
	r.entries[p] = &tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777, ModTime: epoch}
}

// layer returns the gzip-compressed tar and the digest of the uncompressed one.
func (r *rootfs) layer() (gz []byte, diffID string, err error) {
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, n := range names {
		h := *r.entries[n]
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, "", err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(r.data[n]); err != nil {
				return nil, "", err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var zipped bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zipped, gzip.BestSpeed)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return zipped.Bytes(), digestOf(raw.Bytes()), nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// imageConfig is the part of the OCI image config a container runtime reads.
type imageConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

// ociArchive writes an OCI image-layout tar holding one single-layer image
// named ref, and returns the manifest digest.
func ociArchive(file, ref string, fsys *rootfs, cfg imageConfig) (string, error) {
	layer, diffID, err := fsys.layer()
	if err != nil {
		return "", err
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history":      []map[string]string{{"created": epoch.Format(time.RFC3339), "created_by": "bosun hack/cluster images"}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digestOf(layer), Size: int64(len(layer))}},
	})
	tag := ref[strings.LastIndex(ref, ":")+1:]
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType:   "application/vnd.oci.image.manifest.v1+json",
			Digest:      digestOf(manifest),
			Size:        int64(len(manifest)),
			Annotations: map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
			Platform:    map[string]string{"architecture": "amd64", "os": "linux"},
		}},
	})
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, content []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	for _, f := range []struct {
		name    string
		content []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
		{blobPath(layer), layer},
	} {
		if err := add(f.name, f.content); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := writeFileAtomic(file, out.Bytes(), fs.FileMode(0o644)); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	return digestOf(manifest), nil
}

// ociBlobs reads an archive ociArchive wrote: index.json by name, the blobs
// by digest.
func ociBlobs(file string) (map[string][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if hash, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok {
			out["sha256:"+hash] = b
		} else {
			out[h.Name] = b
		}
	}
}

func blobPath(b []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digestOf(b), "sha256:")
}
