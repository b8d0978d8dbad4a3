package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// tlsCurvePreferences limit the key exchanges 10250 accepts: a client that
// offers only another curve fails the handshake, one offering a listed curve
// succeeds.
func TestTLSCurvePreferences(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	s := &Server{cfg: Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil },
		CurvePreferences: []tls.CurveID{tls.CurveP384}}}
	handshake := func(curve tls.CurveID) error {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		done := make(chan error, 1)
		go func() { done <- tls.Server(a, s.tlsConfig()).Handshake() }()
		err := tls.Client(b, &tls.Config{InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{curve}}).Handshake()
		a.Close()
		<-done
		return err
	}
	if err := handshake(tls.X25519); err == nil {
		t.Errorf("a client offering only X25519 completed a handshake with a server limited to P-384")
	}
	if err := handshake(tls.CurveP384); err != nil {
		t.Errorf("a client offering P-384: %v", err)
	}
}
