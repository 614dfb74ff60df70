package mongodoc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
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

// eventStream starts a NATS server with MFA_EVENTS and counts what is published to it.
func eventStream(t *testing.T) (jetstream.JetStream, *natstest.Publishes) {
	t.Helper()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	if _, err := natsx.EnsureEventStream(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	return js, natstest.CountPublishes(t, srv.Connect(t), "mfa.events.>")
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

// TestOpenAgain: a replica that starts again opens the collection and its existing indexes
// again (FerretDB v1 used to drop the connection when one command re-created several).
func TestOpenAgain(t *testing.T) {
	db := mongotest.Database(t)
	unique := mongo.IndexModel{Keys: bson.D{{Key: mongodoc.DocField("name"), Value: 1}}, Options: options.Index().SetName("name").SetUnique(true)}
	plain := mongo.IndexModel{Keys: bson.D{{Key: mongodoc.DocField("gc_at"), Value: 1}}, Options: options.Index().SetName("gc_at")}
	for i := range 3 {
		c, err := mongodoc.Open(t.Context(), db, "docs", unique, plain)
		if err != nil {
			t.Fatalf("open %d: %v", i+1, err)
		}
		if _, err := mongodoc.New[doc](c).Create(t.Context(), fmt.Sprint(i), doc{Name: fmt.Sprint(i)}); err != nil {
			t.Fatalf("create after open %d: %v", i+1, err)
		}
	}
}

// TestTransientErrors: a driver error that says the server was out of reach for a moment (here a
// deadline) carries fault.ErrTransient, so transports answer unavailable; a refusal does not.
func TestTransientErrors(t *testing.T) {
	s := mongodoc.New[doc](open(t))
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, _, err := s.Get(ctx, "a"); !errors.Is(err, fault.ErrTransient) {
		t.Fatalf("Get past its deadline: %v, want fault.ErrTransient in the chain", err)
	}
	if _, err := s.Create(ctx, "a", doc{}); !errors.Is(err, fault.ErrTransient) {
		t.Fatalf("Create past its deadline: %v, want fault.ErrTransient in the chain", err)
	}
	if _, err := s.Update(t.Context(), "missing", 1, doc{}); errors.Is(err, fault.ErrTransient) || !errors.Is(err, mongodoc.ErrNotFound) {
		t.Fatalf("Update of a missing document: %v, want ErrNotFound only", err)
	}
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
	js, published := eventStream(t)
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
	r := &mongodoc.Relay{C: c, JS: js, Log: slog.New(slog.DiscardHandler), Poll: 20 * time.Millisecond, ParkAfter: 50 * time.Millisecond, ParkRetry: time.Hour,
		DepthEvery: 20 * time.Millisecond}
	stop := runRelay(t, r)
	natstest.Eventually(t, 20*time.Second, func() error {
		n, err := r.Depth(ctx)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("outbox depth %d, want 1 (the refused one)", n)
		}
		// The holder of the lease reports the depth and the relay lag.
		if g := gathered(t, "mfa_outbox_pending_documents"); g != 1 {
			return fmt.Errorf("mfa_outbox_pending_documents = %v, want 1", g)
		}
		if n := gathered(t, "mfa_outbox_relay_lag_seconds"); n < float64(len(want)) {
			return fmt.Errorf("mfa_outbox_relay_lag_seconds has %v samples, want at least %d", n, len(want))
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
	js, published := eventStream(t)
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
	js, _ := eventStream(t)
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

// TestRelayLease: two relays on one collection, each a replica of its own (its own client):
// one relays everything and the other nothing, every event is published once; when the holder
// dies (its client gone, so it cannot let the lease go) the other takes over within a few
// seconds and relays what is pending; a holder that stops cleanly hands over at once.
func TestRelayLease(t *testing.T) {
	ctx := t.Context()
	js, published := eventStream(t)
	uri := mongotest.DatabaseURI(t)
	replica := func(name string) (*mongo.Client, *mongodoc.Store[doc], *mongodoc.Relay) {
		client, db, err := mongodoc.Connect(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
		c, err := mongodoc.Open(ctx, db, "docs")
		if err != nil {
			t.Fatal(err)
		}
		return client, mongodoc.New[doc](c), &mongodoc.Relay{C: c, JS: js, Log: slog.New(slog.DiscardHandler),
			Poll: 20 * time.Millisecond, LeaseTTL: time.Second, Owner: name}
	}
	write := func(s *mongodoc.Store[doc], prefix string, n int) []string {
		var ids []string
		for i := range n {
			id := fmt.Sprintf("%s%d", prefix, i)
			if _, err := s.Create(ctx, id, doc{Name: id}, msg(id)); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	once := func(ids []string) {
		t.Helper()
		published.Wait(t, 20*time.Second, ids...)
		published.Sync(t, js.Conn(), "mfa.events.marker")
		for _, id := range ids {
			if n := published.Count(id); n != 1 {
				t.Errorf("%s published %d times, want 1", id, n)
			}
		}
	}

	clientA, storeA, relayA := replica("a")
	_, storeB, relayB := replica("b")
	stopA := runRelay(t, relayA)
	// a holds the lease before b starts (its first refresh creates it).
	first := write(storeA, "first-", 1)
	published.Wait(t, 10*time.Second, first...)
	stopB := runRelay(t, relayB)
	ids := append(first, append(write(storeA, "a-", 20), write(storeB, "b-", 20)...)...)
	once(ids)
	// The relay counts an event once its outbox entry is cleared, just after the publish the
	// stream already shows: wait for the count.
	natstest.Eventually(t, 10*time.Second, func() error {
		if relayA.Relayed() != int64(len(ids)) || relayB.Relayed() != 0 {
			return fmt.Errorf("relayed: a %d, b %d; want a %d, b 0", relayA.Relayed(), relayB.Relayed(), len(ids))
		}
		return nil
	})

	// a dies once its clears are done (a death between a publish and its clear makes the next
	// holder publish that event again, which the stream's dedupe stores once): its client goes
	// first, so its stop cannot hand the lease over.
	natstest.Eventually(t, 10*time.Second, func() error {
		if n, err := relayA.Depth(ctx); err != nil || n != 0 {
			return fmt.Errorf("outbox depth %d, %v", n, err)
		}
		return nil
	})
	if err := clientA.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	stopA()
	died := time.Now()
	pending := write(storeB, "after-a-", 10)
	once(pending)
	if took := time.Since(died); took > 5*time.Second {
		t.Errorf("b relayed %v after a died, want within a few seconds (lease TTL 1 s)", took)
	}
	if relayB.Relayed() != int64(len(pending)) {
		t.Fatalf("b relayed %d, want %d", relayB.Relayed(), len(pending))
	}

	// b stops cleanly and lets the lease go: c takes it at its first refresh, not a TTL later.
	_, storeC, relayC := replica("c")
	relayC.LeaseTTL = time.Hour // only a handover can give it the lease within the test
	runRelay(t, relayC)
	stopB()
	handed := write(storeC, "after-b-", 5)
	once(handed)
	if relayC.Relayed() != int64(len(handed)) {
		t.Fatalf("c relayed %d, want %d", relayC.Relayed(), len(handed))
	}
}

// gathered reads a metric of the collection "docs" from the default registry: a gauge's value or
// a histogram's sample count.
func gathered(t *testing.T, name string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "store" && l.GetValue() == "docs" {
					if h := m.GetHistogram(); h != nil {
						return float64(h.GetSampleCount())
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// TestRelayChangeStream: where the server has change streams (a MongoDB replica set in
// MFA_MONGODB_URI), a write of another replica, which does not wake this relay, is relayed at
// once although the relay polls once an hour; where it has none (FerretDB) the relay says it
// polls, and relays such a write at its next poll.
func TestRelayChangeStream(t *testing.T) {
	ctx := t.Context()
	js, published := eventStream(t)
	db := mongotest.Database(t)
	c, err := mongodoc.Open(ctx, db, "docs")
	if err != nil {
		t.Fatal(err)
	}
	ferret, err := mongodoc.IsFerretDB(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	poll := time.Hour
	if ferret {
		poll = 50 * time.Millisecond
	}
	r := &mongodoc.Relay{C: c, JS: js, Log: slog.New(slog.DiscardHandler), Poll: poll}
	runRelay(t, r)
	var open bool
	natstest.Eventually(t, 10*time.Second, func() error {
		var known bool
		if open, known = r.ChangeStream(); !known {
			return errors.New("the relay has not tried a change stream yet")
		}
		return nil
	})
	if ferret && open {
		t.Fatal("a change stream is open on FerretDB, which has none")
	}
	t.Logf("server: FerretDB %v, change stream open %v", ferret, open)
	// Another replica's handle on the same collection: its write wakes only its own relay.
	other, err := mongodoc.Open(ctx, db, "docs")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mongodoc.New[doc](other).Create(ctx, "elsewhere", doc{}, msg("elsewhere")); err != nil {
		t.Fatal(err)
	}
	published.Wait(t, 10*time.Second, "elsewhere")
}

// TestUnansweredWriteKeepsItsClaim: on FerretDB, where a filtered update is matched and written
// in two steps, a write whose answer never came (here its context ends as the update command
// starts) may still land later, so its version claim stays: a writer that read the same version
// gets ErrStale instead of writing beside it, until the claim expires and is taken over. A write
// the server answered drops its claim at once.
func TestUnansweredWriteKeepsItsClaim(t *testing.T) {
	uri := mongotest.DatabaseURI(t)
	var (
		mu     sync.Mutex
		cancel context.CancelFunc // armed: cancels the next update as it starts
	)
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		mu.Lock()
		defer mu.Unlock()
		if e.CommandName == "update" && cancel != nil {
			cancel()
			cancel = nil
		}
	}}
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(monitor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	cs, err := connstring.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	db := client.Database(cs.Database)
	if ferret, err := mongodoc.IsFerretDB(t.Context(), db); err != nil {
		t.Fatal(err)
	} else if !ferret {
		t.Skip("MFA_MONGODB_URI is a real MongoDB: its filtered updates are atomic, so writes take no claims")
	}
	c, err := mongodoc.Open(t.Context(), db, "docs")
	if err != nil {
		t.Fatal(err)
	}
	mongodoc.SetClaimTimeout(c, 2*time.Second)
	s := mongodoc.New[doc](c)
	v, err := s.Create(t.Context(), "a", doc{Name: "one"})
	if err != nil {
		t.Fatal(err)
	}

	// The first writer's update is cut off as it starts: no answer.
	ctx, cut := context.WithCancel(t.Context())
	mu.Lock()
	cancel = cut
	mu.Unlock()
	if _, err := s.Update(ctx, "a", v, doc{Name: "late"}); err == nil {
		t.Fatal("the cut-off update answered")
	}
	// A second writer from the same version waits for the claim to expire.
	if _, err := s.Update(t.Context(), "a", v, doc{Name: "two"}); !errors.Is(err, mongodoc.ErrStale) {
		t.Fatalf("a second writer beside an unanswered write: %v, want ErrStale", err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		d, _, err := s.Get(t.Context(), "a")
		if err != nil || d.Name != "one" {
			return fmt.Errorf("the document is %+v (%v)", d, err) // the cut-off write never landed
		}
		_, err = s.Update(t.Context(), "a", v, doc{Name: "two"})
		return err
	})
	// A write the server answered drops its claim: the next version is free at once.
	d, v2, err := s.Get(t.Context(), "a")
	if err != nil || d.Name != "two" {
		t.Fatalf("after the claim expired: %+v %v", d, err)
	}
	if _, err := s.Update(t.Context(), "a", v2, doc{Name: "three"}); err != nil {
		t.Fatalf("after an answered write: %v", err)
	}
}
