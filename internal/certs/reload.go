package certs

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// FilePair is a serving certificate from tlsCertFile and tlsPrivateKeyFile,
// re-read when either file changes (upstream's
// ReloadKubeletServerCertificateFile, on by default). A change is noticed at
// the first handshake after interval; a pair that does not load (a file half
// rewritten, a key that does not match) keeps the last good one in use.
type FilePair struct {
	certFile, keyFile string
	interval          time.Duration

	mu      sync.Mutex
	current *tls.Certificate
	stamp   string
	checked time.Time
}

// LoadFilePair loads the pair; it must load at start.
func LoadFilePair(certFile, keyFile string, interval time.Duration) (*FilePair, error) {
	p := &FilePair{certFile: certFile, keyFile: keyFile, interval: interval}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("failed to load tlsCertFile/tlsPrivateKeyFile: %w", err)
	}
	p.current, p.stamp, p.checked = &pair, p.fileStamp(), time.Now()
	return p, nil
}

// fileStamp changes whenever either file is rewritten or replaced.
func (p *FilePair) fileStamp() string {
	stamp := ""
	for _, f := range []string{p.certFile, p.keyFile} {
		if st, err := os.Stat(f); err == nil {
			stamp += fmt.Sprintf("%d/%d/%v;", st.Size(), st.ModTime().UnixNano(), st.Sys())
		}
	}
	return stamp
}

// GetCertificate serves the current pair, reloading it first when the
// files changed.
func (p *FilePair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.checked) < p.interval {
		return p.current, nil
	}
	p.checked = time.Now()
	stamp := p.fileStamp()
	if stamp == p.stamp {
		return p.current, nil
	}
	pair, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		klog.Background().Error(err, "The serving certificate files changed but do not load; serving the previous pair", "certFile", p.certFile, "keyFile", p.keyFile)
		return p.current, nil // stamp kept: retried at the next check
	}
	p.current, p.stamp = &pair, stamp
	klog.Background().Info("Reloaded the serving certificate", "certFile", p.certFile)
	return p.current, nil
}
