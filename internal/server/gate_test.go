package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Connections that never authenticate hold at most the gate's limit; one
// that authenticates frees its slot for the next client.
func TestConnGateCapsUnauthenticatedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gate := newConnGate(2)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer good" {
			gate.authenticated(r)
			_, _ = io.WriteString(w, "ok")
			return
		}
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	})}
	gate.install(srv)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitCount := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if gate.count() == want {
				return
			}
		}
		t.Fatalf("gate holds %d connections, want %d", gate.count(), want)
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !strings.Contains(err.Error(), "timeout")
	}
	idle1, idle2 := dial(), dial()
	defer idle1.Close()
	defer idle2.Close()
	waitCount(2)
	third := dial()
	defer third.Close()
	if !closed(third) {
		t.Fatal("a third unauthenticated connection was kept past the limit of 2")
	}
	// idle1 authenticates: its slot goes, and the connection stays usable.
	_, _ = io.WriteString(idle1, "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle1), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("authenticated request: %v %v", resp, err)
	}
	waitCount(1)
	fourth := dial()
	defer fourth.Close()
	waitCount(2)
	if closed(fourth) {
		t.Fatal("a connection was refused though a slot was free")
	}
}
