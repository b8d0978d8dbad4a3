package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certSpec describes one leaf certificate signed by the cluster CA.
type certSpec struct {
	name   string   // file stem: <name>.pem and <name>-key.pem
	cn     string   // subject common name (the user name for client certs)
	orgs   []string // subject organisations (the groups for client certs)
	dns    []string // DNS SANs
	ips    []string // IP SANs
	server bool     // server auth usage (client auth is always set)
}

// pki is the cluster's certificate authority on disk.
type pki struct {
	dir    string            // folder holding every file
	caCert *x509.Certificate // the CA certificate
	caKey  crypto.Signer     // the CA key
}

// ensurePKI loads the CA from dir, or creates it and every leaf certificate the
// local cluster needs. Existing files are kept so that `up` after `up` reuses them.
func ensurePKI(dir string, nodeIP string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{dir: dir}
	if err := p.loadOrCreateCA(); err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	leaves := []certSpec{
		{name: "kubernetes", cn: "kubernetes", orgs: []string{"k8s"}, server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			ips: []string{"127.0.0.1", "10.254.0.1", nodeIP}},
		{name: "admin", cn: "admin", orgs: []string{"system:masters"}},
		{name: "kube-proxy", cn: "system:kube-proxy", orgs: []string{"k8s"}},
		// The aggregation layer's client certificate (--proxy-client-cert-file).
		{name: "proxy-client", cn: "aggregator", orgs: []string{"k8s"}},
		{name: "kube-controller-manager", cn: "system:kube-controller-manager", server: true,
			dns: []string{"localhost"}, ips: []string{"127.0.0.1"}},
		{name: "kube-scheduler", cn: "system:kube-scheduler", server: true,
			dns: []string{"localhost"}, ips: []string{"127.0.0.1"}},
	}
	for _, l := range leaves {
		if fileExists(p.certPath(l.name)) && fileExists(p.keyPath(l.name)) {
			continue
		}
		if err := p.issue(l); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", l.name, err)
		}
	}
	if err := p.ensureServiceAccountKey(); err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	return p, nil
}

func (p *pki) certPath(name string) string { return filepath.Join(p.dir, name+".pem") }
func (p *pki) keyPath(name string) string  { return filepath.Join(p.dir, name+"-key.pem") }

func (p *pki) loadOrCreateCA() error {
	if fileExists(p.certPath("ca")) && fileExists(p.keyPath("ca")) {
		cert, key, err := loadPair(p.certPath("ca"), p.keyPath("ca"))
		if err == nil {
			p.caCert, p.caKey = cert, key
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "bosun-local-ca", Organization: []string{"bosun"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	cert, _ := x509.ParseCertificate(der)
	if err := writePair(p.certPath("ca"), p.keyPath("ca"), der, key); err != nil {
		return err
	}
	p.caCert, p.caKey = cert, key
	return nil
}

func (p *pki) issue(s certSpec) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     s.dns,
	}
	if s.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	for _, ip := range s.ips {
		if parsed := net.ParseIP(ip); parsed != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, parsed)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return err
	}
	return writePair(p.certPath(s.name), p.keyPath(s.name), der, key)
}

// ensureServiceAccountKey writes sa.key (RSA, PKCS#1) and sa.pub for token signing.
func (p *pki) ensureServiceAccountKey() error {
	keyFile, pubFile := filepath.Join(p.dir, "sa.key"), filepath.Join(p.dir, "sa.pub")
	if fileExists(keyFile) && fileExists(pubFile) {
		return nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func loadPair(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("no PEM block in %s or %s", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it into place, so a reader sees the old file or the new one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
