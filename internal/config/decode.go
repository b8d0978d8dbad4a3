// Package config turns the kubelet's command line and KubeletConfiguration
// file (kubelet.config.k8s.io/v1beta1, YAML or JSON) into one validated
// configuration, with upstream's defaults and flag-over-file precedence. It
// does no I/O beyond reading the files it is pointed at.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	// Group and version of the only configuration kind Bosun reads.
	apiVersion = "kubelet.config.k8s.io/v1beta1"
	kind       = "KubeletConfiguration"
)

// Decode parses a KubeletConfiguration document. The result carries no
// defaults. Problems that upstream tolerates with lenient decoding (unknown or
// duplicated fields, JSON that is only valid as YAML, such as a trailing
// comma) come back as warnings; anything that leaves the file's meaning
// unclear is an error naming the field or line.
func Decode(name string, data []byte) (*kubeletv1beta1.KubeletConfiguration, []string, error) {
	var warnings []string
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil, fmt.Errorf("config file %s is empty", name)
	}
	if trimmed[0] == '{' && !json.Valid(trimmed) {
		var jerr error
		var tmp any
		if err := json.Unmarshal(trimmed, &tmp); err != nil {
			jerr = err
		}
		warnings = append(warnings, fmt.Sprintf("config file %s is not valid JSON (%v at line %d); it was read as YAML, "+
			"whose flow syntax accepts it (for example a trailing comma before '}')", name, jerr, jsonErrorLine(trimmed, jerr)))
	}
	asJSON, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		lenient, lerr := yaml.YAMLToJSON(data)
		if lerr != nil {
			return nil, nil, fmt.Errorf("config file %s: %w", name, lerr)
		}
		warnings = append(warnings, fmt.Sprintf("config file %s: %v (the last value is used)", name, err))
		asJSON = lenient
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(asJSON, &meta); err != nil {
		return nil, nil, fmt.Errorf("config file %s: the document is not an object: %w", name, err)
	}
	switch {
	case meta.Kind == "":
		return nil, nil, fmt.Errorf("config file %s: 'kind' is missing (want %q)", name, kind)
	case meta.APIVersion == "":
		return nil, nil, fmt.Errorf("config file %s: 'apiVersion' is missing (want %q)", name, apiVersion)
	case meta.Kind != kind || meta.APIVersion != apiVersion:
		return nil, nil, fmt.Errorf("config file %s: kind %q apiVersion %q is not supported (want kind %q apiVersion %q)",
			name, meta.Kind, meta.APIVersion, kind, apiVersion)
	}
	kc := &kubeletv1beta1.KubeletConfiguration{}
	strictErrs, err := sigsjson.UnmarshalStrict(asJSON, kc, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, nil, fmt.Errorf("config file %s: %w", name, describeJSONError(err))
	}
	for _, e := range strictErrs {
		warnings = append(warnings, fmt.Sprintf("config file %s: %v (ignored, as upstream's lenient decoding does)", name, e))
	}
	return kc, warnings, nil
}

// describeJSONError names the field of a type mismatch.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if ok := asType(err, &te); ok && te.Field != "" {
		return fmt.Errorf("field %q: cannot use a JSON %s here (it needs a %s)", te.Field, te.Value, te.Type)
	}
	return err
}

func asType[T error](err error, target *T) bool {
	for err != nil {
		if t, ok := err.(T); ok {
			*target = t
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// jsonErrorLine returns the 1-based line of a JSON syntax error, or 0.
func jsonErrorLine(data []byte, err error) int {
	var se *json.SyntaxError
	if !asType(err, &se) || se.Offset <= 0 || int(se.Offset) > len(data) {
		return 0
	}
	return strings.Count(string(data[:se.Offset]), "\n") + 1
}
