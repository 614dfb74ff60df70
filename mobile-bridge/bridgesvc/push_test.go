package bridgesvc_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/bridgesvc"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/mobile-bridge/internal/bridgetest"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
)

const (
	phID = "ph-1"
	sub  = "alice"
)

// device registers a push-capable device with the registry stand-in and returns its key.
func device(t *testing.T, env *bridgetest.Env, id string) *ecdsa.PrivateKey {
	t.Helper()
	key, err := companion.NewDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := companion.PublicJWK(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	env.Registry.Add(commands.DeviceInfo{PHID: id, Sub: sub,
		Key: &commands.DeviceKey{Kty: jwk.Kty, Crv: jwk.Crv, X: jwk.X, Y: jwk.Y}})
	return key
}

func signLogin(t *testing.T, key *ecdsa.PrivateKey, nonce, ph string) string {
	t.Helper()
	sig, err := companion.SignLogin(key, nonce, ph)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func signPush(t *testing.T, key *ecdsa.PrivateKey, ch, decision, number string) string {
	t.Helper()
	sig, err := companion.SignPush(key, ch, decision, number)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// dialLogin opens a connection and logs in as ph with key.
func dialLogin(t *testing.T, env *bridgetest.Env, key *ecdsa.PrivateKey, ph string) *websocket.Conn {
	t.Helper()
	ws, nonce := dialNonce(t, env)
	send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "login", PHID: ph, Sig: signLogin(t, key, nonce, ph)})
	f := read(t, ws)
	if f.Type != protocol.TypeAck || f.ID != "login" || f.PHID != ph {
		t.Fatalf("login answered %+v, want ack with ph_id %s", f, ph)
	}
	return ws
}

func dialNonce(t *testing.T, env *bridgetest.Env) (*websocket.Conn, string) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: readWait}
	ws, resp, err := d.Dial(env.WSURL, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	return ws, readHello(t, ws)
}

// challengeExpiry is every test challenge's expiry: fixed once, so that a challenge built again
// to compare with (wantChallenge) has the same expiry even when a second boundary passed.
var challengeExpiry = time.Now().Add(time.Hour).UTC().Truncate(time.Second)

func challenge(id string) bridgetest.Challenge {
	return bridgetest.Challenge{
		PushChallenge: commands.PushChallenge{
			ChallengeID: id, StatusID: "st-" + id, Sub: sub, Numbers: []string{"12", "42", "77"},
			Context: map[string]string{"app": "ACME"}, ExpiresAt: challengeExpiry,
		},
		Right: "42",
	}
}

func wantChallenge(t *testing.T, f frame, ch bridgetest.Challenge) {
	t.Helper()
	if f.Type != protocol.TypePushChallenge || f.ChallengeID != ch.ChallengeID || len(f.Numbers) != 3 ||
		f.Numbers[1] != "42" || f.Context["app"] != "ACME" || !f.ExpiresAt.Equal(ch.ExpiresAt) {
		t.Fatalf("got %+v, want push.challenge %s", f, ch.ChallengeID)
	}
}

func TestHello(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{})
	_, a := dialNonce(t, env)
	_, b := dialNonce(t, env)
	if a == b {
		t.Fatalf("two connections got the same nonce %q", a)
	}
}

