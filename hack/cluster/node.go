package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bosun-dev/bosun/internal/join"
)

// writeNodeFiles writes the KubeletConfiguration and, unless bosun join
// writes it (token ""), the bootstrap kubeconfig.
func (l *layout) writeNodeFiles(token string) error {
	for _, d := range []string{nodeDir, l.certDir(), l.rootDir(), l.staticPodPath()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if token != "" {
		if err := l.writeKubeconfig(l.bootstrapKubeconfig(), "kubelet-bootstrap", "", "", token); err != nil {
			return err
		}
	}
	cfg, err := l.kubeletConfig()
	if err != nil {
		return err
	}
	return writeFileAtomic(l.configFile(), []byte(cfg), 0o600) // CIS 4.1.9
}

// localConfigLines are what every node's config adds to the seed's: this
// machine and the cluster's several nodes need them.
const localConfigLines = `# Not in the seed: this machine has cgroup v1, which kubelet v1.36 refuses
# unless told otherwise; static pods for the tests; this node's own runtime
# and pod log folder, since several nodes share the machine.
failCgroupV1: false
staticPodPath: "{{STATIC}}"
containerRuntimeEndpoint: "unix://{{CRI}}"
podLogsDir: "{{POD_LOGS}}"
`

// maxPodsLine is a config's own maxPods setting.
var maxPodsLine = regexp.MustCompile(`(?m)^maxPods:.*\n`)

// kubeletConfig is the node's KubeletConfiguration: the seed's template, or
// with PROFILE=hardened deploy/kubelet-config.yaml, with the local values.
func (l *layout) kubeletConfig() (string, error) {
	// The seed's template, as bosun join writes it, with the local lines.
	base := join.SeedConfig("{{CA}}", "cluster.local", "{{DNS}}", "cgroupfs", "{{NODE_IP}}") + localConfigLines
	if l.profile == "hardened" {
		data, err := os.ReadFile(filepath.Join(l.root, "deploy", "kubelet-config.yaml"))
		if err != nil {
			return "", err
		}
		base = strings.NewReplacer("##NODE_IP##", "{{NODE_IP}}", "/etc/kubernetes/cert/ca.pem", "{{CA}}", "10.254.0.2", "{{DNS}}").Replace(string(data)) + localConfigLines
	}
	cfg := strings.NewReplacer("{{CA}}", filepath.Join(l.pki, "ca.pem"), "{{DNS}}", clusterDNSIP,
		"{{NODE_IP}}", l.node.ip, "{{STATIC}}", l.staticPodPath(), "{{CRI}}", l.containerdSock(),
		"{{POD_LOGS}}", l.podLogsDir()).Replace(base)
	if root := l.cgroupRoot(); root != "" {
		cfg += "cgroupRoot: \"" + root + "\"\n"
	}
	if l.maxPods > 0 {
		// The profile's own maxPods line gives way (a key twice is an error).
		cfg = maxPodsLine.ReplaceAllString(cfg, "") + fmt.Sprintf("maxPods: %d\n", l.maxPods)
	}
	if l.logMax != "" {
		cfg += "containerLogMaxSize: " + l.logMax + "\n"
	}
	return cfg, nil
}

// agentArgs is the seed unit's flag set with the local paths.
func (l *layout) agentArgs() []string {
	args := []string{
		"--root-dir=" + l.rootDir(),
		"--bootstrap-kubeconfig=" + l.bootstrapKubeconfig(),
		"--cert-dir=" + l.certDir(),
		"--kubeconfig=" + l.nodeKubeconfig(),
		"--config=" + l.configFile(),
		"--hostname-override=" + l.nodeName,
		"--node-ip=" + l.node.ip,
	}
	// kubelet v1.36 no longer has --pod-infra-container-image: the runtime's
	// sandbox_image (set in our containerd config) decides.
	if l.agent == "bosun" {
		args = append(args, "--pod-infra-container-image="+pauseImage)
	}
	return append(args, "--v=2")
}

// startAgent starts the node agent (bosun or the upstream kubelet).
func (l *layout) startAgent() error {
	bin := l.agentBinary()
	if !fileExists(bin) {
		return fmt.Errorf("node agent %s is not built", bin)
	}
	_, err := l.startDaemon("agent", bin, l.agentArgs()...)
	return err
}

// waitNodeReady waits for the node to be Ready, approving its kubelet-serving
// CSR on the way as the seed's operator does by hand. With a zero since (a
// fresh node) it also waits for that CSR; otherwise (an agent started on a
// node that has its certificates) for a Ready heartbeat at or after since.
func (l *layout) waitNodeReady(ctx context.Context, cs kubernetes.Interface, timeout time.Duration, since time.Time) error {
	approved := map[string]bool{}
	since = since.Truncate(time.Second) // heartbeats carry whole seconds
	return waitFor(ctx, timeout, "node "+l.nodeName+" Ready", func() error {
		if l.daemonPid("agent") == 0 {
			return fmt.Errorf("the node agent exited")
		}
		if err := l.approveServingCSRs(ctx, cs, approved); err != nil {
			return err
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, l.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					if !since.IsZero() {
						if c.LastHeartbeatTime.Time.Before(since) {
							return fmt.Errorf("node Ready only from a heartbeat before the agent started")
						}
						return nil
					}
					if len(approved) == 0 {
						return fmt.Errorf("node is Ready but sent no kubelet-serving CSR yet")
					}
					return nil
				}
				return fmt.Errorf("node Ready=%s: %s", c.Status, c.Message)
			}
		}
		return fmt.Errorf("node has no Ready condition yet")
	})
}

