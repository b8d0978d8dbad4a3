//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// execIn runs a command in a pod's container and returns its output.
func execIn(t *testing.T, env clusterEnv, ns, pod, container, script string) string {
	t.Helper()
	out, err := env.kubectl(context.Background(), "", "-n", ns, "exec", pod, "-c", container, "--", "sh", "-c", script)
	if err != nil {
		t.Fatalf("exec %q in %s: %v: %s", script, pod, err, out)
	}
	return out
}

// Each volume type with its content, modes and mount kind, and a ConfigMap
// update reaching the running pod.
func TestVolumeTypes(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	ctx := context.Background()
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm"},
		Data: map[string]string{"greeting": "hello", "other": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"},
		Data: map[string][]byte{"password": []byte("s3cret")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hostDir := filepath.Join(os.TempDir(), "bosun-e2e-"+ns)
	t.Cleanup(func() { _ = os.RemoveAll(hostDir) })
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	mode0400, mode0640 := int32(0o400), int32(0o640)
	pod := busyboxPod("vols", corev1.RestartPolicyAlways, "sleep 3600")
	pod.Labels = map[string]string{"tier": "e2e"}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirOrCreate}}},
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cm"},
			Items:                []corev1.KeyToPath{{Key: "greeting", Path: "sub/greeting.txt", Mode: &mode0640}}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: &mode0400}}},
		{Name: "down", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Items: []corev1.KeyToPath{{Key: "other", Path: "other"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "e2e-audience"}},
		}}}},
	}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "disk", MountPath: "/disk"}, {Name: "mem", MountPath: "/mem"}, {Name: "host", MountPath: "/host"},
		{Name: "cm", MountPath: "/cm"}, {Name: "sec", MountPath: "/sec"}, {Name: "down", MountPath: "/down"}, {Name: "proj", MountPath: "/proj"},
	}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "vols", 60*time.Second, "Running", running)
	checks := map[string]string{
		"cat /cm/sub/greeting.txt":                        "hello",
		"stat -L -c %a /cm/sub/greeting.txt":              "640",
		"cat /sec/password":                               "s3cret",
		"stat -L -c %a /sec/password":                     "400",
		"cat /down/labels":                                `tier="e2e"`,
		"cat /proj/other; echo; cat /proj/name":           "x\nvols",
		"wc -c < /proj/token | tr -d ' '":                 "",
		"grep ' /mem ' /proc/mounts | cut -d' ' -f3":      "tmpfs",
		"touch /disk/f /host/from-pod && echo ok":         "ok",
		"touch /cm/new 2>/dev/null && echo rw || echo ro": "ro",
	}
	for script, want := range checks {
		got := strings.TrimSpace(execIn(t, env, ns, "vols", "main", script))
		if want == "" {
			if got == "0" || got == "" {
				t.Errorf("%s: empty", script)
			}
			continue
		}
		if got != want {
			t.Errorf("%s: %q, want %q", script, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(hostDir, "from-pod")); err != nil {
		t.Errorf("hostPath write not seen on the host: %v", err)
	}
	// An update of the ConfigMap reaches the running pod.
	cm, _ := cs.CoreV1().ConfigMaps(ns).Get(ctx, "cm", metav1.GetOptions{})
	cm.Data["greeting"] = "updated"
	if _, err := cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got string
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 150*time.Second, true, func(ctx context.Context) (bool, error) {
		got = strings.TrimSpace(execIn(t, env, ns, "vols", "main", "cat /cm/sub/greeting.txt"))
		return got == "updated", nil
	})
	if err != nil {
		t.Fatalf("ConfigMap update not seen in the pod after 150s: %q", got)
	}
}

// A container cannot use a subPath that an earlier container turned into a
// symlink out of the volume (CVE-2017-1002101): it never runs.
func TestSubPathSymlinkEscapeRefused(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	pod := busyboxPod("escape", corev1.RestartPolicyAlways, "ls /mnt/ ; sleep 3600")
	pod.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.InitContainers = []corev1.Container{{Name: "plant", Image: busybox, Command: []string{"sh", "-c", "ln -s / /v/escape"},
		VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/mnt", SubPath: "escape"}}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "escape", 60*time.Second, "refused", func(p *corev1.Pod) bool {
		r := waitingReason(p)
		return r == "CreateContainerConfigError" || r == "CreateContainerError" || r == "RunContainerError" || r == "CrashLoopBackOff"
	})
	time.Sleep(3 * time.Second)
	p, _ := cs.CoreV1().Pods(ns).Get(context.Background(), "escape", metav1.GetOptions{})
	if cs := p.Status.ContainerStatuses; len(cs) == 0 || cs[0].State.Running != nil || cs[0].RestartCount > 0 && cs[0].LastTerminationState.Terminated != nil && cs[0].LastTerminationState.Terminated.ExitCode == 0 {
		t.Fatalf("the container ran with the escaping subPath: %s", describePod(p))
	}
}

