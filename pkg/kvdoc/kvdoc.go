// Package kvdoc stores JSON documents in a JetStream key-value bucket with compare-and-set
// writes and a transactional outbox: every write may carry events, stored in the same KV value,
// and a Relay publishes them to JetStream.
//
// One KV value is the unit of atomicity in JetStream, so the document and its pending events
// live in one value: {"outbox": […], "purge": bool, "doc": …} (events first: see record).
//
// The relay never writes a value back to drop the events it published (that second write per
// event-carrying write was a fifth of an enrollment initiation's cost). Instead the next write
// of the document drops them: a write carries the previous value's events forward only while
// they may not have been published yet, which the writer asks its process's Relay (Relayed).
// A value therefore keeps its own write's events after they were published, until the next
// write; the relay publishes every value's events, and the stream's duplicate window (Nats-Msg-Id)
// stores an event carried into a second value once.
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mfaflow/mfaflow/pkg/metrics"
	"github.com/mfaflow/mfaflow/pkg/natsx"
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

// The fields are written in this order, events first, so that the relay reads a value's events
// and purge mark without decoding (or even scanning) the document after them (decodePending).
// Values written before this order (the document first) are read as well.
type record[T any] struct {
	Outbox []outbox.Message `json:"outbox,omitempty"`
	// Purge asks the relay to delete the key once the outbox is published: how a document is
	// removed together with the event that says so.
	Purge bool `json:"purge,omitempty"`
	Doc   T    `json:"doc"`
}

// Store is a typed view of a bucket.
type Store[T any] struct {
	KV jetstream.KeyValue
	// Relayed reports whether the events of key's value at revision rev have all been
	// published (Relay.Relayed of the relay of this process that watches key). A write drops
	// the previous value's events when they have; without Relayed, or while it answers false,
	// it carries them forward, which is safe (the stream dedupes) but lets the value grow.
	Relayed func(key string, rev uint64) bool

	// seen remembers, for keys this process read or wrote lately, the events and purge mark of
	// the value at one revision: a write based on that revision (the usual read-then-update of
	// one request) then needs no second read of the value it replaces. A revision names one
	// value for good, so an entry is never wrong, only possibly old; an old one makes the
	// compare-and-set fail as a read would have.
	seenMu sync.Mutex
	seen   map[string]seenValue
}

// seenValue is what a write needs of the value it replaces: its revision, its events (raw, as
// a read found them, or decoded, as this process wrote them) and whether it is marked for purge.
type seenValue struct {
	rev    uint64
	outbox json.RawMessage
	msgs   []outbox.Message
	purge  bool
}

// events decodes the remembered events.
func (v seenValue) events() ([]outbox.Message, error) {
	if v.msgs != nil || len(v.outbox) == 0 || bytes.Equal(v.outbox, []byte("null")) {
		return slices.Clip(v.msgs), nil
	}
	var out []outbox.Message
	err := json.Unmarshal(v.outbox, &out)
	return out, err
}

// maxSeen bounds Store.seen; past it the map starts over (the entries are a cache of reads).
const maxSeen = 4096

func (s *Store[T]) remember(key string, v seenValue) {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	if s.seen == nil || len(s.seen) >= maxSeen {
		s.seen = make(map[string]seenValue, 64)
	}
	s.seen[key] = v
}

func (s *Store[T]) forget(key string) {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	delete(s.seen, key)
}

// recall returns the remembered value of key at rev, if any.
func (s *Store[T]) recall(key string, rev uint64) (seenValue, bool) {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	v, ok := s.seen[key]
	return v, ok && v.rev == rev
}

// New returns a Store on kv.
func New[T any](kv jetstream.KeyValue) *Store[T] { return &Store[T]{KV: kv} }

// Get returns the document at key and its revision. A document marked for purge is gone.
func (s *Store[T]) Get(ctx context.Context, key string) (T, uint64, error) {
	var zero T
	// The events are kept raw (not decoded): a write based on this read carries them forward
	// without reading the value again.
	var rec struct {
		Doc    T               `json:"doc"`
		Outbox json.RawMessage `json:"outbox"`
		Purge  bool            `json:"purge"`
	}
	rev, err := s.read(ctx, key, &rec)
	if err != nil {
		return zero, 0, err
	}
	s.remember(key, seenValue{rev: rev, outbox: rec.Outbox, purge: rec.Purge})
	if rec.Purge {
		return zero, 0, ErrNotFound
	}
	return rec.Doc, rev, nil
}

