// Package bridge is the websocket gateway between companion authenticator apps and the status
// service: it speaks the mfa-bridge.v1 protocol (see package protocol and PROTOCOL.md) to apps
// and turns each request into a NATS command.
//
// The bridge holds no state of its own beyond open connections, so any number of replicas can
// run behind a load balancer; which replica a companion lands on does not matter because every
// answer comes from the status service.
package bridge

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/mobile-bridge/protocol"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/nats-io/nats.go"
)

// Defaults for the zero fields of Config.
const (
	DefaultMaxFrameBytes  = 16 << 10
	DefaultPingInterval   = 30 * time.Second
	DefaultRequestTimeout = 5 * time.Second
)

// HardFrameBytes is the largest frame the bridge reads at all. A frame above MaxFrameBytes is
// read and discarded so the connection survives a client bug, but discarding still costs
// bandwidth, so past this size the peer is treated as hostile and the connection is closed with
// 1009 (message too big).
const HardFrameBytes = 1 << 20

// writeWait bounds every write, so a peer that stops reading cannot pin a goroutine forever.
const writeWait = 10 * time.Second

// closeGrace is how long Close waits for peers to answer the going-away close frame before it
// drops their connections.
const closeGrace = 2 * time.Second

// Config tunes the bridge. Zero fields take the defaults above.
type Config struct {
	// MaxFrameBytes is the soft limit per frame: a larger frame is answered with a
	// payload_too_large error frame and the connection stays open. It is capped at HardFrameBytes.
	MaxFrameBytes int
	// PingInterval is how often the bridge pings each connection. A peer that sends nothing
	// (not even a pong) for twice this long is considered gone and disconnected, which also
	// keeps idle NAT and proxy mappings alive.
	PingInterval time.Duration
	// RequestTimeout bounds each NATS command; a status service that does not answer in time
	// is reported to the client as unavailable.
	RequestTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.MaxFrameBytes > HardFrameBytes {
		c.MaxFrameBytes = HardFrameBytes
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	return c
}

// Service serves the bridge endpoint. It is safe for concurrent use; create it with New.
type Service struct {
	nc       *nats.Conn
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader

	// ctx is cancelled by Close so in-flight commands stop waiting for NATS.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New returns a bridge that sends commands over nc.
func New(nc *nats.Conn, cfg Config, log *slog.Logger) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		nc:     nc,
		cfg:    cfg.withDefaults(),
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		conns:  map[*conn]struct{}{},
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// Selected only when the client offers it; clients that offer nothing still get the
		// protocol, so simple tools (wscat, a browser console) work for debugging.
		Subprotocols: []string{protocol.Subprotocol},
		// Origin checks defend cookie-authenticated browser sessions against cross-site
		// websocket hijacking. The bridge has no cookies or ambient credentials to steal:
		// companion apps are not browsers and often send no Origin at all, and the only
		// authority a connection ever uses is the exchange_id it presents in each frame,
		// which a cross-site page could not know. So every origin is allowed.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			// gorilla's reasons are about the handshake headers, safe and useful to show.
			httpx.WriteProblem(w, r, fault.New(fault.BadRequest, "websocket handshake failed: "+reason.Error()))
		},
	}
	return s
}

// Routes registers the bridge endpoint (protocol.Path) on rt.
func (s *Service) Routes(rt *httpx.Router) {
	rt.HandleFunc("GET "+protocol.Path, s.handleConnect)
}

// Close says goodbye to every open connection with a 1001 (going away) close frame, so apps
// know to reconnect to another replica, and returns when all connection goroutines have ended.
// Connections that do not answer the close frame within a short grace period are dropped.
// New connections are refused from the moment Close is called.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	s.cancel()
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	for _, c := range conns {
		// WriteControl may run concurrently with the connection's own writer.
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(closeGrace):
	}
	for _, c := range conns {
		_ = c.ws.NetConn().Close()
	}
	<-done
	return nil
}

func (s *Service) handleConnect(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		httpx.WriteProblem(w, r, fault.New(fault.Unavailable, "server shutting down; reconnect"))
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered already; a failed handshake is the client's business.
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := newConn(s, ws, r.RemoteAddr)
	if !s.track(c) {
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"),
			time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	defer s.untrack(c)
	c.serve()
}

// track registers c unless the service is closing. Adding to the WaitGroup under the same lock
// that Close takes keeps Add from racing with Wait.
func (s *Service) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Service) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}
