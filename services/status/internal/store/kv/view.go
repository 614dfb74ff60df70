package kv

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/nats-io/nats.go/jetstream"
)

// View is a replica-local, bounded view of recent status objects (enrollments and sign-ins) in
// front of a Store: it answers Get from memory where that is safe and falls back to the bucket
// otherwise. It implements enrollment.Store, and SignIns is its signin.Store, so both state
// machines run on it unchanged.
//
// It is kept current by the watch of the status documents that this replica's outbox relay
// runs (the view is its kvdoc.Tap; a (re)started watch begins at the relay's checkpoint, not
// with the whole bucket) and by this replica's own reads and writes, which it records
// synchronously, so a write made here is visible to the next read here at once
// (read-your-writes). Another replica's write becomes visible here when the watch delivers it.
//
// Rules that keep it correct:
//   - An entry only ever moves forward: a newer write sequence, or the same sequence at a newer
//     revision. An older value, from a late watch message or a slow store read, is ignored.
//   - Memory answers only while a watch is running and was started before the value was read;
//     when the watch ends the view is emptied and every Get reads the bucket until a new watch
//     runs. A value read from the bucket before the current watch started is not recorded.
//   - Memory answers only while the watch is known to be current. To know it, the view writes a
//     marker key of its own into the bucket and waits for its watch to deliver it: the stream
//     is ordered, so every write made before the marker has then been applied. While polls are
//     served it does so at most every MaxLag/4 (an idle view writes nothing), and answers from
//     memory only within MaxLag of the last confirmation. A watch that stalls without ending
//     (its NATS node or the bucket's leader died, and the ordered consumer has not noticed yet)
//     stops confirming, and Gets read the bucket until it recovers, instead of serving a peer's
//     old state for seconds. The marker costs one small write, whatever the bucket holds.
//   - A write that loses compare-and-set drops the entry, so the retry reads the bucket.
//   - Unknown ids, evicted and expired entries read the bucket, which answers not-found as
//     before.
//
// Memory is bounded: terminal enrollments are dropped KeepTerminal after they ended, open ones
// once past their expiry (the bucket read then expires them), and at most Cap entries are held.
type View struct {
	store *Store
	// Cap bounds the entries held; 0 means DefaultViewCap.
	Cap int
	// KeepTerminal is how long a terminal enrollment stays; 0 means DefaultKeepTerminal.
	KeepTerminal time.Duration
	// Now is the clock for expiry and eviction; nil means time.Now.
	Now func() time.Time
	// MaxLag bounds how stale an answer from memory may be; 0 means DefaultMaxLag.
	MaxLag time.Duration
	// pause, in tests, holds the watch's deliveries back (a stalled watch).
	pause atomic.Bool

	mu      sync.RWMutex
	gen     uint64 // changes whenever the watch starts or ends
	synced  bool   // a watch is running
	entries map[string]viewEntry
	// writing holds the ids this replica is writing now. The watch does not decode their
	// values (the writer records its own value when its write returns, and the watch often
	// delivers it first); it notes the newest revision it passed over, so that a writer whose
	// value is not the newest drops the entry instead of recording an old one.
	writing map[string]*ownWrite

	// marker is this view's own key in the bucket (see the freshness rule above).
	marker string
	// applied is the newest revision the watch has delivered.
	applied atomic.Uint64
	// confirmed is the wall time (unix ns) before which every document write is applied.
	confirmed atomic.Int64
	// probe is the marker write in flight: once applied reaches seq, confirmed is at.
	probe atomic.Pointer[freshnessProbe]
	// kick asks the prober for a confirmation; confirmedNow says one was made.
	kick, confirmedNow chan struct{}

	hits, misses atomic.Uint64
}

type freshnessProbe struct {
	seq uint64
	at  int64
}

// viewEntry holds one status object: an enrollment, or a sign-in when signIn is set.
type viewEntry struct {
	e      enrollment.Enrollment
	a      signin.Authentication
	signIn bool
	// endedAt is when this replica first saw the object terminal (zero while open).
	endedAt time.Time
}

func enrollmentEntry(e enrollment.Enrollment) viewEntry { return viewEntry{e: e} }
func signInEntry(a signin.Authentication) viewEntry     { return viewEntry{a: a, signIn: true} }

func (ent viewEntry) id() string {
	if ent.signIn {
		return ent.a.ID
	}
	return ent.e.ID
}

// order is the object's write sequence and store revision.
func (ent viewEntry) order() (seq, version uint64) {
	if ent.signIn {
		return ent.a.Seq, ent.a.Version
	}
	return ent.e.Seq, ent.e.Version
}

