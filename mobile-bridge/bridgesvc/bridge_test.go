package bridgesvc_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/internal/bridgetest"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/nats-io/nats.go"
)

const (
	testSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	readWait   = 5 * time.Second
)

// frame is any server frame; the union of ack and error fields.
type frame struct {
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

func dial(t *testing.T, env *bridgetest.Env, subprotocols ...string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: readWait}
	ws, resp, err := d.Dial(env.WSURL, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	readHello(t, ws)
	return ws
}

// readHello reads the hello every connection starts with and returns its nonce. It leaves no
// read deadline behind, for tests that read in the background.
func readHello(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	f := read(t, ws)
	if f.Type != protocol.TypeHello || len(f.Nonce) < 22 {
		t.Fatalf("first frame %+v, want a hello with a nonce of 16+ bytes", f)
	}
	if err := ws.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	return f.Nonce
}

func sendRaw(t *testing.T, ws *websocket.Conn, kind int, data []byte) {
	t.Helper()
	if err := ws.SetWriteDeadline(time.Now().Add(readWait)); err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(kind, data); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func send(t *testing.T, ws *websocket.Conn, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, ws, websocket.TextMessage, data)
}

func read(t *testing.T, ws *websocket.Conn) frame {
	t.Helper()
	if err := ws.SetReadDeadline(time.Now().Add(readWait)); err != nil {
		t.Fatal(err)
	}
	kind, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if kind != websocket.TextMessage {
		t.Fatalf("got message type %d, want text", kind)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return f
}

func wantAck(t *testing.T, f frame, id, status string) {
	t.Helper()
	if f.Type != protocol.TypeAck || f.ID != id || f.Status != status {
		t.Fatalf("got %+v, want ack id %q status %s", f, id, status)
	}
}

func wantError(t *testing.T, f frame, id string, code fault.Code) {
	t.Helper()
	if f.Type != protocol.TypeError || f.ID != id || f.Code != string(code) || f.Message == "" {
		t.Fatalf("got %+v, want error id %q code %s with a message", f, id, code)
	}
}

func scan(id, eid string) protocol.Request {
	return protocol.Request{
		Type: protocol.TypeScan, ID: id, ExchangeID: eid,
		Device: &protocol.Device{DeviceID: "dev-1", Name: "Pixel", Platform: "android"},
	}
}

func mustCode(t *testing.T, at time.Time) string {
	t.Helper()
	code, err := totp.Code(testSecret, at, totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// wantUsable proves the connection still answers after a failure.
func wantUsable(t *testing.T, env *bridgetest.Env, ws *websocket.Conn) {
	t.Helper()
	env.Status.Add("eid-usable", bridgetest.Enrollment{StatusID: "st-usable", Secret: testSecret})
	send(t, ws, scan("after", "eid-usable"))
	wantAck(t, read(t, ws), "after", "SCANNED")
}

func TestScan(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)

		send(t, ws, scan("17", "eid-1"))
		f := read(t, ws)
		wantAck(t, f, "17", "SCANNED")
		if f.StatusID != "st-1" || f.DeviceID != "dev-1" {
			t.Fatalf("ack %+v, want status_id st-1 and device_id dev-1", f)
		}
		scans := env.Status.Scans()
		want := commands.ScanRequest{ExchangeID: "eid-1", Device: commands.Device{DeviceID: "dev-1", Name: "Pixel", Platform: "android"}}
		if len(scans) != 1 || scans[0] != want {
			t.Fatalf("status got %+v, want [%+v]", scans, want)
		}
	})
	t.Run("WithoutDevice", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)

		send(t, ws, protocol.Request{Type: protocol.TypeScan, ID: "a", ExchangeID: "eid-1"})
		wantAck(t, read(t, ws), "a", "SCANNED")
	})
}

