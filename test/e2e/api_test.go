//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// nodeAPI requests https://<node-ip>:10250<path> as the seed's curl does.
func nodeAPI(t *testing.T, env clusterEnv, path, bearer, cert, key string) (int, string) {
	t.Helper()
	ca, err := os.ReadFile(env["CA_CERT"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tlsCfg := &tls.Config{RootCAs: pool}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg.Certificates = []tls.Certificate{pair}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	req, _ := http.NewRequest("GET", "https://"+net.JoinHostPort(env["NODE_IP"], "10250")+path, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The seed's checks, as the seed writes them.
func TestNodeAPISeedCurlChecks(t *testing.T) {
	env := loadEnv(t)
	cs := env.client(t)
	ctx := context.Background()
	if code, body := nodeAPI(t, env, "/metrics", "", "", ""); code != 401 || body != "Unauthorized" {
		t.Errorf("no credentials: %d %q", code, body)
	}
	if code, body := nodeAPI(t, env, "/metrics", "123456", "", ""); code != 401 || body != "Unauthorized" {
		t.Errorf("bogus token: %d %q", code, body)
	}
	want := "Forbidden (user=system:kube-controller-manager, verb=get, resource=nodes, subresource(s)=[metrics])\n"
	if code, body := nodeAPI(t, env, "/metrics", "", env["KCM_CERT"], env["KCM_KEY"]); code != 403 || body != want {
		t.Errorf("controller-manager cert: %d %q", code, body)
	}
	if code, body := nodeAPI(t, env, "/metrics", "", env["ADMIN_CERT"], env["ADMIN_KEY"]); code != 200 || !strings.Contains(body, "# HELP") {
		t.Errorf("admin cert: %d %.200q", code, body)
	}
	// A ServiceAccount bound to system:kubelet-api-admin, by its token.
	ns := testNamespace(t, cs)
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kubelet-api-test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubelet-api-test-" + ns},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kubelet-api-test", Namespace: ns}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
	})
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "kubelet-api-test", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := nodeAPI(t, env, "/metrics", tok.Status.Token, "", ""); code != 200 || !strings.Contains(body, "# HELP") {
		t.Errorf("service account token: %d %.200q", code, body)
	}
	if code, body := nodeAPI(t, env, "/pods", tok.Status.Token, "", ""); code != 200 || !strings.Contains(body, `"kind":"PodList"`) {
		t.Errorf("/pods: %d %.200q", code, body)
	}
}

// Healthz answers on loopback only; the read-only port is closed.
func TestNodeAPIPorts(t *testing.T) {
	env := loadEnv(t)
	resp, err := http.Get("http://127.0.0.1:10248/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}
	for _, addr := range []string{net.JoinHostPort(env["NODE_IP"], "10248"), "127.0.0.1:10255", net.JoinHostPort(env["NODE_IP"], "10255")} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s accepts connections; it must not", addr)
		}
	}
	if env["KUBELET"] == "bosun" {
		if resp, err := http.Get("http://127.0.0.1:10248/configz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Errorf("healthz port serves /configz: %d", resp.StatusCode)
			}
		}
	}
}

