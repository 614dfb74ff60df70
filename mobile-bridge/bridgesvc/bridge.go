// Package bridgesvc is the websocket gateway between companion authenticator apps and the status
// service: it speaks the mfa-bridge.v1 protocol (see package protocol and PROTOCOL.md) to apps
// and turns each request into a NATS command.
//
// The bridge holds no state of its own beyond open connections, so any number of replicas can
// run behind a load balancer; which replica a companion lands on does not matter because every
// answer comes from the status service.
package bridgesvc

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/nats-io/nats.go"
)

// Defaults for the zero fields of Config.
const (
	DefaultMaxFrameBytes  = 16 << 10
	DefaultPingInterval   = 30 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultMaxConnections = 10000
	DefaultFrameRate      = 10
	DefaultFrameBurst     = 20
)

// FloodFactor is how many excess frames, in multiples of the burst, a connection may send
// beyond its frame rate before it is closed with 1008 (policy violation). Excess frames are
// forgiven at the frame rate, so a client that is merely a little too fast only gets error
// frames; one that keeps sending far faster is cut off.
const FloodFactor = 10

// RetryAfter is the Retry-After (seconds) of the 503 that refuses a connection because the
// replica is full or shutting down.
const RetryAfter = 5

// writeBufferSize is the write buffer of a connection. It is only borrowed from a pool while a
// frame is written, so an idle connection holds none; frames are small JSON objects. There is
// no read buffer size: the connection reuses the HTTP server's read buffer, which stays
// referenced by the hijacked HTTP connection anyway, so a buffer of its own would only add.
const writeBufferSize = 1 << 10

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
	// MaxConnections caps the open websocket connections of this replica (counting those being
	// upgraded). One more is refused before the upgrade with 503 unavailable and Retry-After.
	// Each connection costs a file descriptor, so keep it below the process's open-file limit.
	MaxConnections int
	// FrameRate (frames per second) and FrameBurst bound the frames each connection may send.
	// An excess frame is answered with a too_many_requests error frame and not handled; the
	// connection stays open unless the client keeps flooding (see FloodFactor).
	FrameRate  float64
	FrameBurst int
	// Clock is the time of the frame rate limiter; nil means time.Now. Tests replace it.
	Clock func() time.Time
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
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.FrameRate <= 0 {
		c.FrameRate = DefaultFrameRate
	}
	if c.FrameBurst <= 0 {
		c.FrameBurst = DefaultFrameBurst
	}
	if c.Clock == nil {
		c.Clock = time.Now
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

	// inbox feeds the dispatcher with the messages of every device session's subscriptions.
	inbox chan *nats.Msg

	mu    sync.Mutex
	conns map[*conn]struct{}
	// sessions finds the device session of a subscription.
	sessions map[*nats.Subscription]*session
	// slots counts connections that hold a place under MaxConnections: those in conns and
	// those still being upgraded.
	slots  int
	closed bool
	wg     sync.WaitGroup
}

// New returns a bridge that sends commands over nc.
func New(_ context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Service, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		nc:     nc,
		cfg:    cfg.withDefaults(),
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		conns:  map[*conn]struct{}{},

		inbox:    make(chan *nats.Msg, inboxSize),
		sessions: map[*nats.Subscription]*session{},
	}
	go s.dispatch()
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  &sync.Pool{},
		// Selected only when the client offers it; clients that offer nothing still get the
		// protocol, so simple tools (wscat, a browser console) work for debugging.
		Subprotocols: []string{protocol.Subprotocol},
		// Origin checks defend cookie-authenticated browser sessions against cross-site
		// websocket hijacking. The bridge has no cookies or ambient credentials to steal:
		// companion apps are not browsers and often send no Origin at all, and the only
		// authority a connection ever uses is the exchange_id it presents in each frame or a
		// device-key signature over this connection's nonce, neither of which a cross-site
		// page could produce. So every origin is allowed.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			// gorilla's reasons are about the handshake headers, safe and useful to show.
			httpx.WriteProblem(w, r, fault.New(fault.BadRequest, "websocket handshake failed: "+reason.Error()))
		},
	}
	return s, nil
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
	// The slot is taken before the upgrade, so a full replica refuses with a plain HTTP answer
	// the client can act on (and a load balancer can see), not a websocket closed at once.
	if fe := s.reserve(); fe != nil {
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
		httpx.WriteProblem(w, r, fe)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.release()
		// The upgrader has answered already; a failed handshake is the client's business.
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := newConn(s, ws, r.RemoteAddr)
	if !s.track(c) {
		s.release()
		_ = ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"),
			time.Now().Add(time.Second))
		_ = ws.Close()
		return
	}
	defer s.untrack(c)
	c.serve()
}

// reserve takes a connection slot, or says why there is none.
func (s *Service) reserve() *fault.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fault.New(fault.Unavailable, "server shutting down; reconnect")
	case s.slots >= s.cfg.MaxConnections:
		return fault.New(fault.Unavailable, "too many connections on this server; retry later")
	}
	s.slots++
	return nil
}

func (s *Service) release() {
	s.mu.Lock()
	s.slots--
	s.mu.Unlock()
}

// Connections is the number of open websocket connections.
func (s *Service) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
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
	metrics.BridgeConnections.Inc()
	return true
}

// untrack forgets c and frees its slot.
func (s *Service) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.slots--
	s.mu.Unlock()
	metrics.BridgeConnections.Dec()
	s.wg.Done()
}
