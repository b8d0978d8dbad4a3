package join

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/cluster-bootstrap/token/jws"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
)

const (
	testID     = "abcdef"
	testSecret = "0123456789abcdef"
)

// apiserver is a TLS server with cluster-info signed for testID, answering
// access reviews with allow(attrs).
type apiserver struct {
	*httptest.Server
	caPEM  []byte
	allow  func(authorizationv1.ResourceAttributes) bool
	tokens []string // bearer tokens seen by the access reviews
	// unsigned: the first fetches of cluster-info come without the
	// signature (the bootstrapsigner has not signed it yet).
	unsigned, fetches int
}

// Discovery looks again for a signature for SignatureWait; the tests give it
// none but where they test the wait.
func init() { SignatureWait = 0 }

func newAPIServer(t *testing.T, sign bool) *apiserver {
	t.Helper()
	a := &apiserver{allow: func(authorizationv1.ResourceAttributes) bool { return true }}
	a.Server = httptest.NewUnstartedServer(nil)
	a.StartTLS()
	t.Cleanup(a.Close)
	a.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Certificate().Raw})
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{Server: a.URL, CertificateAuthorityData: a.caPEM}
	kubeconfig, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	cm := corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: "kube-public"},
		Data: map[string]string{"kubeconfig": string(kubeconfig)}}
	if sign {
		sig, err := jws.ComputeDetachedSignature(string(kubeconfig), testID, testSecret)
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["jws-kubeconfig-"+testID] = sig
	}
	a.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case clusterInfoPath:
			a.fetches++
			if a.fetches <= a.unsigned {
				bare := cm.DeepCopy()
				delete(bare.Data, "jws-kubeconfig-"+testID)
				_ = json.NewEncoder(w).Encode(bare)
				return
			}
			_ = json.NewEncoder(w).Encode(cm)
		case "/healthz":
			_, _ = w.Write([]byte("ok"))
		case "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
			auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			a.tokens = append(a.tokens, auth)
			if auth != testID+"."+testSecret {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
					Status: "Failure", Reason: metav1.StatusReasonUnauthorized, Code: 401, Message: "Unauthorized"})
				return
			}
			var review authorizationv1.SelfSubjectAccessReview
			if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			review.Status.Allowed = a.allow(*review.Spec.ResourceAttributes)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(review)
		default:
			http.NotFound(w, r)
		}
	})
	return a
}

func (a *apiserver) hash(t *testing.T) string {
	return PublicKeyHash(a.Certificate())
}

func TestParseTokenAndHash(t *testing.T) {
	if _, err := ParseToken(testID + "." + testSecret); err != nil {
		t.Errorf("a valid token refused: %v", err)
	}
	for _, bad := range []string{"", "abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789", "abcdef:0123456789abcdef"} {
		_, err := ParseToken(bad)
		if err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "0123456789abcdef\"") && bad != "" {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
	good := "sha256:" + strings.Repeat("AB", 32)
	if got, err := ParseCAHash(good); err != nil || got != strings.ToLower(good) {
		t.Errorf("ParseCAHash(%q) = %q, %v", good, got, err)
	}
	for _, bad := range []string{"abc", "sha1:" + strings.Repeat("ab", 20), "sha256:" + strings.Repeat("ab", 31), "sha256:zz" + strings.Repeat("ab", 31)} {
		if _, err := ParseCAHash(bad); err == nil {
			t.Errorf("ParseCAHash(%q) accepted", bad)
		}
	}
}

// A token signed into cluster-info a moment after the join starts is found:
// discovery looks again until SignatureWait has passed.
func TestDiscoverWaitsForTheSignature(t *testing.T) {
	a := newAPIServer(t, true)
	a.unsigned = 2
	defer func(w time.Duration) { SignatureWait = w }(SignatureWait)
	SignatureWait = 10 * time.Second
	hash := PublicKeyHash(a.Certificate())
	if _, err := Discover(context.Background(), a.URL, Token{ID: testID, Secret: testSecret}, []string{hash}, false); err != nil {
		t.Fatalf("a signature that came on the third look: %v", err)
	}
	if a.fetches < 3 {
		t.Errorf("cluster-info fetched %d times, want 3 or more", a.fetches)
	}
	SignatureWait = 0
	a.fetches, a.unsigned = 0, 5
	if _, err := Discover(context.Background(), a.URL, Token{ID: testID, Secret: testSecret}, []string{hash}, false); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("no signature within the wait: %v", err)
	}
}

