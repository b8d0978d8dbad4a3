package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// bootstrapToken returns the cluster's bootstrap token "<id>.<secret>",
// creating and saving one on first use.
func (l *layout) bootstrapToken() (string, error) {
	file := filepath.Join(l.out, "bootstrap-token"+l.suffix())
	if data, err := os.ReadFile(file); err == nil && strings.HasPrefix(string(data), l.bootstrapTokenID()+".") {
		return strings.TrimSpace(string(data)), nil
	}
	token := l.bootstrapTokenID() + "." + randomToken(16)
	return token, writeFileAtomic(file, []byte(token+"\n"), 0o600)
}

// applyBootstrapObjects creates the node's bootstrap token Secret.
func (l *layout) applyBootstrapObjects(ctx context.Context, cs kubernetes.Interface, token string) error {
	id, secret, _ := strings.Cut(token, ".")
	tokenSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: "kube-system"},
		Type:       corev1.SecretType("bootstrap.kubernetes.io/token"),
		StringData: map[string]string{
			"description":                    "kubelet-bootstrap-token",
			"token-id":                       id,
			"token-secret":                   secret,
			"expiration":                     time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              "system:bootstrappers:" + l.nodeName,
		},
	}
	if err := ignoreExists(cs.CoreV1().Secrets("kube-system").Create(ctx, tokenSecret, metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("bootstrap token secret: %w", err)
	}
	return nil
}

// applyClusterRBAC creates the seed's bindings: kubelet-bootstrap, csr-crb.yaml
// and kube-apiserver:kubelet-apis.
func applyClusterRBAC(ctx context.Context, cs kubernetes.Interface) error {
	bind := func(name, role string, subjects ...rbacv1.Subject) *rbacv1.ClusterRoleBinding {
		return &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Subjects:   subjects,
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		}
	}
	group := func(name string) rbacv1.Subject {
		return rbacv1.Subject{Kind: "Group", Name: name, APIGroup: "rbac.authorization.k8s.io"}
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "approve-node-server-renewal-csr"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"certificates.k8s.io"},
			Resources: []string{"certificatesigningrequests/selfnodeserver"},
			Verbs:     []string{"create"},
		}},
	}
	if err := ignoreExists(cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})); err != nil {
		return err
	}
	for _, b := range []*rbacv1.ClusterRoleBinding{
		bind("kubelet-bootstrap", "system:node-bootstrapper", group("system:bootstrappers")),
		bind("auto-approve-csrs-for-group", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", group("system:bootstrappers")),
		bind("node-client-cert-renewal", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", group("system:nodes")),
		bind("node-server-cert-renewal", "approve-node-server-renewal-csr", group("system:nodes")),
		bind("kube-apiserver:kubelet-apis", "system:kubelet-api-admin", rbacv1.Subject{Kind: "User", Name: "kubernetes", APIGroup: "rbac.authorization.k8s.io"}),
	} {
		if err := ignoreExists(cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{})); err != nil {
			return fmt.Errorf("clusterrolebinding %s: %w", b.Name, err)
		}
	}
	return nil
}

func ignoreExists[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
