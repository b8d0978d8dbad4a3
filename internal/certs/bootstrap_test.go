package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// fakeSigner plays kube-controller-manager: it approves (or denies) each CSR
// it sees and signs approved ones with its CA.
type fakeSigner struct {
	t      *testing.T
	client *fake.Clientset
	deny   bool // deny instead of approve
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newFakeSigner(t *testing.T, client *fake.Clientset) *fakeSigner {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	ca, _ := x509.ParseCertificate(der)
	return &fakeSigner{t: t, client: client, ca: ca, caKey: key}
}

// run handles CSRs until ctx ends.
func (s *fakeSigner) run(ctx context.Context) {
	for ctx.Err() == nil {
		list, _ := s.client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		for i := range list.Items {
			csr := &list.Items[i]
			if len(csr.Status.Conditions) > 0 {
				continue
			}
			cond := certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}
			if s.deny {
				cond.Type = certificatesv1.CertificateDenied
			} else {
				csr.Status.Certificate = s.sign(csr.Spec.Request)
			}
			csr.Status.Conditions = append(csr.Status.Conditions, cond)
			_, _ = s.client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{})
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *fakeSigner) sign(request []byte) []byte {
	block, _ := pem.Decode(request)
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		s.t.Errorf("bad CSR: %v", err)
		return nil
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: req.Subject,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, req.PublicKey, s.caKey)
	if err != nil {
		s.t.Errorf("sign: %v", err)
	}
	return pemBlock("CERTIFICATE", der)
}

func writeBootstrapKubeconfig(t *testing.T, path string) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubernetes"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", CertificateAuthorityData: []byte("ca-bytes")}
	cfg.AuthInfos["kubelet-bootstrap"] = &clientcmdapi.AuthInfo{Token: "abcdef.0123456789abcdef"}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "kubernetes", AuthInfo: "kubelet-bootstrap"}
	cfg.CurrentContext = "default"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

func bootstrapConfig(t *testing.T, client *fake.Clientset) BootstrapConfig {
	dir := t.TempDir()
	cfg := BootstrapConfig{
		Kubeconfig: filepath.Join(dir, "kubelet.kubeconfig"), BootstrapKubeconfig: filepath.Join(dir, "bootstrap.kubeconfig"),
		CertDir: filepath.Join(dir, "cert"), NodeName: "node-1", NoticeEvery: 50 * time.Millisecond, RetryAfter: 50 * time.Millisecond,
		Client: client,
	}
	writeBootstrapKubeconfig(t, cfg.BootstrapKubeconfig)
	return cfg
}

