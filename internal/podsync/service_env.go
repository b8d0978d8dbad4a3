package podsync

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// serviceEnv is the Docker-link style environment of the services a pod can
// see: the apiserver's `kubernetes` service always, and with
// enableServiceLinks (the default) every service of the pod's namespace.
func serviceEnv(ctx context.Context, objs Objects, pod *corev1.Pod) ([][2]string, error) {
	if objs == nil {
		return nil, nil
	}
	var services []*corev1.Service
	master, err := objs.Services(ctx, "default")
	if err != nil {
		return nil, fmt.Errorf("failed to list services for the environment: %w", err)
	}
	for _, s := range master {
		if s.Name == "kubernetes" {
			services = append(services, s)
		}
	}
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		local, err := objs.Services(ctx, pod.Namespace)
		if err != nil {
			return nil, fmt.Errorf("failed to list services for the environment: %w", err)
		}
		for _, s := range local {
			if pod.Namespace != "default" || s.Name != "kubernetes" {
				services = append(services, s)
			}
		}
	}
	sort.SliceStable(services, func(i, j int) bool { return services[i].Name < services[j].Name })
	var out [][2]string
	for _, s := range services {
		ip := s.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
			continue
		}
		out = append(out, serviceVars(s, ip)...)
	}
	return out, nil
}

func serviceVars(s *corev1.Service, ip string) [][2]string {
	name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	first := s.Spec.Ports[0]
	vars := [][2]string{
		{name + "_SERVICE_HOST", ip},
		{name + "_SERVICE_PORT", strconv.Itoa(int(first.Port))},
	}
	for _, p := range s.Spec.Ports {
		if p.Name != "" {
			vars = append(vars, [2]string{name + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), strconv.Itoa(int(p.Port))})
		}
	}
	url := func(p corev1.ServicePort) string {
		return strings.ToLower(string(p.Protocol)) + "://" + net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
	}
	vars = append(vars, [2]string{name + "_PORT", url(first)})
	for _, p := range s.Spec.Ports {
		prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, strings.ToUpper(string(p.Protocol)))
		vars = append(vars,
			[2]string{prefix, url(p)},
			[2]string{prefix + "_PROTO", strings.ToLower(string(p.Protocol))},
			[2]string{prefix + "_PORT", strconv.Itoa(int(p.Port))},
			[2]string{prefix + "_ADDR", ip})
	}
	return vars
}
