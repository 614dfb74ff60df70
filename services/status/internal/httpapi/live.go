package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/ratelimit"
	"github.com/mfaflow/mfaflow/pkg/serve"
	"github.com/mfaflow/mfaflow/services/status/internal/faults"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// Subscriber delivers the changes of one status object (an enrollment or a sign-in) that any
// replica announced, until cancel is called: each as the announcement's status object
// (events/commands), shared with other subscribers and not to be modified. An id that cannot
// exist is refused with ids.ErrInvalid. The NATS adapter implements it (statussvc wires it).
type Subscriber interface {
	Subscribe(statusID string) (changes <-chan *commands.EnrollmentReply, cancel func(), err error)
}

// changeDTO is the HTTP status object of a live announcement, which carries the same fields.
func changeDTO(r *commands.EnrollmentReply) StatusDTO {
	return StatusDTO{
		Status: r.Status, ID: r.ID, Sub: r.Sub, Type: r.Method, ExpiresAt: r.ExpiresAt,
		UpdatedAt: r.UpdatedAt, DeviceID: r.DeviceID, PHID: r.PHID, Seq: r.Seq,
		Destination: r.Destination, Delivery: r.Delivery,
	}
}

// DefaultHeartbeat keeps idle streams open through proxies that drop silent connections.
const DefaultHeartbeat = 15 * time.Second

// rereadEvery heartbeats a live stream re-reads the store, in case an announcement was lost.
const rereadEvery = 4

// watch authenticates, subscribes, then reads the current state, and calls send with it and
// with every later change until the status object is terminal, ctx ends or send fails. Every
// heartbeat it calls beat and re-reads the store, so a lost announcement is only a delay.
// started says whether anything was sent; final whether the terminal state was.
func (a *API) watch(ctx context.Context, r *http.Request, send func(StatusDTO) error, beat func() error) (started, final bool, err error) {
	st, changes, cancel, err := a.startStream(ctx, r, send, beat)
	if err != nil {
		return false, false, err
	}
	defer cancel()
	if st.emitted != nil {
		return true, false, nil
	}
	ticker := time.NewTicker(a.heartbeat())
	defer ticker.Stop()
	// The stream waits here for as long as it lives, so this frame and the ones under it are
	// what an idle subscriber's goroutine holds on its stack. The work is done in the stream's
	// methods, whose larger frames exist only while they run; kept under a quarter of the
	// stack, the garbage collector shrinks the stack the first call grew (measured: 16 KiB →
	// 8 KiB per idle subscriber).
	for !st.done() {
		select {
		case <-ctx.Done():
			return true, false, nil
		case e := <-changes:
			if st.change(e) != nil {
				return true, false, nil
			}
		case <-ticker.C:
			if st.heartbeat() != nil {
				return true, false, nil
			}
		}
	}
	return true, true, nil
}

// liveStream is the state of one status stream (SSE or websocket) between its messages.
type liveStream struct {
	a      *API
	ctx    context.Context
	r      *http.Request
	id     string
	caller caller
	send   func(StatusDTO) error
	beat   func() error
	last   StatusDTO
	beats  int
	// emitted is the error of the first send, which ends the stream before it waits.
	emitted error
}

// startStream authenticates, subscribes, reads the current state and sends it.
//
//go:noinline
func (a *API) startStream(ctx context.Context, r *http.Request, send func(StatusDTO) error, beat func() error) (*liveStream, <-chan *commands.EnrollmentReply, func(), error) {
	caller, err := a.caller(r, true)
	if err != nil {
		return nil, nil, nil, err
	}
	id, err := statusID(r)
	if err != nil {
		return nil, nil, nil, err
	}
	changes, cancel, err := a.Live.Subscribe(id)
	if errors.Is(err, ids.ErrInvalid) {
		return nil, nil, nil, errNoSuchEnrollment
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("subscribe: %w", err)
	}
	obj, err := a.status(ctx, id, caller)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	st := &liveStream{a: a, ctx: ctx, r: r, id: id, caller: caller, send: send, beat: beat}
	st.emitted = st.emit(a.withToken(r, obj, caller))
	return st, changes, cancel, nil
}