func TestLogs(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	create(t, cs, ns, busyboxPod("talker", corev1.RestartPolicyAlways,
		"for i in 1 2 3 4 5; do echo line-$i; done; sleep 2; echo late; sleep 1; exit 7"))
	waitPod(t, cs, ns, "talker", 60*time.Second, "restarted once", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	out, err := env.kubectl(ctx, "", "-n", ns, "logs", "talker", "--previous")
	if err != nil || !strings.Contains(out, "line-1") || !strings.Contains(out, "late") {
		t.Errorf("--previous: %v %q", err, out)
	}
	out, err = env.kubectl(ctx, "", "-n", ns, "logs", "talker", "--previous", "--tail=2")
	if err != nil || strings.TrimSpace(out) != "line-5\nlate" {
		t.Errorf("--tail=2: %v %q", err, out)
	}
	out, err = env.kubectl(ctx, "", "-n", ns, "logs", "talker", "--previous", "--timestamps", "--limit-bytes=40")
	if err != nil || len(out) > 40 || !strings.Contains(out, "Z line-1") {
		t.Errorf("--timestamps --limit-bytes: %v %q", err, out)
	}
	// --since-time (whole seconds, RFC 3339) at the "late" line, written two
	// seconds after the others, keeps only that line.
	out, err = env.kubectl(ctx, "", "-n", ns, "logs", "talker", "--previous", "--timestamps")
	var lateAt time.Time
	for _, line := range strings.Split(out, "\n") {
		if ts, msg, ok := strings.Cut(line, " "); ok && msg == "late" {
			lateAt, _ = time.Parse(time.RFC3339Nano, ts)
		}
	}
	if err != nil || lateAt.IsZero() {
		t.Fatalf("--timestamps: no time on the late line: %v %q", err, out)
	}
	out, err = env.kubectl(ctx, "", "-n", ns, "logs", "talker", "--previous", "--since-time="+lateAt.Truncate(time.Second).Format(time.RFC3339))
	if err != nil || strings.TrimSpace(out) != "late" {
		t.Errorf("--since-time: %v %q", err, out)
	}
	// follow returns once the container exits, with everything it wrote.
	fctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	out, err = env.kubectl(fctx, "", "-n", ns, "logs", "talker", "-f")
	if err != nil || !strings.Contains(out, "late") {
		t.Errorf("-f: %v %q", err, out)
	}
	out, err = env.kubectl(ctx, "", "-n", ns, "logs", "talker", "--since=1h")
	if err != nil || !strings.Contains(out, "line-") {
		t.Errorf("--since: %v %q", err, out)
	}
}

// kubectl exec and attach over WebSocket (kubectl's default) and SPDY.
func TestExecAndAttach(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod := busyboxPod("shell", corev1.RestartPolicyAlways, "while true; do echo tick; sleep 1; done")
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "shell", 60*time.Second, "Running", running)
	for _, mode := range []string{"websocket", "spdy"} {
		t.Run(mode, func(t *testing.T) {
			run := func(stdin string, args ...string) (string, int) {
				cmd := exec.CommandContext(ctx, env["KUBECTL"], append([]string{"--kubeconfig", env["KUBECONFIG"], "-n", ns}, args...)...)
				cmd.Env = append(os.Environ(), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS="+fmt.Sprint(mode == "websocket"))
				cmd.Stdin = strings.NewReader(stdin)
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				err := cmd.Run()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatalf("kubectl %v: %v", args, err)
				}
				return out.String(), code
			}
			if out, code := run("", "exec", "shell", "--", "sh", "-c", "exit 3"); code != 3 {
				t.Errorf("exit code %d (%q), want 3", code, out)
			}
			if out, code := run("piped-through\n", "exec", "-i", "shell", "--", "cat"); code != 0 || strings.TrimSpace(out) != "piped-through" {
				t.Errorf("stdin: %d %q", code, out)
			}
			// A TTY needs a terminal on kubectl's side too: script(1) gives it one.
			kubectlLine := fmt.Sprintf("KUBECTL_REMOTE_COMMAND_WEBSOCKETS=%v %s --kubeconfig %s -n %s exec -it shell -- sh -c 'test -t 1 && echo is-a-tty; stty size'",
				mode == "websocket", env["KUBECTL"], env["KUBECONFIG"], ns)
			tty, err := exec.CommandContext(ctx, "script", "-qec", kubectlLine, "/dev/null").CombinedOutput()
			if err != nil || !strings.Contains(string(tty), "is-a-tty") {
				t.Errorf("tty: %v %q", err, tty)
			}
			actx, acancel := context.WithTimeout(ctx, 4*time.Second)
			defer acancel()
			cmd := exec.CommandContext(actx, env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], "-n", ns, "attach", "shell")
			cmd.Env = append(os.Environ(), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS="+fmt.Sprint(mode == "websocket"))
			out, _ := cmd.CombinedOutput()
			if !strings.Contains(string(out), "tick") {
				t.Errorf("attach saw %q", out)
			}
		})
	}
}

