package podsync

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/bosun-dev/bosun/internal/downward"
)

// Objects reads what container environments refer to.
type Objects interface {
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	Services(ctx context.Context, namespace string) ([]*corev1.Service, error)
}

// ConfigError is a problem with a container's configuration that the pod's
// author must fix (a missing ConfigMap key, say): the container waits with
// reason CreateContainerConfigError and this message.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// envInputs are the pod facts environment variables can name.
type envInputs struct {
	pod         *corev1.Pod
	podIPs      []string
	hostIPs     []string
	allocatable corev1.ResourceList
}

// containerEnv resolves a container's environment: service links, envFrom,
// then env in order, each value expanded with $(VAR) against the earlier ones.
func containerEnv(ctx context.Context, objs Objects, in envInputs, c *corev1.Container) ([]*runtimeKV, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	svcEnv, err := serviceEnv(ctx, objs, in.pod)
	if err != nil {
		return nil, err
	}
	for _, kv := range svcEnv {
		set(kv[0], kv[1])
	}
	for _, from := range c.EnvFrom {
		data, err := envFromSource(ctx, objs, in.pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom == nil {
			val = Expand(val, vars)
		} else if val, err = envValueFrom(ctx, objs, in, c, e); err != nil {
			return nil, err
		}
		set(e.Name, val)
	}
	out := make([]*runtimeKV, 0, len(order))
	for _, k := range order {
		out = append(out, &runtimeKV{Key: k, Value: vars[k]})
	}
	return out, nil
}

// runtimeKV is one environment variable.
type runtimeKV struct{ Key, Value string }

func envFromSource(ctx context.Context, objs Objects, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case from.ConfigMapRef != nil:
		optional := from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional
		cm, err := objs.ConfigMap(ctx, ns, from.ConfigMapRef.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return nil, nil
			}
			return nil, refError(err, "configmap", from.ConfigMapRef.Name)
		}
		return cm.Data, nil
	case from.SecretRef != nil:
		optional := from.SecretRef.Optional != nil && *from.SecretRef.Optional
		s, err := objs.Secret(ctx, ns, from.SecretRef.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return nil, nil
			}
			return nil, refError(err, "secret", from.SecretRef.Name)
		}
		out := map[string]string{}
		for k, v := range s.Data {
			out[k] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

func refError(err error, kind, name string) error {
	if apierrors.IsNotFound(err) {
		return &ConfigError{Msg: fmt.Sprintf("%s %q not found", kind, name)}
	}
	return fmt.Errorf("failed to get %s %q: %w", kind, name, err)
}

func envValueFrom(ctx context.Context, objs Objects, in envInputs, c *corev1.Container, e corev1.EnvVar) (string, error) {
	ns := in.pod.Namespace
	switch src := e.ValueFrom; {
	case src.FieldRef != nil:
		v, err := downward.FieldValue(downward.Pod{Pod: in.pod, PodIPs: in.podIPs, HostIPs: in.hostIPs}, src.FieldRef.FieldPath)
		if err != nil {
			return "", &ConfigError{Msg: err.Error()}
		}
		return v, nil
	case src.ResourceFieldRef != nil:
		v, err := downward.ResourceValue(in.pod, c, src.ResourceFieldRef, in.allocatable)
		if err != nil {
			return "", &ConfigError{Msg: err.Error()}
		}
		return v, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := objs.ConfigMap(ctx, ns, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", nil
			}
			return "", refError(err, "configmap", ref.Name)
		}
		v, ok := cm.Data[ref.Key]
		if !ok && !optional {
			return "", &ConfigError{Msg: fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, ns, ref.Name)}
		}
		return v, nil
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := objs.Secret(ctx, ns, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", nil
			}
			return "", refError(err, "secret", ref.Name)
		}
		v, ok := s.Data[ref.Key]
		if !ok && !optional {
			return "", &ConfigError{Msg: fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, ns, ref.Name)}
		}
		return string(v), nil
	}
	return "", nil
}

// Expand replaces $(VAR) with the value of VAR when it is defined; $$ is a
// literal $, and anything else is left as written, as upstream does.
func Expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += end + 2
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
