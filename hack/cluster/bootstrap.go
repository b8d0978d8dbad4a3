package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/bosun-dev/bosun/internal/join"
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

// publishClusterInfo does what kubeadm init's bootstrap-token phase does for
// joining nodes: kube-public/cluster-info holds a kubeconfig with the
// cluster's address and CA (the controller-manager's bootstrapsigner signs it
// for each token with usage-bootstrap-signing), readable without credentials.
func (l *layout) publishClusterInfo(ctx context.Context, cs kubernetes.Interface) error {
	ca, err := os.ReadFile(filepath.Join(l.pki, "ca.pem"))
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{Server: nodeAPIServerURL, CertificateAuthorityData: ca}
	kubeconfig, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: "kube-public"},
		Data:       map[string]string{"kubeconfig": string(kubeconfig)},
	}
	if err := ignoreExists(cs.CoreV1().ConfigMaps("kube-public").Create(ctx, cm, metav1.CreateOptions{})); err != nil {
		return fmt.Errorf("cluster-info: %w", err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-signer-clusterinfo", Namespace: "kube-public"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"},
			ResourceNames: []string{"cluster-info"}, Verbs: []string{"get"}}},
	}
	if err := ignoreExists(cs.RbacV1().Roles("kube-public").Create(ctx, role, metav1.CreateOptions{})); err != nil {
		return err
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-signer-clusterinfo", Namespace: "kube-public"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "system:anonymous", APIGroup: "rbac.authorization.k8s.io"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
	}
	return ignoreExists(cs.RbacV1().RoleBindings("kube-public").Create(ctx, binding, metav1.CreateOptions{}))
}

// waitClusterInfoSigned waits for the bootstrapsigner to sign cluster-info
// for the token id.
func waitClusterInfoSigned(ctx context.Context, cs kubernetes.Interface, id string) error {
	return waitFor(ctx, 60*time.Second, "cluster-info signed for token "+id, func() error {
		cm, err := cs.CoreV1().ConfigMaps("kube-public").Get(ctx, "cluster-info", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if _, ok := cm.Data["jws-kubeconfig-"+id]; !ok {
			return fmt.Errorf("no jws-kubeconfig-%s yet", id)
		}
		return nil
	})
}

// bosunJoin writes a Bosun node's bootstrap kubeconfig, CA and unit with
// `bosun join` alone, as an operator would, run in the node's network
// namespace; the KubeletConfiguration written before it is kept.
func (l *layout) bosunJoin(ctx context.Context, cs kubernetes.Interface, token string) error {
	id, _, _ := strings.Cut(token, ".")
	if err := waitClusterInfoSigned(ctx, cs, id); err != nil {
		return err
	}
	hash, err := join.CAFileHash(filepath.Join(l.pki, "ca.pem"))
	if err != nil {
		return err
	}
	args := []string{"join", "--server=" + l.apiServer(), "--token=" + token, "--discovery-token-ca-cert-hash=" + hash,
		"--node-name=" + l.nodeName, "--node-ip=" + l.node.ip,
		"--bootstrap-kubeconfig=" + l.bootstrapKubeconfig(), "--kubeconfig=" + l.nodeKubeconfig(),
		"--config=" + l.configFile(), "--cert-dir=" + l.certDir(), "--root-dir=" + l.rootDir(),
		"--unit-file=" + filepath.Join(l.node.dir, "kubelet.service")}
	name, cmdArgs := l.binary("bosun"), args
	if l.node.netns != "" {
		name, cmdArgs = "ip", append([]string{"netns", "exec", l.node.netns, l.binary("bosun")}, args...)
	}
	out, err := exec.CommandContext(ctx, name, cmdArgs...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("bosun join for node %s: %v\n%s", l.nodeName, err, out)
	}
	return nil
}
