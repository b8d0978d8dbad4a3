package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/klog/v2"
)

// AuthConfig is the authentication and authorization part of a
// KubeletConfiguration.
type AuthConfig struct {
	Anonymous            bool          // authentication.anonymous.enabled
	Webhook              bool          // authentication.webhook.enabled: TokenReview for bearer tokens
	CacheTTL             time.Duration // authentication.webhook.cacheTTL
	ClientCAFile         string        // authentication.x509.clientCAFile
	Mode                 string        // authorization.mode: Webhook or AlwaysAllow
	CacheAuthorizedTTL   time.Duration // authorization.webhook.cacheAuthorizedTTL
	CacheUnauthorizedTTL time.Duration // authorization.webhook.cacheUnauthorizedTTL
	TokenReviews         authenticationclient.AuthenticationV1Interface
	SubjectAccessReviews authorizationclient.AuthorizationV1Interface
}

// webhookBackoff is the apiserver library's default retry for webhooks.
var webhookBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}

// Auth authenticates and authorizes requests to the node API.
type Auth struct {
	authn    authenticator.Request
	authz    authorizer.Authorizer
	nodeName string
	// onAuthenticated is told of each request that authenticated (the
	// connection gate frees its connection's slot).
	onAuthenticated func(r *http.Request)
}

// NewAuth builds the delegating authenticator (x509, TokenReview, anonymous)
// and authorizer (SubjectAccessReview or AlwaysAllow). The client CA file is
// re-read when it changes.
func NewAuth(ctx context.Context, cfg AuthConfig, nodeName string) (*Auth, error) {
	authnCfg := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:           &apiserver.AnonymousAuthConfig{Enabled: cfg.Anonymous},
		CacheTTL:            cfg.CacheTTL,
		WebhookRetryBackoff: &webhookBackoff,
	}
	if cfg.Webhook {
		if cfg.TokenReviews == nil {
			return nil, fmt.Errorf("no client for TokenReviews: authentication.webhook.enabled needs an apiserver connection")
		}
		authnCfg.TokenAccessReviewClient = cfg.TokenReviews
	}
	if cfg.ClientCAFile != "" {
		ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca-bundle", cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("authentication.x509.clientCAFile: %w", err)
		}
		go ca.Run(ctx, 1)
		authnCfg.ClientCertificateCAContentProvider = ca
	}
	authn, _, err := authnCfg.New()
	if err != nil {
		return nil, err
	}
	var authz authorizer.Authorizer
	switch cfg.Mode {
	case "AlwaysAllow":
		authz = authorizerfactory.NewAlwaysAllowAuthorizer()
	case "Webhook":
		if cfg.SubjectAccessReviews == nil {
			return nil, fmt.Errorf("no client for SubjectAccessReviews: authorization.mode Webhook needs an apiserver connection")
		}
		authz, err = authorizerfactory.DelegatingAuthorizerConfig{
			SubjectAccessReviewClient: cfg.SubjectAccessReviews, AllowCacheTTL: cfg.CacheAuthorizedTTL,
			DenyCacheTTL: cfg.CacheUnauthorizedTTL, WebhookRetryBackoff: &webhookBackoff,
		}.New()
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown authorization mode %q", cfg.Mode)
	}
	return &Auth{authn: authn, authz: authz, nodeName: nodeName}, nil
}

// isSubpath reports whether p is path or below it.
func isSubpath(p, path string) bool {
	path = strings.TrimSuffix(path, "/")
	return p == path || (strings.HasPrefix(p, path) && len(p) > len(path) && p[len(path)] == '/')
}

// streamingPaths create processes or connections whatever the HTTP method:
// WebSocket upgrades arrive as GET, yet they are as powerful as a POST.
var streamingPaths = []string{"/exec", "/attach", "/portForward", "/run"}

// Attributes maps a request to what is authorized: verb from the method (or
// create for streaming), resource nodes, name the node, and the subresources
// upstream v1.36 checks in order (fine-grained first, proxy as fallback).
func (a *Auth) Attributes(u user.Info, r *http.Request) []authorizer.AttributesRecord {
	verb := map[string]string{"POST": "create", "GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[r.Method]
	p := r.URL.Path
	for _, s := range streamingPaths {
		if isSubpath(p, s) {
			verb = "create"
		}
	}
	var subresources []string
	switch {
	case isSubpath(p, "/pods"), isSubpath(p, "/runningpods"):
		subresources = append(subresources, "pods")
	case isSubpath(p, "/healthz"):
		subresources = append(subresources, "healthz")
	case isSubpath(p, "/configz"):
		subresources = append(subresources, "configz")
	}
	switch {
	case isSubpath(p, "/stats"):
		subresources = append(subresources, "stats")
	case isSubpath(p, "/metrics"):
		subresources = append(subresources, "metrics")
	case isSubpath(p, "/logs"):
		subresources = append(subresources, "log")
	case isSubpath(p, "/checkpoint"):
		subresources = append(subresources, "checkpoint")
	case isSubpath(p, "/statusz"):
		subresources = append(subresources, "statusz")
	case isSubpath(p, "/flagz"):
		subresources = append(subresources, "configz")
	default:
		subresources = append(subresources, "proxy")
	}
	out := make([]authorizer.AttributesRecord, 0, len(subresources))
	for _, sub := range subresources {
		out = append(out, authorizer.AttributesRecord{
			User: u, Verb: verb, APIVersion: "v1", Resource: "nodes", Subresource: sub, Name: a.nodeName,
			ResourceRequest: true, Path: p,
		})
	}
	return out
}

// Filter wraps h: 401 "Unauthorized" without valid credentials, 403 with
// upstream's exact body when no subresource is allowed, 500 when the
// authorizer fails.
func (a *Auth) Filter(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger := klog.FromContext(r.Context())
		resp, ok, err := a.authn.AuthenticateRequest(r)
		if err != nil {
			logger.Error(err, "Unable to authenticate the request due to an error")
		}
		if err != nil || !ok {
			writeText(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		if a.onAuthenticated != nil {
			a.onAuthenticated(r)
		}
		attrs := a.Attributes(resp.User, r)
		var subresources []string
		for _, attr := range attrs {
			subresources = append(subresources, attr.Subresource)
			decision, _, err := a.authz.Authorize(r.Context(), attr)
			if err != nil {
				logger.Error(err, "Authorization error", "user", attr.User.GetName(), "verb", attr.Verb, "subresource", attr.Subresource)
				writeText(w, http.StatusInternalServerError, fmt.Sprintf("Authorization error (user=%s, verb=%s, resource=%s, subresource=%s)",
					attr.User.GetName(), attr.Verb, attr.Resource, attr.Subresource))
				return
			}
			if decision == authorizer.DecisionAllow {
				h.ServeHTTP(w, r)
				return
			}
		}
		logger.V(2).Info("Forbidden", "user", resp.User.GetName(), "verb", attrs[0].Verb, "subresource(s)", subresources)
		writeText(w, http.StatusForbidden, fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=%s, subresource(s)=%v)\n",
			resp.User.GetName(), attrs[0].Verb, attrs[0].Resource, subresources))
	})
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
