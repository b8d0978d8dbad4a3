package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// imageSpec is one offline image: how to fill its rootfs and its config.
type imageSpec struct {
	ref    string                           // the name pods use
	fill   func(l *layout, r *rootfs) error // adds the image's files
	config imageConfig                      // entrypoint, cmd, env, user
}

// offlineImages is the one list of images the local cluster provides without a
// registry. Add an image with one line here (and a fill function if new).
var offlineImages = []imageSpec{
	{ref: pauseImage, fill: fillPause, config: imageConfig{Entrypoint: []string{"/pause"}, User: "65535:65535"}},
	{ref: "registry.k8s.io/e2e-test-images/busybox:1.37.0-1", fill: fillBusybox, config: busyboxConfig},
	{ref: "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", fill: fillBusybox, config: busyboxConfig},
	{ref: "registry.k8s.io/e2e-test-images/nonroot:1.5", fill: fillBusybox, config: imageConfig{Cmd: []string{"sh"}, Env: []string{defaultPath}, User: "1234"}},
	{ref: "registry.k8s.io/e2e-test-images/nonewprivs:1.4", fill: fillNonewprivs, config: imageConfig{Cmd: []string{"nnp"}, Env: []string{defaultPath}}},
	{ref: "registry.k8s.io/e2e-test-images/agnhost:2.63.0", fill: fillAgnhost, config: agnhostConfig},
	// The suite's previous agnhost (StatefulSets, kubectl's update demo).
	{ref: "registry.k8s.io/e2e-test-images/agnhost:2.55", fill: fillAgnhost, config: agnhostConfig},
	{ref: "registry.k8s.io/e2e-test-images/kitten:1.8", fill: fillWebserver("kitten"), config: webserverConfig},
	{ref: "registry.k8s.io/e2e-test-images/nautilus:1.8", fill: fillWebserver("nautilus"), config: webserverConfig},
	{ref: "registry.k8s.io/e2e-test-images/nginx:1.27-0", fill: fillNginx, config: nginxConfig},
	{ref: "registry.k8s.io/e2e-test-images/nginx:1.15-4", fill: fillNginx, config: nginxConfig},
	{ref: "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.0.0", fill: fillDNSTesting, config: busyboxConfig},
	{ref: "registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2", fill: fillSampleAPIServer, config: imageConfig{Entrypoint: []string{"/sample-apiserver"}, Env: []string{defaultPath}}},
	{ref: "registry.k8s.io/etcd:3.6.8-0", fill: fillEtcd, config: imageConfig{Cmd: []string{"/usr/local/bin/etcd"}, Env: []string{defaultPath}}},
	{ref: corednsImage, fill: fillCoreDNS, config: imageConfig{Entrypoint: []string{"/coredns"}}},
	{ref: metricsServerImage, fill: fillMetricsServer, config: imageConfig{Entrypoint: []string{"/metrics-server"}, User: "1000:1000"}},
	{ref: prometheusImage, fill: fillPrometheus, config: imageConfig{Entrypoint: []string{"/bin/prometheus"}, User: "65534:65534"}},
	// The DRA specs' driver pods: busybox and hostpathplugin's proxy mode.
	{ref: "registry.k8s.io/sig-storage/hostpathplugin:v1.17.1", fill: fillHostpathPlugin, config: busyboxConfig},
	// Upstream's sample device plugin, built from the pinned source, under the
	// tag its DaemonSet manifest (test/e2e/testing-manifests) names.
	{ref: "registry.k8s.io/e2e-test-images/sample-device-plugin:1.7", fill: fillSampleDevicePlugin,
		config: imageConfig{Entrypoint: []string{"/sampledeviceplugin", "-alsologtostderr"}, Env: []string{defaultPath}}},
}