// current is what a write based on rev needs of the value it replaces: remembered from a read
// or write of this process, else read.
func (s *Store[T]) current(ctx context.Context, key string, rev uint64) (seenValue, error) {
	if v, ok := s.recall(key, rev); ok {
		return v, nil
	}
	var rec struct {
		Outbox json.RawMessage `json:"outbox"`
		Purge  bool            `json:"purge"`
	}
	curRev, err := s.read(ctx, key, &rec)
	if err != nil {
		return seenValue{}, err
	}
	v := seenValue{rev: curRev, outbox: rec.Outbox, purge: rec.Purge}
	s.remember(key, v)
	return v, nil
}

func (s *Store[T]) read(ctx context.Context, key string, into any) (uint64, error) {
	e, err := s.KV.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("kv get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), into); err != nil {
		return 0, fmt.Errorf("kv decode %s: %w", key, err)
	}
	return e.Revision(), nil
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
	s.remember(key, seenValue{rev: rev, msgs: slices.Clip(msgs)})
	return rev, nil
}

// Update replaces the document at key if it is still at rev, appending msgs to the previous
// value's events unless those are known to be published (see Relayed). ErrStale if someone
// wrote in between.
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
	cur, err := s.current(ctx, key, rev)
	if err != nil {
		return 0, err
	}
	if cur.rev != rev || cur.purge {
		return 0, ErrStale
	}
	var carried []outbox.Message
	if s.Relayed == nil || !s.Relayed(key, cur.rev) {
		if carried, err = cur.events(); err != nil {
			return 0, fmt.Errorf("kv decode %s: %w", key, err)
		}
	}
	out := slices.Clip(append(carried, msgs...))
	data, err := json.Marshal(record[T]{Doc: doc, Outbox: out, Purge: purge})
	if err != nil {
		return 0, fmt.Errorf("kv encode %s: %w", key, err)
	}
	newRev, err := s.KV.Update(ctx, key, data, rev)
	if err != nil {
		s.forget(key)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, ErrStale
		}
		return 0, fmt.Errorf("kv update %s: %w", key, err)
	}
	if purge {
		s.forget(key)
	} else {
		s.remember(key, seenValue{rev: newRev, msgs: out})
	}
	return newRev, nil
}

// Relay publishes the outbox of every document under a key filter to JetStream.
//
// It pipelines: values with events are published in batches with asynchronous publishes (acks
// awaited per batch, a bounded number of batches in flight). It writes nothing back (documents
// marked for purge are deleted after their events are out): the next write of a document drops
// the events this relay has published, asking Relayed. Events of one document are published in
// order, one document at a time (a newer revision waits until the older one is done, and
// replaces it if it has not started: a newer value carries every event of the older one that
// was not known to be published when it was written).
//
// It keeps a checkpoint in the bucket (key Checkpoint): a revision below which every document
// write has been relayed, and the documents that are parked. A (re)started relay resumes its
// watch at that revision and retries the parked documents, instead of replaying every value of
// the bucket; only the first start without a checkpoint walks all current values. This relies
// on the bucket keeping one revision per key (History 1), as the stores using it do.
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
	// Checkpoint is the key of the relay's checkpoint; "" means CheckpointKey(Filter). It must
	// not match Filter.
	Checkpoint string
	// CheckpointEvery is how often the checkpoint is written when it moved; 0 means 1 s.
	CheckpointEvery time.Duration

	// Tap, when set, follows the relay's watch: another reader of the same keys (the status
	// service's poll view) is kept current by the relay's consumer instead of one of its own,
	// which would have the server deliver every write twice.
	Tap Tap

	observe func(jetstream.KeyValueEntry) // tests: every entry the watch delivers

	// progress is what Relayed answers from, published by the watch goroutine.
	progress atomic.Pointer[relayProgress]
}

// Tap follows a Relay's watch (Relay.Tap). Its methods run on the relay's watch goroutine, so
// they must not block for long: the relay waits for them.
type Tap interface {
	// WatchStarted: a watch (a new consumer) runs; every write from now on will be observed.
	WatchStarted()
	// Watched is every value (or delete) the watch delivers, in the bucket's order; a
	// (re)started watch begins with the values since the relay's checkpoint.
	Watched(jetstream.KeyValueEntry)
	// WatchEnded: the watch stopped; writes are not observed until WatchStarted again.
	WatchEnded()
}

