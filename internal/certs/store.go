// Package certs keeps the node's credentials: TLS bootstrap from a
// bootstrap-token kubeconfig, the on-disk certificate store with its
// `-current.pem` symlinks, client certificate rotation and the serving
// certificate (kubelet-serving CSR).
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/bosun-dev/bosun/internal/atomicfile"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/util/certificate"
)

// FileStore keeps certificate/key pairs as the kubelet does: each pair in one
// PEM file named <prefix>-<YYYY-MM-DD-HH-MM-SS>.pem (mode 0600), and
// <prefix>-current.pem a symlink to the pair in use.
//
// Every step is crash-safe: the pair file is written under a temporary name,
// synced and renamed; the new symlink is made under a temporary name and
// renamed over the current one, so `-current.pem` always names a complete,
// valid pair once it has existed.
type FileStore struct {
	dir    string           // the cert dir (--cert-dir)
	prefix string           // kubelet-client or kubelet-server
	now    func() time.Time // the clock, for file names
}

var _ certificate.Store = (*FileStore)(nil)

// NewFileStore returns the store for <dir>/<prefix>-*.pem.
func NewFileStore(dir, prefix string) *FileStore {
	return &FileStore{dir: dir, prefix: prefix, now: time.Now}
}

// CurrentPath is the path of the `-current.pem` symlink.
func (s *FileStore) CurrentPath() string {
	return filepath.Join(s.dir, s.prefix+"-current.pem")
}

// Current loads the pair the symlink names. It returns a
// certificate.NoCertKeyError when there is none yet.
func (s *FileStore) Current() (*tls.Certificate, error) {
	cert, err := LoadPairFile(s.CurrentPath())
	if errors.Is(err, os.ErrNotExist) {
		e := certificate.NoCertKeyError(fmt.Sprintf("no cert/key pair at %s", s.CurrentPath()))
		return nil, &e
	}
	return cert, err
}

// Update stores a new pair and makes it current.
func (s *FileStore) Update(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create cert dir %q: %w", s.dir, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("refusing to store an invalid certificate/key pair: %w", err)
	}
	data := append(append([]byte{}, certPEM...), keyPEM...)
	name := s.prefix + "-" + s.now().Format("2006-01-02-15-04-05") + ".pem"
	path := filepath.Join(s.dir, name)
	if err := WriteFileAtomic(path, data, 0o600); err != nil {
		return nil, err
	}
	if err := s.pointCurrentAt(path); err != nil {
		return nil, err
	}
	if pair.Leaf == nil {
		pair.Leaf, _ = x509.ParseCertificate(pair.Certificate[0])
	}
	return &pair, nil
}

// pointCurrentAt atomically replaces the current symlink with one to path.
func (s *FileStore) pointCurrentAt(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(s.CurrentPath()); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("%s exists and is not a symlink; refusing to replace it", s.CurrentPath())
	}
	tmp := filepath.Join(s.dir, "."+s.prefix+"-updated.pem")
	_ = os.Remove(tmp)
	if err := os.Symlink(abs, tmp); err != nil {
		return fmt.Errorf("failed to link %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.CurrentPath()); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("failed to make %s current: %w", abs, err)
	}
	return atomicfile.SyncDir(s.dir)
}

// LoadPairFile reads a PEM file holding a certificate chain and its key.
func LoadPairFile(path string) (*tls.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(data, data)
	if err != nil {
		return nil, fmt.Errorf("%s does not hold a valid certificate and key: %w", path, err)
	}
	pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &pair, nil
}

// WriteFileAtomic writes a file so that a crash leaves the old content or
// the new, never a part (see atomicfile.Write).
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(path, data, mode)
}

// RemoveStaleTemporaries removes, from dir, the temporary files that
// WriteFileAtomic and FileStore.Update create (".<name>.tmp-*" and
// ".<prefix>-updated.pem"): a process killed between creating and renaming
// one leaves it behind. Only this process writes them, and it calls this
// before writing, so none of them is in use. It returns the names removed.
func RemoveStaleTemporaries(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		if strings.Contains(name, ".tmp-") || strings.HasSuffix(name, "-updated.pem") {
			if os.Remove(filepath.Join(dir, name)) == nil {
				removed = append(removed, name)
			}
		}
	}
	return removed
}

// pemBlocks encodes DER blocks of one type.
func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
