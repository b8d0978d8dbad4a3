// Package join is `bosun join` and `bosun preflight`: a node joins a cluster
// from a bootstrap token and the hash of the cluster CA's public key, as
// kubeadm's token discovery does, and ends with the seed's files on disk
// (bootstrap kubeconfig, KubeletConfiguration, systemd unit), so that the
// agent's own TLS bootstrap takes it from there.
package join

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// clusterInfoPath is where kubeadm (and `make up`) publish the cluster's CA
// and address for joining nodes: kube-public/cluster-info, readable without
// credentials, signed by the controller-manager's bootstrapsigner.
const clusterInfoPath = "/api/v1/namespaces/" + metav1NamespacePublic + "/configmaps/" + bootstrapapi.ConfigMapClusterInfo

const metav1NamespacePublic = "kube-public"

// Token is a bootstrap token split into its public ID and its secret.
type Token struct{ ID, Secret string }

// ParseToken checks the "<6 chars>.<16 chars>" form of a bootstrap token.
func ParseToken(s string) (Token, error) {
	if !bootstraputil.IsValidBootstrapToken(s) {
		return Token{}, fmt.Errorf("--token %q is not a bootstrap token: it must look like abcdef.0123456789abcdef ([a-z0-9]{6}.[a-z0-9]{16})", redact(s))
	}
	id, secret, _ := strings.Cut(s, ".")
	return Token{ID: id, Secret: secret}, nil
}

func (t Token) String() string { return t.ID + "." + t.Secret }

// redact keeps a token's ID and hides its secret, for messages.
func redact(s string) string {
	if id, _, ok := strings.Cut(s, "."); ok {
		return id + ".<secret>"
	}
	if len(s) > 6 {
		return s[:6] + "..."
	}
	return s
}

// ParseCAHash checks one --discovery-token-ca-cert-hash: "sha256:" and 64
// hex digits, the SHA-256 of the CA certificate's SubjectPublicKeyInfo.
func ParseCAHash(s string) (string, error) {
	alg, digest, ok := strings.Cut(s, ":")
	if !ok || alg != "sha256" {
		return "", fmt.Errorf("--discovery-token-ca-cert-hash %q must be sha256:<64 hex digits>", s)
	}
	if b, err := hex.DecodeString(digest); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("--discovery-token-ca-cert-hash %q must be sha256:<64 hex digits>", s)
	}
	return "sha256:" + strings.ToLower(digest), nil
}

// PublicKeyHash is "sha256:<hex>" of a certificate's SubjectPublicKeyInfo,
// the form kubeadm prints for --discovery-token-ca-cert-hash.
func PublicKeyHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CAFileHash is the --discovery-token-ca-cert-hash of a CA file: the
// PublicKeyHash of its first certificate.
func CAFileHash(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	return PublicKeyHash(certs[0]), nil
}

// Discovered is what token discovery established: the apiserver to talk to
// and the CA to trust it with, both signed by the token and pinned by hash.
type Discovered struct {
	Server     string    // from cluster-info's kubeconfig
	CAData     []byte    // PEM, the cluster CA bundle
	ServerTime time.Time // the apiserver's clock (its Date header)
}

// SignatureWait is how long Discover waits for cluster-info to be signed for
// the token.
var SignatureWait = 20 * time.Second

