package join

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	"github.com/bosun-dev/bosun/internal/cgroups"
	"github.com/bosun-dev/bosun/internal/config"
	"github.com/bosun-dev/bosun/internal/runtime"
)

// MaxClockSkew is how far the node's clock may be from the apiserver's:
// beyond it, fresh certificates look not yet valid or already expired.
const MaxClockSkew = 30 * time.Second

// Preflight is what the checks look at.
type Preflight struct {
	Kubelet *kubeletv1beta1.KubeletConfiguration // defaulted, as the agent will run
	// The apiserver, when known: its address and CA, the bootstrap token to
	// check RBAC with (empty: RBAC not checked) and its clock (zero: asked).
	Server     string
	CAData     []byte
	Token      string
	ServerTime time.Time
	// Test seams: the swap table, the clock and the host's cgroup version.
	SwapsFile string
	Now       func() time.Time
	CgroupV2  func() bool
}

// Result is one check: its name and, when it failed, why and the fix.
type Result struct {
	Check string
	Note  string // what was seen, when it passed or was skipped
	Err   error
}

// Failed is the first failed result's error joined with the others, or nil.
func Failed(results []Result) error {
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Check, r.Err))
		}
	}
	return errors.Join(errs...)
}

// Run runs every check and returns each one's result, in a fixed order.
func (p *Preflight) Run(ctx context.Context) []Result {
	if p.SwapsFile == "" {
		p.SwapsFile = "/proc/swaps"
	}
	var out []Result
	add := func(check string, note string, err error) {
		out = append(out, Result{Check: check, Note: note, Err: err})
	}
	note, err := p.swap()
	add("swap", note, err)
	note, err = p.cgroups()
	add("cgroups", note, err)
	note, err = p.runtime(ctx)
	add("container runtime", note, err)
	add("ports", p.portsNote(), p.ports())
	if p.Server != "" {
		note, err = p.clock(ctx)
		add("clock", note, err)
		if p.Token != "" {
			note, err = p.rbac(ctx)
			add("bootstrap RBAC", note, err)
		} else {
			add("bootstrap RBAC", "skipped: no bootstrap token (the node has joined, or there is no --bootstrap-kubeconfig)", nil)
		}
	}
	return out
}

// swap fails when the node has swap and failSwapOn is true.
func (p *Preflight) swap() (string, error) {
	f, err := os.Open(p.SwapsFile)
	if err != nil {
		return "no " + p.SwapsFile + ": no swap", nil
	}
	defer func() { _ = f.Close() }()
	var devices []string
	s := bufio.NewScanner(f)
	for first := true; s.Scan(); first = false {
		if fields := strings.Fields(s.Text()); !first && len(fields) > 0 {
			devices = append(devices, fields[0])
		}
	}
	if len(devices) == 0 {
		return "off", nil
	}
	if p.Kubelet.FailSwapOn == nil || *p.Kubelet.FailSwapOn {
		return "", fmt.Errorf("swap is on (%s) and failSwapOn is true: run swapoff -a (and remove it from /etc/fstab), "+
			"or set failSwapOn: false in the KubeletConfiguration", strings.Join(devices, ", "))
	}
	return "on (" + strings.Join(devices, ", ") + "), allowed by failSwapOn: false", nil
}

// cgroups fails where the agent would refuse the host's cgroup version
// (failCgroupV1 on a cgroup v1 host).
func (p *Preflight) cgroups() (string, error) {
	v2 := p.CgroupV2
	if v2 == nil {
		v2 = cgroups.New("/sys/fs/cgroup").V2
	}
	if v2() {
		return "v2", nil
	}
	if err := config.ValidateHost(p.Kubelet, false); err != nil {
		return "", err
	}
	return "v1, allowed by failCgroupV1: false", nil
}

// runtime dials the CRI endpoint, asks its version and compares its cgroup
// driver with the configuration's.
func (p *Preflight) runtime(ctx context.Context) (string, error) {
	endpoint := p.Kubelet.ContainerRuntimeEndpoint
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rt, err := runtime.Connect(ctx, endpoint, p.Kubelet.ImageServiceEndpoint, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("%w: start the runtime (systemctl start containerd) or set containerRuntimeEndpoint", err)
	}
	version, err := rt.VersionString(ctx)
	if err != nil {
		return "", fmt.Errorf("the runtime at %s does not answer: %w: start it (systemctl start containerd) or set containerRuntimeEndpoint", endpoint, err)
	}
	theirs, err := rt.CgroupDriver(ctx)
	if err != nil {
		return "", fmt.Errorf("the runtime at %s: %w", endpoint, err)
	}
	ours := p.Kubelet.CgroupDriver
	switch {
	case theirs == "":
		return version + " at " + endpoint + " (it does not report its cgroup driver: cgroupDriver " + ours + " is used)", nil
	case !config.CgroupRootSupported(theirs, p.Kubelet.CgroupRoot):
		return "", fmt.Errorf("the runtime at %s uses the systemd cgroup driver, which Bosun does not support with cgroupRoot %q: "+
			"leave cgroupRoot unset, or set the runtime to cgroupfs (containerd's SystemdCgroup = false)", endpoint, p.Kubelet.CgroupRoot)
	case theirs != ours:
		// As the kubelet since v1.34: the runtime's driver wins.
		return version + " at " + endpoint + ", cgroup driver " + theirs + " (the runtime's; the config's " + ours + " is overridden, as the kubelet does)", nil
	}
	return version + " at " + endpoint + ", cgroup driver " + theirs, nil
}

