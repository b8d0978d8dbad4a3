// Command cluster runs the local single-node cluster that Bosun is tested on:
// a real etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
// real containerd with runc and CNI, and one node agent (bosun or the upstream
// kubelet) joined through the seed's TLS-bootstrap flow.
//
// Usage: cluster up|down|status|images   (KUBELET=bosun|upstream)
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cluster up|down|status|images|swap|kill-agent|start-agent|stop-apiserver|start-apiserver|restart-containerd|crash|leftovers   (KUBELET=bosun|upstream|mixed NODES=n NODE=i)")
		os.Exit(2)
	}
	// The CRI client logs each failed call; the harness says what failed itself.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	l, err := newLayout(repoRoot(), envOr("KUBELET", "bosun"))
	if err != nil {
		fail(err)
	}
	switch os.Args[1] {
	case "up", "down", "status", "images", "leftovers":
		l = l.on(1) // cluster-wide: the control plane's kubeconfigs are node 1's
		if os.Args[1] == "up" && os.Getenv("NODES") == "" {
			l.nodes = 1 // make up starts one node unless told otherwise
		}
		if os.Args[1] == "up" && os.Getenv("RUNTIME") == "" {
			l.runtime = containerd2 // and the default runtime
		}
	}
	switch os.Args[1] {
	case "up":
		err = l.up(ctx)
	case "down":
		err = l.teardown(ctx, false)
		if err == nil {
			fmt.Println("local cluster stopped; containerd stopped; node state removed")
		}
	case "status":
		err = l.healthy(ctx)
		if err == nil {
			for _, n := range l.each() {
				fmt.Printf("local cluster is up: node %s Ready, agent %s\n", n.nodeName, n.runningAgent())
			}
		}
	case "images":
		var digests map[string]string
		if digests, err = l.buildImages(); err == nil {
			err = l.importImages(digests)
		}
	case "swap":
		err = l.swap(ctx)
	case "stop-apiserver":
		l.stopDaemon("kube-apiserver", 30*time.Second)
	case "start-apiserver":
		err = l.startAPIServer(ctx)
	case "restart-containerd":
		l.stopDaemon("containerd", 20*time.Second)
		err = l.ensureContainerd(ctx)
	case "kill-agent":
		err = l.killAgent()
	case "crash":
		fmt.Printf("killed %d cluster processes with SIGKILL\n", crash())
	case "leftovers":
		if left := l.leftovers(); len(left) > 0 {
			err = fmt.Errorf("the stopped cluster left on the machine:\n  %s", strings.Join(left, "\n  "))
		} else {
			fmt.Println("nothing of the cluster is left on the machine")
		}
	case "start-agent":
		if os.Getenv("KUBELET") == "" && l.runningAgent() != "" {
			l.agent = l.runningAgent() // the agent the node has, not the default
		}
		err = l.startAgentAgain(ctx)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cluster:", err)
	os.Exit(1)
}

// repoRoot is the folder holding go.mod (the harness runs from the repo).
func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "go.mod")) && fileExists(filepath.Join(d, "tools", "go.mod")) {
			return d
		}
	}
	return dir
}

func (l *layout) agentFile() string { return filepath.Join(l.run, l.daemonFile("agent")+".kind") }

func (l *layout) stampFile() string { return filepath.Join(l.run, l.daemonFile("agent")+".stamp") }

