package podsync

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImagePuller applies pull policies and pulls images through CRI, with
// upstream's reasons (ErrImagePull, ImagePullBackOff, ErrImageNeverPull) and
// events (Pulling, Pulled with the duration, Failed, BackOff).
type ImagePuller struct {
	images    internalapi.ImageManagerService
	backoff   *Backoff
	recorder  record.EventRecorder
	serial    sync.Mutex    // held for each pull when pulls are serialized
	serialize bool          // serializeImagePulls
	parallel  chan struct{} // maxParallelImagePulls tokens (nil: unbounded)
}

// NewImagePuller returns a puller; maxParallel 0 means unbounded.
func NewImagePuller(images internalapi.ImageManagerService, recorder record.EventRecorder, serialize bool, maxParallel int32) *ImagePuller {
	p := &ImagePuller{images: images, backoff: NewBackoff(), recorder: recorder, serialize: serialize}
	if maxParallel > 0 {
		p.parallel = make(chan struct{}, maxParallel)
	}
	return p
}

// ImageError is a failed or refused pull: the container waits with Reason.
type ImageError struct{ Reason, Msg string }

func (e *ImageError) Error() string { return e.Msg }

// Ensure makes the container's image present per its pull policy and returns
// the image reference to create the container with, and the image's user.
// auth is asked for the registry credentials only when a pull happens.
func (p *ImagePuller) Ensure(ctx context.Context, pod *corev1.Pod, c *corev1.Container, auth func() []*runtimeapi.AuthConfig) (string, *runtimeapi.Image, error) {
	return p.EnsureImage(ctx, pod, c.Image, c.ImagePullPolicy, auth)
}

// EnsureImage makes image present per policy ("" defaults as the apiserver
// does: Always for :latest or no tag, else IfNotPresent): a container's
// image, or an image volume's.
func (p *ImagePuller) EnsureImage(ctx context.Context, pod *corev1.Pod, image string, policy corev1.PullPolicy, auth func() []*runtimeapi.AuthConfig) (string, *runtimeapi.Image, error) {
	c := &corev1.Container{Image: image}
	spec := &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: c.Image}
	if policy == "" {
		policy = corev1.PullIfNotPresent
		if !strings.Contains(lastSegment(c.Image), ":") || strings.HasSuffix(c.Image, ":latest") {
			policy = corev1.PullAlways
		}
	}
	if policy != corev1.PullAlways {
		if st, err := p.images.ImageStatus(ctx, spec, false); err == nil && st.GetImage() != nil {
			if policy == corev1.PullIfNotPresent {
				p.event(pod, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Container image %q already present on machine", c.Image))
			}
			return st.Image.Id, st.Image, nil
		}
		if policy == corev1.PullNever {
			msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
			p.event(pod, corev1.EventTypeWarning, "ErrImageNeverPull", msg)
			return "", nil, &ImageError{Reason: "ErrImageNeverPull", Msg: msg}
		}
	}
	key := string(pod.UID) + "/" + c.Image
	if p.backoff.InBackOffSince(key, p.backoff.Now()) {
		msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
		p.event(pod, corev1.EventTypeNormal, "BackOff", msg)
		return "", nil, &ImageError{Reason: "ImagePullBackOff", Msg: msg}
	}
	var creds []*runtimeapi.AuthConfig
	if auth != nil {
		creds = auth()
	}
	return p.pull(ctx, pod, spec, creds, key)
}

func (p *ImagePuller) pull(ctx context.Context, pod *corev1.Pod, spec *runtimeapi.ImageSpec, auth []*runtimeapi.AuthConfig, key string) (string, *runtimeapi.Image, error) {
	if p.serialize {
		p.serial.Lock()
		defer p.serial.Unlock()
	} else if p.parallel != nil {
		p.parallel <- struct{}{}
		defer func() { <-p.parallel }()
	}
	p.event(pod, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", spec.Image))
	start := time.Now()
	var ref string
	var err error
	for _, a := range append(auth, nil) { // each credential in turn, then anonymous
		if ref, err = p.images.PullImage(ctx, spec, a, nil); err == nil {
			break
		}
	}
	if err != nil {
		p.backoff.Next(key)
		msg := fmt.Sprintf("Failed to pull image %q: %v", spec.Image, err)
		p.event(pod, corev1.EventTypeWarning, "Failed", msg)
		return "", nil, &ImageError{Reason: "ErrImagePull", Msg: msg}
	}
	p.backoff.Forget(key)
	p.event(pod, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Successfully pulled image %q in %s", spec.Image, time.Since(start).Round(time.Millisecond)))
	st, err := p.images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
	if err != nil || st.GetImage() == nil {
		return ref, nil, nil
	}
	return ref, st.Image, nil
}

func (p *ImagePuller) event(pod *corev1.Pod, kind, reason, msg string) {
	if p.recorder != nil {
		p.recorder.Event(pod, kind, reason, msg)
	}
}

// lastSegment is the part of an image name after its last slash.
func lastSegment(image string) string {
	if i := strings.LastIndexByte(image, '/'); i >= 0 {
		return image[i+1:]
	}
	return image
}
