// Package companion is the reference companion client for the mobile bridge: it reads the QR
// code of an enrollment, parses its otpauth URI, and reports the scan and a proof-of-possession
// code over the mfa-bridge.v1 websocket protocol. A push-capable companion also holds a device
// key, logs in with it and answers push challenges (see Login, Challenges, Respond).
//
// It is what cmd/companion is built on and what companion-app developers can read next to
// PROTOCOL.md; the end-to-end tests use it to play the phone.
package companion

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

// ErrClosed is returned by calls on a Client after Close.
var ErrClosed = errors.New("companion: client closed")

// ErrConnectionLost is wrapped by the errors of calls that failed because the connection ended
// under them (the bridge went away, the network dropped). The request may or may not have been
// handled: dial again and retry, which the status service treats idempotently for a scan.
var ErrConnectionLost = errors.New("companion: connection to the bridge lost")

// maxAnswerBytes bounds a frame from the bridge; answers are a few hundred bytes.
const maxAnswerBytes = 1 << 20

// writeWait bounds a write when the caller's context has no deadline.
const writeWait = 10 * time.Second

// BridgeError is an error frame from the bridge. Code is one of the stable codes in PROTOCOL.md
// (not_found, expired, invalid_code, conflict, bad_request, payload_too_large, unavailable,
// too_many_requests, unauthorized, internal); switch on it, not on Message.
type BridgeError struct {
	Code    string
	Message string
}

// Error reads like the CLI prints it, so logs and terminals show the same text.
func (e *BridgeError) Error() string { return "bridge: " + e.Code + ": " + e.Message }

type result struct {
	ack protocol.Ack
	err error
}

// Client is a connection to the bridge. Its methods are safe for concurrent use: requests are
// pipelined on the one connection and answers are matched to callers by id.
type Client struct {
	ws *websocket.Conn

	// writeMu serialises frames: gorilla allows one concurrent writer.
	writeMu sync.Mutex

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan result
	closing bool
	err     error // set once the connection is over; every later call returns it

	closeOnce sync.Once
	done      chan struct{} // closed when the read loop has ended

	// hello holds the nonce of the latest hello not yet spent by a Login.
	hello chan string
	// challenges queues push challenges for the app (see Challenges).
	challenges chan protocol.PushChallenge
	// key and phID are the logged-in device (under mu).
	key  *ecdsa.PrivateKey
	phID string
}

// ChallengeBuffer is how many push challenges a Client queues for a reader that is not keeping
// up; more are dropped (the bridge delivers open challenges again on the next login).
const ChallengeBuffer = 64

// ErrNotLoggedIn is returned by Respond before a successful Login.
var ErrNotLoggedIn = errors.New("companion: not logged in as a device")

// Dial connects to the bridge of the mfaflow deployment at baseURL (the burl of an otpauth
// URI): http becomes ws and https becomes wss, and protocol.Path is appended. It offers the
// mfa-bridge.v1 sub-protocol and refuses a server that does not select it, since such a server
// is not a bridge this client can talk to.
func Dial(ctx context.Context, baseURL string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("companion: base URL: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return nil, fmt.Errorf("companion: base URL %q is not http(s)", baseURL)
	}
	u.RawQuery, u.Fragment = "", ""
	u = u.JoinPath(protocol.Path)

	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: 10 * time.Second,
		Subprotocols:     []string{protocol.Subprotocol},
	}
	ws, resp, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("companion: dial %s: HTTP %s", u.Redacted(), resp.Status)
		}
		return nil, fmt.Errorf("companion: dial %s: %w", u.Redacted(), err)
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		_ = ws.Close()
		return nil, fmt.Errorf("companion: %s did not select sub-protocol %s", u.Redacted(), protocol.Subprotocol)
	}
	ws.SetReadLimit(maxAnswerBytes)
	c := &Client{
		ws: ws, pending: map[uint64]chan result{}, done: make(chan struct{}),
		hello: make(chan string, 1), challenges: make(chan protocol.PushChallenge, ChallengeBuffer),
	}
	go c.readLoop()
	return c, nil
}

// Scan reports that this device scanned the QR of the enrollment behind exchangeID. The ack
// has status SCANNED (or the current status for a repeated scan) and the status id.
func (c *Client) Scan(ctx context.Context, exchangeID string, dev protocol.Device) (protocol.Ack, error) {
	return c.call(ctx, protocol.Request{Type: protocol.TypeScan, ExchangeID: exchangeID, Device: &dev})
}