func (ent viewEntry) terminal() bool {
	if ent.signIn {
		return ent.a.State.Terminal()
	}
	return ent.e.State.Terminal()
}

func (ent viewEntry) dueToExpire(now time.Time) bool {
	if ent.signIn {
		return ent.a.DueToExpire(now)
	}
	return ent.e.DueToExpire(now)
}

// Defaults of View.
const (
	DefaultViewCap      = 100_000
	DefaultKeepTerminal = 2 * time.Minute
	DefaultMaxLag       = time.Second
)

var _ enrollment.Store = (*View)(nil)

// NewView returns a view in front of s. It answers from memory only while Run runs.
func NewView(s *Store) *View {
	return &View{store: s, entries: map[string]viewEntry{}, writing: map[string]*ownWrite{}, marker: MarkerPrefix + uuid.NewString(),
		kick: make(chan struct{}, 1), confirmedNow: make(chan struct{}, 1)}
}

// MarkerPrefix starts the keys the views write to confirm their watch is current. They hold
// nothing; a replica's key stays until the bucket's Retention forgets it.
//
// The keys sit under the documents' "e." (a status id has no dot, so none is a document's key),
// so that a view watches one filter, DocFilter. A watch of two filters (the documents and a
// marker elsewhere) made the server look for each next message by intersecting the filters
// with every subject stored in the stream's last block: a cost per delivered write that grew
// with the bucket's keys (6.5 % of a TOTP sign-in's CPU in BenchmarkSignInTOTP).
const MarkerPrefix = "e._view."

// Store is the store behind the view.
func (v *View) Store() *Store { return v.store }

func (v *View) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *View) capacity() int {
	if v.Cap > 0 {
		return v.Cap
	}
	return DefaultViewCap
}

func (v *View) maxLag() time.Duration {
	if v.MaxLag > 0 {
		return v.MaxLag
	}
	return DefaultMaxLag
}

func (v *View) keepTerminal() time.Duration {
	if v.KeepTerminal > 0 {
		return v.KeepTerminal
	}
	return DefaultKeepTerminal
}

// Run keeps the view's freshness prober and pruning going until ctx ends; ready, if not nil, is
// closed once memory may answer (the first confirmation). The values themselves come from the
// watch of the bucket's outbox relay, which the view follows as its kvdoc.Tap (Relay.Tap): one
// consumer delivers each write to both, where a watch of the view's own had the server deliver
// every write twice.
func (v *View) Run(ctx context.Context, ready chan<- struct{}) {
	prune := time.NewTicker(min(max(v.keepTerminal()/4, 100*time.Millisecond), 10*time.Second))
	defer prune.Stop()
	go v.probeFreshness(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			v.Prune()
		case <-v.confirmedNow:
			if ready != nil && v.current() {
				close(ready)
				ready = nil
			}
		}
	}
}

var _ kvdoc.Tap = (*View)(nil)

// WatchStarted implements kvdoc.Tap: the relay's consumer exists now, so every write after
// this point reaches the view, and a bucket read that starts after this point is at least as
// new as the watch's starting point. Memory answers once a marker write confirms the watch
// current.
func (v *View) WatchStarted() {
	v.reset(true)
	// A confirmation counts only for this watch: one it has not delivered the marker of yet
	// (a probe in flight from before) confirms nothing until it does.
	v.applied.Store(0)
	v.probe.Store(nil)
	v.confirmed.Store(0)
	v.wantConfirmation()
}

// Watched implements kvdoc.Tap: one watched value of a status document, or a view's marker.
func (v *View) Watched(entry jetstream.KeyValueEntry) {
	for v.pause.Load() {
		time.Sleep(time.Millisecond) // tests only: a stalled watch
	}
	if !strings.HasPrefix(entry.Key(), MarkerPrefix) { // this view's marker or a peer's
		v.apply(entry)
	}
	v.advance(entry.Revision())
}

// WatchEnded implements kvdoc.Tap: the view empties and reads the bucket until a watch runs.
func (v *View) WatchEnded() { v.reset(false) }

