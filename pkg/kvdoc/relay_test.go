package kvdoc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// runRelay starts r and returns a function that stops it and waits for it to return.
func runRelay(t *testing.T, r *kvdoc.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// publishCounter counts every publish on mfa.events.> by Nats-Msg-Id, duplicates included
// (the stream's dedupe hides those, a core subscription does not).
type publishCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func countPublishes(t *testing.T, nc *nats.Conn) *publishCounter {
	t.Helper()
	c := &publishCounter{counts: map[string]int{}}
	sub, err := nc.Subscribe("mfa.events.>", func(m *nats.Msg) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.counts[m.Header.Get(jetstream.MsgIDHeader)]++
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *publishCounter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[id]
}

// TestRestartedRelayResumes: a relay that stops and starts again publishes what was written
// while it was down, does not publish already-relayed events again, and does not walk the
// documents that were relayed before it stopped.
func TestRestartedRelayResumes(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	kv, err := natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "docs", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	s := kvdoc.New[doc](kv)
	published := countPublishes(t, srv.Connect(t))

	const n = 100
	var want []string
	for i := range n {
		id := fmt.Sprintf("e%d", i)
		want = append(want, id)
		if _, err := s.Create(ctx, fmt.Sprintf("d.%d", i), doc{Name: "a"}, msg(id)); err != nil {
			t.Fatal(err)
		}
	}
	first := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler)}
	s.Relayed = first.Relayed
	stop := runRelay(t, first)
	waitIDSet(t, js, want...)
	for i := range n {
		waitRelayed(t, first, kv, fmt.Sprintf("d.%d", i))
	}
	stop()

	// While no relay runs: one new document, and a new event on an old one.
	if _, err := s.Create(ctx, "d.new", doc{Name: "a"}, msg("late")); err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.Get(ctx, "d.7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "d.7", rev, doc{Name: "b"}, msg("e7-again")); err != nil {
		t.Fatal(err)
	}

	var seen atomic.Int64
	second := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler)}
	kvdoc.ObserveEntries(second, func(jetstream.KeyValueEntry) { seen.Add(1) })
	stop = runRelay(t, second)
	waitIDSet(t, js, append(want, "late", "e7-again")...)
	waitRelayed(t, second, kv, "d.new")
	waitRelayed(t, second, kv, "d.7")
	stop()

	// Every publish of the relays went out on js's connection, in order; once a marker sent
	// after them arrives, the counter has seen them all.
	if err := js.Conn().Publish("mfa.events.marker", nil); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if published.get("") == 0 {
			return errors.New("marker not yet delivered")
		}
		return nil
	})
	for _, id := range want {
		if c := published.get(id); c != 1 {
			t.Errorf("%s published %d times, want once", id, c)
		}
	}
	// The second relay sees the two writes made while it was down, not the hundred documents
	// relayed before.
	if got := seen.Load(); got > 10 {
		t.Errorf("restarted relay walked %d entries; want only those written since the first stopped", got)
	}
}

