package podsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"
)

// Annotations of static and mirror pods, as upstream names them.
const (
	AnnotationConfigSource = "kubernetes.io/config.source" // file or http
	AnnotationConfigHash   = "kubernetes.io/config.hash"   // the static pod's UID
	AnnotationConfigSeen   = "kubernetes.io/config.seen"
	AnnotationConfigMirror = "kubernetes.io/config.mirror" // on the mirror pod: the static pod's hash
)

// IsMirror reports whether a pod from the apiserver mirrors a static pod.
func IsMirror(pod *corev1.Pod) bool {
	_, ok := pod.Annotations[AnnotationConfigMirror]
	return ok
}

// IsStatic reports whether a pod comes from a file or URL.
func IsStatic(pod *corev1.Pod) bool {
	src := pod.Annotations[AnnotationConfigSource]
	return src == "file" || src == "http"
}

// Static reads static pods from staticPodPath (files, YAML or JSON) and
// staticPodURL, delivers them to a handler, and keeps a mirror pod for each
// in the apiserver.
type Static struct {
	polled   atomic.Bool          // the sources were read once
	Dir      string               // staticPodPath ("" disables)
	URL      string               // staticPodURL ("" disables)
	Every    time.Duration        // fileCheckFrequency
	URLEvery time.Duration        // httpCheckFrequency (0: Every)
	Header   http.Header          // staticPodURLHeader: sent with each read of URL
	NodeName string               // the node's name
	Client   kubernetes.Interface // for mirror pods
	Pods     corelisters.PodLister
	NodeUID  func() types.UID // the Node's UID, owner of mirror pods
	// Adopt finds a pod already running from this manifest (started by
	// an earlier agent) and returns its UID, or "" (nil: never adopt).
	// modTime is the manifest's modification time.
	Adopt func(ctx context.Context, pod *corev1.Pod, modTime time.Time) types.UID
	// APIReady reports whether the apiserver's pods (Pods) are listed;
	// mirror pods are created and deleted only then (nil: always).
	APIReady func() bool
	mu       sync.Mutex
	aliases  map[types.UID]types.UID   // computed UID -> adopted UID ("" : none)
	current  map[types.UID]*corev1.Pod // static pods by UID
	byPath   map[string]*corev1.Pod    // the pod read from each file
}

// Run reads the sources until ctx ends: every Every, and, as upstream's
// file source does, at once when a file in staticPodPath is created,
// written, moved or removed (inotify).
func (s *Static) Run(ctx context.Context, h Handler) {
	s.current = map[types.UID]*corev1.Pod{}
	t := time.NewTicker(s.Every)
	defer t.Stop()
	// The URL is read on its own period, as upstream's http source.
	var urlTick <-chan time.Time
	if s.URL != "" {
		every := s.URLEvery
		if every <= 0 {
			every = s.Every
		}
		tu := time.NewTicker(every)
		defer tu.Stop()
		urlTick = tu.C
	}
	changed := make(chan struct{}, 1)
	var w *dirWatch
	defer func() { w.close() }()
	event, readURL := false, true
	for {
		if w == nil && s.Dir != "" {
			w = watchDir(ctx, s.Dir, changed)
		}
		s.poll(ctx, h, event, readURL)
		s.polled.Store(true)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			event, readURL = false, false
		case <-urlTick:
			event, readURL = false, true
		case <-changed:
			event, readURL = true, false
		}
	}
}

// dirWatch tells of changes in one folder.
type dirWatch struct{ w *fsnotify.Watcher }