func TestDiscover(t *testing.T) {
	ctx := context.Background()
	a := newAPIServer(t, true)
	token := Token{ID: testID, Secret: testSecret}
	d, err := Discover(ctx, a.URL, token, []string{a.hash(t)}, false)
	if err != nil {
		t.Fatalf("discovery with the right token and hash: %v", err)
	}
	if string(d.CAData) != string(a.caPEM) || d.Server != a.URL || d.ServerTime.IsZero() {
		t.Errorf("discovered %+v", d)
	}
	cases := []struct {
		name   string
		token  Token
		hashes []string
		skip   bool
		want   string
	}{
		{"wrong secret", Token{ID: testID, Secret: "ffffffffffffffff"}, []string{a.hash(t)}, false, "does not match the token's secret"},
		{"unknown id", Token{ID: "zzzzzz", Secret: testSecret}, []string{a.hash(t)}, false, `not signed for token ID "zzzzzz"`},
		{"wrong hash", token, []string{"sha256:" + strings.Repeat("00", 32)}, false, "not the --discovery-token-ca-cert-hash given"},
		{"no hash", token, nil, false, "--discovery-token-ca-cert-hash is required"},
	}
	for _, c := range cases {
		_, err := Discover(ctx, a.URL, c.token, c.hashes, c.skip)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	if _, err := Discover(ctx, a.URL, token, nil, true); err != nil {
		t.Errorf("unsafe skip of the CA pin: %v", err)
	}
	if _, err := Discover(ctx, "http://"+strings.TrimPrefix(a.URL, "https://"), token, []string{a.hash(t)}, false); err == nil ||
		!strings.Contains(err.Error(), "must be an https:// URL") {
		t.Errorf("http server: %v", err)
	}
	unsigned := newAPIServer(t, false)
	if _, err := Discover(ctx, unsigned.URL, token, []string{unsigned.hash(t)}, false); err == nil || !strings.Contains(err.Error(), "bootstrapsigner") {
		t.Errorf("unsigned cluster-info: %v", err)
	}
}

func kubelet(port, healthz int32) *kubeletv1beta1.KubeletConfiguration {
	return &kubeletv1beta1.KubeletConfiguration{
		Address: "127.0.0.1", Port: port, HealthzBindAddress: "127.0.0.1", HealthzPort: ptr.To(healthz),
		FailSwapOn: ptr.To(true), CgroupDriver: "cgroupfs",
	}
}

func freePort(t *testing.T) int32 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func TestPreflightSwapPortsClock(t *testing.T) {
	dir := t.TempDir()
	swaps := filepath.Join(dir, "swaps")
	header := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
	if err := os.WriteFile(swaps, []byte(header), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &Preflight{Kubelet: kubelet(freePort(t), freePort(t)), SwapsFile: swaps}
	if note, err := p.swap(); err != nil || note != "off" {
		t.Errorf("no swap: %q, %v", note, err)
	}
	if err := os.WriteFile(swaps, []byte(header+"/swapfile  file  1048572  0  -2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.swap(); err == nil || !strings.Contains(err.Error(), "/swapfile") || !strings.Contains(err.Error(), "swapoff -a") {
		t.Errorf("swap on with failSwapOn: %v", err)
	}
	p.Kubelet.FailSwapOn = ptr.To(false)
	if _, err := p.swap(); err != nil {
		t.Errorf("swap on, failSwapOn false: %v", err)
	}

	p.CgroupV2 = func() bool { return false }
	if _, err := p.cgroups(); err == nil || !strings.Contains(err.Error(), "failCgroupV1: false") {
		t.Errorf("cgroup v1 with failCgroupV1 true: %v", err)
	}
	p.Kubelet.FailCgroupV1 = ptr.To(false)
	if note, err := p.cgroups(); err != nil || !strings.Contains(note, "v1") {
		t.Errorf("cgroup v1 with failCgroupV1 false: %q, %v", note, err)
	}
	p.Kubelet.FailCgroupV1 = nil
	p.CgroupV2 = func() bool { return true }
	if _, err := p.cgroups(); err != nil {
		t.Errorf("cgroup v2: %v", err)
	}

	if err := p.ports(); err != nil {
		t.Errorf("free ports: %v", err)
	}
	held, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.Kubelet.Port))))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := p.ports(); err == nil || !strings.Contains(err.Error(), held.Addr().String()+" is in use") {
		t.Errorf("a taken port: %v", err)
	}

	a := newAPIServer(t, true)
	p = &Preflight{Kubelet: kubelet(0, 0), Server: a.URL, CAData: a.caPEM}
	if _, err := p.clock(context.Background()); err != nil {
		t.Errorf("same clock: %v", err)
	}
	p.Now = func() time.Time { return time.Now().Add(-2 * time.Minute) }
	if _, err := p.clock(context.Background()); err == nil || !strings.Contains(err.Error(), "away from the apiserver's") {
		t.Errorf("a clock 2 minutes behind: %v", err)
	}
}