// TestRelayKeepsOrderWithinADocument: a document's events reach the stream in the order they
// were written, across batches and concurrent writes, and an event that cannot be published
// holds back the later events of its document (only).
func TestRelayKeepsOrderWithinADocument(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	r := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler), ParkAfter: 200 * time.Millisecond, ParkRetry: 100 * time.Millisecond}
	runRelay(t, r)
	s.Relayed = r.Relayed

	refused := outbox.Message{ID: "f2", Subject: "not.an.event.subject", Data: []byte(`{}`)}
	if _, err := s.Create(ctx, "d.f", doc{Name: "a"}, msg("f1"), refused, msg("f3")); err != nil {
		t.Fatal(err)
	}
	var ordered []string
	var first []outbox.Message
	for i := range 10 {
		id := fmt.Sprintf("o%d", i)
		ordered = append(ordered, id)
		first = append(first, msg(id))
	}
	if _, err := s.Create(ctx, "d.o", doc{Name: "a"}, first...); err != nil {
		t.Fatal(err)
	}
	// Further writes race with the relay; each adds one event, carrying those not yet out.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 30 {
			if _, err := s.Create(ctx, fmt.Sprintf("d.other%d", i), doc{Name: "a"}, msg(fmt.Sprintf("x%d", i))); err != nil {
				t.Error(err)
			}
		}
	})
	for i := range 20 {
		id := fmt.Sprintf("u%d", i)
		ordered = append(ordered, id)
		for {
			_, rev, err := s.Get(ctx, "d.o")
			if err != nil {
				t.Fatal(err)
			}
			if _, err = s.Update(ctx, "d.o", rev, doc{Name: "a"}, msg(id)); err == nil {
				break
			} else if !errors.Is(err, kvdoc.ErrStale) {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	if _, err := s.Create(ctx, "d.last", doc{Name: "a"}, msg("last")); err != nil {
		t.Fatal(err)
	}
	var ids []string
	natstest.Eventually(t, 10*time.Second, func() error {
		ids = storedIDs(t, js)
		for _, id := range append(ordered, "f1", "last") {
			if !slices.Contains(ids, id) {
				return fmt.Errorf("%s not on the stream yet", id)
			}
		}
		return nil
	})
	var got []string
	for _, id := range ids {
		if slices.Contains(ordered, id) {
			got = append(got, id)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(ordered) {
		t.Errorf("document's events stored as %v, want %v", got, ordered)
	}
	if slices.Contains(ids, "f3") {
		t.Errorf("f3 was published before f2, which the stream refuses: %v", ids)
	}
}

// waitIDSet waits until the stream holds exactly ids, in any order (documents are relayed
// concurrently; only the events of one document are ordered).
func waitIDSet(t *testing.T, js jetstream.JetStream, ids ...string) {
	t.Helper()
	want := slices.Sorted(slices.Values(ids))
	natstest.Eventually(t, 10*time.Second, func() error {
		if got := slices.Sorted(slices.Values(storedIDs(t, js))); !slices.Equal(got, want) {
			return fmt.Errorf("stream holds %v, want %v", got, want)
		}
		return nil
	})
}

// TestRestartedRelayRetriesParkedDocuments: a document parked when its relay stopped is
// below the checkpoint, and is still published by the next relay once the stream takes it.
func TestRestartedRelayRetriesParkedDocuments(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	newRelay := func() *kvdoc.Relay {
		return &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler),
			ParkAfter: 100 * time.Millisecond, ParkRetry: 100 * time.Millisecond, CheckpointEvery: 20 * time.Millisecond}
	}
	firstRelay := newRelay()
	stop := runRelay(t, firstRelay)
	stuck := outbox.Message{ID: "p1", Subject: "parked.subject", Data: []byte(`{}`)}
	if _, err := s.Create(ctx, "d.stuck", doc{Name: "a"}, stuck); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "d.fine", doc{Name: "b"}, msg("e-after")); err != nil {
		t.Fatal(err)
	}
	waitIDs(t, js, "e-after")
	waitRelayed(t, firstRelay, kv, "d.fine")
	natstest.Eventually(t, 10*time.Second, func() error {
		e, err := kv.Get(ctx, kvdoc.CheckpointKey("d.>"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(e.Value()), `"d.stuck"`) || strings.Contains(string(e.Value()), `"d.fine"`) {
			return fmt.Errorf("checkpoint %s", e.Value())
		}
		return nil
	})
	stop()

	parkedStream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PARKED", Subjects: []string{"parked.subject"}, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	secondRelay := newRelay()
	runRelay(t, secondRelay)
	natstest.Eventually(t, 10*time.Second, func() error {
		info, err := parkedStream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 1 {
			return fmt.Errorf("parked stream holds %d messages", info.State.Msgs)
		}
		return nil
	})
	waitRelayed(t, secondRelay, kv, "d.stuck")
}
