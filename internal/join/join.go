package join

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/bosun-dev/bosun/internal/atomicfile"
	"github.com/bosun-dev/bosun/internal/config"
	"github.com/bosun-dev/bosun/internal/runtime"
)

// Options are `bosun join`'s flags. The file locations default to where the
// seed guide puts them.
type Options struct {
	Server             string   // --server
	Token              string   // --token
	CAHashes           []string // --discovery-token-ca-cert-hash
	SkipCAVerification bool     // --discovery-token-unsafe-skip-ca-verification

	NodeName string // --node-name (the unit's --hostname-override)
	NodeIP   string // --node-ip (the config's address)

	BootstrapKubeconfig string // --bootstrap-kubeconfig
	Kubeconfig          string // --kubeconfig
	ConfigFile          string // --config
	CertDir             string // --cert-dir
	RootDir             string // --root-dir
	UnitFile            string // --unit-file
	Binary              string // --binary: the unit's ExecStart

	ClusterDNS      string // --cluster-dns
	ClusterDomain   string // --cluster-domain
	RuntimeEndpoint string // --container-runtime-endpoint
	CgroupDriver    string // --cgroup-driver ("": the runtime's, else cgroupfs)
	AllowCgroupV1   bool   // --fail-cgroupv1=false: a new config says failCgroupV1: false

	Start bool // --start
	Help  bool
}

// FlagSet binds o to `bosun join`'s flags.
func (o *Options) FlagSet() *pflag.FlagSet {
	fs := pflag.NewFlagSet("bosun join", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.Server, "server", "", "The apiserver, https://<host>:<port> (required).")
	fs.StringVar(&o.Token, "token", "", "A bootstrap token, <id>.<secret> (required): kubeadm token create makes one.")
	fs.StringSliceVar(&o.CAHashes, "discovery-token-ca-cert-hash", nil, "sha256:<hex> of the cluster CA's public key, as kubeadm prints it (required; may repeat).")
	fs.BoolVar(&o.SkipCAVerification, "discovery-token-unsafe-skip-ca-verification", false, "Trust the CA that cluster-info names without pinning it (unsafe).")
	fs.StringVar(&o.NodeName, "node-name", "", "This node's name (the unit's --hostname-override; default: the host name).")
	fs.StringVar(&o.NodeIP, "node-ip", "", "This node's IP, where 10250 listens (the config's address; default: the address that reaches --server).")
	fs.StringVar(&o.BootstrapKubeconfig, "bootstrap-kubeconfig", "/etc/kubernetes/kubelet-bootstrap.kubeconfig", "Where to write the bootstrap kubeconfig.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "/etc/kubernetes/kubelet.kubeconfig", "Where the agent writes its kubeconfig after TLS bootstrap.")
	fs.StringVar(&o.ConfigFile, "config", "/etc/kubernetes/kubelet-config.yaml", "Where to write the KubeletConfiguration (an existing file is kept).")
	fs.StringVar(&o.CertDir, "cert-dir", "/etc/kubernetes/cert", "The agent's certificate folder; the cluster CA goes there as ca.pem.")
	fs.StringVar(&o.RootDir, "root-dir", "/var/lib/kubelet", "The agent's root folder.")
	fs.StringVar(&o.UnitFile, "unit-file", "/etc/systemd/system/bosun.service", "Where to write the systemd unit (it overrides the package's /lib/systemd/system/bosun.service).")
	fs.StringVar(&o.Binary, "binary", "", "The agent binary the unit starts (default: this bosun).")
	fs.StringVar(&o.ClusterDNS, "cluster-dns", "10.254.0.2", "The cluster DNS service IP for the config's clusterDNS.")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "The cluster domain for the config's clusterDomain.")
	fs.StringVar(&o.RuntimeEndpoint, "container-runtime-endpoint", "", "The CRI endpoint for a new config (default: unix:///run/containerd/containerd.sock).")
	fs.StringVar(&o.CgroupDriver, "cgroup-driver", "", "cgroupfs or systemd for a new config (default: what the runtime reports, else cgroupfs).")
	fs.Var(invertedBool{&o.AllowCgroupV1}, "fail-cgroupv1", "false: a new config lets the agent run on a cgroup v1 host (failCgroupV1: false); since v1.35 it refuses cgroup v1 otherwise.")
	fs.Lookup("fail-cgroupv1").NoOptDefVal = "true"
	fs.BoolVar(&o.Start, "start", false, "Start the agent once the files are written (systemctl where systemd runs, else in the foreground).")
	fs.BoolVarP(&o.Help, "help", "h", false, "Show this help.")
	return fs
}

