package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Two local registries, run from Debian's docker-registry:
//   - the mirror (no auth) that containerd uses for registry.k8s.io and
//     docker.io, loaded with every offline image, so that pulls (policy
//     Always, a removed image) go through a real registry;
//   - a private one with htpasswd auth, holding privateImage, for pull
//     secrets.
//
// Both listen on node 1's address on the host bridge, which every node
// reaches (a node's own 127.0.0.1 is its namespace's loopback). Not on
// 5000: the e2e specs run a host-network registry on localhost:5000 on the
// node, which a listener on the node's address would keep from binding.
const (
	mirrorAddr    = hostIP + ":15000"
	privateAddr   = hostIP + ":15001"
	privateUser   = "bosun"
	privateImage  = privateAddr + "/private/busybox:1.37.0-1"
	privateSource = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
)

// mirroredRegistries are the registries whose pulls go to the mirror first.
var mirroredRegistries = map[string]string{
	"registry.k8s.io": "https://registry.k8s.io",
	"docker.io":       "https://registry-1.docker.io",
}

func (l *layout) registryDir(name string) string { return filepath.Join(l.out, "registry", name) }

func (l *layout) registriesHostsDir() string { return filepath.Join(l.out, "containerd", "certs.d") }

// privatePassword is the private registry's password, made once.
func (l *layout) privatePassword() (string, error) {
	file := filepath.Join(l.registryDir("private"), "password")
	if data, err := os.ReadFile(file); err == nil && len(data) > 0 {
		return strings.TrimSpace(string(data)), nil
	}
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", err
	}
	return pw, writeFileAtomic(file, []byte(pw+"\n"), 0o600)
}

// writeRegistryHosts writes containerd's per-registry host files.
func (l *layout) writeRegistryHosts() error {
	files := map[string]string{
		privateAddr: fmt.Sprintf("server = %q\n", "http://"+privateAddr),
	}
	for reg, server := range mirroredRegistries {
		files[reg] = fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, "http://"+mirrorAddr)
	}
	for reg, body := range files {
		dir := filepath.Join(l.registriesHostsDir(), reg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, "hosts.toml"), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ensureRegistries starts both registries unless they run already.
func (l *layout) ensureRegistries(ctx context.Context) error {
	pw, err := l.privatePassword()
	if err != nil {
		return err
	}
	for _, r := range []struct{ name, addr string }{{"registry-mirror", mirrorAddr}, {"registry-private", privateAddr}} {
		dir := l.registryDir(strings.TrimPrefix(r.name, "registry-"))
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			return err
		}
		cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
			filepath.Join(dir, "data"), r.addr)
		if r.addr == privateAddr {
			out, err := exec.Command("htpasswd", "-Bbn", privateUser, pw).Output()
			if err != nil {
				return fmt.Errorf("htpasswd: %w", err)
			}
			if err := writeFileAtomic(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
				return err
			}
			cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: bosun-local\n    path: %s\n", filepath.Join(dir, "htpasswd"))
		}
		file := filepath.Join(dir, "config.yml")
		old, _ := os.ReadFile(file)
		if string(old) != cfg {
			if err := writeFileAtomic(file, []byte(cfg), 0o644); err != nil {
				return err
			}
			l.stopDaemon(r.name, 5*time.Second)
		}
		if l.daemonPid(r.name) == 0 {
			if _, err := l.startDaemon(r.name, "docker-registry", "serve", file); err != nil {
				return err
			}
		}
		addr := r.addr
		if err := waitFor(ctx, 20*time.Second, r.name, func() error { return registryUp(addr) }); err != nil {
			return fmt.Errorf("%w\n%s", err, tailFile(l.logFile(r.name), 10))
		}
	}
	return nil
}

// registryUp: /v2/ answers 200, or 401 where auth is on.
func registryUp(addr string) error {
	resp, err := http.Get("http://" + addr + "/v2/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("registry at %s answered %s", addr, resp.Status)
	}
	return nil
}

// registryDigest is the digest a registry holds for repo:tag ("" if none).
func registryDigest(addr, repoTag, user, pw string) string {
	repo, tag, _ := strings.Cut(repoTag, ":")
	req, _ := http.NewRequest(http.MethodHead, "http://"+addr+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}

// pushImages loads the registries: every offline image into the mirror
// under its path (registry.k8s.io/x/y:t -> mirror/x/y:t), and privateSource
// into the private registry as privateImage. Images already there with the
// same digest are skipped.
func (l *layout) pushImages(digests map[string]string) error {
	pw, err := l.privatePassword()
	if err != nil {
		return err
	}
	type push struct{ local, addr, repoTag, user string }
	var pushes []push
	for ref := range digests {
		_, path, ok := strings.Cut(ref, "/")
		if !ok {
			continue
		}
		if host := ref[:strings.IndexByte(ref, '/')]; mirroredRegistries[host] == "" {
			continue
		}
		pushes = append(pushes, push{ref, mirrorAddr, path, ""})
	}
	pushes = append(pushes, push{privateSource, privateAddr, strings.TrimPrefix(privateImage, privateAddr+"/"), privateUser})
	for _, p := range pushes {
		want := digests[p.local]
		if want != "" && registryDigest(p.addr, p.repoTag, p.user, pw) == want {
			continue
		}
		args := []string{"--address", l.containerdSock(), "-n", "k8s.io", "images", "push", "--plain-http"}
		if p.user != "" {
			args = append(args, "--user", p.user+":"+pw)
		}
		args = append(args, p.addr+"/"+p.repoTag, p.local)
		if out, err := exec.Command(l.runtimeBinary("ctr"), args...).CombinedOutput(); err != nil {
			return fmt.Errorf("push %s to %s: %v: %s", p.local, p.addr, err, out)
		}
		fmt.Printf("pushed %s to %s/%s\n", p.local, p.addr, p.repoTag)
	}
	return nil
}
