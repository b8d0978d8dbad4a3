package probes

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/component-base/metrics"
	"k8s.io/klog/v2"
)

// Kind is startup, liveness or readiness.
type Kind string

const (
	Startup   Kind = "Startup"
	Liveness  Kind = "Liveness"
	Readiness Kind = "Readiness"
)

// ProbeTotal counts probe runs, as upstream's prober_probe_total.
var ProbeTotal = metrics.NewCounterVec(&metrics.CounterOpts{
	Subsystem: "prober", Name: "probe_total", StabilityLevel: metrics.BETA,
	Help: "Cumulative number of a liveness, readiness or startup probe for a container by result.",
}, []string{"probe_type", "result", "container", "pod", "namespace", "pod_uid"})

// ProbeDuration is how long probes that succeeded (or ended unknown) took,
// as upstream's prober_probe_duration_seconds; failed probes are not timed.
var ProbeDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
	Subsystem: "prober", Name: "probe_duration_seconds", StabilityLevel: metrics.ALPHA,
	Help: "Duration in seconds for a probe response.",
}, []string{"probe_type", "container", "pod", "namespace"})

// Registry holds what /metrics/probes serves: the probe counts and
// durations and the process start time, as upstream. The metrics are
// registered here at start, so no probe runs before they count.
var Registry = func() metrics.KubeRegistry {
	r := metrics.NewKubeRegistry()
	_ = metrics.RegisterProcessStartTime(r.Register)
	r.MustRegister(ProbeTotal, ProbeDuration)
	return r
}()

// Config wires a Manager.
type Config struct {
	Exec     Execer                                                                                     // ExecSync for exec probes
	Recorder record.EventRecorder                                                                       // Unhealthy events
	Wake     func(types.UID)                                                                            // tell the pod's worker that a result changed
	Kill     func(ctx context.Context, pod *corev1.Pod, containerID string, grace int64, reason string) // stop a container
}

// Manager runs one worker per running container and probe kind.
type Manager struct {
	cfg     Config
	ctx     context.Context
	mu      sync.Mutex
	workers map[workerKey]*worker
	results map[resultKey]Result // the latest settled result
	// prior results (prior.go): from the checkpoint or the pod's last
	// status, used until a fresh result of the same container settles.
	prior      map[resultKey]Result
	seeded     map[types.UID]bool // pods whose status has been read for prior results
	checkpoint string             // the checkpoint file ("" : none)
	// checkpointAt is when the loaded checkpoint was last written: a pod
	// that became Ready after it was seen ready by another agent since.
	checkpointAt time.Time
	dirty        chan struct{} // the checkpoint needs writing
	born         time.Time
}

type workerKey struct {
	containerID string
	kind        Kind
}

type resultKey = workerKey

// New returns a manager whose workers stop with ctx.
func New(ctx context.Context, cfg Config) *Manager {
	return &Manager{cfg: cfg, ctx: ctx, workers: map[workerKey]*worker{}, results: map[resultKey]Result{},
		prior: map[resultKey]Result{}, seeded: map[types.UID]bool{}, dirty: make(chan struct{}, 1), born: time.Now()}
}

func probeOf(c *corev1.Container, k Kind) *corev1.Probe {
	switch k {
	case Startup:
		return c.StartupProbe
	case Liveness:
		return c.LivenessProbe
	default:
		return c.ReadinessProbe
	}
}

