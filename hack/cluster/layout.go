package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Fixed machine-wide places. The node's files live outside the work tree, like
// the seed's /etc/kubernetes and ${K8S_DIR}/kubelet, so that a fresh clone in
// another folder still finds (and cleans) what an earlier cluster left behind.
const (
	nodeDir          = "/var/lib/bosun-local"            // node 1's files: certs, kubeconfigs, config, root dir; nodes/n<i> below it
	containerdSock   = "/run/containerd/containerd.sock" // node 1's CRI endpoint
	cniConfDir       = "/etc/cni/net.d"                  // node 1's CNI config folder
	cniBinDir        = "/usr/lib/cni"                    // Debian's CNI plugins
	cniNetwork       = "bosun"                           // node 1's CNI network name (host-local IPAM dir); bosun-n<i> for the others
	clusterCIDR      = "10.88.0.0/16"                    // pod addresses: a /24 per node (a /23 with MAX_PODS over 240), allocated by the controller-manager
	serviceCIDR      = "10.254.0.0/16"                   // service cluster IPs
	clusterDNSIP     = "10.254.0.2"                      // the seed's CLUSTER_DNS_SVC_IP
	hostBridge       = "bosun0"                          // the bridge the node IPs live on: never leaves the machine
	nodeNet          = "10.250.250."                     // node i's InternalIP is nodeNet+i (/24 on the bridge)
	hostIP           = nodeNet + "1"                     // node 1's InternalIP, the machine's address on the bridge
	apiServerURL     = "https://127.0.0.1:6443"          // the apiserver, from the machine
	nodeAPIServerURL = "https://" + hostIP + ":6443"     // the apiserver, from every node's network namespace
	maxNodes         = 9
)

// nodeInfo names one node of the local cluster. Node 1 is the machine itself;
// node i > 1 has a network namespace of its own on the host bridge, with its
// own containerd, files, cgroup root and node agent.
type nodeInfo struct {
	index int    // 1..maxNodes
	name  string // the Node's name
	ip    string // its InternalIP on the host bridge
	netns string // its network namespace ("" for node 1: the machine's)
	dir   string // its files (cert dir, root dir, kubeconfigs, config)
}

// layout names every file of the local cluster; node-scoped names (the
// agent, containerd, kube-proxy, the node's files) are those of node.
type layout struct {
	root     string   // the repo root
	out      string   // _output/local
	bin      string   // _output/bin
	pki      string   // _output/local/pki
	logs     string   // _output/local/logs
	run      string   // _output/local/run (pid files)
	etcdData string   // _output/local/etcd
	host     string   // the machine's hostname: node 1's name, the stem of the others'
	nodes    int      // how many nodes the cluster has (NODES)
	kubelet  string   // KUBELET: bosun, upstream or mixed (odd nodes bosun, even upstream)
	runtime  string   // RUNTIME: containerd2 (from tools/runtime) or containerd1 (Debian's)
	node     nodeInfo // the node this layout's node-scoped names are for (NODE)
	nodeName string   // node.name
	agent    string   // the agent of node: bosun or upstream
	profile  string   // PROFILE: seed (the guide's config) or hardened (deploy/kubelet-config.yaml)
	maxPods  int      // MAX_PODS: the nodes' maxPods instead of the profile's (0: the profile's)
	logMax   string   // LOG_MAX_SIZE: the nodes' containerLogMaxSize ("": the default, 10Mi)
}

func newLayout(root, kubelet string) (*layout, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	if kubelet != "bosun" && kubelet != "upstream" && kubelet != "mixed" {
		return nil, fmt.Errorf("KUBELET must be bosun, upstream or mixed, not %q", kubelet)
	}
	out := filepath.Join(root, "_output", "local")
	l := &layout{
		root:     root,
		out:      out,
		bin:      filepath.Join(root, "_output", "bin"),
		pki:      filepath.Join(out, "pki"),
		logs:     filepath.Join(out, "logs"),
		run:      filepath.Join(out, "run"),
		etcdData: filepath.Join(out, "etcd"),
		host:     strings.ToLower(host),
		kubelet:  kubelet,
	}
	if l.nodes, err = envInt("NODES", l.recordedNodes(), 1, maxNodes); err != nil {
		return nil, err
	}
	if l.runtime, err = l.runtimeKind(); err != nil {
		return nil, err
	}
	if l.profile = envOr("PROFILE", "seed"); l.profile != "seed" && l.profile != "hardened" {
		return nil, fmt.Errorf("PROFILE must be seed or hardened, not %q", l.profile)
	}
	if l.maxPods, err = envInt("MAX_PODS", 0, 1, maxPodsLimit); err != nil {
		return nil, err
	}
	if l.logMax = os.Getenv("LOG_MAX_SIZE"); l.logMax != "" && !logSize.MatchString(l.logMax) {
		return nil, fmt.Errorf("LOG_MAX_SIZE=%q: want a size such as 512Mi or 1Gi", l.logMax)
	}
	index, err := envInt("NODE", 1, 1, maxNodes)
	if err != nil {
		return nil, err
	}
	return l.on(index), nil
}