func (st *liveStream) done() bool { return final(st.last.Status) }

// emit sends d unless it is older than what was sent. Announcements from several replicas may
// arrive out of order; never go back. The write sequence orders them: replicas' clocks may
// disagree, compare-and-set cannot.
func (st *liveStream) emit(d StatusDTO) error {
	if st.last.ID != "" && d.Seq <= st.last.Seq {
		return nil
	}
	st.last = d
	if d.Status == string(signin.Authenticated) && st.a.Tokens != nil && d.MFAToken == "" {
		// The announcement does not say who started the sign-in: read it.
		if obj, err := st.a.status(st.ctx, st.id, st.caller); err == nil {
			d.MFAToken = st.a.withToken(st.r, obj, st.caller).MFAToken
		}
	}
	return st.send(d)
}

//go:noinline
func (st *liveStream) change(r *commands.EnrollmentReply) error { return st.emit(changeDTO(r)) }

// heartbeat beats and, now and then, re-reads the store: announcements are best effort. Not on
// every beat, so that thousands of idle streams cost no store reads to speak of. An overdue
// status object is read at once: reading expires it, so an idle stream sees EXPIRED even if no sweep
// announced it.
//
//go:noinline
func (st *liveStream) heartbeat() error {
	if err := st.beat(); err != nil {
		return err
	}
	st.beats++
	if st.beats%rereadEvery != 0 && st.a.now().Before(st.last.ExpiresAt) {
		return nil
	}
	if obj, err := st.a.status(st.ctx, st.id, st.caller); err == nil {
		return st.emit(obj.dto)
	}
	return nil
}

// events streams the status as Server-Sent Events: `event: status`, an `id:`, and the status
// object as `data:`; comment lines as heartbeat. The id is the status object's write sequence
// (Seq): it increases with every change, also across reconnects and replicas (unlike
// updated_at, which comes from a replica's clock), so the Last-Event-ID that EventSource sends
// back says exactly which state the client has seen.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	n := 0
	headerSent := false
	lastSeen, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	start := func() {
		if headerSent {
			return
		}
		headerSent = true
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		w.WriteHeader(http.StatusOK)
		// Tell EventSource how soon to reconnect if the stream breaks.
		fmt.Fprint(w, "retry: 2000\n\n")
	}
	send := func(d StatusDTO) error {
		id := d.Seq
		if n == 0 && id <= lastSeen && final(d.Status) {
			// EventSource reconnects after every end of stream; 204 is how a server tells it
			// to stop. Only a client that has seen the final state gets it: one whose stream
			// broke before the end gets the final state first.
			headerSent = true
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNoContent)
			return errStreamDone
		}
		start()
		data, err := json.Marshal(d)
		if err != nil {
			return err
		}
		n++
		if _, err := fmt.Fprintf(w, "id: %d\nevent: status\ndata: %s\n\n", id, data); err != nil {
			return err
		}
		return rc.Flush()
	}
	beat := func() error {
		if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
			return err
		}
		return rc.Flush()
	}
	release, err := a.admitStream(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer release()
	// The stream has no write deadline of its own; the heartbeat detects a gone client.
	_ = rc.SetWriteDeadline(time.Time{})
	ctx, cancel := serve.LongLived(r)
	defer cancel()
	if started, _, err := a.watch(ctx, r, send, beat); err != nil && !started {
		a.writeError(w, r, err)
	}
}

// errStreamDone ends a stream that has nothing more to say.
var errStreamDone = errors.New("stream done")

// errHandshake is the answer to a request to /ws that is not a valid WebSocket upgrade. The
// upgrader's own reason is library text, so it goes to the debug log, never to the client.
var errHandshake = fault.New(fault.BadRequest, "websocket handshake failed: send a WebSocket upgrade request (RFC 6455)")

