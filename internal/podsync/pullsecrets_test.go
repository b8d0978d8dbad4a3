package podsync

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/bosun-dev/bosun/internal/pullrecords"
)

func dockerConfigJSON(name, body string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(body)}}
}

func TestImageLocation(t *testing.T) {
	for image, want := range map[string]string{
		"busybox":                             "docker.io library/busybox",
		"busybox:1.36":                        "docker.io library/busybox",
		"team/app@sha256:abc":                 "docker.io team/app",
		"registry.k8s.io/pause:3.10":          "registry.k8s.io pause",
		"127.0.0.1:5001/private/busybox:1.37": "127.0.0.1:5001 private/busybox",
		"localhost/app":                       "localhost app",
		"index.docker.io/library/nginx":       "docker.io library/nginx",
	} {
		h, r := imageLocation(image)
		if got := h + " " + r; got != want {
			t.Errorf("imageLocation(%q) = %q, want %q", image, got, want)
		}
	}
}

func TestMatchingAuth(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	sec := dockerConfigJSON("pull", `{"auths": {
		"https://index.docker.io/v1/": {"username": "hub", "password": "hubpw"},
		"*.example.com": {"auth": "`+auth+`"},
		"registry.example.com/team": {"username": "team", "password": "teampw"},
		"127.0.0.1:5001": {"username": "local", "password": "localpw"}}}`)
	entries, err := parsePullSecret(sec)
	if err != nil {
		t.Fatal(err)
	}
	users := func(image string) string {
		var u []string
		for _, a := range matchingAuth(entries, image) {
			u = append(u, a.Auth.Username+":"+a.Auth.Password)
		}
		return strings.Join(u, ",")
	}
	for image, want := range map[string]string{
		"nginx:1.27":                            "hub:hubpw",
		"registry.example.com/team/app:1":       "team:teampw,alice:s3cret",
		"registry.example.com/other/app:1":      "alice:s3cret",
		"registry.example.com/teamster/app:1":   "alice:s3cret",
		"a.b.example.com/app":                   "",
		"example.com/app":                       "",
		"127.0.0.1:5001/private/busybox:1.37.0": "local:localpw",
		"127.0.0.1:5000/private/busybox:1.37.0": "",
		"registry.k8s.io/pause:3.10":            "",
	} {
		if got := users(image); got != want {
			t.Errorf("%s: credentials %q, want %q", image, got, want)
		}
	}
}

func TestParsePullSecretErrorsNameTheSecret(t *testing.T) {
	for _, s := range []*corev1.Secret{
		dockerConfigJSON("broken", `{"auths": `),
		dockerConfigJSON("badauth", `{"auths": {"r.io": {"auth": "!!"}}}`),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "opaque"}, Type: corev1.SecretTypeOpaque},
	} {
		_, err := parsePullSecret(s)
		if err == nil || !strings.Contains(err.Error(), "ns/"+s.Name) {
			t.Errorf("secret %s: error %v, want one naming it", s.Name, err)
		}
		if err != nil && strings.Contains(err.Error(), "!!") {
			t.Errorf("the error shows secret content: %v", err)
		}
	}
	legacy := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "old"}, Type: corev1.SecretTypeDockercfg,
		Data: map[string][]byte{corev1.DockerConfigKey: []byte(`{"r.io": {"username": "u", "password": "p"}}`)}}
	if e, err := parsePullSecret(legacy); err != nil || len(e) != 1 || e[0].host != "r.io" || e[0].auth.Password != "p" {
		t.Errorf(".dockercfg: %+v %v", e, err)
	}
}

func TestPullAuthSkipsMissingSecretsWithAnEvent(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	s := &Syncer{cfg: SyncerConfig{Recorder: rec, Objects: &fakeObjects{secrets: map[string]*corev1.Secret{
		"ns/pull": dockerConfigJSON("pull", `{"auths": {"r.io": {"username": "u", "password": "p"}}}`),
	}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: corev1.PodSpec{
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "gone"}, {Name: "pull"}}}}
	got := s.pullAuth(context.Background(), pod, "r.io/app:1")
	if len(got) != 1 || got[0].Auth.Username != "u" || got[0].Auth.ServerAddress != "" ||
		got[0].Secret == nil || got[0].Secret.Namespace != "ns" || got[0].Secret.Name != "pull" ||
		got[0].Secret.CredentialHash != pullrecords.CredentialHash("u", "p", "") {
		t.Fatalf("credentials %+v", got)
	}
	select {
	case ev := <-rec.Events:
		if !strings.Contains(ev, "FailedToRetrieveImagePullSecret") || !strings.Contains(ev, "gone") {
			t.Errorf("event %q", ev)
		}
	default:
		t.Error("no event for the missing secret")
	}
}
