package bridgesvc

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/fault"
)

// conn is one companion connection. Its read loop runs in the HTTP handler's goroutine and
// answers requests one after the other, which keeps answers in request order without any
// queueing. That is the only goroutine an idle connection holds: pings are sent from a timer,
// whose callback runs only while it writes the ping.
type conn struct {
	s   *Service
	ws  *websocket.Conn
	log *slog.Logger

	// writeMu serialises data frames: gorilla allows a single concurrent writer. Control
	// frames (ping, close) go through WriteControl, which gorilla allows alongside it.
	writeMu sync.Mutex

	// pingMu guards pingTimer and stopped: the timer callback holds it while it pings, and
	// serve's exit sets stopped under it, so no ping re-arms the timer after the end.
	pingMu    sync.Mutex
	pingTimer *time.Timer
	stopped   bool

	// frames is the frame rate limit; excess is the flood allowance spent by frames over it.
	// Only the read loop touches them.
	frames, excess bucket

	// nonce is the unspent nonce of the latest hello, sess the device session once logged in,
	// and after what the read loop does once the current answer is written (a fresh hello after
	// a refused login, pending challenges after a login). Only the read loop touches them.
	nonce string
	sess  *session
	after func() error

	// replaced is set when a newer session of the device took over; the read loop then stops.
	replaced atomic.Bool

	// pushed are the last challenges written to this connection, so that one that reaches it
	// twice (the status service sent it live while the login's pending lookup also found it) is
	// written once.
	pushedMu sync.Mutex
	pushed   [8]string
	pushedAt int
}

func newConn(s *Service, ws *websocket.Conn, remote string) *conn {
	return &conn{
		s:  s,
		ws: ws,
		// A random id ties the log lines of one connection together without logging anything
		// the client sent (exchange ids are capabilities and stay out of logs).
		log: s.log.With("conn", uuid.NewString(), "remote", remote),
	}
}

func (c *conn) serve() {
	ping := c.s.cfg.PingInterval
	c.ws.SetReadLimit(HardFrameBytes)
	// Any sign of life from the peer counts, a pong to our ping or a ping of its own.
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(2 * ping))
	})
	c.ws.SetPingHandler(func(data string) error {
		if err := c.ws.SetReadDeadline(time.Now().Add(2 * ping)); err != nil {
			return err
		}
		err := c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) {
			return nil // as gorilla's default: the read side will see the real failure
		}
		return err
	})

	now := c.s.cfg.Clock()
	c.frames = newBucket(c.s.cfg.FrameRate, c.s.cfg.FrameBurst, now)
	c.excess = newBucket(c.s.cfg.FrameRate, FloodFactor*c.s.cfg.FrameBurst, now)

	c.pingMu.Lock()
	c.pingTimer = time.AfterFunc(ping, c.ping)
	c.pingMu.Unlock()
	defer func() {
		_ = c.ws.Close() // also unblocks a ping stuck on a dead peer
		c.pingMu.Lock()
		c.stopped = true
		c.pingTimer.Stop()
		c.pingMu.Unlock()
	}()

	defer func() {
		if c.sess != nil {
			c.s.endSession(c.sess)
		}
	}()

	c.log.Debug("bridge connection opened", "subprotocol", c.ws.Subprotocol())
	c.nonce = newNonce()
	if err := c.write(protocol.Hello{Type: protocol.TypeHello, Nonce: c.nonce}); err != nil {
		c.logEnd(err)
		return
	}
	for {
		if c.replaced.Load() {
			return
		}
		// Set before every read rather than after it: a request may take up to RequestTimeout,
		// and the peer's pongs are only seen while reading.
		if err := c.ws.SetReadDeadline(time.Now().Add(2 * ping)); err != nil {
			return
		}
		kind, r, err := c.ws.NextReader()
		if err != nil {
			c.logEnd(err)
			return
		}
		data, tooBig, err := readFrame(r, c.s.cfg.MaxFrameBytes)
		if err != nil {
			c.logEnd(err)
			return
		}
		if kind == websocket.TextMessage && !tooBig && !utf8.Valid(data) {
			// RFC 6455 §8.1: an endpoint that receives a text frame that is not UTF-8 fails
			// the connection with 1007, rather than guess what the client meant (the JSON
			// decoder would quietly turn the bytes into U+FFFD).
			c.log.Debug("bridge connection closed: text frame is not valid UTF-8")
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, "text frame is not valid UTF-8"),
				time.Now().Add(writeWait))
			return
		}
		var answer any
		switch now := c.s.cfg.Clock(); {
		case !c.frames.take(now):
			if !c.excess.take(now) {
				c.log.Warn("bridge connection closed: frame flood", "rate", c.s.cfg.FrameRate, "burst", c.s.cfg.FrameBurst)
				_ = c.ws.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "too many frames"),
					time.Now().Add(writeWait))
				return
			}
			answer = errorFrame(frameID(kind, tooBig, data), fault.New(fault.TooManyRequests,
				"more than "+strconv.FormatFloat(c.s.cfg.FrameRate, 'g', -1, 64)+" frames per second; slow down"))
		case kind != websocket.TextMessage:
			answer = errorFrame("", fault.New(fault.BadRequest, "binary frames are not supported; send JSON text frames"))
		case tooBig:
			answer = errorFrame("", fault.New(fault.PayloadTooLarge,
				"frame exceeds "+strconv.Itoa(c.s.cfg.MaxFrameBytes)+" bytes"))
		default:
			answer = c.handle(data)
		}
		if err := c.write(answer); err != nil {
			c.logEnd(err)
			return
		}
		if after := c.after; after != nil {
			c.after = nil
			if err := after(); err != nil {
				c.logEnd(err)
				return
			}
		}
	}
}

// readFrame reads at most max bytes of a frame. A longer frame is drained and reported as too
// big instead of failing the connection; gorilla's read limit (HardFrameBytes) still applies
// while draining and closes the connection with 1009.
func readFrame(r io.Reader, max int) (data []byte, tooBig bool, err error) {
	data, err = io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) <= max {
		return data, false, nil
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, false, err
	}
	return nil, true, nil
}

// frameID is the id of a frame that is refused unread, so its error frame can still name the
// request when the frame is JSON with an id.
func frameID(kind int, tooBig bool, data []byte) string {
	if kind != websocket.TextMessage || tooBig {
		return ""
	}
	var f struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(data, &f)
	return f.ID
}

// ping runs on the ping timer and re-arms it. A ping that fails ends the pinging; the read
// deadline then ends the connection.
func (c *conn) ping() {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	if c.stopped {
		return
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
		return
	}
	c.pingTimer.Reset(c.s.cfg.PingInterval)
}

func (c *conn) write(v any) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return err
	}
	return c.ws.WriteJSON(v)
}

// logEnd records why a connection ended. Disconnects are routine for a mobile gateway, so only
// a peer that blew the hard frame limit is worth more than a debug line.
func (c *conn) logEnd(err error) {
	if errors.Is(err, websocket.ErrReadLimit) {
		c.log.Warn("bridge connection closed: frame above hard limit", "limit", HardFrameBytes)
		return
	}
	c.log.Debug("bridge connection closed", "err", err)
}

func errorFrame(id string, fe *fault.Error) protocol.Error {
	return protocol.Error{Type: protocol.TypeError, ID: id, Code: string(fe.Code), Message: fe.Message}
}