// invertedBool is a boolean flag stored negated (--fail-cgroupv1=false sets
// AllowCgroupV1), so that Options' zero value is the default.
type invertedBool struct{ p *bool }

func (b invertedBool) String() string {
	if b.p == nil {
		return "true"
	}
	return strconv.FormatBool(!*b.p)
}

func (b invertedBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*b.p = !v
	return nil
}

func (b invertedBool) Type() string { return "bool" }

// Plan is what a join writes, decided before anything is written.
type Plan struct {
	Files      []File
	KeptConfig bool     // the config file existed and is kept
	Args       []string // the agent's command line (binary first)
	Preflight  []Result
}

// File is one file a join writes.
type File struct {
	Path string
	Data []byte
	Mode os.FileMode
}

// Prepare does every check and builds every file, writing nothing: token
// discovery, the configuration the agent will load, and the preflight.
func Prepare(ctx context.Context, o Options) (*Plan, error) {
	if o.Server == "" || o.Token == "" {
		return nil, errors.New("--server and --token are required (see bosun join --help)")
	}
	token, err := ParseToken(o.Token)
	if err != nil {
		return nil, err
	}
	var hashes []string
	for _, h := range o.CAHashes {
		p, err := ParseCAHash(h)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, p)
	}
	for _, p := range []string{o.BootstrapKubeconfig, o.Kubeconfig, o.ConfigFile, o.CertDir, o.RootDir, o.UnitFile} {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%q is not an absolute path: every file flag of bosun join must be one", p)
		}
	}
	if fileExists(o.Kubeconfig) {
		return nil, fmt.Errorf("%s exists: this node has joined before and has its own credentials; start the agent, "+
			"or remove it and %s/kubelet-client-*.pem to join anew", o.Kubeconfig, o.CertDir)
	}
	disc, err := Discover(ctx, o.Server, token, hashes, o.SkipCAVerification)
	if err != nil {
		return nil, err
	}
	if o.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("no --node-name and no host name: %w", err)
		}
		o.NodeName = strings.ToLower(h)
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("no --binary and cannot tell where this bosun is: %w", err)
		}
	}
	plan := &Plan{}
	caFile := filepath.Join(o.CertDir, "ca.pem")
	plan.add(caFile, disc.CAData, 0o600) // CIS 4.1.7
	bootstrap, err := bootstrapKubeconfig(disc, token)
	if err != nil {
		return nil, err
	}
	plan.add(o.BootstrapKubeconfig, bootstrap, 0o600)

	configData, kept, err := o.configFile(ctx, caFile)
	if err != nil {
		return nil, err
	}
	plan.KeptConfig = kept
	if !kept {
		plan.add(o.ConfigFile, configData, 0o600) // CIS 4.1.9
	}
	if o.NodeIP == "" {
		// The node's IP is the one 10250 listens on (the config's address),
		// else the one that reaches the apiserver: on a machine with several
		// addresses the agent's own guess (the host name's, else the default
		// route's) may be another, which the apiserver would call in vain.
		o.NodeIP = nodeIPOf(configData, o.Server)
	}
	plan.Args = append([]string{o.Binary}, o.agentFlags()...)
	plan.add(o.UnitFile, []byte(unit(o, plan.Args)), 0o644)

	// Load the configuration exactly as the agent will: the unit's flags and
	// the config file's text (from a scratch copy when it is not yet written).
	cfg, err := loadAsAgent(o, configData)
	if err != nil {
		return nil, err
	}
	pf := &Preflight{Kubelet: cfg.Kubelet, Server: disc.Server, CAData: disc.CAData, Token: token.String(), ServerTime: disc.ServerTime}
	plan.Preflight = pf.Run(ctx)
	if err := Failed(plan.Preflight); err != nil {
		return plan, fmt.Errorf("%w, nothing was written:\n%w", ErrPreflight, err)
	}
	return plan, nil
}

func (p *Plan) add(path string, data []byte, mode os.FileMode) {
	p.Files = append(p.Files, File{Path: path, Data: data, Mode: mode})
}

