package bridgesvc

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// CloseSessionReplaced is the close code of a device session ended because a newer session of
// the same device started (on this or another replica). The app should not reconnect on its own:
// another instance of it (or a clone of its key) holds the session now.
const CloseSessionReplaced = 4000

// nonceBytes is the entropy of a hello nonce.
const nonceBytes = 18

// inboxSize is the buffer of the one channel all session subscriptions of a replica feed. The
// dispatcher never blocks on a connection, so it only has to absorb bursts.
const inboxSize = 4096

// session is a logged-in device on a connection. Its two NATS subscriptions (deliveries and
// session announcements) are channel subscriptions feeding Service.inbox, so a session costs no
// goroutine of its own; the dispatcher finds the session by subscription.
type session struct {
	c    *conn
	id   string
	phID string
	sub  string
	key  *ecdsa.PublicKey
	subs []*nats.Subscription

	// announced is set when this session's own SessionStarted came back. Only the dispatcher
	// touches it: an announcement of another session seen after our own is a newer session.
	announced bool
	// ended is guarded by Service.mu.
	ended bool
}

func newNonce() string {
	var b [nonceBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// login verifies a device's signature over this connection's nonce and makes the connection
// that device's session. Every attempt that gets as far as the signature spends the nonce; a
// failed one is followed by a fresh hello, so the app can try again on the same connection.
func (c *conn) login(ctx context.Context, req protocol.Request) any {
	if !ids.Valid(req.PHID) {
		return errorFrame(req.ID, fault.New(fault.BadRequest, "ph_id must be 1 to 128 characters of A-Z a-z 0-9 _ -"))
	}
	if c.sess != nil {
		if c.sess.phID == req.PHID {
			return loginAck(req.ID, req.PHID) // idempotent: the session is unchanged
		}
		return errorFrame(req.ID, fault.New(fault.Conflict, "already logged in as another device; open a new connection"))
	}
	if req.Sig == "" {
		return errorFrame(req.ID, fault.New(fault.BadRequest, "sig is required"))
	}
	nonce := c.nonce
	c.nonce = ""
	refuse := func(fe *fault.Error) any {
		c.nonce = newNonce()
		hello := protocol.Hello{Type: protocol.TypeHello, Nonce: c.nonce}
		c.after = func() error { return c.write(hello) }
		return errorFrame(req.ID, fe)
	}
	if nonce == "" {
		return refuse(fault.New(fault.Unauthorized, "nonce already used; sign the nonce of the latest hello"))
	}

	var dev commands.DeviceInfo
	err := rpc.Call(ctx, c.s.nc, commands.RegistryDeviceGet, commands.DeviceRequest{PHID: req.PHID}, &dev)
	switch {
	case fault.CodeOf(err) == fault.NotFound:
		return refuse(fault.New(fault.Unauthorized, "unknown or removed device"))
	case err != nil:
		return refuse(c.fault(protocol.TypeLogin, err))
	case dev.PHID != req.PHID || !ids.Valid(dev.Sub):
		return refuse(c.fault(protocol.TypeLogin, errors.New("registry answered another device or one without owner")))
	case dev.Key == nil:
		return refuse(fault.New(fault.Unauthorized, "device is not push-capable; enroll it with a device_key"))
	}
	pub, err := parseDeviceKey(dev.Key)
	if err != nil {
		c.log.Warn("login refused: registered device key unusable", "err", err)
		return refuse(fault.New(fault.Unauthorized, "device key unusable; enroll the device again"))
	}
	if !verify(pub, protocol.LoginMessage(nonce, req.PHID), req.Sig) {
		return refuse(fault.New(fault.Unauthorized, "bad signature"))
	}
	sess, err := c.s.startSession(ctx, c, dev.PHID, dev.Sub, pub)
	if err != nil {
		return refuse(c.fault(protocol.TypeLogin, err))
	}
	c.sess = sess
	c.log.Debug("device session started", "session", sess.id)
	c.after = func() error { c.deliverPending(sess); return nil }
	return loginAck(req.ID, req.PHID)
}

func loginAck(id, phID string) protocol.Ack {
	return protocol.Ack{Type: protocol.TypeAck, ID: id, PHID: phID}
}

// pushResponse checks a device's signed answer and forwards it to the status service.
func (c *conn) pushResponse(ctx context.Context, req protocol.Request) any {
	sess := c.sess
	if sess == nil {
		return errorFrame(req.ID, fault.New(fault.Unauthorized, "log in first"))
	}
	if fe := checkPushResponse(req); fe != nil {
		return errorFrame(req.ID, fe)
	}
	if !verify(sess.key, protocol.PushMessage(req.ChallengeID, req.Decision, req.Number), req.Sig) {
		return errorFrame(req.ID, fault.New(fault.Unauthorized, "bad signature"))
	}
	cmd := commands.PushRespondRequest{
		ChallengeID: req.ChallengeID, PHID: sess.phID, Sub: sess.sub,
		Decision: req.Decision, Number: req.Number, Reason: req.Reason,
	}
	var reply commands.EnrollmentReply
	if err := rpc.Call(ctx, c.s.nc, commands.StatusPushRespond, cmd, &reply); err != nil {
		return errorFrame(req.ID, c.fault(protocol.TypePushResponse, err))
	}
	return protocol.Ack{Type: protocol.TypeAck, ID: req.ID, Status: reply.Status}
}

func checkPushResponse(req protocol.Request) *fault.Error {
	switch {
	case !ids.Valid(req.ChallengeID):
		return fault.New(fault.BadRequest, "challenge_id must be 1 to 128 characters of A-Z a-z 0-9 _ -")
	case req.Decision != protocol.DecisionApprove && req.Decision != protocol.DecisionDeny:
		return fault.New(fault.BadRequest, `decision must be "approve" or "deny"`)
	case req.Decision == protocol.DecisionApprove && !twoDigits(req.Number):
		return fault.New(fault.BadRequest, "number must be the two digits the user picked")
	case req.Decision == protocol.DecisionDeny && req.Number != "" && !twoDigits(req.Number):
		return fault.New(fault.BadRequest, "number must be empty or two digits")
	case req.Reason != "" && (req.Decision != protocol.DecisionDeny || req.Reason != protocol.ReasonNotMe):
		return fault.New(fault.BadRequest, `reason may only be "not_me", on a deny`)
	case req.Sig == "":
		return fault.New(fault.BadRequest, "sig is required")
	}
	return nil
}

func twoDigits(s string) bool {
	return len(s) == 2 && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9'
}

func validChallenge(ch commands.PushChallenge) bool {
	if !ids.Valid(ch.ChallengeID) || len(ch.Numbers) == 0 || len(ch.Numbers) > 9 {
		return false
	}
	for _, n := range ch.Numbers {
		if !twoDigits(n) {
			return false
		}
	}
	return true
}

// startSession subscribes the session's subjects, announces it so older sessions of the device
// close, and flushes, so that once the app has its ack the device is reachable from anywhere.
func (s *Service) startSession(ctx context.Context, c *conn, phID, sub string, key *ecdsa.PublicKey) (*session, error) {
	sess := &session{c: c, id: uuid.NewString(), phID: phID, sub: sub, key: key}
	// The lock is held across the subscribes so the dispatcher cannot see a message of these
	// subscriptions before they are registered.
	s.mu.Lock()
	ann, err := s.nc.ChanSubscribe(commands.BridgeSessionPrefix+phID, s.inbox)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	dev, err := s.nc.ChanSubscribe(commands.BridgeDevicePrefix+phID, s.inbox)
	if err != nil {
		s.mu.Unlock()
		_ = ann.Unsubscribe()
		return nil, err
	}
	sess.subs = []*nats.Subscription{ann, dev}
	s.sessions[ann], s.sessions[dev] = sess, sess
	s.mu.Unlock()
	metrics.BridgeSessions.Inc()

	body, _ := json.Marshal(commands.SessionStarted{PHID: phID, SessionID: sess.id})
	if err := s.nc.Publish(commands.BridgeSessionPrefix+phID, body); err != nil {
		s.endSession(sess)
		return nil, err
	}
	if err := s.nc.FlushWithContext(ctx); err != nil {
		s.endSession(sess)
		return nil, err
	}
	return sess, nil
}

// endSession drops a session's subscriptions; it is safe to call more than once.
func (s *Service) endSession(sess *session) {
	s.mu.Lock()
	if sess.ended {
		s.mu.Unlock()
		return
	}
	sess.ended = true
	for _, sub := range sess.subs {
		delete(s.sessions, sub)
	}
	s.mu.Unlock()
	metrics.BridgeSessions.Dec()
	for _, sub := range sess.subs {
		_ = sub.Unsubscribe()
	}
}

func (s *Service) live(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !sess.ended
}

// dispatch routes the messages of every session subscription of this replica. Deliveries are
// handled in a goroutine each, so a slow peer holds up only its own challenge; announcements are
// handled here, in order, since the order decides which session is the newer.
func (s *Service) dispatch() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case m := <-s.inbox:
			s.mu.Lock()
			sess := s.sessions[m.Sub]
			s.mu.Unlock()
			switch {
			case sess == nil:
				// The session ended after the message was queued.
				respondJSON(m, commands.PushDelivery{Delivered: false})
			case strings.HasPrefix(m.Subject, commands.BridgeSessionPrefix):
				s.announcement(sess, m)
			default:
				go sess.c.deliver(sess, m)
			}
		}
	}
}