// watchDir watches dir and kicks changed (without blocking) on each event;
// nil when dir cannot be watched (not there yet: the next round tries again).
func watchDir(ctx context.Context, dir string, changed chan<- struct{}) *dirWatch {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		klog.FromContext(ctx).Error(err, "Unable to watch the static pod path; reading it every fileCheckFrequency only", "path", dir)
		return nil
	}
	if err := w.Add(dir); err != nil {
		_ = w.Close()
		return nil
	}
	go func() {
		for {
			select {
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return &dirWatch{w: w}
}

func (d *dirWatch) close() {
	if d != nil {
		_ = d.w.Close()
	}
}

// poll reads the sources and hands the handler the static pods. After a file
// event (event), a file that does not decode keeps the pod read from it
// before, as upstream's watch does (an editor may be half-way through
// writing it); the periodic read drops it.
func (s *Static) poll(ctx context.Context, h Handler, event, readURL bool) {
	logger := klog.FromContext(ctx)
	found := map[types.UID]*corev1.Pod{}
	if s.Dir != "" {
		pods, err := s.readDir(ctx, event)
		if err != nil {
			// The folder is there but cannot be read now: keep the pods
			// read from it before rather than stop them all.
			logger.Error(err, "Unable to read static pod path; keeping the static pods read before", "path", s.Dir)
			for uid, p := range s.current {
				if p.Annotations[AnnotationConfigSource] == "file" {
					found[uid] = p
				}
			}
		}
		for _, p := range pods {
			found[p.UID] = p
		}
	}
	if s.URL != "" {
		var pods []*corev1.Pod
		err := errKeepURLPods
		if readURL {
			pods, err = s.readURL(ctx)
		}
		if err != nil {
			if err != errKeepURLPods {
				logger.Error(err, "Failed to read static pods from URL; keeping the previous ones", "url", s.URL)
			}
			for uid, p := range s.current {
				if p.Annotations[AnnotationConfigSource] == "http" {
					found[uid] = p
				}
			}
		}
		for _, p := range pods {
			found[p.UID] = p
		}
	}
	s.mu.Lock()
	old := s.current
	s.current = found
	s.mu.Unlock()
	for uid, p := range old {
		if _, ok := found[uid]; !ok {
			logger.Info("Static pod removed", "pod", klog.KObj(p), "podUID", uid)
			h.Delete(p)
			s.deleteMirror(ctx, p)
		}
	}
	for _, p := range found {
		h.Update(p)
		s.ensureMirror(ctx, p)
	}
	s.deleteOrphanedMirrors(ctx, found)
}

// deleteOrphanedMirrors deletes the mirror pods on this node whose static
// pod is gone (its manifest removed while no agent ran, or by another
// agent), as upstream's pod cleanup does; left alone, a mirror pod being
// deleted would wait forever for a node agent to confirm it.
func (s *Static) deleteOrphanedMirrors(ctx context.Context, found map[types.UID]*corev1.Pod) {
	if s.Client == nil || s.Pods == nil || (s.APIReady != nil && !s.APIReady()) {
		return
	}
	all, err := s.Pods.List(labels.Everything())
	if err != nil {
		return
	}
	for _, m := range all {
		if !IsMirror(m) || m.Spec.NodeName != s.NodeName {
			continue
		}
		if _, ok := found[types.UID(m.Annotations[AnnotationConfigMirror])]; ok {
			continue
		}
		klog.FromContext(ctx).Info("Deleting a mirror pod whose static pod is gone", "pod", klog.KObj(m))
		s.deleteMirror(ctx, m)
	}
}

// readDir reads every pod file: regular files (or links to them) whose
// names do not start with a dot; anything else (a FIFO, a device, a socket)
// is skipped without opening it. A bad file is logged with its path and
// skipped; a file that cannot be read now keeps the pod read from it
// before. A missing folder is no pods; a folder that cannot be read is an
// error, and the caller keeps what it had.
func (s *Static) readDir(ctx context.Context, keepUndecodable bool) ([]*corev1.Pod, error) {
	logger := klog.FromContext(ctx)
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	previous := s.byPath
	s.mu.Unlock()
	byPath := map[string]*corev1.Pod{}
	var out []*corev1.Pod
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(s.Dir, e.Name())
		data, modTime, err := readRegular(path)
		if errors.Is(err, errNotRegular) {
			if e.Type()&os.ModeDir == 0 {
				logger.V(2).Info("Skipping a static pod path entry that is not a regular file", "path", path)
			}
			continue
		}
		if err != nil {
			logger.Error(err, "Unable to read static pod file", "path", path)
			if p, ok := previous[path]; ok {
				byPath[path] = p
				out = append(out, p)
			}
			continue
		}
		pod, err := DecodeStatic(data, path, s.NodeName, "file")
		if err != nil {
			if p, ok := previous[path]; ok && keepUndecodable {
				logger.Info("A static pod file changed and does not decode now; keeping its pod until the next periodic read", "path", path, "err", err)
				byPath[path] = p
				out = append(out, p)
				continue
			}
			logger.Error(err, "Skipping a static pod file that is not a valid pod", "path", path)
			continue
		}
		s.adopt(ctx, pod, modTime)
		byPath[path] = pod
		out = append(out, pod)
	}
	s.mu.Lock()
	s.byPath = byPath
	s.mu.Unlock()
	return out, nil
}

var errNotRegular = errors.New("not a regular file")

// maxManifestSize bounds what is read of one manifest.
const maxManifestSize = 10 << 20

// readRegular reads a regular file. It opens without blocking (a FIFO put
// there, or swapped in after a check, must not hang the source) and checks
// the opened file, not the name.
func readRegular(path string) ([]byte, time.Time, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	if !st.Mode().IsRegular() {
		return nil, time.Time{}, errNotRegular
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, time.Time{}, err
	}
	if !st.Mode().IsRegular() {
		return nil, time.Time{}, errNotRegular
	}
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(data) > maxManifestSize {
		return nil, time.Time{}, fmt.Errorf("%s is larger than %d bytes", path, maxManifestSize)
	}
	return data, st.ModTime(), nil
}

// adopt gives a static pod the UID of the pod already running from the
// same manifest, when Adopt finds one: the upstream kubelet derives static
// pod UIDs by another formula, so without this a swap would restart every
// static pod (the control plane's own, on a control-plane node). The
// choice is made once per manifest content and kept.
func (s *Static) adopt(ctx context.Context, pod *corev1.Pod, modTime time.Time) {
	s.mu.Lock()
	if s.aliases == nil {
		s.aliases = map[types.UID]types.UID{}
	}
	alias, decided := s.aliases[pod.UID]
	s.mu.Unlock()
	if !decided {
		if s.Adopt != nil {
			alias = s.Adopt(ctx, pod, modTime)
		}
		s.mu.Lock()
		s.aliases[pod.UID] = alias
		s.mu.Unlock()
		if alias != "" {
			klog.FromContext(ctx).Info("Adopting the running static pod of this manifest", "pod", klog.KObj(pod), "podUID", alias, "computedUID", pod.UID)
		}
	}
	if alias != "" {
		pod.UID = alias
		pod.Annotations[AnnotationConfigHash] = string(alias)
	}
}

// errKeepURLPods: the URL is not due for a read; its pods stay as read last.
var errKeepURLPods = errors.New("not read")

// staticURLClient fetches staticPodURL; a server that does not answer
// within 10 s is an error, and the pods read before are kept.
var staticURLClient = &http.Client{Timeout: 10 * time.Second}

func (s *Static) readURL(ctx context.Context) ([]*corev1.Pod, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range s.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := staticURLClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", s.URL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 10<<20))
	if err != nil {
		return nil, err
	}
	var list corev1.PodList
	if err := yaml.Unmarshal(data, &list); err == nil && list.Kind == "PodList" {
		var out []*corev1.Pod
		for i := range list.Items {
			item, _ := yaml.Marshal(&list.Items[i])
			p, err := DecodeStatic(item, fmt.Sprintf("%s#%d", s.URL, i), s.NodeName, "http")
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}
	p, err := DecodeStatic(data, s.URL, s.NodeName, "http")
	if err != nil {
		return nil, err
	}
	return []*corev1.Pod{p}, nil
}

// DecodeStatic turns a pod manifest into a static pod of this node: named
// <name>-<node>, bound to the node, with a UID derived from its content, the
// source and the node, and the defaults the apiserver would have applied.
func DecodeStatic(data []byte, source, nodeName, kind string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(data, pod); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		return nil, fmt.Errorf("%s: kind %q is not Pod", source, pod.Kind)
	}
	if pod.Name == "" {
		return nil, fmt.Errorf("%s: the pod has no metadata.name", source)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, fmt.Errorf("%s: the pod has no containers", source)
	}
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	if errs := validateStatic(pod); len(errs) > 0 {
		return nil, staticError(source, errs)
	}
	h := sha256.New()
	_, _ = h.Write(data)
	fmt.Fprintf(h, "|%s|%s", nodeName, source)
	hash := hex.EncodeToString(h.Sum(nil))[:32]
	pod.UID = types.UID(hash)
	pod.Name = pod.Name + "-" + strings.ToLower(nodeName)
	pod.Spec.NodeName = nodeName
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationConfigSource] = kind
	pod.Annotations[AnnotationConfigHash] = hash
	pod.Annotations[AnnotationConfigSeen] = time.Now().UTC().Format(time.RFC3339Nano)
	setPodDefaults(pod)
	return pod, nil
}

