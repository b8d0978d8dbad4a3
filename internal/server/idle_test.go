package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// echoServer hijacks each request through withIdleTimeout and echoes bytes.
func echoServer(t *testing.T, timeout time.Duration) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := withIdleTimeout(w, timeout).(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"))
		_, _ = io.Copy(conn, rw)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func dialUpgraded(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c, br
}

func TestIdleStreamCloses(t *testing.T) {
	c, br := dialUpgraded(t, echoServer(t, 300*time.Millisecond))
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := br.ReadByte()
	if ne, ok := err.(net.Error); err == nil || (ok && ne.Timeout()) {
		t.Fatalf("reading an idle stream gave %v; want the server to close it", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the idle stream closed after %v; the timeout is 300ms", d)
	}
}

func TestBusyStreamStaysOpen(t *testing.T) {
	c, br := dialUpgraded(t, echoServer(t, 400*time.Millisecond))
	// Traffic every 100ms for 1.2s: three times the idle timeout in all.
	for i := 0; i < 12; i++ {
		if _, err := c.Write([]byte{byte('a' + i)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := br.ReadByte()
		if err != nil || b != byte('a'+i) {
			t.Fatalf("echo %d: got %q, %v", i, b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestZeroIdleTimeoutKeepsWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	if got := withIdleTimeout(rec, 0); got != http.ResponseWriter(rec) {
		t.Fatalf("a zero timeout wrapped the writer: %T", got)
	}
}