// Ready reports a container's readiness: true without a readiness probe,
// else its last result (false until the first success).
func (m *Manager) Ready(c *corev1.Container, containerID string) bool {
	if c.ReadinessProbe == nil {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := resultKey{containerID, Readiness}
	r, ok := m.resultLocked(key)
	if !ok {
		// Not probed yet (startup just succeeded, say): probe now rather
		// than at the next period, as upstream does.
		if w, ok := m.workers[key]; ok {
			select {
			case w.trigger <- struct{}{}:
			default:
			}
		}
		return false
	}
	return r == Success
}

// Started reports whether the startup probe (if any) has succeeded.
func (m *Manager) Started(c *corev1.Container, containerID string) bool {
	if c.StartupProbe == nil {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.resultLocked(resultKey{containerID, Startup})
	return ok && r == Success
}

// Sync starts workers for the running containers of the pod that have
// probes, and stops workers of containers that no longer run.
func (m *Manager) Sync(pod *corev1.Pod, podIP string, running map[string]RunningContainer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wanted := map[workerKey]bool{}
	for _, rc := range running {
		for _, k := range []Kind{Startup, Liveness, Readiness} {
			if probeOf(rc.Spec, k) == nil {
				continue
			}
			key := workerKey{rc.ID, k}
			wanted[key] = true
			if _, ok := m.workers[key]; ok {
				continue
			}
			w := &worker{m: m, kind: k, pod: pod, c: rc.Spec, id: rc.ID, podIP: podIP, started: rc.StartedAt,
				stop: make(chan struct{}), trigger: make(chan struct{}, 1)}
			m.workers[key] = w
			go w.run()
		}
	}
	for key, w := range m.workers {
		if w.pod.UID == pod.UID && !wanted[key] {
			close(w.stop)
			delete(m.workers, key)
			delete(m.results, key)
			delete(m.prior, key)
			m.markDirty()
		}
	}
}

// RunningContainer is a running container with a probe candidate spec.
type RunningContainer struct {
	Spec      *corev1.Container
	ID        string
	StartedAt time.Time
}

// RemovePod stops every worker of a pod and drops its probe series, as
// upstream's prober workers delete theirs when they stop: /metrics/probes
// would otherwise keep every pod the node ever probed.
func (m *Manager) RemovePod(pod *corev1.Pod) {
	m.Sync(&corev1.Pod{ObjectMeta: podMeta(pod.UID)}, "", nil)
	m.mu.Lock()
	delete(m.seeded, pod.UID)
	m.mu.Unlock()
	if ProbeTotal.IsCreated() {
		ProbeTotal.CounterVec.DeletePartialMatch(map[string]string{"pod_uid": string(pod.UID)})
	}
	if ProbeDuration.IsCreated() && pod.Name != "" {
		ProbeDuration.HistogramVec.DeletePartialMatch(map[string]string{"pod": pod.Name, "namespace": pod.Namespace})
	}
}

// worker probes one container with one kind of probe.
type worker struct {
	m       *Manager
	kind    Kind
	pod     *corev1.Pod
	c       *corev1.Container
	id      string
	podIP   string
	started time.Time
	stop    chan struct{}
	trigger chan struct{} // run now
	success int           // consecutive
	failure int           // consecutive
}

func (w *worker) run() {
	p := probeOf(w.c, w.kind)
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	delay := max(time.Until(w.started.Add(time.Duration(p.InitialDelaySeconds)*time.Second)), restartJitter(w.m.born, period))
	select {
	case <-w.stop:
		return
	case <-w.m.ctx.Done():
		return
	case <-time.After(max(delay, 0)):
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if !w.probeOnce(p) {
			return
		}
		select {
		case <-w.stop:
			return
		case <-w.m.ctx.Done():
			return
		case <-t.C:
		case <-w.trigger:
		}
	}
}

// restartJitter is how long a worker made within a probe period of the
// agent's start waits before its first probe: a random part of the period,
// as upstream's prober does, so that the probes of every running container
// do not all hit the runtime at once when the agent restarts.
func restartJitter(born time.Time, period time.Duration) time.Duration {
	if time.Since(born) >= period || period <= 0 {
		return 0
	}
	return rand.N(period)
}

// probeOnce runs the probe and applies the thresholds. It returns false when
// the worker is done (the container was killed).
func (w *worker) probeOnce(p *corev1.Probe) bool {
	m := w.m
	if w.kind != Startup && !m.Started(w.c, w.id) {
		return true // startup gates liveness and readiness
	}
	if w.kind == Startup && m.Started(w.c, w.id) {
		return true // done: startup probes stop after their first success
	}
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	start := time.Now()
	res, out, err := Run(m.ctx, m.cfg.Exec, p.ProbeHandler, Target{Pod: w.pod, Container: w.c, ContainerID: w.id, PodIP: w.podIP}, timeout)
	if err != nil {
		klog.FromContext(m.ctx).V(3).Info("Probe errored", "probe", w.kind, "pod", klog.KObj(w.pod), "container", w.c.Name, "err", err)
		res = Failure
		out = err.Error()
	}
	select {
	case <-w.stop:
		return false // stopped while it probed: its container or pod is gone, and so are its series
	default:
	}
	if res == Warning {
		if m.cfg.Recorder != nil {
			m.cfg.Recorder.Event(w.pod, corev1.EventTypeWarning, "ProbeWarning", fmt.Sprintf("%s probe warning: %s", w.kind, out))
		}
		res = Success
	}
	ProbeTotal.WithLabelValues(string(w.kind), resultLabel(res), w.c.Name, w.pod.Name, w.pod.Namespace, string(w.pod.UID)).Inc()
	if res != Failure {
		ProbeDuration.WithLabelValues(string(w.kind), w.c.Name, w.pod.Name, w.pod.Namespace).Observe(time.Since(start).Seconds())
	}
	if res == Success {
		w.success, w.failure = w.success+1, 0
	} else {
		w.failure, w.success = w.failure+1, 0
		if m.cfg.Recorder != nil {
			m.cfg.Recorder.Event(w.pod, corev1.EventTypeWarning, "Unhealthy", fmt.Sprintf("%s probe failed: %s", w.kind, out))
		}
	}
	succ, fail := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 1)
	switch {
	case w.success >= int(succ):
		w.settle(Success)
	case w.failure >= int(fail):
		w.settle(Failure)
		if w.kind != Readiness {
			w.kill(p)
			return false
		}
	}
	return true
}

// settle records a settled result and wakes the pod's worker on a change.
func (w *worker) settle(r Result) {
	m := w.m
	key := resultKey{w.id, w.kind}
	m.mu.Lock()
	if m.workers[workerKey{w.id, w.kind}] != w {
		// Stopped while it probed: its container or pod is gone, and a
		// result kept now would never be removed.
		m.mu.Unlock()
		return
	}
	old, had := m.resultLocked(key)
	_, settled := m.results[key]
	m.results[key] = r
	delete(m.prior, key)
	m.mu.Unlock()
	if !settled || old != r {
		m.markDirty()
	}
	if (!had || old != r) && m.cfg.Wake != nil {
		m.cfg.Wake(w.pod.UID)
	}
}

func (w *worker) kill(p *corev1.Probe) {
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if w.pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *w.pod.Spec.TerminationGracePeriodSeconds
	}
	if p.TerminationGracePeriodSeconds != nil {
		grace = *p.TerminationGracePeriodSeconds
	}
	reason := fmt.Sprintf("Container %s failed %s probe, will be restarted", w.c.Name, lower(w.kind))
	if m := w.m; m.cfg.Kill != nil {
		m.cfg.Kill(m.ctx, w.pod, w.id, grace, reason)
	}
}

func podMeta(uid types.UID) metav1.ObjectMeta { return metav1.ObjectMeta{UID: uid} }

func lower(k Kind) string {
	switch k {
	case Startup:
		return "startup"
	case Liveness:
		return "liveness"
	}
	return "readiness"
}

func resultLabel(r Result) string {
	switch r {
	case Success:
		return "successful"
	case Failure:
		return "failed"
	}
	return "unknown"
}
