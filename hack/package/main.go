// Command package builds Bosun's .deb and .rpm with nfpm (make package):
// /usr/bin/bosun, the systemd unit /lib/systemd/system/bosun.service (the
// seed's unit with bosun in ExecStart), the example configurations and the
// seed's folders.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm"
)

func main() {
	root := flag.String("root", ".", "the repository")
	bin := flag.String("bin", "_output/bin/bosun", "the bosun binary to package")
	version := flag.String("version", "0.1.0", "the package version")
	out := flag.String("out", "_output/packages", "where the packages go")
	formats := flag.String("formats", "deb,rpm", "package formats")
	flag.Parse()
	for _, f := range strings.Split(*formats, ",") {
		file, err := build1(*root, *bin, *version, *out, f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "package: %s: %v\n", f, err)
			os.Exit(1)
		}
		fmt.Println(file)
	}
}

// contents are the package's files, sources relative to the repository.
func contents(root, bin string) files.Contents {
	file := func(src, dst string, mode os.FileMode, typ string) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: typ, FileInfo: &files.ContentFileInfo{Mode: mode}}
	}
	dir := func(dst string, mode os.FileMode) *files.Content {
		return &files.Content{Destination: dst, Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: mode}}
	}
	return files.Contents{
		file(bin, "/usr/bin/bosun", 0o755, ""),
		file(filepath.Join(root, "deploy", "bosun.service"), "/lib/systemd/system/bosun.service", 0o644, ""),
		file(filepath.Join(root, "deploy", "kubelet-config.yaml"), "/usr/share/bosun/examples/kubelet-config.yaml", 0o644, ""),
		file(filepath.Join(root, "deploy", "kubelet-config.json"), "/usr/share/bosun/examples/kubelet-config.json", 0o644, ""),
		dir("/etc/kubernetes", 0o755),
		dir("/etc/kubernetes/cert", 0o700),
		dir("/var/lib/kubelet", 0o700),
	}
}

// build writes one package and returns its path.
func build1(root, bin, version, out, format string) (string, error) {
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:        "bosun",
		Arch:        "amd64",
		Platform:    "linux",
		Version:     version,
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  "Bosun developers <bosun@example.invalid>",
		Description: "Bosun, a Kubernetes node agent: a drop-in for the kubelet",
		Homepage:    "https://github.com/bosun-dev/bosun",
		License:     "Apache-2.0",
		Overridables: nfpm.Overridables{
			Contents:   contents(root, bin),
			Recommends: []string{"containerd", "iptables", "conntrack"},
			Conflicts:  []string{"kubelet"},
		},
	})
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", err
	}
	p, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(out, p.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := p.Package(info, f); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return "", err
	}
	return path, f.Close()
}
