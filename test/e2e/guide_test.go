//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// guideBlock is one marked shell block of docs/deploy.md.
type guideBlock struct {
	section int
	where   string // "node" or "control-plane"
	code    string
}

var guideSection = regexp.MustCompile(`^## (\d+)\.`)

// guideBlocks reads a guide's marked blocks in order: a marker line, then a
// ```bash fence.
func guideBlocks(t *testing.T, file string) []guideBlock {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []guideBlock
	section := -1
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		if m := guideSection.FindStringSubmatch(lines[i]); m != nil {
			section, _ = strconv.Atoi(m[1])
			continue
		}
		where := map[string]string{"<!-- node -->": "node", "<!-- control-plane -->": "control-plane"}[strings.TrimSpace(lines[i])]
		if where == "" {
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "```bash" {
			t.Fatalf("%s:%d: a marked block must be a ```bash fence on the next line", file, i+2)
		}
		j := i + 2
		for j < len(lines) && lines[j] != "```" {
			j++
		}
		if j == len(lines) {
			t.Fatalf("%s:%d: the block never ends", file, i+2)
		}
		blocks = append(blocks, guideBlock{section: section, where: where, code: strings.Join(lines[i+2:j], "\n") + "\n"})
		i = j
	}
	if len(blocks) == 0 {
		t.Fatalf("%s has no marked blocks", file)
	}
	return blocks
}

var shellComment = regexp.MustCompile(`(^|\s+)# .*$`)

// commands is a block without its comments (the two languages comment in
// their own words).
func (b guideBlock) commands() string {
	lines := strings.Split(b.code, "\n")
	for i, l := range lines {
		lines[i] = shellComment.ReplaceAllString(l, "")
	}
	return strings.Join(lines, "\n")
}

func sections(blocks []guideBlock, want ...int) []guideBlock {
	var out []guideBlock
	for _, b := range blocks {
		for _, s := range want {
			if b.section == s {
				out = append(out, b)
			}
		}
	}
	return out
}

// The seed's paths that the guide writes on the node and the control plane.
// The test will not run over an operator's files: each must be absent.
var guidePaths = []string{"/etc/kubernetes", "/opt/k8s", "/usr/bin/bosun", "/etc/systemd/system/bosun.service", "/lib/systemd/system/bosun.service"}

// guideMarker says that the guide's files on this machine are the test's:
// make up and make down remove them (hack/cluster), should the test be killed.
const guideMarker = "/var/lib/bosun-local/guide-e2e"