// announcement closes sess when a newer session of its device started. Announcements of one
// device reach every subscriber in the order the server took them, so an announcement seen
// after the session's own is newer, and one seen before it is older (and its session closes
// when it sees ours). Exactly one session survives.
func (s *Service) announcement(sess *session, m *nats.Msg) {
	var ann commands.SessionStarted
	if err := json.Unmarshal(m.Data, &ann); err != nil || ann.PHID != sess.phID {
		return
	}
	if ann.SessionID == sess.id {
		sess.announced = true
		return
	}
	if !sess.announced {
		return
	}
	s.endSession(sess)
	go sess.c.replace()
}

// replace ends a connection whose session was replaced: an error frame, then close 4000.
func (c *conn) replace() {
	c.replaced.Store(true)
	c.log.Debug("device session replaced by a newer one")
	_ = c.write(errorFrame("", fault.New(fault.Conflict, "another session of this device started")))
	_ = c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(CloseSessionReplaced, "session replaced"), time.Now().Add(writeWait))
	// The read loop ends when the peer answers the close, or at this deadline.
	_ = c.ws.SetReadDeadline(time.Now().Add(closeGrace))
}

// deliver answers one delivery request of the status service: write the challenge, say so, and
// report the acknowledgement.
func (c *conn) deliver(sess *session, m *nats.Msg) {
	var ch commands.PushChallenge
	if err := json.Unmarshal(m.Data, &ch); err != nil || !validChallenge(ch) || ch.Sub != sess.sub {
		c.log.Warn("push delivery refused: malformed challenge or another user's")
		respondFault(m, fault.New(fault.BadRequest, "malformed challenge for this device"))
		return
	}
	err := c.push(ch)
	respondJSON(m, commands.PushDelivery{Delivered: err == nil})
	if err == nil {
		c.ackPush(sess, ch.ChallengeID)
	}
}

