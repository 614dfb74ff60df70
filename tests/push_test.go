package tests_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/httpx"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/status/statussvc"
	"github.com/mfaflow/mfaflow/tests/harness"
	"github.com/nats-io/nats.go"
)

// pushWorld is the production topology in miniature for push: the dev stack (status replica 1,
// bridge replica 1, registry, initiation) plus a second status replica and a second bridge
// replica as separate services on the same NATS server, all sharing the signing key.
type pushWorld struct {
	*signIn
	status2 string // base URL of the second status replica
	bridge2 string // base URL of the second bridge replica
}

func startPushWorld(t *testing.T, env map[string]string) *pushWorld {
	t.Helper()
	key := signingKeyPEM(t)
	vars := map[string]string{"MFA_SIGNING_KEY": key, "MFA_PUSH_RATE": "100"}
	for k, v := range env {
		vars[k] = v
	}
	s := startSignIn(t, vars)
	w := &pushWorld{signIn: s}
	ctx := context.Background()
	serve := func(c interface{ Routes(*httpx.Router) }) string {
		rt := httpx.NewRouter()
		c.Routes(rt)
		srv := httptest.NewServer(rt)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	connect := func(name string) *nats.Conn {
		nc, err := natsx.Connect(s.NATSURL(), name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ttl, _ := time.ParseDuration(env["MFA_VERIFICATION_TTL"]) // 0: the default, as on replica 1
	st2, err := statussvc.New(ctx, connect("status-2"), statussvc.Config{
		VerificationTTL: ttl,
		Verifier:        s.Verifier(), Clock: s.clock.Now, SweepInterval: 50 * time.Millisecond,
		SigningKey: key, TokenIssuer: s.URL, MaxPushes: 100,
		PushWebhookURL: env["MFA_PUSH_WEBHOOK_URL"], PushWebhookSecret: []byte(env["MFA_PUSH_WEBHOOK_SECRET"]),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st2.Close() })
	w.status2 = serve(st2)
	br2, err := bridgesvc.New(ctx, connect("bridge-2"), bridgesvc.Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = br2.Close() })
	w.bridge2 = serve(br2)
	return w
}

// pushDevice is an enrolled push-capable companion.
type pushDevice struct {
	phid string
	key  *ecdsa.PrivateKey
}

// enrollPushDevice enrolls a companion with a device key through the dev stack's bridge.
func (w *pushWorld) enrollPushDevice(t *testing.T, token string) pushDevice {
	t.Helper()
	in := initiate(t, w.Stack, token, "?qr=none")
	key, err := companion.NewDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := companion.PublicJWK(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, w.Stack)
	ctx := testCtx(t)
	if _, err := c.Scan(ctx, in.ExchangeID.ExchangeID, protocol.Device{DeviceID: "phone-1", Name: "Phone"}); err != nil {
		t.Fatal(err)
	}
	ack, err := c.EnrollWithKey(ctx, in.ExchangeID.ExchangeID, w.code(t, in.TOTPSecret), &jwk)
	if err != nil || ack.Status != "ENROLLED" || ack.PHID == "" {
		t.Fatalf("enroll with a device key: %+v %v", ack, err)
	}
	return pushDevice{phid: ack.PHID, key: key}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// login connects the device to a bridge replica and logs it in.
func login(t *testing.T, bridgeURL string, d pushDevice) *companion.Client {
	t.Helper()
	ctx := testCtx(t)
	c, err := companion.Dial(ctx, bridgeURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if ack, err := c.Login(ctx, d.phid, d.key); err != nil || ack.PHID != d.phid {
		t.Fatalf("login: %+v %v", ack, err)
	}
	return c
}

func nextChallenge(t *testing.T, c *companion.Client) protocol.PushChallenge {
	t.Helper()
	select {
	case ch := <-c.Challenges():
		return ch
	case <-c.Done():
		t.Fatalf("connection ended: %v", c.Err())
	case <-time.After(10 * time.Second):
		t.Fatal("no push challenge within 10 s")
	}
	return protocol.PushChallenge{}
}

// startPush starts a push sign-in on the second status replica and returns it with its number.
func (w *pushWorld) startPush(t *testing.T, token string) (authInitiation, string) {
	t.Helper()
	other := &harness.Stack{URL: w.status2}
	var out struct {
		authInitiation
		Number string `json:"number"`
	}
	other.MustJSON(t, http.MethodPost, "/verification-srv/authentication/push/initiation", token,
		map[string]any{"context": map[string]string{"app": "shop", "ip": "203.0.113.7"}}, http.StatusOK, &out)
	if len(out.Number) != 2 || out.StatusID == "" {
		t.Fatalf("push initiation = %+v", out)
	}
	return out.authInitiation, out.Number
}

// watchStates follows the status object's SSE stream (on status replica 1) and returns the
// states it saw once the stream ends.
func (w *pushWorld) watchStates(t *testing.T, token, statusID string) func() []string {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, w.URL+"/verification-srv/verificationstatus/"+statusID+"/events?access_token="+token, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE: %v %v", resp, err)
	}
	var (
		mu     sync.Mutex
		states []string
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "data: "); ok {
				var s struct{ Status string }
				if json.Unmarshal([]byte(rest), &s) == nil {
					mu.Lock()
					states = append(states, s.Status)
					mu.Unlock()
				}
			}
		}
	}()
	return func() []string {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("SSE stream did not end after a terminal state")
		}
		mu.Lock()
		defer mu.Unlock()
		return states
	}
}