func TestPreflightRBAC(t *testing.T) {
	ctx := context.Background()
	a := newAPIServer(t, true)
	p := &Preflight{Kubelet: kubelet(0, 0), Server: a.URL, CAData: a.caPEM, Token: testID + "." + testSecret}
	if _, err := p.rbac(ctx); err != nil {
		t.Errorf("every binding there: %v", err)
	}
	a.allow = func(attrs authorizationv1.ResourceAttributes) bool { return attrs.Subresource != "nodeclient" }
	_, err := p.rbac(ctx)
	if err == nil || !strings.Contains(err.Error(), "auto-approve-csrs-for-group") || strings.Contains(err.Error(), "kubelet-bootstrap --clusterrole") {
		t.Errorf("no auto-approve binding: %v", err)
	}
	a.allow = func(authorizationv1.ResourceAttributes) bool { return false }
	if _, err := p.rbac(ctx); err == nil || !strings.Contains(err.Error(), "clusterrolebinding kubelet-bootstrap") {
		t.Errorf("no bindings: %v", err)
	}
	p.Token = testID + ".ffffffffffffffff"
	if _, err := p.rbac(ctx); err == nil || !strings.Contains(err.Error(), "Unauthorized") || strings.Contains(err.Error(), "ffffffffffffffff") {
		t.Errorf("a refused token (its secret never shown): %v", err)
	}
}

