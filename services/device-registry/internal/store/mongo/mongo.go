// Package mongo is the MongoDB backend of device.Store (MFA_STORE=mongo), on pkg/mongodoc:
// one document per credential, lockout and recovery set, each with its outbox in the same
// document and compare-and-set on the envelope's version.
//
// Collections and indexes (created at start-up, idempotently):
//
//	credentials    _id = ph_id
//	               doc.status_id  unique: GetByStatusID, and one credential per enrollment
//	               doc.sub        ListBySub
//	lockouts       _id = sub: wrong-code counter and lock (device.Lockout)
//	recovery_sets  _id = sub: recovery code hashes (device.RecoverySet)
//	(each)         pending        the outbox relay's index (pkg/mongodoc)
//
// A removed credential is replaced by a secretless tombstone marked for purge, which its
// relay deletes once the removal's events are published; readers see it gone at once.
package mongo

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	driver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Collection names.
const (
	CredentialsCollection  = "credentials"
	LockoutsCollection     = "lockouts"
	RecoverySetsCollection = "recovery_sets"
	ProfilesCollection     = "profiles"
)

// Store is device.Store on MongoDB.
type Store struct {
	credentials, lockouts, recovery, profiles *mongodoc.Collection
	docs                                      *mongodoc.Store[store.CredentialDoc]
}

var _ device.Store = (*Store)(nil)

// Open creates the collections' indexes if missing and returns a store on db.
func Open(ctx context.Context, db *driver.Database) (*Store, error) {
	creds, err := mongodoc.Open(ctx, db, CredentialsCollection,
		driver.IndexModel{Keys: bson.D{{Key: mongodoc.DocField("status_id"), Value: 1}}, Options: options.Index().SetName("status_id").SetUnique(true)},
		driver.IndexModel{Keys: bson.D{{Key: mongodoc.DocField("sub"), Value: 1}}, Options: options.Index().SetName("sub")},
	)
	if err != nil {
		return nil, fmt.Errorf("device store: %w", err)
	}
	locks, err := mongodoc.Open(ctx, db, LockoutsCollection)
	if err != nil {
		return nil, fmt.Errorf("device store: %w", err)
	}
	rec, err := mongodoc.Open(ctx, db, RecoverySetsCollection)
	if err != nil {
		return nil, fmt.Errorf("device store: %w", err)
	}
	profiles, err := mongodoc.Open(ctx, db, ProfilesCollection)
	if err != nil {
		return nil, fmt.Errorf("device store: %w", err)
	}
	return &Store{credentials: creds, lockouts: locks, recovery: rec, profiles: profiles, docs: mongodoc.New[store.CredentialDoc](creds)}, nil
}

// Relays returns one outbox relay per collection, publishing to js.
func (s *Store) Relays(js jetstream.JetStream, log *slog.Logger) []*mongodoc.Relay {
	var out []*mongodoc.Relay
	for _, c := range []*mongodoc.Collection{s.credentials, s.lockouts, s.recovery} {
		out = append(out, &mongodoc.Relay{C: c, JS: js, Log: log})
	}
	return out
}

// Create inserts the credential; the unique _id and status_id refuse a second one.
func (s *Store) Create(ctx context.Context, c device.Credential) (device.Credential, error) {
	if !ids.Valid(c.PHID) || !ids.Valid(c.StatusID) {
		return device.Credential{}, fmt.Errorf("mongodb create: malformed ph_id or status_id: %w", device.ErrInvalid)
	}
	v, err := s.docs.Create(ctx, c.PHID, store.ToDoc(c))
	if err != nil {
		return device.Credential{}, fmt.Errorf("mongodb create %s: %w", c.PHID, translate(err))
	}
	c.Version = v
	return c, nil
}

// Get returns the credential phid.
func (s *Store) Get(ctx context.Context, phid string) (device.Credential, error) {
	if !ids.Valid(phid) {
		return device.Credential{}, fmt.Errorf("mongodb get %q: %w", phid, device.ErrNotFound)
	}
	d, v, err := s.docs.Get(ctx, phid)
	if err != nil {
		return device.Credential{}, fmt.Errorf("mongodb get %s: %w", phid, translate(err))
	}
	return store.ToDomain(d, v), nil
}