// relayProgress is a snapshot of the relay's progress: every value of a watched key below
// watermark has been published, except those of the parked keys.
type relayProgress struct {
	watermark uint64
	parked    map[string]bool
}

// Relayed reports whether this relay has published every event of key's value at revision rev.
// A writer asks it about the value it is replacing (its compare-and-set guarantees that no
// newer value of key exists): below the watermark, that value's job is done — the relay skips a
// value only for a newer one of the same key, and there is none — unless the key is parked. It
// answers false until the relay runs, for keys outside its filter, and for a revision it has
// not finished.
func (r *Relay) Relayed(key string, rev uint64) bool {
	p := r.progress.Load()
	return p != nil && rev < p.watermark && !p.parked[key] && matchesFilter(r.Filter, key)
}

// matchesFilter reports whether key matches the KV key filter (NATS subject wildcards).
func matchesFilter(filter, key string) bool {
	ft, kt := strings.Split(filter, "."), strings.Split(key, ".")
	for i, f := range ft {
		if f == ">" {
			return len(kt) > i
		}
		if i >= len(kt) || f != "*" && f != kt[i] {
			return false
		}
	}
	return len(ft) == len(kt)
}

// Defaults of Relay's parking.
const (
	DefaultParkAfter = 2 * time.Second
	DefaultParkRetry = 2 * time.Second
)

// Pipeline bounds: documents per batch, batches in flight, concurrent purges per batch, and how
// long a batch waits for its acks.
const (
	batchDocs     = 256
	batchesMax    = 4
	purgesPerLoad = 32
	ackTimeout    = 10 * time.Second
)

// CheckpointKey is the default checkpoint key of a relay on filter: "_relay." and the filter,
// with wildcards spelled out ("e.>" gives "_relay.e._all").
func CheckpointKey(filter string) string {
	return "_relay." + strings.NewReplacer(">", "_all", "*", "_any").Replace(filter)
}

// pendingView decodes only what the relay needs from any record type.
type pendingView struct {
	Outbox []outbox.Message `json:"outbox"`
	Purge  bool             `json:"purge"`
}

// checkpoint is the relay's stored progress.
type checkpoint struct {
	// Revision: every write of a watched key below it has been relayed (or superseded by a
	// later write at or above it). The watch resumes here.
	Revision uint64 `json:"revision"`
	// Parked documents, tried again on start.
	Parked []string `json:"parked,omitempty"`
}

// job is one revision of one document with pending events.
type job struct {
	key     string
	rev     uint64
	written time.Time // when the watched value was written (relay lag)
	value   []byte
	view    pendingView
	parked  bool // came from the parked set, its revision is not counted in open

	failedSince time.Time // first failure of this job's publishes, zero if none
	wait        time.Duration
	due         time.Time
}

type outcome int

const (
	outDone    outcome = iota // published (and purged, if marked), or superseded by a newer revision
	outRetry                  // failed for now; try again after back-off
	outAbandon                // shutting down; leave it to the next start
)

type result struct {
	j   *job
	out outcome
	err error
}

// relayState survives watch restarts within one Run.
type relayState struct {
	loaded  bool
	resume  uint64
	parked  map[string]bool
	written checkpoint
	wroteAt time.Time
}

