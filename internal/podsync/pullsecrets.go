package podsync

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bosun-dev/bosun/internal/pullrecords"
)

// registryAuth is one entry of a .dockerconfigjson or .dockercfg secret.
type registryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	Auth          string `json:"auth,omitempty"`
	Email         string `json:"email,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// keyringEntry is a credential and the registry location it is for.
type keyringEntry struct {
	host   string // host[:port], possibly with a leading "*." per label
	prefix string // path inside the registry the credential covers ("" for all)
	auth   *runtimeapi.AuthConfig
	source *pullrecords.Secret // the secret it came from, with the credential's hash
}

// PullCredential is one registry credential for a pull, and the pull secret
// it came from (which the pulled-image records remember).
type PullCredential struct {
	Auth   *runtimeapi.AuthConfig
	Secret *pullrecords.Secret
}

// parsePullSecret reads the registry credentials of a pull secret; the
// secret is named in errors, its content never is.
func parsePullSecret(s *corev1.Secret) ([]keyringEntry, error) {
	var auths map[string]registryAuth
	switch {
	case s.Type == corev1.SecretTypeDockerConfigJson || len(s.Data[corev1.DockerConfigJsonKey]) > 0:
		var doc struct {
			Auths map[string]registryAuth `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &doc); err != nil {
			return nil, fmt.Errorf("secret %s/%s: %s is not valid JSON: %v", s.Namespace, s.Name, corev1.DockerConfigJsonKey, err)
		}
		auths = doc.Auths
	case s.Type == corev1.SecretTypeDockercfg || len(s.Data[corev1.DockerConfigKey]) > 0:
		if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &auths); err != nil {
			return nil, fmt.Errorf("secret %s/%s: %s is not valid JSON: %v", s.Namespace, s.Name, corev1.DockerConfigKey, err)
		}
	default:
		return nil, fmt.Errorf("secret %s/%s has type %q; an image pull secret needs %s or %s", s.Namespace, s.Name, s.Type,
			corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg)
	}
	var out []keyringEntry
	for key, a := range auths {
		user, pass := a.Username, a.Password
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("secret %s/%s: the auth field for %q is not base64", s.Namespace, s.Name, key)
			}
			u, p, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("secret %s/%s: the auth field for %q is not user:password", s.Namespace, s.Name, key)
			}
			user, pass = u, p
		}
		host, prefix := splitRegistryKey(key)
		if host == "" {
			continue
		}
		out = append(out, keyringEntry{host: host, prefix: prefix, auth: &runtimeapi.AuthConfig{
			Username: user, Password: pass, Auth: a.Auth, // no ServerAddress: containerd reads it as a URL and drops a mismatch
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
		}, source: &pullrecords.Secret{UID: string(s.UID), Namespace: s.Namespace, Name: s.Name,
			CredentialHash: pullrecords.CredentialHash(user, pass, a.Email)}})
	}
	return out, nil
}

// splitRegistryKey turns a config key ("https://index.docker.io/v1/",
// "registry.example:5000/team") into host and path prefix.
func splitRegistryKey(key string) (string, string) {
	k := key
	if !strings.Contains(k, "://") {
		k = "https://" + k
	}
	u, err := url.Parse(k)
	if err != nil || u.Host == "" {
		return "", ""
	}
	host := strings.ToLower(u.Host)
	prefix := strings.Trim(u.Path, "/")
	if host == "index.docker.io" || host == "registry-1.docker.io" {
		host = "docker.io"
		if prefix == "v1" || prefix == "v2" {
			prefix = ""
		}
	}
	return host, prefix
}

// imageLocation splits an image reference into registry host and repository
// path, with Docker's defaults (docker.io, library/).
func imageLocation(image string) (string, string) {
	name := image
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	first, rest, found := strings.Cut(name, "/")
	if !found || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !strings.Contains(name, "/") {
			name = "library/" + name
		}
		return "docker.io", name
	}
	host := strings.ToLower(first)
	if host == "index.docker.io" || host == "registry-1.docker.io" {
		host = "docker.io"
	}
	return host, rest
}

// hostMatches compares hosts label by label; a pattern label may be a glob
// ("*.example.com"). Ports must be equal.
func hostMatches(pattern, host string) bool {
	pHost, pPort := splitPort(pattern)
	hHost, hPort := splitPort(host)
	if pPort != hPort {
		return false
	}
	pl, hl := strings.Split(pHost, "."), strings.Split(hHost, ".")
	if len(pl) != len(hl) {
		return false
	}
	for i := range pl {
		if ok, _ := path.Match(pl[i], hl[i]); !ok {
			return false
		}
	}
	return true
}

func splitPort(host string) (string, string) {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		return host[:i], host[i+1:]
	}
	return host, ""
}

// matchingAuth is the credentials that apply to image, the most specific
// location first, as the upstream keyring orders them.
func matchingAuth(entries []keyringEntry, image string) []PullCredential {
	host, repo := imageLocation(image)
	var hits []keyringEntry
	for _, e := range entries {
		if !hostMatches(e.host, host) {
			continue
		}
		if e.prefix != "" && repo != e.prefix && !strings.HasPrefix(repo, e.prefix+"/") {
			continue
		}
		hits = append(hits, e)
	}
	sort.SliceStable(hits, func(i, j int) bool {
		li, lj := len(hits[i].host)+len(hits[i].prefix), len(hits[j].host)+len(hits[j].prefix)
		return li > lj
	})
	out := make([]PullCredential, len(hits))
	for i := range hits {
		out[i] = PullCredential{Auth: hits[i].auth, Secret: hits[i].source}
	}
	return out
}

// pullAuth gathers the credentials of the pod's imagePullSecrets for image.
// A secret that cannot be read or parsed is reported as an event and
// skipped, as upstream does: the pull still tries the others and anonymous.
func (s *Syncer) pullAuth(ctx context.Context, pod *corev1.Pod, image string) []PullCredential {
	if len(pod.Spec.ImagePullSecrets) == 0 || s.cfg.Objects == nil {
		return nil
	}
	var entries []keyringEntry
	var missing []string
	for _, ref := range pod.Spec.ImagePullSecrets {
		if ref.Name == "" {
			continue
		}
		sec, err := s.cfg.Objects.Secret(ctx, pod.Namespace, ref.Name)
		if err != nil {
			missing = append(missing, ref.Name)
			continue
		}
		e, err := parsePullSecret(sec)
		if err != nil {
			s.event(pod, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret", err.Error())
			continue
		}
		entries = append(entries, e...)
	}
	if len(missing) > 0 {
		s.event(pod, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret",
			fmt.Sprintf("Unable to retrieve some image pull secrets (%s); attempting to pull the image may not succeed.", strings.Join(missing, ", ")))
	}
	return matchingAuth(entries, image)
}
