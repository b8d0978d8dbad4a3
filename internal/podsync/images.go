package podsync

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/internal/pullrecords"
)

// ImagePuller applies pull policies and pulls images through CRI, with
// upstream's reasons (ErrImagePull, ImagePullBackOff, ErrImageNeverPull) and
// events (Pulling, Pulled with the duration, Failed, BackOff).
type ImagePuller struct {
	// Records, when set (KubeletEnsureSecretPulledImages), records each pull
	// and decides whether a pod may use an image already on the node.
	Records   *pullrecords.Manager
	images    internalapi.ImageManagerService
	backoff   *Backoff
	recorder  record.EventRecorder
	serial    sync.Mutex    // held for each pull when pulls are serialized
	serialize bool          // serializeImagePulls
	parallel  chan struct{} // maxParallelImagePulls tokens (nil: unbounded)
	limiter   flowcontrol.RateLimiter
}

// LimitPulls rate-limits the runtime's image pulls as upstream's
// registryPullQPS and registryBurst: a pull beyond the rate fails at once
// with "pull QPS exceeded" (and backs off); qps 0 means no limit.
func (p *ImagePuller) LimitPulls(qps float32, burst int) {
	if qps > 0 {
		p.limiter = flowcontrol.NewTokenBucketRateLimiter(qps, burst)
	}
}

func (p *ImagePuller) pullImage(ctx context.Context, spec *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig) (string, error) {
	if p.limiter != nil && !p.limiter.TryAccept() {
		return "", errors.New("pull QPS exceeded")
	}
	return p.images.PullImage(ctx, spec, auth, nil)
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
func (p *ImagePuller) Ensure(ctx context.Context, pod *corev1.Pod, c *corev1.Container, auth func() []PullCredential) (string, *runtimeapi.Image, error) {
	return p.EnsureImage(ctx, pod, c.Image, c.ImagePullPolicy, auth)
}

// EnsureImage makes image present per policy ("" defaults as the apiserver
// does: Always for :latest or no tag, else IfNotPresent): a container's
// image, or an image volume's. With Records set, an image on the node is used
// without a pull only if the pod could have pulled it (KEP-2535): otherwise
// it is pulled with the pod's own credentials.
func (p *ImagePuller) EnsureImage(ctx context.Context, pod *corev1.Pod, image string, policy corev1.PullPolicy, auth func() []PullCredential) (string, *runtimeapi.Image, error) {
	c := &corev1.Container{Image: image}
	var creds []PullCredential
	looked := false
	lookup := func() []PullCredential {
		if !looked && auth != nil {
			creds, looked = auth(), true
		}
		return creds
	}
	spec := &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: c.Image}
	if policy == "" {
		policy = corev1.PullIfNotPresent
		if !strings.Contains(lastSegment(c.Image), ":") || strings.HasSuffix(c.Image, ":latest") {
			policy = corev1.PullAlways
		}
	}
	if policy != corev1.PullAlways {
		st, err := p.images.ImageStatus(ctx, spec, false)
		present := err == nil && st.GetImage() != nil
		if present && p.Records == nil {
			if policy == corev1.PullIfNotPresent {
				p.event(pod, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Container image %q already present on machine", c.Image))
			}
			return st.Image.Id, st.Image, nil
		}
		if present && !p.Records.MustPull(ctx, c.Image, st.Image.Id, func() []pullrecords.Secret { return podSecrets(lookup()) }) {
			if policy == corev1.PullIfNotPresent {
				p.event(pod, corev1.EventTypeNormal, "Pulled",
					fmt.Sprintf("Container image %q already present on machine and can be accessed by the pod", c.Image))
			}
			return st.Image.Id, st.Image, nil
		}
		// Not present, or present but this pod has not shown it may use it.
		if policy == corev1.PullNever {
			msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
			p.event(pod, corev1.EventTypeWarning, "ErrImageNeverPull", msg)
			return "", nil, &ImageError{Reason: "ErrImageNeverPull", Msg: msg}
		}
	}
	key := string(pod.UID) + "/" + c.Image
	if p.backoff.InBackOffSinceUpdate(key) {
		msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
		p.event(pod, corev1.EventTypeNormal, "BackOff", msg)
		return "", nil, &ImageError{Reason: "ImagePullBackOff", Msg: msg}
	}
	return p.pull(ctx, pod, spec, lookup(), key)
}

// podSecrets is the pull secrets behind a pod's credentials.
func podSecrets(creds []PullCredential) []pullrecords.Secret {
	var out []pullrecords.Secret
	for _, c := range creds {
		if c.Secret != nil {
			out = append(out, *c.Secret)
		}
	}
	return out
}

func (p *ImagePuller) pull(ctx context.Context, pod *corev1.Pod, spec *runtimeapi.ImageSpec, auth []PullCredential, key string) (ref string, img *runtimeapi.Image, err error) {
	if p.serialize {
		p.serial.Lock()
		defer p.serial.Unlock()
	} else if p.parallel != nil {
		p.parallel <- struct{}{}
		defer func() { <-p.parallel }()
	}
	if err := p.Records.RecordPullIntent(spec.Image); err != nil {
		msg := fmt.Sprintf("Failed to record image pull intent for container image %q: %v", spec.Image, err)
		return "", nil, &ImageError{Reason: "ErrImagePull", Msg: msg}
	}
	var used *pullrecords.Secret
	defer func() {
		if err == nil {
			p.Records.RecordPulled(ctx, spec.Image, ref, used)
		} else {
			p.Records.RecordPullFailed(ctx, spec.Image)
		}
	}()
	p.event(pod, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", spec.Image))
	start := time.Now()
	// Each credential that applies in turn, as upstream (no anonymous try
	// after them: a wrong secret fails the pull); anonymous when none applies.
	if len(auth) == 0 {
		auth = []PullCredential{{}}
	}
	var errs []error
	for _, c := range auth {
		if ref, err = p.pullImage(ctx, spec, c.Auth); err == nil {
			used = c.Secret
			break
		}
		errs = append(errs, err)
	}
	if err != nil {
		err = utilerrors.NewAggregate(errs)
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