// TestPushSignIn: a push-capable device logged in on bridge replica 2 approves, with the number
// the frontend shows, a sign-in started on status replica 2, watched live on status replica 1:
// INITIATED → PUSH_ACKNOWLEDGED → ALLOWED → AUTHENTICATED with an mfa_token (amr swk, user).
// Then deny (not_me), a wrong number (DENIED, counted toward the lockout), a second answer, a
// forged login, a replayed login nonce and a removed device are refused.
func TestPushSignIn(t *testing.T) {
	// Step-up is off for the removal at the end (the natsperm test spends a push sign-in's
	// mfa_token as a step-up proof; tests/stepup_test.go covers the rule).
	w := startPushWorld(t, map[string]string{"MFA_LOCKOUT_THRESHOLD": "3", "MFA_STEP_UP": "off"})
	alice := w.token(t, "alice", "", "")
	dev := w.enrollPushDevice(t, alice)
	var devices []struct {
		PHID string `json:"ph_id"`
		Push bool   `json:"push"`
	}
	w.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &devices)
	if len(devices) != 1 || !devices[0].Push {
		t.Fatalf("devices = %+v, want one push-capable device", devices)
	}
	outer := t
	phone := login(t, w.bridge2, dev)

	t.Run("Approve", func(t *testing.T) {
		in, number := w.startPush(t, alice)
		states := w.watchStates(t, alice, in.StatusID)
		ch := nextChallenge(t, phone)
		if ch.ChallengeID != in.ExchangeID.ExchangeID || len(ch.Numbers) != 3 || !slices.Contains(ch.Numbers, number) || ch.Context["app"] != "shop" {
			t.Fatalf("challenge = %+v, want three candidates with %s", ch, number)
		}
		natstest.Eventually(t, 10*time.Second, func() error {
			if s := poll(t, w.Stack, alice, in.StatusID); s.Status != "PUSH_ACKNOWLEDGED" {
				return fmt.Errorf("status %s", s.Status)
			}
			return nil
		})
		ack, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, number, "")
		if err != nil || ack.Status != "AUTHENTICATED" {
			t.Fatalf("approve: %+v %v", ack, err)
		}
		if got := states(); fmt.Sprint(got) != "[INITIATED PUSH_ACKNOWLEDGED ALLOWED AUTHENTICATED]" && fmt.Sprint(got) != "[PUSH_ACKNOWLEDGED ALLOWED AUTHENTICATED]" {
			t.Fatalf("live states = %v", got)
		}
		var polled struct {
			Status   string `json:"status"`
			PHID     string `json:"ph_id"`
			MFAToken string `json:"mfa_token"`
		}
		// The poll may reach the replica whose view is a moment behind the approval.
		natstest.Eventually(t, 10*time.Second, func() error {
			w.MustJSON(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, &polled)
			if polled.Status != "AUTHENTICATED" {
				return fmt.Errorf("status %s", polled.Status)
			}
			return nil
		})
		if polled.PHID != dev.phid {
			t.Fatalf("status = %+v", polled)
		}
		if claims := w.verifyMFAToken(t, polled.MFAToken, "alice"); fmt.Sprint(claims["amr"]) != "[swk user]" {
			t.Fatalf("amr = %v", claims["amr"])
		}
		var used []struct {
			LastUsedAt *time.Time `json:"last_used_at"`
		}
		w.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &used)
		if len(used) != 1 || used[0].LastUsedAt == nil {
			t.Fatalf("the approving device's last_used_at is not set: %+v", used)
		}
		// One answer per challenge.
		if _, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, number, ""); bridgeCode(err) != "conflict" {
			t.Fatalf("second answer: %v, want conflict", err)
		}
		w.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.PushSent, events.PushAcknowledged, events.VerificationSucceeded)
	})

	t.Run("DenyNotMe", func(t *testing.T) {
		in, _ := w.startPush(t, alice)
		ch := nextChallenge(t, phone)
		ack, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionDeny, "", protocol.ReasonNotMe)
		if err != nil || ack.Status != "DENIED" {
			t.Fatalf("deny: %+v %v", ack, err)
		}
		evs := w.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.PushSent, events.PushAcknowledged, events.VerificationDenied)
		var data events.Verification
		if err := json.Unmarshal(evs[3].Data, &data); err != nil || data.Reason != "not_me" || data.PHID != dev.phid {
			t.Fatalf("denied event = %s", evs[3].Data)
		}
	})

	t.Run("WrongNumberIsDeniedAndCounted", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			in, number := w.startPush(t, alice)
			ch := nextChallenge(t, phone)
			wrong := ""
			for _, n := range ch.Numbers {
				if n != number {
					wrong = n
				}
			}
			ack, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, wrong, "")
			if err != nil || ack.Status != "DENIED" {
				t.Fatalf("wrong number %d: %+v %v", i, ack, err)
			}
			evs := w.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.PushSent, events.PushAcknowledged, events.VerificationDenied)
			if !strings.Contains(string(evs[3].Data), `"reason":"wrong_number"`) {
				t.Fatalf("denied event = %s", evs[3].Data)
			}
		}
		// The third wrong number locked alice: pushes are refused like codes.
		w.MustProblem(t, w.Do(t, http.MethodPost, "/verification-srv/authentication/push/initiation", alice, nil), http.StatusTooManyRequests, "locked")
		waitEvents(t, w.rec, events.VerificationLocked, "alice", 1)
		admin := w.token(t, "ops", "mfa:admin", "")
		if r := w.Do(t, http.MethodDelete, "/verification-srv/admin/users/alice/lockout", admin, nil); r.Status != http.StatusNoContent {
			t.Fatalf("unlock: %d", r.Status)
		}
	})

	t.Run("ForgedLoginAndReplayedNonce", func(t *testing.T) {
		other, err := companion.NewDeviceKey()
		if err != nil {
			t.Fatal(err)
		}
		c, err := companion.Dial(testCtx(t), w.bridge2)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Login(testCtx(t), dev.phid, other); bridgeCode(err) != "unauthorized" {
			t.Fatalf("login signed by another key: %v, want unauthorized", err)
		}
		// A login frame captured from one connection does not work on another (its nonce).
		ws1, hello1 := rawBridge(t, w.URL)
		sig, err := companion.SignLogin(dev.key, hello1, dev.phid)
		if err != nil {
			t.Fatal(err)
		}
		frame := protocol.Request{Type: protocol.TypeLogin, ID: "1", PHID: dev.phid, Sig: sig}
		if got := rawCall(t, ws1, frame); got["type"] != "ack" {
			t.Fatalf("login with the connection's nonce: %v", got)
		}
		if got := rawCall(t, ws1, protocol.Request{Type: protocol.TypeLogin, ID: "2", PHID: "someone-else", Sig: sig}); got["type"] != "error" {
			t.Fatalf("second device on one connection: %v", got)
		}
		ws2, _ := rawBridge(t, w.bridge2)
		if got := rawCall(t, ws2, frame); got["type"] != "error" || got["code"] != "unauthorized" {
			t.Fatalf("replayed login on another connection: %v, want unauthorized", got)
		}
		// That first raw session replaced phone's session on the other replica: log phone in
		// again for the next subtests.
		_ = ws1.Close()
		phone = login(outer, w.bridge2, dev)
	})

	t.Run("RemovedDevice", func(t *testing.T) {
		in, number := w.startPush(t, alice)
		ch := nextChallenge(t, phone)
		// The delivery is acknowledged asynchronously: wait for it before the removal, so the
		// state after the removed device's answer is known.
		natstest.Eventually(t, 10*time.Second, func() error {
			if s := poll(t, w.Stack, alice, in.StatusID); s.Status != "PUSH_ACKNOWLEDGED" {
				return fmt.Errorf("status before the removal: %s", s.Status)
			}
			return nil
		})
		if r := w.Do(t, http.MethodDelete, "/device-srv/devices/"+dev.phid, alice, nil); r.Status != http.StatusNoContent {
			t.Fatalf("remove device: %d", r.Status)
		}
		if _, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, number, ""); bridgeCode(err) != "not_found" {
			t.Fatalf("answer of a removed device: %v, want not_found", err)
		}
		if s := poll(t, w.Stack, alice, in.StatusID); s.Status != "PUSH_ACKNOWLEDGED" {
			t.Fatalf("status after a removed device answered: %s", s.Status)
		}
		c, err := companion.Dial(testCtx(t), w.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Login(testCtx(t), dev.phid, dev.key); bridgeCode(err) != "unauthorized" {
			t.Fatalf("login of a removed device: %v", err)
		}
		w.MustProblem(t, w.Do(t, http.MethodPost, "/verification-srv/authentication/push/initiation", alice, nil), http.StatusConflict, "no_factor")
	})
	checkEvents(t, w.rec)
}

