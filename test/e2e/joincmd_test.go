//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// bosun join against the real apiserver: token discovery, the CA pin, the
// preflight, the seed's files written or nothing written. (make up joins every
// Bosun node with bosun join, so every other test runs on a node it joined.)
func TestJoinCommand(t *testing.T) {
	env := loadEnv(t)
	cs := env.client(t)
	ctx := context.Background()
	token := newBootstrapToken(t, cs)
	hash := caHash(t, env["CA_CERT"])

	run := func(t *testing.T, dir string, extra ...string) (string, error) {
		t.Helper()
		args := []string{"join", "--server=" + env["APISERVER_URL"], "--node-name=e2e-join", "--node-ip=" + env["NODE_IP"],
			"--bootstrap-kubeconfig=" + filepath.Join(dir, "kubelet-bootstrap.kubeconfig"),
			"--kubeconfig=" + filepath.Join(dir, "kubelet.kubeconfig"),
			"--config=" + filepath.Join(dir, "kubelet-config.yaml"),
			"--cert-dir=" + filepath.Join(dir, "cert"), "--root-dir=" + filepath.Join(dir, "kubelet"),
			"--unit-file=" + filepath.Join(dir, "kubelet.service"), "--container-runtime-endpoint=" + env["CRI_ENDPOINT"]}
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(cctx, env["BOSUN_BIN"], append(args, extra...)...).CombinedOutput()
		return string(out), err
	}
	// A config on free ports, kept by join, so that the preflight passes
	// beside the node's running agent.
	freeConfig := func(t *testing.T, dir string) {
		t.Helper()
		cfg := fmt.Sprintf("kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\naddress: %q\nport: 20250\nhealthzPort: 20248\n"+
			"readOnlyPort: 0\ncgroupDriver: cgroupfs\nfailCgroupV1: false\ncontainerRuntimeEndpoint: %q\n", env["NODE_IP"], env["CRI_ENDPOINT"])
		if err := os.WriteFile(filepath.Join(dir, "kubelet-config.yaml"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// refused runs join, wants it to fail naming want, and wants nothing
	// written but the files that were there before.
	refused := func(t *testing.T, dir, want string, extra ...string) {
		t.Helper()
		before := filesUnder(t, dir)
		out, err := run(t, dir, extra...)
		if err == nil {
			t.Fatalf("bosun join succeeded, want an error naming %q:\n%s", want, out)
		}
		if !strings.Contains(out, want) {
			t.Errorf("bosun join's output does not name %q:\n%s", want, out)
		}
		if after := filesUnder(t, dir); strings.Join(after, " ") != strings.Join(before, " ") {
			t.Errorf("a refused join wrote files: before %v, after %v", before, after)
		}
	}

	t.Run("writes the seed's files", func(t *testing.T) {
		dir := t.TempDir()
		freeConfig(t, dir)
		out, err := run(t, dir, "--token="+token, "--discovery-token-ca-cert-hash="+hash)
		if err != nil {
			t.Fatalf("bosun join: %v\n%s", err, out)
		}
		for _, want := range []string{"[ok]   swap", "[ok]   container runtime", "[ok]   ports", "[ok]   clock", "[ok]   bootstrap RBAC", "kept " + filepath.Join(dir, "kubelet-config.yaml")} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		ca, _ := os.ReadFile(env["CA_CERT"])
		if got, err := os.ReadFile(filepath.Join(dir, "cert", "ca.pem")); err != nil || string(got) != string(ca) {
			t.Errorf("cert/ca.pem is not the cluster CA (%v)", err)
		}
		for _, f := range []string{"cert/ca.pem", "kubelet-bootstrap.kubeconfig"} {
			if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v (%v), want 0600", f, st.Mode().Perm(), err)
			}
		}
		// The bootstrap kubeconfig authenticates as the token's user.
		cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubelet-bootstrap.kubeconfig"))
		if err != nil {
			t.Fatal(err)
		}
		bcs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		review, err := bcs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("the written bootstrap kubeconfig does not authenticate: %v", err)
		}
		id, _, _ := strings.Cut(token, ".")
		if u := review.Status.UserInfo.Username; u != "system:bootstrap:"+id {
			t.Errorf("the bootstrap kubeconfig authenticates as %q, want system:bootstrap:%s", u, id)
		}
		unit, _ := os.ReadFile(filepath.Join(dir, "kubelet.service"))
		for _, want := range []string{"ExecStart=" + env["BOSUN_BIN"] + " \\", "--bootstrap-kubeconfig=" + filepath.Join(dir, "kubelet-bootstrap.kubeconfig"),
			"--cert-dir=" + filepath.Join(dir, "cert"), "--hostname-override=e2e-join", "Restart=always"} {
			if !strings.Contains(string(unit), want) {
				t.Errorf("the unit lacks %q:\n%s", want, unit)
			}
		}
		// Joined once, the node has credentials: join refuses to overwrite them.
		if err := os.WriteFile(filepath.Join(dir, "kubelet.kubeconfig"), []byte("joined"), 0o600); err != nil {
			t.Fatal(err)
		}
		refused(t, dir, "this node has joined before", "--token="+token, "--discovery-token-ca-cert-hash="+hash)
	})
	t.Run("a wrong token secret", func(t *testing.T) {
		id, _, _ := strings.Cut(token, ".")
		refused(t, t.TempDir(), "does not match the token's secret", "--token="+id+".0000000000000000", "--discovery-token-ca-cert-hash="+hash)
	})
	t.Run("an unknown token", func(t *testing.T) {
		refused(t, t.TempDir(), "is not signed for token ID", "--token=zz0000.0000000000000000", "--discovery-token-ca-cert-hash="+hash)
	})
	t.Run("a wrong CA hash", func(t *testing.T) {
		refused(t, t.TempDir(), "not the --discovery-token-ca-cert-hash given", "--token="+token,
			"--discovery-token-ca-cert-hash=sha256:"+strings.Repeat("0", 64))
	})
	t.Run("the ports of the running agent", func(t *testing.T) {
		// No config: join writes the seed's, which listens on NODE_IP:10250.
		refused(t, t.TempDir(), env["NODE_IP"]+":10250 is in use", "--token="+token, "--discovery-token-ca-cert-hash="+hash)
	})
	t.Run("a missing auto-approve binding", func(t *testing.T) {
		crb, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "auto-approve-csrs-for-group", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.RbacV1().ClusterRoleBindings().Delete(ctx, crb.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			restored := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: crb.Name}, Subjects: crb.Subjects, RoleRef: crb.RoleRef}
			if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, restored, metav1.CreateOptions{}); err != nil {
				t.Errorf("restoring %s: %v", crb.Name, err)
			}
		})
		dir := t.TempDir()
		freeConfig(t, dir)
		// RBAC takes a moment to see the deletion.
		err = wait.PollUntilContextTimeout(ctx, time.Second, 30*time.Second, true, func(context.Context) (bool, error) {
			out, err := run(t, dir, "--token="+token, "--discovery-token-ca-cert-hash="+hash)
			return err != nil && strings.Contains(out, "auto-approve-csrs-for-group"), nil
		})
		if err != nil {
			t.Fatal("bosun join did not name the missing auto-approve-csrs-for-group binding")
		}
		refused(t, dir, "kubectl create clusterrolebinding auto-approve-csrs-for-group", "--token="+token, "--discovery-token-ca-cert-hash="+hash)
	})
}

// newBootstrapToken creates a bootstrap token for joining, as kubeadm token
// create does, and waits for cluster-info to be signed for it.
func newBootstrapToken(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	pick := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rand.IntN(len(alphabet))]
		}
		return string(b)
	}
	id, secret := "e2e"+pick(3), pick(16)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: "kube-system"},
		Type:       "bootstrap.kubernetes.io/token",
		StringData: map[string]string{
			"token-id": id, "token-secret": secret,
			"expiration":                     time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
			"auth-extra-groups": "system:bootstrappers:e2e-join",
		},
	}
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Secrets("kube-system").Delete(context.Background(), s.Name, metav1.DeleteOptions{})
	})
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		cm, err := cs.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
		return err == nil && cm.Data["jws-kubeconfig-"+id] != "", nil
	})
	if err != nil {
		t.Fatalf("cluster-info was not signed for the new token %s: %v", id, err)
	}
	return id + "." + secret
}

// caHash is the --discovery-token-ca-cert-hash of a CA file, computed here
// rather than by join.CAFileHash, so that the test does not take join's word
// for what it checks.
func caHash(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// filesUnder lists the files under dir, sorted.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	sort.Strings(out)
	return out
}
