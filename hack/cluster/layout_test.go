package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func testLayout(t *testing.T, kubelet string, nodes int) *layout {
	t.Helper()
	t.Setenv("NODES", "")
	t.Setenv("NODE", "")
	t.Setenv("RUNTIME", "")
	l, err := newLayout(t.TempDir(), kubelet)
	if err != nil {
		t.Fatal(err)
	}
	l.nodes = nodes
	return l
}

func TestNodesHaveTheirOwnPlaces(t *testing.T) {
	l := testLayout(t, "mixed", 3)
	seen := map[string]string{}
	for _, n := range l.each() {
		if want := map[bool]string{true: "bosun", false: "upstream"}[n.node.index%2 == 1]; n.agent != want {
			t.Errorf("node %d runs %s under KUBELET=mixed, want %s", n.node.index, n.agent, want)
		}
		for what, p := range map[string]string{
			"name": n.nodeName, "ip": n.node.ip, "cert dir": n.certDir(), "root dir": n.rootDir(), "config": n.configFile(),
			"socket": n.containerdSock(), "containerd root": n.containerdRoot(), "containerd config": n.containerdConfig(),
			"CNI config": n.cniConfDir(), "pod logs": n.podLogsDir(), "agent pid": n.pidFile("agent"), "agent log": n.logFile("agent"),
			"kube-proxy pid": n.pidFile("kube-proxy"), "token": n.bootstrapTokenID(), "network": n.cniNetwork(),
		} {
			if other, dup := seen[p]; dup {
				t.Errorf("node %d's %s %q is also %s", n.node.index, what, p, other)
			}
			seen[p] = what
		}
		if (n.node.netns == "") != (n.node.index == 1) || (n.cgroupRoot() == "") != (n.node.index == 1) {
			t.Errorf("node %d: netns %q, cgroup root %q: only node 1 is the machine's own", n.node.index, n.node.netns, n.cgroupRoot())
		}
		if len(n.bootstrapTokenID()) != 6 {
			t.Errorf("node %d's token id %q is not 6 characters", n.node.index, n.bootstrapTokenID())
		}
	}
	// Cluster-wide daemons are one for all nodes.
	if l.on(2).pidFile("kube-apiserver") != l.on(1).pidFile("kube-apiserver") {
		t.Error("the apiserver's pid file differs between nodes")
	}
	if l.on(1).apiServer() == l.on(2).apiServer() {
		t.Error("node 2 reaches the apiserver at the machine's loopback address, which its namespace does not have")
	}
}

func TestCNIConfigIsTheNodesSubnetWithoutMasquerade(t *testing.T) {
	l := testLayout(t, "bosun", 2).on(2)
	dir := t.TempDir()
	l.node.dir = dir
	if err := l.writeCNIConfig("10.88.3.0/24"); err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type   string `json:"type"`
			IPMasq bool   `json:"ipMasq"`
			IPAM   struct {
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	data := readFile(t, l.cniConfDir()+"/"+cniConfFile)
	if err := json.Unmarshal([]byte(data), &conf); err != nil {
		t.Fatalf("CNI config is not JSON: %v\n%s", err, data)
	}
	if conf.Name != "bosun-n2" || conf.Plugins[0].Type != "bridge" || conf.Plugins[0].IPMasq ||
		conf.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.88.3.0/24" {
		t.Errorf("CNI config %+v: want network bosun-n2, a bridge on 10.88.3.0/24 without masquerade", conf)
	}
}

// The containerd config edits apply to the runtime's own default config.
func TestContainerdConfigEdits(t *testing.T) {
	for _, rt := range []string{containerd1, containerd2} {
		l := testLayout(t, "bosun", 2)
		l.runtime = rt
		for _, n := range l.each() {
			n.bin = repoRoot() + "/_output/bin"
			bin := n.runtimeBinary("containerd")
			if _, err := exec.LookPath(bin); err != nil {
				t.Logf("%s: no %s here (make tools builds it)", rt, bin)
				continue
			}
			cfg, err := n.writeContainerdConfig()
			if err != nil {
				t.Fatalf("%s node %d: %v", rt, n.node.index, err)
			}
			for _, want := range []string{"restrict_oom_score_adj = true", pauseImage, n.containerdSock(), n.registriesHostsDir()} {
				if !strings.Contains(cfg, want) {
					t.Errorf("%s node %d: the config lacks %q", rt, n.node.index, want)
				}
			}
			if n.node.index > 1 && (!strings.Contains(cfg, n.containerdRoot()) || !strings.Contains(cfg, n.cniConfDir())) {
				t.Errorf("%s node %d: the config does not use the node's own root and CNI config", rt, n.node.index)
			}
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
