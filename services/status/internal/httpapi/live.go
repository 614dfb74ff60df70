package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/commands"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/natsapi"
)

// Subscriber delivers announced changes of one enrollment.
type Subscriber interface {
	Subscribe(statusID string) (<-chan commands.EnrollmentReply, func(), error)
}

// DefaultHeartbeat keeps idle streams open through proxies that drop silent connections.
const DefaultHeartbeat = 15 * time.Second

// watch authenticates, subscribes, then reads the current state, and calls send with it and
// with every later change until the enrollment is terminal, ctx ends or send fails. Every
// heartbeat it calls beat and re-reads the store, so a lost announcement is only a delay.
func (a *API) watch(ctx context.Context, w http.ResponseWriter, r *http.Request, send func(StatusDTO) error, beat func() error) (started bool, err error) {
	sub, err := auth.Authenticate(a.Verifier, r, true)
	if err != nil {
		return false, err
	}
	id := r.PathValue("status_id")
	changes, cancel, err := a.Live.Subscribe(id)
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	defer cancel()
	e, err := a.Service.Get(ctx, id, sub)
	if err != nil {
		return false, err
	}
	var last StatusDTO
	emit := func(d StatusDTO) error {
		// Announcements from several replicas may arrive out of order; never go back.
		if last.ID != "" && (d.UpdatedAt.Before(last.UpdatedAt) || d.Status == last.Status && d.UpdatedAt.Equal(last.UpdatedAt)) {
			return nil
		}
		last = d
		return send(d)
	}
	if err := emit(ToDTO(e)); err != nil {
		return true, nil
	}
	hb := a.Heartbeat
	if hb <= 0 {
		hb = DefaultHeartbeat
	}
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	for !enrollment.State(last.Status).Terminal() {
		select {
		case <-ctx.Done():
			return true, nil
		case rep := <-changes:
			d := StatusDTO{Status: rep.Status, ID: rep.ID, Sub: rep.Sub, Type: rep.Method, ExpiresAt: rep.ExpiresAt, UpdatedAt: rep.UpdatedAt, DeviceID: rep.DeviceID, PHID: rep.PHID}
			if err := emit(d); err != nil {
				return true, nil
			}
		case <-ticker.C:
			if err := beat(); err != nil {
				return true, nil
			}
			// Get also expires an overdue enrollment, so an idle stream sees EXPIRED.
			if e, err := a.Service.Get(ctx, id, sub); err == nil {
				if err := emit(ToDTO(e)); err != nil {
					return true, nil
				}
			}
		}
	}
	return true, nil
}

// events streams the status as Server-Sent Events: `event: status`, an increasing `id:`, and the
// status object as `data:`; comment lines as heartbeat.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	n := 0
	headerSent := false
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
	reconnect := r.Header.Get("Last-Event-ID") != ""
	send := func(d StatusDTO) error {
		if reconnect && n == 0 && enrollment.State(d.Status).Terminal() {
			// EventSource reconnects after every end of stream; 204 is how a server tells it
			// to stop, and a reconnecting client already saw the final state.
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
		if _, err := fmt.Fprintf(w, "id: %d\nevent: status\ndata: %s\n\n", n, data); err != nil {
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
	// The stream has no write deadline of its own; the heartbeat detects a gone client.
	_ = rc.SetWriteDeadline(time.Time{})
	if started, err := a.watch(r.Context(), w, r, send, beat); err != nil && !started {
		a.fail(w, r, err)
	}
}

// errStreamDone ends a stream that has nothing more to say.
var errStreamDone = errors.New("stream done")

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 4096,
	// Browsers send Origin; the token (header or access_token) is what authorises, and it is
	// never sent automatically by a browser, so cross-origin pages gain nothing.
	CheckOrigin: func(*http.Request) bool { return true },
	Error: func(w http.ResponseWriter, r *http.Request, _ int, reason error) {
		httpx.WriteProblem(w, r, fault.New(fault.BadRequest, "websocket handshake failed: "+reason.Error()))
	},
}

// ws streams the status over a websocket: one JSON status object per text message; closes
// normally after a terminal state.
func (a *API) ws(w http.ResponseWriter, r *http.Request) {
	// Authenticate and check ownership before upgrading, so failures are plain problem+json.
	sub, err := auth.Authenticate(a.Verifier, r, true)
	if err == nil {
		_, err = a.Service.Get(r.Context(), r.PathValue("status_id"), sub)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer conn.Close()
	conn.SetReadLimit(512)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// Read loop: the client sends nothing but control frames; a close or error ends the stream.
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
	if _, err := a.watch(ctx, w, r, send, beat); err == nil {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "final status"), time.Now().Add(writeWait))
	}
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.Log, natsapi.ToFault(err))
}
