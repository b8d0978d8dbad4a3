//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// The cluster tests need a cluster of two or more nodes (make up NODES=2);
// make test runs them on a mixed one (KUBELET=mixed: Bosun and the upstream
// kubelet side by side).

const agnhost = "registry.k8s.io/e2e-test-images/agnhost:2.63.0"

// clusterNodes returns the cluster's node names, node 1 first, or skips
// the test on a single-node cluster.
func clusterNodes(t *testing.T, env clusterEnv) []string {
	t.Helper()
	names := strings.Fields(env["NODE_NAMES"])
	if len(names) < 2 {
		t.Skipf("a single-node cluster (NODES=%s): the cluster tests need make up NODES=2", env["NODES"])
	}
	return names
}

// netexecPod is agnhost netexec (HTTP 8080, UDP 8081) pinned to a node.
func netexecPod(name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name: "netexec", Image: agnhost, Args: []string{"netexec", "--http-port=8080", "--udp-port=8081"},
				Ports:          []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 8081, Protocol: corev1.ProtocolUDP}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
			}},
		},
	}
}

// startNetexec creates one netexec pod per node and waits until all are ready.
func startNetexec(t *testing.T, cs kubernetes.Interface, ns string, nodes []string) []*corev1.Pod {
	t.Helper()
	var pods []*corev1.Pod
	for i, node := range nodes {
		p := netexecPod(fmt.Sprintf("netexec-%d", i+1), node)
		if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range nodes {
		pods = append(pods, waitPod(t, cs, ns, fmt.Sprintf("netexec-%d", i+1), 90*time.Second, "ready",
			func(p *corev1.Pod) bool { return podReady(p) && p.Status.PodIP != "" }))
	}
	return pods
}

// netexecGet asks a netexec pod's HTTP server (reached from this machine,
// which routes every node's pod CIDR) for path with the given query.
func netexecGet(pod *corev1.Pod, path string, query url.Values) (string, error) {
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(pod.Status.PodIP, "8080"), Path: path, RawQuery: query.Encode()}
	client := http.Client{Timeout: 20 * time.Second}
	resp, err := client.Get(u.String())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s: %s", u.String(), resp.Status, body)
	}
	return string(body), err
}

// dial has the client pod send request to host:port over protocol (netexec
// /dial) and returns the answers.
func dial(from *corev1.Pod, protocol, host string, port int, request string) ([]string, error) {
	body, err := netexecGet(from, "/dial", url.Values{"request": {request}, "protocol": {protocol}, "host": {host},
		"port": {strconv.Itoa(port)}, "tries": {"1"}})
	if err != nil {
		return nil, err
	}
	var out struct {
		Responses []string `json:"responses"`
		Errors    []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return nil, fmt.Errorf("dial answer %q: %w", body, err)
	}
	if len(out.Errors) > 0 {
		return out.Responses, fmt.Errorf("dial %s %s:%d from %s: %v", protocol, host, port, from.Name, out.Errors)
	}
	return out.Responses, nil
}

// eventually retries check for up to timeout (kube-proxy and CoreDNS take a
// moment to see a new Service), failing with its last error.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, timeout, true, func(context.Context) (bool, error) {
		last = check()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, last)
	}
}

// TestClusterNodesJoined: every node joined through TLS bootstrap, is Ready,
// and has a pod CIDR of its own.
func TestClusterNodesJoined(t *testing.T) {
	env := loadEnv(t)
	names := clusterNodes(t, env)
	cs := env.client(t)
	cidrs := map[string]string{}
	for _, name := range names {
		node, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := false
		for _, c := range node.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		if !ready {
			t.Errorf("node %s is not Ready", name)
		}
		if other, dup := cidrs[node.Spec.PodCIDR]; dup || node.Spec.PodCIDR == "" {
			t.Errorf("node %s has pod CIDR %q (also %q's)", name, node.Spec.PodCIDR, other)
		}
		cidrs[node.Spec.PodCIDR] = name
	}
}

