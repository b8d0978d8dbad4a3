package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Fixed machine-wide places. The node's files live outside the work tree, like
// the seed's /etc/kubernetes and ${K8S_DIR}/kubelet, so that a fresh clone in
// another folder still finds (and cleans) what an earlier cluster left behind.
const (
	nodeDir          = "/var/lib/bosun-local"            // the node's files: certs, kubeconfigs, config, root dir
	containerdSock   = "/run/containerd/containerd.sock" // the CRI endpoint
	cniConfDir       = "/etc/cni/net.d"                  // containerd's CNI config folder
	cniBinDir        = "/usr/lib/cni"                    // Debian's CNI plugins
	cniNetwork       = "bosun"                           // the CNI network name (host-local IPAM dir)
	podCIDR          = "10.88.0.0/16"                    // pod addresses on the cni0 bridge
	serviceCIDR      = "10.254.0.0/16"                   // service cluster IPs
	clusterDNSIP     = "10.254.0.2"                      // the seed's CLUSTER_DNS_SVC_IP
	dummyLink        = "bosun0"                          // dummy interface carrying the node IP
	nodeIP           = "10.250.250.1"                    // the node's InternalIP, on dummyLink: never leaves the machine
	apiServerURL     = "https://127.0.0.1:6443"
	bootstrapTokenID = "bosun0" // the bootstrap token id (6 chars [a-z0-9])
)

// layout names every file of the local cluster.
type layout struct {
	root     string // the repo root
	out      string // _output/local
	bin      string // _output/bin
	pki      string // _output/local/pki
	logs     string // _output/local/logs
	run      string // _output/local/run (pid files)
	etcdData string // _output/local/etcd
	nodeName string // the node's name: the machine's hostname
	agent    string // "bosun" or "upstream"
}

func newLayout(root, agent string) (*layout, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	if agent != "bosun" && agent != "upstream" {
		return nil, fmt.Errorf("KUBELET must be bosun or upstream, not %q", agent)
	}
	out := filepath.Join(root, "_output", "local")
	return &layout{
		root:     root,
		out:      out,
		bin:      filepath.Join(root, "_output", "bin"),
		pki:      filepath.Join(out, "pki"),
		logs:     filepath.Join(out, "logs"),
		run:      filepath.Join(out, "run"),
		etcdData: filepath.Join(out, "etcd"),
		nodeName: strings.ToLower(host),
		agent:    agent,
	}, nil
}

func (l *layout) binary(name string) string  { return filepath.Join(l.bin, name) }
func (l *layout) logFile(name string) string { return filepath.Join(l.logs, name+".log") }
func (l *layout) pidFile(name string) string { return filepath.Join(l.run, name+".pid") }

// The node's files, named as in the seed's unit file.
func (l *layout) certDir() string { return filepath.Join(nodeDir, "cert") }
func (l *layout) rootDir() string { return filepath.Join(nodeDir, "kubelet") }
func (l *layout) bootstrapKubeconfig() string {
	return filepath.Join(nodeDir, "kubelet-bootstrap.kubeconfig")
}
func (l *layout) nodeKubeconfig() string   { return filepath.Join(nodeDir, "kubelet.kubeconfig") }
func (l *layout) configFile() string       { return filepath.Join(nodeDir, "kubelet-config.yaml") }
func (l *layout) staticPodPath() string    { return filepath.Join(nodeDir, "manifests") }
func (l *layout) adminKubeconfig() string  { return filepath.Join(l.out, "admin.kubeconfig") }
func (l *layout) containerdConfig() string { return filepath.Join(l.out, "containerd", "config.toml") }
func (l *layout) agentBinary() string {
	if l.agent == "upstream" {
		return l.binary("kubelet")
	}
	return l.binary("bosun")
}
