package server

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// maxUnauthenticated caps the connections to 10250 that have not yet carried
// an authenticated request. A client that opens connections and sends nothing
// useful holds at most this many; authenticated clients are not counted.
var maxUnauthenticated = 512

// connGate counts unauthenticated connections. A connection takes a slot
// when accepted and gives it back when a request on it authenticates, or
// when it closes or is hijacked. A connection that finds no slot is closed
// at once.
type connGate struct {
	mu    sync.Mutex
	limit int
	held  map[net.Conn]bool
}

func newConnGate(limit int) *connGate { return &connGate{limit: limit, held: map[net.Conn]bool{}} }

type connKey struct{}

// install hooks the gate into srv.
func (g *connGate) install(srv *http.Server) {
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			g.mu.Lock()
			full := len(g.held) >= g.limit
			if !full {
				g.held[c] = true
			}
			g.mu.Unlock()
			if full {
				_ = c.Close()
			}
		case http.StateClosed, http.StateHijacked:
			g.release(c)
		}
	}
}

func (g *connGate) release(c net.Conn) {
	g.mu.Lock()
	delete(g.held, c)
	g.mu.Unlock()
}

// authenticated gives back the slot of the request's connection.
func (g *connGate) authenticated(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		g.release(c)
	}
}

func (g *connGate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}
