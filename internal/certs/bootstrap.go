package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/certificate/csr"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/klog/v2"
)

// BootstrapConfig says where the node's credentials live.
type BootstrapConfig struct {
	Kubeconfig          string               // --kubeconfig: written once a client certificate is issued
	BootstrapKubeconfig string               // --bootstrap-kubeconfig: the bootstrap token
	CertDir             string               // --cert-dir
	NodeName            string               // the node's name: CN=system:node:<name>
	NoticeEvery         time.Duration        // how often to repeat "still waiting" in the log
	RetryAfter          time.Duration        // wait before a new attempt after a failure
	Client              kubernetes.Interface // optional: the bootstrap client (built from BootstrapKubeconfig when nil)
}

// clientKeyFile holds the private key of a CSR in flight, so that a restart
// while waiting reuses the same key and therefore the same CSR.
const clientKeyFile = "kubelet-client.key.tmp"

// Bootstrap makes sure cfg.Kubeconfig exists and holds a valid client
// certificate. When it does not, it performs TLS bootstrap with the bootstrap
// kubeconfig: it sends a CSR for signer kubernetes.io/kube-apiserver-client-kubelet,
// waits until it is approved and issued, stores the pair as
// kubelet-client-<timestamp>.pem + kubelet-client-current.pem and writes the
// kubeconfig. It never gives up while ctx lasts: a forbidden, denied or
// unapproved request is logged, naming what approves it, and retried.
func Bootstrap(ctx context.Context, cfg BootstrapConfig) error {
	logger := klog.FromContext(ctx)
	for _, dir := range []string{cfg.CertDir, filepath.Dir(cfg.Kubeconfig)} {
		if removed := RemoveStaleTemporaries(dir); len(removed) > 0 {
			logger.Info("Removed temporary files an earlier run left when it stopped mid-write", "dir", dir, "files", removed)
		}
	}
	if err := validKubeconfig(cfg.Kubeconfig); err == nil {
		logger.V(2).Info("Kubeconfig holds a valid client certificate; no bootstrap needed", "kubeconfig", cfg.Kubeconfig)
		return nil
	} else if cfg.BootstrapKubeconfig == "" {
		return fmt.Errorf("kubeconfig %q is not usable (%v) and no --bootstrap-kubeconfig was given", cfg.Kubeconfig, err)
	} else {
		logger.Info("Using bootstrap kubeconfig to generate TLS client cert, key and kubeconfig file", "reason", err.Error(),
			"bootstrapKubeconfig", cfg.BootstrapKubeconfig)
	}
	store := NewFileStore(cfg.CertDir, "kubelet-client")
	if pair, err := store.Current(); err == nil && time.Now().Before(pair.Leaf.NotAfter) {
		logger.Info("Reusing the valid client certificate in the cert dir", "path", store.CurrentPath())
		return writeNodeKubeconfig(cfg, store.CurrentPath())
	}
	client := cfg.Client
	if client == nil {
		bootstrapRest, err := clientcmd.BuildConfigFromFlags("", cfg.BootstrapKubeconfig)
		if err != nil {
			return fmt.Errorf("failed to load bootstrap kubeconfig %s: %w", cfg.BootstrapKubeconfig, err)
		}
		if client, err = kubernetes.NewForConfig(bootstrapRest); err != nil {
			return err
		}
	}
	for {
		certPEM, keyPEM, err := requestClientCert(ctx, client, cfg)
		if err == nil {
			if _, err := store.Update(certPEM, keyPEM); err != nil {
				return err
			}
			_ = os.Remove(filepath.Join(cfg.CertDir, clientKeyFile))
			logger.Info("Client certificate issued; writing kubeconfig", "cert", store.CurrentPath(), "kubeconfig", cfg.Kubeconfig)
			return writeNodeKubeconfig(cfg, store.CurrentPath())
		}
		logger.Error(err, "TLS bootstrap attempt failed; retrying", "retryAfter", cfg.RetryAfter)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cfg.RetryAfter):
		}
	}
}

// requestClientCert sends (or finds) the node's bootstrap CSR and waits for it.
func requestClientCert(ctx context.Context, client kubernetes.Interface, cfg BootstrapConfig) ([]byte, []byte, error) {
	logger := klog.FromContext(ctx)
	keyPEM, key, err := loadOrCreateKey(filepath.Join(cfg.CertDir, clientKeyFile))
	if err != nil {
		return nil, nil, err
	}
	subject := pkix.Name{CommonName: "system:node:" + cfg.NodeName, Organization: []string{"system:nodes"}}
	csrPEM, err := BuildCSR(key, subject, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	usages := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	name := digestedName(key.Public(), subject, usages)
	reqName, reqUID, err := csr.RequestCertificateWithContext(ctx, client, csrPEM, name, certificatesv1.KubeAPIServerClientKubeletSignerName, nil, usages, key)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, nil, fmt.Errorf("cannot create certificate signing request: %w (bind the bootstrap group to "+
				"system:node-bootstrapper: kubectl create clusterrolebinding kubelet-bootstrap --clusterrole=system:node-bootstrapper --group=system:bootstrappers)", err)
		}
		return nil, nil, fmt.Errorf("cannot create certificate signing request: %w", err)
	}
	logger.Info("Waiting for client certificate signing request to be approved and issued", "csr", reqName)
	stopNotices := noticeWhileWaiting(ctx, cfg.NoticeEvery, reqName)
	certPEM, err := csr.WaitForCertificate(ctx, client, reqName, reqUID)
	stopNotices()
	if err != nil {
		if strings.Contains(err.Error(), "denied") || strings.Contains(err.Error(), "failed") {
			// A denied request is final for its key: start over with a new one.
			_ = os.Remove(filepath.Join(cfg.CertDir, clientKeyFile))
		}
		return nil, nil, fmt.Errorf("certificate signing request %s: %w", reqName, err)
	}
	return certPEM, keyPEM, nil
}

