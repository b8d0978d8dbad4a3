package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a kubeconfig for the local apiserver with either a
// client certificate (cert, key) or a bearer token.
func (l *layout) writeKubeconfig(file, user, cert, key, token string) error {
	ca, err := os.ReadFile(filepath.Join(l.pki, "ca.pem"))
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubernetes"] = &clientcmdapi.Cluster{Server: l.apiServer(), CertificateAuthorityData: ca}
	auth := &clientcmdapi.AuthInfo{Token: token}
	if cert != "" {
		if auth.ClientCertificateData, err = os.ReadFile(cert); err != nil {
			return err
		}
		if auth.ClientKeyData, err = os.ReadFile(key); err != nil {
			return err
		}
	}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "kubernetes", AuthInfo: user}
	cfg.CurrentContext = "default"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(file, data, 0o600)
}

func (l *layout) componentKubeconfig(name string) string {
	return filepath.Join(l.out, name+".kubeconfig")
}

// startControlPlane starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler with the recipe's flags and waits for the apiserver.
func (l *layout) startControlPlane(ctx context.Context) error {
	pk := func(name string) string { return filepath.Join(l.pki, name) }
	for _, c := range []struct{ file, user, stem string }{
		{l.adminKubeconfig(), "admin", "admin"},
		{l.componentKubeconfig("kube-controller-manager"), "system:kube-controller-manager", "kube-controller-manager"},
		{l.componentKubeconfig("kube-scheduler"), "system:kube-scheduler", "kube-scheduler"},
	} {
		if err := l.writeKubeconfig(c.file, c.user, pk(c.stem+".pem"), pk(c.stem+"-key.pem"), ""); err != nil {
			return err
		}
	}
	if _, err := l.startDaemon("etcd", l.binary("etcd"),
		"--name=bosun-local", "--data-dir="+l.etcdData,
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=bosun-local=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
		"--unsafe-no-fsync=true", "--quota-backend-bytes=4294967296", "--log-level=warn"); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, "etcd", func() error { return httpOK("http://127.0.0.1:2379/health", nil) }); err != nil {
		return err
	}
	if err := l.startAPIServer(ctx); err != nil {
		return err
	}
	if _, err := l.startDaemon("kube-controller-manager", l.binary("kube-controller-manager"),
		"--kubeconfig="+l.componentKubeconfig("kube-controller-manager"),
		"--authentication-kubeconfig="+l.componentKubeconfig("kube-controller-manager"),
		"--authorization-kubeconfig="+l.componentKubeconfig("kube-controller-manager"),
		"--bind-address=127.0.0.1",
		"--cluster-signing-cert-file="+pk("ca.pem"), "--cluster-signing-key-file="+pk("ca-key.pem"),
		"--cluster-signing-duration="+envOr("CLUSTER_SIGNING_DURATION", "8760h"),
		"--root-ca-file="+pk("ca.pem"), "--service-account-private-key-file="+pk("sa.key"),
		"--use-service-account-credentials", "--controllers=*,bootstrapsigner,tokencleaner",
		"--service-cluster-ip-range="+serviceCIDR, "--leader-elect=false", "--v=1",
		"--allocate-node-cidrs", "--cluster-cidr="+clusterCIDR, fmt.Sprintf("--node-cidr-mask-size=%d", l.nodeCIDRMask())); err != nil {
		return err
	}
	if _, err := l.startDaemon("kube-scheduler", l.binary("kube-scheduler"),
		"--kubeconfig="+l.componentKubeconfig("kube-scheduler"),
		"--authentication-kubeconfig="+l.componentKubeconfig("kube-scheduler"),
		"--authorization-kubeconfig="+l.componentKubeconfig("kube-scheduler"),
		"--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"); err != nil {
		return err
	}
	return nil
}

// startAPIServer starts kube-apiserver and waits until it is ready.
func (l *layout) startAPIServer(ctx context.Context) error {
	pk := func(name string) string { return filepath.Join(l.pki, name) }
	if _, err := l.startDaemon("kube-apiserver", l.binary("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379", "--bind-address=0.0.0.0", "--secure-port=6443",
		"--advertise-address="+hostIP,
		"--tls-cert-file="+pk("kubernetes.pem"), "--tls-private-key-file="+pk("kubernetes-key.pem"),
		"--client-ca-file="+pk("ca.pem"),
		"--kubelet-client-certificate="+pk("kubernetes.pem"), "--kubelet-client-key="+pk("kubernetes-key.pem"),
		"--kubelet-certificate-authority="+pk("ca.pem"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-key-file="+pk("sa.pub"), "--service-account-signing-key-file="+pk("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--enable-bootstrap-token-auth", "--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction", "--service-cluster-ip-range="+serviceCIDR,
		"--allow-privileged=true", "--event-ttl=1h", "--v=1",
		// DRA's beta APIs beside v1, as upstream's DRA e2e clusters serve them
		// (drivers and specs that still speak them; make conformance SUITE=dra).
		"--runtime-config=resource.k8s.io/v1beta1=true,resource.k8s.io/v1beta2=true",
		// The aggregation layer (the Aggregator spec registers an APIService).
		"--requestheader-client-ca-file="+pk("ca.pem"), "--requestheader-allowed-names=aggregator",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file="+pk("proxy-client.pem"), "--proxy-client-key-file="+pk("proxy-client-key.pem"),
		"--enable-aggregator-routing=true"); err != nil {
		return err
	}
	if err := waitFor(ctx, 90*time.Second, "kube-apiserver", func() error { return l.apiserverHealthy() }); err != nil {
		return fmt.Errorf("%w\n%s", err, tailFile(l.logFile("kube-apiserver"), 20))
	}
	return nil
}

// apiserverHealthy asks the apiserver's /readyz with the admin certificate.
func (l *layout) apiserverHealthy() error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(l.pki, "admin.pem"), filepath.Join(l.pki, "admin-key.pem"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(l.pki, "ca.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return httpOK(apiServerURL+"/readyz", &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})
}

func httpOK(url string, tlsConfig *tls.Config) error {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func (l *layout) adminClient() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.adminKubeconfig())
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// randomToken returns n characters of [a-z0-9], as bootstrap tokens use.
func randomToken(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// waitFor polls check every 250ms until it succeeds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// tailFile returns the last n lines of a file.
func tailFile(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Sprintf("(no %s: %v)", file, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
