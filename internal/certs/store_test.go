package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/certificate"
)

// testPair makes a self-signed certificate and key in PEM for cn.
func testPair(t *testing.T, cn string, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", kder)
}

func TestFileStoreLayoutAndRotation(t *testing.T) {
	dir := t.TempDir()
	s := NewFileStore(dir, "kubelet-client")
	if _, err := s.Current(); !isNoCert(err) {
		t.Fatalf("empty store: got %v, want NoCertKeyError", err)
	}
	clock := time.Date(2018, 11, 28, 17, 20, 6, 0, time.Local)
	s.now = func() time.Time { return clock }
	c1, k1 := testPair(t, "system:node:a", time.Now().Add(time.Hour))
	if _, err := s.Update(c1, k1); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(dir, "kubelet-client-2018-11-28-17-20-06.pem")
	assertMode(t, first, 0o600)
	assertLink(t, s.CurrentPath(), first)

	clock = clock.Add(time.Minute)
	c2, k2 := testPair(t, "system:node:b", time.Now().Add(2*time.Hour))
	if _, err := s.Update(c2, k2); err != nil {
		t.Fatal(err)
	}
	assertLink(t, s.CurrentPath(), filepath.Join(dir, "kubelet-client-2018-11-28-17-21-06.pem"))
	cur, err := s.Current()
	if err != nil || cur.Leaf.Subject.CommonName != "system:node:b" {
		t.Fatalf("current after rotation: %v %v", cur, err)
	}
	if _, err := os.Stat(first); err != nil {
		t.Errorf("the previous pair should stay on disk: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestFileStoreRefusesBadPairsAndKeepsCurrent(t *testing.T) {
	dir := t.TempDir()
	s := NewFileStore(dir, "kubelet-server")
	c1, k1 := testPair(t, "good", time.Now().Add(time.Hour))
	if _, err := s.Update(c1, k1); err != nil {
		t.Fatal(err)
	}
	_, otherKey := testPair(t, "other", time.Now().Add(time.Hour))
	if _, err := s.Update(c1, otherKey); err == nil {
		t.Fatal("a certificate with a key that does not match was stored")
	}
	if _, err := s.Update([]byte("garbage"), []byte("garbage")); err == nil {
		t.Fatal("garbage was stored")
	}
	cur, err := s.Current()
	if err != nil || cur.Leaf.Subject.CommonName != "good" {
		t.Fatalf("current lost after failed updates: %v", err)
	}
}

// Crash points: whatever step a crash interrupts, the current link names a
// complete pair. Each case leaves the debris of one interrupted step.
func TestFileStoreCrashDebrisNeverBreaksCurrent(t *testing.T) {
	steps := map[string]func(t *testing.T, dir string){
		"half-written temp pair": func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, ".kubelet-client-2030-01-01-00-00-00.pem.tmp-123"), "-----BEGIN CERT")
		},
		"stale updated link": func(t *testing.T, dir string) {
			if err := os.Symlink(filepath.Join(dir, "missing.pem"), filepath.Join(dir, ".kubelet-client-updated.pem")); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, debris := range steps {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := NewFileStore(dir, "kubelet-client")
			c1, k1 := testPair(t, "before", time.Now().Add(time.Hour))
			if _, err := s.Update(c1, k1); err != nil {
				t.Fatal(err)
			}
			debris(t, dir)
			if cur, err := s.Current(); err != nil || cur.Leaf.Subject.CommonName != "before" {
				t.Fatalf("current broken by debris: %v", err)
			}
			s.now = func() time.Time { return time.Now().Add(time.Hour) }
			c2, k2 := testPair(t, "after", time.Now().Add(time.Hour))
			if _, err := s.Update(c2, k2); err != nil {
				t.Fatalf("update after a crash: %v", err)
			}
			if cur, err := s.Current(); err != nil || cur.Leaf.Subject.CommonName != "after" {
				t.Fatalf("current after recovery: %v", err)
			}
		})
	}
}

func TestFileStoreRefusesToReplaceARegularCurrentFile(t *testing.T) {
	dir := t.TempDir()
	s := NewFileStore(dir, "kubelet-client")
	c, k := testPair(t, "x", time.Now().Add(time.Hour))
	write(t, s.CurrentPath(), string(c)+string(k))
	if _, err := s.Update(c, k); err == nil || !strings.Contains(err.Error(), "not a symlink") {
		t.Fatalf("got %v, want a refusal naming the regular file", err)
	}
}

func TestWriteFileAtomicReplacesWhole(t *testing.T) {
	f := filepath.Join(t.TempDir(), "kubeconfig")
	if err := WriteFileAtomic(f, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(f, []byte("new content"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f)
	if string(data) != "new content" {
		t.Fatalf("content %q", data)
	}
	assertMode(t, f, 0o600)
	if err := WriteFileAtomic(filepath.Join(t.TempDir(), "missing-dir", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("writing into a missing folder succeeded")
	}
}

func isNoCert(err error) bool {
	var nc *certificate.NoCertKeyError
	return errors.As(err, &nc)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s mode %o, want %o", path, fi.Mode().Perm(), want)
	}
}

func assertLink(t *testing.T, link, want string) {
	t.Helper()
	got, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("%s -> %s, want %s", link, got, want)
	}
}

// A crash between creating a temporary file and renaming it leaves the
// temporary behind; the next start removes it and nothing else.
func TestRemoveStaleTemporaries(t *testing.T) {
	dir := t.TempDir()
	keep := []string{"kubelet-client-current.pem", "kubelet-client-2026-01-01-00-00-00.pem", "kubelet-client.key.tmp", ".hidden-config"}
	stale := []string{".kubelet-client-current.pem.tmp-123", ".kubelet.kubeconfig.tmp-9", ".kubelet-client-updated.pem"}
	for _, n := range append(append([]string{}, keep...), stale...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed := RemoveStaleTemporaries(dir)
	if len(removed) != len(stale) {
		t.Errorf("removed %v, want %v", removed, stale)
	}
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
			t.Errorf("%s was left", n)
		}
	}
	for _, n := range keep {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s was removed", n)
		}
	}
}