var agnhostConfig = imageConfig{
	Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: []string{defaultPath},
	ExposedPorts: map[string]struct{}{"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}, "5000/tcp": {}},
}

// kitten and nautilus are agnhost serving their picture (test-webserver).
var webserverConfig = imageConfig{Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"}, Env: []string{defaultPath}}

// The e2e nginx images stand in as busybox's httpd serving nginx's folder on 80.
var nginxConfig = imageConfig{Cmd: []string{"httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"}, Env: []string{defaultPath},
	ExposedPorts: map[string]struct{}{"80/tcp": {}}}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var busyboxConfig = imageConfig{Cmd: []string{"sh"}, Env: []string{defaultPath}}

// busyboxBinary is upstream's busybox release built by hack/build-tools.sh
// (Debian's drops environment variables that are not shell names).
func busyboxBinary(l *layout) string { return filepath.Join(l.root, "_output", "bin", "busybox") }

func fillPause(l *layout, r *rootfs) error {
	bin := filepath.Join(l.root, "_output", "images", "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./hack/images/pause")
	cmd.Dir, cmd.Env = l.root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build pause: %v: %s", err, out)
	}
	return r.hostFile("/pause", bin, 0o755)
}

const passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`

const group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
`

// fillBusybox lays out busybox-static with a link per applet.
func fillBusybox(l *layout, r *rootfs) error {
	if err := r.hostFile("/bin/busybox", busyboxBinary(l), 0o755); err != nil {
		return fmt.Errorf("%w (hack/build-tools.sh busybox builds it)", err)
	}
	out, err := exec.Command(busyboxBinary(l), "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "bin/busybox" {
			r.symlink(applet, "/bin/busybox")
			// The registry's busybox image has every applet in /bin too.
			r.symlink("/bin/"+filepath.Base(applet), "/bin/busybox")
		}
	}
	for _, d := range []string{"/root", "/home", "/var", "/var/spool/mail", "/var/www", "/etc", "/proc", "/sys", "/dev", "/usr/sbin"} {
		r.dir(d, 0o755)
	}
	r.dir("/tmp", 0o1777)
	r.file("/etc/passwd", []byte(passwd), 0o644)
	r.file("/etc/group", []byte(group), 0o644)
	return nil
}

// dashAsSh makes dash the image's sh: Debian's busybox sh runs its own
// applets (nc without -u, nslookup) whatever PATH says, where the
// registry's agnhost image runs the programs it carries.
func dashAsSh(r *rootfs) error {
	if err := r.hostBinaryWithLibs("/bin/dash"); err != nil {
		return err
	}
	r.symlink("/bin/sh", "dash")
	return nil
}

// fillAgnhost is the busybox rootfs plus the agnhost test binary, as upstream's
// agnhost Dockerfile lays it out.
func fillAgnhost(l *layout, r *rootfs) error {
	if err := fillBusybox(l, r); err != nil {
		return err
	}
	if err := r.hostFile("/agnhost", l.binary("agnhost"), 0o755); err != nil {
		return fmt.Errorf("%w (hack/build-tools.sh agnhost builds it)", err)
	}
	r.symlink("/agnhost-2", "agnhost")
	porter, err := upstreamSourceDir("test/images/agnhost/porter")
	if err != nil {
		return err
	}
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		if err := r.hostFile("/"+f, filepath.Join(porter, f), 0o644); err != nil {
			return err
		}
	}
	r.dir("/uploads", 0o755)
	// The real agnhost image carries curl, nc and bash, which many specs run
	// inside it; Debian's, with their libraries, stand in.
	for _, tool := range agnhostTools {
		if err := r.hostBinaryWithLibs(tool); err != nil {
			return fmt.Errorf("%w (install Debian's curl and netcat-openbsd)", err)
		}
	}
	r.symlink("/usr/bin/nc", "/bin/nc.openbsd")
	if err := addDNSTools(r); err != nil {
		return err
	}
	if err := dashAsSh(r); err != nil {
		return err
	}
	r.file("/etc/passwd", []byte(passwd+"user-defined-in-image:x:1000:1000:Linux User,,,:/home/user-defined-in-image:/bin/sh\n"), 0o644)
	r.file("/etc/group", []byte(group+"user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"), 0o644)
	r.dir("/home/user-defined-in-image", 0o755)
	return fillFakeRegistry(l, r)
}

