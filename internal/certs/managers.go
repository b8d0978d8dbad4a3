package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"os"
	"path/filepath"

	certificatesv1 "k8s.io/api/certificates/v1"

	bmetrics "github.com/bosun-dev/bosun/internal/metrics"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/certificate"
)

// The managers log through ctx's logger.

// NewClientManager returns the manager that renews the node's client
// certificate at 70-90% of its lifetime with a CSR the node itself sends
// (approved through the selfnodeclient path) and stores it in the cert dir.
func NewClientManager(ctx context.Context, certDir, nodeName string, clientFn certificate.ClientsetFunc) (certificate.Manager, error) {
	return certificate.NewManager(&certificate.Config{
		ClientsetFn: clientFn,
		Template: &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
		},
		SignerName:       certificatesv1.KubeAPIServerClientKubeletSignerName,
		GetUsages:        certificate.DefaultKubeletClientGetUsages,
		CertificateStore: NewFileStore(certDir, "kubelet-client"),
		Name:             "kubelet-client",
		// kubelet_certificate_manager_client_expiration_renew_errors
		CertificateRenewFailure: bmetrics.ClientRenewErrors,
		Ctx:                     &ctx,
	})
}

// NewServingManager returns the manager of the serving certificate
// (signer kubernetes.io/kubelet-serving, SANs = the node's name and
// addresses), stored as kubelet-server-<ts>.pem + kubelet-server-current.pem.
// addresses is called for each request, so the SANs follow the node.
func NewServingManager(ctx context.Context, certDir, nodeName string, addresses func() (dns []string, ips []net.IP),
	clientFn certificate.ClientsetFunc) (certificate.Manager, error) {
	getTemplate := func() *x509.CertificateRequest {
		dns, ips := addresses()
		if len(dns) == 0 && len(ips) == 0 {
			return nil // nothing to name yet; the manager tries again later
		}
		return &x509.CertificateRequest{
			Subject:     pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
			DNSNames:    dns,
			IPAddresses: ips,
		}
	}
	return certificate.NewManager(&certificate.Config{
		ClientsetFn:      clientFn,
		GetTemplate:      getTemplate,
		SignerName:       certificatesv1.KubeletServingSignerName,
		GetUsages:        certificate.DefaultKubeletServingGetUsages,
		CertificateStore: NewFileStore(certDir, "kubelet-server"),
		Name:             "kubelet-serving",
		// kubelet_certificate_manager_server_rotation_seconds and
		// kubelet_server_expiration_renew_errors
		CertificateRotation:     bmetrics.ServerCertRotation,
		CertificateRenewFailure: bmetrics.ServerRenewErrors,
		Ctx:                     &ctx,
	})
}

// SelfSignedServing loads kubelet.crt/kubelet.key from the cert dir, creating
// a self-signed pair for host and ips when they are missing: what the node
// serves until it has a cluster-signed serving certificate, as upstream does.
func SelfSignedServing(certDir, host string, ips []net.IP) (*tls.Certificate, error) {
	certFile, keyFile := filepath.Join(certDir, "kubelet.crt"), filepath.Join(certDir, "kubelet.key")
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		return &pair, nil
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, ips, nil)
	if err != nil {
		return nil, fmt.Errorf("unable to generate self signed cert: %w", err)
	}
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &pair, nil
}
