//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// requireAgent skips a test written for one node agent's internals (its
// files, its restart) when the cluster runs the other.
func requireAgent(t *testing.T, env clusterEnv, agent string) {
	t.Helper()
	if env["KUBELET"] != agent {
		t.Skipf("checks %s's own behaviour; this cluster runs KUBELET=%s", agent, env["KUBELET"])
	}
}

// The seed's first CSR: sent with the bootstrap token, approved by the
// controller-manager through csr-crb.yaml, issued.
func TestJoinBootstrapCSRApproved(t *testing.T) {
	env := loadEnv(t)
	cs := env.client(t)
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var clientCSR, servingCSR *certificatesv1.CertificateSigningRequest
	for i := range list.Items {
		c := &list.Items[i]
		switch {
		// Other tests (the guide's, bosun join's) bootstrap with tokens of
		// their own; the cluster's node joined with the token bosun0.
		case c.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName && c.Spec.Username == "system:bootstrap:bosun0":
			clientCSR = c
		case c.Spec.SignerName == certificatesv1.KubeletServingSignerName && c.Spec.Username == "system:node:"+env["NODE_NAME"]:
			servingCSR = c
		}
	}
	if clientCSR == nil {
		t.Fatalf("no kube-apiserver-client-kubelet CSR from the bootstrap token bosun0 among %d CSRs", len(list.Items))
	}
	if !approvedIssued(clientCSR) {
		t.Errorf("client CSR %s: requestor %s approved+issued=%v", clientCSR.Name, clientCSR.Spec.Username, approvedIssued(clientCSR))
	}
	if servingCSR == nil || !approvedIssued(servingCSR) {
		t.Errorf("no approved and issued kubelet-serving CSR from system:node:%s", env["NODE_NAME"])
	}
	out, err := env.kubectl(context.Background(), "", "get", "csr")
	if err != nil || !strings.Contains(out, "system:bootstrap:bosun0") || !strings.Contains(out, "Approved,Issued") {
		t.Errorf("kubectl get csr: %v\n%s", err, out)
	}
	t.Logf("kubectl get csr:\n%s", out)
}

func approvedIssued(c *certificatesv1.CertificateSigningRequest) bool {
	approved := false
	for _, cond := range c.Status.Conditions {
		approved = approved || cond.Type == certificatesv1.CertificateApproved
	}
	return approved && len(c.Status.Certificate) > 0
}

// The cert dir holds the seed's layout, private files 0600.
func TestJoinCertDirLayout(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun")
	dir := env["CERT_DIR"]
	for _, prefix := range []string{"kubelet-client", "kubelet-server"} {
		current := filepath.Join(dir, prefix+"-current.pem")
		fi, err := os.Lstat(current)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is not a symlink: %v", current, err)
			continue
		}
		target, _ := os.Readlink(current)
		base := filepath.Base(target)
		if !strings.HasPrefix(base, prefix+"-") || len(base) != len(prefix+"-2006-01-02-15-04-05.pem") {
			t.Errorf("%s -> %s: not <prefix>-<YYYY-MM-DD-HH-MM-SS>.pem", current, target)
		}
		st, err := os.Stat(target)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v (%v), want 0600", target, st.Mode().Perm(), err)
		}
	}
	st, err := os.Stat(env["NODE_KUBECONFIG"])
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig %s: %v %v", env["NODE_KUBECONFIG"], err, st.Mode().Perm())
	}
	data, _ := os.ReadFile(env["NODE_KUBECONFIG"])
	if !strings.Contains(string(data), filepath.Join(dir, "kubelet-client-current.pem")) {
		t.Errorf("kubeconfig does not refer to kubelet-client-current.pem:\n%s", data)
	}
}

// The Node carries the fields an operator sees in `kubectl get nodes -o wide`
// and the ones the scheduler relies on.
func TestJoinNodeFields(t *testing.T) {
	env := loadEnv(t)
	cs := env.client(t)
	node, err := cs.CoreV1().Nodes().Get(context.Background(), env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"kubernetes.io/hostname": env["NODE_NAME"], "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"} {
		if node.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, node.Labels[k], v)
		}
	}
	info := node.Status.NodeInfo
	if info.KubeletVersion != "v1.36.3" || !strings.HasPrefix(info.ContainerRuntimeVersion, "containerd://") ||
		info.BootID == "" || info.MachineID == "" || info.KernelVersion == "" || info.OSImage == "" {
		t.Errorf("nodeInfo %+v", info)
	}
	addrs := map[corev1.NodeAddressType]string{}
	for _, a := range node.Status.Addresses {
		addrs[a.Type] = a.Address
	}
	if addrs[corev1.NodeInternalIP] != env["NODE_IP"] || addrs[corev1.NodeHostName] != env["NODE_NAME"] {
		t.Errorf("addresses %v", node.Status.Addresses)
	}
	pods := node.Status.Capacity[corev1.ResourcePods]
	if pods.Value() != 220 {
		t.Errorf("capacity pods %s, want maxPods 220", pods.String())
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
		c, a := node.Status.Capacity[r], node.Status.Allocatable[r]
		if c.IsZero() || a.Cmp(c) > 0 {
			t.Errorf("%s capacity %s allocatable %s", r, c.String(), a.String())
		}
	}
	mem, allocMem := node.Status.Capacity[corev1.ResourceMemory], node.Status.Allocatable[corev1.ResourceMemory]
	if mem.Value()-allocMem.Value() < 100<<20 {
		t.Errorf("allocatable memory does not leave the 100Mi hard eviction threshold: %s of %s", allocMem.String(), mem.String())
	}
	if node.Status.DaemonEndpoints.KubeletEndpoint.Port != 10250 {
		t.Errorf("kubelet endpoint port %d", node.Status.DaemonEndpoints.KubeletEndpoint.Port)
	}
	want := map[corev1.NodeConditionType]string{corev1.NodeReady: "KubeletReady", corev1.NodeMemoryPressure: "KubeletHasSufficientMemory",
		corev1.NodeDiskPressure: "KubeletHasNoDiskPressure", corev1.NodePIDPressure: "KubeletHasSufficientPID"}
	for _, c := range node.Status.Conditions {
		if r, ok := want[c.Type]; ok {
			if c.Reason != r {
				t.Errorf("condition %s reason %s, want %s", c.Type, c.Reason, r)
			}
			delete(want, c.Type)
		}
	}
	if len(want) > 0 {
		t.Errorf("missing conditions %v", want)
	}
	if len(node.Status.Images) == 0 {
		t.Errorf("node reports no images")
	}
}

