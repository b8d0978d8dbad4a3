package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"
)

// certPair is what validity checks need of a certificate/key pair.
type certPair struct {
	notAfter time.Time // the leaf's expiry
}

func parseIP(s string) net.IP { return net.ParseIP(s) }

// loadSplitPair reads a certificate and key from files (which may be the same
// file, as with kubelet-client-current.pem).
func loadSplitPair(certFile, keyFile string) (*certPair, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	if keyFile == "" {
		keyFile = certFile
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return parseSplitPair(certPEM, keyPEM)
}

func parseSplitPair(certPEM, keyPEM []byte) (*certPair, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate and key are not a valid pair: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &certPair{notAfter: leaf.NotAfter}, nil
}
