package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFilePairReloadsChangedFilesAndKeepsAGoodPair(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "kubelet.crt"), filepath.Join(dir, "kubelet.key")
	write := func(cn string) {
		c, k := testPair(t, cn, time.Now().Add(time.Hour))
		if err := os.WriteFile(certFile, c, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, k, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cn := func(p *FilePair) string {
		c, err := p.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	write("first")
	p, err := LoadFilePair(certFile, keyFile, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := cn(p); got != "first" {
		t.Fatalf("serving %q, want first", got)
	}
	write("second")
	if got := cn(p); got != "second" {
		t.Fatalf("after the files changed: serving %q, want second", got)
	}
	if err := os.WriteFile(keyFile, []byte("half a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := cn(p); got != "second" {
		t.Fatalf("after a broken key: serving %q, want the last good pair", got)
	}
	write("third")
	if got := cn(p); got != "third" {
		t.Fatalf("after the files were fixed: serving %q, want third", got)
	}
	if _, err := LoadFilePair(certFile, filepath.Join(dir, "missing.key"), 0); err == nil {
		t.Fatal("a pair whose key is missing loaded")
	}
}