// kubectl port-forward to agnhost netexec moves 10 MiB intact, over
// WebSocket and over SPDY.
func TestPortForward(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "netexec"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "netexec", Image: "registry.k8s.io/e2e-test-images/agnhost:2.63.0", Args: []string{"netexec", "--http-port=8080"},
	}}}}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "netexec", 60*time.Second, "Running", running)
	payload := make([]byte, 10<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	sum := sha256.Sum256(payload)
	for i, mode := range []string{"websocket", "spdy"} {
		t.Run(mode, func(t *testing.T) {
			port := 18080 + i
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], "-n", ns, "port-forward", "pod/netexec", fmt.Sprintf("%d:8080", port))
			cmd.Env = append(os.Environ(), "KUBECTL_PORT_FORWARD_WEBSOCKETS="+fmt.Sprint(mode == "websocket"))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); _ = cmd.Wait() }()
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
				resp, err := http.Get(base + "/hostname")
				if err != nil {
					return false, nil
				}
				resp.Body.Close()
				return resp.StatusCode == 200, nil
			})
			if err != nil {
				t.Fatalf("port-forward never answered: %s", out.String())
			}
			// Upload through the tunnel, then check what arrived inside the pod.
			var form bytes.Buffer
			mw := multipart.NewWriter(&form)
			fw, _ := mw.CreateFormFile("file", "payload")
			_, _ = fw.Write(payload)
			_ = mw.Close()
			resp, err := http.Post(base+"/upload", mw.FormDataContentType(), &form)
			if err != nil {
				t.Fatal(err)
			}
			var result struct{ Output, Error string }
			_ = json.NewDecoder(resp.Body).Decode(&result)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated || result.Output == "" {
				t.Fatalf("upload: %s %+v", resp.Status, result)
			}
			got, err := env.kubectl(ctx, "", "-n", ns, "exec", "netexec", "--", "sha256sum", result.Output)
			if err != nil || !strings.HasPrefix(got, hex.EncodeToString(sum[:])) {
				t.Errorf("10 MiB did not arrive intact: %v %q", err, got)
			}
		})
	}
}

// kubectl logs -f keeps following when the log is rotated under it
// (containerLogMaxSize 10Mi in the cluster's config): every line arrives once,
// in order, including those written after the rotation.
func TestLogsFollowAcrossRotation(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	const lines = 12000 // about 12 MB of ~1000-byte lines
	create(t, cs, ns, busyboxPod("chatty", corev1.RestartPolicyNever, fmt.Sprintf(
		`s=$(head -c 990 /dev/zero | tr '\0' x); sleep 2; i=0; while [ $i -lt %d ]; do echo "n=$i $s"; i=$((i+1)); done; `+
			`sleep 25; for j in 1 2 3; do echo after-$j; sleep 1; done`, lines)))
	pod := waitPod(t, cs, ns, "chatty", 60*time.Second, "running", running)
	fctx, cancel := context.WithTimeout(ctx, 150*time.Second)
	defer cancel()
	out, err := env.kubectl(fctx, "", "-n", ns, "logs", "chatty", "-f")
	if err != nil {
		t.Fatalf("kubectl logs -f: %v (%d bytes read)", err, len(out))
	}
	dir := fmt.Sprintf("/var/log/pods/%s_%s_%s/main", ns, pod.Name, pod.UID)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	rotated := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "0.log.") {
			rotated++
		}
	}
	if rotated == 0 {
		t.Fatalf("no rotated file in %s (%d entries); the log was never rotated", dir, len(entries))
	}
	got := strings.Split(strings.TrimRight(out, "\n"), "\n")
	want := 0
	var tail []string
	for _, l := range got {
		if strings.HasPrefix(l, "n=") {
			if !strings.HasPrefix(l, fmt.Sprintf("n=%d ", want)) {
				t.Fatalf("line %d of the followed log is %.20q; want n=%d", want, l, want)
			}
			want++
			continue
		}
		tail = append(tail, l)
	}
	if want != lines || strings.Join(tail, ",") != "after-1,after-2,after-3" {
		t.Fatalf("followed %d numbered lines (want %d), then %q", want, lines, tail)
	}
}