// Write writes the plan's files, each whole or not at all.
func (p *Plan) Write() error {
	for _, f := range p.Files {
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
			return err
		}
		if err := atomicfile.Write(f.Path, f.Data, f.Mode); err != nil {
			return fmt.Errorf("writing %s: %w", f.Path, err)
		}
	}
	return nil
}

// agentFlags are the unit's flags, the seed's, with this node's values.
func (o *Options) agentFlags() []string {
	args := []string{
		"--root-dir=" + o.RootDir,
		"--bootstrap-kubeconfig=" + o.BootstrapKubeconfig,
		"--cert-dir=" + o.CertDir,
		"--kubeconfig=" + o.Kubeconfig,
		"--config=" + o.ConfigFile,
		"--hostname-override=" + o.NodeName,
	}
	if o.NodeIP != "" {
		args = append(args, "--node-ip="+o.NodeIP)
	}
	return append(args, "--v=2")
}

// bootstrapKubeconfig is the seed's kubelet-bootstrap kubeconfig: the
// discovered cluster, the user kubelet-bootstrap with the token.
func bootstrapKubeconfig(d *Discovered, token Token) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubernetes"] = &clientcmdapi.Cluster{Server: d.Server, CertificateAuthorityData: d.CAData}
	cfg.AuthInfos["kubelet-bootstrap"] = &clientcmdapi.AuthInfo{Token: token.String()}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "kubernetes", AuthInfo: "kubelet-bootstrap"}
	cfg.CurrentContext = "default"
	return clientcmd.Write(*cfg)
}

// configTemplate is the seed's kubelet-config.yaml.template. The seed's
// podCIDR line is left out: the controller-manager allocates pod CIDRs.
const configTemplate = `kind: KubeletConfiguration
apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %q
authorization:
  mode: Webhook
clusterDomain: %q
clusterDNS:
  - %q
maxPods: 220
serializeImagePulls: false
hairpinMode: promiscuous-bridge
cgroupDriver: %s
runtimeRequestTimeout: "15m"
rotateCertificates: true
serverTLSBootstrap: true
readOnlyPort: 0
port: 10250
address: %q
`

// SeedConfig is the seed's kubelet-config.yaml.template filled in.
func SeedConfig(caFile, clusterDomain, clusterDNS, cgroupDriver, address string) string {
	return fmt.Sprintf(configTemplate, caFile, clusterDomain, clusterDNS, cgroupDriver, address)
}

// configFile is the config's text: the existing file's, kept, or the seed's
// template with this node's values.
func (o *Options) configFile(ctx context.Context, caFile string) ([]byte, bool, error) {
	if data, err := os.ReadFile(o.ConfigFile); err == nil {
		return data, true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	ip := o.NodeIP
	if ip == "" {
		var err error
		if ip, err = sourceIP(o.Server); err != nil {
			return nil, false, fmt.Errorf("no --node-ip, and %w", err)
		}
	}
	driver := o.CgroupDriver
	if driver == "" {
		driver = runtimeCgroupDriver(ctx, o.RuntimeEndpoint)
	}
	if driver != "cgroupfs" && driver != "systemd" {
		return nil, false, fmt.Errorf("--cgroup-driver %q must be cgroupfs or systemd", driver)
	}
	text := SeedConfig(caFile, o.ClusterDomain, o.ClusterDNS, driver, ip)
	if o.RuntimeEndpoint != "" {
		text += fmt.Sprintf("containerRuntimeEndpoint: %q\n", o.RuntimeEndpoint)
	}
	if o.AllowCgroupV1 {
		text += "failCgroupV1: false\n"
	}
	return []byte(text), false, nil
}

// runtimeCgroupDriver is the runtime's cgroup driver when it reports one,
// else the seed's cgroupfs.
func runtimeCgroupDriver(ctx context.Context, endpoint string) string {
	if endpoint == "" {
		endpoint = "unix:///run/containerd/containerd.sock"
	}
	rt, err := runtime.Connect(ctx, endpoint, "", 5*time.Second)
	if err != nil {
		return "cgroupfs"
	}
	if driver, err := rt.CgroupDriver(ctx); err == nil && driver != "" {
		return driver
	}
	return "cgroupfs"
}

// nodeIPOf is the config's address when it names one IP, else the address
// that reaches server; "" when neither is a routable address (a loopback
// one, as when the apiserver is reached through a local proxy, would make
// the Node unreachable): the agent then picks its own, as the kubelet does.
func nodeIPOf(configData []byte, server string) string {
	usable := func(s string) string {
		if ip := net.ParseIP(s); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			return ip.String()
		}
		return ""
	}
	if kc, _, err := config.Decode("kubelet-config.yaml", configData); err == nil {
		if ip := usable(kc.Address); ip != "" {
			return ip
		}
	}
	ip, _ := sourceIP(server)
	return usable(ip)
}

