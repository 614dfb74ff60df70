// Package kvdoc stores JSON documents in a JetStream key-value bucket with compare-and-set
// writes and a transactional outbox: every write may carry events, stored in the same KV value,
// and a Relay publishes them to JetStream and then clears them.
//
// One KV value is the unit of atomicity in JetStream, so the document and its pending events
// live in one value: {"doc": …, "outbox": […], "purge": bool}.
package kvdoc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors, translated from the driver's.
var (
	ErrNotFound = errors.New("kvdoc: not found")
	ErrExists   = errors.New("kvdoc: already exists")
	// ErrStale means the document changed since it was read; read again and retry.
	ErrStale = errors.New("kvdoc: revision changed")
)

type record[T any] struct {
	Doc    T                `json:"doc"`
	Outbox []outbox.Message `json:"outbox,omitempty"`
	// Purge asks the relay to delete the key once the outbox is published: how a document is
	// removed together with the event that says so.
	Purge bool `json:"purge,omitempty"`
}

// Store is a typed view of a bucket.
type Store[T any] struct {
	KV jetstream.KeyValue
}

// New returns a Store on kv.
func New[T any](kv jetstream.KeyValue) *Store[T] { return &Store[T]{KV: kv} }

// Get returns the document at key and its revision. A document marked for purge is gone.
func (s *Store[T]) Get(ctx context.Context, key string) (T, uint64, error) {
	var zero T
	rec, rev, err := s.get(ctx, key)
	if err != nil {
		return zero, 0, err
	}
	if rec.Purge {
		return zero, 0, ErrNotFound
	}
	return rec.Doc, rev, nil
}

func (s *Store[T]) get(ctx context.Context, key string) (record[T], uint64, error) {
	var rec record[T]
	e, err := s.KV.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return rec, 0, ErrNotFound
		}
		return rec, 0, fmt.Errorf("kv get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, fmt.Errorf("kv decode %s: %w", key, err)
	}
	return rec, e.Revision(), nil
}

// Create stores a new document with its events; ErrExists if the key is taken.
func (s *Store[T]) Create(ctx context.Context, key string, doc T, msgs ...outbox.Message) (uint64, error) {
	data, err := json.Marshal(record[T]{Doc: doc, Outbox: msgs})
	if err != nil {
		return 0, fmt.Errorf("kv encode %s: %w", key, err)
	}
	rev, err := s.KV.Create(ctx, key, data)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, ErrExists
		}
		return 0, fmt.Errorf("kv create %s: %w", key, err)
	}
	return rev, nil
}

// Update replaces the document at key if it is still at rev, appending msgs to any events not
// yet relayed. ErrStale if someone wrote in between.
func (s *Store[T]) Update(ctx context.Context, key string, rev uint64, doc T, msgs ...outbox.Message) (uint64, error) {
	return s.write(ctx, key, rev, doc, false, msgs)
}

// Remove replaces the document with tombstone (which must hold no secret) and marks it for
// purge; the relay deletes the key after publishing msgs. Readers see ErrNotFound at once.
func (s *Store[T]) Remove(ctx context.Context, key string, rev uint64, tombstone T, msgs ...outbox.Message) error {
	_, err := s.write(ctx, key, rev, tombstone, true, msgs)
	return err
}

func (s *Store[T]) write(ctx context.Context, key string, rev uint64, doc T, purge bool, msgs []outbox.Message) (uint64, error) {
	cur, curRev, err := s.get(ctx, key)
	if err != nil {
		return 0, err
	}
	if curRev != rev || cur.Purge {
		return 0, ErrStale
	}
	data, err := json.Marshal(record[T]{Doc: doc, Outbox: append(slices.Clip(cur.Outbox), msgs...), Purge: purge})
	if err != nil {
		return 0, fmt.Errorf("kv encode %s: %w", key, err)
	}
	newRev, err := s.KV.Update(ctx, key, data, rev)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, ErrStale
		}
		return 0, fmt.Errorf("kv update %s: %w", key, err)
	}
	return newRev, nil
}

// Relay publishes the outbox of every document under a key filter to JetStream.
type Relay struct {
	KV     jetstream.KeyValue
	JS     jetstream.JetStream
	Filter string // key filter, e.g. "e.>"
	Log    *slog.Logger
}

// pendingView decodes only what the relay needs from any record type.
type pendingView struct {
	Outbox []outbox.Message `json:"outbox"`
	Purge  bool             `json:"purge"`
}

// Run watches the bucket until ctx ends. On start the watch replays every current value, so
// events left behind by a crash are published then.
func (r *Relay) Run(ctx context.Context) error {
	w, err := r.KV.Watch(ctx, r.Filter)
	if err != nil {
		return fmt.Errorf("relay watch %s: %w", r.Filter, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var v pendingView
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				r.Log.Error("relay: undecodable record", "key", e.Key(), "err", err)
				continue
			}
			if len(v.Outbox) == 0 && !v.Purge {
				continue
			}
			r.flush(ctx, e.Key(), v)
		}
	}
}

// flush publishes v's messages, retrying with back-off until they are stored or ctx ends, then
// clears them from the key (or purges it).
func (r *Relay) flush(ctx context.Context, key string, v pendingView) {
	for _, m := range v.Outbox {
		if !r.publish(ctx, m) {
			return
		}
	}
	sent := map[string]bool{}
	for _, m := range v.Outbox {
		sent[m.ID] = true
	}
	for attempt := 0; attempt < 10 && ctx.Err() == nil; attempt++ {
		e, err := r.KV.Get(ctx, key)
		if err != nil {
			return // deleted meanwhile, or a transient error: the next watch update retries
		}
		var raw map[string]json.RawMessage
		var cur pendingView
		if json.Unmarshal(e.Value(), &raw) != nil || json.Unmarshal(e.Value(), &cur) != nil {
			return
		}
		if cur.Purge {
			if len(cur.Outbox) > len(v.Outbox) {
				return // more events arrived; the watch will bring them
			}
			err = r.KV.Purge(ctx, key, jetstream.LastRevision(e.Revision()))
		} else {
			rest := slices.DeleteFunc(cur.Outbox, func(m outbox.Message) bool { return sent[m.ID] })
			if len(rest) == len(cur.Outbox) {
				return // already cleared by another relay
			}
			if len(rest) == 0 {
				delete(raw, "outbox")
			} else if raw["outbox"], err = json.Marshal(rest); err != nil {
				return
			}
			data, merr := json.Marshal(raw)
			if merr != nil {
				return
			}
			_, err = r.KV.Update(ctx, key, data, e.Revision())
		}
		if err == nil {
			return
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			if ctx.Err() != nil {
				return // shutting down; the next start replays the outbox
			}
			r.Log.Warn("relay: clearing outbox failed", "key", key, "err", err)
			return
		}
	}
}

func (r *Relay) publish(ctx context.Context, m outbox.Message) bool {
	wait := 50 * time.Millisecond
	for {
		msg := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
		msg.Header.Set("Content-Type", "application/cloudevents+json")
		_, err := r.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(m.ID))
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		r.Log.Warn("relay: publish failed, retrying", "subject", m.Subject, "id", m.ID, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		if wait < 5*time.Second {
			wait *= 2
		}
	}
}
