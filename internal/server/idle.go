package server

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// idleWriter hands out hijacked connections that close themselves after a
// period without traffic in either direction: streamingConnectionIdleTimeout
// for exec, attach and port-forward. Zero means no limit.
type idleWriter struct {
	http.ResponseWriter
	timeout time.Duration
}

func withIdleTimeout(w http.ResponseWriter, timeout time.Duration) http.ResponseWriter {
	if timeout <= 0 {
		return w
	}
	return &idleWriter{ResponseWriter: w, timeout: timeout}
}

func (w *idleWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *idleWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be taken over for streaming")
	}
	conn, rw, err := h.Hijack()
	if err != nil {
		return nil, nil, err
	}
	ic := newIdleConn(conn, w.timeout)
	// The buffered reader may hold bytes already read from conn; reads
	// through it must count as traffic too, so rebuild it over ic.
	if rw != nil {
		rw = bufio.NewReadWriter(bufio.NewReader(readerThen{buf: rw.Reader, conn: ic}), bufio.NewWriter(ic))
	}
	return ic, rw, nil
}

// readerThen drains what the server had buffered, then reads conn.
type readerThen struct {
	buf  *bufio.Reader
	conn net.Conn
}

func (r readerThen) Read(p []byte) (int, error) {
	if r.buf.Buffered() > 0 {
		return r.buf.Read(p)
	}
	return r.conn.Read(p)
}

// idleConn closes itself when no byte has moved for timeout.
type idleConn struct {
	net.Conn
	timeout time.Duration
	mu      sync.Mutex
	timer   *time.Timer
	closed  bool
}

func newIdleConn(c net.Conn, timeout time.Duration) *idleConn {
	ic := &idleConn{Conn: c, timeout: timeout}
	ic.timer = time.AfterFunc(timeout, func() { _ = ic.Close() })
	return ic
}

func (c *idleConn) touch() {
	c.mu.Lock()
	if !c.closed {
		c.timer.Reset(c.timeout)
	}
	c.mu.Unlock()
}

func (c *idleConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *idleConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.timer.Stop()
	c.mu.Unlock()
	return c.Conn.Close()
}