func TestLogin(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		ws := dialLogin(t, env, key, phID)
		// A second login of the same device is idempotent.
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "again", PHID: phID, Sig: "x"})
		if f := read(t, ws); f.Type != protocol.TypeAck || f.ID != "again" || f.PHID != phID {
			t.Fatalf("second login %+v, want ack", f)
		}
		if got := env.Registry.Gets(); len(got) != 1 || got[0].PHID != phID {
			t.Fatalf("registry got %+v", got)
		}
	})
	t.Run("ErrOtherDeviceOnSameConnection", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		other := device(t, env, "ph-2")
		ws := dialLogin(t, env, key, phID)
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "2", PHID: "ph-2", Sig: signLogin(t, other, "n", "ph-2")})
		wantError(t, read(t, ws), "2", fault.Conflict)
	})
	t.Run("ErrBadSignatureThenRetry", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		wrong, _ := companion.NewDeviceKey()
		ws, nonce := dialNonce(t, env)
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "1", PHID: phID, Sig: signLogin(t, wrong, nonce, phID)})
		wantError(t, read(t, ws), "1", fault.Unauthorized)
		fresh := read(t, ws)
		if fresh.Type != protocol.TypeHello || fresh.Nonce == nonce {
			t.Fatalf("after a refused login got %+v, want a hello with a fresh nonce", fresh)
		}
		// The spent nonce stays spent, even with the right key.
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "2", PHID: phID, Sig: signLogin(t, key, nonce, phID)})
		wantError(t, read(t, ws), "2", fault.Unauthorized)
		next := read(t, ws)
		// The connection still works: the latest nonce logs in.
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "3", PHID: phID, Sig: signLogin(t, key, next.Nonce, phID)})
		if f := read(t, ws); f.Type != protocol.TypeAck || f.ID != "3" {
			t.Fatalf("login with the fresh nonce: %+v", f)
		}
	})
	t.Run("ErrReplayOnNewConnection", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		ws, nonce := dialNonce(t, env)
		login := protocol.Request{Type: protocol.TypeLogin, ID: "1", PHID: phID, Sig: signLogin(t, key, nonce, phID)}
		send(t, ws, login)
		if f := read(t, ws); f.Type != protocol.TypeAck {
			t.Fatalf("login: %+v", f)
		}
		replay, _ := dialNonce(t, env)
		send(t, replay, login)
		wantError(t, read(t, replay), "1", fault.Unauthorized)
	})
	t.Run("ErrUnknownDevice", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key, _ := companion.NewDeviceKey()
		ws, nonce := dialNonce(t, env)
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "1", PHID: "ph-nobody", Sig: signLogin(t, key, nonce, "ph-nobody")})
		wantError(t, read(t, ws), "1", fault.Unauthorized)
	})
	t.Run("ErrNotPushCapable", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key, _ := companion.NewDeviceKey()
		env.Registry.Add(commands.DeviceInfo{PHID: phID, Sub: sub})
		ws, nonce := dialNonce(t, env)
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "1", PHID: phID, Sig: signLogin(t, key, nonce, phID)})
		wantError(t, read(t, ws), "1", fault.Unauthorized)
	})
	t.Run("ErrBadPHID", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		ws, _ := dialNonce(t, env)
		send(t, ws, protocol.Request{Type: protocol.TypeLogin, ID: "1", PHID: "a.>", Sig: "x"})
		wantError(t, read(t, ws), "1", fault.BadRequest)
		if n := len(env.Registry.Gets()); n != 0 {
			t.Fatalf("registry asked %d times for an invalid ph_id", n)
		}
	})
}

func TestPushDelivery(t *testing.T) {
	t.Run("ToSessionOnOtherReplica", func(t *testing.T) {
		envA := bridgetest.Start(t, bridgesvc.Config{})
		envB := envA.Replica(t, bridgesvc.Config{})
		key := device(t, envA, phID)
		ws := dialLogin(t, envB, key, phID)
		frames, _ := readLoop(ws)

		ch := challenge("ch-1")
		envA.Status.AddChallenge(ch)
		ctx, cancel := context.WithTimeout(context.Background(), readWait)
		defer cancel()
		d, err := bridgetest.Deliver(ctx, envA.NATS.Connect(t), phID, ch.PushChallenge)
		if err != nil || !d.Delivered {
			t.Fatalf("deliver: %+v, %v", d, err)
		}
		select {
		case f := <-frames:
			wantChallenge(t, f, ch)
		case <-time.After(readWait):
			t.Fatal("no push.challenge frame")
		}
		natstest.Eventually(t, readWait, func() error {
			// The login's pending lookup may have raced the AddChallenge and delivered it too.
			acks := envA.Status.PushAcks()
			if len(acks) == 0 {
				return errors.New("no push ack yet")
			}
			for _, a := range acks {
				if a != (commands.PushAckRequest{ChallengeID: "ch-1", PHID: phID, Sub: sub}) {
					t.Fatalf("push ack %+v", a)
				}
			}
			return nil
		})
	})
	t.Run("NoSessionNoResponder", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), readWait)
		defer cancel()
		_, err := bridgetest.Deliver(ctx, env.NATS.Connect(t), phID, challenge("ch-1").PushChallenge)
		if fault.CodeOf(err) != fault.Unavailable {
			t.Fatalf("deliver without a session: %v, want unavailable", err)
		}
	})
	t.Run("OnceWhenPendingAndLive", func(t *testing.T) {
		// A challenge created while the device logs in reaches the connection twice, from the
		// login's pending lookup and live; the device gets it once. A later one still arrives.
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		ch := challenge("ch-1")
		env.Status.AddChallenge(ch)
		ws := dialLogin(t, env, key, phID)
		wantChallenge(t, read(t, ws), ch) // from the pending lookup
		ctx, cancel := context.WithTimeout(context.Background(), readWait)
		defer cancel()
		nc := env.NATS.Connect(t)
		if d, err := bridgetest.Deliver(ctx, nc, phID, ch.PushChallenge); err != nil || !d.Delivered {
			t.Fatalf("live delivery of the same challenge: %+v, %v", d, err)
		}
		next := challenge("ch-2")
		if d, err := bridgetest.Deliver(ctx, nc, phID, next.PushChallenge); err != nil || !d.Delivered {
			t.Fatalf("deliver: %+v, %v", d, err)
		}
		wantChallenge(t, read(t, ws), next) // not ch-1 again
	})
	t.Run("PendingOnLogin", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		first, second := challenge("ch-1"), challenge("ch-2")
		env.Status.AddChallenge(first)
		env.Status.AddChallenge(second)
		ws := dialLogin(t, env, key, phID)
		wantChallenge(t, read(t, ws), first)
		wantChallenge(t, read(t, ws), second)
		if got := env.Status.PushPendings(); len(got) != 1 || got[0] != (commands.PushPendingRequest{PHID: phID, Sub: sub}) {
			t.Fatalf("pending requests %+v", got)
		}
	})
}