// TestPushOfflineDeviceAndExpiry: a device that is not connected gets a signed wake-up on the
// webhook, then the pending challenge when it logs in (on any replica), and approves. A push
// nobody answers expires, and a late answer is refused. A new push replaces the pending one, and
// MFA_PUSH_RATE pushes per user and 10 minutes is the limit.
func TestPushOfflineDeviceAndExpiry(t *testing.T) {
	secret := strings.Repeat("s", 32)
	wakeups := make(chan map[string]any, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		// Verified as a receiver would, from the documented format alone.
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(r.Header.Get("X-Mfaflow-Timestamp") + "." + string(body)))
		if want := "v1=" + hex.EncodeToString(mac.Sum(nil)); !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Mfaflow-Signature"))) {
			http.Error(rw, "bad signature", http.StatusUnauthorized)
			return
		}
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		wakeups <- m
	}))
	t.Cleanup(hook.Close)
	env := map[string]string{"MFA_PUSH_WEBHOOK_URL": hook.URL, "MFA_PUSH_WEBHOOK_SECRET": secret, "MFA_VERIFICATION_TTL": "30s"}
	w := startPushWorld(t, env)
	alice := w.token(t, "alice", "", "")
	dev := w.enrollPushDevice(t, alice)

	in, number := w.startPush(t, alice) // nobody is connected
	select {
	case m := <-wakeups:
		if m["ph_id"] != dev.phid || m["challenge_id"] != in.ExchangeID.ExchangeID || m["number"] != nil || m["context"] != nil {
			t.Fatalf("wake-up = %v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up for the offline device")
	}
	phone := login(t, w.URL, dev) // bridge replica 1 this time
	ch := nextChallenge(t, phone)
	if ch.ChallengeID != in.ExchangeID.ExchangeID {
		t.Fatalf("pending challenge = %+v", ch)
	}
	if ack, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, number, ""); err != nil || ack.Status != "AUTHENTICATED" {
		t.Fatalf("approve the pending challenge: %+v %v", ack, err)
	}

	// Expiry: the authentication ends EXPIRED with its event, and a late answer is refused.
	late, lateNumber := w.startPush(t, alice)
	lateCh := nextChallenge(t, phone)
	natstest.Eventually(t, 10*time.Second, func() error { // the bridge's acknowledgement arrives after the frame
		if s := poll(t, w.Stack, alice, late.StatusID); s.Status != "PUSH_ACKNOWLEDGED" {
			return fmt.Errorf("status %s", s.Status)
		}
		return nil
	})
	w.clock.Advance(31 * time.Second)
	w.rec.WaitTypes(t, late.StatusID, events.VerificationInitiated, events.PushSent, events.PushAcknowledged, events.VerificationExpired)
	if _, err := phone.Respond(testCtx(t), lateCh.ChallengeID, protocol.DecisionApprove, lateNumber, ""); bridgeCode(err) != "expired" {
		t.Fatalf("late answer: %v, want expired", err)
	}

	// A new push replaces the pending one.
	first, _ := w.startPush(t, alice)
	nextChallenge(t, phone)
	natstest.Eventually(t, 10*time.Second, func() error {
		if s := poll(t, w.Stack, alice, first.StatusID); s.Status != "PUSH_ACKNOWLEDGED" {
			return fmt.Errorf("status %s", s.Status)
		}
		return nil
	})
	second, _ := w.startPush(t, alice)
	nextChallenge(t, phone)
	w.rec.WaitTypes(t, first.StatusID, events.VerificationInitiated, events.PushSent, events.PushAcknowledged, events.VerificationCancelled)
	if s := poll(t, w.Stack, alice, second.StatusID); s.Status == "CANCELLED" {
		t.Fatalf("the newer push was cancelled")
	}
	checkEvents(t, w.rec)
}

