package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	corev1 "k8s.io/api/core/v1"
)

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"":                       false,
		"gzip":                   true,
		"GZIP":                   true,
		"deflate, gzip;q=1.0, *": true,
		"br, gzip; q=0.5":        true,
		"gzip;q=0":               false,
		"gzip; q=0.0, identity":  false,
		"identity":               false,
		"x-gzip":                 false,
		"deflate,br":             false,
		"gzip;level=1":           true,
		"gzip;q=bogus":           false,
	} {
		h := http.Header{}
		if header != "" {
			h.Set("Accept-Encoding", header)
		}
		if got := acceptsGzip(h); got != want {
			t.Errorf("Accept-Encoding %q: got %v, want %v", header, got, want)
		}
	}
}

func TestGzipResponse(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := (gzipResponse{rec}).WriteGzip([]byte("compressed")); err != nil {
		t.Fatal(err)
	}
	h := rec.Result().Header
	if h.Get("Content-Encoding") != "gzip" || h.Get("Vary") != "Accept-Encoding" || h.Get("Content-Length") != "10" || rec.Body.String() != "compressed" {
		t.Errorf("headers %v, body %q", h, rec.Body.String())
	}
}

// listHost serves /pods from a PodListCache, as the agent's host does.
type listHost struct {
	fakeHost
	cache   *PodListCache
	entries []PodEntry
}

func (h listHost) PodListJSON(gzipped bool) ([]byte, error) {
	data, err := h.cache.Encode(h.entries)
	if err != nil || !gzipped {
		return data, err
	}
	return h.cache.Gzip(data)
}

func TestPodsGzippedForClientsThatTakeIt(t *testing.T) {
	pod := &corev1.Pod{}
	pod.Name, pod.UID = "a", "ua"
	s := &Server{host: listHost{cache: &PodListCache{}, entries: []PodEntry{{UID: "ua", Key: "1/1", Pod: func() (*corev1.Pod, string) { return pod, "1/1" }}}}}
	plain := httptest.NewRecorder()
	s.pods(plain, httptest.NewRequest("GET", "/pods", nil))
	if plain.Header().Get("Content-Encoding") != "" || !strings.Contains(plain.Body.String(), `"name":"a"`) {
		t.Fatalf("without Accept-Encoding: headers %v, body %q", plain.Header(), plain.Body.String())
	}
	req := httptest.NewRequest("GET", "/pods", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	zipped := httptest.NewRecorder()
	s.pods(zipped, req)
	if zipped.Header().Get("Content-Encoding") != "gzip" || zipped.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("with gzip: headers %v", zipped.Header())
	}
	zr, err := gzip.NewReader(zipped.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(zr)
	if string(body) != plain.Body.String() {
		t.Errorf("gzip body %q, want %q", body, plain.Body.String())
	}
}