func TestOneSessionPerDevice(t *testing.T) {
	envA := bridgetest.Start(t, bridgesvc.Config{})
	envB := envA.Replica(t, bridgesvc.Config{})
	key := device(t, envA, phID)
	old := dialLogin(t, envA, key, phID)
	frames, errs := readLoop(old)
	fresh := dialLogin(t, envB, key, phID)

	// readLoop queues each frame before it reads on, so once the close is in, the frames are too.
	select {
	case err := <-errs:
		if !websocket.IsCloseError(err, bridgesvc.CloseSessionReplaced) {
			t.Fatalf("old session ended with %v, want close %d", err, bridgesvc.CloseSessionReplaced)
		}
	case <-time.After(readWait):
		t.Fatal("old session not closed")
	}
	select {
	case f := <-frames:
		wantError(t, f, "", fault.Conflict)
	default:
		t.Fatal("old session closed without the conflict error frame")
	}

	// Challenges now reach the new session.
	ch := challenge("ch-1")
	envA.Status.AddChallenge(ch)
	ctx, cancel := context.WithTimeout(context.Background(), readWait)
	defer cancel()
	if d, err := bridgetest.Deliver(ctx, envA.NATS.Connect(t), phID, ch.PushChallenge); err != nil || !d.Delivered {
		t.Fatalf("deliver: %+v, %v", d, err)
	}
	wantChallenge(t, read(t, fresh), ch)
}

