package main

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// prometheusImage is the offline image of tools/prometheus.
const prometheusImage = "quay.io/prometheus/prometheus:v3.16.0"

func fillPrometheus(l *layout, r *rootfs) error {
	return r.hostFile("/bin/prometheus", l.binary("prometheus"), 0o755)
}

// prometheusConfig is the usual kubelet scrape configuration: every node
// found through the API (role node), at its kubelet port, over HTTPS with
// the service account's token, the node's serving certificate checked
// against the cluster CA; one job per endpoint.
const prometheusConfig = `global:
  scrape_interval: 15s
  scrape_timeout: 10s
scrape_configs:
`

func prometheusJob(name, path string) string {
	return fmt.Sprintf(`- job_name: %s
  scheme: https
  metrics_path: %s
  kubernetes_sd_configs:
  - role: node
  tls_config:
    ca_file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
  authorization:
    credentials_file: /var/run/secrets/kubernetes.io/serviceaccount/token
  relabel_configs:
  - action: labelmap
    regex: __meta_kubernetes_node_label_(.+)
`, name, path)
}

// prometheusJobs are the scrape jobs and the node endpoint each reads.
var prometheusJobs = [][2]string{{"kubelet", "/metrics"}, {"kubelet-cadvisor", "/metrics/cadvisor"},
	{"kubelet-probes", "/metrics/probes"}, {"kubelet-resource", "/metrics/resource"}}

// deployPrometheus runs a Prometheus server in kube-system that scrapes
// every node's four metrics endpoints, as operators run it; e2e
// TestPrometheusScrapesNodes reads its targets through the apiserver's
// service proxy. make up does not wait for it.
func (l *layout) deployPrometheus(ctx context.Context, cs kubernetes.Interface) error {
	const ns, name = "kube-system", "prometheus"
	labels := map[string]string{"k8s-app": name}
	config := prometheusConfig
	for _, job := range prometheusJobs {
		config += prometheusJob(job[0], job[1])
	}
	objects := []func() error{
		func() error {
			return ignoreExists(cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "bosun-local:prometheus", Labels: labels},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
					{APIGroups: []string{""}, Resources: []string{"nodes/metrics"}, Verbs: []string{"get"}},
				},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "bosun-local:prometheus", Labels: labels},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "bosun-local:prometheus"},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Data: map[string]string{"prometheus.yml": config},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
				Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
					{Name: "web", Port: 9090, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")}}},
			}, metav1.CreateOptions{}))
		},
		func() error {
			return ignoreExists(cs.AppsV1().Deployments(ns).Create(ctx, prometheusDeployment(labels), metav1.CreateOptions{}))
		},
	}
	for _, create := range objects {
		if err := create(); err != nil {
			return fmt.Errorf("prometheus: %w", err)
		}
	}
	return nil
}

func prometheusDeployment(labels map[string]string) *appsv1.Deployment {
	replicas := int32(1)
	uid := int64(65534)
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("web")}},
			PeriodSeconds: 10, FailureThreshold: 3}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "prometheus",
					Containers: []corev1.Container{{
						Name: "prometheus", Image: prometheusImage, ImagePullPolicy: corev1.PullIfNotPresent,
						Args: []string{"--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
							"--storage.tsdb.retention.time=2h", "--web.listen-address=:9090"},
						Ports:          []corev1.ContainerPort{{Name: "web", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}},
						ReadinessProbe: probe("/-/ready"),
						LivenessProbe:  probe("/-/healthy"),
						SecurityContext: &corev1.SecurityContext{RunAsUser: &uid, RunAsNonRoot: ptrTo(true), ReadOnlyRootFilesystem: ptrTo(true),
							AllowPrivilegeEscalation: ptrTo(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/prometheus"}, {Name: "data", MountPath: "/prometheus"}},
					}},
					Volumes: []corev1.Volume{
						{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "prometheus"}}}},
						{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
				},
			},
		},
	}
}
