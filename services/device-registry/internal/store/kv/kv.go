// Package kv is the JetStream key-value backend of device.Store, the default for the dev
// stack, tests and deployments that run on a NATS cluster alone.
//
// Keys in the bucket:
//
//	c.<ph_id>                       the credential document (pkg/kvdoc: document + outbox)
//	s.<status_id>                   → ph_id: finds the credential of an enrollment, only for
//	                                  credentials whose ph_id is not device.PHIDFor(status_id)
//	i.<sha256(sub)[:32 hex]>        the user's index document: the ph_ids of their credentials
//	u.<sha256(sub)[:32 hex]>.<ph_id> → ph_id: the index before i. documents (still written for
//	                                  older replicas; read until the bucket is migrated)
//	_index.users.v1                 every user has an i. document (see userindex.go)
//
// A credential whose ph_id is device.PHIDFor(status_id) (every one the registry makes now) needs
// no status index: its document key follows from the status id, and the document's Create
// refuses a second credential for the enrollment. Credentials with other ph_ids (made before,
// or by tests) keep the s. entry, and GetByStatusID falls back to it.
//
// JetStream writes one key atomically, so a create touches up to three keys in an order that leaves
// only harmless leftovers after a crash: the index entries come first, and readers check that
// an index entry points to a document that agrees with it. The sub is hashed because it is
// free text chosen by an identity provider and key tokens are not.
package kv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the bucket name when configuration names none.
const DefaultBucket = "mfa_devices"

// RelayFilter selects the keys whose values carry an outbox: the credential documents and the
// per-user lockout and recovery documents (see factors.go). The index keys hold bare ph_ids and
// must not reach the relay.
const RelayFilter = "c.>"

// BucketConfig is the configuration the registry's bucket needs. History is 1 so that an
// overwritten value is gone at once: a removed credential's tombstone replaces the sealed
// secret instead of keeping it in the key's history.
func BucketConfig(bucket string) jetstream.KeyValueConfig {
	if bucket == "" {
		bucket = DefaultBucket
	}
	return jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "mfaflow device registry: TOTP credentials (secrets sealed) and their indexes",
		History:     1,
		Storage:     jetstream.FileStorage,
	}
}

// Store is device.Store on a JetStream key-value bucket.
type Store struct {
	kv   jetstream.KeyValue
	js   jetstream.JetStream // nil: list through a KV lister
	docs *kvdoc.Store[store.CredentialDoc]
	// stream is the bucket's stream handle, looked up on first use and kept: a user's listing
	// (every sign-in and initiation) then costs no stream info request.
	streamMu sync.Mutex
	stream   jetstream.Stream
	// relayed is the outbox relay's Relayed (see FollowRelay).
	relayed func(key string, rev uint64) bool
	// users are the per-user index documents (userindex.go); indexed remembers that the
	// bucket's users all have one.
	users   *kvdoc.Store[userIndex]
	indexed indexedFlag
}

var _ device.Store = (*Store)(nil)

// New returns a Store on bucket kv (see BucketConfig). With js, a user's credentials are listed
// from the bucket stream's leader (natsx.KeysFromLeader), so a replicated bucket lists a device
// registered a moment ago even while a follower catches up; nil lists through a KV lister.
func New(kv jetstream.KeyValue, js jetstream.JetStream) *Store {
	return &Store{kv: kv, js: js, docs: kvdoc.New[store.CredentialDoc](kv), users: kvdoc.New[userIndex](kv)}
}

// FollowRelay has every write drop the events that relayed (kvdoc.Relay.Relayed of this
// process's relay on RelayFilter) reports published; see kvdoc.Store.Relayed. Call it before
// the store is used.
func (s *Store) FollowRelay(relayed func(key string, rev uint64) bool) {
	s.relayed = relayed
	s.docs.Relayed = relayed
}

// docsOf is a typed view of the bucket that follows the relay as the credentials do.
func docsOf[T any](s *Store) *kvdoc.Store[T] {
	d := kvdoc.New[T](s.kv)
	d.Relayed = s.relayed
	return d
}

func docKey(phid string) string        { return "c." + phid }
func statusKey(statusID string) string { return "s." + statusID }
func subPrefix(sub string) string {
	h := sha256.Sum256([]byte(sub))
	return "u." + hex.EncodeToString(h[:])[:32]
}
func subKey(sub, phid string) string { return subPrefix(sub) + "." + phid }

