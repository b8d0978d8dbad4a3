package server

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A /logs/ path, in any encoding, serves a file under the log folder or
// nothing: never the secret beside it.
func FuzzVarLogsPath(f *testing.F) {
	for _, seed := range []string{"/a.log", "/../secret", "/%2e%2e/secret", "//etc/passwd", "/sub/../../secret", "/link", "/link/x", "/./a.log", "/\x00"} {
		f.Add(seed)
	}
	base := f.TempDir()
	logDir := filepath.Join(base, "log")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(logDir, "a.log"), []byte("inside"), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "secret"), []byte("SECRET"), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(logDir, "link")); err != nil {
		f.Fatal(err)
	}
	s := &Server{cfg: Config{LogDir: logDir}}
	h := http.StripPrefix("/logs", http.HandlerFunc(s.varLogs))
	f.Fuzz(func(t *testing.T, raw string) {
		req := httptest.NewRequest("GET", "/", nil)
		p, err := url.PathUnescape(raw)
		if err != nil {
			p = raw
		}
		req.URL = &url.URL{Path: "/logs" + p, RawPath: "/logs" + raw}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if strings.Contains(rec.Body.String(), "SECRET") {
			t.Fatalf("%q served the file outside the log folder", raw)
		}
	})
}

// Log query parameters, whatever they hold, parse or fail; never panic.
func FuzzLogOptionsFromQuery(f *testing.F) {
	for _, seed := range []string{"follow=true&tailLines=5", "sinceSeconds=-1", "limitBytes=99999999999999999999", "sinceTime=yesterday", "tailLines=x&tailLines=y", "%zz"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		_, _ = LogOptionsFromQuery(v)
	})
}
