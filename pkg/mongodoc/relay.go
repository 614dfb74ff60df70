package mongodoc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Relay publishes the outbox of every pending document of a collection to JetStream.
//
// Every replica runs one per collection, and one of them relays at a time: the holder of the
// collection's lease (see LeaseCollection), renewed every LeaseTTL/3 and taken over by another
// replica when it has not moved for LeaseTTL (a killed holder) or at once when its holder let it
// go (a clean stop). The others only watch the lease. A holder that cannot renew stops relaying
// after LeaseTTL/2, before anyone can take over; passes in flight at a takeover may still overlap
// the new holder's, and the stream's dedupe stores such events once.
//
// It finds its work through the index on the pending field, polled (cheap where there is little
// to do) and, where the server has change streams (a MongoDB replica set; not FerretDB), also
// woken by a change stream on the collection, so that other replicas' writes go out at once
// rather than at the next poll: a pass reads up to a batch of
// pending documents, publishes each document's events in order with Nats-Msg-Id = event id
// (so a repeated publish is stored once), then clears the outbox by compare-and-set on the
// version it read, without bumping it. A clear that loses to a newer write drops nothing: the
// newer version still holds the events, which the next pass publishes again (deduplicated).
// Documents are handled concurrently; passes follow each other at once while there is work,
// else wait for the poll interval or a wake-up from a local write.
//
// A message the stream keeps refusing parks its document for ParkRetry once it has failed for
// ParkAfter, so it delays only its own document. A write through another replica wakes that
// replica's relay, not the holder: the holder finds it at its next poll.
type Relay struct {
	C   *Collection
	JS  jetstream.JetStream
	Log *slog.Logger
	// Poll is how often the pending index is read when nothing woke the relay; 0 means
	// DefaultPoll.
	Poll time.Duration
	// ParkAfter and ParkRetry as in pkg/kvdoc; 0 means DefaultParkAfter / DefaultParkRetry.
	ParkAfter time.Duration
	ParkRetry time.Duration
	// DepthEvery is how often the outbox depth is logged while it is not zero; 0 means 1 min.
	DepthEvery time.Duration
	// LeaseTTL as in the type comment; 0 means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Owner names this relay in the lease; "" means host, pid and a random part.
	Owner string

	relayed atomic.Int64
	stream  atomic.Int32 // streamUnknown, streamOpen or streamNone
}

// States of a relay's change stream.
const (
	streamUnknown = iota
	streamOpen
	streamNone
)

// ChangeStream reports whether the relay is woken by a change stream (true) or polls alone
// (false, the server refused one); ok is false while it does not know yet.
func (r *Relay) ChangeStream() (open, ok bool) {
	st := r.stream.Load()
	return st == streamOpen, st != streamUnknown
}

// Relayed is the number of events this relay has published.
func (r *Relay) Relayed() int64 { return r.relayed.Load() }

// Defaults of Relay.
const (
	DefaultPoll      = 250 * time.Millisecond
	DefaultParkAfter = 2 * time.Second
	DefaultParkRetry = 2 * time.Second
)

const (
	relayBatch   = 256
	relayWorkers = 16
	publishWait  = 10 * time.Second
)

// pendingDoc is what the relay reads of a document.
type pendingDoc struct {
	ID     string    `bson:"_id"`
	V      int64     `bson:"v"`
	Outbox []message `bson:"outbox"`
	Purge  bool      `bson:"purge"`
}

// hold is a document the relay leaves alone until a time: backing off or parked.
type hold struct {
	failedSince time.Time
	wait        time.Duration
	until       time.Time
	parked      bool
}

// Depth is the number of documents with events not yet relayed (or waiting to be purged).
func (r *Relay) Depth(ctx context.Context) (int64, error) {
	n, err := r.C.Coll.CountDocuments(ctx, bson.D{{Key: fieldPending, Value: true}})
	if err != nil {
		return 0, fmt.Errorf("mongodb outbox depth: %w", err)
	}
	return n, nil
}

