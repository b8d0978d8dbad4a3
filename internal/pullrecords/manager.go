package pullrecords

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Secret is a pull secret a pull used or a pod offers: its coordinates and
// the hash of the one credential in it that applies (upstream's hash, so a
// record written by either agent matches for the other).
type Secret = kubeletv1beta1.ImagePullSecret

// ImageLister is the part of the CRI image service the manager reads at start.
type ImageLister interface {
	ListImages(ctx context.Context, filter *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error)
}

// matchWriteLimit stops a record from growing without bound when many
// namespaces present equal credentials (upstream's limit).
const matchWriteLimit = 100

// Manager decides whether a pod may use an image already on the node, and
// records every pull. A nil *Manager is the feature turned off: every image on
// the node may be used, nothing is recorded.
type Manager struct {
	store   *store
	policy  *Policy
	mu      sync.Mutex
	pulling map[string]int // image -> pulls in flight in this process
	intents map[string]bool
	records map[string]*kubeletv1beta1.ImagePulledRecord
	broken  map[string]bool // record file names that could not be read
}

// New opens the records under rootDir. Intents left by an agent that stopped
// mid-pull become records (with no credentials, so the next pod using the
// image is checked) when the runtime has the image.
func New(ctx context.Context, rootDir string, policy *Policy, images ImageLister) (*Manager, error) {
	s, err := openStore(rootDir)
	if err != nil {
		return nil, err
	}
	l := s.load()
	log := klog.FromContext(ctx)
	for _, err := range l.errs {
		log.Error(err, "Unreadable image pull record; images it covers will have their pods' credentials checked")
	}
	m := &Manager{store: s, policy: policy, pulling: map[string]int{}, intents: l.intents, records: l.records, broken: l.broken}
	if len(m.intents) == 0 || images == nil {
		return m, nil
	}
	list, err := images.ListImages(ctx, &runtimeapi.ImageFilter{})
	if err != nil {
		log.Error(err, "Cannot list images to settle the image pulls interrupted by the last stop")
		return m, nil
	}
	for _, img := range list {
		for _, name := range slices.Concat(img.RepoTags, img.RepoDigests) {
			if !m.intents[name] {
				continue
			}
			if err := m.mergeLocked(name, img.Id, nil); err != nil {
				log.Error(err, "Cannot record an interrupted image pull", "image", name)
				continue
			}
			if err := s.deleteIntent(name); err == nil {
				delete(m.intents, name)
			}
		}
	}
	return m, nil
}

// RecordPullIntent is called before each pull, and must be matched by one
// RecordPulled or RecordPullFailed.
func (m *Manager) RecordPullIntent(image string) error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.store.writeIntent(image); err != nil {
		return fmt.Errorf("failed to record image pull intent: %w", err)
	}
	m.intents[image] = true
	m.pulling[image]++
	return nil
}

// RecordPulled records a pull that succeeded with secret, or with no secret
// (anonymously or with credentials of the node: every pod may use it).
func (m *Manager) RecordPulled(ctx context.Context, image, imageRef string, secret *Secret) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	creds := &kubeletv1beta1.ImagePullCredentials{NodePodsAccessible: true}
	if secret != nil {
		creds = &kubeletv1beta1.ImagePullCredentials{KubernetesSecrets: []Secret{*secret}}
	}
	if err := m.mergeLocked(image, imageRef, creds); err != nil {
		// The intent stays: the image still counts as pulled by the agent.
		klog.FromContext(ctx).Error(err, "Failed to write image pulled record", "imageRef", imageRef)
		return
	}
	m.doneLocked(ctx, image)
}

// RecordPullFailed ends a pull that failed.
func (m *Manager) RecordPullFailed(ctx context.Context, image string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.doneLocked(ctx, image)
}

func (m *Manager) doneLocked(ctx context.Context, image string) {
	if m.pulling[image] > 1 {
		m.pulling[image]--
		return
	}
	if err := m.store.deleteIntent(image); err != nil {
		klog.FromContext(ctx).Error(err, "Failed to remove image pull intent", "image", image)
		return
	}
	delete(m.pulling, image)
	delete(m.intents, image)
}