// fillFakeRegistry lays the offline pause image out in /var/registry as
// upstream's agnhost image carries it (its Dockerfile's prepare_registry.sh:
// registry.k8s.io/pause as pause:testing), for agnhost's fake-registry-server,
// which the spec "should be able to pull from private registry with secret"
// serves images from. The pause image's archive is built first.
func fillFakeRegistry(l *layout, r *rootfs) error {
	blobs, err := ociBlobs(l.imageFile(pauseImage))
	if err != nil {
		return fmt.Errorf("the fake registry's pause image: %w", err)
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		return fmt.Errorf("the fake registry's pause image: index.json: %v", err)
	}
	manifestDigest := index.Manifests[0].Digest
	manifest := blobs[manifestDigest]
	var m struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return fmt.Errorf("the fake registry's pause image: manifest: %w", err)
	}
	// The registry's storage layout: <dir>/sha256/<first two>/<hash>/data.
	stored := func(dir, digest string) string {
		hash := strings.TrimPrefix(digest, "sha256:")
		return filepath.Join("/var/registry/pause", dir, "sha256", hash[:2], hash, "data")
	}
	r.file("/var/registry/pause/manifests/testing", []byte(manifestDigest+"\n"), 0o644)
	r.file(stored("manifests", manifestDigest), manifest, 0o644)
	for _, d := range append([]descriptor{m.Config}, m.Layers...) {
		b, ok := blobs[d.Digest]
		if !ok {
			return fmt.Errorf("the fake registry's pause image lacks blob %s", d.Digest)
		}
		r.file(stored("blobs", d.Digest), b, 0o644)
	}
	return nil
}

// fillNonewprivs is busybox plus upstream's nnp test program, setuid root,
// which prints the effective user it runs as.
func fillNonewprivs(l *layout, r *rootfs) error {
	if err := fillBusybox(l, r); err != nil {
		return err
	}
	if err := r.hostFile("/usr/local/bin/nnp", l.binary("nnp"), 0o4755); err != nil {
		return fmt.Errorf("%w (hack/build-tools.sh nnp builds it)", err)
	}
	return nil
}

// agnhostTools are the host programs copied into the agnhost image.
var agnhostTools = []string{"/usr/bin/curl", "/bin/nc.openbsd", "/bin/bash"}

// dnsTools are the resolver programs the DNS specs run (dig, host,
// nslookup from Debian's bind9-dnsutils; getent from glibc), with the glibc
// resolver's configuration.
var dnsTools = []string{"/usr/bin/dig", "/usr/bin/host", "/usr/bin/nslookup", "/usr/bin/getent"}

func addDNSTools(r *rootfs) error {
	for _, tool := range dnsTools {
		if err := r.hostBinaryWithLibs(tool); err != nil {
			return fmt.Errorf("%w (install Debian's bind9-dnsutils)", err)
		}
	}
	r.file("/etc/nsswitch.conf", []byte("passwd: files\ngroup: files\nhosts: files dns\n"), 0o644)
	return nil
}

// fillDNSTesting is the querier image of the DNS specs (jessie-dnsutils):
// busybox with the resolver programs and GNU dd.
func fillDNSTesting(l *layout, r *rootfs) error {
	if err := fillBusybox(l, r); err != nil {
		return err
	}
	if err := addDNSTools(r); err != nil {
		return err
	}
	// Upstream's image is Debian's, with coreutils: the storage specs write
	// to block volumes with GNU dd's oflag=nocache, which busybox's lacks.
	if err := r.hostBinaryWithLibs("/bin/dd"); err != nil {
		return err
	}
	return dashAsSh(r)
}

// fillHostpathPlugin is busybox with hack/hostpath-proxy as /hostpathplugin:
// the proxy mode upstream's DRA specs run in their driver pods.
var fillHostpathPlugin = fillBusyboxWith("/hostpathplugin", "hostpath-proxy")

// fillSampleDevicePlugin is busybox with upstream's sample device plugin
// (test/images/sample-device-plugin) as /sampledeviceplugin.
var fillSampleDevicePlugin = fillBusyboxWith("/sampledeviceplugin", "sample-device-plugin")

// fillBusyboxWith is busybox with the tool hack/build-tools.sh built as
// binary at dest.
func fillBusyboxWith(dest, binary string) func(*layout, *rootfs) error {
	return func(l *layout, r *rootfs) error {
		if err := fillBusybox(l, r); err != nil {
			return err
		}
		if err := r.hostFile(dest, l.binary(binary), 0o755); err != nil {
			return fmt.Errorf("%w (hack/build-tools.sh %s builds it)", err, binary)
		}
		return nil
	}
}