// agentStamp identifies the agent binary's build by its content.
func (l *layout) agentStamp() string {
	f, err := os.Open(l.agentBinary())
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (l *layout) recordedStamp() string {
	data, _ := os.ReadFile(l.stampFile())
	return string(data)
}

func (l *layout) runningAgent() string {
	data, _ := os.ReadFile(l.agentFile())
	return strings.TrimSpace(string(data))
}

// healthy reports whether this cluster is running with the requested agents
// on all its nodes and every node is Ready.
func (l *layout) healthy(ctx context.Context) error {
	for _, name := range controlPlaneOrder[1:] {
		if l.daemonPid(name) == 0 {
			return fmt.Errorf("%s is not running", name)
		}
	}
	if err := l.apiserverHealthy(); err != nil {
		return err
	}
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	for _, n := range l.each() {
		for _, name := range []string{"containerd", "agent", "kube-proxy"} {
			if n.daemonPid(name) == 0 {
				return fmt.Errorf("%s of node %s is not running", name, n.nodeName)
			}
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, n.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(node) {
			return fmt.Errorf("node %s is not Ready", n.nodeName)
		}
	}
	// The registries every node pulls through, where nodes reach them.
	for _, addr := range []string{mirrorAddr, privateAddr} {
		if err := registryUp(addr); err != nil {
			return fmt.Errorf("registry %s: %w", addr, err)
		}
	}
	// A start that failed at the cluster DNS left everything else running.
	d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if d.Status.AvailableReplicas < 1 {
		return fmt.Errorf("CoreDNS is not available")
	}
	return nil
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// sameAgents reports whether every node runs the agent it should.
func (l *layout) sameAgents() bool {
	for _, n := range l.each() {
		if n.runningAgent() != n.agent {
			return false
		}
	}
	return l.recordedNodes() == l.nodes
}

func (l *layout) up(ctx context.Context) error {
	start := time.Now()
	if l.healthy(ctx) == nil && l.sameAgents() && l.recordedRuntime() == l.runtime && l.recordedProfile() == l.settings() {
		rebuilt := false
		for _, n := range l.each() {
			if n.agentStamp() != n.recordedStamp() {
				fmt.Printf(">>> %s was rebuilt: restarting the node agent of %s\n", n.agentBinary(), n.nodeName)
				n.stopDaemon("agent", 30*time.Second)
				if err := n.startAgentAndWait(ctx); err != nil {
					return err
				}
				rebuilt = true
			}
		}
		if !rebuilt {
			fmt.Printf("local cluster already up (KUBELET=%s, %d node(s))\n", l.kubelet, l.nodes)
		}
		if err := l.writeEnv(); err != nil { // what runs now, for the tests
			return err
		}
		return l.printUsage()
	}
	need := []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kube-proxy", "coredns", "metrics-server"}
	if l.runtime == containerd2 {
		need = append(need, "runtime/containerd", "runtime/containerd-shim-runc-v2", "runtime/ctr", "runtime/runc")
	}
	for _, b := range need {
		if !fileExists(l.binary(b)) {
			return fmt.Errorf("%s is missing: run hack/build-tools.sh (make up does)", l.binary(b))
		}
	}
	fmt.Println(">>> cleaning what an earlier cluster left")
	if err := l.teardown(ctx, true); err != nil {
		return err
	}
	fmt.Printf(">>> node software: %d node(s), containerd, node IPs on %s\n", l.nodes, hostBridge)
	if err := ensureHostBridge(); err != nil {
		return err
	}
	for _, n := range l.each() {
		if err := n.ensureNodeMachine(ctx); err != nil {
			return fmt.Errorf("node %s: %w", n.nodeName, err)
		}
	}
	cleanCNIState()
	fmt.Println(">>> offline images, local registries")
	digests, err := l.buildImages()
	if err != nil {
		return err
	}
	for _, n := range l.each() {
		if err := n.importImages(digests); err != nil {
			return fmt.Errorf("node %s: %w", n.nodeName, err)
		}
	}
	if err := l.ensureRegistries(ctx); err != nil {
		return err
	}
	if err := l.pushImages(digests); err != nil {
		return err
	}
	fmt.Println(">>> control plane")
	if _, err := ensurePKI(l.pki, hostIP); err != nil {
		return err
	}
	if err := l.startControlPlane(ctx); err != nil {
		return err
	}
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	if err := applyClusterRBAC(ctx, cs); err != nil {
		return err
	}
	if err := l.publishClusterInfo(ctx, cs); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.run, "nodes"), []byte(fmt.Sprintf("%d\n", l.nodes)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.run, "runtime"), []byte(l.runtime+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.run, "profile"), []byte(l.settings()+"\n"), 0o644); err != nil {
		return err
	}
	for _, n := range l.each() {
		fmt.Printf(">>> node %s (%s): %s joins through TLS bootstrap\n", n.nodeName, n.node.ip, n.agent)
		if err := n.joinNode(ctx, cs); err != nil {
			return err
		}
	}
	if err := l.writeEnv(); err != nil {
		return err
	}
	for _, n := range l.each() {
		if err := n.startAgentAndWait(ctx); err != nil {
			return err
		}
	}
	fmt.Println(">>> cluster DNS (CoreDNS at " + clusterDNSIP + ")")
	if err := l.deployCoreDNS(ctx, cs); err != nil {
		return err
	}
	fmt.Println(">>> metrics-server (kubectl top)")
	if err := l.deployMetricsServer(ctx, cs); err != nil {
		return err
	}
	fmt.Println(">>> Prometheus (scraping every node's /metrics, /metrics/cadvisor, /metrics/probes, /metrics/resource)")
	if err := l.deployPrometheus(ctx, cs); err != nil {
		return err
	}
	fmt.Printf(">>> up in %s\n", time.Since(start).Round(time.Second))
	return l.printUsage()
}

// joinNode writes the node's files and starts its agent: the seed's
// TLS-bootstrap join.
func (l *layout) joinNode(ctx context.Context, cs kubernetes.Interface) error {
	token, err := l.bootstrapToken()
	if err != nil {
		return err
	}
	if err := l.applyBootstrapObjects(ctx, cs, token); err != nil {
		return err
	}
	// A Bosun node joins as an operator following docs/deploy.md would:
	// its config file, then bosun join alone for the rest.
	if l.agent == "bosun" {
		if err := l.writeNodeFiles(""); err != nil {
			return err
		}
		if err := l.bosunJoin(ctx, cs, token); err != nil {
			return err
		}
	} else if err := l.writeNodeFiles(token); err != nil {
		return err
	}
	if err := os.WriteFile(l.agentFile(), []byte(l.agent+"\n"), 0o644); err != nil {
		return err
	}
	if err := l.startAgent(); err != nil {
		return err
	}
	_ = os.WriteFile(l.stampFile(), []byte(l.agentStamp()), 0o644)
	return nil
}

// startAgentAndWait waits for the node to be Ready (a fresh node: its
// serving CSR approved), starting its agent first if it does not run, then
// gives the node its pod network and kube-proxy.
func (l *layout) startAgentAndWait(ctx context.Context) error {
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	if l.daemonPid("agent") == 0 {
		if err := l.startAgent(); err != nil {
			return err
		}
		_ = os.WriteFile(l.stampFile(), []byte(l.agentStamp()), 0o644)
	}
	if err := l.ensurePodNetwork(ctx, cs); err != nil {
		return err
	}
	if err := l.waitNodeReady(ctx, cs, 90*time.Second, time.Time{}); err != nil {
		return fmt.Errorf("%w\nlast lines of %s:\n%s\n(the rest of the cluster is left running for inspection; make down stops it)",
			err, l.logFile("agent"), tailFile(l.logFile("agent"), 30))
	}
	return l.ensureKubeProxy(ctx)
}

func (l *layout) printUsage() error {
	out, _ := exec.Command(l.binary("kubectl"), "--kubeconfig", l.adminKubeconfig(), "get", "nodes", "-o", "wide").CombinedOutput()
	rel, _ := filepath.Rel(l.root, l.envFile())
	fmt.Printf(`%s
The cluster is up: %d node(s), node agents KUBELET=%s. To use it:
  source %s
  $KUBECTL get nodes
  $KUBECTL run demo --image=registry.k8s.io/e2e-test-images/busybox:1.37.0-1 -- sh -c 'echo hi; sleep 3600'
  $KUBECTL top node
  $KUBECTL -n kube-system port-forward svc/prometheus 9090   # Prometheus, scraping the nodes: http://localhost:9090
Logs are in %s; make down stops everything.
`, out, l.nodes, l.kubelet, rel, filepath.Join("_output", "local", "logs"))
	return nil
}