func TestEnroll(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)

		send(t, ws, scan("1", "eid-1"))
		wantAck(t, read(t, ws), "1", "SCANNED")
		send(t, ws, protocol.Request{Type: protocol.TypeEnroll, ID: "2", ExchangeID: "eid-1", Code: mustCode(t, time.Now())})
		f := read(t, ws)
		wantAck(t, f, "2", "ENROLLED")
		if f.StatusID != "st-1" || f.PHID != "ph-st-1" || f.DeviceID != "dev-1" {
			t.Fatalf("ack %+v, want status_id st-1, ph_id ph-st-1, device_id dev-1", f)
		}
	})
	t.Run("ForwardsDevice", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)

		code := mustCode(t, time.Now())
		send(t, ws, protocol.Request{Type: protocol.TypeEnroll, ID: "e", ExchangeID: "eid-1", Code: code,
			Device: &protocol.Device{DeviceID: "dev-9", Platform: "ios"}})
		f := read(t, ws)
		wantAck(t, f, "e", "ENROLLED")
		if f.DeviceID != "dev-9" {
			t.Fatalf("device_id %q, want dev-9", f.DeviceID)
		}
		got := env.Status.Enrolls()
		if len(got) != 1 || got[0].Code != code || got[0].Device.DeviceID != "dev-9" || got[0].Device.Platform != "ios" {
			t.Fatalf("status got %+v", got)
		}
	})
}

func TestStatusFaults(t *testing.T) {
	tests := []struct {
		name   string
		script bridgetest.Enrollment
		eid    string
		req    func(t *testing.T) protocol.Request
		code   fault.Code
	}{
		{
			name:   "ErrExpired",
			script: bridgetest.Enrollment{StatusID: "st-x", Fault: fault.New(fault.Expired, "enrollment expired")},
			eid:    "eid-x",
			req:    func(*testing.T) protocol.Request { return scan("9", "eid-x") },
			code:   fault.Expired,
		},
		{
			name:   "ErrInvalidCode",
			script: bridgetest.Enrollment{StatusID: "st-x", Secret: testSecret},
			eid:    "eid-x",
			req: func(t *testing.T) protocol.Request {
				// An hour away is far outside the accepted window.
				return protocol.Request{Type: protocol.TypeEnroll, ID: "9", ExchangeID: "eid-x", Code: mustCode(t, time.Now().Add(time.Hour))}
			},
			code: fault.InvalidCode,
		},
		{
			name:   "ErrConflict",
			script: bridgetest.Enrollment{StatusID: "st-x", Fault: fault.New(fault.Conflict, "enrollment is CANCELLED")},
			eid:    "eid-x",
			req:    func(*testing.T) protocol.Request { return scan("9", "eid-x") },
			code:   fault.Conflict,
		},
		{
			name:   "ErrNotFound",
			script: bridgetest.Enrollment{StatusID: "st-x"},
			eid:    "eid-other",
			req:    func(*testing.T) protocol.Request { return scan("9", "eid-unknown") },
			code:   fault.NotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := bridgetest.Start(t, bridgesvc.Config{})
			env.Status.Add(tt.eid, tt.script)
			ws := dial(t, env, protocol.Subprotocol)

			send(t, ws, tt.req(t))
			wantError(t, read(t, ws), "9", tt.code)
			wantUsable(t, env, ws)
		})
	}
}