// fillWebserver is agnhost with the picture and data of upstream's kitten or
// nautilus image.
func fillWebserver(name string) func(*layout, *rootfs) error {
	return func(l *layout, r *rootfs) error {
		if err := fillAgnhost(l, r); err != nil {
			return err
		}
		html, err := upstreamSourceDir(filepath.Join("test/images", name, "html"))
		if err != nil {
			return err
		}
		for _, f := range []string{name + ".jpg", "data.json"} {
			if err := r.hostFile("/"+f, filepath.Join(html, f), 0o644); err != nil {
				return err
			}
		}
		// Upstream's images are built on Alpine; the image volume spec mounts
		// kitten and reads its os-release.
		r.file("/etc/os-release", []byte("NAME=\"Alpine Linux\"\nID=alpine\nPRETTY_NAME=\"Alpine Linux (Bosun's offline stand-in)\"\n"), 0o644)
		return nil
	}
}

func fillNginx(l *layout, r *rootfs) error {
	if err := fillBusybox(l, r); err != nil {
		return err
	}
	r.file("/usr/share/nginx/html/index.html", []byte("<html><body><h1>Welcome to nginx!</h1></body></html>\n"), 0o644)
	return nil
}

// fillSampleAPIServer is the pinned k8s.io/sample-apiserver, for the
// Aggregator spec.
func fillSampleAPIServer(l *layout, r *rootfs) error {
	if err := fillBusybox(l, r); err != nil {
		return err
	}
	return r.hostFile("/sample-apiserver", l.binary("sample-apiserver"), 0o755)
}

// fillEtcd is a static etcd (the Aggregator spec runs one beside the
// sample apiserver).
func fillEtcd(l *layout, r *rootfs) error {
	if err := fillBusybox(l, r); err != nil {
		return err
	}
	return r.hostFile("/usr/local/bin/etcd", l.binary("etcd-static"), 0o755)
}

// upstreamSourceDir finds a folder of the pinned k8s.io/kubernetes module.
func upstreamSourceDir(rel string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes")
	cmd.Dir = filepath.Join(repoRoot(), "tools")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate k8s.io/kubernetes source: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), rel), nil
}

// imageFile is the OCI archive of image ref.
func (l *layout) imageFile(ref string) string {
	return filepath.Join(l.root, "_output", "images", strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
}

// buildImages builds each offline image's archive and returns its digest.
func (l *layout) buildImages() (map[string]string, error) {
	if err := os.MkdirAll(filepath.Join(l.root, "_output", "images"), 0o755); err != nil {
		return nil, err
	}
	digests := map[string]string{}
	for _, img := range offlineImages {
		r := newRootfs()
		if err := img.fill(l, r); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.ref, err)
		}
		digest, err := ociArchive(l.imageFile(img.ref), img.ref, r, img.config)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.ref, err)
		}
		digests[img.ref] = digest
	}
	return digests, nil
}

// importImages imports each image into the node's containerd (k8s.io
// namespace) unless the same manifest is there already.
func (l *layout) importImages(digests map[string]string) error {
	have, err := l.importedImages()
	if err != nil {
		return err
	}
	for ref, digest := range digests {
		if have[ref] == digest {
			continue
		}
		out, err := exec.Command(l.runtimeBinary("ctr"), "--address", l.containerdSock(), "-n", "k8s.io", "images", "import", l.imageFile(ref)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import %s: %v: %s", ref, err, out)
		}
		fmt.Printf("imported %s (%s) into %s's containerd\n", ref, digest[:19], l.nodeName)
	}
	return nil
}

// importedImages maps each image name in the node's containerd (k8s.io
// namespace) to its digest.
func (l *layout) importedImages() (map[string]string, error) {
	out, err := exec.Command(l.runtimeBinary("ctr"), "--address", l.containerdSock(), "-n", "k8s.io", "images", "ls").Output()
	if err != nil {
		return nil, fmt.Errorf("ctr images ls: %w", err)
	}
	have := map[string]string{}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 3 {
			have[f[0]] = f[2]
		}
	}
	return have, nil
}
