// Package pullrecords keeps the promise of KEP-2535 (the
// KubeletEnsureSecretPulledImages feature, on by default in v1.36): a pod may
// run an image that is already on the node only if it could have pulled that
// image itself. Each pull is recorded under <root-dir>/image_manager in the
// upstream kubelet's format, so the records survive restarts and a swap of
// the node agent either way.
package pullrecords

import (
	"fmt"
	"strings"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// Policy is imagePullCredentialsVerificationPolicy with its allowlist:
// which images present on the node need the pod's credentials checked.
type Policy struct {
	mode     kubeletv1beta1.ImagePullCredentialsVerificationPolicy
	exact    map[string]bool // allowlisted repositories
	prefixes []string        // allowlisted "registry/path/" prefixes (from "registry/path/*")
}

// NewPolicy checks the policy name and the allowlist patterns as upstream's
// configuration validation does.
func NewPolicy(mode string, allowlist []string) (*Policy, error) {
	p := &Policy{mode: kubeletv1beta1.ImagePullCredentialsVerificationPolicy(mode), exact: map[string]bool{}}
	switch p.mode {
	case kubeletv1beta1.NeverVerify, kubeletv1beta1.NeverVerifyPreloadedImages,
		kubeletv1beta1.NeverVerifyAllowlistedImages, kubeletv1beta1.AlwaysVerify:
	default:
		return nil, fmt.Errorf("invalid configuration: option %q specified for imagePullCredentialsVerificationPolicy. Valid options are %q, %q, %q or %q",
			mode, kubeletv1beta1.NeverVerify, kubeletv1beta1.NeverVerifyPreloadedImages, kubeletv1beta1.NeverVerifyAllowlistedImages, kubeletv1beta1.AlwaysVerify)
	}
	if len(allowlist) > 0 && p.mode != kubeletv1beta1.NeverVerifyAllowlistedImages {
		return nil, fmt.Errorf("invalid configuration: preloadedImagesVerificationAllowlist can only be set with imagePullCredentialsVerificationPolicy %q, not %q",
			kubeletv1beta1.NeverVerifyAllowlistedImages, mode)
	}
	for _, pattern := range allowlist {
		name, wildcard, err := allowlistPattern(pattern)
		if err != nil {
			return nil, fmt.Errorf("invalid configuration: invalid image pattern in preloadedImagesVerificationAllowlist: %w", err)
		}
		if wildcard {
			p.prefixes = append(p.prefixes, name)
		} else {
			p.exact[name] = true
		}
	}
	return p, nil
}

// allowlistPattern reads "registry/repo" (no tag or digest) or
// "registry/path/*" (a prefix with at least a registry host).
func allowlistPattern(pattern string) (string, bool, error) {
	if pattern != strings.TrimSpace(pattern) {
		return "", false, fmt.Errorf("leading/trailing spaces are not allowed: %s", pattern)
	}
	trimmed, wildcard := strings.CutSuffix(pattern, "/*")
	if wildcard {
		trimmed += "/"
	}
	switch {
	case trimmed == "" || trimmed == "/":
		if wildcard {
			return "", false, fmt.Errorf("at least registry hostname is required")
		}
		return "", false, fmt.Errorf("the supplied pattern is too short: %s", pattern)
	case strings.ContainsRune(trimmed, '*'):
		return "", false, fmt.Errorf("not a valid wildcard pattern, only patterns ending with '/*' are allowed: %s", pattern)
	}
	if wildcard {
		return trimmed, true, nil
	}
	bare, err := Repository(trimmed)
	if err != nil {
		return "", false, fmt.Errorf("failed to parse as an image name: %w", err)
	}
	if bare != trimmed {
		return "", false, fmt.Errorf("neither tag nor digest is accepted in an image reference: %s", pattern)
	}
	return trimmed, false, nil
}

// mustVerify says whether an image on the node needs the pod's credentials
// checked; pulledByAgent is true when a node agent pulled (or began to pull)
// it, as opposed to an image preloaded by other means.
func (p *Policy) mustVerify(image string, pulledByAgent bool) bool {
	switch p.mode {
	case kubeletv1beta1.NeverVerify:
		return false
	case kubeletv1beta1.NeverVerifyPreloadedImages:
		return pulledByAgent
	case kubeletv1beta1.NeverVerifyAllowlistedImages:
		return !p.allowlisted(image)
	}
	return true // AlwaysVerify
}

func (p *Policy) allowlisted(image string) bool {
	name, err := Repository(image)
	if err != nil {
		name = image
	}
	if p.exact[name] {
		return true
	}
	for _, prefix := range p.prefixes {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// Repository is an image reference without its tag and digest, as the
// records key credentials ("registry.example/team/app:1.0@sha256:..." ->
// "registry.example/team/app"). The name is kept as written, not expanded
// with docker.io defaults, as upstream keeps it.
func Repository(image string) (string, error) {
	name, digest, hasDigest := strings.Cut(image, "@")
	if hasDigest {
		algo, hex, ok := strings.Cut(digest, ":")
		if !ok || algo == "" || len(hex) < 32 || strings.ContainsAny(digest, "@/") {
			return "", fmt.Errorf("invalid digest %q in image %q", digest, image)
		}
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		tag := name[i+1:]
		if !validTag(tag) {
			return "", fmt.Errorf("invalid tag %q in image %q", tag, image)
		}
		name = name[:i]
	}
	if name == "" || strings.ContainsAny(name, " \t\n@") || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") ||
		strings.Contains(name, "//") || strings.ToLower(repoPath(name)) != repoPath(name) {
		return "", fmt.Errorf("invalid image name %q", image)
	}
	return name, nil
}

// repoPath is the part of a name after its registry host, which must be
// lower case (the host may not be).
func repoPath(name string) string {
	first, rest, found := strings.Cut(name, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first) {
		return rest
	}
	return name
}

func validTag(tag string) bool {
	if tag == "" || len(tag) > 128 {
		return false
	}
	for i, r := range tag {
		word := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !word && (i == 0 || r != '.' && r != '-') {
			return false
		}
	}
	return true
}
