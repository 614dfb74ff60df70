// Package storetest is the conformance suite every status store backend must pass: its
// enrollment.Store, its signin.Store on the same data (signin.go), and with them the backend's
// signin.PushLedger where it keeps one. The KV backend runs it against
// an embedded NATS server, the MongoDB backend against the server of MFA_MONGODB_URI or an
// embedded FerretDB (pkg/mongotest).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/pkg/outbox/outboxtest"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/nats-io/nats.go/jetstream"
)

// Backend is a store under test and its outbox relay.
type Backend struct {
	Store enrollment.Store
	// SignIns is the sign-in store on the same data as Store.
	SignIns signin.Store
	// Relay runs the backend's outbox relay, publishing to js, until ctx ends. Nil only for
	// wrappers of a backend that runs the suite itself (the outbox subtests then skip, loudly).
	Relay func(ctx context.Context, js jetstream.JetStream)
	// Pending counts the documents whose events are not yet relayed (the outbox depth);
	// required with Relay.
	Pending func(ctx context.Context) (int, error)
	// Ledger is the backend's push ledger, nil for a store that keeps none (its subtests then
	// skip, loudly).
	Ledger signin.PushLedger
}

// Run runs the suite; newBackend must return an empty store for each call.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	newStore := func(t *testing.T) enrollment.Store { return newBackend(t).Store }
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
		e.PendingCredential = []byte{0x02, 0x01, 0xff, 0x00, 'x'} // opaque bytes, kept exactly
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
			if got.ID != e.ID || got.Sub != "alice" || got.State != enrollment.Initiated || !got.ExpiresAt.Equal(e.ExpiresAt) || got.Version != created.Version ||
				!bytes.Equal(got.PendingCredential, e.PendingCredential) {
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
	// Initiation names enrollments ids.StatusIDFor(exchange_id); a backend may find them by
	// that name instead of an index, but the contract is the same as for any other status id.
	t.Run("NamedAfterExchangeID", func(t *testing.T) {
		s := newStore(t)
		e := fresh(now.Add(time.Minute))
		e.ID = ids.StatusIDFor(e.ExchangeID)
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
	// An ENROLLED enrollment keeps what a repeated enroll frame is checked against: the
	// registered device and the keyed hash of the frame that enrolled it.
	t.Run("EnrolledKeepsEnrollProof", func(t *testing.T) {
		s := newStore(t)
		e, err := s.Create(ctx, fresh(now.Add(time.Minute)))
		if err != nil {
			t.Fatal(err)
		}
		enrolled := e
		enrolled.State, enrolled.UpdatedAt = enrollment.Enrolled, now.Add(time.Second)
		enrolled.Device = enrollment.Device{DeviceID: "d1", Name: "Phone", Platform: "ios"}
		enrolled.DeviceID, enrolled.PHID = "d1", "ph-1"
		enrolled.EnrollProof = []byte{0x00, 0xff, 0x10, 'p', 0x80} // opaque bytes, kept exactly
		if _, err := s.Update(ctx, enrolled, msg); err != nil {
			t.Fatal(err)
		}
		for name, get := range map[string]func() (enrollment.Enrollment, error){
			"ByID":       func() (enrollment.Enrollment, error) { return s.Get(ctx, e.ID) },
			"ByExchange": func() (enrollment.Enrollment, error) { return s.GetByExchangeID(ctx, e.ExchangeID) },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got.State != enrollment.Enrolled || got.DeviceID != "d1" || got.PHID != "ph-1" || got.Device != enrolled.Device ||
				!got.UpdatedAt.Equal(enrolled.UpdatedAt) || !bytes.Equal(got.EnrollProof, enrolled.EnrollProof) {
				t.Fatalf("%s: got %+v, want %+v", name, got, enrolled)
			}
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
	// Every write's events are stored with the write and relayed exactly once: events written
	// while no relay runs are published once it starts; a refused (stale) write's events never
	// are; a relay started again publishes only what was written since.
	t.Run("OutboxRelayedExactlyOnce", func(t *testing.T) {
		b := newBackend(t)
		if b.Relay == nil {
			t.Skip("this store wraps a backend; its relay is checked on the backend")
		}
		s := b.Store
		ev := func() outbox.Message {
			return outbox.Message{ID: uuid.NewString(), Subject: "mfa.events.test", Data: []byte(`{}`)}
		}
		first := func(t *testing.T) (want, refused []string) {
			for range 3 {
				created, updated := ev(), ev()
				e, err := s.Create(ctx, fresh(now.Add(time.Hour)), created)
				if err != nil {
					t.Fatal(err)
				}
				e.State = enrollment.Scanned
				if _, err := s.Update(ctx, e); err != nil { // a write without events in between
					t.Fatal(err)
				}
				if e, err = s.Get(ctx, e.ID); err != nil {
					t.Fatal(err)
				}
				e.State = enrollment.Cancelled
				if _, err := s.Update(ctx, e, updated); err != nil {
					t.Fatal(err)
				}
				stale := ev()
				if _, err := s.Update(ctx, e, stale); !errors.Is(err, enrollment.ErrStale) {
					t.Fatalf("stale update: %v", err)
				}
				want, refused = append(want, created.ID, updated.ID), append(refused, stale.ID)
			}
			return want, refused
		}
		late := func(t *testing.T) (want, refused []string) {
			late := ev()
			if _, err := s.Create(ctx, fresh(now.Add(time.Hour)), late); err != nil {
				t.Fatal(err)
			}
			return []string{late.ID}, nil
		}
		outboxtest.RelayedExactlyOnce(t, outboxtest.Relay{Run: b.Relay, Pending: b.Pending}, first, late)
	})
	// Of writers racing from the same version, exactly one wins; the others get ErrStale and
	// leave neither their state nor their events behind.
	t.Run("ConcurrentCompareAndSetOneWinner", func(t *testing.T) {
		s := newStore(t)
		e, err := s.Create(ctx, fresh(now.Add(time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		winner := outboxtest.OneWinner(t, 6, enrollment.ErrStale, func(i int) error {
			w := e
			w.State = enrollment.Scanned
			w.Device = enrollment.Device{DeviceID: fmt.Sprintf("d%d", i)}
			_, err := s.Update(ctx, w)
			return err
		})
		got, err := s.Get(ctx, e.ID)
		if want := fmt.Sprintf("d%d", winner); err != nil || got.Device.DeviceID != want {
			t.Fatalf("stored %+v %v, want the winner %s", got.Device, err, want)
		}
	})
	runSignIns(t, newBackend)
	runLedger(t, newBackend)
}

// runLedger is the contract of signin.PushLedger: per user, at most max pushes in a sliding
// window, and the one pending push, which each new push replaces.
func runLedger(t *testing.T, newBackend func(t *testing.T) Backend) {
	newLedger := func(t *testing.T) signin.PushLedger {
		l := newBackend(t).Ledger
		if l == nil {
			t.Skip("this store keeps no push ledger; the backend's is checked on the backend")
		}
		return l
	}
	// Unix seconds: the precision the ledger keeps.
	now := time.Now().UTC().Truncate(time.Second)
	const window = 10 * time.Minute
	t.Run("PushLedgerPendingIsTheLatest", func(t *testing.T) {
		l, ctx := newLedger(t), t.Context()
		if id, err := l.Pending(ctx, "alice"); err != nil || id != "" {
			t.Fatalf("Pending of a new user: %q %v, want none", id, err)
		}
		prev, err := l.Reserve(ctx, "alice", "push-1", now, 5, window)
		if err != nil || prev != "" {
			t.Fatalf("first Reserve: previous %q %v, want none", prev, err)
		}
		prev, err = l.Reserve(ctx, "alice", "push-2", now.Add(time.Second), 5, window)
		if err != nil || prev != "push-1" {
			t.Fatalf("second Reserve: previous %q %v, want push-1", prev, err)
		}
		if id, err := l.Pending(ctx, "alice"); err != nil || id != "push-2" {
			t.Fatalf("Pending = %q %v, want push-2", id, err)
		}
		// Users do not share a ledger.
		if id, err := l.Pending(ctx, "bob"); err != nil || id != "" {
			t.Fatalf("Pending of another user: %q %v, want none", id, err)
		}
		if prev, err := l.Reserve(ctx, "bob", "push-b", now, 5, window); err != nil || prev != "" {
			t.Fatalf("another user's Reserve: previous %q %v, want none", prev, err)
		}
		if id, err := l.Pending(ctx, "alice"); err != nil || id != "push-2" {
			t.Fatalf("Pending after another user's push = %q %v, want push-2", id, err)
		}
	})
	t.Run("PushLedgerLimitSlides", func(t *testing.T) {
		l, ctx := newLedger(t), t.Context()
		for i, at := range []time.Time{now, now.Add(time.Minute)} {
			if _, err := l.Reserve(ctx, "alice", fmt.Sprintf("push-%d", i), at, 2, window); err != nil {
				t.Fatalf("push %d: %v", i, err)
			}
		}
		_, err := l.Reserve(ctx, "alice", "push-over", now.Add(2*time.Minute), 2, window)
		var tooMany *signin.TooManyPushesError
		if !errors.Is(err, signin.ErrTooManyPushes) || !errors.As(err, &tooMany) {
			t.Fatalf("third push in the window: %v, want a TooManyPushesError", err)
		}
		if !tooMany.RetryAt.Equal(now.Add(window)) {
			t.Fatalf("RetryAt %v, want %v (when the oldest push leaves the window)", tooMany.RetryAt, now.Add(window))
		}
		if id, err := l.Pending(ctx, "alice"); err != nil || id != "push-1" {
			t.Fatalf("Pending after a refused push = %q %v, want push-1", id, err)
		}
		// The oldest push has left the window: one more is allowed.
		prev, err := l.Reserve(ctx, "alice", "push-2", now.Add(window+time.Second), 2, window)
		if err != nil || prev != "push-1" {
			t.Fatalf("push after the window slid: previous %q %v, want push-1", prev, err)
		}
	})
	// Racing reservations are serialised: no more than max succeed, the rest are refused for
	// the limit (never lost to a lost compare-and-set), and each replaces exactly one pending push.
	t.Run("PushLedgerConcurrentReserve", func(t *testing.T) {
		l, ctx := newLedger(t), t.Context()
		const racers, max = 6, 4
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			ok       []string
			previous []string
			refused  int
		)
		start := make(chan struct{})
		for i := range racers {
			wg.Go(func() {
				id := fmt.Sprintf("push-%d", i)
				<-start
				prev, err := l.Reserve(ctx, "alice", id, now, max, window)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok, previous = append(ok, id), append(previous, prev)
				case errors.Is(err, signin.ErrTooManyPushes):
					refused++
				default:
					t.Errorf("racer %d: %v", i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(ok) != max || refused != racers-max {
			t.Fatalf("%d reserved, %d refused; want %d and %d", len(ok), refused, max, racers-max)
		}
		// The successful reservations form a chain: each replaced the one before it, the first
		// replaced none, and the last is pending.
		pending, err := l.Pending(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		chain := append(slices.Clone(previous), pending)
		slices.Sort(chain)
		want := append(slices.Clone(ok), "")
		slices.Sort(want)
		if !slices.Equal(chain, want) {
			t.Fatalf("previous ids %v and pending %q do not chain the reserved ids %v", previous, pending, ok)
		}
	})
}