// Enroll proves possession of the secret with code and completes the enrollment. The ack has
// status ENROLLED, the device id and the ph_id of the registered device.
func (c *Client) Enroll(ctx context.Context, exchangeID, code string) (protocol.Ack, error) {
	return c.call(ctx, protocol.Request{Type: protocol.TypeEnroll, ExchangeID: exchangeID, Code: code})
}

// EnrollWithKey is Enroll for a push-capable device: key is the public half of the device key
// (see NewDeviceKey and PublicJWK), registered with the device.
func (c *Client) EnrollWithKey(ctx context.Context, exchangeID, code string, key *protocol.JWK) (protocol.Ack, error) {
	return c.call(ctx, protocol.Request{Type: protocol.TypeEnroll, ExchangeID: exchangeID, Code: code, DeviceKey: key})
}

// Login starts the session of device phID on this connection: it signs the nonce of the
// bridge's latest hello with key. After the ack the bridge sends the device's open challenges
// and every new one to Challenges. A refused login spends the nonce; the bridge then sends a
// fresh hello, so Login may simply be called again.
func (c *Client) Login(ctx context.Context, phID string, key *ecdsa.PrivateKey) (protocol.Ack, error) {
	var nonce string
	select {
	case nonce = <-c.hello:
	case <-c.done:
		return protocol.Ack{}, c.Err()
	case <-ctx.Done():
		return protocol.Ack{}, ctx.Err()
	}
	sig, err := SignLogin(key, nonce, phID)
	if err != nil {
		return protocol.Ack{}, err
	}
	ack, err := c.call(ctx, protocol.Request{Type: protocol.TypeLogin, PHID: phID, Sig: sig})
	if err != nil {
		return ack, err
	}
	c.mu.Lock()
	c.key, c.phID = key, phID
	c.mu.Unlock()
	return ack, nil
}

// Challenges delivers the push challenges the bridge sends to the logged-in device, pending ones
// first. The same challenge may come more than once (a re-login, a retry): key on its id. The
// channel is never closed; watch Done for the end of the connection.
func (c *Client) Challenges() <-chan protocol.PushChallenge { return c.challenges }

// Respond answers a challenge: decision is protocol.DecisionApprove with the number the user
// picked, or protocol.DecisionDeny (number may be empty; reason "" or protocol.ReasonNotMe).
// The ack's status is the sign-in's status after the answer (AUTHENTICATED, DENIED).
func (c *Client) Respond(ctx context.Context, challengeID, decision, number, reason string) (protocol.Ack, error) {
	c.mu.Lock()
	key := c.key
	c.mu.Unlock()
	if key == nil {
		return protocol.Ack{}, ErrNotLoggedIn
	}
	sig, err := SignPush(key, challengeID, decision, number)
	if err != nil {
		return protocol.Ack{}, err
	}
	return c.call(ctx, protocol.Request{Type: protocol.TypePushResponse, ChallengeID: challengeID,
		Decision: decision, Number: number, Reason: reason, Sig: sig})
}

// Done is closed when the connection has ended, by Close or by the bridge or network.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (ErrClosed, or an error wrapping ErrConnectionLost whose
// chain holds the websocket close error, e.g. close 4000 when another session of the device
// started); nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection with a normal close handshake and releases its goroutine. Calls
// still waiting get ErrClosed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		// Give the bridge a moment to answer the close frame, as the protocol asks, but do not
		// let a dead peer hold Close up.
		select {
		case <-c.done:
		case <-time.After(time.Second):
		}
		_ = c.ws.Close()
		<-c.done
	})
	return nil
}

func (c *Client) call(ctx context.Context, req protocol.Request) (protocol.Ack, error) {
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return protocol.Ack{}, err
	}
	c.next++
	n := c.next
	c.pending[n] = ch
	c.mu.Unlock()

	req.ID = strconv.FormatUint(n, 10)
	if err := c.write(ctx, req); err != nil {
		c.forget(n)
		return protocol.Ack{}, fmt.Errorf("%w: send %s: %w", ErrConnectionLost, req.Type, err)
	}
	select {
	case r := <-ch:
		return r.ack, r.err
	case <-ctx.Done():
		// A late answer finds no caller and is dropped.
		c.forget(n)
		return protocol.Ack{}, ctx.Err()
	}
}