// envInt reads a whole number in [lo, hi] from the environment.
func envInt(name string, def, lo, hi int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s=%q: want a number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

// maxPodsLimit bounds MAX_PODS: a node's /23 holds 509 pod addresses.
const maxPodsLimit = 500

// settings is what the cluster's nodes were configured with beyond their
// agents: the profile and MAX_PODS, recorded so that make up restarts a
// cluster started otherwise.
func (l *layout) settings() string {
	s := l.profile
	if l.maxPods > 0 {
		s += fmt.Sprintf(" maxPods=%d", l.maxPods)
	}
	if l.logMax != "" {
		s += " containerLogMaxSize=" + l.logMax
	}
	return s
}

// logSize is a LOG_MAX_SIZE the config takes.
var logSize = regexp.MustCompile(`^[1-9][0-9]*(Ki|Mi|Gi)$`)

// nodeCIDRMask is the size of each node's pod CIDR: a /24 (253 pod
// addresses) unless MAX_PODS leaves too few of them for the add-ons' pods.
func (l *layout) nodeCIDRMask() int {
	if l.maxPods > 240 {
		return 23
	}
	return 24
}

// recordedNodes is the node count of the cluster that is up (1 if none).
func (l *layout) recordedNodes() int {
	data, _ := os.ReadFile(filepath.Join(l.run, "nodes"))
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n < 1 || n > maxNodes {
		return 1
	}
	return n
}

// on is the layout for node i: the same cluster, node i's names.
func (l *layout) on(i int) *layout {
	c := *l
	c.node = nodeInfo{index: i, name: l.host, ip: hostIP, dir: nodeDir}
	if i > 1 {
		c.node = nodeInfo{index: i, name: fmt.Sprintf("%s-n%d", l.host, i), ip: fmt.Sprintf("%s%d", nodeNet, i),
			netns: fmt.Sprintf("bosun-n%d", i), dir: filepath.Join(nodeDir, "nodes", fmt.Sprintf("n%d", i))}
	}
	c.nodeName = c.node.name
	c.agent = l.kubelet
	if l.kubelet == "mixed" {
		c.agent = map[bool]string{true: "bosun", false: "upstream"}[i%2 == 1]
	}
	return &c
}

// each is the layout of every node, node 1 first.
func (l *layout) each() []*layout {
	out := make([]*layout, 0, l.nodes)
	for i := 1; i <= l.nodes; i++ {
		out = append(out, l.on(i))
	}
	return out
}

// nodeScoped are the daemons each node runs one of: their pid and log
// files carry the node's suffix, and they run in the node's netns.
var nodeScoped = map[string]bool{"agent": true, "containerd": true, "kube-proxy": true}

// suffix is "" for node 1 and "-n<i>" for node i.
func (l *layout) suffix() string {
	if l.node.index <= 1 {
		return ""
	}
	return fmt.Sprintf("-n%d", l.node.index)
}

func (l *layout) daemonFile(name string) string {
	if nodeScoped[name] {
		return name + l.suffix()
	}
	return name
}

func (l *layout) binary(name string) string  { return filepath.Join(l.bin, name) }
func (l *layout) logFile(name string) string { return filepath.Join(l.logs, l.daemonFile(name)+".log") }
func (l *layout) pidFile(name string) string { return filepath.Join(l.run, l.daemonFile(name)+".pid") }

// The node's files, named as in the seed's unit file.
func (l *layout) certDir() string { return filepath.Join(l.node.dir, "cert") }
func (l *layout) rootDir() string { return filepath.Join(l.node.dir, "kubelet") }
func (l *layout) bootstrapKubeconfig() string {
	return filepath.Join(l.node.dir, "kubelet-bootstrap.kubeconfig")
}
func (l *layout) nodeKubeconfig() string  { return filepath.Join(l.node.dir, "kubelet.kubeconfig") }
func (l *layout) configFile() string      { return filepath.Join(l.node.dir, "kubelet-config.yaml") }
func (l *layout) staticPodPath() string   { return filepath.Join(l.node.dir, "manifests") }
func (l *layout) adminKubeconfig() string { return filepath.Join(l.out, "admin.kubeconfig") }
func (l *layout) containerdConfig() string {
	return filepath.Join(l.out, "containerd", "config"+l.suffix()+".toml")
}

// The node's runtime: node 1 uses the machine's usual places.
func (l *layout) containerdSock() string {
	if l.node.index <= 1 && l.runtime == containerd1 {
		return containerdSock
	}
	return filepath.Join(l.containerdState(), "containerd.sock")
}
func (l *layout) containerdState() string {
	if l.node.index <= 1 {
		return "/run/containerd2"
	}
	return fmt.Sprintf("/run/bosun-n%d", l.node.index)
}
func (l *layout) cniConfDir() string {
	if l.node.index <= 1 {
		return cniConfDir
	}
	return filepath.Join(l.node.dir, "cni", "net.d")
}
func (l *layout) cniNetwork() string { return cniNetwork + l.suffix() }

// cgroupRoot is the node's cgroupRoot ("" for node 1: the top).
func (l *layout) cgroupRoot() string {
	if l.node.index <= 1 {
		return ""
	}
	return "/bosun" + l.suffix()
}

// podLogsDir is the node's podLogsDir.
func (l *layout) podLogsDir() string { return "/var/log/pods" + l.suffix() }

// apiServer is the apiserver's URL as the node reaches it.
func (l *layout) apiServer() string {
	if l.node.index <= 1 {
		return apiServerURL
	}
	return nodeAPIServerURL
}

// bootstrapTokenID is the node's bootstrap token id (6 chars [a-z0-9]).
func (l *layout) bootstrapTokenID() string { return fmt.Sprintf("bosun%d", l.node.index-1) }

func (l *layout) agentBinary() string {
	if l.agent == "upstream" {
		return l.binary("kubelet")
	}
	return l.binary("bosun")
}

// nodeNames are the names of the cluster's nodes, node 1 first.
// nodeAgents are the node agents, node 1 first: the one running, else the
// one the layout gives the node.
func (l *layout) nodeAgents() []string {
	var out []string
	for _, n := range l.each() {
		a := n.runningAgent()
		if a == "" {
			a = n.agent
		}
		out = append(out, a)
	}
	return out
}

func (l *layout) nodeNames() []string {
	var out []string
	for _, n := range l.each() {
		out = append(out, n.nodeName)
	}
	return out
}