// listenAddrs are the addresses the agent will listen on.
func (p *Preflight) listenAddrs() []string {
	kc := p.Kubelet
	var addrs []string
	if kc.EnableServer == nil || *kc.EnableServer {
		addrs = append(addrs, net.JoinHostPort(kc.Address, strconv.Itoa(int(kc.Port))))
		if kc.ReadOnlyPort > 0 {
			addrs = append(addrs, net.JoinHostPort(kc.Address, strconv.Itoa(int(kc.ReadOnlyPort))))
		}
	}
	if kc.HealthzPort != nil && *kc.HealthzPort > 0 {
		addrs = append(addrs, net.JoinHostPort(kc.HealthzBindAddress, strconv.Itoa(int(*kc.HealthzPort))))
	}
	return addrs
}

func (p *Preflight) portsNote() string { return "free: " + strings.Join(p.listenAddrs(), ", ") }

// ports fails when an address the agent listens on is taken or not this
// machine's.
func (p *Preflight) ports() error {
	var errs []string
	for _, addr := range p.listenAddrs() {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			switch {
			case errors.Is(err, syscall.EADDRINUSE):
				errs = append(errs, addr+" is in use (another kubelet or bosun?): stop it (systemctl stop kubelet, or bosun) or change the port")
			default:
				errs = append(errs, fmt.Sprintf("cannot listen on %s: %v: set address to an IP of this node", addr, err))
			}
			continue
		}
		_ = l.Close()
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// clock compares the node's clock with the apiserver's Date header.
func (p *Preflight) clock(ctx context.Context) (string, error) {
	server := p.ServerTime
	if server.IsZero() {
		var err error
		if server, err = p.askTime(ctx); err != nil {
			return "", err
		}
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	skew := now().Sub(server)
	if skew < 0 {
		skew = -skew
	}
	// The Date header has one-second resolution.
	if skew > MaxClockSkew+time.Second {
		return "", fmt.Errorf("this node's clock is %s away from the apiserver's (more than %s): sync it (chrony or systemd-timesyncd), "+
			"or new certificates will look not yet valid or expired", skew.Round(time.Second), MaxClockSkew)
	}
	return "within " + MaxClockSkew.String() + " of the apiserver's", nil
}

func (p *Preflight) askTime(ctx context.Context) (time.Time, error) {
	cfg := p.restConfig()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(p.Server, "/")+"/healthz", nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := (&http.Client{Transport: rt, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot reach the apiserver at %s: %w", p.Server, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	t, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return time.Time{}, fmt.Errorf("the apiserver at %s sent no Date header to compare clocks with", p.Server)
	}
	return t, nil
}

func (p *Preflight) restConfig() *rest.Config {
	return &rest.Config{
		Host:            p.Server,
		BearerToken:     p.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.CAData},
		Timeout:         15 * time.Second,
		UserAgent:       "bosun-preflight",
		ContentConfig:   rest.ContentConfig{ContentType: "application/json"},
	}
}

// The seed's bindings, each as the access review that proves it and the
// command that creates it.
var bootstrapBindings = []struct {
	what   string
	attrs  authorizationv1.ResourceAttributes
	create string
}{
	{
		what:   "create certificatesigningrequests (the kubelet-bootstrap binding)",
		attrs:  authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Verb: "create"},
		create: "kubectl create clusterrolebinding kubelet-bootstrap --clusterrole=system:node-bootstrapper --group=system:bootstrappers",
	},
	{
		what: "have its CSR approved automatically (the auto-approve-csrs-for-group binding of csr-crb.yaml)",
		attrs: authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests",
			Subresource: "nodeclient", Verb: "create"},
		create: "kubectl create clusterrolebinding auto-approve-csrs-for-group " +
			"--clusterrole=system:certificates.k8s.io:certificatesigningrequests:nodeclient --group=system:bootstrappers",
	},
}

// rbac asks the apiserver, as the token's user, whether it may do what the
// TLS bootstrap needs.
func (p *Preflight) rbac(ctx context.Context) (string, error) {
	cs, err := kubernetes.NewForConfig(p.restConfig())
	if err != nil {
		return "", err
	}
	user := "system:bootstrap:" + strings.SplitN(p.Token, ".", 2)[0]
	var missing []string
	for _, b := range bootstrapBindings {
		attrs := b.attrs
		review, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs},
		}, metav1.CreateOptions{})
		switch {
		case apierrors.IsUnauthorized(err):
			return "", fmt.Errorf("the apiserver refuses the bootstrap token %s (Unauthorized): it is wrong or has expired; "+
				"make a new one (kubeadm token create) and check the apiserver's --enable-bootstrap-token-auth", redact(p.Token))
		case err != nil:
			return "", fmt.Errorf("asking the apiserver what %s may do: %w", user, err)
		case !review.Status.Allowed:
			missing = append(missing, fmt.Sprintf("%s cannot %s: %s", user, b.what, b.create))
		}
	}
	if len(missing) > 0 {
		return "", errors.New(strings.Join(missing, "; "))
	}
	return user + " may create and auto-approve its CSR", nil
}
