package podsource

import (
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validateStatic checks a static pod as the apiserver checks the names of a
// pod it is sent: a manifest never went through the apiserver, and its names
// become folders, mounts and log files on the host.
func validateStatic(pod *corev1.Pod) field.ErrorList {
	var errs field.ErrorList
	label := func(p *field.Path, v string) {
		for _, msg := range validation.IsDNS1123Label(v) {
			errs = append(errs, field.Invalid(p, v, msg))
		}
	}
	for _, msg := range validation.IsDNS1123Subdomain(pod.Name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), pod.Name, msg))
	}
	label(field.NewPath("metadata", "namespace"), pod.Namespace)

	spec := field.NewPath("spec")
	volumes := map[string]bool{}
	for i, v := range pod.Spec.Volumes {
		p := spec.Child("volumes").Index(i).Child("name")
		label(p, v.Name)
		if volumes[v.Name] {
			errs = append(errs, field.Duplicate(p, v.Name))
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	check := func(list string, i int, c *corev1.Container) {
		p := spec.Child(list).Index(i)
		label(p.Child("name"), c.Name)
		if names[c.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), c.Name))
		}
		names[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			errs = append(errs, field.Required(p.Child("image"), "a container needs an image"))
		}
		for j, m := range c.VolumeMounts {
			mp := p.Child("volumeMounts").Index(j)
			if !volumes[m.Name] {
				errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
			}
			if m.MountPath == "" {
				errs = append(errs, field.Required(mp.Child("mountPath"), ""))
			}
			if msg := badSubPath(m.SubPath); msg != "" {
				errs = append(errs, field.Invalid(mp.Child("subPath"), m.SubPath, msg))
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		check("initContainers", i, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		check("containers", i, &pod.Spec.Containers[i])
	}
	if len(pod.Spec.EphemeralContainers) > 0 {
		errs = append(errs, field.Forbidden(spec.Child("ephemeralContainers"), "a static pod cannot have ephemeral containers"))
	}
	return errs
}

// badSubPath says why a subPath may not be used: it must stay inside its
// volume, as the apiserver requires.
func badSubPath(sub string) string {
	if sub == "" {
		return ""
	}
	if path.IsAbs(sub) {
		return "must be a relative path"
	}
	for _, part := range strings.Split(sub, "/") {
		if part == ".." {
			return "must not contain '..'"
		}
	}
	return ""
}

// staticError names the manifest and every bad field.
func staticError(source string, errs field.ErrorList) error {
	return fmt.Errorf("%s: invalid static pod: %w", source, errs.ToAggregate())
}
