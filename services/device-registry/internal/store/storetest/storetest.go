// Package storetest is the conformance suite of device.Store: the contract every backend must
// keep, written once and run against each of them, so that the service behaves the same
// whichever store the deployment picks.
//
// Backends run it from their own tests:
//
//	func TestStore(t *testing.T) { storetest.Run(t, func(t *testing.T) storetest.Backend { … }) }
//
// internal/store/kv runs it on an embedded NATS server, internal/store/mongo on the server of
// MFA_MONGODB_URI or an embedded FerretDB (pkg/mongotest).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/pkg/outbox/outboxtest"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/nats-io/nats.go/jetstream"
)

// Backend is a store under test and its outbox relay.
type Backend struct {
	Store device.Store
	// Relay runs the backend's outbox relay(s), publishing to js, until ctx ends.
	Relay func(ctx context.Context, js jetstream.JetStream)
	// Pending counts the documents whose events are not yet relayed (the outbox depth).
	Pending func(ctx context.Context) (int, error)
}

// Run runs every contract test against a fresh, empty store from newBackend for each subtest.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	newStore := func(t *testing.T) device.Store { return newBackend(t).Store }
	t.Run("LockoutRoundTripAndCAS", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		if _, err := s.GetLockout(ctx, "alice"); !errors.Is(err, device.ErrNotFound) {
			t.Fatalf("GetLockout of a new user: %v, want ErrNotFound", err)
		}
		until := time.Date(2026, 3, 1, 12, 1, 0, 0, time.UTC)
		created, err := s.PutLockout(ctx, device.Lockout{Sub: "alice", Failures: 2, Locks: 1, LockedUntil: until})
		if err != nil || created.Version == 0 {
			t.Fatalf("PutLockout create: %+v %v", created, err)
		}
		if _, err := s.PutLockout(ctx, device.Lockout{Sub: "alice", Failures: 9}); !errors.Is(err, device.ErrStale) {
			t.Fatalf("second create: %v, want ErrStale", err)
		}
		got, err := s.GetLockout(ctx, "alice")
		if err != nil || got.Failures != 2 || got.Locks != 1 || !got.LockedUntil.Equal(until) || got.Version != created.Version {
			t.Fatalf("GetLockout = %+v %v", got, err)
		}
		got.Failures = 3
		if _, err := s.PutLockout(ctx, got); err != nil {
			t.Fatalf("PutLockout update: %v", err)
		}
		if _, err := s.PutLockout(ctx, created); !errors.Is(err, device.ErrStale) {
			t.Fatalf("update from an old version: %v, want ErrStale", err)
		}
		if _, err := s.GetLockout(ctx, "bob"); !errors.Is(err, device.ErrNotFound) {
			t.Fatalf("another user's lockout: %v", err)
		}
	})

	t.Run("RecoverySetRoundTripAndCAS", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		if _, err := s.GetRecoverySet(ctx, "alice"); !errors.Is(err, device.ErrNotFound) {
			t.Fatalf("GetRecoverySet of a new user: %v, want ErrNotFound", err)
		}
		set := device.RecoverySet{Sub: "alice", Hashes: [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}, Used: []bool{false, true}, UsedFor: []string{"", "0d7c3f7e-5b1a-4c61-9f0e-2a8b6d4c1e93"}, CreatedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
		created, err := s.PutRecoverySet(ctx, set)
		if err != nil {
			t.Fatalf("PutRecoverySet: %v", err)
		}
		got, err := s.GetRecoverySet(ctx, "alice")
		if err != nil || len(got.Hashes) != 2 || !bytes.Equal(got.Hashes[1], set.Hashes[1]) || !slices.Equal(got.Used, set.Used) || !slices.Equal(got.UsedFor, set.UsedFor) || !got.CreatedAt.Equal(set.CreatedAt) {
			t.Fatalf("GetRecoverySet = %+v %v", got, err)
		}
		got.Used[0] = true
		if _, err := s.PutRecoverySet(ctx, got); err != nil {
			t.Fatalf("update: %v", err)
		}
		if _, err := s.PutRecoverySet(ctx, created); !errors.Is(err, device.ErrStale) {
			t.Fatalf("update from an old version: %v, want ErrStale", err)
		}
	})

	// A reset deletes a user's recovery codes by writing an empty set (device.ResetFactors):
	// no hashes, no marks, no creation time, read back as such, and a new set replaces it.
	t.Run("RecoverySetEmptiedAndRefilled", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		set := device.RecoverySet{Sub: "alice", Hashes: [][]byte{bytes.Repeat([]byte{1}, 32)}, Used: []bool{false}, CreatedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
		created, err := s.PutRecoverySet(ctx, set)
		if err != nil {
			t.Fatal(err)
		}
		emptied, err := s.PutRecoverySet(ctx, device.RecoverySet{Sub: "alice", Version: created.Version}, Message(t, "alice"))
		if err != nil {
			t.Fatalf("empty the set: %v", err)
		}
		got, err := s.GetRecoverySet(ctx, "alice")
		if err != nil || len(got.Hashes) != 0 || got.Remaining() != 0 || !got.CreatedAt.IsZero() || got.Version != emptied.Version {
			t.Fatalf("emptied set = %+v %v", got, err)
		}
		if _, err := s.PutRecoverySet(ctx, created); !errors.Is(err, device.ErrStale) {
			t.Fatalf("write from before the emptying: %v, want ErrStale", err)
		}
		set.Version = got.Version
		if _, err := s.PutRecoverySet(ctx, set); err != nil {
			t.Fatalf("refill: %v", err)
		}
		if got, err := s.GetRecoverySet(ctx, "alice"); err != nil || got.Remaining() != 1 {
			t.Fatalf("refilled set = %+v %v", got, err)
		}
	})

	t.Run("ListCredentialsInPages", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		var want []string
		for _, sub := range []string{"alice", "bob", "carol"} {
			want = append(want, MustCreate(t, s, Credential(sub)).PHID)
		}
		// Per-user documents are no credentials.
		if _, err := s.PutLockout(ctx, device.Lockout{Sub: "alice", Failures: 1}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(want)
		var got []string
		after := ""
		for range 5 {
			page, err := s.ListCredentials(ctx, after, 2)
			if err != nil {
				t.Fatalf("ListCredentials: %v", err)
			}
			for _, c := range page {
				got = append(got, c.PHID)
			}
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].PHID
		}
		if !slices.Equal(got, want) {
			t.Fatalf("walk = %v, want %v in ph_id order", got, want)
		}
	})

	t.Run("CreateGet", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		want := Credential("alice")
		created, err := s.Create(ctx, want)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if created.Version == 0 {
			t.Fatal("Create returned no Version")
		}
		got, err := s.Get(ctx, want.PHID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		want.Version = created.Version
		assertEqual(t, got, want)
	})

	t.Run("VerifiedRoundTrip", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		want := Verified(Credential("alice"))
		created := MustCreate(t, s, want)
		got, err := s.Get(ctx, want.PHID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		want.Version = created.Version
		assertEqual(t, got, want)
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		if _, err := s.Get(ctx, uuid.NewString()); !errors.Is(err, device.ErrNotFound) {
			t.Errorf("Get unknown: %v, want ErrNotFound", err)
		}
		if _, err := s.GetByStatusID(ctx, uuid.NewString()); !errors.Is(err, device.ErrNotFound) {
			t.Errorf("GetByStatusID unknown: %v, want ErrNotFound", err)
		}
	})

	t.Run("CreateDuplicateStatusID", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		first := MustCreate(t, s, Credential("alice"))
		second := Credential("alice")
		second.StatusID = first.StatusID
		if _, err := s.Create(ctx, second); !errors.Is(err, device.ErrConflict) {
			t.Fatalf("second Create for one status id: %v, want ErrConflict", err)
		}
		got, err := s.GetByStatusID(ctx, first.StatusID)
		if err != nil || got.PHID != first.PHID {
			t.Fatalf("GetByStatusID after refused duplicate = %v, %v; want the first", got, err)
		}
		if _, err := s.Get(ctx, second.PHID); !errors.Is(err, device.ErrNotFound) {
			t.Fatalf("refused duplicate was stored: %v", err)
		}
	})

	t.Run("CreateDuplicatePHID", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		first := MustCreate(t, s, Credential("alice"))
		second := Credential("alice")
		second.PHID = first.PHID
		if _, err := s.Create(ctx, second); !errors.Is(err, device.ErrConflict) {
			t.Fatalf("second Create for one ph_id: %v, want ErrConflict", err)
		}
		got, err := s.Get(ctx, first.PHID)
		if err != nil || got.StatusID != first.StatusID {
			t.Fatalf("Get after refused duplicate = %v, %v; want the first", got, err)
		}
	})

	t.Run("GetByStatusID", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		a := MustCreate(t, s, Credential("alice"))
		b := MustCreate(t, s, Credential("alice"))
		for _, want := range []device.Credential{a, b} {
			got, err := s.GetByStatusID(ctx, want.StatusID)
			if err != nil {
				t.Fatalf("GetByStatusID: %v", err)
			}
			assertEqual(t, got, want)
		}
	})

	// The registry names a pending credential device.PHIDFor(status_id); a backend may find it by
	// that name instead of an index, but the contract is the same as for any other ph_id.
	t.Run("DerivedPHID", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		want := Derived(Credential("alice"))
		other := MustCreate(t, s, Credential("alice"))
		created := MustCreate(t, s, want)
		got, err := s.GetByStatusID(ctx, want.StatusID)
		if err != nil {
			t.Fatalf("GetByStatusID: %v", err)
		}
		assertEqual(t, got, created)
		if got, err := s.GetByStatusID(ctx, other.StatusID); err != nil || got.PHID != other.PHID {
			t.Fatalf("GetByStatusID of a credential with another ph_id: %v, %v", got.PHID, err)
		}
		// A second credential for the enrollment is refused, whoever asks, and changes nothing.
		for _, sub := range []string{"alice", "bob"} {
			again := Derived(Credential(sub))
			again.StatusID = want.StatusID
			again.PHID = device.PHIDFor(want.StatusID)
			if _, err := s.Create(ctx, again); !errors.Is(err, device.ErrConflict) {
				t.Fatalf("second Create for the enrollment by %s: %v, want ErrConflict", sub, err)
			}
		}
		assertPHIDs(t, mustList(t, s, "alice"), other.PHID, created.PHID)
		assertPHIDs(t, mustList(t, s, "bob"))
		if got, err := s.GetByStatusID(ctx, want.StatusID); err != nil || got.Sub != "alice" || got.Version != created.Version {
			t.Fatalf("after refused creates: %+v, %v", got, err)
		}
		if err := s.Remove(ctx, created); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if _, err := s.GetByStatusID(ctx, want.StatusID); !errors.Is(err, device.ErrNotFound) {
			t.Errorf("GetByStatusID after Remove: %v, want ErrNotFound", err)
		}
		assertPHIDs(t, mustList(t, s, "alice"), other.PHID)
		if _, err := s.GetByStatusID(ctx, uuid.NewString()); !errors.Is(err, device.ErrNotFound) {
			t.Errorf("GetByStatusID of an unknown enrollment: %v, want ErrNotFound", err)
		}
	})

	t.Run("ListBySubIsolatesUsers", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		a1 := MustCreate(t, s, Credential("alice"))
		a2 := MustCreate(t, s, Verified(Credential("alice")))
		b1 := MustCreate(t, s, Verified(Credential("bob")))

		assertPHIDs(t, mustList(t, s, "alice"), a1.PHID, a2.PHID)
		assertPHIDs(t, mustList(t, s, "bob"), b1.PHID)
		assertPHIDs(t, mustList(t, s, "carol"))
		// Subs are free text from an identity provider; none may reach another user's list.
		for _, sub := range []string{"", "*", ">", "alice.*", "u.>", "alice "} {
			for _, c := range mustList(t, s, sub) {
				t.Errorf("ListBySub(%q) returned %s of %q", sub, c.PHID, c.Sub)
			}
		}
		got := mustList(t, s, "alice")
		i := slices.IndexFunc(got, func(c device.Credential) bool { return c.PHID == a2.PHID })
		assertEqual(t, got[i], a2)
		_ = ctx
	})

	t.Run("UpdateOK", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		c := MustCreate(t, s, Credential("alice"))
		c = Verified(c)
		updated, err := s.Update(ctx, c, Message(t, c.PHID))
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if updated.Version == c.Version {
			t.Fatal("Update did not change Version")
		}
		got, err := s.Get(ctx, c.PHID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		c.Version = got.Version
		assertEqual(t, got, c)
		if got.Version < updated.Version {
			t.Fatalf("Get Version %d older than Update's %d", got.Version, updated.Version)
		}
	})

	t.Run("UpdateErrStale", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		c := MustCreate(t, s, Credential("alice"))
		first := c
		first.FriendlyName = "first"
		if _, err := s.Update(ctx, first); err != nil {
			t.Fatalf("first Update: %v", err)
		}
		second := c // still at the old version
		second.FriendlyName = "second"
		if _, err := s.Update(ctx, second); !errors.Is(err, device.ErrStale) {
			t.Fatalf("Update at a stale version: %v, want ErrStale", err)
		}
		got, err := s.Get(ctx, c.PHID)
		if err != nil || got.FriendlyName != "first" {
			t.Fatalf("after stale Update: %v, %v; want the first write kept", got, err)
		}
	})

	t.Run("UpdateErrNotFound", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		c := Credential("alice")
		c.Version = 1
		if _, err := s.Update(ctx, c); !errors.Is(err, device.ErrNotFound) {
			t.Fatalf("Update of a missing credential: %v, want ErrNotFound", err)
		}
	})

	t.Run("Remove", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		keep := MustCreate(t, s, Verified(Credential("alice")))
		c := MustCreate(t, s, Verified(Credential("alice")))
		if err := s.Remove(ctx, c, Message(t, c.PHID)); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if _, err := s.Get(ctx, c.PHID); !errors.Is(err, device.ErrNotFound) {
			t.Errorf("Get after Remove: %v, want ErrNotFound", err)
		}
		if _, err := s.GetByStatusID(ctx, c.StatusID); !errors.Is(err, device.ErrNotFound) {
			t.Errorf("GetByStatusID after Remove: %v, want ErrNotFound", err)
		}
		assertPHIDs(t, mustList(t, s, "alice"), keep.PHID)
		if _, err := s.Update(ctx, c); !errors.Is(err, device.ErrNotFound) && !errors.Is(err, device.ErrStale) {
			t.Errorf("Update after Remove: %v, want ErrNotFound or ErrStale", err)
		}
		if err := s.Remove(ctx, c); !errors.Is(err, device.ErrNotFound) && !errors.Is(err, device.ErrStale) {
			t.Errorf("second Remove: %v, want ErrNotFound or ErrStale", err)
		}
	})

	t.Run("RemoveErrStale", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		c := MustCreate(t, s, Credential("alice"))
		if _, err := s.Update(ctx, Verified(c)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if err := s.Remove(ctx, c); !errors.Is(err, device.ErrStale) {
			t.Fatalf("Remove at a stale version: %v, want ErrStale", err)
		}
		if _, err := s.Get(ctx, c.PHID); err != nil {
			t.Fatalf("credential gone after a refused Remove: %v", err)
		}
	})

	t.Run("RemoveErrNotFound", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		c := Credential("alice")
		c.Version = 1
		if err := s.Remove(ctx, c); !errors.Is(err, device.ErrNotFound) {
			t.Fatalf("Remove of a missing credential: %v, want ErrNotFound", err)
		}
	})

	// Every write's events are stored with the write and relayed exactly once: credential
	// updates and removals, lockouts and recovery sets, written while no relay runs, are
	// published once it starts; a refused write's events never are; a relay started again
	// publishes only what was written since.
	t.Run("OutboxRelayedExactlyOnce", func(t *testing.T) {
		b, ctx := newBackend(t), t.Context()
		s := b.Store
		ev := func(to *[]string, phid string) outbox.Message {
			m := Message(t, phid)
			*to = append(*to, m.ID)
			return m
		}
		var removed string
		first := func(t *testing.T) (want, refused []string) {
			c := MustCreate(t, s, Credential("alice"))
			removed = c.PHID
			updated, err := s.Update(ctx, Verified(c), ev(&want, c.PHID))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Update(ctx, c, ev(&refused, c.PHID)); !errors.Is(err, device.ErrStale) {
				t.Fatalf("stale Update: %v", err)
			}
			if err := s.Remove(ctx, updated, ev(&want, c.PHID)); err != nil {
				t.Fatal(err)
			}
			l, err := s.PutLockout(ctx, device.Lockout{Sub: "alice", Failures: 1}, ev(&want, "alice"))
			if err != nil {
				t.Fatal(err)
			}
			l.Failures = 2
			if _, err := s.PutLockout(ctx, l, ev(&want, "alice")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutLockout(ctx, l, ev(&refused, "alice")); !errors.Is(err, device.ErrStale) {
				t.Fatalf("stale PutLockout: %v", err)
			}
			set := device.RecoverySet{Sub: "alice", Hashes: [][]byte{bytes.Repeat([]byte{1}, 32)}, Used: []bool{false}, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
			if _, err := s.PutRecoverySet(ctx, set, ev(&want, "alice")); err != nil {
				t.Fatal(err)
			}
			return want, refused
		}
		second := func(t *testing.T) (want, refused []string) {
			c2 := MustCreate(t, s, Credential("bob"))
			if _, err := s.Update(ctx, c2, ev(&want, c2.PHID)); err != nil {
				t.Fatal(err)
			}
			return want, nil
		}
		outboxtest.RelayedExactlyOnce(t, outboxtest.Relay{Run: b.Relay, Pending: b.Pending}, first, second)
		if _, err := s.Get(ctx, removed); !errors.Is(err, device.ErrNotFound) {
			t.Errorf("removed credential after relaying: %v", err)
		}
	})

	// Of writers racing from the same version, exactly one wins; the others get ErrStale.
	t.Run("ConcurrentCompareAndSetOneWinner", func(t *testing.T) {
		s, ctx := newStore(t), t.Context()
		c := MustCreate(t, s, Credential("alice"))
		winner := outboxtest.OneWinner(t, 6, device.ErrStale, func(i int) error {
			w := c
			w.FriendlyName = fmt.Sprintf("writer %d", i)
			_, err := s.Update(ctx, w)
			return err
		})
		got, err := s.Get(ctx, c.PHID)
		if want := fmt.Sprintf("writer %d", winner); err != nil || got.FriendlyName != want {
			t.Fatalf("stored %q %v, want the winner %q", got.FriendlyName, err, want)
		}
	})
}

// Credential returns a new pending credential of sub with fresh ids. Times are whole
// milliseconds in UTC, the precision every backend keeps.
func Credential(sub string) device.Credential {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return device.Credential{
		PHID:         uuid.NewString(),
		Sub:          sub,
		StatusID:     uuid.NewString(),
		Method:       method.TOTP,
		SealedSecret: []byte{0x01, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff},
		Params:       totp.Default,
		CreatedAt:    now,
		ExpiresAt:    now.Add(10 * time.Minute),
	}
}

// Derived returns c named as the registry names pending credentials: device.PHIDFor(c.StatusID).
func Derived(c device.Credential) device.Credential {
	c.PHID = device.PHIDFor(c.StatusID)
	return c
}

// Verified returns c as it is after activation, with every optional field set.
func Verified(c device.Credential) device.Credential {
	at := c.CreatedAt.Add(42 * time.Second)
	c.Verified = true
	c.DeviceID = "dev-" + c.PHID[:8]
	c.FriendlyName = "Pixel 8 ✓"
	c.Platform = "android"
	c.LastStep = at.Unix() / 30
	c.LastStepFor = "0d7c3f7e-5b1a-4c61-9f0e-2a8b6d4c1e93"
	c.VerifiedAt = at
	c.LastUsedAt = at.Add(time.Hour)
	return c
}

// MustCreate creates c in s and returns it with its Version.
func MustCreate(tb testing.TB, s device.Store, c device.Credential) device.Credential {
	tb.Helper()
	created, err := s.Create(context.Background(), c)
	if err != nil {
		tb.Fatalf("Create: %v", err)
	}
	return created
}

// Message returns an outbox message about phid, for writes that carry an event.
func Message(tb testing.TB, phid string) outbox.Message {
	tb.Helper()
	env, err := events.New(uuid.NewString(), events.SourceRegistry, events.DeviceRenamed, phid, time.Now(), events.Device{PHID: phid})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := outbox.FromEnvelope(env)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func mustList(tb testing.TB, s device.Store, sub string) []device.Credential {
	tb.Helper()
	got, err := s.ListBySub(context.Background(), sub)
	if err != nil {
		tb.Fatalf("ListBySub(%q): %v", sub, err)
	}
	return got
}

func assertPHIDs(tb testing.TB, got []device.Credential, want ...string) {
	tb.Helper()
	var ids []string
	for _, c := range got {
		ids = append(ids, c.PHID)
	}
	slices.Sort(ids)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		tb.Fatalf("ph_ids = %v, want %v", ids, want)
	}
}

// assertEqual compares field by field so that times compare as instants and a failure names
// the field.
func assertEqual(tb testing.TB, got, want device.Credential) {
	tb.Helper()
	type field struct {
		name      string
		got, want any
	}
	fields := []field{
		{"PHID", got.PHID, want.PHID},
		{"DeviceID", got.DeviceID, want.DeviceID},
		{"Sub", got.Sub, want.Sub},
		{"StatusID", got.StatusID, want.StatusID},
		{"Method", got.Method, want.Method},
		{"Params", got.Params, want.Params},
		{"Verified", got.Verified, want.Verified},
		{"FriendlyName", got.FriendlyName, want.FriendlyName},
		{"Platform", got.Platform, want.Platform},
		{"LastStep", got.LastStep, want.LastStep},
		{"LastStepFor", got.LastStepFor, want.LastStepFor},
		{"Version", got.Version, want.Version},
	}
	for _, f := range fields {
		if f.got != f.want {
			tb.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
	if !bytes.Equal(got.SealedSecret, want.SealedSecret) {
		tb.Errorf("SealedSecret = %x, want %x", got.SealedSecret, want.SealedSecret)
	}
	times := []struct {
		name      string
		got, want time.Time
	}{
		{"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"ExpiresAt", got.ExpiresAt, want.ExpiresAt},
		{"VerifiedAt", got.VerifiedAt, want.VerifiedAt},
		{"LastUsedAt", got.LastUsedAt, want.LastUsedAt},
	}
	for _, f := range times {
		if !f.got.Equal(f.want) {
			tb.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
}
