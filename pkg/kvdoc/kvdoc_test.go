package kvdoc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/outbox"
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

func startRelay(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := &kvdoc.Relay{KV: kv, JS: js, Filter: "d.>", Log: slog.New(slog.DiscardHandler)}
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
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

// unmarked is a value without the relay's "cleared" mark: what the document and its pending
// events are.
func unmarked(v []byte) string {
	if _, ok := kvdoc.ClearedOf(v); ok {
		if i := bytes.IndexByte(v, ','); i > 0 {
			return "{" + string(v[i+1:])
		}
	}
	return string(v)
}

func waitOutboxEmpty(t *testing.T, kv jetstream.KeyValue, key string) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		e, err := kv.Get(context.Background(), key)
		if err != nil {
			return err
		}
		if v := unmarked(e.Value()); v != `{"doc":{"name":"b"}}` && v != `{"doc":{"name":"a"}}` {
			return fmt.Errorf("value still %s", e.Value())
		}
		return nil
	})
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
// crash between the write and the publish) are published once a relay starts, in order, and
// then cleared.
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
	startRelay(t, js, kv)
	waitIDs(t, js, "e1", "e2")
	waitOutboxEmpty(t, kv, "d.1")
}

// TestRelayRetriesUntilTheStreamAccepts: while the stream is missing, publishing fails; the
// relay keeps the events and publishes them once the stream exists.
func TestRelayRetriesUntilTheStreamAccepts(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	startRelay(t, js, kv)
	if _, err := s.Create(ctx, "d.1", doc{Name: "a"}, msg("e1")); err != nil {
		t.Fatal(err)
	}
	// The relay is now failing to publish; the event must still be pending in the store.
	natstest.Eventually(t, 5*time.Second, func() error {
		e, err := kv.Get(ctx, "d.1")
		if err != nil {
			return err
		}
		if unmarked(e.Value()) == `{"doc":{"name":"a"}}` {
			return errors.New("outbox cleared without a stream to publish to")
		}
		return nil
	})
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	waitIDs(t, js, "e1")
	waitOutboxEmpty(t, kv, "d.1")
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
	waitOutboxEmpty(t, kv, "d.fine")
	e, err := kv.Get(ctx, "d.stuck")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(e.Value()), `"refused"`) {
		t.Fatalf("the refused message left its outbox: %s", e.Value())
	}
}

// TestRelayKeepsTheDocumentVerbatim: clearing the outbox rewrites the record without decoding
// the document, so a document survives byte for byte, even one whose text names the record's
// own fields; a document written without events is left alone.
func TestRelayKeepsTheDocumentVerbatim(t *testing.T) {
	ctx := context.Background()
	js, kv, s := setup(t)
	if _, err := natsx.EnsureEventStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	startRelay(t, js, kv)
	tricky := "\"outbox\":[], \"purge\":true, é \u2028 <&>"
	if _, err := s.Create(ctx, "d.plain", doc{Name: tricky}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "d.1", doc{Name: tricky}, msg("e1")); err != nil {
		t.Fatal(err)
	}
	waitIDs(t, js, "e1")
	want := `{"doc":{"name":"\"outbox\":[], \"purge\":true, é \u2028 \u003c\u0026\u003e"}}`
	natstest.Eventually(t, 10*time.Second, func() error {
		e, err := kv.Get(ctx, "d.1")
		if err != nil {
			return err
		}
		if unmarked(e.Value()) != want {
			return fmt.Errorf("value %s, want %s", e.Value(), want)
		}
		return nil
	})
	for _, key := range []string{"d.1", "d.plain"} {
		got, _, err := s.Get(ctx, key)
		if err != nil || got.Name != tricky {
			t.Fatalf("Get %s = %+v, %v", key, got, err)
		}
	}
	if e, err := kv.Get(ctx, "d.plain"); err != nil || e.Revision() != 1 {
		t.Fatalf("document without events was rewritten: %v", err)
	}
}
