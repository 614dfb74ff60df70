package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/pkg/outbox/outboxtest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// runSignIns is the contract of signin.Store, which shares its data with enrollment.Store: one
// status id names one object of one kind, and each store finds only its own kind.
func runSignIns(t *testing.T, newBackend func(t *testing.T) Backend) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	fresh := func(expires time.Time) signin.Authentication {
		exchangeID := uuid.NewString()
		return signin.Authentication{
			ID: ids.StatusIDFor(exchangeID), ExchangeID: exchangeID, Sub: "alice", Method: method.TOTP,
			State: signin.Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: expires, Seq: 1,
			Initiator: "login-service", ClientID: "shop", Context: map[string]string{"app": "shop"},
		}
	}
	freshEnrollment := func(expires time.Time) enrollment.Enrollment {
		exchangeID := uuid.NewString()
		return enrollment.Enrollment{
			ID: ids.StatusIDFor(exchangeID), ExchangeID: exchangeID, Sub: "alice", Method: "TOTP",
			State: enrollment.Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: expires, Seq: 1,
		}
	}
	msg := outbox.Message{ID: uuid.NewString(), Subject: "mfa.events.test", Data: []byte(`{}`)}

	// A sign-in keeps who started it (it belongs to its starter), its push numbers and whether
	// its mfa_token was spent as a step-up proof (single use) across writes.
	t.Run("SignInRoundTrip", func(t *testing.T) {
		s := newBackend(t).SignIns
		a := fresh(now.Add(time.Minute))
		a.Method, a.Number, a.Candidates = method.Push, "42", []string{"17", "42", "88"}
		created, err := s.Create(ctx, a, msg)
		if err != nil {
			t.Fatal(err)
		}
		if created.Version == 0 {
			t.Fatal("created sign-in has no version")
		}
		next := created
		next.State, next.PHID, next.AuthTime, next.StepUpUsedAt, next.Seq = signin.Authenticated, "ph-1", now, now.Add(time.Second), created.Seq+1
		if _, err := s.Update(ctx, next, msg); err != nil {
			t.Fatal(err)
		}
		for name, get := range map[string]func() (signin.Authentication, error){
			"ByID":       func() (signin.Authentication, error) { return s.Get(ctx, a.ID) },
			"ByExchange": func() (signin.Authentication, error) { return s.GetByExchangeID(ctx, a.ExchangeID) },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got.State != signin.Authenticated || got.Initiator != "login-service" || got.ClientID != "shop" || got.Context["app"] != "shop" ||
				got.PHID != "ph-1" || got.Number != "42" || len(got.Candidates) != 3 || got.Seq != 2 ||
				!got.AuthTime.Equal(now) || !got.StepUpUsedAt.Equal(now.Add(time.Second)) {
				t.Fatalf("%s: got %+v", name, got)
			}
		}
	})
	// A passkey sign-in keeps its sealed session and the request options it answered while it
	// is open (a keyed retry answers them again), and whether the user was verified.
	t.Run("PasskeySignInRoundTrip", func(t *testing.T) {
		s := newBackend(t).SignIns
		a := fresh(now.Add(time.Minute))
		options := []byte(`{"challenge":"c2lnbi1pbg","rpId":"localhost","allowCredentials":[{"type":"public-key","id":"a2V5"}]}`)
		a.Method, a.Challenge, a.PublicKey = method.WebAuthn, []byte("sealed session"), options
		created, err := s.Create(ctx, a, msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.GetByExchangeID(ctx, a.ExchangeID)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Challenge) != "sealed session" || string(got.PublicKey) != string(options) {
			t.Fatalf("open: challenge %q, options %s", got.Challenge, got.PublicKey)
		}
		next := created
		next.State, next.UserVerified, next.Challenge, next.PublicKey, next.Seq = signin.Authenticated, true, nil, nil, created.Seq+1
		if _, err := s.Update(ctx, next, msg); err != nil {
			t.Fatal(err)
		}
		if got, err = s.Get(ctx, a.ID); err != nil || !got.UserVerified || got.Challenge != nil || got.PublicKey != nil {
			t.Fatalf("authenticated: %+v %v", got, err)
		}
	})
	// A keyed sign-in's status id is not derived from its exchange id: the exchange id still
	// finds it, and still belongs to one status object.
	t.Run("SignInKeyedIDs", func(t *testing.T) {
		s := newBackend(t).SignIns
		a := fresh(now.Add(time.Minute))
		a.ID = uuid.NewString()
		if _, err := s.Create(ctx, a, msg); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetByExchangeID(ctx, a.ExchangeID); err != nil || got.ID != a.ID {
			t.Fatalf("GetByExchangeID: %+v %v", got, err)
		}
		again := fresh(now.Add(time.Minute))
		again.ExchangeID = a.ExchangeID
		if _, err := s.Create(ctx, again); !errors.Is(err, signin.ErrConflict) {
			t.Fatalf("same exchange id: %v", err)
		}
	})
	// Each store finds only its own kind: an enrollment's id or exchange id is no sign-in, a
	// sign-in's no enrollment, and one id is taken for both.
	t.Run("KindsDoNotCross", func(t *testing.T) {
		b := newBackend(t)
		a, err := b.SignIns.Create(ctx, fresh(now.Add(time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		e, err := b.Store.Create(ctx, freshEnrollment(now.Add(time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Store.Get(ctx, a.ID); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("a sign-in read as an enrollment: %v", err)
		}
		if _, err := b.Store.GetByExchangeID(ctx, a.ExchangeID); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("a sign-in's exchange id read as an enrollment's: %v", err)
		}
		if _, err := b.SignIns.Get(ctx, e.ID); !errors.Is(err, signin.ErrNotFound) {
			t.Fatalf("an enrollment read as a sign-in: %v", err)
		}
		if _, err := b.SignIns.GetByExchangeID(ctx, e.ExchangeID); !errors.Is(err, signin.ErrNotFound) {
			t.Fatalf("an enrollment's exchange id read as a sign-in's: %v", err)
		}
		if _, err := b.SignIns.Get(ctx, uuid.NewString()); !errors.Is(err, signin.ErrNotFound) {
			t.Fatalf("unknown id: %v", err)
		}
		taken := fresh(now.Add(time.Minute))
		taken.ID, taken.ExchangeID = e.ID, e.ExchangeID
		if _, err := b.SignIns.Create(ctx, taken); !errors.Is(err, signin.ErrConflict) {
			t.Fatalf("a sign-in over an enrollment: %v", err)
		}
	})
	t.Run("SignInUpdateIsCompareAndSet", func(t *testing.T) {
		s := newBackend(t).SignIns
		a, err := s.Create(ctx, fresh(now.Add(time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		winner := outboxtest.OneWinner(t, 4, signin.ErrStale, func(i int) error {
			w := a
			w.FailedAttempts = i + 1
			_, err := s.Update(ctx, w)
			return err
		})
		got, err := s.Get(ctx, a.ID)
		if err != nil || got.FailedAttempts != winner+1 {
			t.Fatalf("stored %d %v, want the winner's %d", got.FailedAttempts, err, winner+1)
		}
	})
	// The sweeps of both kinds share the open index; each lists its own kind and leaves the
	// other's entries for the other's sweep.
	t.Run("DueForExpiryPerKind", func(t *testing.T) {
		b := newBackend(t)
		a, err := b.SignIns.Create(ctx, fresh(now.Add(-time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		e, err := b.Store.Create(ctx, freshEnrollment(now.Add(-time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		done, err := b.SignIns.Create(ctx, fresh(now.Add(-time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		done.State = signin.Cancelled
		if _, err := b.SignIns.Update(ctx, done); err != nil {
			t.Fatal(err)
		}
		for round := range 2 { // twice: the first sweep of either kind must not hide the other's
			dueSignIns, err := b.SignIns.DueForExpiry(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(dueSignIns) != 1 || dueSignIns[0].ID != a.ID {
				t.Fatalf("round %d: due sign-ins %s, want only %s", round, signInIDs(dueSignIns), a.ID)
			}
			dueEnrollments, err := b.Store.DueForExpiry(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(dueEnrollments) != 1 || dueEnrollments[0].ID != e.ID {
				t.Fatalf("round %d: due enrollments %+v, want only %s", round, dueEnrollments, e.ID)
			}
		}
	})
}

func signInIDs(as []signin.Authentication) string {
	out := ""
	for _, a := range as {
		out += fmt.Sprint(a.ID, " ")
	}
	return out
}
