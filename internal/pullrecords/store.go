package pullrecords

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"

	"github.com/bosun-dev/bosun/internal/atomicfile"
)

// The record files, as the upstream kubelet lays them out: one JSON object
// per file, named sha256-<hex of the image or image ref>, in
// <root-dir>/image_manager/pulling (intents) and .../pulled (records).
const (
	filePrefix   = "sha256-"
	groupVersion = "kubelet.config.k8s.io/v1beta1"
	oldVersion   = "kubelet.config.k8s.io/v1alpha1" // read and rewritten as v1beta1
	intentKind   = "ImagePullIntent"
	recordKind   = "ImagePulledRecord"
)

type store struct {
	pulling, pulled string
}

func openStore(rootDir string) (*store, error) {
	s := &store{
		pulling: filepath.Join(rootDir, "image_manager", "pulling"),
		pulled:  filepath.Join(rootDir, "image_manager", "pulled"),
	}
	for _, d := range []string{s.pulling, s.pulled} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image pull records: %w", err)
		}
	}
	return s, nil
}

func fileName(key string) string {
	return fmt.Sprintf("%s%x", filePrefix, sha256.Sum256([]byte(key)))
}

// decode reads one record strictly (an unknown field is an error, as
// upstream's strict decoder has it) and says whether it was an older version.
func decode(data []byte, kind string, into any) (old bool, err error) {
	var meta metav1.TypeMeta
	if err := json.Unmarshal(data, &meta); err != nil {
		return false, err
	}
	if meta.Kind != kind || (meta.APIVersion != groupVersion && meta.APIVersion != oldVersion) {
		return false, fmt.Errorf("not a %s of %s: kind %q, apiVersion %q", kind, groupVersion, meta.Kind, meta.APIVersion)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(into); err != nil {
		return false, err
	}
	return meta.APIVersion == oldVersion, nil
}

func encode(obj any) ([]byte, error) {
	return json.Marshal(obj)
}

func (s *store) writeIntent(image string) error {
	data, err := encode(&kubeletv1beta1.ImagePullIntent{
		TypeMeta: metav1.TypeMeta{Kind: intentKind, APIVersion: groupVersion}, Image: image})
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.pulling, fileName(image)), data, 0o600)
}

func (s *store) deleteIntent(image string) error {
	if err := os.Remove(filepath.Join(s.pulling, fileName(image))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (s *store) writeRecord(r *kubeletv1beta1.ImagePulledRecord) error {
	r.TypeMeta = metav1.TypeMeta{Kind: recordKind, APIVersion: groupVersion}
	data, err := encode(r)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.pulled, fileName(r.ImageRef)), data, 0o600)
}

func (s *store) deleteRecord(imageRef string) error {
	if err := os.Remove(filepath.Join(s.pulled, fileName(imageRef))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// each calls fn with every record file of dir (not temporary files, not
// folders), and returns the errors of files it could not read.
func each(dir string, fn func(path string, data []byte) error) []error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasPrefix(e.Name(), filePrefix) || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err == nil {
			err = fn(path, data)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	return errs
}

// loaded is what the store held at start.
type loaded struct {
	intents map[string]bool                              // images being pulled when the last agent stopped
	records map[string]*kubeletv1beta1.ImagePulledRecord // by image ref
	broken  map[string]bool                              // record files that could not be read, by file name
	errs    []error
}

// load reads every intent and record, rewriting older versions as v1beta1.
func (s *store) load() loaded {
	l := loaded{intents: map[string]bool{}, records: map[string]*kubeletv1beta1.ImagePulledRecord{}, broken: map[string]bool{}}
	l.errs = append(l.errs, each(s.pulling, func(path string, data []byte) error {
		var in kubeletv1beta1.ImagePullIntent
		old, err := decode(data, intentKind, &in)
		if err != nil {
			return err
		}
		l.intents[in.Image] = true
		if old {
			return s.writeIntent(in.Image)
		}
		return nil
	})...)
	l.errs = append(l.errs, each(s.pulled, func(path string, data []byte) error {
		r := &kubeletv1beta1.ImagePulledRecord{}
		old, err := decode(data, recordKind, r)
		if err != nil {
			l.broken[filepath.Base(path)] = true
			return err
		}
		if filepath.Base(path) != fileName(r.ImageRef) {
			return fmt.Errorf("the record is for image %q, whose file would be %s", r.ImageRef, fileName(r.ImageRef))
		}
		l.records[r.ImageRef] = r
		if old {
			return s.writeRecord(r)
		}
		return nil
	})...)
	return l
}
