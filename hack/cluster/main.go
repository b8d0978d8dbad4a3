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
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cluster up|down|status|images|swap|kill-agent|start-agent|stop-apiserver|start-apiserver|restart-containerd")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	l, err := newLayout(repoRoot(), envOr("KUBELET", "bosun"))
	if err != nil {
		fail(err)
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
			fmt.Printf("local cluster is up: node %s Ready, agent %s\n", l.nodeName, l.runningAgent())
		}
	case "images":
		_, err = l.ensureImages()
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

func (l *layout) agentFile() string { return filepath.Join(l.run, "agent.kind") }

func (l *layout) stampFile() string { return filepath.Join(l.run, "agent.stamp") }

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

// healthy reports whether this cluster is running with the requested agent
// and its node is Ready.
func (l *layout) healthy(ctx context.Context) error {
	for _, name := range append([]string{"containerd"}, controlPlaneOrder...) {
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
	node, err := cs.CoreV1().Nodes().Get(ctx, l.nodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("node %s is not Ready", l.nodeName)
}

func (l *layout) up(ctx context.Context) error {
	start := time.Now()
	if l.healthy(ctx) == nil && l.runningAgent() == l.agent {
		if l.agentStamp() == l.recordedStamp() {
			fmt.Printf("local cluster already up (agent %s)\n", l.agent)
			return l.printUsage()
		}
		fmt.Printf(">>> %s was rebuilt: restarting the node agent only\n", l.agentBinary())
		return l.restartAgent(ctx, start)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if !fileExists(l.binary(b)) {
			return fmt.Errorf("%s is missing: run hack/build-tools.sh (make up does)", l.binary(b))
		}
	}
	fmt.Println(">>> cleaning what an earlier cluster left")
	if err := l.teardown(ctx, true); err != nil {
		return err
	}
	fmt.Println(">>> node software: containerd, CNI, node IP")
	if err := ensureNodeIP(); err != nil {
		return err
	}
	if err := l.ensureContainerd(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, tailFile(l.logFile("containerd"), 20))
	}
	if err := l.removeAllPods(ctx); err != nil {
		return err
	}
	cleanCNIState()
	fmt.Println(">>> offline images, local registries")
	digests, err := l.ensureImages()
	if err != nil {
		return err
	}
	if err := l.ensureRegistries(ctx); err != nil {
		return err
	}
	if err := l.pushImages(digests); err != nil {
		return err
	}
	fmt.Println(">>> control plane")
	if _, err := ensurePKI(l.pki, nodeIP); err != nil {
		return err
	}
	if err := l.startControlPlane(ctx); err != nil {
		return err
	}
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	token, err := l.bootstrapToken()
	if err != nil {
		return err
	}
	if err := l.applyBootstrapObjects(ctx, cs, token); err != nil {
		return err
	}
	fmt.Printf(">>> node %s: %s joins through TLS bootstrap\n", l.nodeName, l.agent)
	if err := l.writeNodeFiles(token); err != nil {
		return err
	}
	if err := os.WriteFile(l.agentFile(), []byte(l.agent+"\n"), 0o644); err != nil {
		return err
	}
	if err := l.writeEnv(); err != nil {
		return err
	}
	return l.startAgentAndWait(ctx, start)
}

// restartAgent stops the running agent and starts the rebuilt one.
func (l *layout) restartAgent(ctx context.Context, start time.Time) error {
	l.stopDaemon("agent", 30*time.Second)
	return l.startAgentAndWait(ctx, start)
}

func (l *layout) startAgentAndWait(ctx context.Context, start time.Time) error {
	cs, err := l.adminClient()
	if err != nil {
		return err
	}
	if err := l.startAgent(); err != nil {
		return err
	}
	_ = os.WriteFile(l.stampFile(), []byte(l.agentStamp()), 0o644)
	if err := l.waitNodeReady(ctx, cs, 90*time.Second, time.Time{}); err != nil {
		return fmt.Errorf("%w\nlast lines of %s:\n%s\n(the rest of the cluster is left running for inspection; make down stops it)",
			err, l.logFile("agent"), tailFile(l.logFile("agent"), 30))
	}
	fmt.Printf(">>> up in %s\n", time.Since(start).Round(time.Second))
	return l.printUsage()
}

func (l *layout) printUsage() error {
	out, _ := exec.Command(l.binary("kubectl"), "--kubeconfig", l.adminKubeconfig(), "get", "nodes", "-o", "wide").CombinedOutput()
	rel, _ := filepath.Rel(l.root, l.envFile())
	fmt.Printf(`%s
The cluster is up; its node agent is %s. To use it:
  source %s
  $KUBECTL get nodes
  $KUBECTL run demo --image=registry.k8s.io/e2e-test-images/busybox:1.37.0-1 -- sh -c 'echo hi; sleep 3600'
Logs are in %s; make down stops everything.
`, out, l.agent, rel, filepath.Join("_output", "local", "logs"))
	return nil
}