// setPodDefaults applies the apiserver's defaults to a pod that never went
// through it.
func setPodDefaults(pod *corev1.Pod) {
	spec := &pod.Spec
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if spec.DNSPolicy == "" {
		spec.DNSPolicy = corev1.DNSClusterFirst
	}
	if spec.TerminationGracePeriodSeconds == nil {
		g := int64(corev1.DefaultTerminationGracePeriodSeconds)
		spec.TerminationGracePeriodSeconds = &g
	}
	if spec.SchedulerName == "" {
		spec.SchedulerName = corev1.DefaultSchedulerName
	}
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			c := &list[i]
			if c.TerminationMessagePath == "" {
				c.TerminationMessagePath = corev1.TerminationMessagePathDefault
			}
			if c.TerminationMessagePolicy == "" {
				c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
			}
			if c.ImagePullPolicy == "" {
				c.ImagePullPolicy = corev1.PullIfNotPresent
				if name := c.Image[strings.LastIndex(c.Image, "/")+1:]; !strings.Contains(name, ":") || strings.HasSuffix(c.Image, ":latest") {
					c.ImagePullPolicy = corev1.PullAlways
				}
			}
			for j := range c.Ports {
				if c.Ports[j].Protocol == "" {
					c.Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	}
}

// Polled reports whether the static pod sources were read once: until
// then, a running static pod's sandbox is not known to be one.
func (s *Static) Polled() bool { return s.polled.Load() }

// StaticPods lists the current static pods, sorted by name.
func (s *Static) StaticPods() []*corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(s.current))
	for _, p := range s.current {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ensureMirror creates the static pod's mirror in the apiserver, or replaces
// one that mirrors an older version of it.
func (s *Static) ensureMirror(ctx context.Context, p *corev1.Pod) {
	if s.Client == nil || (s.APIReady != nil && !s.APIReady()) {
		return // until the apiserver's pods are listed, a mirror could not be told apart from none
	}
	logger := klog.FromContext(ctx)
	if cur, err := s.Pods.Pods(p.Namespace).Get(p.Name); err == nil {
		if cur.Annotations[AnnotationConfigMirror] == p.Annotations[AnnotationConfigHash] && cur.DeletionTimestamp == nil {
			return
		}
		s.deleteMirror(ctx, cur)
		return // recreated on the next poll, once the old one is gone
	}
	mirror := p.DeepCopy()
	mirror.UID, mirror.ResourceVersion = "", ""
	mirror.Annotations[AnnotationConfigMirror] = p.Annotations[AnnotationConfigHash]
	if s.NodeUID != nil {
		uid := s.NodeUID()
		if uid == "" {
			return // the node restriction admits only mirror pods the Node owns: next poll
		}
		controller := true
		mirror.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: s.NodeName, UID: uid, Controller: &controller}}
	}
	mirror.Status = corev1.PodStatus{}
	if _, err := s.Client.CoreV1().Pods(p.Namespace).Create(ctx, mirror, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		logger.Error(err, "Failed creating a mirror pod", "pod", klog.KObj(p))
	}
}

func (s *Static) deleteMirror(ctx context.Context, p *corev1.Pod) {
	if s.Client == nil || (s.APIReady != nil && !s.APIReady()) {
		return
	}
	cur, err := s.Pods.Pods(p.Namespace).Get(p.Name)
	if err != nil || !IsMirror(cur) {
		return
	}
	grace := int64(0)
	uid := cur.UID
	err = s.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Error(err, "Failed deleting a mirror pod", "pod", klog.KObj(p))
	}
}