// runAsUser, readOnlyRootFilesystem and capabilities as the container sees them.
func TestSecurityContextFromInside(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	uid, yes := int64(1234), true
	pod := busyboxPod("sc", corev1.RestartPolicyAlways, "sleep 3600")
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		RunAsUser: &uid, ReadOnlyRootFilesystem: &yes,
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"CHOWN"}},
	}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "sc", 60*time.Second, "Running", running)
	for script, want := range map[string]string{
		"id -u": "1234",
		"touch /rootfs-file 2>/dev/null && echo rw || echo ro":      "ro",
		"grep CapBnd /proc/self/status | tr -d '\\t' | cut -d: -f2": "0000000000000001",
	} {
		if got := strings.TrimSpace(execIn(t, env, ns, "sc", "main", script)); got != want {
			t.Errorf("%s: %q, want %q", script, got, want)
		}
	}
}

// Readiness follows its probe both ways; a startup probe holds liveness off
// until it passes, after which a failing liveness probe restarts the container.
func TestProbesReadinessAndStartupGating(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	execProbe := func(cmd string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", cmd}}},
			PeriodSeconds: period, FailureThreshold: failures}
	}
	pod := busyboxPod("probed", corev1.RestartPolicyAlways, "sleep 3600")
	pod.Spec.Containers[0].ReadinessProbe = execProbe("cat /tmp/ready", 1, 1)
	pod.Spec.Containers[0].StartupProbe = execProbe("cat /tmp/started", 1, 120)
	pod.Spec.Containers[0].LivenessProbe = execProbe("false", 1, 1)
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "probed", 60*time.Second, "Running", running)
	time.Sleep(5 * time.Second) // liveness would have killed it by now, were it not held off
	p, _ := cs.CoreV1().Pods(ns).Get(context.Background(), "probed", metav1.GetOptions{})
	st := p.Status.ContainerStatuses[0]
	if st.RestartCount != 0 || st.Ready || st.Started == nil || *st.Started {
		t.Fatalf("before the startup probe passed: %s", describePod(p))
	}
	execIn(t, env, ns, "probed", "main", "touch /tmp/ready /tmp/started")
	waitPod(t, cs, ns, "probed", 60*time.Second, "restarted by liveness after startup passed", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})

	// Readiness flips with its probe, with no liveness in the way.
	ready := busyboxPod("ready", corev1.RestartPolicyAlways, "sleep 3600")
	ready.Spec.Containers[0].ReadinessProbe = execProbe("cat /tmp/ready", 1, 1)
	create(t, cs, ns, ready)
	isReady := func(want bool) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					return (c.Status == corev1.ConditionTrue) == want && p.Status.Phase == corev1.PodRunning
				}
			}
			return false
		}
	}
	waitPod(t, cs, ns, "ready", 60*time.Second, "Running, not Ready", isReady(false))
	execIn(t, env, ns, "ready", "main", "touch /tmp/ready")
	waitPod(t, cs, ns, "ready", 30*time.Second, "Ready", isReady(true))
	execIn(t, env, ns, "ready", "main", "rm /tmp/ready")
	waitPod(t, cs, ns, "ready", 30*time.Second, "not Ready again", isReady(false))
}

// postStart runs after the container starts; preStop runs before the
// container gets SIGTERM. The order is read from a host file both write.
func TestLifecycleHookOrder(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	hostDir := filepath.Join(os.TempDir(), "bosun-e2e-"+ns)
	t.Cleanup(func() { _ = os.RemoveAll(hostDir) })
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	pod := busyboxPod("hooks", corev1.RestartPolicyAlways,
		"trap 'echo term >> /h/log; exit 0' TERM; echo start >> /h/log; while true; do sleep 1; done")
	pod.Spec.TerminationGracePeriodSeconds = ptr(int64(20))
	pod.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirOrCreate}}}}
	c := &pod.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{{Name: "h", MountPath: "/h"}}
	c.Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo poststart >> /h/log"}}},
		PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo prestop >> /h/log"}}},
	}
	create(t, cs, ns, pod)
	waitPod(t, cs, ns, "hooks", 60*time.Second, "Running", running)
	if err := cs.CoreV1().Pods(ns).Delete(context.Background(), "hooks", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var log string
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 40*time.Second, true, func(context.Context) (bool, error) {
		data, _ := os.ReadFile(filepath.Join(hostDir, "log"))
		log = string(data)
		return strings.Contains(log, "term"), nil
	})
	if err != nil {
		t.Fatalf("the container never got SIGTERM; log %q", log)
	}
	idx := func(s string) int { return strings.Index(log, s) }
	if idx("poststart") < 0 || idx("start") < 0 || idx("prestop") < 0 || idx("poststart") >= idx("prestop") || idx("prestop") >= idx("term") {
		t.Fatalf("hook order in %q; want start and poststart, then prestop, then term", fmt.Sprint(log))
	}
}