// Create claims the enrollment once, so that of two creates for one enrollment the second
// writes no document: when the ph_id derives from the status id the document's own create is
// the claim (the user index entry written before it is then the same for both, or skipped by
// ListBySub), otherwise the status index, written first.
func (s *Store) Create(ctx context.Context, c device.Credential) (device.Credential, error) {
	if !validToken(c.PHID) || !validToken(c.StatusID) {
		return device.Credential{}, fmt.Errorf("kv create: ph_id and status_id must be key tokens: %w", device.ErrInvalid)
	}
	indexed := c.PHID != device.PHIDFor(c.StatusID)
	if indexed {
		if _, err := s.kv.Create(ctx, statusKey(c.StatusID), []byte(c.PHID)); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return device.Credential{}, fmt.Errorf("kv create: status %s: %w", c.StatusID, device.ErrConflict)
			}
			return device.Credential{}, fmt.Errorf("kv create: index status %s: %w", c.StatusID, err)
		}
	}
	// The user index is written before the document, so no document is ever unlisted; an
	// entry left without a document (a crash, a duplicate ph_id) is skipped by ListBySub.
	// Writing it again for a derived ph_id that already exists rewrites the same value.
	if _, err := s.kv.Put(ctx, subKey(c.Sub, c.PHID), []byte(c.PHID)); err != nil {
		if indexed {
			s.release(ctx, c.StatusID)
		}
		return device.Credential{}, fmt.Errorf("kv create: index sub: %w", err)
	}
	if err := s.changeUserIndex(ctx, subHash(c.Sub), withPHIDs(c.PHID)); err != nil {
		if indexed {
			s.release(ctx, c.StatusID)
		}
		return device.Credential{}, fmt.Errorf("kv create: %w", err)
	}
	rev, err := s.docs.Create(ctx, docKey(c.PHID), store.ToDoc(c))
	if err != nil {
		if indexed {
			s.release(ctx, c.StatusID)
		}
		if errors.Is(err, kvdoc.ErrExists) {
			if !indexed {
				return device.Credential{}, fmt.Errorf("kv create: status %s: %w", c.StatusID, device.ErrConflict)
			}
			return device.Credential{}, fmt.Errorf("kv create: ph_id %s: %w", c.PHID, device.ErrConflict)
		}
		return device.Credential{}, fmt.Errorf("kv create: %w", err)
	}
	c.Version = rev
	return c, nil
}

// release gives up a status index this Create claimed but could not complete. It is best
// effort: a leftover entry points to no document, which readers treat as not found.
func (s *Store) release(ctx context.Context, statusID string) {
	_ = s.kv.Delete(ctx, statusKey(statusID))
}

// Get returns the credential phid.
func (s *Store) Get(ctx context.Context, phid string) (device.Credential, error) {
	if !validToken(phid) {
		return device.Credential{}, fmt.Errorf("kv get %q: %w", phid, device.ErrNotFound)
	}
	d, rev, err := s.docs.Get(ctx, docKey(phid))
	if err != nil {
		return device.Credential{}, fmt.Errorf("kv get %s: %w", phid, translate(err))
	}
	return store.ToDomain(d, rev), nil
}

// GetByStatusID reads the document at the ph_id derived from the status id, else follows the
// status index, and checks that the document agrees.
func (s *Store) GetByStatusID(ctx context.Context, statusID string) (device.Credential, error) {
	if !validToken(statusID) {
		return device.Credential{}, fmt.Errorf("kv get status %q: %w", statusID, device.ErrNotFound)
	}
	c, err := s.Get(ctx, device.PHIDFor(statusID))
	if err == nil && c.StatusID == statusID {
		return c, nil
	}
	if err != nil && !errors.Is(err, device.ErrNotFound) {
		return device.Credential{}, err
	}
	e, err := s.kv.Get(ctx, statusKey(statusID))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return device.Credential{}, fmt.Errorf("kv get status %s: %w", statusID, device.ErrNotFound)
		}
		return device.Credential{}, fmt.Errorf("kv get status %s: %w", statusID, err)
	}
	c, err = s.Get(ctx, string(e.Value()))
	if err != nil {
		return device.Credential{}, err
	}
	if c.StatusID != statusID {
		return device.Credential{}, fmt.Errorf("kv get status %s: index disagrees with document: %w", statusID, device.ErrNotFound)
	}
	return c, nil
}

func (s *Store) listKeys(ctx context.Context, filter string) ([]string, error) {
	if s.js != nil {
		st, err := s.bucketStream(ctx)
		if err != nil {
			return nil, fmt.Errorf("kv list: %w", err)
		}
		keys, err := natsx.KeysFromStream(ctx, st, s.kv.Bucket(), filter)
		if err != nil {
			return nil, fmt.Errorf("kv list: %w", err)
		}
		return keys, nil
	}
	lister, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("kv list: %w", err)
	}
	// The lister stops its watcher itself once it has sent every key; stopping it again is
	// only for an early return, and then its error says nothing.
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kv list: %w", err) // the key channel closed early, the list is partial
	}
	return keys, nil
}