// noticeWhileWaiting logs every interval that the CSR is still pending and
// what would approve it. It returns a function that stops the notices.
func noticeWhileWaiting(ctx context.Context, every time.Duration, name string) func() {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				klog.FromContext(ctx).Info("Still waiting for the client certificate signing request to be approved: "+
					"the kube-controller-manager approves it when the bootstrap group is bound to "+
					"system:certificates.k8s.io:certificatesigningrequests:nodeclient (the seed's csr-crb.yaml, "+
					"ClusterRoleBinding auto-approve-csrs-for-group), or approve it by hand: kubectl certificate approve "+name, "csr", name)
			}
		}
	}()
	return cancel
}

// loadOrCreateKey returns the PEM and key stored at path, creating an ECDSA
// P-256 key there when none is readable.
func loadOrCreateKey(path string) ([]byte, crypto.Signer, error) {
	if data, err := os.ReadFile(path); err == nil {
		if k, err := keyutil.ParsePrivateKeyPEM(data); err == nil {
			if signer, ok := k.(crypto.Signer); ok {
				return data, signer, nil
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM := pemBlock(keyutil.ECPrivateKeyBlockType, der)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, nil, err
	}
	if err := WriteFileAtomic(path, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	return keyPEM, key, nil
}

// BuildCSR returns a PEM certificate request for key with the given subject
// and subject alternative names.
func BuildCSR(key crypto.Signer, subject pkix.Name, dnsNames []string, ips []string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: subject, DNSNames: dnsNames}
	for _, s := range ips {
		if ip := parseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("failed to build certificate request: %w", err)
	}
	return pemBlock("CERTIFICATE REQUEST", der), nil
}

// digestedName names a bootstrap CSR after what it asks for, so that the same
// key, subject and usages always give the same name: node-csr-<digest>.
func digestedName(pub crypto.PublicKey, subject pkix.Name, usages []certificatesv1.KeyUsage) string {
	h := sha512.New512_256()
	der, _ := x509.MarshalPKIXPublicKey(pub)
	write := func(s string) { fmt.Fprintf(h, "%d:%s|", len(s), s) }
	write(string(der))
	write(subject.CommonName)
	for _, o := range subject.Organization {
		write(o)
	}
	for _, u := range usages {
		write(string(u))
	}
	return "node-csr-" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// validKubeconfig checks that a kubeconfig exists and that its client
// certificate (file or inline data) is readable and not expired.
func validKubeconfig(path string) error {
	if path == "" {
		return errors.New("no --kubeconfig given")
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return err
	}
	ctxName := cfg.CurrentContext
	c, ok := cfg.Contexts[ctxName]
	if !ok {
		return fmt.Errorf("kubeconfig %s has no current context", path)
	}
	auth, ok := cfg.AuthInfos[c.AuthInfo]
	if !ok {
		return fmt.Errorf("kubeconfig %s has no user %q", path, c.AuthInfo)
	}
	if auth.Token != "" || auth.TokenFile != "" {
		return nil // token credentials do not expire here
	}
	var pair *certPair
	if auth.ClientCertificate != "" {
		pair, err = loadSplitPair(auth.ClientCertificate, auth.ClientKey)
	} else {
		pair, err = parseSplitPair(auth.ClientCertificateData, auth.ClientKeyData)
	}
	if err != nil {
		return err
	}
	if time.Now().After(pair.notAfter) {
		return fmt.Errorf("client certificate expired at %s", pair.notAfter.Format(time.RFC3339))
	}
	return nil
}

// writeNodeKubeconfig writes --kubeconfig: the bootstrap kubeconfig's cluster
// with a user whose certificate and key are the current pair file, so that
// rotation needs no rewrite.
func writeNodeKubeconfig(cfg BootstrapConfig, pairFile string) error {
	boot, err := clientcmd.LoadFromFile(cfg.BootstrapKubeconfig)
	if err != nil {
		return fmt.Errorf("failed to load bootstrap kubeconfig %s: %w", cfg.BootstrapKubeconfig, err)
	}
	bctx, ok := boot.Contexts[boot.CurrentContext]
	if !ok {
		return fmt.Errorf("bootstrap kubeconfig %s has no current context", cfg.BootstrapKubeconfig)
	}
	cluster, ok := boot.Clusters[bctx.Cluster]
	if !ok {
		return fmt.Errorf("bootstrap kubeconfig %s has no cluster %q", cfg.BootstrapKubeconfig, bctx.Cluster)
	}
	out := clientcmdapi.NewConfig()
	out.Clusters["default-cluster"] = &clientcmdapi.Cluster{
		Server: cluster.Server, CertificateAuthority: cluster.CertificateAuthority,
		CertificateAuthorityData: cluster.CertificateAuthorityData, TLSServerName: cluster.TLSServerName,
	}
	out.AuthInfos["default-auth"] = &clientcmdapi.AuthInfo{ClientCertificate: pairFile, ClientKey: pairFile}
	out.Contexts["default-context"] = &clientcmdapi.Context{Cluster: "default-cluster", AuthInfo: "default-auth", Namespace: "default"}
	out.CurrentContext = "default-context"
	data, err := clientcmd.Write(*out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Kubeconfig), 0o755); err != nil {
		return err
	}
	return WriteFileAtomic(cfg.Kubeconfig, data, 0o600)
}