func (a *API) upgrader() *websocket.Upgrader {
	return &websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 4096,
		// Browsers send Origin; the token (header or access_token) is what authorises, and it is
		// never sent automatically by a browser, so cross-origin pages gain nothing.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			// A client that cannot speak WebSocket is not a server problem.
			a.Log.Debug("websocket handshake refused", "path", r.URL.Path, "status", status, "err", reason)
			httpx.WriteProblem(w, r, errHandshake)
		},
	}
}

// ws streams the status over a websocket: one JSON status object per text message; closes
// normally after a terminal state.
func (a *API) ws(w http.ResponseWriter, r *http.Request) {
	// Admit before upgrading, so refusals are plain problem+json.
	release, err := a.admitStream(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer release()
	conn, err := a.upgrader().Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered (and logged at debug level)
	}
	defer conn.Close()
	conn.SetReadLimit(512)
	ctx, cancel := serve.LongLived(r)
	defer cancel()
	// The client only answers pings; a client silent for two heartbeats is gone.
	hb := a.heartbeat()
	_ = conn.SetReadDeadline(time.Now().Add(2 * hb))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(2 * hb)) })
	// Read loop: a close, an error or a missed deadline ends the stream.
	go func() {
		defer cancel()
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	const writeWait = 5 * time.Second
	send := func(d StatusDTO) error {
		_ = conn.SetWriteDeadline(time.Now().Add(writeWait))
		return conn.WriteJSON(d)
	}
	beat := func() error {
		return conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
	}
	_, final, err := a.watch(ctx, r, send, beat)
	switch {
	case err != nil:
		// Only possible before the first message, e.g. the store failing or the client leaving
		// during the first read. Logged once; the client gets the code, never the text.
		fe := fault.From(faults.Of(err))
		switch {
		case httpx.ClientGone(r, err):
			a.Log.Debug("websocket client went away", "path", r.URL.Path, "err", err)
		case fe.Code == fault.Internal:
			a.Log.Error("websocket stream failed", "path", r.URL.Path, "err", err)
		}
		closeCode := websocket.ClosePolicyViolation
		if fe.Code == fault.Internal || fe.Code == fault.Unavailable {
			closeCode = websocket.CloseInternalServerErr
		}
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeCode, string(fe.Code)), time.Now().Add(writeWait))
	case final:
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "final status"), time.Now().Add(writeWait))
	case serve.ShuttingDown(r):
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(writeWait))
	}
}

// streamRetryAfter is the Retry-After of a stream refused for the user's limit: a stream ends
// when its status object does, or when its client leaves, so a slot frees up within seconds to
// minutes; a few seconds keeps an EventSource from hammering.
const streamRetryAfter = 5 * time.Second

// admitStream authenticates a live stream, checks that its status object is the caller's and takes
// one of the user's stream slots (MFA_USER_STREAMS), all before a header is sent or a websocket
// upgraded: a refusal is a plain problem+json answer, and a stream refused for any reason holds
// no slot. The caller releases the slot when the stream ends, whichever way it ends.
func (a *API) admitStream(w http.ResponseWriter, r *http.Request) (release func(), err error) {
	caller, err := a.caller(r, true)
	if err != nil {
		return nil, err
	}
	id, err := statusID(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.status(r.Context(), id, caller); err != nil {
		return nil, err
	}
	release, ok := a.StreamLimit.Acquire(ratelimit.Key(caller.sub))
	if !ok {
		w.Header().Set("Retry-After", ratelimit.RetryAfter(streamRetryAfter))
		return nil, fault.New(fault.TooManyRequests, "too many live streams open for this user; close one, or poll")
	}
	return release, nil
}

func (a *API) heartbeat() time.Duration {
	if a.Heartbeat > 0 {
		return a.Heartbeat
	}
	return DefaultHeartbeat
}