// approveServingCSRs approves the node's pending kubelet-serving CSRs: the
// seed's "kubectl certificate approve" step.
func (l *layout) approveServingCSRs(ctx context.Context, cs kubernetes.Interface, done map[string]bool) error {
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range list.Items {
		csr := &list.Items[i]
		if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName || csr.Spec.Username != "system:node:"+l.nodeName {
			continue
		}
		if len(csr.Status.Conditions) > 0 {
			done[csr.Name] = true
			continue
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue,
			Reason: "LocalClusterApprove", Message: "approved by make up (the seed's manual approval step)",
		})
		if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("approve %s: %w", csr.Name, err)
		}
		fmt.Printf("approved the node's serving certificate request %s (kubectl certificate approve %s)\n", csr.Name, csr.Name)
		done[csr.Name] = true
	}
	return nil
}

// swap replaces the running node agent with the one KUBELET names, keeping
// every flag, file, certificate and pod: the operator's drop-in step (stop
// the kubelet, start the other binary with the same unit). The old agent
// gets SIGTERM, as systemctl stop sends.
func (l *layout) swap(ctx context.Context) error {
	if l.daemonPid("kube-apiserver") == 0 || l.daemonPid("containerd") == 0 {
		return fmt.Errorf("the local cluster is not up: run make up")
	}
	from := l.runningAgent()
	start := time.Now()
	l.stopDaemon("agent", 60*time.Second)
	if err := os.WriteFile(l.agentFile(), []byte(l.agent+"\n"), 0o644); err != nil {
		return err
	}
	if err := l.writeEnv(); err != nil {
		return err
	}
	if err := l.startAgentAgain(ctx); err != nil {
		return err
	}
	fmt.Printf(">>> swapped the node agent %s -> %s in %s\n", from, l.agent, time.Since(start).Round(time.Millisecond))
	return nil
}

// killAgent kills the node agent with SIGKILL, as a crash would.
func (l *layout) killAgent() error {
	pid := l.daemonPid("agent")
	if pid == 0 {
		return fmt.Errorf("no node agent is running")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	for i := 0; i < 100 && processAlive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// startAgentAgain starts the recorded agent on a node that already joined
// (its certificates on disk) and waits for a fresh Ready heartbeat.
func (l *layout) startAgentAgain(ctx context.Context) error {
	if l.daemonPid("agent") != 0 {
		return fmt.Errorf("a node agent is already running")
	}
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	// The agent before may still hold the healthz port for a moment after
	// its process is gone (a swap once had the new agent fail to bind it):
	// wait up to 10 s for nothing to answer there.
	for i := 0; i < 100 && l.nodeHTTPOK("http://127.0.0.1:10248/healthz") == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	if err := l.startAgent(); err != nil {
		return err
	}
	_ = os.WriteFile(l.stampFile(), []byte(l.agentStamp()), 0o644)
	if os.Getenv("WAIT") == "none" {
		return nil // the caller watches (hack/chaos kills it during start-up)
	}
	if os.Getenv("WAIT") == "healthz" {
		// The apiserver may be down: wait for the agent's own healthz only.
		return waitFor(ctx, 60*time.Second, "the node agent's healthz", func() error {
			if l.daemonPid("agent") == 0 {
				return fmt.Errorf("the node agent exited")
			}
			return l.nodeHTTPOK("http://127.0.0.1:10248/healthz")
		})
	}
	if err := l.waitNodeReady(ctx, cs, 90*time.Second, start); err != nil {
		return fmt.Errorf("%w\nlast lines of %s:\n%s", err, l.logFile("agent"), tailFile(l.logFile("agent"), 30))
	}
	return nil
}

// nodeHTTPOK asks url from inside the node's network namespace.
func (l *layout) nodeHTTPOK(url string) error {
	if l.node.netns == "" {
		return httpOK(url, nil)
	}
	return l.inNode("curl", "-sf", "-o", "/dev/null", url)
}