// wantConfirmation asks the prober for a fresh confirmation, without waiting.
func (v *View) wantConfirmation() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// probeFreshness writes the view's marker when a confirmation is wanted, at most every
// MaxLag/4; the watch confirms the view current as of the write once it delivers the marker.
func (v *View) probeFreshness(ctx context.Context) {
	every := v.maxLag() / 4
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.kick:
		}
		if wait := every - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		at := last.UnixNano()
		qctx, cancel := context.WithTimeout(ctx, v.maxLag())
		seq, err := v.store.kv.Put(qctx, v.marker, nil)
		cancel()
		if err != nil {
			continue // no confirmation: memory stops answering once MaxLag has passed
		}
		p := &freshnessProbe{seq: seq, at: at}
		v.probe.Store(p)
		if v.applied.Load() >= seq && v.probe.CompareAndSwap(p, nil) {
			v.confirm(at)
		}
	}
}

// advance records that the watch delivered revision rev.
func (v *View) advance(rev uint64) {
	if rev > v.applied.Load() {
		v.applied.Store(rev) // only the watch goroutine writes it
	}
	if p := v.probe.Load(); p != nil && rev >= p.seq && v.probe.CompareAndSwap(p, nil) {
		v.confirm(p.at)
	}
}

func (v *View) confirm(at int64) {
	for {
		cur := v.confirmed.Load()
		if at <= cur || v.confirmed.CompareAndSwap(cur, at) {
			break
		}
	}
	select {
	case v.confirmedNow <- struct{}{}:
	default:
	}
}

// current reports whether the view is confirmed current within MaxLag; past a quarter of it
// a new confirmation is asked for, so a view that is being read stays confirmed.
func (v *View) current() bool {
	age := time.Now().UnixNano() - v.confirmed.Load()
	if age > int64(v.maxLag()/4) {
		v.wantConfirmation()
	}
	return age <= int64(v.maxLag())
}

// reset empties the view and starts a new generation: values read before it are not recorded.
func (v *View) reset(synced bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	v.synced = synced
	clear(v.entries)
}

// apply records one watched change.
func (v *View) apply(entry jetstream.KeyValueEntry) {
	id := entry.Key()[len("e."):]
	if entry.Operation() != jetstream.KeyValuePut {
		v.drop(id)
		return
	}
	// This replica's own writes are recorded by their writers: skip decoding a value the view
	// already holds (the writer was first) or one a writer of this replica is about to record
	// (the watch was first).
	v.mu.RLock()
	cur, ok := v.entries[id]
	w := v.writing[id]
	v.mu.RUnlock()
	if _, version := cur.order(); ok && version >= entry.Revision() {
		return
	}
	if w != nil && v.passOver(id, entry.Revision()) {
		return
	}
	ent, ok := decodeEntry(entry.Value(), entry.Revision())
	if !ok || ent.id() != id {
		v.drop(id)
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.putLocked(ent)
}

// decodeEntry decodes a watched document as the aggregate its kind names.
func decodeEntry(value []byte, rev uint64) (viewEntry, bool) {
	var rec struct {
		Doc   json.RawMessage `json:"doc"`
		Purge bool            `json:"purge"`
	}
	var kind struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(value, &rec) != nil || rec.Purge || json.Unmarshal(rec.Doc, &kind) != nil {
		return viewEntry{}, false
	}
	if kind.Kind == kindSignIn {
		var d signInDoc
		if json.Unmarshal(rec.Doc, &d) != nil {
			return viewEntry{}, false
		}
		return signInEntry(toSignIn(d, rev)), true
	}
	if kind.Kind != "" {
		return viewEntry{}, false // a kind this version does not know
	}
	var d enrollmentDoc
	if json.Unmarshal(rec.Doc, &d) != nil {
		return viewEntry{}, false
	}
	return enrollmentEntry(toEnrollment(d, rev)), true
}

// Observe records e as the watch would; it is exported for tests that feed the view directly.
func (v *View) Observe(e enrollment.Enrollment) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.synced {
		v.putLocked(enrollmentEntry(e))
	}
}

// token is taken before a bucket read or write; record then keeps the result only if the same
// watch is still running.
func (v *View) token() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if !v.synced {
		return 0
	}
	return v.gen
}

func (v *View) record(tok uint64, ent viewEntry) {
	if tok == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.synced && v.gen == tok {
		v.putLocked(ent)
	}
}

// ownWrite is one id's writes in flight on this replica (View.writing).
type ownWrite struct {
	writers int
	// passed is the newest revision of the id the watch delivered meanwhile, undecoded.
	passed uint64
}

// writeStarts registers a write of id about to be made by this replica.
func (v *View) writeStarts(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	w := v.writing[id]
	if w == nil {
		w = &ownWrite{}
		v.writing[id] = w
	}
	w.writers++
}