func TestUnitAndBootstrapKubeconfig(t *testing.T) {
	o := Options{RootDir: "/var/lib/kubelet", BootstrapKubeconfig: "/etc/kubernetes/kubelet-bootstrap.kubeconfig",
		CertDir: "/etc/kubernetes/cert", Kubeconfig: "/etc/kubernetes/kubelet.kubeconfig",
		ConfigFile: "/etc/kubernetes/kubelet-config.yaml", NodeName: "node-a", NodeIP: "10.0.0.5"}
	args := append([]string{"/usr/bin/bosun"}, o.agentFlags()...)
	u := unit(o, args)
	for _, want := range []string{"ExecStart=/usr/bin/bosun \\\n  --root-dir=/var/lib/kubelet \\\n", "--hostname-override=node-a", "--node-ip=10.0.0.5",
		"--config=/etc/kubernetes/kubelet-config.yaml", "Restart=always", "WantedBy=multi-user.target", "WorkingDirectory=/var/lib/kubelet"} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q:\n%s", want, u)
		}
	}
	data, err := bootstrapKubeconfig(&Discovered{Server: "https://10.0.0.1:6443", CAData: []byte("ca")}, Token{ID: testID, Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if cfg.Clusters[ctx.Cluster].Server != "https://10.0.0.1:6443" || cfg.AuthInfos[ctx.AuthInfo].Token != testID+"."+testSecret || ctx.AuthInfo != "kubelet-bootstrap" {
		t.Errorf("bootstrap kubeconfig:\n%s", data)
	}
}

func TestConfigTemplateLoadsAsTheAgentLoadsIt(t *testing.T) {
	o := Options{RootDir: "/var/lib/kubelet", BootstrapKubeconfig: "/b", CertDir: "/c", Kubeconfig: "/k",
		ConfigFile: filepath.Join(t.TempDir(), "kubelet-config.yaml"), NodeName: "n", NodeIP: "10.0.0.5",
		ClusterDNS: "10.254.0.2", ClusterDomain: "cluster.local", CgroupDriver: "cgroupfs"}
	data, kept, err := o.configFile(context.Background(), "/c/ca.pem")
	if err != nil || kept {
		t.Fatalf("configFile: kept %v, %v", kept, err)
	}
	cfg, err := loadAsAgent(o, data)
	if err != nil {
		t.Fatal(err)
	}
	kc := cfg.Kubelet
	if kc.Address != "10.0.0.5" || kc.Authentication.X509.ClientCAFile != "/c/ca.pem" || len(kc.ClusterDNS) != 1 || kc.ClusterDNS[0] != "10.254.0.2" ||
		*kc.Authentication.Anonymous.Enabled || kc.Authorization.Mode != "Webhook" || kc.ReadOnlyPort != 0 || !kc.ServerTLSBootstrap || kc.MaxPods != 220 {
		t.Errorf("config as loaded: %+v", kc)
	}
	if kc.FailCgroupV1 == nil || !*kc.FailCgroupV1 {
		t.Errorf("failCgroupV1 without --fail-cgroupv1: %v, want the default true", kc.FailCgroupV1)
	}
	// --fail-cgroupv1=false: the new config lets the agent run on cgroup v1.
	var parsed Options
	if err := parsed.FlagSet().Parse([]string{"--fail-cgroupv1=false"}); err != nil {
		t.Fatal(err)
	}
	o.AllowCgroupV1 = parsed.AllowCgroupV1
	if data, _, err = o.configFile(context.Background(), "/c/ca.pem"); err != nil {
		t.Fatal(err)
	}
	if cfg, err = loadAsAgent(o, data); err != nil || *cfg.Kubelet.FailCgroupV1 {
		t.Errorf("--fail-cgroupv1=false: %v, config:\n%s", err, data)
	}
	o.AllowCgroupV1 = false
	// An existing config is kept as it is.
	if err := os.WriteFile(o.ConfigFile, []byte("kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\nmaxPods: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, kept, err = o.configFile(context.Background(), "/c/ca.pem")
	if err != nil || !kept || !strings.Contains(string(data), "maxPods: 7") {
		t.Errorf("existing config: kept %v, %v:\n%s", kept, err, data)
	}
	o.CgroupDriver = "upstart"
	_ = os.Remove(o.ConfigFile)
	if _, _, err := o.configFile(context.Background(), "/c/ca.pem"); err == nil || !strings.Contains(err.Error(), "cgroupfs or systemd") {
		t.Errorf("a bad cgroup driver: %v", err)
	}
}

func TestCAFileHash(t *testing.T) {
	a := newAPIServer(t, true)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, a.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := CAFileHash(file); err != nil || got != a.hash(t) {
		t.Errorf("CAFileHash = %q, %v; want %q", got, err, a.hash(t))
	}
	if err := os.WriteFile(file, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CAFileHash(file); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a file without a certificate: %v", err)
	}
}

// The unit's --node-ip is the config's address when it names one, else the
// address that reaches the apiserver; never a loopback address (an
// apiserver behind a local proxy): then none, and the agent picks its own.
func TestNodeIPOf(t *testing.T) {
	header := "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\n"
	if ip := nodeIPOf([]byte(header+"address: \"10.0.0.5\"\n"), "https://127.0.0.1:6443"); ip != "10.0.0.5" {
		t.Errorf("a config at 10.0.0.5: %q", ip)
	}
	if ip := nodeIPOf([]byte(header+"address: 0.0.0.0\n"), "https://127.0.0.1:8443"); ip != "" {
		t.Errorf("a config on every address, the apiserver behind a local proxy: %q, want none", ip)
	}
	if ip := nodeIPOf([]byte(header+"address: 127.0.0.1\n"), "https://127.0.0.1:8443"); ip != "" {
		t.Errorf("a config on the loopback address: %q, want none", ip)
	}
}