// sourceIP is this machine's address on the route to server.
func sourceIP(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", err
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", fmt.Errorf("cannot tell this node's IP on the way to %s: %w", server, err)
	}
	defer func() { _ = c.Close() }()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// loadAsAgent loads the configuration through the agent's own loader, from
// a scratch copy of the config text.
func loadAsAgent(o Options, configData []byte) (*config.Config, error) {
	dir, err := os.MkdirTemp("", "bosun-join-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	scratch := filepath.Join(dir, filepath.Base(o.ConfigFile))
	if err := os.WriteFile(scratch, configData, 0o600); err != nil {
		return nil, err
	}
	o.ConfigFile = scratch
	cfg, err := config.Load(o.agentFlags())
	if err != nil {
		return nil, fmt.Errorf("the configuration would not load: %w", err)
	}
	return cfg, nil
}

// unit is the seed's systemd unit with bosun in ExecStart.
func unit(o Options, args []string) string {
	var b strings.Builder
	b.WriteString("[Unit]\nDescription=Kubernetes node agent (Bosun, a drop-in kubelet)\n")
	b.WriteString("Documentation=https://github.com/bosun-dev/bosun\nAfter=containerd.service\nWants=containerd.service\n\n")
	b.WriteString("[Service]\nWorkingDirectory=" + o.RootDir + "\n")
	b.WriteString("ExecStartPre=/bin/mkdir -p " + o.RootDir + "\n")
	b.WriteString("ExecStart=" + args[0])
	for _, a := range args[1:] {
		b.WriteString(" \\\n  " + a)
	}
	b.WriteString("\nRestart=always\nRestartSec=5\nStartLimitInterval=0\n\n[Install]\nWantedBy=multi-user.target\n")
	return b.String()
}

// ErrPreflight marks a Prepare that stopped on failed checks; the plan's
// Preflight holds them.
var ErrPreflight = errors.New("preflight failed")

// PrintResults writes one line per check.
func PrintResults(w io.Writer, results []Result) {
	for _, r := range results {
		if r.Err != nil {
			_, _ = fmt.Fprintf(w, "[FAIL] %s: %v\n", r.Check, r.Err)
		} else {
			_, _ = fmt.Fprintf(w, "[ok]   %s: %s\n", r.Check, r.Note)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ForAgent is the preflight for an agent's own command line (`bosun
// preflight <kubelet flags>`): the apiserver, CA and token come from the
// bootstrap kubeconfig while the node has not joined yet.
func ForAgent(cfg *config.Config) (*Preflight, error) {
	pf := &Preflight{Kubelet: cfg.Kubelet}
	kubeconfig := cfg.BootstrapKubeconfig
	joined := cfg.Kubeconfig != "" && fileExists(cfg.Kubeconfig)
	if joined {
		kubeconfig = cfg.Kubeconfig
	}
	if kubeconfig == "" {
		return pf, nil
	}
	kc, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kubeconfig, err)
	}
	ctx, ok := kc.Contexts[kc.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("%s has no current context", kubeconfig)
	}
	cluster, ok := kc.Clusters[ctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("%s: context %q names no cluster", kubeconfig, kc.CurrentContext)
	}
	pf.Server = cluster.Server
	pf.CAData = cluster.CertificateAuthorityData
	if len(pf.CAData) == 0 && cluster.CertificateAuthority != "" {
		if pf.CAData, err = os.ReadFile(cluster.CertificateAuthority); err != nil {
			return nil, fmt.Errorf("%s: %w", kubeconfig, err)
		}
	}
	if user, ok := kc.AuthInfos[ctx.AuthInfo]; ok && !joined {
		pf.Token = user.Token
	}
	return pf, nil
}