// bucketStream is the bucket's stream handle, looked up once.
func (s *Store) bucketStream(ctx context.Context) (jetstream.Stream, error) {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.stream == nil {
		st, err := s.js.Stream(ctx, "KV_"+s.kv.Bucket())
		if err != nil {
			return nil, err
		}
		s.stream = st
	}
	return s.stream, nil
}

// ListBySub reads the user's index and the documents it names. Entries whose document is gone
// or belongs to another sub (a leftover, a hash collision) are skipped.
func (s *Store) ListBySub(ctx context.Context, sub string) ([]device.Credential, error) {
	phids, ok, err := s.indexedPHIDs(ctx, sub)
	if err != nil {
		return nil, err
	}
	if !ok { // a bucket written before the user index: list the u. keys
		keys, err := s.listKeys(ctx, subPrefix(sub)+".*")
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			phids = append(phids, k[strings.LastIndexByte(k, '.')+1:])
		}
	}
	out := make([]device.Credential, 0, len(phids))
	for _, phid := range phids {
		c, err := s.Get(ctx, phid)
		if errors.Is(err, device.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if c.Sub == sub {
			out = append(out, c)
		}
	}
	return out, nil
}

// ListCredentials implements device.Store. It lists the credential keys (c.<ph_id>; the
// per-user documents have two tokens after "c.") and reads the page after `after`: every page
// lists all keys, which is fine for an administrator's walk, not for a hot path.
func (s *Store) ListCredentials(ctx context.Context, after string, limit int) ([]device.Credential, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "c.*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kv list credentials: %w", err)
	}
	var phids []string
	for k := range lister.Keys() {
		if id := strings.TrimPrefix(k, "c."); id > after {
			phids = append(phids, id)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kv list credentials: %w", err)
	}
	slices.Sort(phids)
	out := make([]device.Credential, 0, min(limit, len(phids)))
	for _, phid := range phids {
		if len(out) == limit {
			break
		}
		c, err := s.Get(ctx, phid)
		if errors.Is(err, device.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Update writes c if the stored document is still at c.Version.
func (s *Store) Update(ctx context.Context, c device.Credential, msgs ...outbox.Message) (device.Credential, error) {
	if !validToken(c.PHID) {
		return device.Credential{}, fmt.Errorf("kv update %q: %w", c.PHID, device.ErrNotFound)
	}
	rev, err := s.docs.Update(ctx, docKey(c.PHID), c.Version, store.ToDoc(c), msgs...)
	if err != nil {
		return device.Credential{}, fmt.Errorf("kv update %s: %w", c.PHID, translate(err))
	}
	c.Version = rev
	return c, nil
}

// Remove replaces the document by a secretless tombstone marked for purge (the relay deletes
// it after publishing msgs), then drops the index entries.
func (s *Store) Remove(ctx context.Context, c device.Credential, msgs ...outbox.Message) error {
	if !validToken(c.PHID) {
		return fmt.Errorf("kv remove %q: %w", c.PHID, device.ErrNotFound)
	}
	if err := s.docs.Remove(ctx, docKey(c.PHID), c.Version, store.Tombstone(c), msgs...); err != nil {
		return fmt.Errorf("kv remove %s: %w", c.PHID, translate(err))
	}
	// The document is already gone for every reader, so failing here would only make the
	// caller retry a removal that happened. Leftover entries are skipped by readers.
	_ = s.kv.Delete(ctx, subKey(c.Sub, c.PHID))
	_ = s.changeUserIndex(ctx, subHash(c.Sub), withoutPHID(c.PHID))
	if validToken(c.StatusID) && c.PHID != device.PHIDFor(c.StatusID) {
		// Only the entry that names this credential: never another one's claim on the id.
		if e, err := s.kv.Get(ctx, statusKey(c.StatusID)); err == nil && string(e.Value()) == c.PHID {
			_ = s.kv.Delete(ctx, statusKey(c.StatusID), jetstream.LastRevision(e.Revision()))
		}
	}
	return nil
}

// translate maps kvdoc's errors to the domain's.
func translate(err error) error {
	switch {
	case errors.Is(err, kvdoc.ErrNotFound):
		return device.ErrNotFound
	case errors.Is(err, kvdoc.ErrStale):
		return device.ErrStale
	case errors.Is(err, kvdoc.ErrExists):
		return device.ErrConflict
	}
	return err
}

// validToken reports whether id can be one token of a KV key. The domain only hands out such
// ids; this keeps a malformed one from turning into a wildcard or an invalid-key error.
func validToken(id string) bool { return ids.Valid(id) }