// Discover fetches cluster-info from server, checks its JWS signature with
// token, pins its CA by one of hashes (none only with skipCAVerification),
// and fetches it again over TLS verified by that CA.
func Discover(ctx context.Context, server string, token Token, hashes []string, skipCAVerification bool) (*Discovered, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--server %q must be an https:// URL of the apiserver, e.g. https://10.0.0.1:6443", server)
	}
	if len(hashes) == 0 && !skipCAVerification {
		return nil, errors.New("--discovery-token-ca-cert-hash is required (or --discovery-token-unsafe-skip-ca-verification): " +
			"on the control plane, openssl x509 -pubkey -in ca.pem | openssl rsa -pubin -outform der | sha256sum prints it")
	}
	// First fetch: unverified TLS, trusted only through the signature below.
	insecure := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // verified by JWS and the CA pin
		Proxy:           http.ProxyFromEnvironment,
	}}
	// A token made a moment ago is signed into cluster-info by the
	// controller-manager's bootstrapsigner within seconds: look again for a
	// while before saying it is not there, as kubeadm's discovery does.
	var cm *corev1.ConfigMap
	var date time.Time
	var sig, kubeconfig string
	var ok bool
	for deadline := time.Now().Add(SignatureWait); ; {
		if cm, date, err = getClusterInfo(ctx, insecure, server); err != nil {
			return nil, err
		}
		if kubeconfig, ok = cm.Data[bootstrapapi.KubeConfigKey]; !ok {
			return nil, fmt.Errorf("%s at %s has no %q key", clusterInfoPath, server, bootstrapapi.KubeConfigKey)
		}
		if sig, ok = cm.Data[bootstrapapi.JWSSignatureKeyPrefix+token.ID]; ok || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	if !ok {
		return nil, fmt.Errorf("cluster-info is not signed for token ID %q: the token does not exist or has expired "+
			"(kubeadm token list), has no usage-bootstrap-signing, or the controller-manager runs without the bootstrapsigner controller", token.ID)
	}
	if !jws.DetachedTokenIsValid(sig, kubeconfig, token.ID, token.Secret) {
		return nil, fmt.Errorf("cluster-info's signature for token ID %q does not match the token's secret: the token is wrong", token.ID)
	}
	cluster, err := onlyCluster(kubeconfig)
	if err != nil {
		return nil, err
	}
	if len(cluster.CertificateAuthorityData) == 0 {
		return nil, errors.New("cluster-info's kubeconfig has no certificate-authority-data")
	}
	certs, err := parseCerts(cluster.CertificateAuthorityData)
	if err != nil {
		return nil, fmt.Errorf("cluster-info's CA: %w", err)
	}
	if !skipCAVerification {
		if err := pinned(certs, hashes); err != nil {
			return nil, err
		}
	}
	// Second fetch: over TLS verified by the pinned CA, so the server we talk
	// to holds that CA's certificate, and its answer must be the same.
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	secure := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Proxy:           http.ProxyFromEnvironment,
	}}
	again, _, err := getClusterInfo(ctx, secure, server)
	if err != nil {
		return nil, fmt.Errorf("the apiserver's certificate is not signed by the pinned CA: %w", err)
	}
	if again.Data[bootstrapapi.KubeConfigKey] != kubeconfig {
		return nil, errors.New("cluster-info changed between the unverified and the verified fetch; try again")
	}
	return &Discovered{Server: server, CAData: cluster.CertificateAuthorityData, ServerTime: date}, nil
}

// getClusterInfo GETs cluster-info without credentials.
func getClusterInfo(ctx context.Context, c *http.Client, server string) (*corev1.ConfigMap, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+clusterInfoPath, nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("cannot reach the apiserver at %s: %w", server, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("reading cluster-info from %s: %w", server, err)
	}
	date, _ := http.ParseTime(resp.Header.Get("Date"))
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, date, fmt.Errorf("%s has no kube-public/cluster-info ConfigMap: publish the cluster's CA and address there "+
			"(kubeadm init phase bootstrap-token does; docs/deploy.md shows the kubectl commands)", server)
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, date, fmt.Errorf("%s refuses anonymous reads of kube-public/cluster-info (HTTP %d): the apiserver needs "+
			"--anonymous-auth=true and a RoleBinding letting system:anonymous get that ConfigMap", server, resp.StatusCode)
	default:
		return nil, date, fmt.Errorf("GET %s%s: HTTP %d: %s", server, clusterInfoPath, resp.StatusCode, firstLine(body))
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(body, &cm); err != nil {
		return nil, date, fmt.Errorf("cluster-info from %s is not a ConfigMap: %w", server, err)
	}
	return &cm, date, nil
}

// onlyCluster is the one cluster of cluster-info's kubeconfig.
func onlyCluster(kubeconfig string) (*clientcmdapi.Cluster, error) {
	cfg, err := clientcmd.Load([]byte(kubeconfig))
	if err != nil {
		return nil, fmt.Errorf("cluster-info's kubeconfig: %w", err)
	}
	if len(cfg.Clusters) != 1 {
		return nil, fmt.Errorf("cluster-info's kubeconfig names %d clusters, want exactly one", len(cfg.Clusters))
	}
	for _, c := range cfg.Clusters {
		return c, nil
	}
	return nil, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// pinned checks that one of certs has a public key hash among hashes.
func pinned(certs []*x509.Certificate, hashes []string) error {
	var seen []string
	for _, c := range certs {
		h := PublicKeyHash(c)
		for _, want := range hashes {
			if h == want {
				return nil
			}
		}
		seen = append(seen, h)
	}
	return fmt.Errorf("the cluster CA's public key hash is %s, not the --discovery-token-ca-cert-hash given: "+
		"a wrong hash, or not the cluster you meant", strings.Join(seen, ", "))
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
