package kvdoc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type doc struct {
	Name string `json:"name"`
}

func setup(t *testing.T) (jetstream.JetStream, jetstream.KeyValue, *kvdoc.Store[doc]) {
	t.Helper()
	js := natstest.Start(t).JetStream(t)
	kv, err := natsx.EnsureKV(context.Background(), js, jetstream.KeyValueConfig{Bucket: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	return js, kv, kvdoc.New[doc](kv)
}

func msg(id string) outbox.Message {
	return outbox.Message{ID: id, Subject: events.EnrollmentInitiated.Subject(), Data: []byte(fmt.Sprintf(`{"id":%q}`, id))}
}

func startRelay(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue) *kvdoc.Relay {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler)}
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// storedIDs returns the Nats-Msg-Ids on the stream, in order.
func storedIDs(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	st, err := js.Stream(context.Background(), events.Stream)
	if err != nil {
		return nil
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			continue
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids
}

func waitIDs(t *testing.T, js jetstream.JetStream, want ...string) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		if got := storedIDs(t, js); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("stream holds %v, want %v", got, want)
		}
		return nil
	})
}

// waitRelayed waits until r says the current value of key is published.
func waitRelayed(t *testing.T, r *kvdoc.Relay, kv jetstream.KeyValue, key string) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		e, err := kv.Get(context.Background(), key)
		if err != nil {
			return err
		}
		if !r.Relayed(key, e.Revision()) {
			return fmt.Errorf("%s at revision %d not relayed yet", key, e.Revision())
		}
		return nil
	})
}