func TestBadFrames(t *testing.T) {
	tests := []struct {
		name   string
		kind   int
		data   string
		wantID string
		code   fault.Code
	}{
		{"MalformedJSON", websocket.TextMessage, `{"type":"scan","id":"1"`, "", fault.BadRequest},
		{"NotAnObject", websocket.TextMessage, `["scan"]`, "", fault.BadRequest},
		{"WrongFieldType", websocket.TextMessage, `{"type":"enroll","id":"4","exchange_id":"e","code":123456}`, "4", fault.BadRequest},
		{"MissingID", websocket.TextMessage, `{"type":"scan","exchange_id":"e"}`, "", fault.BadRequest},
		{"UnknownType", websocket.TextMessage, `{"type":"dance","id":"5"}`, "5", fault.BadRequest},
		{"MissingType", websocket.TextMessage, `{"id":"5","exchange_id":"e"}`, "5", fault.BadRequest},
		{"ScanMissingExchangeID", websocket.TextMessage, `{"type":"scan","id":"6"}`, "6", fault.BadRequest},
		{"EnrollMissingExchangeID", websocket.TextMessage, `{"type":"enroll","id":"7","code":"123456"}`, "7", fault.BadRequest},
		{"EnrollCodeTooShort", websocket.TextMessage, `{"type":"enroll","id":"8","exchange_id":"e","code":"12345"}`, "8", fault.BadRequest},
		{"EnrollCodeTooLong", websocket.TextMessage, `{"type":"enroll","id":"8","exchange_id":"e","code":"123456789"}`, "8", fault.BadRequest},
		{"EnrollCodeNotDigits", websocket.TextMessage, `{"type":"enroll","id":"8","exchange_id":"e","code":"12a456"}`, "8", fault.BadRequest},
		{"EnrollCodeMissing", websocket.TextMessage, `{"type":"enroll","id":"8","exchange_id":"e"}`, "8", fault.BadRequest},
		{"Binary", websocket.BinaryMessage, `{"type":"scan","id":"1","exchange_id":"e"}`, "", fault.BadRequest},
		{"Oversized", websocket.TextMessage, `{"type":"scan","id":"1","exchange_id":"` + strings.Repeat("x", 20<<10) + `"}`, "", fault.PayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := bridgetest.Start(t, bridgesvc.Config{})
			ws := dial(t, env, protocol.Subprotocol)

			sendRaw(t, ws, tt.kind, []byte(tt.data))
			wantError(t, read(t, ws), tt.wantID, tt.code)
			if n := env.Status.Calls(); n != 0 {
				t.Fatalf("status service got %d commands for a frame the bridge should refuse", n)
			}
			wantUsable(t, env, ws)
		})
	}
}

func TestPlainGETIsProblem(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{})
	resp, err := http.Get(env.URL + protocol.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct{ Code string }
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" || p.Code != string(fault.BadRequest) {
		t.Fatalf("GET without upgrade: %s %s code %q; want a 400 bad_request problem", resp.Status, resp.Header.Get("Content-Type"), p.Code)
	}
}

func TestFrameAboveHardLimitCloses(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{})
	ws := dial(t, env, protocol.Subprotocol)

	sendRaw(t, ws, websocket.TextMessage, make([]byte, bridgesvc.HardFrameBytes+1))
	if err := ws.SetReadDeadline(time.Now().Add(readWait)); err != nil {
		t.Fatal(err)
	}
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("read after a frame above the hard limit: %v, want close 1009", err)
	}
}

// TestInvalidUTF8Closes1007: a text frame that is not UTF-8 fails the connection with 1007
// (RFC 6455 §8.1) and never reaches the status service; valid multi-byte text is answered.
func TestInvalidUTF8Closes1007(t *testing.T) {
	t.Run("OKMultiByte", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)
		sendRaw(t, ws, websocket.TextMessage, []byte(`{"type":"scan","id":"1","exchange_id":"eid-1","device":{"device_id":"d","name":"Jörg’s 電話 📱"}}`))
		wantAck(t, read(t, ws), "1", "SCANNED")
	})
	for _, tt := range []struct{ name, data string }{
		{"ErrInvalidByte", "{\"type\":\"scan\",\"id\":\"1\",\"exchange_id\":\"eid-1\xff\"}"},
		{"ErrTruncatedSequence", "{\"type\":\"scan\",\"id\":\"1\",\"exchange_id\":\"eid-1\",\"device\":{\"name\":\"J\xc3\"}}"},
		{"ErrSurrogate", "{\"type\":\"scan\",\"id\":\"1\",\"exchange_id\":\"eid-1\xed\xa0\x80\"}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := bridgetest.Start(t, bridgesvc.Config{})
			env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
			ws := dial(t, env, protocol.Subprotocol)
			sendRaw(t, ws, websocket.TextMessage, []byte(tt.data))
			if err := ws.SetReadDeadline(time.Now().Add(readWait)); err != nil {
				t.Fatal(err)
			}
			_, data, err := ws.ReadMessage()
			if !websocket.IsCloseError(err, websocket.CloseInvalidFramePayloadData) {
				t.Fatalf("read after a text frame that is not UTF-8: %q, %v; want close 1007", data, err)
			}
			if n := env.Status.Calls(); n != 0 {
				t.Fatalf("status service got %d commands for a frame that is not UTF-8", n)
			}
		})
	}
}

