package pullrecords

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type fakeImages []*runtimeapi.Image

func (f fakeImages) ListImages(context.Context, *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	return f, nil
}

func policy(t *testing.T, mode string, allow ...string) *Policy {
	t.Helper()
	p, err := NewPolicy(mode, allow)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func open(t *testing.T, root string, p *Policy, images ImageLister) *Manager {
	t.Helper()
	m, err := New(context.Background(), root, p, images)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func secrets(s ...Secret) func() []Secret { return func() []Secret { return s } }

var (
	ctx     = context.Background()
	secretA = Secret{UID: "uid-a", Namespace: "team-a", Name: "pull", CredentialHash: CredentialHash("alice", "pw", "")}
	secretB = Secret{UID: "uid-b", Namespace: "team-b", Name: "pull", CredentialHash: CredentialHash("bob", "pw", "")}
)

const (
	private = "registry.example:5000/private/app:1.0"
	ref     = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

func pull(t *testing.T, m *Manager, image, imageRef string, s *Secret) {
	t.Helper()
	if err := m.RecordPullIntent(image); err != nil {
		t.Fatal(err)
	}
	m.RecordPulled(ctx, image, imageRef, s)
}

func TestPolicyValidation(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		allow []string
		err   string
	}{
		{mode: "Sometimes", err: `option "Sometimes" specified for imagePullCredentialsVerificationPolicy`},
		{mode: "AlwaysVerify", allow: []string{"registry.example/app"}, err: "preloadedImagesVerificationAllowlist can only be set"},
		{mode: "NeverVerifyAllowlistedImages", allow: []string{" registry.example/app"}, err: "leading/trailing spaces"},
		{mode: "NeverVerifyAllowlistedImages", allow: []string{"/*"}, err: "at least registry hostname"},
		{mode: "NeverVerifyAllowlistedImages", allow: []string{"registry.example/a*"}, err: "only patterns ending with '/*'"},
		{mode: "NeverVerifyAllowlistedImages", allow: []string{"registry.example/app:1.0"}, err: "neither tag nor digest"},
		{mode: "NeverVerifyAllowlistedImages", allow: []string{"registry.example/app", "registry.example/team/*"}},
		{mode: "NeverVerify"}, {mode: "NeverVerifyPreloadedImages"}, {mode: "AlwaysVerify"},
	} {
		_, err := NewPolicy(tc.mode, tc.allow)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("NewPolicy(%q, %q) = %v, want error containing %q", tc.mode, tc.allow, err, tc.err)
		}
	}
}

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                                 "busybox",
		"busybox:1.37":                            "busybox",
		"registry.example:5000/team/app:v1.2":     "registry.example:5000/team/app",
		"registry.example:5000/team/app":          "registry.example:5000/team/app",
		"app@sha256:" + strings.Repeat("a", 64):   "app",
		"app:1@sha256:" + strings.Repeat("a", 64): "app",
		"REGISTRY.example/app:1":                  "REGISTRY.example/app",
		"registry.example/App:1":                  "",
		"app:bad tag":                             "",
		"app@sha256":                              "",
		"":                                        "",
		"registry.example//app":                   "",
		"registry.example/app:" + strings.Repeat("t", 129): "",
	} {
		got, err := Repository(in)
		if want == "" && err == nil || want != "" && (err != nil || got != want) {
			t.Errorf("Repository(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestCredentialHashIsUpstreams(t *testing.T) {
	// The upstream kubelet hashes the JSON of its AuthConfig holding only the
	// username, password and email of the secret's entry.
	sum := sha256.Sum256([]byte(`{"username":"alice","password":"pw","email":"a@example.com"}`))
	if got, want := CredentialHash("alice", "pw", "a@example.com"), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("CredentialHash = %s, want %s", got, want)
	}
	if CredentialHash("alice", "pw", "") == CredentialHash("alice", "pw2", "") {
		t.Fatal("different passwords hash the same")
	}
}

func TestPreloadedImagesNeedNoCredentials(t *testing.T) {
	m := open(t, t.TempDir(), policy(t, "NeverVerifyPreloadedImages"), nil)
	if m.MustPull(ctx, private, ref, secrets()) {
		t.Fatal("an image no agent pulled (preloaded) must be usable without credentials")
	}
	a := open(t, t.TempDir(), policy(t, "AlwaysVerify"), nil)
	if !a.MustPull(ctx, private, ref, secrets()) {
		t.Fatal("AlwaysVerify must check a preloaded image too")
	}
	n := open(t, t.TempDir(), policy(t, "NeverVerify"), nil)
	pull(t, n, private, ref, &secretA)
	if n.MustPull(ctx, private, ref, secrets()) {
		t.Fatal("NeverVerify must never check")
	}
}

func TestImagePulledWithASecretNeedsThatSecret(t *testing.T) {
	root := t.TempDir()
	m := open(t, root, policy(t, "NeverVerifyPreloadedImages"), nil)
	pull(t, m, private, ref, &secretA)
	if !m.MustPull(ctx, private, ref, secrets()) {
		t.Error("a pod without secrets may not use an image pulled with team-a's secret")
	}
	if !m.MustPull(ctx, private, ref, secrets(secretB)) {
		t.Error("a pod with another credential may not use it")
	}
	if m.MustPull(ctx, private, ref, secrets(secretA)) {
		t.Error("a pod with the same secret may use it")
	}
	// Another tag of the same repository and image counts as the same.
	if m.MustPull(ctx, "registry.example:5000/private/app:latest", ref, secrets(secretA)) {
		t.Error("the same repository under another tag must match the record")
	}
	// The same credential in another namespace's secret: allowed, and remembered.
	copyA := Secret{UID: "uid-c", Namespace: "team-c", Name: "copy", CredentialHash: secretA.CredentialHash}
	if m.MustPull(ctx, private, ref, secrets(copyA)) {
		t.Error("a secret holding the same credential may use it")
	}
	// A secret whose content changed (same coordinates, new hash): allowed, new hash kept.
	rotated := secretA
	rotated.CredentialHash = CredentialHash("alice", "new", "")
	if m.MustPull(ctx, private, ref, secrets(rotated)) {
		t.Error("the same secret with new content may use it")
	}
	// The records survive a restart, in the file upstream reads.
	m2 := open(t, root, policy(t, "NeverVerifyPreloadedImages"), nil)
	r := m2.records[ref]
	if r == nil {
		t.Fatal("record lost across restart")
	}
	got := r.CredentialMapping["registry.example:5000/private/app"].KubernetesSecrets
	if len(got) != 2 || got[0].Namespace != "team-a" || got[0].CredentialHash != rotated.CredentialHash || got[1].Namespace != "team-c" {
		t.Errorf("secrets kept = %+v", got)
	}
	if !m2.MustPull(ctx, private, ref, secrets(secretB)) {
		t.Error("after a restart team-b still may not use it")
	}
	data, err := os.ReadFile(filepath.Join(root, "image_manager", "pulled", fileName(ref)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"kind":"ImagePulledRecord"`, `"apiVersion":"kubelet.config.k8s.io/v1beta1"`, `"imageRef":"` + ref + `"`, `"credentialMapping":{"registry.example:5000/private/app":{"kubernetesSecrets":[`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("record file %s lacks %s", data, want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "image_manager", "pulling")); len(entries) != 0 {
		t.Errorf("intents left after finished pulls: %v", entries)
	}
}

func TestAnonymousPullIsForEveryPod(t *testing.T) {
	m := open(t, t.TempDir(), policy(t, "AlwaysVerify"), nil)
	pull(t, m, "busybox:1.37", ref, nil)
	if m.MustPull(ctx, "busybox:1.37", ref, secrets()) {
		t.Error("an image pulled without credentials is every pod's")
	}
	// A later pull with a secret does not narrow it.
	pull(t, m, "busybox:1.37", ref, &secretA)
	if m.MustPull(ctx, "busybox:1.37", ref, secrets()) {
		t.Error("node-wide access was narrowed by a later pull with a secret")
	}
}

func TestAllowlist(t *testing.T) {
	m := open(t, t.TempDir(), policy(t, "NeverVerifyAllowlistedImages", "registry.example:5000/public/*", "registry.example:5000/tools"), nil)
	for image, must := range map[string]bool{
		"registry.example:5000/public/app:1": false,
		"registry.example:5000/tools:2":      false,
		"registry.example:5000/tools/x:2":    true,
		private:                              true,
	} {
		if got := m.MustPull(ctx, image, ref, secrets()); got != must {
			t.Errorf("MustPull(%s) = %v, want %v", image, got, must)
		}
	}
}

func TestInterruptedPullIsCheckedAfterRestart(t *testing.T) {
	root := t.TempDir()
	m := open(t, root, policy(t, "NeverVerifyPreloadedImages"), nil)
	if err := m.RecordPullIntent(private); err != nil {
		t.Fatal(err)
	}
	// While the pull runs, the image counts as the agent's.
	if !m.MustPull(ctx, private, ref, secrets()) {
		t.Error("an image being pulled is not preloaded")
	}
	// The agent dies here; the runtime finished the pull.
	images := fakeImages{{Id: ref, RepoTags: []string{private}}}
	m2 := open(t, root, policy(t, "NeverVerifyPreloadedImages"), images)
	if r := m2.records[ref]; r == nil || len(r.CredentialMapping) != 0 {
		t.Fatalf("interrupted pull not turned into a record without credentials: %+v", r)
	}
	if m2.intents[private] {
		t.Error("intent kept after it became a record")
	}
	if !m2.MustPull(ctx, private, ref, secrets(secretA)) {
		t.Error("an image whose pull was interrupted must have its pods' credentials checked")
	}
	// An intent for an image the runtime does not have stays, and still counts.
	root3 := t.TempDir()
	if err := open(t, root3, policy(t, "NeverVerifyPreloadedImages"), nil).RecordPullIntent(private); err != nil {
		t.Fatal(err)
	}
	m4 := open(t, root3, policy(t, "NeverVerifyPreloadedImages"), fakeImages{})
	if !m4.MustPull(ctx, private, ref, secrets()) {
		t.Error("an intent without image must still count as pulled by the agent")
	}
}

func TestRecordsFromTheUpstreamKubeletAndBrokenOnes(t *testing.T) {
	root := t.TempDir()
	pulled := filepath.Join(root, "image_manager", "pulled")
	pulling := filepath.Join(root, "image_manager", "pulling")
	for _, d := range []string{pulled, pulling} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(dir, key, content string) {
		if err := os.WriteFile(filepath.Join(dir, fileName(key)), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// An older version's record (rewritten as v1beta1), one for every pod,
	// one that does not parse, one with a field no version has, and a
	// temporary file (ignored).
	write(pulled, "ref-alpha", `{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1alpha1","lastUpdatedTime":"2026-01-02T03:04:05Z","imageRef":"ref-alpha","credentialMapping":{"registry.example/app":{"kubernetesSecrets":[{"uid":"uid-a","namespace":"team-a","name":"pull","credentialHash":"`+secretA.CredentialHash+`"}]}}}`)
	write(pulled, "ref-anon", `{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1","lastUpdatedTime":"2026-01-02T03:04:05Z","imageRef":"ref-anon","credentialMapping":{"registry.example/app":{"nodePodsAccessible":true}}}`)
	write(pulled, "ref-broken", `{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1","imageRef":"ref-broken",`)
	write(pulled, "ref-unknown", `{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1","lastUpdatedTime":"2026-01-02T03:04:05Z","imageRef":"ref-unknown","extra":1}`)
	if err := os.WriteFile(filepath.Join(pulled, fileName("ref-tmp")+".tmp"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	write(pulling, "registry.example/old:1", `{"kind":"ImagePullIntent","apiVersion":"kubelet.config.k8s.io/v1alpha1","image":"registry.example/old:1"}`)

	m := open(t, root, policy(t, "NeverVerifyPreloadedImages"), fakeImages{})
	if m.MustPull(ctx, "registry.example/app:1", "ref-alpha", secrets(secretA)) {
		t.Error("v1alpha1 record not honoured")
	}
	if !m.MustPull(ctx, "registry.example/app:1", "ref-alpha", secrets(secretB)) {
		t.Error("v1alpha1 record let another secret in")
	}
	if m.MustPull(ctx, "registry.example/app:1", "ref-anon", secrets()) {
		t.Error("node-wide record not honoured")
	}
	for _, r := range []string{"ref-broken", "ref-unknown"} {
		if !m.MustPull(ctx, "registry.example/app:1", r, secrets()) {
			t.Errorf("%s: an unreadable record must make the pod prove its credentials", r)
		}
	}
	if !m.MustPull(ctx, "registry.example/old:1", "ref-none", secrets()) {
		t.Error("an intent from an older version must count")
	}
	data, _ := os.ReadFile(filepath.Join(pulled, fileName("ref-alpha")))
	if !strings.Contains(string(data), `"apiVersion":"kubelet.config.k8s.io/v1beta1"`) {
		t.Errorf("v1alpha1 record not migrated: %s", data)
	}
	data, _ = os.ReadFile(filepath.Join(pulling, fileName("registry.example/old:1")))
	if !strings.Contains(string(data), `"apiVersion":"kubelet.config.k8s.io/v1beta1"`) {
		t.Errorf("v1alpha1 intent not migrated: %s", data)
	}
	// A pull replaces the broken record.
	pull(t, m, "registry.example/app:1", "ref-broken", &secretB)
	if m.MustPull(ctx, "registry.example/app:1", "ref-broken", secrets(secretB)) {
		t.Error("the pull that replaced a broken record is not honoured")
	}
	m2 := open(t, root, policy(t, "NeverVerifyPreloadedImages"), fakeImages{})
	if m2.broken[fileName("ref-broken")] || m2.records["ref-broken"] == nil {
		t.Error("the rewritten record does not load")
	}
}

func TestPrune(t *testing.T) {
	m := open(t, t.TempDir(), policy(t, "NeverVerifyPreloadedImages"), nil)
	pull(t, m, private, ref, &secretA)
	pull(t, m, "busybox:1", "ref-gone", nil)
	until := time.Now().Add(time.Second)
	pull(t, m, "busybox:2", "ref-new", nil) // written after until: kept
	m.records["ref-new"].LastUpdatedTime.Time = until.Add(time.Second)
	m.Prune(ctx, []string{ref}, until)
	if m.records[ref] == nil || m.records["ref-new"] == nil {
		t.Error("pruned a record of an image still present, or one newer than the list")
	}
	if m.records["ref-gone"] != nil {
		t.Error("kept the record of an image no longer on the node")
	}
	if _, err := os.Stat(filepath.Join(m.store.pulled, fileName("ref-gone"))); !os.IsNotExist(err) {
		t.Errorf("record file of a removed image left: %v", err)
	}
}

func TestNilManagerIsTheFeatureOff(t *testing.T) {
	var m *Manager
	if err := m.RecordPullIntent(private); err != nil {
		t.Fatal(err)
	}
	m.RecordPulled(ctx, private, ref, &secretA)
	m.RecordPullFailed(ctx, private)
	m.Prune(ctx, nil, time.Now())
	if m.MustPull(ctx, private, ref, secrets()) {
		t.Error("with the feature off an image on the node is every pod's")
	}
}