// outboxIDs are the ids of the events a stored value holds.
func outboxIDs(t *testing.T, kv jetstream.KeyValue, key string) []string {
	t.Helper()
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Outbox []outbox.Message `json:"outbox"`
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range rec.Outbox {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestCompareAndSet(t *testing.T) {
	ctx := context.Background()
	_, _, s := setup(t)
	rev, err := s.Create(ctx, "d.1", doc{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "d.1", doc{Name: "x"}); !errors.Is(err, kvdoc.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	rev2, err := s.Update(ctx, "d.1", rev, doc{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "d.1", rev, doc{Name: "stale"}); !errors.Is(err, kvdoc.ErrStale) {
		t.Fatalf("stale update: %v", err)
	}
	got, gotRev, err := s.Get(ctx, "d.1")
	if err != nil || got.Name != "b" || gotRev != rev2 {
		t.Fatalf("Get = %+v %d %v", got, gotRev, err)
	}
	if _, _, err := s.Get(ctx, "d.none"); !errors.Is(err, kvdoc.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
}

// TestOutboxSurvivesACrash: events written with a document before any relay ran (as after a
// crash between the write and the publish) are published once a relay starts, in order; the
// next write, told by the relay that they are out, drops them.
func TestOutboxSurvivesACrash(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Create(ctx, "d.1", doc{Name: "a"}, msg("e1"))
	if err != nil {
		t.Fatal(err)
	}
	// A second write before any relay appends to the pending events, losing none.
	if _, err := s.Update(ctx, "d.1", rev, doc{Name: "b"}, msg("e2")); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, js, kv)
	waitIDs(t, js, "e1", "e2")
	waitRelayed(t, r, kv, "d.1")
	// The relay wrote nothing back: the value still holds both events.
	if ids := outboxIDs(t, kv, "d.1"); fmt.Sprint(ids) != "[e1 e2]" {
		t.Fatalf("value holds %v after relaying", ids)
	}
	s.Relayed = r.Relayed
	_, rev, err = s.Get(ctx, "d.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "d.1", rev, doc{Name: "c"}, msg("e3")); err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, kv, "d.1"); fmt.Sprint(ids) != "[e3]" {
		t.Fatalf("next write holds %v, want only its own event", ids)
	}
	waitIDs(t, js, "e1", "e2", "e3")
}

// TestWritesCarryUnrelayedEvents: while the relay has not published a value (here: no stream
// to publish to), every write carries its events forward, so none is lost; once they are out,
// documents hold only the latest write's events however often they are written.
func TestWritesCarryUnrelayedEvents(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	r := startRelay(t, js, kv)
	s.Relayed = r.Relayed
	rev, err := s.Create(ctx, "d.1", doc{Name: "a"}, msg("e0"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	want = append(want, "e0")
	for i := 1; i < 5; i++ {
		id := fmt.Sprintf("e%d", i)
		want = append(want, id)
		if rev, err = s.Update(ctx, "d.1", rev, doc{Name: "a"}, msg(id)); err != nil {
			t.Fatal(err)
		}
	}
	if ids := outboxIDs(t, kv, "d.1"); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("unrelayed document holds %v, want %v", ids, want)
	}
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	waitIDs(t, js, want...)
	waitRelayed(t, r, kv, "d.1")
	for i := 5; i < 25; i++ {
		id := fmt.Sprintf("e%d", i)
		want = append(want, id)
		waitRelayed(t, r, kv, "d.1")
		if rev, err = s.Update(ctx, "d.1", rev, doc{Name: "a"}, msg(id)); err != nil {
			t.Fatal(err)
		}
		if ids := outboxIDs(t, kv, "d.1"); fmt.Sprint(ids) != "["+id+"]" {
			t.Fatalf("write %d holds %v, want only its own event", i, ids)
		}
	}
	waitIDs(t, js, want...)
}

// TestRelayRetriesUntilTheStreamAccepts: while the stream is missing, publishing fails; the
// relay keeps the events and publishes them once the stream exists.
func TestRelayRetriesUntilTheStreamAccepts(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	r := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler)}
	sawLater := make(chan struct{})
	kvdoc.ObserveEntries(r, func(e jetstream.KeyValueEntry) {
		if e.Key() == "d.later" {
			close(sawLater)
		}
	})
	runRelay(t, r)
	rev, err := s.Create(ctx, "d.1", doc{Name: "a"}, msg("e1"))
	if err != nil {
		t.Fatal(err)
	}
	// The relay is failing to publish: once it has seen d.1 (the watch delivers values in
	// order, so a later value shows it), it still must not say d.1 is out.
	if _, err := s.Create(ctx, "d.later", doc{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sawLater:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay never saw d.later")
	}
	if r.Relayed("d.1", rev) {
		t.Fatal("d.1 reported relayed without a stream to publish to")
	}
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	waitIDs(t, js, "e1")
	waitRelayed(t, r, kv, "d.1")
}

// TestTwoRelaysPublishOnce: replicas each run a relay; the stream's dedupe stores each event once.
func TestTwoRelaysPublishOnce(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	startRelay(t, js, kv)
	startRelay(t, js, kv)
	for i := range 5 {
		if _, err := s.Create(ctx, fmt.Sprintf("d.%d", i), doc{Name: "a"}, msg(fmt.Sprintf("e%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		ids := storedIDs(t, js)
		if len(ids) < 5 {
			return fmt.Errorf("stream holds %v", ids)
		}
		return nil
	})
	if ids := storedIDs(t, js); len(ids) != 5 {
		t.Fatalf("stream holds %v, want each event once", ids)
	}
}

// TestRemovePurgesAfterPublishing: a removed document is gone for readers at once and its key
// is purged after its event is published.
func TestRemovePurgesAfterPublishing(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Create(ctx, "d.1", doc{Name: "secret-bearing"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "d.1", rev, doc{}, msg("removed")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "d.1"); !errors.Is(err, kvdoc.ErrNotFound) {
		t.Fatalf("Get after Remove: %v", err)
	}
	startRelay(t, js, kv)
	waitIDs(t, js, "removed")
	natstest.Eventually(t, 10*time.Second, func() error {
		if _, err := kv.Get(ctx, "d.1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("key still there: %v", err)
		}
		return nil
	})
}

// TestRelayParksARefusedMessage: a message no stream takes (here: a subject outside
// MFA_EVENTS) must not hold up the events of other documents behind it; it stays pending in
// its document, which the relay keeps trying.
func TestRelayParksARefusedMessage(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	r := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler), ParkAfter: 200 * time.Millisecond, ParkRetry: 100 * time.Millisecond}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	refused := outbox.Message{ID: "refused", Subject: "not.an.event.subject", Data: []byte(`{}`)}
	if _, err := s.Create(ctx, "d.stuck", doc{Name: "a"}, refused); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "d.fine", doc{Name: "b"}, msg("e-after")); err != nil {
		t.Fatal(err)
	}
	waitIDs(t, js, "e-after")
	waitRelayed(t, r, kv, "d.fine")
	// The parked document's value is not relayed, so its next write keeps the refused message
	// (ahead of its own), and so does every later one until the stream takes it.
	s.Relayed = r.Relayed
	_, rev, err := s.Get(ctx, "d.stuck")
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if !kvdoc.Parked(r, "d.stuck") {
			return errors.New("d.stuck not parked yet")
		}
		return nil
	})
	if r.Relayed("d.stuck", rev) {
		t.Fatal("a parked document reported relayed")
	}
	if _, err := s.Update(ctx, "d.stuck", rev, doc{Name: "a2"}, msg("e-stuck-2")); err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, kv, "d.stuck"); fmt.Sprint(ids) != "[refused e-stuck-2]" {
		t.Fatalf("parked document's next write holds %v", ids)
	}
}

// TestRelayWritesNothingBack: publishing a document's events leaves its value as written (no
// second write per event-carrying write), a document written without events is left alone,
// and a document survives byte for byte, even one whose text names the record's own fields.
func TestRelayWritesNothingBack(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, js, kv)
	tricky := "\"outbox\":[], \"purge\":true, é \u2028 <&>"
	plainRev, err := s.Create(ctx, "d.plain", doc{Name: tricky})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := s.Create(ctx, "d.1", doc{Name: tricky}, msg("e1"))
	if err != nil {
		t.Fatal(err)
	}
	waitIDs(t, js, "e1")
	waitRelayed(t, r, kv, "d.1")
	for key, want := range map[string]uint64{"d.1": rev, "d.plain": plainRev} {
		e, err := kv.Get(ctx, key)
		if err != nil || e.Revision() != want {
			t.Fatalf("%s: revision %v (%v), want %d: the relay wrote it", key, e, err, want)
		}
		got, _, err := s.Get(ctx, key)
		if err != nil || got.Name != tricky {
			t.Fatalf("Get %s = %+v, %v", key, got, err)
		}
	}
}

// TestWriteAfterReadReadsNothingMore: a write based on the revision this store just read or
// wrote does not read the value again (one read and one write per read-then-update), and what
// it remembers never loses an event: a write of another store (another replica) in between
// makes the next write stale, and the write after a new read carries the other store's events.
func TestWriteAfterReadReadsNothingMore(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	nc := js.Conn()
	var mu sync.Mutex
	reads := 0
	sub, err := nc.Subscribe("$JS.API.DIRECT.GET.>", func(*nats.Msg) { mu.Lock(); reads++; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	counted := func() int {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		n := reads
		reads = 0
		return n
	}
	rev, err := s.Create(ctx, "d.1", doc{Name: "a"}, msg("e0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err = s.Update(ctx, "d.1", rev, doc{Name: "b"}, msg("e1")); err != nil {
		t.Fatal(err)
	}
	if n := counted(); n != 0 {
		t.Fatalf("create then update read %d times, want 0", n)
	}
	if _, rev, err = s.Get(ctx, "d.1"); err != nil {
		t.Fatal(err)
	}
	if rev, err = s.Update(ctx, "d.1", rev, doc{Name: "c"}, msg("e2")); err != nil {
		t.Fatal(err)
	}
	if n := counted(); n != 1 {
		t.Fatalf("get then update read %d times, want 1", n)
	}

	other := kvdoc.New[doc](kv) // another replica
	_, otherRev, err := other.Get(ctx, "d.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Update(ctx, "d.1", otherRev, doc{Name: "d"}, msg("e3")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "d.1", rev, doc{Name: "x"}, msg("lost")); !errors.Is(err, kvdoc.ErrStale) {
		t.Fatalf("update on a remembered but replaced revision: %v, want ErrStale", err)
	}
	if _, rev, err = s.Get(ctx, "d.1"); err != nil {
		t.Fatal(err)
	}
	if _, err = s.Update(ctx, "d.1", rev, doc{Name: "e"}, msg("e4")); err != nil {
		t.Fatal(err)
	}
	if ids := outboxIDs(t, kv, "d.1"); fmt.Sprint(ids) != "[e0 e1 e2 e3 e4]" {
		t.Fatalf("unrelayed document holds %v, want every event", ids)
	}
}
