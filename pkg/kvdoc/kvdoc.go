// Package kvdoc stores JSON documents in a JetStream key-value bucket with compare-and-set
// writes and a transactional outbox: every write may carry events, stored in the same KV value,
// and a Relay publishes them to JetStream and then clears them.
//
// One KV value is the unit of atomicity in JetStream, so the document and its pending events
// live in one value: {"doc": …, "outbox": […], "purge": bool}.
package kvdoc

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	// ParkAfter is how long one message may keep failing before the relay parks its document
	// and goes on with the others (the parked one is tried again every ParkRetry); 0 means
	// DefaultParkAfter. A message the stream keeps refusing then delays only its own document.
	ParkAfter time.Duration
	// ParkRetry is how often parked documents are tried again; 0 means DefaultParkRetry.
	ParkRetry time.Duration
}

// Defaults of Relay's parking.
const (
	DefaultParkAfter = 2 * time.Second
	DefaultParkRetry = 2 * time.Second
)

// pendingView decodes only what the relay needs from any record type.
type pendingView struct {
	Outbox []outbox.Message `json:"outbox"`
	Purge  bool             `json:"purge"`
}

// Run relays until ctx ends. It is supervised: when its watch ends (a NATS reconnect, a
// deleted consumer) it starts a new one, with back-off, so the outbox never silently stops
// draining. On every (re)start the watch replays every current value, so events left behind by
// a crash are published then.
func (r *Relay) Run(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for {
		err := r.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.Log.Warn("relay: watch ended, restarting", "filter", r.Filter, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func (r *Relay) watch(ctx context.Context) error {
	w, err := r.KV.Watch(ctx, r.Filter)
	if err != nil {
		return fmt.Errorf("relay watch %s: %w", r.Filter, err)
	}
	defer func() { _ = w.Stop() }()
	parked := map[string]bool{}
	retry := time.NewTicker(cmp.Or(r.ParkRetry, DefaultParkRetry))
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry.C:
			for key := range parked {
				delete(parked, key)
				e, err := r.KV.Get(ctx, key)
				if err != nil {
					continue // gone, or the next update brings it back
				}
				r.handle(ctx, e, parked)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			r.handle(ctx, e, parked)
		}
	}
}

// Markers of a record with work for the relay. Records are JSON written by this package, whose
// outbox and purge fields are omitted when empty, so a value containing neither (most values the
// relay sees: documents without events, and every value the relay's own clearing writes) is
// skipped without being decoded. A document field that happens to contain the text only costs a
// decode.
var (
	outboxMarker = []byte(`"outbox"`)
	purgeMarker  = []byte(`"purge"`)
)

func (r *Relay) handle(ctx context.Context, e jetstream.KeyValueEntry, parked map[string]bool) {
	if val := e.Value(); !bytes.Contains(val, outboxMarker) && !bytes.Contains(val, purgeMarker) {
		return
	}
	raw, v, err := decodeRecord(e.Value())
	if err != nil {
		r.Log.Error("relay: undecodable record", "key", e.Key(), "err", err)
		return
	}
	if len(v.Outbox) == 0 && !v.Purge {
		return
	}
	if !r.flush(ctx, e, raw, v) && ctx.Err() == nil {
		parked[e.Key()] = true
	}
}

// decodeRecord decodes a record once: its fields stay raw, and only outbox and purge are read.
func decodeRecord(val []byte) (map[string]json.RawMessage, pendingView, error) {
	var raw map[string]json.RawMessage
	var v pendingView
	if err := json.Unmarshal(val, &raw); err != nil {
		return nil, v, err
	}
	if b, ok := raw["outbox"]; ok {
		if err := json.Unmarshal(b, &v.Outbox); err != nil {
			return nil, v, err
		}
	}
	if b, ok := raw["purge"]; ok {
		if err := json.Unmarshal(b, &v.Purge); err != nil {
			return nil, v, err
		}
	}
	return raw, v, nil
}

// encodeRecord writes raw back as a JSON object with its values verbatim: they came from a
// decoded record, so they are valid JSON and need no second pass through the encoder.
func encodeRecord(raw map[string]json.RawMessage) ([]byte, error) {
	keys := slices.Sorted(maps.Keys(raw))
	n := 2
	for _, k := range keys {
		n += len(k) + len(raw[k]) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		qk, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		b = append(b, qk...)
		b = append(b, ':')
		b = append(b, raw[k]...)
	}
	return append(b, '}'), nil
}

// flush publishes v's messages, retrying with back-off for up to ParkAfter, then clears them
// from the key (or purges it). It reports false when a message could not be published, so the
// caller parks the document.
func (r *Relay) flush(ctx context.Context, entry jetstream.KeyValueEntry, raw map[string]json.RawMessage, v pendingView) bool {
	key := entry.Key()
	for _, m := range v.Outbox {
		if !r.publish(ctx, m) {
			if ctx.Err() == nil {
				r.Log.Error("relay: message parked; its document's events wait, the others go on", "key", key, "subject", m.Subject, "id", m.ID)
			}
			return false
		}
	}
	sent := map[string]bool{}
	for _, m := range v.Outbox {
		sent[m.ID] = true
	}
	// The first attempt uses the value the watch delivered (one round trip); only a lost
	// race reads the key again.
	e := entry
	for attempt := 0; attempt < 10 && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			var err error
			if e, err = r.KV.Get(ctx, key); err != nil {
				return true // deleted meanwhile, or a transient error: the next watch update retries
			}
		}
		// The first attempt reuses the record handle decoded; a re-read is decoded once.
		cur := v
		if attempt > 0 {
			var err error
			if raw, cur, err = decodeRecord(e.Value()); err != nil {
				return true
			}
		}
		var err error
		if cur.Purge {
			if len(cur.Outbox) > len(v.Outbox) {
				return true // more events arrived; the watch will bring them
			}
			err = r.KV.Purge(ctx, key, jetstream.LastRevision(e.Revision()))
		} else {
			rest := slices.DeleteFunc(slices.Clone(cur.Outbox), func(m outbox.Message) bool { return sent[m.ID] })
			if len(rest) == len(cur.Outbox) {
				return true // already cleared by another relay
			}
			if len(rest) == 0 {
				delete(raw, "outbox")
			} else if raw["outbox"], err = json.Marshal(rest); err != nil {
				return true
			}
			data, merr := encodeRecord(raw)
			if merr != nil {
				return true
			}
			_, err = r.KV.Update(ctx, key, data, e.Revision())
		}
		if err == nil {
			return true
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			if ctx.Err() != nil {
				return true // shutting down; the next start replays the outbox
			}
			r.Log.Warn("relay: clearing outbox failed", "key", key, "err", err)
			return true
		}
	}
	return true
}

func (r *Relay) publish(ctx context.Context, m outbox.Message) bool {
	wait := 50 * time.Millisecond
	deadline := time.Now().Add(cmp.Or(r.ParkAfter, DefaultParkAfter))
	for {
		msg := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
		msg.Header.Set("Content-Type", "application/cloudevents+json")
		_, err := r.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(m.ID))
		if err == nil {
			return true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		r.Log.Warn("relay: publish failed, retrying", "subject", m.Subject, "id", m.ID, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		if wait < time.Second {
			wait *= 2
		}
	}
}