func (c *Client) write(ctx context.Context, req protocol.Request) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(writeWait)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.ws.SetWriteDeadline(deadline); err != nil {
		return err
	}
	return c.ws.WriteJSON(req)
}

func (c *Client) forget(n uint64) {
	c.mu.Lock()
	delete(c.pending, n)
	c.mu.Unlock()
}

// answer is the union of the ack and error frames.
type answer struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	Status   string `json:"status"`
	StatusID string `json:"status_id"`
	DeviceID string `json:"device_id"`
	PHID     string `json:"ph_id"`
	Code     string `json:"code"`
	Message  string `json:"message"`

	Nonce       string            `json:"nonce"`
	ChallengeID string            `json:"challenge_id"`
	Numbers     []string          `json:"numbers"`
	Context     map[string]string `json:"context"`
	ExpiresAt   time.Time         `json:"expires_at"`
}

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		// gorilla answers pings from the bridge while this loop reads, which is what keeps
		// the connection alive.
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.end(err)
			return
		}
		var a answer
		if err := json.Unmarshal(data, &a); err != nil {
			continue // not a frame of this protocol version; nothing to match it to
		}
		var r result
		switch a.Type {
		case protocol.TypeAck:
			r.ack = protocol.Ack{Type: a.Type, ID: a.ID, Status: a.Status, StatusID: a.StatusID, DeviceID: a.DeviceID, PHID: a.PHID}
		case protocol.TypeError:
			r.err = &BridgeError{Code: a.Code, Message: a.Message}
		case protocol.TypeHello:
			// Only the latest nonce counts: drop an unspent older one.
			select {
			case <-c.hello:
			default:
			}
			c.hello <- a.Nonce
			continue
		case protocol.TypePushChallenge:
			select {
			case c.challenges <- protocol.PushChallenge{Type: a.Type, ChallengeID: a.ChallengeID,
				Numbers: a.Numbers, Context: a.Context, ExpiresAt: a.ExpiresAt}:
			default: // the app is not reading; the next login delivers it again
			}
			continue
		default:
			continue // frame types from later protocol versions (e.g. push challenges)
		}
		c.deliver(a.ID, r)
	}
}

// deliver hands r to the caller waiting for id. An error without an id answers a frame the
// bridge could not read far enough to find its id; the bridge answers in order, so it belongs
// to the oldest request still waiting.
func (c *Client) deliver(id string, r result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	if id == "" && r.err != nil {
		for k := range c.pending {
			if n == 0 || k < n {
				n = k
			}
		}
	} else {
		var err error
		if n, err = strconv.ParseUint(id, 10, 64); err != nil {
			return
		}
	}
	ch, ok := c.pending[n]
	if !ok {
		return
	}
	delete(c.pending, n)
	ch <- r
}

func (c *Client) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		c.err = ErrClosed
	} else {
		c.err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	for n, ch := range c.pending {
		delete(c.pending, n)
		ch <- result{err: c.err}
	}
}

// Enroll runs the whole companion flow for an otpauth URI: parse it, connect to the bridge at
// its burl, report the scan with dev, compute the code at now() and enroll. It returns the
// final ack (status ENROLLED). now is injectable for tests; nil means time.Now.
func Enroll(ctx context.Context, uri string, dev protocol.Device, now func() time.Time) (protocol.Ack, error) {
	if now == nil {
		now = time.Now
	}
	e, err := ParseURI(uri)
	if err != nil {
		return protocol.Ack{}, err
	}
	if e.ExchangeID == "" || e.BaseURL == "" {
		return protocol.Ack{}, ErrNotBridged
	}
	c, err := Dial(ctx, e.BaseURL)
	if err != nil {
		return protocol.Ack{}, err
	}
	defer c.Close()
	if _, err := c.Scan(ctx, e.ExchangeID, dev); err != nil {
		return protocol.Ack{}, err
	}
	// The code is computed after the scan, as late as possible, so it is fresh when it arrives.
	code, err := totp.Code(e.Secret, now(), e.Params)
	if err != nil {
		return protocol.Ack{}, fmt.Errorf("companion: compute code: %w", err)
	}
	return c.Enroll(ctx, e.ExchangeID, code)
}