func TestPipelinedRequestsAnsweredInOrder(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{})
	env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
	ws := dial(t, env, protocol.Subprotocol)

	send(t, ws, scan("a", "eid-1"))
	send(t, ws, scan("b", "eid-unknown"))
	send(t, ws, protocol.Request{Type: protocol.TypeEnroll, ID: "c", ExchangeID: "eid-1", Code: mustCode(t, time.Now())})
	wantAck(t, read(t, ws), "a", "SCANNED")
	wantError(t, read(t, ws), "b", fault.NotFound)
	wantAck(t, read(t, ws), "c", "ENROLLED")
}

func TestSubprotocol(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{})
	env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
	t.Run("Offered", func(t *testing.T) {
		ws := dial(t, env, "other.v0", protocol.Subprotocol)
		if got := ws.Subprotocol(); got != protocol.Subprotocol {
			t.Fatalf("negotiated %q, want %q", got, protocol.Subprotocol)
		}
	})
	t.Run("NotOffered", func(t *testing.T) {
		ws := dial(t, env)
		if got := ws.Subprotocol(); got != "" {
			t.Fatalf("negotiated %q without an offer", got)
		}
		send(t, ws, scan("1", "eid-1"))
		wantAck(t, read(t, ws), "1", "SCANNED")
	})
}

func TestStatusUnavailable(t *testing.T) {
	t.Run("NoResponder", func(t *testing.T) {
		ns := natstest.Start(t)
		env := bridgetest.StartBridge(t, ns.Connect(t), bridgesvc.Config{})
		ws := dial(t, env, protocol.Subprotocol)

		send(t, ws, scan("1", "eid-1"))
		wantError(t, read(t, ws), "1", fault.Unavailable)
	})
	t.Run("Timeout", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{RequestTimeout: 100 * time.Millisecond})
		block := make(chan struct{})
		t.Cleanup(func() { close(block) })
		env.Status.Add("eid-slow", bridgetest.Enrollment{StatusID: "st-slow", Block: block})
		ws := dial(t, env, protocol.Subprotocol)

		send(t, ws, scan("1", "eid-slow"))
		wantError(t, read(t, ws), "1", fault.Unavailable)
	})
}

func TestInternalErrorIsHiddenAndLoggedOnce(t *testing.T) {
	ns := natstest.Start(t)
	nc := ns.Connect(t)
	// A responder that breaks the contract: its reply is not an EnrollmentReply.
	sub, err := nc.Subscribe(commands.StatusEnroll, func(m *nats.Msg) { _ = m.Respond([]byte("not json")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	env := bridgetest.StartBridge(t, nc, bridgesvc.Config{})
	ws := dial(t, env, protocol.Subprotocol)

	const code, eid = "246813", "eid-capability-7f3a"
	send(t, ws, protocol.Request{Type: protocol.TypeEnroll, ID: "1", ExchangeID: eid, Code: code})
	f := read(t, ws)
	wantError(t, f, "1", fault.Internal)
	if f.Message != "internal error" {
		t.Fatalf("message %q leaks internals", f.Message)
	}
	logs := env.Logs()
	if n := strings.Count(logs, "bridge request failed"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, logs)
	}
	if strings.Contains(logs, code) || strings.Contains(logs, eid) {
		t.Fatalf("logs hold the code or the exchange id:\n%s", logs)
	}
}

func TestClose(t *testing.T) {
	t.Run("SendsGoingAway", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)
		// A round trip proves the server side of the connection is registered before Close.
		send(t, ws, scan("1", "eid-1"))
		wantAck(t, read(t, ws), "1", "SCANNED")

		closed := make(chan error, 1)
		go func() { closed <- env.Bridge.Close() }()
		if err := ws.SetReadDeadline(time.Now().Add(readWait)); err != nil {
			t.Fatal(err)
		}
		_, _, err := ws.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("read during Close: %v, want close 1001", err)
		}
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(readWait):
			t.Fatal("Close did not return")
		}
	})
	t.Run("RefusesNewConnections", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		if err := env.Bridge.Close(); err != nil {
			t.Fatal(err)
		}
		_, resp, err := websocket.DefaultDialer.Dial(env.WSURL, nil)
		if err == nil {
			t.Fatal("dial after Close succeeded")
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("dial after Close: %v, response %v; want 503", err, resp)
		}
		_ = resp.Body.Close()
	})
}

