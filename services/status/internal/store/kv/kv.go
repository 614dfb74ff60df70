// Package kv is the JetStream key-value backend of the status stores, the embedded default:
// Store keeps enrollments (enrollment.Store), SignIns the sign-ins (signin.Store), in one
// bucket, since both are status objects the status routes find by status id.
//
// Keys in the bucket:
//
//	e.<status_id>              the enrollment or sign-in document (with its outbox, see
//	                           pkg/kvdoc); a sign-in's has "kind": "authentication", an
//	                           enrollment's no kind (enrollment.go, signin.go)
//	x.<exchange_id>            → status_id, so an exchange id finds its status object; not
//	                           written when status_id is ids.StatusIDFor(exchange_id) (what
//	                           initiation and sign-in initiation send), since the key then
//	                           follows from the exchange id
//	o.<unix_expiry>.<status_id> an index of open status objects of both kinds, so the expiry
//	                           sweeps list keys instead of reading every document ever made
//	p.<sha256(sub)>            a user's push ledger (push.go)
package kv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the bucket name when none is configured.
const DefaultBucket = "mfa_enrollments"

// Retention is how long a status object is kept after its last write. Enrollments and sign-ins
// are short-lived (MFA_ENROLLMENT_TTL is at most 24h) and their facts are on the event stream,
// so the bucket forgets them after a week instead of growing forever.
const Retention = 7 * 24 * time.Hour

// DocFilter matches the status documents of both kinds, for the outbox relay.
const DocFilter = "e.>"

// Store implements enrollment.Store on a KV bucket; SignIns is the sign-in store on the same
// bucket.
type Store struct {
	kv      jetstream.KeyValue
	docs    *kvdoc.Store[enrollmentDoc]
	signIns *SignInStore
	// sweep is the enrollments' cursor over the open index (each kind has its own).
	sweep sweepCursor
}

// sweepCursor remembers how far one kind's DueForExpiry has listed the open index.
type sweepCursor struct {
	// sweptThrough is the last expiry second whose index entries DueForExpiry has listed; 0
	// until the first, full listing. Later calls list only the seconds since, because a listing
	// of all of o.> walks the delete marker of every index entry of the last week.
	mu           sync.Mutex
	sweptThrough int64
}

// sweepOverlap seconds are listed again on every sweep, so a status object indexed by a replica
// whose clock is a little behind ours is still found.
const sweepOverlap = 2

// maxIncrementalSeconds bounds the seconds listed one by one; after a longer pause (a stopped
// process, a suspended machine) one full listing is cheaper.
const maxIncrementalSeconds = 120

// Open ensures the bucket exists (see natsx.EnsureKV for opts) and returns a store on it.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, opts ...natsx.EnsureOption) (*Store, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	kv, err := natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "mfaflow enrollments and sign-ins (status service)",
		History:     1,
		TTL:         Retention,
		Storage:     jetstream.FileStorage,
	}, opts...)
	if err != nil {
		return nil, err
	}
	s := &Store{kv: kv, docs: kvdoc.New[enrollmentDoc](kv)}
	s.signIns = &SignInStore{s: s, docs: kvdoc.New[signInDoc](kv)}
	return s, nil
}

// SignIns is the sign-in store on the same bucket.
func (s *Store) SignIns() *SignInStore { return s.signIns }

// FollowRelay has every write drop the events that relayed (kvdoc.Relay.Relayed of this
// process's relay on DocFilter) reports published; see kvdoc.Store.Relayed. Call it before the
// store is used.
func (s *Store) FollowRelay(relayed func(key string, rev uint64) bool) {
	s.docs.Relayed = relayed
	s.signIns.docs.Relayed = relayed
}

// KV is the underlying bucket (the relay watches it).
func (s *Store) KV() jetstream.KeyValue { return s.kv }

func docKey(id string) string      { return "e." + id }
func exchangeKey(id string) string { return "x." + id }
func openKey(id string, expiresAt time.Time) string {
	return "o." + strconv.FormatInt(expiresAt.Unix(), 10) + "." + id
}

// validID keeps ids to characters that are safe as KV key tokens.
func validID(id string) bool { return ids.Valid(id) }

// Errors of the shared steps, which each kind's store translates into its domain's.
var (
	errTaken = errors.New("taken")
	errStale = errors.New("stale")
	errGone  = errors.New("not found")
)