// Run relays, while this replica holds the collection's lease, until ctx ends; then it lets the
// lease go. Errors of a pass are logged and the pass is tried again.
func (r *Relay) Run(ctx context.Context) error {
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	l := newLease(r.C, cmp.Or(r.Owner, newOwner()), cmp.Or(r.LeaseTTL, DefaultLeaseTTL))
	kept, watched := make(chan struct{}), make(chan struct{})
	go func() { defer close(kept); r.keep(ctx, l) }()
	go func() { defer close(watched); r.watch(ctx) }()
	defer func() { <-watched; <-kept; l.release() }()
	poll := time.NewTicker(cmp.Or(r.Poll, DefaultPoll))
	defer poll.Stop()
	depth := time.NewTicker(cmp.Or(r.DepthEvery, time.Minute))
	defer depth.Stop()
	holds := map[string]*hold{}
	failing := false
	for {
		if l.held(time.Now()) {
			more, err := r.pass(ctx, holds)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil && !failing {
				r.Log.Warn("relay: reading pending documents failed; retrying", "collection", r.C.Coll.Name(), "err", err)
			}
			failing = err != nil
			if more && err == nil {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.C.wake:
		case <-poll.C:
		case <-depth.C:
			// The holder reports the depth and the others 0, so a sum over replicas is the depth.
			var n int64
			if l.held(time.Now()) {
				var err error
				if n, err = r.Depth(ctx); err != nil {
					continue
				}
			}
			metrics.OutboxPending.WithLabelValues(r.C.Coll.Name()).Set(float64(n))
			if n > 0 {
				r.Log.Info("relay: outbox depth", "collection", r.C.Coll.Name(), "pending_documents", n, "parked", countParked(holds))
			}
		}
	}
}

// changeStreamsOff makes the polling fallback one log line per process, not one per collection.
var changeStreamsOff sync.Once

// watch wakes the relay on every insert, update or replace in the collection through a change
// stream, until ctx ends. A server that answers the first one with an error (FerretDB has none,
// a standalone mongod neither) leaves the relay to its polling, said once per process. A stream
// that breaks later, or a first one that fails on the network, is opened again with back-off.
func (r *Relay) watch(ctx context.Context) {
	match := mongo.Pipeline{{{Key: "$match", Value: bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{"insert", "update", "replace"}}}}}}}}
	wait := 100 * time.Millisecond
	backoff := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
		return true
	}
	for {
		cs, err := r.C.Coll.Watch(ctx, match)
		var refused mongo.ServerError
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && errors.As(err, &refused) && r.stream.Load() != streamOpen:
			r.stream.Store(streamNone)
			changeStreamsOff.Do(func() {
				r.Log.Info("mongodb: no change streams on this server; the outbox relays poll their pending index",
					"first_collection", r.C.Coll.Name(), "every", cmp.Or(r.Poll, DefaultPoll), "reason", err)
			})
			return
		case err != nil:
			r.Log.Warn("relay: opening a change stream failed; polling meanwhile", "collection", r.C.Coll.Name(), "err", err, "in", wait)
			if !backoff() {
				return
			}
			continue
		}
		r.stream.Store(streamOpen)
		for cs.Next(ctx) {
			r.C.Wake()
			wait = 100 * time.Millisecond
		}
		err = cs.Err()
		_ = cs.Close(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return
		}
		r.Log.Warn("relay: change stream ended; opening another, polling meanwhile", "collection", r.C.Coll.Name(), "err", err, "in", wait)
		if !backoff() {
			return
		}
	}
}

func countParked(holds map[string]*hold) int {
	n := 0
	for _, h := range holds {
		if h.parked {
			n++
		}
	}
	return n
}