// TestGuide runs the marked shell blocks of docs/deploy.md, in order, on the
// local cluster's one node, as an operator following the guide: the short
// path (sections 0, 1, 9, 10: the package, bosun join, the serving
// certificate, the checks), then the manual path (0, 2 to 10), each from a
// node without the guide's files. docs/deploy.zh-CN.md must hold the same
// commands. The node's own agent is stopped meanwhile and started again
// after.
//
// What stands in for parts of the seed's machines, and why:
//   - kubeadm (not built here): `kubeadm token create` makes the bootstrap
//     token Secret as kubeadm does;
//   - ssh and scp: the control plane and the node are this machine;
//   - systemctl (no systemd here): starts and stops the unit's ExecStart;
//   - this node's containerd listens on its own socket, the machine has
//     cgroup v1 and several addresses: the runner adds what the guide says
//     such a node adds (--fail-cgroupv1=false, failCgroupV1: false,
//     --node-ip) and the socket.
func TestGuide(t *testing.T) {
	env := loadEnv(t)
	if env["KUBELET"] != "bosun" || env["NODES"] != "1" {
		t.Skip("the guide runs on a one-node cluster of Bosun (KUBELET=bosun NODES=1)")
	}
	en := guideBlocks(t, filepath.Join("..", "..", "docs", "deploy.md"))
	zh := guideBlocks(t, filepath.Join("..", "..", "docs", "deploy.zh-CN.md"))
	if len(en) != len(zh) {
		t.Errorf("deploy.md has %d marked blocks, deploy.zh-CN.md %d", len(en), len(zh))
	} else {
		for i := range en {
			if en[i].section != zh[i].section || en[i].where != zh[i].where || en[i].commands() != zh[i].commands() {
				t.Errorf("marked block %d differs between the languages:\n--- deploy.md (section %d, %s)\n%s--- deploy.zh-CN.md (section %d, %s)\n%s",
					i+1, en[i].section, en[i].where, en[i].commands(), zh[i].section, zh[i].where, zh[i].commands())
			}
		}
	}
	cs := env.client(t)
	g := newGuideMachine(t, env, cs)
	for _, path := range []struct {
		name     string
		sections []int
	}{
		{"the short path, bosun join", []int{0, 1, 9, 10}},
		{"the manual path", []int{0, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
	} {
		if !t.Run(path.name, func(t *testing.T) {
			g.reset(t)
			g.run(t, sections(en, path.sections...))
			g.checkJoined(t)
		}) {
			break
		}
	}
}

type guideMachine struct {
	env     clusterEnv
	cs      kubernetes.Interface
	state   string // guideMarker: the shims, the agent's pid and log, the shell's variables
	work    string // the control plane's working folder (the seed's /opt/k8s/work)
	deb     string
	saved   []func(context.Context) error // re-create the cluster's objects the guide creates
	started time.Time                     // the current path's start
}

func newGuideMachine(t *testing.T, env clusterEnv, cs kubernetes.Interface) *guideMachine {
	for _, p := range guidePaths {
		if _, err := os.Lstat(p); err == nil {
			if _, mine := os.Stat(guideMarker); mine != nil {
				t.Fatalf("%s exists on this machine: the guide test writes the seed's paths and will not overwrite an operator's files", p)
			}
		}
	}
	g := &guideMachine{env: env, cs: cs, state: guideMarker, work: "/opt/k8s/work"}
	// The package, as section 0 installs it.
	make := exec.Command("make", "--no-print-directory", "package")
	make.Dir = filepath.Join("..", "..")
	if out, err := make.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join("..", "..", "_output", "packages", "bosun_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package made %v, want one .deb", debs)
	}
	g.deb = debs[0]
	// From here the seed's paths are the test's (the marker says so), and
	// the cleanup puts the machine back whatever happens.
	if err := os.MkdirAll(filepath.Join(g.state, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	agentKilled := false
	t.Cleanup(func() {
		g.stopAgent(t)
		g.restoreObjects(t)
		for _, p := range guidePaths {
			_ = os.RemoveAll(p)
		}
		if out, err := exec.Command("dpkg", "--purge", "bosun").CombinedOutput(); err != nil {
			t.Logf("dpkg --purge bosun: %v\n%s", err, out)
		}
		if g.ownsSystemdDir() {
			_ = os.Remove("/run/systemd/system")
			_ = os.Remove("/run/systemd")
		}
		if agentKilled {
			harness(t, "bosun", "start-agent")
		}
		if err := os.RemoveAll(g.state); err != nil {
			t.Logf("removing %s: %v", g.state, err)
		}
	})
	g.writeShims(t)
	// The node's agent stops while the guide's runs; it starts again after.
	harness(t, "bosun", "kill-agent")
	agentKilled = true
	// bosun join --start hands the unit to systemd when /run/systemd/system
	// exists; here the systemctl shim plays systemd.
	if _, err := os.Stat("/run/systemd/system"); os.IsNotExist(err) {
		if err := os.MkdirAll("/run/systemd/system", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(g.state, "made-run-systemd"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g.saveObjects(t)
	return g
}

func (g *guideMachine) ownsSystemdDir() bool {
	_, err := os.Stat(filepath.Join(g.state, "made-run-systemd"))
	return err == nil
}

// writeShims writes the stand-ins for what this machine lacks (see TestGuide).
func (g *guideMachine) writeShims(t *testing.T) {
	shims := map[string]string{
		"kubeadm": `#!/bin/bash
# kubeadm token create: a bootstrap token Secret in kube-system, as kubeadm makes it; prints the token.
[ "$1 $2" = "token create" ] || { echo "kubeadm stand-in: only 'token create'" >&2; exit 1; }
shift 2; desc=; groups=
while [ $# -gt 0 ]; do
  case $1 in
    --description) desc=$2; shift 2 ;;
    --groups) groups=$2; shift 2 ;;
    --kubeconfig) shift 2 ;;
    *) echo "kubeadm stand-in: unknown flag $1" >&2; exit 1 ;;
  esac
done
id=$(head -c 64 /dev/urandom | tr -dc a-z0-9 | head -c 6)
secret=$(head -c 256 /dev/urandom | tr -dc a-z0-9 | head -c 16)
[ ${#id} = 6 ] && [ ${#secret} = 16 ] || exec "$0" token create --description "$desc" --groups "$groups"
kubectl -n kube-system create secret generic bootstrap-token-$id --type bootstrap.kubernetes.io/token \
  --from-literal=token-id=$id --from-literal=token-secret=$secret \
  --from-literal=usage-bootstrap-authentication=true --from-literal=usage-bootstrap-signing=true \
  --from-literal=auth-extra-groups=$groups --from-literal=description="$desc" \
  --from-literal=expiration=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ) >/dev/null || exit 1
echo $id.$secret
`,
		"ssh": `#!/bin/bash
# ssh root@<node> <command>: the node is this machine.
shift
exec bash -c "$*"
`,
		"scp": `#!/bin/bash
# scp <file> root@<node>:<path>: the node is this machine.
exec cp "$1" "${2#*:}"
`,
		"systemctl": `#!/bin/bash
# systemctl for the bosun unit on a machine without systemd: start runs the
# unit's ExecStartPre and ExecStart in the background, stop kills it.
unit=/etc/systemd/system/bosun.service
[ -f $unit ] || unit=/lib/systemd/system/bosun.service
pidf=$GUIDE_STATE/agent.pid
stop() {
  [ -f $pidf ] || return 0
  pid=$(cat $pidf)
  # Only the agent it started: the pid may be another process's since.
  case "$(readlink /proc/$pid/exe 2>/dev/null)" in /usr/bin/bosun*) ;; *) rm -f $pidf; return 0 ;; esac
  kill $pid 2>/dev/null
  for i in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.2; done
  kill -9 $pid 2>/dev/null; rm -f $pidf
}
start() {
  [ -f $unit ] || { echo "Unit bosun.service not found." >&2; exit 5; }
  # ExecStartPre: a failure stops the start, but for a "-" prefixed line.
  while read -r pre; do
    case "$pre" in -*) ${pre#-} || true ;; *) $pre || exit 1 ;; esac
  done < <(sed -n 's/^ExecStartPre=//p' $unit)
  wd=$(sed -n 's/^WorkingDirectory=//p' $unit)
  cmd=$(awk '/^ExecStart=/{on=1; sub(/^ExecStart=/, "")} on{l=$0; c=sub(/\\$/, "", l); printf "%s ", l; if (!c) exit}' $unit)
  (cd "${wd:-/}" && exec $cmd </dev/null >>$GUIDE_STATE/agent.log 2>&1) &
  echo $! > $pidf
}
now=; args=()
for a in "$@"; do [ "$a" = --now ] && now=1 || args+=("$a"); done
case "${args[0]}" in
  daemon-reload) ;;
  enable) if [ -n "$now" ]; then stop; start; fi ;;
  start|restart) stop; start ;;
  stop) stop ;;
  *) echo "systemctl stand-in: ${args[*]} is not supported" >&2; exit 1 ;;
esac
`,
	}
	for name, text := range shims {
		if err := os.WriteFile(filepath.Join(g.state, "bin", name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(g.env["KUBECTL"], filepath.Join(g.state, "bin", "kubectl")); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
}

// saveObjects keeps the cluster's objects that the guide creates (make up
// made them) so that each path starts without them, and puts them back after.
func (g *guideMachine) saveObjects(t *testing.T) {
	ctx := context.Background()
	cm, err := g.cs.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
	if err == nil {
		keep := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cm.Name, Namespace: cm.Namespace}, Data: map[string]string{"kubeconfig": cm.Data["kubeconfig"]}}
		g.saved = append(g.saved, func(ctx context.Context) error {
			_, err := g.cs.CoreV1().ConfigMaps("kube-public").Create(ctx, keep, metav1.CreateOptions{})
			return err
		})
	}
	role, err := g.cs.RbacV1().Roles("kube-public").Get(ctx, "bootstrap-signer-clusterinfo", metav1.GetOptions{})
	if err == nil {
		role.ObjectMeta = metav1.ObjectMeta{Name: role.Name, Namespace: role.Namespace}
		g.saved = append(g.saved, func(ctx context.Context) error {
			_, err := g.cs.RbacV1().Roles("kube-public").Create(ctx, role, metav1.CreateOptions{})
			return err
		})
	}
	rb, err := g.cs.RbacV1().RoleBindings("kube-public").Get(ctx, "bootstrap-signer-clusterinfo", metav1.GetOptions{})
	if err == nil {
		rb.ObjectMeta = metav1.ObjectMeta{Name: rb.Name, Namespace: rb.Namespace}
		g.saved = append(g.saved, func(ctx context.Context) error {
			_, err := g.cs.RbacV1().RoleBindings("kube-public").Create(ctx, rb, metav1.CreateOptions{})
			return err
		})
	}
	crb, err := g.cs.RbacV1().ClusterRoleBindings().Get(ctx, "kubelet-bootstrap", metav1.GetOptions{})
	if err == nil {
		crb.ObjectMeta = metav1.ObjectMeta{Name: crb.Name}
		g.saved = append(g.saved, func(ctx context.Context) error {
			_, err := g.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
			return err
		})
	}
}

func (g *guideMachine) deleteObjects(t *testing.T) {
	ctx := context.Background()
	for _, err := range []error{
		g.cs.CoreV1().ConfigMaps("kube-public").Delete(ctx, "cluster-info", metav1.DeleteOptions{}),
		g.cs.RbacV1().Roles("kube-public").Delete(ctx, "bootstrap-signer-clusterinfo", metav1.DeleteOptions{}),
		g.cs.RbacV1().RoleBindings("kube-public").Delete(ctx, "bootstrap-signer-clusterinfo", metav1.DeleteOptions{}),
		g.cs.RbacV1().ClusterRoleBindings().Delete(ctx, "kubelet-bootstrap", metav1.DeleteOptions{}),
	} {
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
}

func (g *guideMachine) restoreObjects(t *testing.T) {
	ctx := context.Background()
	for _, create := range g.saved {
		if err := create(ctx); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Errorf("putting back the cluster's bootstrap objects: %v", err)
		}
	}
}

func (g *guideMachine) stopAgent(t *testing.T) {
	cmd := exec.Command(filepath.Join(g.state, "bin", "systemctl"), "stop", "bosun")
	cmd.Env = append(os.Environ(), "GUIDE_STATE="+g.state)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("stopping the guide's agent: %v\n%s", err, out)
	}
}

// reset makes the machine a node without the guide's files, and the
// control plane as the seed's earlier chapters leave it: the CA and the
// controller-manager's and admin's certificates where the seed puts them.
func (g *guideMachine) reset(t *testing.T) {
	g.stopAgent(t)
	for _, p := range guidePaths {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("dpkg", "--purge", "bosun").CombinedOutput(); err != nil {
		t.Fatalf("dpkg --purge bosun: %v\n%s", err, out)
	}
	_ = os.Remove(filepath.Join(g.state, "vars"))
	g.deleteObjects(t)
	cert := "/etc/kubernetes/cert"
	for _, d := range []string{cert, g.work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for src, dst := range map[string]string{
		g.env["CA_CERT"]:    filepath.Join(cert, "ca.pem"),
		g.env["KCM_CERT"]:   filepath.Join(cert, "kube-controller-manager.pem"),
		g.env["KCM_KEY"]:    filepath.Join(cert, "kube-controller-manager-key.pem"),
		g.env["ADMIN_CERT"]: filepath.Join(g.work, "admin.pem"),
		g.env["ADMIN_KEY"]:  filepath.Join(g.work, "admin-key.pem"),
		filepath.Join("..", "..", "deploy", "csr-crb.yaml"): filepath.Join(g.work, "csr-crb.yaml"),
		g.deb: filepath.Join(g.work, filepath.Base(g.deb)),
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g.started = time.Now().Add(-time.Second)
}

// adapt is what this machine's node adds to the guide's commands, each where
// the guide says such a node adds it. An anchor the guide no longer has
// fails the test: the adaptation would silently stop applying.
func (g *guideMachine) adapt(t *testing.T, b guideBlock) string {
	code := b.code
	cgroupV1 := true
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == 0x63677270 {
		cgroupV1 = false
	}
	cri := g.env["CRI_ENDPOINT"]
	replace := func(anchor, with string) {
		if !strings.Contains(code, anchor) {
			t.Fatalf("section %d's block no longer has %q, where this machine's node adds to it:\n%s", b.section, anchor, code)
		}
		code = strings.Replace(code, anchor, with, 1)
	}
	switch {
	case strings.Contains(code, "bosun join"):
		extra := " --container-runtime-endpoint=" + cri
		if cgroupV1 {
			extra += " --fail-cgroupv1=false"
		}
		replace("--root-dir=${K8S_DIR}/kubelet --start", "--root-dir=${K8S_DIR}/kubelet --start"+extra)
	case strings.Contains(code, "bosun.service.template"):
		// This machine has several addresses; the node's is the bridge's.
		replace("--hostname-override=##NODE_NAME## \\\\\n", "--hostname-override=##NODE_NAME## \\\\\n  --node-ip="+g.env["NODE_IP"]+" \\\\\n")
	case strings.Contains(code, "kubelet-config.yaml.template"):
		extra := fmt.Sprintf("containerRuntimeEndpoint: %q\n", cri)
		if cgroupV1 {
			extra += "failCgroupV1: false\n"
		}
		replace("address: \"##NODE_IP##\"\nEOF\n", "address: \"##NODE_IP##\"\n"+extra+"EOF\n")
	}
	return code
}

// run runs the blocks in order in one shell session (variables carry from
// block to block as an operator's shell keeps them), waiting where the
// operator waits: for the node's serving CSR before section 9, for the
// serving certificate before section 10.
func (g *guideMachine) run(t *testing.T, blocks []guideBlock) {
	nodeIP := g.env["NODE_IP"]
	shellEnv := append(os.Environ(),
		"PATH="+filepath.Join(g.state, "bin")+":"+os.Getenv("PATH"),
		"GUIDE_STATE="+g.state,
		"KUBECONFIG="+g.env["KUBECONFIG"],
		"KUBE_APISERVER=https://"+nodeIP+":6443",
		"NODE_NAME="+g.env["NODE_NAME"],
		"NODE_IP="+nodeIP,
		"CLUSTER_DNS_SVC_IP=10.254.0.2",
		"CLUSTER_DNS_DOMAIN=cluster.local",
		"K8S_DIR="+filepath.Dir(g.env["ROOT_DIR"]),
	)
	vars := filepath.Join(g.state, "vars")
	for i, b := range blocks {
		switch b.section {
		case 9:
			g.waitServingCSR(t)
		case 10:
			g.waitFile(t, "/etc/kubernetes/cert/kubelet-server-current.pem")
		}
		script := fmt.Sprintf("set -e\nset -a\nNODE_NAMES=(%s)\nNODE_IPS=(%s)\n[ -f %s ] && source %s\ncd %s\n%s\nexport -p > %s\n",
			g.env["NODE_NAME"], nodeIP, vars, vars, g.work, g.adapt(t, b), vars)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-c", script)
		cmd.Env = shellEnv
		out, err := cmd.CombinedOutput()
		cancel()
		t.Logf("section %d, block %d (%s):\n%s%s", b.section, i+1, b.where, b.code, indent(string(out)))
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(g.state, "agent.log"))
			t.Fatalf("section %d's block failed: %v\n%s\nthe agent's log (last lines):\n%s", b.section, err, out, lastLines(string(log), 30))
		}
		if b.section == 10 {
			for _, want := range []string{"Unauthorized",
				"Forbidden (user=system:kube-controller-manager, verb=get, resource=nodes, subresource(s)=[metrics])", "# HELP"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("section 10's checks printed no %q:\n%s", want, out)
				}
			}
		}
	}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  | " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  | ") + "\n"
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (g *guideMachine) waitServingCSR(t *testing.T) {
	user := "system:node:" + g.env["NODE_NAME"]
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := g.cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
		if err == nil {
			for _, csr := range list.Items {
				if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && csr.Spec.Username == user && csr.CreationTimestamp.After(g.started) {
					return
				}
			}
		}
		time.Sleep(time.Second)
	}
	log, _ := os.ReadFile(filepath.Join(g.state, "agent.log"))
	t.Fatalf("the guide's agent sent no kubelet-serving CSR as %s in 2 minutes; its log:\n%s", user, lastLines(string(log), 40))
}

func (g *guideMachine) waitFile(t *testing.T, path string) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if st, err := os.Stat(path); err == nil && st.ModTime().After(g.started) {
			return
		}
	}
	t.Fatalf("%s was not written within a minute", path)
}

// checkJoined: what the guide says the node ends with.
func (g *guideMachine) checkJoined(t *testing.T) {
	for _, f := range []string{"/etc/kubernetes/kubelet.kubeconfig", "/etc/kubernetes/cert/kubelet-client-current.pem",
		"/etc/kubernetes/cert/kubelet-server-current.pem"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the guide's node has no %s: %v", f, err)
		}
	}
	if stamped, _ := filepath.Glob("/etc/kubernetes/cert/kubelet-client-2*.pem"); len(stamped) == 0 {
		t.Errorf("no kubelet-client-<timestamp>.pem in /etc/kubernetes/cert")
	}
	pid := agentPidOf(t, filepath.Join(g.state, "agent.pid"))
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe != "/usr/bin/bosun" {
		t.Errorf("the guide's agent (pid %d) runs %q, want the package's /usr/bin/bosun", pid, exe)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		node, err := g.cs.CoreV1().Nodes().Get(context.Background(), g.env["NODE_NAME"], metav1.GetOptions{})
		if err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && c.LastHeartbeatTime.After(g.started) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s has no Ready heartbeat from the guide's agent: %v", g.env["NODE_NAME"], err)
		}
		time.Sleep(time.Second)
	}
}