// create stores a new status object of either kind: it claims the exchange id, writes the
// document (write, create-if-absent) and indexes it as open. An object named after its exchange
// id needs no exchange index: a second one with the exchange id would have the same status id,
// which the document's create refuses. Otherwise (a keyed sign-in, or an id from an older
// initiation) the exchange index claims the exchange id, and an object named after it must not
// hold it already. The reverse order (an indexed object first, then one named after the same
// exchange id) is not checked, to keep the common create at two writes: exchange ids are random
// UUIDs, so only a caller that reuses one could meet it. errTaken when the id or exchange id is.
func (s *Store) create(ctx context.Context, id, exchangeID string, expiresAt time.Time, write func() (uint64, error)) (uint64, error) {
	if derived := ids.StatusIDFor(exchangeID); id != derived {
		if _, err := s.kv.Create(ctx, exchangeKey(exchangeID), []byte(id)); err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, err
			}
			// An index entry naming this very id is a create of it that died before its
			// document (a keyed retry whose first attempt was killed in between): go on.
			if entry, gerr := s.kv.Get(ctx, exchangeKey(exchangeID)); gerr != nil || string(entry.Value()) != id {
				return 0, fmt.Errorf("%w: exchange id taken", errTaken)
			}
		}
		if _, _, err := s.docs.Get(ctx, docKey(derived)); !errors.Is(err, kvdoc.ErrNotFound) {
			_ = s.kv.Delete(ctx, exchangeKey(exchangeID))
			if err == nil {
				return 0, fmt.Errorf("%w: exchange id taken", errTaken)
			}
			return 0, err
		}
	}
	// The open index entry is written beside the document, not after it: one round trip of
	// the create's latency fewer. An entry whose document's create fails (a taken id) is a
	// leftover the sweep drops, as it drops every entry without an open document.
	indexed := make(chan error, 1)
	go func() {
		_, err := s.kv.Put(ctx, openKey(id, expiresAt), nil)
		indexed <- err
	}()
	rev, err := write()
	ierr := <-indexed
	if err != nil {
		if errors.Is(err, kvdoc.ErrExists) {
			return 0, fmt.Errorf("%w: id taken", errTaken)
		}
		return 0, err
	}
	if ierr != nil {
		return rev, fmt.Errorf("index: %w", ierr)
	}
	return rev, nil
}

// updated translates a document update's error and drops the open index entry of an object
// that became terminal.
func (s *Store) updated(ctx context.Context, id string, expiresAt time.Time, terminal bool, err error) error {
	switch {
	case errors.Is(err, kvdoc.ErrStale):
		return errStale
	case errors.Is(err, kvdoc.ErrNotFound):
		return errGone
	case err != nil:
		return err
	}
	if terminal {
		// Best effort, so not waited for (one round trip of the ending write's latency): a
		// leftover index entry is dropped by the next DueForExpiry.
		go func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), indexDropTimeout)
			defer cancel()
			_ = s.kv.Delete(dctx, openKey(id, expiresAt))
		}()
	}
	return nil
}

// indexDropTimeout bounds the background delete of an ended object's open index entry.
const indexDropTimeout = 5 * time.Second

// indexedExchange returns the status id the exchange index names for exchangeID (errGone
// without an entry).
func (s *Store) indexedExchange(ctx context.Context, exchangeID string) (string, error) {
	entry, err := s.kv.Get(ctx, exchangeKey(exchangeID))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return "", errGone
		}
		return "", err
	}
	return string(entry.Value()), nil
}

// dueEntry is an open index entry whose expiry second has come.
type dueEntry struct{ key, id string }

// due lists the open index entries of both kinds that are due at now, listing only the seconds
// since cursor's last call after one full listing, so its cost does not grow with stored
// history and an idle service walks no delete markers of finished objects. The caller holds
// cursor.mu and advances it after handling the entries.
func (s *Store) due(ctx context.Context, now time.Time, cursor *sweepCursor) ([]dueEntry, error) {
	nowSec := now.Unix()
	var filters []string
	if cursor.sweptThrough == 0 || nowSec-cursor.sweptThrough > maxIncrementalSeconds {
		filters = []string{"o.>"}
	} else {
		for sec := cursor.sweptThrough - sweepOverlap + 1; sec <= nowSec; sec++ {
			filters = append(filters, "o."+strconv.FormatInt(sec, 10)+".>")
		}
	}
	// One listing (one ephemeral consumer) for all the seconds: an idle replica's sweep costs
	// one consumer a second, not one per second listed.
	keys, err := s.listKeys(ctx, filters...)
	if err != nil {
		return nil, err
	}
	var out []dueEntry
	for _, key := range keys {
		parts := strings.SplitN(key, ".", 3)
		if len(parts) != 3 {
			continue
		}
		unix, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || unix > nowSec {
			continue
		}
		out = append(out, dueEntry{key: key, id: parts[2]})
	}
	return out, nil
}

// listKeys lists the keys matching filter; none is not an error.
func (s *Store) listKeys(ctx context.Context, filters ...string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, filters...)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list open status objects: %w", err)
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	return keys, nil
}