// GetByStatusID finds the credential through the status_id index.
func (s *Store) GetByStatusID(ctx context.Context, statusID string) (device.Credential, error) {
	if !ids.Valid(statusID) {
		return device.Credential{}, fmt.Errorf("mongodb get status %q: %w", statusID, device.ErrNotFound)
	}
	found, err := s.docs.Find(ctx, bson.D{{Key: mongodoc.DocField("status_id"), Value: statusID}}, 1)
	if err != nil {
		return device.Credential{}, fmt.Errorf("mongodb get status %s: %w", statusID, err)
	}
	if len(found) == 0 {
		return device.Credential{}, fmt.Errorf("mongodb get status %s: %w", statusID, device.ErrNotFound)
	}
	return store.ToDomain(found[0].Doc, found[0].Version), nil
}

// ListBySub returns the user's credentials through the sub index.
func (s *Store) ListBySub(ctx context.Context, sub string) ([]device.Credential, error) {
	found, err := s.docs.Find(ctx, bson.D{{Key: mongodoc.DocField("sub"), Value: sub}}, 0)
	if err != nil {
		return nil, fmt.Errorf("mongodb list: %w", err)
	}
	out := make([]device.Credential, 0, len(found))
	for _, f := range found {
		out = append(out, store.ToDomain(f.Doc, f.Version))
	}
	return out, nil
}

// ListCredentials implements device.Store: ph_id order, after `after`.
func (s *Store) ListCredentials(ctx context.Context, after string, limit int) ([]device.Credential, error) {
	found, err := s.docs.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: after}}}}, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("mongodb list credentials: %w", err)
	}
	out := make([]device.Credential, 0, len(found))
	for _, f := range found {
		out = append(out, store.ToDomain(f.Doc, f.Version))
	}
	return out, nil
}

// Update writes c if the stored document is still at c.Version.
func (s *Store) Update(ctx context.Context, c device.Credential, msgs ...outbox.Message) (device.Credential, error) {
	if !ids.Valid(c.PHID) {
		return device.Credential{}, fmt.Errorf("mongodb update %q: %w", c.PHID, device.ErrNotFound)
	}
	v, err := s.docs.Update(ctx, c.PHID, c.Version, store.ToDoc(c), msgs...)
	if err != nil {
		return device.Credential{}, fmt.Errorf("mongodb update %s: %w", c.PHID, translate(err))
	}
	c.Version = v
	return c, nil
}

// Remove replaces the document by a secretless tombstone marked for purge.
func (s *Store) Remove(ctx context.Context, c device.Credential, msgs ...outbox.Message) error {
	if !ids.Valid(c.PHID) {
		return fmt.Errorf("mongodb remove %q: %w", c.PHID, device.ErrNotFound)
	}
	if err := s.docs.Remove(ctx, c.PHID, c.Version, store.Tombstone(c), msgs...); err != nil {
		return fmt.Errorf("mongodb remove %s: %w", c.PHID, translate(err))
	}
	return nil
}

type lockoutDoc struct {
	Sub         string    `bson:"sub"`
	Failures    int       `bson:"failures"`
	Locks       int       `bson:"locks"`
	LockedUntil time.Time `bson:"locked_until"`
	ResetAt     time.Time `bson:"reset_at,omitempty"`
}

type recoveryDoc struct {
	Sub string `bson:"sub"`
	// Hashes are hex HMAC-SHA256 values, never codes.
	Hashes    []string  `bson:"hashes"`
	Used      []bool    `bson:"used"`
	UsedFor   []string  `bson:"used_for,omitempty"`
	CreatedAt time.Time `bson:"created_at"`
}

// profileDoc is device.Profile as stored; addresses are sealed.
type profileDoc struct {
	Sub              string    `bson:"sub"`
	SealedClaimEmail []byte    `bson:"claim_email,omitempty"`
	SealedLastEmail  []byte    `bson:"last_email,omitempty"`
	Locale           string    `bson:"locale,omitempty"`
	DefaultMethod    string    `bson:"default_method,omitempty"`
	DisableHash      []byte    `bson:"disable_hash,omitempty"`
	DisableExpiresAt time.Time `bson:"disable_expires_at,omitempty"`
}

// GetProfile returns sub's profile.
func (s *Store) GetProfile(ctx context.Context, sub string) (device.Profile, error) {
	d, v, err := mongodoc.New[profileDoc](s.profiles).Get(ctx, sub)
	if err != nil {
		return device.Profile{}, fmt.Errorf("mongodb get profile: %w", translate(err))
	}
	return device.Profile{Sub: d.Sub, SealedClaimEmail: d.SealedClaimEmail, SealedLastEmail: d.SealedLastEmail, Locale: d.Locale,
		DefaultMethod: d.DefaultMethod, DisableHash: d.DisableHash, DisableExpiresAt: d.DisableExpiresAt.UTC(), Version: v}, nil
}

