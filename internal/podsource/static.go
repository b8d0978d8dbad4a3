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
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	Dir      string               // staticPodPath ("" disables)
	URL      string               // staticPodURL ("" disables)
	Every    time.Duration        // fileCheckFrequency / httpCheckFrequency
	NodeName string               // the node's name
	Client   kubernetes.Interface // for mirror pods
	Pods     corelisters.PodLister
	NodeUID  func() types.UID // the Node's UID, owner of mirror pods
	mu       sync.Mutex
	current  map[types.UID]*corev1.Pod // static pods by UID
}

// Run polls the sources until ctx ends.
func (s *Static) Run(ctx context.Context, h Handler) {
	s.current = map[types.UID]*corev1.Pod{}
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		s.poll(ctx, h)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Static) poll(ctx context.Context, h Handler) {
	logger := klog.FromContext(ctx)
	found := map[types.UID]*corev1.Pod{}
	if s.Dir != "" {
		for _, p := range s.readDir(ctx) {
			found[p.UID] = p
		}
	}
	if s.URL != "" {
		pods, err := s.readURL(ctx)
		if err != nil {
			logger.Error(err, "Failed to read static pods from URL; keeping the previous ones", "url", s.URL)
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
}

// readDir reads every pod file; a bad file is logged with its path and skipped.
func (s *Static) readDir(ctx context.Context) []*corev1.Pod {
	logger := klog.FromContext(ctx)
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			logger.Error(err, "Unable to read static pod path", "path", s.Dir)
		}
		return nil
	}
	var out []*corev1.Pod
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(s.Dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			logger.Error(err, "Unable to read static pod file", "path", path)
			continue
		}
		pod, err := DecodeStatic(data, path, s.NodeName, "file")
		if err != nil {
			logger.Error(err, "Skipping a static pod file that is not a valid pod", "path", path)
			continue
		}
		out = append(out, pod)
	}
	return out
}

func (s *Static) readURL(ctx context.Context) ([]*corev1.Pod, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", s.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
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
	if s.Client == nil {
		return
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
		if uid := s.NodeUID(); uid != "" {
			controller := true // the node restriction admits only mirror pods the node controls
			mirror.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: s.NodeName, UID: uid, Controller: &controller}}
		}
	}
	mirror.Status = corev1.PodStatus{}
	if _, err := s.Client.CoreV1().Pods(p.Namespace).Create(ctx, mirror, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		logger.Error(err, "Failed creating a mirror pod", "pod", klog.KObj(p))
	}
}

func (s *Static) deleteMirror(ctx context.Context, p *corev1.Pod) {
	if s.Client == nil {
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
