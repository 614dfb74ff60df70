// Package storetest is the conformance suite every enrollment.Store backend must pass. The KV
// backend runs it against an embedded NATS server; a MongoDB backend will run it when
// MFA_MONGODB_URI is set.
package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
)

// Run runs the suite; newStore must return an empty store for each call.
func Run(t *testing.T, newStore func(t *testing.T) enrollment.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	fresh := func(expires time.Time) enrollment.Enrollment {
		return enrollment.Enrollment{
			ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Method: "TOTP",
			State: enrollment.Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: expires,
		}
	}
	msg := outbox.Message{ID: uuid.NewString(), Subject: "mfa.events.test", Data: []byte(`{}`)}

	t.Run("CreateThenGet", func(t *testing.T) {
		s := newStore(t)
		e := fresh(now.Add(time.Minute))
		created, err := s.Create(ctx, e, msg)
		if err != nil {
			t.Fatal(err)
		}
		if created.Version == 0 {
			t.Fatal("created enrollment has no version")
		}
		for name, get := range map[string]func() (enrollment.Enrollment, error){
			"ByID":       func() (enrollment.Enrollment, error) { return s.Get(ctx, e.ID) },
			"ByExchange": func() (enrollment.Enrollment, error) { return s.GetByExchangeID(ctx, e.ExchangeID) },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got.ID != e.ID || got.Sub != "alice" || got.State != enrollment.Initiated || !got.ExpiresAt.Equal(e.ExpiresAt) || got.Version != created.Version {
				t.Fatalf("%s: got %+v, want %+v", name, got, created)
			}
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Get(ctx, uuid.NewString()); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("Get unknown: %v", err)
		}
		if _, err := s.GetByExchangeID(ctx, uuid.NewString()); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("GetByExchangeID unknown: %v", err)
		}
		if _, err := s.Get(ctx, "../../etc"); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("Get malformed id: %v", err)
		}
	})
	t.Run("DuplicateCreateIsConflict", func(t *testing.T) {
		s := newStore(t)
		e := fresh(now.Add(time.Minute))
		if _, err := s.Create(ctx, e); err != nil {
			t.Fatal(err)
		}
		sameExchange := fresh(now.Add(time.Minute))
		sameExchange.ExchangeID = e.ExchangeID
		if _, err := s.Create(ctx, sameExchange); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("same exchange id: %v", err)
		}
		sameID := fresh(now.Add(time.Minute))
		sameID.ID = e.ID
		if _, err := s.Create(ctx, sameID); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("same status id: %v", err)
		}
	})
	// Initiation names enrollments commands.StatusIDFor(exchange_id); a backend may find them by
	// that name instead of an index, but the contract is the same as for any other status id.
	t.Run("NamedAfterExchangeID", func(t *testing.T) {
		s := newStore(t)
		e := fresh(now.Add(time.Minute))
		e.ID = commands.StatusIDFor(e.ExchangeID)
		created, err := s.Create(ctx, e, msg)
		if err != nil {
			t.Fatal(err)
		}
		other, err := s.Create(ctx, fresh(now.Add(time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []enrollment.Enrollment{created, other} {
			got, err := s.GetByExchangeID(ctx, want.ExchangeID)
			if err != nil || got.ID != want.ID || got.Version != want.Version {
				t.Fatalf("GetByExchangeID(%s): %+v, %v; want %s", want.ExchangeID, got, err, want.ID)
			}
		}
		// The exchange id belongs to one enrollment, however the second is named.
		again := fresh(now.Add(time.Minute))
		again.ExchangeID, again.ID = e.ExchangeID, e.ID
		if _, err := s.Create(ctx, again); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("same exchange id and status id: %v", err)
		}
		sameExchange := fresh(now.Add(time.Minute))
		sameExchange.ExchangeID = e.ExchangeID
		if _, err := s.Create(ctx, sameExchange); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("same exchange id, another status id: %v", err)
		}
		if _, err := s.Get(ctx, sameExchange.ID); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("refused create left an enrollment: %v", err)
		}
		if got, err := s.GetByExchangeID(ctx, e.ExchangeID); err != nil || got.ID != e.ID {
			t.Fatalf("after refused creates: %+v, %v", got, err)
		}
		// A status id that merely looks derived finds nothing by an unknown exchange id.
		if _, err := s.GetByExchangeID(ctx, uuid.NewString()); !errors.Is(err, enrollment.ErrNotFound) {
			t.Fatalf("unknown exchange id: %v", err)
		}
	})
	t.Run("UpdateIsCompareAndSet", func(t *testing.T) {
		s := newStore(t)
		e, err := s.Create(ctx, fresh(now.Add(time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		scanned := e
		scanned.State = enrollment.Scanned
		scanned.Device = enrollment.Device{DeviceID: "d1", Name: "Phone", Platform: "ios"}
		written, err := s.Update(ctx, scanned, msg)
		if err != nil {
			t.Fatal(err)
		}
		if written.Version == e.Version {
			t.Fatal("version did not change")
		}
		stale := e
		stale.State = enrollment.Cancelled
		if _, err := s.Update(ctx, stale); !errors.Is(err, enrollment.ErrStale) {
			t.Fatalf("stale update: %v", err)
		}
		got, err := s.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != enrollment.Scanned || got.Device != scanned.Device {
			t.Fatalf("got %+v after stale update", got)
		}
	})
	t.Run("DueForExpiry", func(t *testing.T) {
		s := newStore(t)
		past, err := s.Create(ctx, fresh(now.Add(-time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Create(ctx, fresh(now.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		pastDone, err := s.Create(ctx, fresh(now.Add(-time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		pastDone.State = enrollment.Cancelled
		if _, err := s.Update(ctx, pastDone); err != nil {
			t.Fatal(err)
		}
		due, err := s.DueForExpiry(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(due) != 1 || due[0].ID != past.ID {
			t.Fatalf("due = %+v, want only %s", due, past.ID)
		}
	})
}