// The Lease in kube-node-lease is renewed about every 10 s.
func TestJoinLeaseRenews(t *testing.T) {
	env := loadEnv(t)
	cs := env.client(t)
	ctx := context.Background()
	first, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Spec.LeaseDurationSeconds == nil || *first.Spec.LeaseDurationSeconds != 40 || first.Spec.HolderIdentity == nil || *first.Spec.HolderIdentity != env["NODE_NAME"] {
		t.Errorf("lease spec %+v", first.Spec)
	}
	if len(first.OwnerReferences) != 1 || first.OwnerReferences[0].Kind != "Node" {
		t.Errorf("lease owner %v", first.OwnerReferences)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 25*time.Second, false, func(ctx context.Context) (bool, error) {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime.After(first.Spec.RenewTime.Time), nil
	})
	if err != nil {
		t.Fatalf("lease not renewed within 25s (renewTime %v)", first.Spec.RenewTime)
	}
}

// restartAgent stops the node agent with SIGTERM (unless it is gone) and starts it again with
// the same binary and flags, as systemd's Restart=always would.
func restartAgent(t *testing.T, env clusterEnv) {
	t.Helper()
	data, err := os.ReadFile(env["AGENT_PID"])
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid > 0 && syscall.Kill(pid, syscall.SIGTERM) == nil { // it may be gone already (kill -9)
		for i := 0; i < 300 && syscall.Kill(pid, 0) == nil && !isZombie(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	logf, err := os.OpenFile(env["AGENT_LOG"], os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== %s restarted by %s\n", time.Now().Format(time.RFC3339), t.Name())
	cmd := exec.Command(env["AGENT_BIN"], strings.Fields(env["AGENT_ARGS"])...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env["AGENT_PID"], []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Release()
}

// waitAgentRefused waits for the node agent just started to exit (it
// refused its configuration) and returns the last lines of its log.
func waitAgentRefused(t *testing.T, env clusterEnv) string {
	t.Helper()
	data, err := os.ReadFile(env["AGENT_PID"])
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	eventually(t, 60*time.Second, "the agent to refuse to start", func() error {
		if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			return fmt.Errorf("the agent (pid %d) still runs", pid)
		}
		return nil
	})
	return tailLog(env["AGENT_LOG"], 40)
}

// reconfigureAgent writes the node agent's configuration file and restarts
// the agent on it.
func reconfigureAgent(t *testing.T, env clusterEnv, config []byte) {
	t.Helper()
	if err := os.WriteFile(env["CONFIG_FILE"], config, 0o644); err != nil {
		t.Fatal(err)
	}
	restartAgent(t, env)
}

// reconfigureAgentReady is reconfigureAgent for a configuration the agent
// accepts: it returns once the new agent serves the node API, so the next
// test does not find the port closed.
func reconfigureAgentReady(t *testing.T, env clusterEnv, config []byte) {
	t.Helper()
	reconfigureAgent(t, env, config)
	eventually(t, 90*time.Second, "the agent serving the node API again", func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(env["NODE_IP"], "10250"), time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func isZombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// A restart reuses the certificates on disk: no new CSR of either kind, the
// same current files, and the node Ready again with a renewing Lease.
func TestJoinRestartReusesCertificates(t *testing.T) {
	env := loadEnv(t)
	requireAgent(t, env, "bosun")
	cs := env.client(t)
	ctx := context.Background()
	before, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	links := map[string]string{}
	for _, p := range []string{"kubelet-client", "kubelet-server"} {
		links[p], _ = os.Readlink(filepath.Join(env["CERT_DIR"], p+"-current.pem"))
	}
	// Heartbeats carry whole seconds.
	restartStart := time.Now().Truncate(time.Second)
	restartAgent(t, env)
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, false, func(ctx context.Context) (bool, error) {
		l, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
		if err != nil || !l.Spec.RenewTime.After(restartStart) {
			return false, nil
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, env["NODE_NAME"], metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(restartStart) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("node not Ready with a renewed lease after the restart:\n%s", tailLog(env["AGENT_LOG"], 20))
	}
	after, _ := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if len(after.Items) != len(before.Items) {
		t.Errorf("restart sent %d new CSRs", len(after.Items)-len(before.Items))
	}
	for p, was := range links {
		if now, _ := os.Readlink(filepath.Join(env["CERT_DIR"], p+"-current.pem")); now != was {
			t.Errorf("%s-current.pem moved from %s to %s", p, was, now)
		}
	}
}

func tailLog(file string, n int) string {
	data, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
