// Package kv is the JetStream key-value backend of the enrollment store, the embedded default.
//
// Keys in the bucket:
//
//	e.<status_id>              the enrollment document (with its outbox, see pkg/kvdoc)
//	x.<exchange_id>            → status_id, so the companion can find an enrollment by exchange id;
//	                           not written when status_id is ids.StatusIDFor(exchange_id)
//	                           (what initiation sends), since the key then follows from the
//	                           exchange id
//	o.<unix_expiry>.<status_id> an index of open enrollments, so the expiry sweep lists keys
//	                           instead of reading every enrollment ever made
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
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the bucket name when none is configured.
const DefaultBucket = "mfa_enrollments"

// Retention is how long an enrollment is kept after its last write. Enrollments are short-lived
// (MFA_ENROLLMENT_TTL is at most 24h) and their facts are on the event stream, so the bucket
// forgets them after a week instead of growing forever.
const Retention = 7 * 24 * time.Hour

// DocFilter matches the enrollment documents, for the outbox relay.
const DocFilter = "e.>"

// Store implements enrollment.Store on a KV bucket.
type Store struct {
	kv   jetstream.KeyValue
	docs *kvdoc.Store[doc]

	// sweptThrough is the last expiry second whose index entries DueForExpiry has listed; 0
	// until the first, full listing. Later calls list only the seconds since, because a listing
	// of all of o.> walks the delete marker of every index entry of the last week.
	sweepMu      sync.Mutex
	sweptThrough int64
}

// sweepOverlap seconds are listed again on every sweep, so an enrollment indexed by a replica
// whose clock is a little behind ours is still found.
const sweepOverlap = 2

// maxIncrementalSeconds bounds the seconds listed one by one; after a longer pause (a stopped
// process, a suspended machine) one full listing is cheaper.
const maxIncrementalSeconds = 120

var _ enrollment.Store = (*Store)(nil)

// Open ensures the bucket exists (see natsx.EnsureKV for opts) and returns a store on it.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, opts ...natsx.EnsureOption) (*Store, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	kv, err := natsx.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "mfaflow enrollments (status service)",
		History:     1,
		TTL:         Retention,
		Storage:     jetstream.FileStorage,
	}, opts...)
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv, docs: kvdoc.New[doc](kv)}, nil
}

// FollowRelay has every write drop the events that relayed (kvdoc.Relay.Relayed of this
// process's relay on DocFilter) reports published; see kvdoc.Store.Relayed. Call it before the
// store is used.
func (s *Store) FollowRelay(relayed func(key string, rev uint64) bool) { s.docs.Relayed = relayed }

// KV is the underlying bucket (the relay watches it).
func (s *Store) KV() jetstream.KeyValue { return s.kv }