// The subPath race (CVE-2021-25741): a container swaps a subPath between a
// folder and a symlink to the host's / in a loop while other containers of
// the pod, mounting that subPath, start. Over SUBPATH_STARTS starts (200
// unless set) none may see the host's files: each either gets the folder or
// is refused and retried.
func TestSubPathSymlinkSwapRace(t *testing.T) {
	env := loadEnv(t)
	requirePods(t, env)
	cs := env.client(t)
	ns := testNamespace(t, cs)
	starts := 200
	if v := os.Getenv("SUBPATH_STARTS"); v != "" {
		if _, err := fmt.Sscan(v, &starts); err != nil {
			t.Fatalf("SUBPATH_STARTS=%q: %v", v, err)
		}
	}
	const victims = 10 // containers per pod that mount the subPath
	pods := (starts + victims - 1) / victims
	// A link to / for a moment, then a fresh folder for a while, so that
	// some victims resolve the link and others start on a folder.
	swap := `mkdir -p /v/sub; end=$(( $(date +%s) + 25 ))
while [ "$(date +%s)" -lt "$end" ]; do
  for i in 1 2 3 4 5; do rm -rf /v/sub; ln -s / /v/sub; usleep 30000; rm -f /v/sub; mkdir /v/sub; usleep 1000000; done
done
rm -rf /v/sub; mkdir /v/sub`
	// A host root has proc, etc and bin; the volume's folder is empty.
	check := `for f in proc etc bin; do if [ -e /mnt/$f ]; then echo "host files under the subPath: $(ls /mnt | head -5 | tr '\n' ' ')"; exit 1; fi; done`
	for i := range pods {
		pod := busyboxPod(fmt.Sprintf("race-%d", i), corev1.RestartPolicyNever, swap)
		pod.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pod.Spec.Containers[0].Name = "swap"
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}
		for j := range victims {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("victim-%d", j), Image: busybox,
				Command: []string{"sh", "-c", check}, TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/mnt", SubPath: "sub"}}})
		}
		create(t, cs, ns, pod)
	}
	ctx := context.Background()
	var list *corev1.PodList
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 6*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		if list, err = cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
			return false, nil
		}
		done := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				done++
			}
		}
		return done == pods, nil
	})
	// Each victim either ran its check (exit 0: the folder; exit 1: the
	// host), or its start failed because the folder it was bound to had been
	// removed meanwhile (runc cannot mount a deleted folder: exit 128),
	// which is safe.
	checked, failedStart, leaked := 0, 0, 0
	for _, p := range list.Items {
		for _, c := range p.Status.ContainerStatuses {
			term := c.State.Terminated
			if term == nil {
				// A start that left the container created but not run is
				// tried again (as upstream, even under Never); a pod can
				// end with that retry waiting, its last run the one that
				// counts.
				term = c.LastTerminationState.Terminated
				if term != nil && strings.HasPrefix(c.Name, "victim-") {
					t.Logf("%s/%s counted by its last run: state %+v, last exit %d (%s)", p.Name, c.Name, c.State, term.ExitCode, term.Reason)
				}
			}
			if !strings.HasPrefix(c.Name, "victim-") {
				continue
			}
			if term == nil {
				t.Logf("%s/%s (pod %s) has not run: state %+v, last state %+v", p.Name, c.Name, p.Status.Phase, c.State, c.LastTerminationState)
				continue
			}
			switch term.ExitCode {
			case 0:
				checked++
			case 1:
				leaked++
				t.Errorf("%s/%s saw the host: %s", p.Name, c.Name, term.Message)
			default:
				failedStart++
			}
		}
	}
	refused := 0
	if evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == "Failed" {
				refused += int(max(e.Count, 1))
			}
		}
	}
	t.Logf("%d subPath containers ran their check (%d saw the host), %d failed to start on a removed folder; %d warnings of refused or failed starts",
		checked, leaked, failedStart, refused)
	if err != nil {
		t.Fatalf("not all %d pods finished in 6 minutes", pods)
	}
	if checked+failedStart+leaked < starts {
		t.Fatalf("only %d of %d subPath containers were started", checked+failedStart+leaked, starts)
	}
	if checked == 0 {
		t.Fatal("no subPath container ran its check")
	}
}