// passOver notes a watched revision of id that a writer of this replica will account for; false
// if the write has ended meanwhile (the value is then applied as any other).
func (v *View) passOver(id string, rev uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	w := v.writing[id]
	if w == nil {
		return false
	}
	w.passed = max(w.passed, rev)
	return true
}

// writeEnds records the outcome of a write of id registered with writeStarts: ent is the value
// written (ok), else the write failed. The value is recorded under tok's rules (see record)
// unless the watch passed over a newer revision of id meanwhile, or the write failed after the
// watch passed over a value (a write whose answer was lost may have been made): then the entry
// is dropped and the next Get reads the bucket.
func (v *View) writeEnds(tok uint64, id string, ent viewEntry, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	w := v.writing[id]
	passed := uint64(0)
	if w != nil {
		passed = w.passed
		if w.writers--; w.writers <= 0 {
			delete(v.writing, id)
		}
	}
	_, version := ent.order()
	switch {
	case !ok && passed > 0, ok && passed > version:
		delete(v.entries, id)
	case ok && tok != 0 && v.synced && v.gen == tok:
		v.putLocked(ent)
	}
}

// newer reports whether a is a later version of the status object than b (of another kind, it
// is a new object under a reused id: newer too).
func newer(a, b viewEntry) bool {
	if a.signIn != b.signIn {
		return true
	}
	aseq, aver := a.order()
	bseq, bver := b.order()
	return aseq > bseq || aseq == bseq && aver > bver
}

func (v *View) putLocked(ent viewEntry) {
	id := ent.id()
	cur, ok := v.entries[id]
	if ok && !newer(ent, cur) {
		return
	}
	now := v.now()
	if ent.dueToExpire(now) {
		delete(v.entries, id) // the bucket read expires it
		return
	}
	ent.endedAt = time.Time{}
	if ent.terminal() {
		ent.endedAt = now
		if ok && !cur.endedAt.IsZero() {
			ent.endedAt = cur.endedAt
		}
	}
	if !ok && len(v.entries) >= v.capacity() {
		v.evictOneLocked()
	}
	v.entries[id] = ent
}

// evictOneLocked drops one entry, a terminal one if one of the first few looked at is.
func (v *View) evictOneLocked() {
	victim, n := "", 0
	for id, ent := range v.entries { // map order is randomised
		if victim == "" || !ent.endedAt.IsZero() {
			victim = id
		}
		if n++; !ent.endedAt.IsZero() || n >= 8 {
			break
		}
	}
	delete(v.entries, victim)
}

func (v *View) drop(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.entries, id)
}

// Prune drops terminal entries older than KeepTerminal and open ones past their expiry.
func (v *View) Prune() {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, ent := range v.entries {
		if ent.dueToExpire(now) || !ent.endedAt.IsZero() && now.Sub(ent.endedAt) >= v.keepTerminal() {
			delete(v.entries, id)
		}
	}
}

// Len is the number of entries held.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.entries)
}

// Stats returns how many Gets were answered from memory and how many read the bucket.
func (v *View) Stats() (hits, misses uint64) { return v.hits.Load(), v.misses.Load() }

// lookup returns the held entry for id if the view may answer with it.
func (v *View) lookup(id string) (viewEntry, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if !v.synced || !v.current() {
		return viewEntry{}, false
	}
	ent, ok := v.entries[id]
	return ent, ok
}

// Get implements enrollment.Store: from memory when held, from the bucket otherwise. A held
// sign-in is not found, as the bucket would answer.
func (v *View) Get(ctx context.Context, id string) (enrollment.Enrollment, error) {
	if ent, ok := v.lookup(id); ok {
		v.hits.Add(1)
		if ent.signIn {
			return enrollment.Enrollment{}, enrollment.ErrNotFound
		}
		return ent.e, nil
	}
	v.misses.Add(1)
	tok := v.token()
	e, err := v.store.Get(ctx, id)
	if err == nil {
		v.record(tok, enrollmentEntry(e))
	}
	return e, err
}

// GetByExchangeID implements enrollment.Store; it always reads the bucket (commands use it,
// not polls) and records what it read.
func (v *View) GetByExchangeID(ctx context.Context, exchangeID string) (enrollment.Enrollment, error) {
	tok := v.token()
	e, err := v.store.GetByExchangeID(ctx, exchangeID)
	if err == nil {
		v.record(tok, enrollmentEntry(e))
	}
	return e, err
}

