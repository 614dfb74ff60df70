package signin_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
)

// codes accepts "123456" from device ph-1 and refuses every other code as wrong.
type codes struct{}

func (codes) Ready(context.Context, string, string) error { return nil }
func (codes) Challenge(context.Context, string, string, string, string, string) (factor.Sent, []byte, error) {
	return factor.Sent{}, nil, factor.ErrNoFactor
}

func (codes) CheckCode(_ context.Context, _, _, code, _ string, _ []byte) (string, error) {
	if code == "123456" {
		return "ph-1", nil
	}
	return "", factor.ErrInvalidCode
}

type codeFixture struct {
	svc   *signin.Service
	store *kv.Store
	clock *testkit.Clock
}

func newCodeFixture(t *testing.T) codeFixture {
	t.Helper()
	store, err := kv.Open(context.Background(), natstest.Start(t).JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	clock := testkit.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	return codeFixture{svc: &signin.Service{Store: store.SignIns(), Authenticator: codes{}, Now: clock.Now}, store: store, clock: clock}
}

func (f codeFixture) start(t *testing.T) signin.Authentication {
	t.Helper()
	exchangeID := uuid.NewString()
	a, err := f.svc.Start(context.Background(), signin.NewAuthentication{
		ID: ids.StatusIDFor(exchangeID), ExchangeID: exchangeID, Sub: "alice", Initiator: "alice",
		Method: method.TOTP, TTL: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var alice = signin.Caller{Sub: "alice"}

// A code sign-in: a refused code leaves it open and counts; the right one makes it
// AUTHENTICATED; after that it takes no code.
func TestCodeSignIn(t *testing.T) {
	ctx := context.Background()
	f := newCodeFixture(t)
	a := f.start(t)
	if a.State != signin.Initiated || a.Seq != 1 {
		t.Fatalf("started %s seq %d", a.State, a.Seq)
	}
	got, err := f.svc.Verify(ctx, a.ExchangeID, method.TOTP, alice, "000000")
	if !errors.Is(err, factor.ErrInvalidCode) || got.State != signin.Initiated || got.FailedAttempts != 1 {
		t.Fatalf("wrong code: %s %d %v", got.State, got.FailedAttempts, err)
	}
	if _, err := f.svc.Verify(ctx, a.ExchangeID, method.TOTP, signin.Caller{Sub: "bob"}, "123456"); !errors.Is(err, signin.ErrNotFound) {
		t.Fatalf("another caller: %v", err)
	}
	if _, err := f.svc.Verify(ctx, a.ExchangeID, method.BackupCode, alice, "123456"); !errors.Is(err, signin.ErrConflict) {
		t.Fatalf("another method: %v", err)
	}
	got, err = f.svc.Verify(ctx, a.ExchangeID, method.TOTP, alice, "123456")
	if err != nil || got.State != signin.Authenticated || got.PHID != "ph-1" || got.AuthTime.IsZero() {
		t.Fatalf("right code: %+v %v", got, err)
	}
	if _, err := f.svc.Verify(ctx, a.ExchangeID, method.TOTP, alice, "123456"); !errors.Is(err, signin.ErrConflict) {
		t.Fatalf("a code for an AUTHENTICATED sign-in: %v", err)
	}
	if _, err := f.svc.Cancel(ctx, a.ID, alice); !errors.Is(err, signin.ErrConflict) {
		t.Fatalf("cancel of an AUTHENTICATED sign-in: %v", err)
	}
}

// Expiry: on access and by the sweep, each with sign-in errors.
func TestSignInExpiry(t *testing.T) {
	ctx := context.Background()
	f := newCodeFixture(t)
	polled, swept := f.start(t), f.start(t)
	f.clock.Advance(5 * time.Minute)
	if _, err := f.svc.Verify(ctx, polled.ExchangeID, method.TOTP, alice, "123456"); !errors.Is(err, signin.ErrExpired) {
		t.Fatalf("a code after expiry: %v", err)
	}
	if n, err := f.svc.ExpireDue(ctx); err != nil || n != 1 {
		t.Fatalf("sweep expired %d %v, want 1 (the other was expired on access)", n, err)
	}
	for _, a := range []signin.Authentication{polled, swept} {
		if got, err := f.svc.Get(ctx, a.ID, alice); err != nil || got.State != signin.Expired {
			t.Fatalf("after expiry: %s %v", got.State, err)
		}
	}
	if _, err := f.svc.Cancel(ctx, swept.ID, alice); !errors.Is(err, signin.ErrExpired) {
		t.Fatalf("cancel after expiry: %v", err)
	}
}

// The two aggregates do not see each other: an enrollment's status id is no sign-in.
func TestSignInIsNoEnrollment(t *testing.T) {
	ctx := context.Background()
	f := newCodeFixture(t)
	enrollments := &enrollment.Service{Store: f.store, Now: f.clock.Now}
	e, err := enrollments.Create(ctx, enrollment.NewEnrollment{ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Method: "TOTP",
		ExpiresAt: f.clock.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Get(ctx, e.ID, alice); !errors.Is(err, signin.ErrNotFound) {
		t.Fatalf("an enrollment as a sign-in: %v", err)
	}
	a := f.start(t)
	if _, err := enrollments.Get(ctx, a.ID, enrollment.Caller{Sub: "alice"}); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("a sign-in as an enrollment: %v", err)
	}
	if _, err := enrollments.Scan(ctx, a.ExchangeID, enrollment.Device{DeviceID: "d-1"}); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("a sign-in's exchange id scanned: %v", err)
	}
}

// An mfa_token is spent once as a step-up proof, by its user, while its sign-in is recent.
func TestRedeemStepUp(t *testing.T) {
	ctx := context.Background()
	f := newCodeFixture(t)
	a := f.start(t)
	if err := f.svc.RedeemStepUp(ctx, a.ID, "alice", time.Time{}); !errors.Is(err, signin.ErrStepUpRequired) {
		t.Fatalf("an open sign-in: %v", err)
	}
	if _, err := f.svc.Verify(ctx, a.ExchangeID, method.TOTP, alice, "123456"); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		id, sub   string
		notBefore time.Time
	}{
		"Unknown":     {uuid.NewString(), "alice", time.Time{}},
		"AnotherUser": {a.ID, "bob", time.Time{}},
		"TooOld":      {a.ID, "alice", f.clock.Now().Add(time.Second)},
	} {
		if err := f.svc.RedeemStepUp(ctx, tc.id, tc.sub, tc.notBefore); !errors.Is(err, signin.ErrStepUpRequired) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := f.svc.RedeemStepUp(ctx, a.ID, "alice", f.clock.Now().Add(-time.Minute)); err != nil {
		t.Fatalf("first redemption: %v", err)
	}
	if err := f.svc.RedeemStepUp(ctx, a.ID, "alice", f.clock.Now().Add(-time.Minute)); !errors.Is(err, signin.ErrStepUpRequired) {
		t.Fatalf("second redemption: %v", err)
	}
}