// Run relays until ctx ends. It is supervised: when its watch ends (a NATS reconnect, a
// deleted consumer) it starts a new one, with back-off, so the outbox never silently stops
// draining. A new watch resumes at the checkpoint, so events left behind by a crash are
// published then.
func (r *Relay) Run(ctx context.Context) error {
	st := &relayState{parked: map[string]bool{}}
	wait := 100 * time.Millisecond
	for {
		err := r.watch(ctx, st)
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

func (r *Relay) checkpointKey() string { return cmp.Or(r.Checkpoint, CheckpointKey(r.Filter)) }

func (r *Relay) load(ctx context.Context, st *relayState) error {
	if st.loaded {
		return nil
	}
	e, err := r.KV.Get(ctx, r.checkpointKey())
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
	case err != nil:
		return fmt.Errorf("relay checkpoint: %w", err)
	default:
		var cp checkpoint
		if err := json.Unmarshal(e.Value(), &cp); err != nil {
			r.Log.Warn("relay: undecodable checkpoint, replaying every value", "key", e.Key(), "err", err)
			break
		}
		st.resume = cp.Revision
		for _, k := range cp.Parked {
			st.parked[k] = true
		}
		st.written, st.wroteAt = cp, time.Now()
	}
	st.loaded = true
	return nil
}

// pipeline is one watch's working state; only the watch goroutine touches it.
type pipeline struct {
	r       *Relay
	st      *relayState
	busy    map[string]*job     // keys with a job somewhere in the pipeline → the newer revision waiting, if any
	open    map[uint64]struct{} // revisions not yet relayed
	lastRev uint64              // the last revision the watch delivered
	ready   []*job
	retry   []*job
	flying  int
	results chan []result
}

func (r *Relay) watch(ctx context.Context, st *relayState) error {
	if err := r.load(ctx, st); err != nil {
		return err
	}
	var opts []jetstream.WatchOpt
	if st.resume > 0 {
		opts = append(opts, jetstream.ResumeFromRevision(st.resume))
	}
	w, err := r.KV.Watch(ctx, r.Filter, opts...)
	if err != nil {
		return fmt.Errorf("relay watch %s: %w", r.Filter, err)
	}
	defer func() { _ = w.Stop() }()
	if r.Tap != nil {
		r.Tap.WatchStarted()
		defer r.Tap.WatchEnded()
	}
	p := &pipeline{r: r, st: st, busy: map[string]*job{}, open: map[uint64]struct{}{},
		lastRev: max(st.resume, 1) - 1, results: make(chan []result, batchesMax)}
	defer p.finish(ctx)
	parkTick := time.NewTicker(cmp.Or(r.ParkRetry, DefaultParkRetry))
	defer parkTick.Stop()
	cpTick := time.NewTicker(cmp.Or(r.CheckpointEvery, time.Second))
	defer cpTick.Stop()
	retryTick := time.NewTicker(25 * time.Millisecond)
	defer retryTick.Stop()
	initDone := false
	p.retryParked(ctx) // parked at the last stop
	for {
		p.dispatch(ctx)
		select {
		case <-ctx.Done():
			return nil
		case rs := <-p.results:
			p.flying--
			p.settle(rs)
			p.publishProgress()
		case <-retryTick.C:
			p.dueRetries()
			p.publishProgress()
		case <-parkTick.C:
			p.retryParked(ctx)
		case <-cpTick.C:
			if initDone {
				p.saveCheckpoint(ctx)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				initDone = true
				continue
			}
			if r.observe != nil {
				r.observe(e)
			}
			if r.Tap != nil {
				r.Tap.Watched(e)
			}
			p.entry(e)
		}
	}
}

// finish waits for the batches in flight and keeps the resume point for the next watch; on
// shutdown it also writes the checkpoint.
func (p *pipeline) finish(ctx context.Context) {
	for p.flying > 0 {
		p.flying--
		p.settle(<-p.results)
	}
	p.st.resume = p.watermark()
	if ctx.Err() != nil {
		wctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.saveCheckpoint(wctx)
	}
}

// publishProgress tells Relayed what is published now.
func (p *pipeline) publishProgress() {
	wm := p.watermark()
	if cur := p.r.progress.Load(); cur != nil && cur.watermark == wm && maps.Equal(cur.parked, p.st.parked) {
		return
	}
	p.r.progress.Store(&relayProgress{watermark: wm, parked: maps.Clone(p.st.parked)})
}

func (p *pipeline) watermark() uint64 {
	wm := p.lastRev + 1
	for rev := range p.open {
		wm = min(wm, rev)
	}
	return wm
}

func (p *pipeline) saveCheckpoint(ctx context.Context) {
	cp := checkpoint{Revision: p.watermark(), Parked: slices.Sorted(maps.Keys(p.st.parked))}
	if cp.Revision == p.st.written.Revision && slices.Equal(cp.Parked, p.st.written.Parked) && time.Since(p.st.wroteAt) < time.Hour {
		return
	}
	data, err := json.Marshal(cp)
	if err != nil {
		return
	}
	if _, err := p.r.KV.Put(ctx, p.r.checkpointKey(), data); err != nil {
		if ctx.Err() == nil {
			p.r.Log.Warn("relay: writing checkpoint failed", "key", p.r.checkpointKey(), "err", err)
		}
		return
	}
	p.st.written, p.st.wroteAt = cp, time.Now()
}

var (
	outboxMarker = []byte(`"outbox"`)
	purgeMarker  = []byte(`"purge"`)
)

// decodePending reads a record's events and purge mark. A record written events first (every
// one since record's field order) is read up to its document and no further; an older one,
// document first, is decoded whole.
func decodePending(value []byte) (pendingView, error) {
	var v pendingView
	if !bytes.HasPrefix(value, []byte(`{"outbox":`)) && !bytes.HasPrefix(value, []byte(`{"purge":`)) {
		return v, json.Unmarshal(value, &v)
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	if _, err := dec.Token(); err != nil { // {
		return v, err
	}
	for dec.More() {
		name, err := dec.Token()
		if err != nil {
			return v, err
		}
		switch name {
		case "outbox":
			err = dec.Decode(&v.Outbox)
		case "purge":
			err = dec.Decode(&v.Purge)
		default:
			return v, nil // the document: the events and the mark come before it
		}
		if err != nil {
			return v, err
		}
	}
	return v, nil
}

// entry takes one value from the watch.
func (p *pipeline) entry(e jetstream.KeyValueEntry) {
	key, rev := e.Key(), e.Revision()
	p.lastRev = max(p.lastRev, rev)
	var v pendingView
	pending := false
	// Records are JSON written by this package, whose outbox and purge fields are omitted when
	// empty, so a value containing neither (most values the relay sees: documents without
	// events, and every value the relay's own clearing writes) is skipped without being decoded.
	// A document field that happens to contain the text only costs a decode.
	if e.Operation() == jetstream.KeyValuePut && (bytes.Contains(e.Value(), outboxMarker) || bytes.Contains(e.Value(), purgeMarker)) {
		var err error
		if v, err = decodePending(e.Value()); err != nil {
			p.r.Log.Error("relay: undecodable record", "key", key, "err", err)
		} else {
			pending = len(v.Outbox) > 0 || v.Purge
		}
	}
	next, isBusy := p.busy[key]
	if !pending {
		// A clean value or a delete supersedes whatever revision was waiting.
		if isBusy && next != nil {
			delete(p.open, next.rev)
			p.busy[key] = nil
		}
		if !isBusy {
			delete(p.st.parked, key)
		}
		return
	}
	j := &job{key: key, rev: rev, written: e.Created(), value: e.Value(), view: v}
	p.open[rev] = struct{}{}
	if isBusy {
		if next != nil {
			delete(p.open, next.rev) // the newer revision carries its events
		}
		p.busy[key] = j
		return
	}
	p.busy[key] = nil
	p.ready = append(p.ready, j)
}

func (p *pipeline) dispatch(ctx context.Context) {
	for len(p.ready) > 0 && p.flying < batchesMax {
		n := min(len(p.ready), batchDocs)
		batch := slices.Clone(p.ready[:n])
		p.ready = p.ready[n:]
		if len(p.ready) == 0 {
			p.ready = nil
		}
		p.flying++
		go func() { p.results <- p.r.runBatch(ctx, batch) }()
	}
}

func (p *pipeline) settle(rs []result) {
	store := p.r.KV.Bucket()
	defer func() { metrics.OutboxPending.WithLabelValues(store).Set(float64(len(p.open) + len(p.st.parked))) }()
	for _, res := range rs {
		j := res.j
		switch res.out {
		case outAbandon:
			// Its revision stays open, so the checkpoint stays below it.
		case outDone:
			if n := len(j.view.Outbox); n > 0 {
				metrics.OutboxRelayed.WithLabelValues(store).Add(float64(n))
				if !j.written.IsZero() {
					metrics.RelayLag.WithLabelValues(store).Observe(time.Since(j.written).Seconds())
				}
			}
			p.done(j)
			delete(p.st.parked, j.key)
		case outRetry:
			now := time.Now()
			if j.failedSince.IsZero() {
				j.failedSince, j.wait = now, 50*time.Millisecond
			}
			if now.Sub(j.failedSince) >= cmp.Or(p.r.ParkAfter, DefaultParkAfter) {
				level := slog.LevelError
				if natsx.IsTransient(res.err) {
					// The stream is out of reach (a node down, a leader election), not refusing
					// this message: every document waits alike and goes out when it is back.
					level = slog.LevelWarn
				}
				p.r.Log.Log(context.Background(), level, "relay: document parked; its events wait, the others go on", "key", j.key, "err", res.err)
				if !j.parked {
					delete(p.open, j.rev)
				}
				if next := p.busy[j.key]; next != nil {
					delete(p.open, next.rev) // the parked-document retry reads the latest value
				}
				delete(p.busy, j.key)
				p.st.parked[j.key] = true
				continue
			}
			p.r.Log.Warn("relay: publish failed, retrying", "key", j.key, "err", res.err, "in", j.wait)
			j.due = now.Add(j.wait)
			j.wait = min(j.wait*2, time.Second)
			p.retry = append(p.retry, j)
		}
	}
}

// done retires j and starts the newer revision of its document, if one is waiting.
func (p *pipeline) done(j *job) {
	if !j.parked {
		delete(p.open, j.rev)
	}
	if next := p.busy[j.key]; next != nil {
		p.busy[j.key] = nil
		p.ready = append(p.ready, next)
		return
	}
	delete(p.busy, j.key)
}

func (p *pipeline) dueRetries() {
	now := time.Now()
	p.retry = slices.DeleteFunc(p.retry, func(j *job) bool {
		if now.Before(j.due) {
			return false
		}
		if next := p.busy[j.key]; next != nil {
			// A newer revision holds these events and maybe more: send that one instead.
			if !j.parked {
				delete(p.open, j.rev)
			}
			next.failedSince, next.wait = j.failedSince, j.wait
			p.busy[j.key] = nil
			p.ready = append(p.ready, next)
			return true
		}
		p.ready = append(p.ready, j)
		return true
	})
}

func (p *pipeline) retryParked(ctx context.Context) {
	for key := range p.st.parked {
		if _, isBusy := p.busy[key]; isBusy {
			continue
		}
		e, err := p.r.KV.Get(ctx, key)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
				delete(p.st.parked, key)
			}
			continue
		}
		v, err := decodePending(e.Value())
		if err != nil || (len(v.Outbox) == 0 && !v.Purge) {
			delete(p.st.parked, key)
			continue
		}
		p.busy[key] = nil
		p.ready = append(p.ready, &job{key: key, rev: e.Revision(), value: e.Value(), view: v, parked: true})
	}
}