// pass relays one batch; more says a full batch was read (there may be more waiting).
func (r *Relay) pass(ctx context.Context, holds map[string]*hold) (more bool, err error) {
	now := time.Now()
	var held bson.A
	for id, h := range holds {
		if now.Before(h.until) {
			held = append(held, id)
		}
	}
	filter := bson.D{{Key: fieldPending, Value: true}}
	if len(held) > 0 {
		filter = append(filter, bson.E{Key: fieldID, Value: bson.D{{Key: "$nin", Value: held}}})
	}
	opts := options.Find().SetLimit(relayBatch).SetProjection(bson.D{{Key: fieldVersion, Value: 1}, {Key: fieldOutbox, Value: 1}, {Key: fieldPurge, Value: 1}})
	cur, err := r.C.Coll.Find(ctx, filter, opts)
	if err != nil {
		return false, err
	}
	var docs []pendingDoc
	if err := cur.All(ctx, &docs); err != nil {
		return false, err
	}
	if len(docs) == 0 {
		return false, nil
	}
	errs := make([]error, len(docs))
	sem := make(chan struct{}, relayWorkers)
	var wg sync.WaitGroup
	for i := range docs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = r.relay(ctx, docs[i])
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return false, nil
	}
	now = time.Now()
	for i, d := range docs {
		if errs[i] == nil {
			delete(holds, d.ID)
			continue
		}
		h := holds[d.ID]
		if h == nil {
			h = &hold{failedSince: now, wait: 50 * time.Millisecond}
			holds[d.ID] = h
		}
		if !h.parked && now.Sub(h.failedSince) >= cmp.Or(r.ParkAfter, DefaultParkAfter) {
			h.parked = true
			level := slog.LevelError
			if natsx.IsTransient(errs[i]) {
				// The stream is out of reach (a node down, a leader election), not refusing this
				// message: every document waits alike and goes out when it is back (as pkg/kvdoc).
				level = slog.LevelWarn
			}
			r.Log.Log(ctx, level, "relay: document parked; its events wait, the others go on", "collection", r.C.Coll.Name(), "id", d.ID, "err", errs[i])
		}
		if h.parked {
			h.until = now.Add(cmp.Or(r.ParkRetry, DefaultParkRetry))
			continue
		}
		r.Log.Warn("relay: publish failed, retrying", "collection", r.C.Coll.Name(), "id", d.ID, "err", errs[i], "in", h.wait)
		h.until = now.Add(h.wait)
		h.wait = min(h.wait*2, time.Second)
	}
	// Drop holds of documents that are no longer pending (cleared elsewhere, deleted).
	if len(holds) > 1024 {
		for id, h := range holds {
			if !now.Before(h.until) && !h.parked {
				delete(holds, id)
			}
		}
	}
	return len(docs) == relayBatch, nil
}

// relay publishes d's events in order and clears them (or purges d).
func (r *Relay) relay(ctx context.Context, d pendingDoc) error {
	for _, m := range d.Outbox {
		msg := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
		msg.Header.Set("Content-Type", "application/cloudevents+json")
		pctx, cancel := context.WithTimeout(ctx, publishWait)
		_, err := r.JS.PublishMsg(pctx, msg, jetstream.WithMsgID(m.ID), jetstream.WithRetryAttempts(0))
		cancel()
		if err != nil {
			return fmt.Errorf("publish %s (%s): %w", m.ID, m.Subject, err)
		}
		r.relayed.Add(1)
		if !m.At.IsZero() {
			metrics.RelayLag.WithLabelValues(r.C.Coll.Name()).Observe(time.Since(m.At).Seconds())
		}
	}
	// Published events are cleared even when ctx ends now, so a stopping relay leaves no
	// duplicate for the next one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	filter := bson.D{{Key: fieldID, Value: d.ID}, {Key: fieldVersion, Value: d.V}}
	// The clear keeps the version, but takes the next one's claim so that no writer's update
	// interleaves with it where updates are not atomic (a writer then sees ErrStale and retries).
	unlock, err := r.C.lock(ctx, d.ID, d.V+1)
	if errors.Is(err, ErrStale) {
		return nil // a writer is on it; the next pass sees its version
	}
	if err != nil {
		return fmt.Errorf("clear outbox: %w", err)
	}
	if d.Purge {
		_, err = r.C.Coll.DeleteOne(ctx, filter)
	} else {
		_, err = r.C.Coll.UpdateOne(ctx, filter, bson.D{{Key: "$unset", Value: bson.D{{Key: fieldOutbox, Value: ""}, {Key: fieldPending, Value: ""}}}})
	}
	unlock(err)
	// No match: a newer write holds these events and maybe more; the next pass sends it.
	if err != nil {
		return fmt.Errorf("clear outbox: %w", err)
	}
	metrics.OutboxRelayed.WithLabelValues(r.C.Coll.Name()).Add(float64(len(d.Outbox)))
	return nil
}