func TestKeepalive(t *testing.T) {
	const interval = 100 * time.Millisecond
	t.Run("PongsKeepConnectionOpen", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{PingInterval: interval})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)
		pings := make(chan struct{}, 100)
		ws.SetPingHandler(func(data string) error {
			pings <- struct{}{}
			return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		frames, errs := readLoop(ws)

		// Six pings span three read deadlines (2 × interval); only pongs kept the connection.
		for i := 0; i < 6; i++ {
			select {
			case <-pings:
			case err := <-errs:
				t.Fatalf("connection ended while answering pings: %v", err)
			case <-time.After(readWait):
				t.Fatalf("got %d pings, want 6", i)
			}
		}
		send(t, ws, scan("1", "eid-1"))
		select {
		case f := <-frames:
			wantAck(t, f, "1", "SCANNED")
		case err := <-errs:
			t.Fatalf("connection ended: %v", err)
		case <-time.After(readWait):
			t.Fatal("no answer")
		}
	})
	t.Run("ClientPingsKeepConnectionOpen", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{PingInterval: interval})
		env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
		ws := dial(t, env, protocol.Subprotocol)
		ws.SetPingHandler(func(string) error { return nil }) // never pong: only our pings show life
		pongs := make(chan struct{}, 100)
		ws.SetPongHandler(func(string) error { pongs <- struct{}{}; return nil })
		frames, errs := readLoop(ws)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(interval / 2)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					_ = ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
				}
			}
		}()

		for i := 0; i < 6; i++ { // 6 × interval/2 outlasts the 2 × interval read deadline
			select {
			case <-pongs:
			case err := <-errs:
				t.Fatalf("connection ended while pinging: %v", err)
			case <-time.After(readWait):
				t.Fatalf("got %d pongs, want 6", i)
			}
		}
		send(t, ws, scan("1", "eid-1"))
		select {
		case f := <-frames:
			wantAck(t, f, "1", "SCANNED")
		case err := <-errs:
			t.Fatalf("connection ended: %v", err)
		case <-time.After(readWait):
			t.Fatal("no answer")
		}
	})
	t.Run("SilentPeerDropped", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{PingInterval: interval})
		ws := dial(t, env, protocol.Subprotocol)
		ws.SetPingHandler(func(string) error { return nil }) // never pong
		_, errs := readLoop(ws)
		select {
		case err := <-errs:
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("dropped with close %d, want the connection cut", ce.Code)
			}
		case <-time.After(readWait):
			t.Fatal("server kept a silent peer")
		}
	})
}

// readLoop reads in the background, which is what makes gorilla run ping handlers.
func readLoop(ws *websocket.Conn) (<-chan frame, <-chan error) {
	frames, errs := make(chan frame, 10), make(chan error, 1)
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				errs <- err
				return
			}
			var f frame
			if err := json.Unmarshal(data, &f); err != nil {
				errs <- err
				return
			}
			frames <- f
		}
	}()
	return frames, errs
}