// MustPull says whether a pod must pull image (whose runtime reference is
// imageRef, present on the node) to prove it may use it. podSecrets lists the
// pod's pull secrets that apply to the image, with their credential hashes;
// it is called only when the answer depends on them.
func (m *Manager) MustPull(ctx context.Context, image, imageRef string, podSecrets func() []Secret) bool {
	if m == nil {
		return false
	}
	if imageRef == "" {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.broken[fileName(imageRef)] {
		return true // fail safe: the record could not be read
	}
	record := m.records[imageRef]
	pulledByAgent := record != nil || m.intents[image]
	if !m.policy.mustVerify(image, pulledByAgent) {
		return false
	}
	if record == nil {
		return true
	}
	repo, err := Repository(image)
	if err != nil {
		return true
	}
	creds, ok := record.CredentialMapping[repo]
	switch {
	case !ok:
		return true
	case creds.NodePodsAccessible:
		return false
	case len(creds.KubernetesSecrets) == 0:
		return true
	}
	for _, offered := range podSecrets() {
		for _, known := range creds.KubernetesSecrets {
			sameHash := known.CredentialHash != "" && offered.CredentialHash == known.CredentialHash
			sameSecret := offered.UID == known.UID && offered.Namespace == known.Namespace && offered.Name == known.Name
			if !sameHash && !sameSecret {
				continue
			}
			// Remember this secret (or its new content) too, so the next
			// check finds it at once.
			if (!sameHash || !sameSecret) && len(creds.KubernetesSecrets) < matchWriteLimit {
				add := &kubeletv1beta1.ImagePullCredentials{KubernetesSecrets: []Secret{offered}}
				if err := m.mergeLocked(image, imageRef, add); err != nil {
					klog.FromContext(ctx).Error(err, "Failed to write image pulled record", "imageRef", imageRef)
				}
			}
			return false
		}
	}
	return true
}

// mergeLocked adds creds (nil: none, the image only counts as pulled) to the
// record of imageRef under image's repository, writing it when it changed.
func (m *Manager) mergeLocked(image, imageRef string, creds *kubeletv1beta1.ImagePullCredentials) error {
	repo, err := Repository(image)
	if err != nil {
		return err
	}
	old := m.records[imageRef]
	next := &kubeletv1beta1.ImagePulledRecord{ImageRef: imageRef, CredentialMapping: map[string]kubeletv1beta1.ImagePullCredentials{}}
	if old != nil && !m.broken[fileName(imageRef)] {
		next.LastUpdatedTime = old.LastUpdatedTime
		for k, v := range old.CredentialMapping {
			next.CredentialMapping[k] = v
		}
	}
	changed := old == nil || m.broken[fileName(imageRef)]
	if creds != nil && (creds.NodePodsAccessible || len(creds.KubernetesSecrets) > 0 || len(creds.KubernetesServiceAccounts) > 0) {
		have, found := next.CredentialMapping[repo]
		merged, diff := mergeCredentials(have, found, *creds)
		if diff {
			next.CredentialMapping[repo] = merged
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if len(next.CredentialMapping) == 0 {
		next.CredentialMapping = nil
	}
	next.LastUpdatedTime = metav1.Now()
	if err := m.store.writeRecord(next); err != nil {
		return err
	}
	m.records[imageRef] = next
	delete(m.broken, fileName(imageRef))
	return nil
}

// mergeCredentials adds add to have: node-wide access replaces any list;
// secrets are kept one per (namespace, name, uid) with the newest hash, in
// upstream's order.
func mergeCredentials(have kubeletv1beta1.ImagePullCredentials, found bool, add kubeletv1beta1.ImagePullCredentials) (kubeletv1beta1.ImagePullCredentials, bool) {
	if !found {
		return add, true
	}
	if have.NodePodsAccessible {
		return have, false
	}
	if add.NodePodsAccessible {
		return kubeletv1beta1.ImagePullCredentials{NodePodsAccessible: true}, true
	}
	changed := false
	secrets := slices.Clone(have.KubernetesSecrets)
	for _, s := range add.KubernetesSecrets {
		i := slices.IndexFunc(secrets, func(o Secret) bool { return o.UID == s.UID && o.Namespace == s.Namespace && o.Name == s.Name })
		switch {
		case i < 0:
			secrets = append(secrets, s)
			changed = true
		case secrets[i].CredentialHash != s.CredentialHash:
			secrets[i].CredentialHash = s.CredentialHash
			changed = true
		}
	}
	accounts := slices.Clone(have.KubernetesServiceAccounts)
	for _, a := range add.KubernetesServiceAccounts {
		if !slices.Contains(accounts, a) {
			accounts = append(accounts, a)
			changed = true
		}
	}
	if !changed {
		return have, false
	}
	slices.SortFunc(secrets, func(a, b Secret) int {
		return strings.Compare(a.Namespace+"\x00"+a.Name+"\x00"+a.UID, b.Namespace+"\x00"+b.Name+"\x00"+b.UID)
	})
	slices.SortFunc(accounts, func(a, b kubeletv1beta1.ImagePullServiceAccount) int {
		return strings.Compare(a.Namespace+"\x00"+a.Name+"\x00"+a.UID, b.Namespace+"\x00"+b.Name+"\x00"+b.UID)
	})
	return kubeletv1beta1.ImagePullCredentials{KubernetesSecrets: secrets, KubernetesServiceAccounts: accounts}, true
}

// Prune drops the records of images no longer on the node (present lists
// the image IDs the runtime has), unless a record was written after until,
// a time taken before the list was.
func (m *Manager) Prune(ctx context.Context, present []string, until time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	have := map[string]bool{}
	for _, id := range present {
		have[id] = true
	}
	for ref, r := range m.records {
		if have[ref] || !r.LastUpdatedTime.Time.Before(until) {
			continue
		}
		if err := m.store.deleteRecord(ref); err != nil {
			klog.FromContext(ctx).Error(err, "Failed to remove an image pulled record", "imageRef", ref)
			continue
		}
		delete(m.records, ref)
	}
}

// CredentialHash is the hash a record keeps of one registry credential of a
// pull secret: SHA-256 of the JSON of its username, password and email, the
// fields and encoding the upstream kubelet hashes, so that records match
// whichever agent wrote them.
func CredentialHash(username, password, email string) string {
	b, err := json.Marshal(struct {
		Username string `json:"username,omitempty"`
		Password string `json:"password,omitempty"`
		Email    string `json:"email,omitempty"`
	}{username, password, email})
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
