package mongodoc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

type doc struct {
	Name string    `bson:"name"`
	GCAt time.Time `bson:"gc_at"`
}

func msg(id string) outbox.Message {
	return outbox.Message{ID: id, Subject: "mfa.events.test", Data: []byte(`{}`)}
}

func open(t *testing.T) *mongodoc.Collection {
	t.Helper()
	c, err := mongodoc.Open(t.Context(), mongotest.Database(t), "docs")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestOpenAgain: a collection with several indexes opens again on the same database, as every
// restart and every further replica does.
func TestOpenAgain(t *testing.T) {
	db := mongotest.Database(t)
	indexes := []mongo.IndexModel{
		{Keys: bson.D{{Key: mongodoc.DocField("a"), Value: 1}}, Options: options.Index().SetName("a").SetUnique(true)},
		{Keys: bson.D{{Key: mongodoc.DocField("b"), Value: 1}}, Options: options.Index().SetName("b")},
	}
	for i := range 2 {
		if _, err := mongodoc.Open(t.Context(), db, "docs", indexes...); err != nil {
			t.Fatalf("open %d: %v", i+1, err)
		}
	}
	specs, err := db.Collection("docs").Indexes().ListSpecifications(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	if fmt.Sprint(names) != "[_id_ a b pending]" {
		t.Fatalf("indexes = %v, want _id_, a, b and pending", names)
	}
}

func runRelay(t *testing.T, r *mongodoc.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func TestStoreCompareAndSet(t *testing.T) {
	ctx := t.Context()
	s := mongodoc.New[doc](open(t))
	v, err := s.Create(ctx, "a", doc{Name: "one"})
	if err != nil || v == 0 {
		t.Fatalf("Create: %d %v", v, err)
	}
	if _, err := s.Create(ctx, "a", doc{}); !errors.Is(err, mongodoc.ErrExists) {
		t.Fatalf("second Create: %v", err)
	}
	v2, err := s.Update(ctx, "a", v, doc{Name: "two"})
	if err != nil || v2 == v {
		t.Fatalf("Update: %d %v", v2, err)
	}
	if _, err := s.Update(ctx, "a", v, doc{Name: "stale"}); !errors.Is(err, mongodoc.ErrStale) {
		t.Fatalf("stale Update: %v", err)
	}
	if _, err := s.Update(ctx, "nope", 1, doc{}); !errors.Is(err, mongodoc.ErrNotFound) {
		t.Fatalf("Update of a missing document: %v", err)
	}
	if err := s.Remove(ctx, "a", v2, doc{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "a"); !errors.Is(err, mongodoc.ErrNotFound) {
		t.Fatalf("Get after Remove: %v", err)
	}
}

// TestRelay: every event is published once, in order per document, outboxes are cleared and
// removed documents purged; a document whose event the stream refuses is parked without
// holding up the others.
func TestRelay(t *testing.T) {
	ctx := t.Context()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	published := natstest.CountPublishes(t, srv.Connect(t), "mfa.events.>")
	c := open(t)
	s := mongodoc.New[doc](c)
	var want []string
	for i := range 10 {
		id := fmt.Sprintf("d%d", i)
		v, err := s.Create(ctx, id, doc{Name: id}, msg(id+".created"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, id, v, doc{Name: id}, msg(id+".updated")); err != nil {
			t.Fatal(err)
		}
		want = append(want, id+".created", id+".updated")
	}
	rv, err := s.Create(ctx, "removed", doc{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "removed", rv, doc{}, msg("removed.gone")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "removed.gone")
	// The stream has no subject for this one: JetStream refuses it.
	if _, err := s.Create(ctx, "refused", doc{}, outbox.Message{ID: "refused", Subject: "nowhere.test", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	r := &mongodoc.Relay{C: c, JS: js, Log: slog.New(slog.DiscardHandler), Poll: 20 * time.Millisecond, ParkAfter: 50 * time.Millisecond, ParkRetry: time.Hour}
	stop := runRelay(t, r)
	natstest.Eventually(t, 20*time.Second, func() error {
		n, err := r.Depth(ctx)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("outbox depth %d, want 1 (the refused one)", n)
		}
		return nil
	})
	stop()
	published.Sync(t, js.Conn(), "mfa.events.marker")
	for _, id := range want {
		if n := published.Count(id); n != 1 {
			t.Errorf("%s published %d times, want 1", id, n)
		}
	}
	n, err := c.Coll.CountDocuments(ctx, map[string]any{"_id": "removed"})
	if err != nil || n != 0 {
		t.Fatalf("removed document still stored: %d %v", n, err)
	}
}

func TestExpirySweep(t *testing.T) {
	ctx := t.Context()
	c := open(t)
	e, err := mongodoc.EnsureExpiry(ctx, c, mongodoc.DocField("gc_at"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := mongodoc.New[doc](c)
	now := time.Now()
	if _, err := s.Create(ctx, "old", doc{GCAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "old-pending", doc{GCAt: now.Add(-time.Hour)}, msg("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "new", doc{GCAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if e.TTL() {
		t.Log("server has TTL indexes; checking the periodic delete anyway")
	}
	n, err := e.Sweep(ctx, now)
	if err != nil || n != 1 {
		t.Fatalf("Sweep deleted %d, %v; want 1", n, err)
	}
	for id, want := range map[string]error{"old": mongodoc.ErrNotFound, "old-pending": nil, "new": nil} {
		if _, _, err := s.Get(ctx, id); !errors.Is(err, want) {
			t.Errorf("Get(%s) = %v, want %v", id, err, want)
		}
	}
}

// TestRelayWokenByLocalWrite: with a poll interval far beyond the test, a write through a Store
// on the relay's collection is still relayed at once.
func TestRelayWokenByLocalWrite(t *testing.T) {
	ctx := t.Context()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	published := natstest.CountPublishes(t, srv.Connect(t), "mfa.events.>")
	c := open(t)
	r := &mongodoc.Relay{C: c, JS: js, Log: slog.New(slog.DiscardHandler), Poll: time.Hour}
	runRelay(t, r)
	if _, err := mongodoc.New[doc](c).Create(ctx, "a", doc{}, msg("woken")); err != nil {
		t.Fatal(err)
	}
	published.Wait(t, 10*time.Second, "woken")
}

// TestWritesWhileRelaying: a document written again and again while the relay clears its
// outbox loses neither a write nor an event, and every event is published in write order.
func TestWritesWhileRelaying(t *testing.T) {
	ctx := t.Context()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	c := open(t)
	s := mongodoc.New[doc](c)
	r := &mongodoc.Relay{C: c, JS: js, Log: slog.New(slog.DiscardHandler), Poll: 5 * time.Millisecond}
	runRelay(t, r)
	const writes = 15
	if _, err := s.Create(ctx, "a", doc{Name: "0"}, msg("w0")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= writes; i++ {
		for {
			_, v, err := s.Get(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Update(ctx, "a", v, doc{Name: fmt.Sprint(i)}, msg(fmt.Sprintf("w%d", i)))
			if errors.Is(err, mongodoc.ErrStale) {
				continue // the relay's clear was in between: read again
			}
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	natstest.Eventually(t, 20*time.Second, func() error {
		n, err := r.Depth(ctx)
		if err != nil || n != 0 {
			return fmt.Errorf("outbox depth %d, %v", n, err)
		}
		return nil
	})
	got, _, err := s.Get(ctx, "a")
	if err != nil || got.Name != fmt.Sprint(writes) {
		t.Fatalf("document = %+v, %v; want the last write", got, err)
	}
	// The stream holds every event once (dedupe), in write order.
	cons, err := js.OrderedConsumer(ctx, "MFA_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"mfa.events.test"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= writes; i++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != fmt.Sprintf("w%d", i) {
			t.Fatalf("event %d is %s, want w%d", i, id, i)
		}
	}
}