// runBatch publishes the events of every job, the i-th event of each document in round i so
// that a failed event never has a later one of its document published before it, then purges
// the published documents marked for it, concurrently.
func (r *Relay) runBatch(ctx context.Context, batch []*job) []result {
	failed := make([]error, len(batch))
	type pending struct {
		i int
		f jetstream.PubAckFuture
	}
	var futs []pending
	for round := 0; ; round++ {
		futs = futs[:0]
		for i, j := range batch {
			if failed[i] != nil || round >= len(j.view.Outbox) {
				continue
			}
			m := j.view.Outbox[round]
			msg := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
			msg.Header.Set("Content-Type", "application/cloudevents+json")
			f, err := r.JS.PublishMsgAsync(msg, jetstream.WithMsgID(m.ID), jetstream.WithRetryAttempts(0))
			if err != nil {
				failed[i] = fmt.Errorf("publish %s (%s): %w", m.ID, m.Subject, err)
				continue
			}
			futs = append(futs, pending{i, f})
		}
		if len(futs) == 0 {
			break
		}
		timeout := time.NewTimer(ackTimeout)
		for _, pf := range futs {
			m := batch[pf.i].view.Outbox[round]
			select {
			case <-pf.f.Ok():
			case err := <-pf.f.Err():
				failed[pf.i] = fmt.Errorf("publish %s (%s): %w", m.ID, m.Subject, err)
			case <-timeout.C:
				timeout.Reset(0)
				failed[pf.i] = fmt.Errorf("publish %s (%s): no ack within %v: %w", m.ID, m.Subject, ackTimeout, context.DeadlineExceeded)
			case <-ctx.Done():
				failed[pf.i] = ctx.Err()
			}
		}
		timeout.Stop()
	}
	out := make([]result, len(batch))
	sem := make(chan struct{}, purgesPerLoad)
	var wg sync.WaitGroup
	for i, j := range batch {
		out[i].j = j
		switch {
		case ctx.Err() != nil:
			out[i].out = outAbandon
		case failed[i] != nil:
			out[i].out, out[i].err = outRetry, failed[i]
		case !j.view.Purge:
			out[i].out = outDone
		default:
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				out[i].out, out[i].err = r.purge(ctx, j)
			})
		}
	}
	wg.Wait()
	return out
}

// purge deletes the document of j, marked for purge and published, by compare-and-set on the
// revision the watch delivered. Losing the race is done: the newer revision is on its way
// through the watch.
func (r *Relay) purge(ctx context.Context, j *job) (outcome, error) {
	err := r.KV.Purge(ctx, j.key, jetstream.LastRevision(j.rev))
	switch {
	case err == nil, errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
		return outDone, nil
	case ctx.Err() != nil:
		return outAbandon, nil
	default:
		return outRetry, fmt.Errorf("purge: %w", err)
	}
}