// TestClusterPodToPod: pods on different nodes reach each other over TCP and
// UDP by their own addresses, and each sees the other's own address.
func TestClusterPodToPod(t *testing.T) {
	env := loadEnv(t)
	names := clusterNodes(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pods := startNetexec(t, cs, ns, names[:2])
	for _, pair := range [][2]*corev1.Pod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
		from, to := pair[0], pair[1]
		for _, proto := range []struct {
			name string
			port int
		}{{"http", 8080}, {"udp", 8081}} {
			got, err := dial(from, proto.name, to.Status.PodIP, proto.port, "clientip")
			if err != nil {
				t.Fatalf("%s (%s) -> %s (%s) over %s: %v", from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName, proto.name, err)
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], from.Status.PodIP+":") {
				t.Errorf("%s -> %s over %s: the server saw %q, want the client's own address %s", from.Name, to.Name, proto.name, got, from.Status.PodIP)
			}
		}
	}
}

// TestClusterServiceAndDNS: a Service reached by cluster IP, short name and
// FQDN (kube-proxy and CoreDNS) from a pod on every node, and the kubernetes
// Service from pods.
func TestClusterServiceAndDNS(t *testing.T) {
	env := loadEnv(t)
	names := clusterNodes(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pods := startNetexec(t, cs, ns, names)
	svc, err := cs.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": pods[len(pods)-1].Name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backend := pods[len(pods)-1].Name // netexec answers "hostname" with the pod's name
	for _, from := range pods {
		for _, host := range []string{svc.Spec.ClusterIP, "backend", "backend." + ns + ".svc.cluster.local"} {
			eventually(t, 60*time.Second, fmt.Sprintf("%s (%s) -> Service %s", from.Name, from.Spec.NodeName, host), func() error {
				got, err := dial(from, "http", host, 80, "hostname")
				if err != nil {
					return err
				}
				if len(got) != 1 || got[0] != backend {
					return fmt.Errorf("answered %q, want %q", got, backend)
				}
				return nil
			})
		}
		eventually(t, 60*time.Second, fmt.Sprintf("%s (%s) -> the kubernetes Service", from.Name, from.Spec.NodeName), func() error {
			out, err := netexecGet(from, "/shell", url.Values{"shellCommand": {"/agnhost connect --timeout=5s kubernetes.default.svc.cluster.local:443"}})
			if err != nil {
				return err
			}
			var res struct {
				Output string `json:"output"`
				Error  string `json:"error"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				return fmt.Errorf("shell answer %q: %w", out, err)
			}
			if res.Error != "" {
				return fmt.Errorf("agnhost connect: %s %s", res.Error, res.Output)
			}
			return nil
		})
	}
}

// nodeHarness runs the harness against node i of the cluster, with the
// agent that node runs.
func nodeHarness(t *testing.T, node int, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join("..", "..", "_output", "bin", "cluster"), args...)
	cmd.Env = append(os.Environ(), "NODE="+strconv.Itoa(node), "KUBELET=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("NODE=%d cluster %s: %v\n%s", node, strings.Join(args, " "), err, out)
	}
}

// TestClusterOneNodeDownOthersRun: with one node's agent killed, the cluster
// sees that node NotReady while the other stays Ready and runs new pods.
func TestClusterOneNodeDownOthersRun(t *testing.T) {
	env := loadEnv(t)
	names := clusterNodes(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	down := len(names) // the last node goes down
	nodeHarness(t, down, "kill-agent")
	t.Cleanup(func() { nodeHarness(t, down, "start-agent") })
	readyOf := func(name string) corev1.ConditionStatus {
		node, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return "error: " + corev1.ConditionStatus(err.Error())
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status
			}
		}
		return "none"
	}
	eventually(t, 3*time.Minute, "node "+names[down-1]+" NotReady after its agent was killed", func() error {
		if s := readyOf(names[down-1]); s == corev1.ConditionTrue {
			return fmt.Errorf("Ready=%s", s)
		}
		return nil
	})
	if s := readyOf(names[0]); s != corev1.ConditionTrue {
		t.Fatalf("node %s Ready=%s while another node is down", names[0], s)
	}
	pods := startNetexec(t, cs, ns, names[:1])
	if _, err := netexecGet(pods[0], "/hostname", nil); err != nil {
		t.Fatalf("a new pod on %s does not serve: %v", names[0], err)
	}
}
