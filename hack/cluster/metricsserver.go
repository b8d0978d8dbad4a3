package main

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// metricsServerImage is the offline image of tools/metricsserver.
const metricsServerImage = "registry.k8s.io/metrics-server/metrics-server:v0.8.0"

func fillMetricsServer(l *layout, r *rootfs) error {
	return r.hostFile("/metrics-server", l.binary("metrics-server"), 0o755)
}

// deployMetricsServer runs metrics-server as its release manifest does: it
// reads every node's /metrics/resource with its service account's token
// (nodes/metrics), verifying the node's serving certificate with the
// cluster CA, and serves metrics.k8s.io through the aggregator, for kubectl
// top and autoscalers. make up does not wait for it: kubectl top works once
// it has scraped each node twice (about 30 s).
func (l *layout) deployMetricsServer(ctx context.Context, cs kubernetes.Interface) error {
	const ns, name = "kube-system", "metrics-server"
	labels := map[string]string{"k8s-app": name}
	objects := []func() error{
		func() error {
			return ignoreExists(cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "system:aggregated-metrics-reader", Labels: map[string]string{
					"rbac.authorization.k8s.io/aggregate-to-admin": "true", "rbac.authorization.k8s.io/aggregate-to-edit": "true",
					"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{"metrics.k8s.io"}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}}},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "system:metrics-server", Labels: labels},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"nodes/metrics"}, Verbs: []string{"get"}},
					{APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}},
				},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "metrics-server-auth-reader", Labels: labels},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "metrics-server:system:auth-delegator", Labels: labels},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "system:metrics-server", Labels: labels},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:metrics-server"},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
				Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
					{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("https")}}},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.AppsV1().Deployments(ns).Create(ctx, metricsServerDeployment(labels), metav1.CreateOptions{}))
		},
		func() error { return createAPIService(ctx, cs, ns, name) },
	}
	for _, create := range objects {
		if err := create(); err != nil {
			return fmt.Errorf("metrics-server: %w", err)
		}
	}
	return nil
}

func metricsServerDeployment(labels map[string]string) *appsv1.Deployment {
	replicas := int32(1)
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}},
			PeriodSeconds: 10, FailureThreshold: 3}
	}
	readiness := probe("/readyz")
	readiness.InitialDelaySeconds = 20
	uid := int64(1000)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-server", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "metrics-server",
					PriorityClassName:  "system-cluster-critical",
					Tolerations:        []corev1.Toleration{{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name: "metrics-server", Image: metricsServerImage, ImagePullPolicy: corev1.PullIfNotPresent,
						Args: []string{"--cert-dir=/tmp", "--secure-port=10250", "--kubelet-preferred-address-types=InternalIP",
							"--kubelet-use-node-status-port", "--metric-resolution=15s"},
						Ports:          []corev1.ContainerPort{{Name: "https", ContainerPort: 10250, Protocol: corev1.ProtocolTCP}},
						ReadinessProbe: readiness,
						LivenessProbe:  probe("/livez"),
						SecurityContext: &corev1.SecurityContext{RunAsUser: &uid, RunAsNonRoot: ptrTo(true), ReadOnlyRootFilesystem: ptrTo(true),
							AllowPrivilegeEscalation: ptrTo(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
						VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
					}},
					Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
}

// createAPIService registers metrics.k8s.io/v1beta1 with the aggregator
// (the apiregistration API, posted as JSON: its typed client is not among
// the harness's dependencies).
func createAPIService(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	body, err := json.Marshal(map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1beta1.metrics.k8s.io", "labels": map[string]string{"k8s-app": name}},
		"spec": map[string]any{"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
			"insecureSkipTLSVerify": true, "service": map[string]any{"name": name, "namespace": ns}},
	})
	if err != nil {
		return err
	}
	err = cs.Discovery().RESTClient().Post().AbsPath("/apis/apiregistration.k8s.io/v1/apiservices").
		SetHeader("Content-Type", "application/json").Body(body).Do(ctx).Error()
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func ptrTo[T any](v T) *T { return &v }
