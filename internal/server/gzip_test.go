package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
