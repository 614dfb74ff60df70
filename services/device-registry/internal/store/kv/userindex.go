package kv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/nats-io/nats.go/jetstream"
)

// The per-user index document, i.<sha256(sub)[:32 hex]>, lists the ph_ids of a user's
// credentials, so that reading a user's credentials (every sign-in and enrollment initiation
// does) costs one read whatever the bucket holds. The u.<hash>.<ph_id> keys it replaces were
// found with next-by-subject reads, whose cost grew with the messages stored after them.
//
// The u. keys are still written (a replica of an older version reads them during a rolling
// upgrade) and read where a bucket was written before the index existed: UserIndexMarker says a
// bucket's users are all indexed (MigrateUserIndex writes it once), and until a store has seen
// it, a user without an index document is listed from the u. keys.

// UserIndexMarker is the key that says every user of the bucket has an index document.
const UserIndexMarker = "_index.users.v1"

type userIndex struct {
	PHIDs []string `json:"ph_ids"`
	// Verified names, for ph_ids of PHIDs, the method of each credential known to be verified
	// (NoteVerified), so that a sign-in's readiness is one read of this document instead of a
	// read of every credential (Verified). It is a hint that only ever says yes: an index
	// written by an older version, which drops the field, or an activation whose note was lost
	// make readers list the credentials as before.
	Verified map[string]string `json:"verified,omitempty"`
}

func userIndexKey(hash string) string { return "i." + hash }

// usersIndexed reports whether the bucket's users are all indexed, remembering a yes.
func (s *Store) usersIndexed(ctx context.Context) (bool, error) {
	if s.indexed.Load() {
		return true, nil
	}
	_, err := s.kv.Get(ctx, UserIndexMarker)
	switch {
	case err == nil:
		s.indexed.Store(true)
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	}
	return false, fmt.Errorf("kv user index marker: %w", err)
}

// indexedPHIDs returns the ph_ids the user's index names; ok is false when the bucket may hold
// credentials of the user that no index names (not migrated yet).
func (s *Store) indexedPHIDs(ctx context.Context, sub string) (phids []string, ok bool, err error) {
	d, _, err := s.users.Get(ctx, userIndexKey(subHash(sub)))
	if err == nil {
		return d.PHIDs, true, nil
	}
	if !errors.Is(err, kvdoc.ErrNotFound) {
		return nil, false, fmt.Errorf("kv user index: %w", err)
	}
	indexed, err := s.usersIndexed(ctx)
	return nil, indexed, err
}

// changeUserIndex applies change to the index of user hash with compare-and-set, creating it.
// change edits a copy; returning false leaves the document as it is.
func (s *Store) changeUserIndex(ctx context.Context, hash string, change func(*userIndex) bool) error {
	key := userIndexKey(hash)
	for range maxIndexAttempts {
		d, rev, err := s.users.Get(ctx, key)
		switch {
		case errors.Is(err, kvdoc.ErrNotFound):
			var fresh userIndex
			if !change(&fresh) {
				return nil
			}
			_, err = s.users.Create(ctx, key, fresh)
			if errors.Is(err, kvdoc.ErrExists) {
				continue
			}
		case err == nil:
			d.PHIDs, d.Verified = slices.Clone(d.PHIDs), maps.Clone(d.Verified)
			if !change(&d) {
				return nil
			}
			_, err = s.users.Update(ctx, key, rev, d)
			if errors.Is(err, kvdoc.ErrStale) {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("kv user index: %w", err)
		}
		return nil
	}
	return fmt.Errorf("kv user index %s: gave up after %d attempts", key, maxIndexAttempts)
}

// maxIndexAttempts bounds the compare-and-set loop of one index change: a user's credentials
// change a few times in a lifetime, so losing eight races in a row is not a race.
const maxIndexAttempts = 8

func withPHIDs(add ...string) func(*userIndex) bool {
	return func(d *userIndex) bool {
		for _, p := range add {
			if !slices.Contains(d.PHIDs, p) {
				d.PHIDs = append(d.PHIDs, p)
			}
		}
		return true
	}
}

func withoutPHID(phid string) func(*userIndex) bool {
	return func(d *userIndex) bool {
		d.PHIDs = slices.DeleteFunc(d.PHIDs, func(p string) bool { return p == phid })
		delete(d.Verified, phid)
		return true
	}
}

// withVerified notes phid as a verified credential of method m, if the index names it (a
// credential removed meanwhile is not noted again).
func withVerified(phid, m string) func(*userIndex) bool {
	return func(d *userIndex) bool {
		if !slices.Contains(d.PHIDs, phid) || d.Verified[phid] == m {
			return false
		}
		if d.Verified == nil {
			d.Verified = map[string]string{}
		}
		d.Verified[phid] = m
		return true
	}
}

// NoteVerified implements device.VerifiedIndex: c, verified, is noted in its user's index.
func (s *Store) NoteVerified(ctx context.Context, c device.Credential) error {
	if !c.Verified || !validToken(c.PHID) {
		return nil
	}
	return s.changeUserIndex(ctx, subHash(c.Sub), withVerified(c.PHID, c.Method))
}

// Verified implements device.VerifiedIndex: the ph_ids sub's index notes as verified
// credentials of method m. None means "not known": the caller lists the credentials.
func (s *Store) Verified(ctx context.Context, sub, m string) ([]string, error) {
	d, _, err := s.users.Get(ctx, userIndexKey(subHash(sub)))
	if errors.Is(err, kvdoc.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kv user index: %w", err)
	}
	var out []string
	for _, phid := range d.PHIDs { // the index's order, not the map's
		if d.Verified[phid] == m {
			out = append(out, phid)
		}
	}
	return out, nil
}

// MigrateUserIndex gives every user with u. keys an index document naming them, then writes
// UserIndexMarker. It walks the u. keys once (one consumer); the first start after an upgrade
// runs it, later ones find the marker and return. Writers running meanwhile keep the index
// documents current themselves; an entry for a credential removed during the walk is a
// leftover that readers skip, as they skip every index entry without a document.
func (s *Store) MigrateUserIndex(ctx context.Context) (users int, err error) {
	if done, err := s.usersIndexed(ctx); err != nil || done {
		return 0, err
	}
	byUser := map[string][]string{}
	lister, err := s.kv.ListKeysFiltered(ctx, "u.>")
	switch {
	case errors.Is(err, jetstream.ErrNoKeysFound):
	case err != nil:
		return 0, fmt.Errorf("kv user index migration: %w", err)
	default:
		for k := range lister.Keys() {
			parts := strings.Split(k, ".")
			if len(parts) == 3 {
				byUser[parts[1]] = append(byUser[parts[1]], parts[2])
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("kv user index migration: %w", err)
		}
	}
	for hash, phids := range byUser {
		if err := s.changeUserIndex(ctx, hash, withPHIDs(phids...)); err != nil {
			return 0, fmt.Errorf("kv user index migration: %w", err)
		}
	}
	if _, err := s.kv.Put(ctx, UserIndexMarker, []byte("1")); err != nil {
		return 0, fmt.Errorf("kv user index migration: %w", err)
	}
	s.indexed.Store(true)
	return len(byUser), nil
}

// indexedFlag is a Store's memory of UserIndexMarker.
type indexedFlag = atomic.Bool
