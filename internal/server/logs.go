package server

import (
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cri-client/pkg/logs"
)

// LogOptionsFromQuery reads kubectl's log parameters: follow, previous,
// timestamps, tailLines, limitBytes, sinceSeconds, sinceTime.
func LogOptionsFromQuery(q url.Values) (*corev1.PodLogOptions, error) {
	o := &corev1.PodLogOptions{}
	boolOf := func(name string) (bool, error) {
		v := q.Get(name)
		if v == "" {
			return false, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("invalid %s %q: %w", name, v, err)
		}
		return b, nil
	}
	intOf := func(name string) (*int64, error) {
		v := q.Get(name)
		if v == "" {
			return nil, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid %s %q: must be a non-negative integer", name, v)
		}
		return &n, nil
	}
	var err error
	if o.Follow, err = boolOf("follow"); err != nil {
		return nil, err
	}
	if o.Previous, err = boolOf("previous"); err != nil {
		return nil, err
	}
	if o.Timestamps, err = boolOf("timestamps"); err != nil {
		return nil, err
	}
	if o.TailLines, err = intOf("tailLines"); err != nil {
		return nil, err
	}
	if o.LimitBytes, err = intOf("limitBytes"); err != nil {
		return nil, err
	}
	if o.SinceSeconds, err = intOf("sinceSeconds"); err != nil {
		return nil, err
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, fmt.Errorf("invalid sinceTime %q: %w", v, err)
		}
		mt := metav1.NewTime(t)
		o.SinceTime = &mt
	}
	if o.SinceSeconds != nil && o.SinceTime != nil {
		return nil, errors.New("at most one of sinceTime or sinceSeconds may be specified")
	}
	return o, nil
}

// containerLogs streams a container's CRI log file.
func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, err := LogOptionsFromQuery(r.URL.Query())
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	pod, ok := s.host.Pod(ns, name)
	if !ok {
		writeText(w, http.StatusNotFound, fmt.Sprintf("pod %q not found", ns+"/"+name))
		return
	}
	id, path, err := s.host.Container(r.Context(), pod, container, opts.Previous)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Transfer-Encoding", "chunked")
	fw := flushWriter{w: w}
	if f, ok := w.(http.Flusher); ok {
		fw.f = f
	}
	if err := logs.ReadLogs(r.Context(), path, id, criLogOptions(opts, time.Now()), s.host.Runtime(), fw, fw); err != nil && r.Context().Err() == nil {
		_, _ = fmt.Fprintf(w, "failed to read logs of container %s: %v\n", container, err)
	}
}

// criLogOptions turns API log options into the CRI log reader's.
func criLogOptions(o *corev1.PodLogOptions, now time.Time) *logs.LogOptions {
	out := &logs.LogOptions{TailLines: o.TailLines, LimitBytes: o.LimitBytes, Follow: o.Follow, Timestamp: o.Timestamps}
	switch {
	case o.SinceSeconds != nil:
		out.Since = now.Add(-time.Duration(*o.SinceSeconds) * time.Second)
	case o.SinceTime != nil:
		out.Since = o.SinceTime.Time
	}
	return out
}

// flushWriter flushes after each write so that followed logs arrive at once.
type flushWriter struct {
	w io.Writer
	f http.Flusher
}

func (fw flushWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	if fw.f != nil {
		fw.f.Flush()
	}
	return n, err
}

// varLogs serves files and folders under the log dir. os.Root keeps every
// open inside it: no "..", no absolute paths and no symlink out of it.
func (s *Server) varLogs(w http.ResponseWriter, r *http.Request) {
	rel := strings.TrimPrefix(r.URL.Path, "/")
	if rel == "" {
		rel = "."
	}
	f, err := s.openLog(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.NotFound(w, r)
		} else {
			writeText(w, http.StatusForbidden, "forbidden: "+rel)
		}
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !st.IsDir() {
		http.ServeContent(w, r, st.Name(), st.ModTime(), f)
		return
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, "<pre>\n")
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() {
			n += "/"
		}
		fmt.Fprintf(w, "<a href=\"%s\">%s</a>\n", html.EscapeString(url.PathEscape(e.Name())+strings.TrimPrefix(n, e.Name())), html.EscapeString(n))
	}
	fmt.Fprint(w, "</pre>\n")
}

// openLog opens rel below the log folder without leaving it. A last component
// that is an absolute symlink into the log folder or the pod log folder (the
// links in containers/ the node agent writes to pods/<pod>/<container>/N.log)
// is followed, and only then.
func (s *Server) openLog(rel string) (*os.File, error) {
	root, err := os.OpenRoot(s.cfg.LogDir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = root.Close() }()
	f, err := root.Open(rel)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	target, lerr := root.Readlink(rel)
	if lerr != nil || !filepath.IsAbs(target) {
		return nil, err
	}
	for _, dir := range []string{s.cfg.LogDir, s.cfg.PodLogsDir} {
		if dir == "" {
			continue
		}
		inside, rerr := filepath.Rel(filepath.Clean(dir), filepath.Clean(target))
		if rerr != nil || inside == ".." || strings.HasPrefix(inside, "../") {
			continue
		}
		sub, oerr := os.OpenRoot(dir)
		if oerr != nil {
			return nil, oerr
		}
		f, err := sub.Open(inside) // the target's own links stay inside dir
		_ = sub.Close()
		return f, err
	}
	return nil, err
}