// deliverPending writes the open challenges of the session's user, for an app that was not
// connected when they went out.
func (c *conn) deliverPending(sess *session) {
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.RequestTimeout)
	defer cancel()
	var reply commands.PushPendingReply
	err := rpc.Call(ctx, c.s.nc, commands.StatusPushPending, commands.PushPendingRequest{PHID: sess.phID, Sub: sess.sub}, &reply)
	if err != nil {
		c.log.Warn("pending push challenges not delivered", "err", err)
		return
	}
	for _, ch := range reply.Challenges {
		if !c.s.live(sess) {
			return
		}
		if !validChallenge(ch) || ch.Sub != sess.sub {
			c.log.Warn("pending push challenge skipped: malformed or another user's")
			continue
		}
		if err := c.push(ch); err != nil {
			return
		}
		c.ackPush(sess, ch.ChallengeID)
	}
}

func (c *conn) push(ch commands.PushChallenge) error {
	c.pushedMu.Lock()
	if slices.Contains(c.pushed[:], ch.ChallengeID) {
		c.pushedMu.Unlock()
		return nil // already on the device
	}
	c.pushed[c.pushedAt] = ch.ChallengeID
	c.pushedAt = (c.pushedAt + 1) % len(c.pushed)
	c.pushedMu.Unlock()
	return c.write(protocol.PushChallenge{
		Type: protocol.TypePushChallenge, ChallengeID: ch.ChallengeID,
		Numbers: ch.Numbers, Context: ch.Context, ExpiresAt: ch.ExpiresAt,
	})
}

func (c *conn) ackPush(sess *session, challengeID string) {
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.RequestTimeout)
	defer cancel()
	req := commands.PushAckRequest{ChallengeID: challengeID, PHID: sess.phID, Sub: sess.sub}
	if err := rpc.Call(ctx, c.s.nc, commands.StatusPushAck, req, nil); err != nil {
		c.log.Warn("push acknowledgement not reported", "err", err)
	}
}

func respondJSON(m *nats.Msg, v any) {
	if m.Reply == "" {
		return
	}
	body, _ := json.Marshal(v)
	_ = m.Respond(body)
}

func respondFault(m *nats.Msg, fe *fault.Error) {
	if m.Reply == "" {
		return
	}
	r := nats.NewMsg(m.Reply)
	r.Header.Set(micro.ErrorCodeHeader, string(fe.Code))
	r.Header.Set(micro.ErrorHeader, fe.Message)
	_ = m.RespondMsg(r)
}
