//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

func currentClientCert(t *testing.T, certDir string) (string, *x509.Certificate) {
	t.Helper()
	target, err := os.Readlink(filepath.Join(certDir, "kubelet-client-current.pem"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			t.Fatalf("no certificate in %s", target)
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return target, c
		}
	}
}

// With short-lived certificates (make test's rotation phase runs the
// controller-manager with --cluster-signing-duration=3m) the client
// certificate is renewed by a new CSR at 70-90% of its life, the symlink
// moves, the agent keeps running and the node stays Ready past the old
// certificate's expiry.
func TestClientCertRotation(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun")
	d, err := time.ParseDuration(env["CLUSTER_SIGNING_DURATION"])
	if err != nil || d > 10*time.Minute {
		t.Skipf("certificates live %s here; the rotation phase of make test runs with CLUSTER_SIGNING_DURATION=3m", env["CLUSTER_SIGNING_DURATION"])
	}
	cs := env.client(t)
	pidBefore, _ := os.ReadFile(env["AGENT_PID"])
	firstFile, first := currentClientCert(t, env["CERT_DIR"])
	t.Logf("client certificate %s valid %s..%s", filepath.Base(firstFile), first.NotBefore.Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly))
	var secondFile string
	err = wait.PollUntilContextTimeout(context.Background(), 2*time.Second, time.Until(first.NotAfter)+30*time.Second, true, func(context.Context) (bool, error) {
		f, c := currentClientCert(t, env["CERT_DIR"])
		secondFile = f
		return c.SerialNumber.Cmp(first.SerialNumber) != 0, nil
	})
	if err != nil {
		t.Fatalf("client certificate not rotated before it expired:\n%s", tailLog(env["AGENT_LOG"], 20))
	}
	_, second := currentClientCert(t, env["CERT_DIR"])
	if second.Subject.CommonName != first.Subject.CommonName || !second.NotAfter.After(first.NotAfter) {
		t.Errorf("new certificate %v until %v", second.Subject, second.NotAfter)
	}
	rotatedAt := time.Now()
	if rotatedAt.After(first.NotAfter) || rotatedAt.Before(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore)*6/10)) {
		t.Errorf("rotated at %s, outside 70-90%% of %s..%s", rotatedAt.Format(time.TimeOnly), first.NotBefore.Format(time.TimeOnly), first.NotAfter.Format(time.TimeOnly))
	}
	t.Logf("rotated to %s", filepath.Base(secondFile))
	// Past the old certificate's expiry the node still heartbeats.
	time.Sleep(time.Until(first.NotAfter.Add(5 * time.Second)))
	err = wait.PollUntilContextTimeout(context.Background(), time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime.After(first.NotAfter), nil
	})
	if err != nil {
		t.Fatalf("no lease renewal after the old certificate expired:\n%s", tailLog(env["AGENT_LOG"], 20))
	}
	if pidAfter, _ := os.ReadFile(env["AGENT_PID"]); string(pidAfter) != string(pidBefore) {
		t.Errorf("the agent restarted during rotation")
	}
}