func TestBootstrapWritesSeedLayout(t *testing.T) {
	client := fake.NewClientset()
	cfg := bootstrapConfig(t, client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go newFakeSigner(t, client).run(ctx)
	if err := Bootstrap(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	csrs, _ := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if len(csrs.Items) != 1 {
		t.Fatalf("%d CSRs, want 1", len(csrs.Items))
	}
	csr := csrs.Items[0]
	if !strings.HasPrefix(csr.Name, "node-csr-") || csr.Spec.SignerName != certificatesv1.KubeAPIServerClientKubeletSignerName {
		t.Errorf("CSR %s signer %s", csr.Name, csr.Spec.SignerName)
	}
	block, _ := pem.Decode(csr.Spec.Request)
	req, _ := x509.ParseCertificateRequest(block.Bytes)
	if req.Subject.CommonName != "system:node:node-1" || len(req.Subject.Organization) != 1 || req.Subject.Organization[0] != "system:nodes" {
		t.Errorf("subject %v", req.Subject)
	}
	if len(csr.Spec.Usages) != 2 || csr.Spec.Usages[0] != certificatesv1.UsageDigitalSignature || csr.Spec.Usages[1] != certificatesv1.UsageClientAuth {
		t.Errorf("usages %v", csr.Spec.Usages)
	}
	current := filepath.Join(cfg.CertDir, "kubelet-client-current.pem")
	target, err := os.Readlink(current)
	if err != nil || !strings.HasPrefix(filepath.Base(target), "kubelet-client-") {
		t.Fatalf("current link: %v %v", target, err)
	}
	assertMode(t, target, 0o600)
	assertMode(t, cfg.Kubeconfig, 0o600)
	if _, err := os.Stat(filepath.Join(cfg.CertDir, clientKeyFile)); !os.IsNotExist(err) {
		t.Errorf("the in-flight key should be gone after issue: %v", err)
	}
	kc, err := clientcmd.LoadFromFile(cfg.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	auth := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
	if auth.ClientCertificate != current || auth.ClientKey != current || kc.Clusters["default-cluster"].Server != "https://127.0.0.1:6443" {
		t.Errorf("kubeconfig user %+v cluster %+v", auth, kc.Clusters)
	}
	// A second start with a valid kubeconfig sends no new CSR.
	if err := Bootstrap(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if csrs, _ := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{}); len(csrs.Items) != 1 {
		t.Errorf("restart sent a new CSR: %d CSRs", len(csrs.Items))
	}
}

// Without the kubeconfig but with a valid current pair, bootstrap rewrites
// the kubeconfig and sends nothing.
func TestBootstrapReusesCurrentPair(t *testing.T) {
	client := fake.NewClientset()
	cfg := bootstrapConfig(t, client)
	c, k := testPair(t, "system:node:node-1", time.Now().Add(time.Hour))
	if _, err := NewFileStore(cfg.CertDir, "kubelet-client").Update(c, k); err != nil {
		t.Fatal(err)
	}
	if err := Bootstrap(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := validKubeconfig(cfg.Kubeconfig); err != nil {
		t.Errorf("kubeconfig not usable: %v", err)
	}
	if csrs, _ := client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{}); len(csrs.Items) != 0 {
		t.Errorf("sent %d CSRs", len(csrs.Items))
	}
}

// An expired client certificate in the kubeconfig triggers a new bootstrap.
func TestValidKubeconfigRejectsExpired(t *testing.T) {
	dir := t.TempDir()
	c, k := testPair(t, "old", time.Now().Add(-time.Minute))
	pair := filepath.Join(dir, "pair.pem")
	write(t, pair, string(c)+string(k))
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://x"}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificate: pair, ClientKey: pair}
	cfg.Contexts["x"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "x"
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	if err := validKubeconfig(path); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("got %v, want expired", err)
	}
	if err := validKubeconfig(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing kubeconfig is valid")
	}
}

// A denied CSR is not fatal: bootstrap keeps trying with a fresh key until
// its context ends, and says why.
func TestBootstrapKeepsWaitingAfterDenial(t *testing.T) {
	client := fake.NewClientset()
	cfg := bootstrapConfig(t, client)
	signer := newFakeSigner(t, client)
	signer.deny = true
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	go signer.run(ctx)
	err := Bootstrap(ctx, cfg)
	if err == nil {
		t.Fatal("bootstrap succeeded with every CSR denied")
	}
	csrs, _ := client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if len(csrs.Items) < 2 {
		t.Errorf("%d CSRs: a denied request should be followed by a new one with a new key", len(csrs.Items))
	}
	if _, err := os.Stat(cfg.Kubeconfig); !os.IsNotExist(err) {
		t.Errorf("a kubeconfig was written without a certificate")
	}
}

func TestDigestedNameIsStable(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	subj := pkix.Name{CommonName: "system:node:a", Organization: []string{"system:nodes"}}
	u := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}
	a, b := digestedName(key.Public(), subj, u), digestedName(key.Public(), subj, u)
	if a != b || !strings.HasPrefix(a, "node-csr-") {
		t.Fatalf("%s vs %s", a, b)
	}
	if digestedName(other.Public(), subj, u) == a {
		t.Error("another key gives the same name")
	}
	if len(a) > 253 {
		t.Errorf("name too long for an object: %d", len(a))
	}
}