// PutProfile creates or compare-and-sets sub's profile.
func (s *Store) PutProfile(ctx context.Context, p device.Profile) (device.Profile, error) {
	v, err := put(ctx, mongodoc.New[profileDoc](s.profiles), p.Sub, p.Version, profileDoc{
		Sub: p.Sub, SealedClaimEmail: p.SealedClaimEmail, SealedLastEmail: p.SealedLastEmail, Locale: p.Locale,
		DefaultMethod: p.DefaultMethod, DisableHash: p.DisableHash, DisableExpiresAt: p.DisableExpiresAt,
	}, nil)
	if err != nil {
		return device.Profile{}, fmt.Errorf("mongodb put profile: %w", err)
	}
	p.Version = v
	return p, nil
}

// GetLockout returns sub's lockout record.
func (s *Store) GetLockout(ctx context.Context, sub string) (device.Lockout, error) {
	d, v, err := mongodoc.New[lockoutDoc](s.lockouts).Get(ctx, sub)
	if err != nil {
		return device.Lockout{}, fmt.Errorf("mongodb get lockout: %w", translate(err))
	}
	return device.Lockout{Sub: d.Sub, Failures: d.Failures, Locks: d.Locks, LockedUntil: d.LockedUntil, ResetAt: d.ResetAt, Version: v}, nil
}

// PutLockout creates or compare-and-sets sub's lockout record.
func (s *Store) PutLockout(ctx context.Context, l device.Lockout, msgs ...outbox.Message) (device.Lockout, error) {
	d := lockoutDoc{Sub: l.Sub, Failures: l.Failures, Locks: l.Locks, LockedUntil: l.LockedUntil, ResetAt: l.ResetAt}
	v, err := put(ctx, mongodoc.New[lockoutDoc](s.lockouts), l.Sub, l.Version, d, msgs)
	if err != nil {
		return device.Lockout{}, fmt.Errorf("mongodb put lockout: %w", err)
	}
	l.Version = v
	return l, nil
}

// GetRecoverySet returns sub's recovery codes (hashes).
func (s *Store) GetRecoverySet(ctx context.Context, sub string) (device.RecoverySet, error) {
	d, v, err := mongodoc.New[recoveryDoc](s.recovery).Get(ctx, sub)
	if err != nil {
		return device.RecoverySet{}, fmt.Errorf("mongodb get recovery set: %w", translate(err))
	}
	r := device.RecoverySet{Sub: d.Sub, Used: d.Used, UsedFor: d.UsedFor, CreatedAt: d.CreatedAt, Version: v}
	for _, h := range d.Hashes {
		b, err := hex.DecodeString(h)
		if err != nil {
			return device.RecoverySet{}, fmt.Errorf("mongodb get recovery set: malformed hash: %w", err)
		}
		r.Hashes = append(r.Hashes, b)
	}
	return r, nil
}

// PutRecoverySet creates or compare-and-sets sub's recovery codes.
func (s *Store) PutRecoverySet(ctx context.Context, r device.RecoverySet, msgs ...outbox.Message) (device.RecoverySet, error) {
	d := recoveryDoc{Sub: r.Sub, Used: r.Used, UsedFor: r.UsedFor, CreatedAt: r.CreatedAt}
	for _, h := range r.Hashes {
		d.Hashes = append(d.Hashes, hex.EncodeToString(h))
	}
	v, err := put(ctx, mongodoc.New[recoveryDoc](s.recovery), r.Sub, r.Version, d, msgs)
	if err != nil {
		return device.RecoverySet{}, fmt.Errorf("mongodb put recovery set: %w", err)
	}
	r.Version = v
	return r, nil
}

// put creates the document when version is 0 and compare-and-sets it otherwise; a lost race
// either way is device.ErrStale.
func put[T any](ctx context.Context, docs *mongodoc.Store[T], id string, version uint64, d T, msgs []outbox.Message) (uint64, error) {
	if version == 0 {
		v, err := docs.Create(ctx, id, d, msgs...)
		if errors.Is(err, mongodoc.ErrExists) {
			return 0, device.ErrStale
		}
		return v, translate(err)
	}
	v, err := docs.Update(ctx, id, version, d, msgs...)
	return v, translate(err)
}

// translate maps mongodoc's errors to the domain's.
func translate(err error) error {
	switch {
	case errors.Is(err, mongodoc.ErrNotFound):
		return device.ErrNotFound
	case errors.Is(err, mongodoc.ErrStale):
		return device.ErrStale
	case errors.Is(err, mongodoc.ErrExists):
		return device.ErrConflict
	}
	return err
}