// doc is the stored model; field names are the storage contract.
type doc struct {
	ID             string    `json:"id"`
	ExchangeID     string    `json:"exchange_id"`
	Sub            string    `json:"sub"`
	Method         string    `json:"method"`
	State          string    `json:"state"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	DeviceID       string    `json:"device_id,omitempty"`
	DeviceName     string    `json:"device_name,omitempty"`
	DevicePlatform string    `json:"device_platform,omitempty"`
	RegisteredID   string    `json:"registered_device_id,omitempty"`
	PHID           string    `json:"ph_id,omitempty"`
	FailedAttempts int       `json:"failed_attempts,omitempty"`
	Seq            uint64    `json:"seq,omitempty"`
	// Authentications only.
	Kind      string            `json:"kind,omitempty"`
	Initiator string            `json:"initiator,omitempty"`
	ClientID  string            `json:"client_id,omitempty"`
	Context   map[string]string `json:"context,omitempty"`
	AuthTime  time.Time         `json:"auth_time,omitzero"`
	// StepUpUsedAt: the authentication's mfa_token was spent as a step-up proof.
	StepUpUsedAt time.Time `json:"step_up_used_at,omitzero"`
	// Push authentications only: the number the frontend shows and the device's candidates.
	Number     string   `json:"number,omitempty"`
	Candidates []string `json:"candidates,omitempty"`
	// PendingCredential is the registry's sealed pending credential (opaque, base64 in JSON)
	// while the enrollment is open.
	PendingCredential []byte `json:"pending_credential,omitempty"`
	// EnrollProof is the keyed hash of the enroll frame that made the enrollment ENROLLED
	// (never the code), so the companion may repeat the frame for a short while.
	EnrollProof []byte `json:"enroll_proof,omitempty"`
}

func toDoc(e enrollment.Enrollment) doc {
	return doc{
		ID: e.ID, ExchangeID: e.ExchangeID, Sub: e.Sub, Method: e.Method, State: string(e.State),
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, ExpiresAt: e.ExpiresAt,
		DeviceID: e.Device.DeviceID, DeviceName: e.Device.Name, DevicePlatform: e.Device.Platform,
		RegisteredID: e.DeviceID, PHID: e.PHID, FailedAttempts: e.FailedAttempts, Seq: e.Seq,
		Kind: string(e.Kind), Initiator: e.Initiator, ClientID: e.ClientID, Context: e.Context, AuthTime: e.AuthTime,
		StepUpUsedAt: e.StepUpUsedAt, Number: e.Number, Candidates: e.Candidates, PendingCredential: e.PendingCredential,
		EnrollProof: e.EnrollProof,
	}
}

func toDomain(d doc, rev uint64) enrollment.Enrollment {
	return enrollment.Enrollment{
		ID: d.ID, ExchangeID: d.ExchangeID, Sub: d.Sub, Method: d.Method, State: enrollment.State(d.State),
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, ExpiresAt: d.ExpiresAt,
		Device:   enrollment.Device{DeviceID: d.DeviceID, Name: d.DeviceName, Platform: d.DevicePlatform},
		DeviceID: d.RegisteredID, PHID: d.PHID, FailedAttempts: d.FailedAttempts, Version: rev, Seq: d.Seq,
		Kind: enrollment.Kind(d.Kind), Initiator: d.Initiator, ClientID: d.ClientID, Context: d.Context, AuthTime: d.AuthTime,
		StepUpUsedAt: d.StepUpUsedAt, Number: d.Number, Candidates: d.Candidates, PendingCredential: d.PendingCredential,
		EnrollProof: d.EnrollProof,
	}
}

func docKey(id string) string      { return "e." + id }
func exchangeKey(id string) string { return "x." + id }
func openKey(e enrollment.Enrollment) string {
	return "o." + strconv.FormatInt(e.ExpiresAt.Unix(), 10) + "." + e.ID
}

// validID keeps ids to characters that are safe as KV key tokens.
func validID(id string) bool { return ids.Valid(id) }

// Create implements enrollment.Store.
func (s *Store) Create(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	if !validID(e.ID) || !validID(e.ExchangeID) {
		return e, fmt.Errorf("create enrollment: %w: malformed id", enrollment.ErrBadRequest)
	}
	// An enrollment named after its exchange id needs no exchange index: a second one with the
	// exchange id would have the same status id, which the document's Create refuses.
	// Otherwise (an id from an older initiation) the exchange index claims the exchange id, and
	// an enrollment named after it must not hold it already. The reverse order (an indexed
	// enrollment first, then one named after the same exchange id) is not checked, to keep the
	// common create at two writes: exchange ids are random UUIDs from initiation, so only a
	// caller that reuses one could meet it.
	if derived := ids.StatusIDFor(e.ExchangeID); e.ID != derived {
		if _, err := s.kv.Create(ctx, exchangeKey(e.ExchangeID), []byte(e.ID)); err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return e, fmt.Errorf("create enrollment: %w", err)
			}
			// An index entry naming this very id is a create of it that died before its
			// document (a keyed retry whose first attempt was killed in between): go on.
			if entry, gerr := s.kv.Get(ctx, exchangeKey(e.ExchangeID)); gerr != nil || string(entry.Value()) != e.ID {
				return e, fmt.Errorf("create enrollment: %w: exchange id taken", enrollment.ErrConflict)
			}
		}
		if _, _, err := s.docs.Get(ctx, docKey(derived)); !errors.Is(err, kvdoc.ErrNotFound) {
			_ = s.kv.Delete(ctx, exchangeKey(e.ExchangeID))
			if err == nil {
				return e, fmt.Errorf("create enrollment: %w: exchange id taken", enrollment.ErrConflict)
			}
			return e, fmt.Errorf("create enrollment: %w", err)
		}
	}
	rev, err := s.docs.Create(ctx, docKey(e.ID), toDoc(e), msgs...)
	if err != nil {
		if errors.Is(err, kvdoc.ErrExists) {
			return e, fmt.Errorf("create enrollment: %w: id taken", enrollment.ErrConflict)
		}
		return e, fmt.Errorf("create enrollment: %w", err)
	}
	e.Version = rev
	if _, err := s.kv.Put(ctx, openKey(e), nil); err != nil {
		return e, fmt.Errorf("create enrollment: index: %w", err)
	}
	return e, nil
}

// Get implements enrollment.Store.
func (s *Store) Get(ctx context.Context, id string) (enrollment.Enrollment, error) {
	if !validID(id) {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	d, rev, err := s.docs.Get(ctx, docKey(id))
	if err != nil {
		if errors.Is(err, kvdoc.ErrNotFound) {
			return enrollment.Enrollment{}, enrollment.ErrNotFound
		}
		return enrollment.Enrollment{}, fmt.Errorf("get enrollment: %w", err)
	}
	return toDomain(d, rev), nil
}

// GetByExchangeID implements enrollment.Store.
func (s *Store) GetByExchangeID(ctx context.Context, exchangeID string) (enrollment.Enrollment, error) {
	if !validID(exchangeID) {
		return enrollment.Enrollment{}, enrollment.ErrNotFound
	}
	e, err := s.Get(ctx, ids.StatusIDFor(exchangeID))
	if err == nil && e.ExchangeID == exchangeID {
		return e, nil
	}
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return enrollment.Enrollment{}, err
	}
	entry, err := s.kv.Get(ctx, exchangeKey(exchangeID))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return enrollment.Enrollment{}, enrollment.ErrNotFound
		}
		return enrollment.Enrollment{}, fmt.Errorf("get enrollment by exchange id: %w", err)
	}
	return s.Get(ctx, string(entry.Value()))
}

// Update implements enrollment.Store.
func (s *Store) Update(ctx context.Context, e enrollment.Enrollment, msgs ...outbox.Message) (enrollment.Enrollment, error) {
	rev, err := s.docs.Update(ctx, docKey(e.ID), e.Version, toDoc(e), msgs...)
	switch {
	case errors.Is(err, kvdoc.ErrStale):
		return e, enrollment.ErrStale
	case errors.Is(err, kvdoc.ErrNotFound):
		return e, enrollment.ErrNotFound
	case err != nil:
		return e, fmt.Errorf("update enrollment: %w", err)
	}
	e.Version = rev
	if e.State.Terminal() {
		// Best effort: a leftover index entry is dropped by the next DueForExpiry.
		_ = s.kv.Delete(ctx, openKey(e))
	}
	return e, nil
}

// DueForExpiry implements enrollment.Store. It drops index entries of enrollments that are no
// longer open.
//
// Its cost does not grow with stored history: after one full listing it lists only the index
// entries of the seconds that became due since the last call (one filtered listing each), so
// an idle service walks no delete markers of finished enrollments.
func (s *Store) DueForExpiry(ctx context.Context, now time.Time) ([]enrollment.Enrollment, error) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	nowSec := now.Unix()
	var filters []string
	if s.sweptThrough == 0 || nowSec-s.sweptThrough > maxIncrementalSeconds {
		filters = []string{"o.>"}
	} else {
		for sec := s.sweptThrough - sweepOverlap + 1; sec <= nowSec; sec++ {
			filters = append(filters, "o."+strconv.FormatInt(sec, 10)+".>")
		}
	}
	var due []string
	// One listing (one ephemeral consumer) for all the seconds: an idle replica's sweep costs
	// one consumer a second, not one per second listed.
	keys, err := s.listKeys(ctx, filters...)
	if err != nil {
		return nil, err
	}
	for _, key := range keys {
		parts := strings.SplitN(key, ".", 3)
		if len(parts) != 3 {
			continue
		}
		unix, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || unix > nowSec {
			continue
		}
		due = append(due, key)
	}
	var out []enrollment.Enrollment
	for _, key := range due {
		id := strings.SplitN(key, ".", 3)[2]
		e, err := s.Get(ctx, id)
		if errors.Is(err, enrollment.ErrNotFound) || err == nil && e.State.Terminal() {
			_ = s.kv.Delete(ctx, key)
			continue
		}
		if err != nil {
			return out, err
		}
		if e.DueToExpire(now) {
			out = append(out, e)
		}
	}
	s.sweptThrough = nowSec
	return out, nil
}

// listKeys lists the keys matching filter; none is not an error.
func (s *Store) listKeys(ctx context.Context, filters ...string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, filters...)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list open enrollments: %w", err)
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	return keys, nil
}