func TestPushResponse(t *testing.T) {
	t.Run("Approve", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		env.Status.AddChallenge(challenge("ch-1"))
		ws := dialLogin(t, env, key, phID)
		wantChallenge(t, read(t, ws), challenge("ch-1")) // pending, delivered on login
		send(t, ws, protocol.Request{Type: protocol.TypePushResponse, ID: "r", ChallengeID: "ch-1",
			Decision: protocol.DecisionApprove, Number: "42", Sig: signPush(t, key, "ch-1", protocol.DecisionApprove, "42")})
		wantAck(t, read(t, ws), "r", "AUTHENTICATED")
		want := commands.PushRespondRequest{ChallengeID: "ch-1", PHID: phID, Sub: sub, Decision: "approve", Number: "42"}
		if got := env.Status.PushResponds(); len(got) != 1 || got[0] != want {
			t.Fatalf("status got %+v, want [%+v]", got, want)
		}
		// A second answer is the status service's conflict.
		send(t, ws, protocol.Request{Type: protocol.TypePushResponse, ID: "r2", ChallengeID: "ch-1",
			Decision: protocol.DecisionDeny, Sig: signPush(t, key, "ch-1", protocol.DecisionDeny, "")})
		wantError(t, read(t, ws), "r2", fault.Conflict)
	})
	t.Run("DenyNotMe", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		env.Status.AddChallenge(challenge("ch-1"))
		ws := dialLogin(t, env, key, phID)
		wantChallenge(t, read(t, ws), challenge("ch-1")) // pending, delivered on login
		send(t, ws, protocol.Request{Type: protocol.TypePushResponse, ID: "r", ChallengeID: "ch-1",
			Decision: protocol.DecisionDeny, Reason: protocol.ReasonNotMe, Sig: signPush(t, key, "ch-1", protocol.DecisionDeny, "")})
		wantAck(t, read(t, ws), "r", "DENIED")
		if got := env.Status.PushResponds(); len(got) != 1 || got[0].Reason != "not_me" || got[0].Decision != "deny" {
			t.Fatalf("status got %+v", got)
		}
	})
	t.Run("ErrForgedSignature", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		env.Status.AddChallenge(challenge("ch-1"))
		ws := dialLogin(t, env, key, phID)
		wantChallenge(t, read(t, ws), challenge("ch-1")) // pending, delivered on login
		// Signed for another number than the one sent.
		send(t, ws, protocol.Request{Type: protocol.TypePushResponse, ID: "r", ChallengeID: "ch-1",
			Decision: protocol.DecisionApprove, Number: "42", Sig: signPush(t, key, "ch-1", protocol.DecisionApprove, "12")})
		wantError(t, read(t, ws), "r", fault.Unauthorized)
		if n := len(env.Status.PushResponds()); n != 0 {
			t.Fatalf("%d answers forwarded after a bad signature", n)
		}
		// The challenge is still pending and the connection usable.
		send(t, ws, protocol.Request{Type: protocol.TypePushResponse, ID: "r2", ChallengeID: "ch-1",
			Decision: protocol.DecisionApprove, Number: "42", Sig: signPush(t, key, "ch-1", protocol.DecisionApprove, "42")})
		wantAck(t, read(t, ws), "r2", "AUTHENTICATED")
	})
	t.Run("ErrBeforeLogin", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		ws, _ := dialNonce(t, env)
		send(t, ws, protocol.Request{Type: protocol.TypePushResponse, ID: "r", ChallengeID: "ch-1",
			Decision: protocol.DecisionApprove, Number: "42", Sig: signPush(t, key, "ch-1", protocol.DecisionApprove, "42")})
		wantError(t, read(t, ws), "r", fault.Unauthorized)
		if n := len(env.Status.PushResponds()); n != 0 {
			t.Fatalf("%d answers forwarded before login", n)
		}
	})
	t.Run("ErrMalformed", func(t *testing.T) {
		env := bridgetest.Start(t, bridgesvc.Config{})
		key := device(t, env, phID)
		ws := dialLogin(t, env, key, phID)
		for i, req := range []protocol.Request{
			{ChallengeID: "a.*", Decision: "approve", Number: "42"},
			{ChallengeID: "ch-1", Decision: "maybe", Number: "42"},
			{ChallengeID: "ch-1", Decision: "approve", Number: "4"},
			{ChallengeID: "ch-1", Decision: "approve", Number: "42", Reason: "not_me"},
			{ChallengeID: "ch-1", Decision: "approve", Number: "42"}, // no sig
		} {
			req.Type, req.ID = protocol.TypePushResponse, string(rune('a'+i))
			if req.ChallengeID == "ch-1" && i < 4 {
				req.Sig = signPush(t, key, req.ChallengeID, req.Decision, req.Number)
			}
			send(t, ws, req)
			wantError(t, read(t, ws), req.ID, fault.BadRequest)
		}
		if n := len(env.Status.PushResponds()); n != 0 {
			t.Fatalf("%d malformed answers forwarded", n)
		}
	})
}

func TestEnrollForwardsDeviceKey(t *testing.T) {
	env := bridgetest.Start(t, bridgesvc.Config{})
	env.Status.Add("eid-1", bridgetest.Enrollment{StatusID: "st-1", Secret: testSecret})
	key, _ := companion.NewDeviceKey()
	jwk, _ := companion.PublicJWK(&key.PublicKey)
	ws := dial(t, env, protocol.Subprotocol)

	bad := jwk
	bad.Y = bad.X // not on the curve
	send(t, ws, protocol.Request{Type: protocol.TypeEnroll, ID: "1", ExchangeID: "eid-1", Code: mustCode(t, time.Now()), DeviceKey: &bad})
	wantError(t, read(t, ws), "1", fault.BadRequest)

	send(t, ws, protocol.Request{Type: protocol.TypeEnroll, ID: "2", ExchangeID: "eid-1", Code: mustCode(t, time.Now()), DeviceKey: &jwk})
	wantAck(t, read(t, ws), "2", "ENROLLED")
	got := env.Status.Enrolls()
	want := commands.DeviceKey{Kty: "EC", Crv: "P-256", X: jwk.X, Y: jwk.Y}
	if len(got) != 1 || got[0].Device.Key == nil || *got[0].Device.Key != want {
		t.Fatalf("status got %+v, want device key %+v", got, want)
	}
}