// TestPushRate: at most MFA_PUSH_RATE push sign-ins per user and 10 minutes.
func TestPushRate(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_PUSH_RATE": "2"})
	w := &pushWorld{signIn: s}
	alice := w.token(t, "alice", "", "")
	w.enrollPushDevice(t, alice)
	for range 2 {
		w.MustJSON(t, http.MethodPost, "/verification-srv/authentication/push/initiation", alice, nil, http.StatusOK, nil)
	}
	r := w.Do(t, http.MethodPost, "/verification-srv/authentication/push/initiation", alice, nil)
	w.MustProblem(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") != "600" {
		t.Fatalf("Retry-After = %q, want 600", r.Header.Get("Retry-After"))
	}
	w.clock.Advance(10*time.Minute + time.Second)
	w.MustJSON(t, http.MethodPost, "/verification-srv/authentication/push/initiation", alice, nil, http.StatusOK, nil)
}

// rawBridge opens a plain websocket to a bridge and returns it with the hello nonce.
func rawBridge(t *testing.T, baseURL string) (*websocket.Conn, string) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(baseURL, "http")+protocol.Path, http.Header{"Sec-WebSocket-Protocol": {protocol.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	var hello protocol.Hello
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello || hello.Nonce == "" {
		t.Fatalf("hello: %+v %v", hello, err)
	}
	return ws, hello.Nonce
}

// rawCall sends one frame and returns the next answer frame (skipping hello frames).
func rawCall(t *testing.T, ws *websocket.Conn, req protocol.Request) map[string]any {
	t.Helper()
	if err := ws.WriteJSON(req); err != nil {
		t.Fatal(err)
	}
	for {
		var m map[string]any
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m["type"] != protocol.TypeHello {
			return m
		}
	}
}

// TestPushKeyedRetry: a push sign-in retried with the same Idempotency-Key on the other status
// replica answers the same authentication and number; the phone gets one challenge, and the
// authentication's events are those of one push.
func TestPushKeyedRetry(t *testing.T) {
	w := startPushWorld(t, nil)
	alice := w.token(t, "alice", "", "")
	dev := w.enrollPushDevice(t, alice)
	phone := login(t, w.bridge2, dev)
	type pushStart struct {
		authInitiation
		Number string `json:"number"`
	}
	start := func(st *harness.Stack) pushStart {
		r := st.Do(t, http.MethodPost, "/verification-srv/authentication/push/initiation", alice, nil, "Idempotency-Key", "push-retry-1")
		var out pushStart
		if err := json.Unmarshal(r.Body, &out); r.Status != http.StatusOK || err != nil {
			t.Fatalf("keyed push initiation: %d %s", r.Status, r.Body)
		}
		return out
	}
	first := start(&harness.Stack{URL: w.status2})
	retry := start(w.Stack)
	if retry.StatusID != first.StatusID || retry.Number != first.Number || len(first.Number) != 2 {
		t.Fatalf("retry on the other replica: %+v, first %+v", retry, first)
	}
	ch := nextChallenge(t, phone)
	if ch.ChallengeID != first.ExchangeID.ExchangeID {
		t.Fatalf("challenge %s, want %s", ch.ChallengeID, first.ExchangeID.ExchangeID)
	}
	if ack, err := phone.Respond(testCtx(t), ch.ChallengeID, protocol.DecisionApprove, first.Number, ""); err != nil || ack.Status != "AUTHENTICATED" {
		t.Fatalf("approve: %+v %v", ack, err)
	}
	w.rec.WaitTypes(t, first.StatusID, events.VerificationInitiated, events.PushSent, events.PushAcknowledged, events.VerificationSucceeded)
	select {
	case extra := <-phone.Challenges():
		t.Fatalf("a second challenge reached the phone: %+v (first %s)", extra, first.ExchangeID.ExchangeID)
	default:
	}
}