// Create implements enrollment.Store and records the created enrollment.
func (v *View) Create(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	tok := v.token()
	v.writeStarts(e.ID)
	created, err := v.store.Create(ctx, e, msgs...)
	v.writeEnds(tok, e.ID, enrollmentEntry(created), err == nil)
	return created, err
}

// Update implements enrollment.Store. A successful write is recorded before Update returns
// (read-your-writes); a lost compare-and-set drops the entry, so the retry reads the bucket.
func (v *View) Update(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	tok := v.token()
	v.writeStarts(e.ID)
	written, err := v.store.Update(ctx, e, msgs...)
	v.writeEnds(tok, e.ID, enrollmentEntry(written), err == nil)
	if errors.Is(err, enrollment.ErrStale) || errors.Is(err, enrollment.ErrNotFound) {
		v.drop(e.ID)
	}
	return written, err
}

// DueForExpiry implements enrollment.Store; it reads the bucket.
func (v *View) DueForExpiry(ctx context.Context, now time.Time) ([]enrollment.Enrollment, error) {
	return v.store.DueForExpiry(ctx, now)
}

// SignIns is the view as a signin.Store: the same memory, the same rules.
func (v *View) SignIns() *SignInView { return &SignInView{v: v} }

// SignInView implements signin.Store on a View (View.SignIns).
type SignInView struct{ v *View }

var _ signin.Store = (*SignInView)(nil)

// Get implements signin.Store: from memory when held, from the bucket otherwise. A held
// enrollment is not found, as the bucket would answer.
func (sv *SignInView) Get(ctx context.Context, id string) (signin.Authentication, error) {
	v := sv.v
	if ent, ok := v.lookup(id); ok {
		v.hits.Add(1)
		if !ent.signIn {
			return signin.Authentication{}, signin.ErrNotFound
		}
		return ent.a, nil
	}
	v.misses.Add(1)
	tok := v.token()
	a, err := v.store.signIns.Get(ctx, id)
	if err == nil {
		v.record(tok, signInEntry(a))
	}
	return a, err
}

// GetByExchangeID implements signin.Store. A sign-in named after its exchange id (every unkeyed
// one) is answered from memory when held and it keeps no challenge; otherwise the bucket is
// read and what it read recorded.
//
// A code's verification (the caller) reads the sign-in, has the registry check the code and
// writes the outcome with compare-and-set, so an answer from memory that a peer's write made old
// (at most MaxLag) fails that write and is read again: it ends as the bucket read would have,
// as in any race of a verification with a cancel. A sign-in with a challenge (EMAIL and SMS
// codes, passkeys) is read from the bucket, since a challenge a peer replaced (a resend) would
// refuse the user's new code.
func (sv *SignInView) GetByExchangeID(ctx context.Context, exchangeID string) (signin.Authentication, error) {
	if validID(exchangeID) {
		if ent, ok := sv.v.lookup(ids.StatusIDFor(exchangeID)); ok && ent.signIn && ent.a.ExchangeID == exchangeID && len(ent.a.Challenge) == 0 {
			sv.v.hits.Add(1)
			return ent.a, nil
		}
	}
	tok := sv.v.token()
	a, err := sv.v.store.signIns.GetByExchangeID(ctx, exchangeID)
	if err == nil {
		sv.v.record(tok, signInEntry(a))
	}
	return a, err
}

// Create implements signin.Store and records the created sign-in.
func (sv *SignInView) Create(ctx context.Context, a signin.Authentication, msgs ...outbox.Message) (signin.Authentication, error) {
	tok := sv.v.token()
	sv.v.writeStarts(a.ID)
	created, err := sv.v.store.signIns.Create(ctx, a, msgs...)
	sv.v.writeEnds(tok, a.ID, signInEntry(created), err == nil)
	return created, err
}

// Update implements signin.Store, with View.Update's rules.
func (sv *SignInView) Update(ctx context.Context, a signin.Authentication, msgs ...outbox.Message) (signin.Authentication, error) {
	tok := sv.v.token()
	sv.v.writeStarts(a.ID)
	written, err := sv.v.store.signIns.Update(ctx, a, msgs...)
	sv.v.writeEnds(tok, a.ID, signInEntry(written), err == nil)
	if errors.Is(err, signin.ErrStale) || errors.Is(err, signin.ErrNotFound) {
		sv.v.drop(a.ID)
	}
	return written, err
}

// DueForExpiry implements signin.Store; it reads the bucket.
func (sv *SignInView) DueForExpiry(ctx context.Context, now time.Time) ([]signin.Authentication, error) {
	return sv.v.store.signIns.DueForExpiry(ctx, now)
}
