package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/certificate"
	"k8s.io/client-go/util/connrotation"
	"k8s.io/klog/v2"
)

// UseRotatingClientCert makes rc present the manager's current client
// certificate on every handshake, and closes every open connection when the
// certificate changes, so that a rotated certificate is used at once (not
// when a file is next re-read) and no connection outlives the old one.
func UseRotatingClientCert(ctx context.Context, rc *rest.Config, m certificate.Manager) error {
	tlsCfg, err := rest.TLSConfigFor(rc)
	if err != nil {
		return fmt.Errorf("client TLS config: %w", err)
	}
	if tlsCfg == nil {
		return fmt.Errorf("client certificate rotation needs an https apiserver")
	}
	tlsCfg.Certificates = nil
	tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if c := m.Current(); c != nil {
			return c, nil
		}
		return &tls.Certificate{}, nil // no certificate yet: the apiserver decides
	}
	dialer := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	rc.Transport = utilnet.SetTransportDefaults(&http.Transport{
		Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 10 * time.Second, TLSClientConfig: tlsCfg,
		MaxIdleConnsPerHost: 25, DialContext: dialer.DialContext, IdleConnTimeout: 90 * time.Second,
	})
	rc.TLSClientConfig = rest.TLSClientConfig{} // the transport carries TLS now
	go closeOnRotation(ctx, m, dialer)
	return nil
}

// closeOnRotation watches the current certificate and drops every
// connection made with the previous one.
func closeOnRotation(ctx context.Context, m certificate.Manager, dialer *connrotation.Dialer) {
	var last []byte
	if c := m.Current(); c != nil && len(c.Certificate) > 0 {
		last = c.Certificate[0]
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := m.Current()
		if c == nil || len(c.Certificate) == 0 || string(c.Certificate[0]) == string(last) {
			continue
		}
		last = c.Certificate[0]
		klog.FromContext(ctx).Info("Client certificate rotated; closing connections made with the previous one")
		dialer.CloseAll()
	}
}
