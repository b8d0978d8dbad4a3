package podsync

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"

	"github.com/bosun-dev/bosun/internal/pullrecords"
)

// privateRegistry is the fake runtime's image service, whose registry
// serves registry.example/private/* only to alice.
type privateRegistry struct {
	*critest.FakeImageService
	pulls []string // the user of each pull ("" for anonymous)
}

func (r *privateRegistry) PullImage(ctx context.Context, image *runtimeapi.ImageSpec, auth *runtimeapi.AuthConfig, sb *runtimeapi.PodSandboxConfig) (string, error) {
	user := auth.GetUsername()
	r.pulls = append(r.pulls, user)
	if strings.HasPrefix(image.Image, "registry.example/private/") && user != "alice" {
		return "", errors.New("pull access denied: unauthorized")
	}
	return r.FakeImageService.PullImage(ctx, image, auth, sb)
}

func TestImageOnTheNodeNeedsThePodsOwnCredentials(t *testing.T) {
	ctx := context.Background()
	reg := &privateRegistry{FakeImageService: critest.NewFakeImageService()}
	rec := record.NewFakeRecorder(50)
	p := NewImagePuller(reg, rec, false, 0)
	policy, err := pullrecords.NewPolicy("NeverVerifyPreloadedImages", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Records, err = pullrecords.New(ctx, t.TempDir(), policy, reg); err != nil {
		t.Fatal(err)
	}
	const image = "registry.example/private/app:1.0"
	alice := []PullCredential{{Auth: &runtimeapi.AuthConfig{Username: "alice", Password: "pw"},
		Secret: &pullrecords.Secret{UID: "u1", Namespace: "team-a", Name: "pull", CredentialHash: pullrecords.CredentialHash("alice", "pw", "")}}}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)}}
	}

	// team-a pulls it with its secret.
	if _, _, err := p.EnsureImage(ctx, pod("a"), image, corev1.PullIfNotPresent, func() []PullCredential { return alice }); err != nil {
		t.Fatalf("pull with the right secret: %v", err)
	}
	// Another pod without credentials: the image is on the node, but it must
	// pull, and the registry refuses it.
	_, _, err = p.EnsureImage(ctx, pod("thief"), image, corev1.PullIfNotPresent, nil)
	var ie *ImageError
	if !errors.As(err, &ie) || ie.Reason != "ErrImagePull" {
		t.Fatalf("a pod without the secret used the image: %v", err)
	}
	if got := reg.pulls[len(reg.pulls)-1]; got != "" {
		t.Errorf("the check pulled as %q, want anonymous", got)
	}
	// With pull policy Never it is refused at once, as upstream does.
	_, _, err = p.EnsureImage(ctx, pod("never"), image, corev1.PullNever, nil)
	if !errors.As(err, &ie) || ie.Reason != "ErrImageNeverPull" {
		t.Fatalf("pull policy Never: %v", err)
	}
	// A second pod with the same secret uses the image without a pull.
	n := len(reg.pulls)
	if _, _, err := p.EnsureImage(ctx, pod("a2"), image, corev1.PullIfNotPresent, func() []PullCredential { return alice }); err != nil {
		t.Fatal(err)
	}
	if len(reg.pulls) != n {
		t.Error("the same secret pulled again")
	}
	found := false
	for len(rec.Events) > 0 {
		if ev := <-rec.Events; strings.Contains(ev, "already present on machine and can be accessed by the pod") {
			found = true
		}
	}
	if !found {
		t.Error(`no "already present on machine and can be accessed by the pod" event`)
	}
	// A public image pulled anonymously is every pod's.
	if _, _, err := p.EnsureImage(ctx, pod("b"), "registry.example/public/tool:1", corev1.PullIfNotPresent, nil); err != nil {
		t.Fatal(err)
	}
	n = len(reg.pulls)
	if _, _, err := p.EnsureImage(ctx, pod("c"), "registry.example/public/tool:1", corev1.PullIfNotPresent, nil); err != nil || len(reg.pulls) != n {
		t.Errorf("a public image was checked again (err %v)", err)
	}
}

// A failed pull is retried once its back-off has passed (10 s, then 20 s...),
// counted from the failure, not from each look.
func TestFailedPullIsRetriedAfterItsBackoff(t *testing.T) {
	ctx := context.Background()
	reg := &privateRegistry{FakeImageService: critest.NewFakeImageService()}
	p := NewImagePuller(reg, nil, false, 0)
	now := time.Unix(1000, 0)
	p.backoff.Now = func() time.Time { return now }
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}}
	const image = "registry.example/private/app:1.0"
	pull := func() string {
		_, _, err := p.EnsureImage(ctx, pod, image, corev1.PullIfNotPresent, nil)
		var ie *ImageError
		if !errors.As(err, &ie) {
			t.Fatalf("error %v", err)
		}
		return ie.Reason
	}
	if r := pull(); r != "ErrImagePull" {
		t.Fatalf("first try: %s", r)
	}
	now = now.Add(5 * time.Second)
	if r := pull(); r != "ImagePullBackOff" || len(reg.pulls) != 1 {
		t.Fatalf("within the back-off: %s after %d pulls", r, len(reg.pulls))
	}
	now = now.Add(6 * time.Second)
	if r := pull(); r != "ErrImagePull" || len(reg.pulls) != 2 {
		t.Fatalf("after the back-off: %s after %d pulls, want a new pull", r, len(reg.pulls))
	}
	now = now.Add(15 * time.Second) // the second back-off is 20 s
	if r := pull(); r != "ImagePullBackOff" {
		t.Fatalf("within the doubled back-off: %s", r)
	}
}

// registryPullQPS and registryBurst: pulls beyond the burst fail at once with
// upstream's "pull QPS exceeded", without reaching the runtime.
func TestPullRateLimit(t *testing.T) {
	ctx := context.Background()
	reg := &privateRegistry{FakeImageService: critest.NewFakeImageService()}
	p := NewImagePuller(reg, nil, false, 0)
	p.LimitPulls(0.001, 2)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}}
	for i, image := range []string{"registry.example/a:1", "registry.example/b:1"} {
		if _, _, err := p.EnsureImage(ctx, pod, image, corev1.PullAlways, nil); err != nil {
			t.Fatalf("pull %d within the burst: %v", i+1, err)
		}
	}
	_, _, err := p.EnsureImage(ctx, pod, "registry.example/c:1", corev1.PullAlways, nil)
	var ie *ImageError
	if !errors.As(err, &ie) || ie.Reason != "ErrImagePull" || !strings.Contains(ie.Msg, "pull QPS exceeded") {
		t.Errorf("a pull beyond the burst: %v, want ErrImagePull with pull QPS exceeded", err)
	}
	if len(reg.pulls) != 2 {
		t.Errorf("the runtime saw %d pulls, want 2", len(reg.pulls))
	}
}
