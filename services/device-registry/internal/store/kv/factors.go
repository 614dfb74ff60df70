package kv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/outbox"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// Per-user documents, keyed by a hash of the sub (free text is not a key token):
//
//	c.lockout.<sha256(sub)[:32 hex]>   wrong-code counter and lock (device.Lockout)
//	c.recovery.<sha256(sub)[:32 hex]>  recovery code hashes (device.RecoverySet)
//
// They sit under "c." because they carry an outbox (mfa.verification.locked, mfa.recovery.*)
// and RelayFilter selects every document with one.

func subHash(sub string) string {
	h := sha256.Sum256([]byte(sub))
	return hex.EncodeToString(h[:])[:32]
}

func lockoutKey(sub string) string  { return "c.lockout." + subHash(sub) }
func profileKey(sub string) string  { return "p." + subHash(sub) }
func recoveryKey(sub string) string { return "c.recovery." + subHash(sub) }

type lockoutDoc struct {
	Sub         string    `json:"sub"`
	Failures    int       `json:"failures"`
	Locks       int       `json:"locks"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	ResetAt     time.Time `json:"reset_at,omitzero"`
}

type recoveryDoc struct {
	Sub string `json:"sub"`
	// Hashes are hex HMAC-SHA256 values, never codes.
	Hashes    []string  `json:"hashes"`
	Used      []bool    `json:"used"`
	UsedFor   []string  `json:"used_for,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// profileDoc is device.Profile as stored (under "p.": it carries no events). Addresses are
// sealed.
type profileDoc struct {
	Sub              string    `json:"sub"`
	SealedClaimEmail []byte    `json:"claim_email,omitempty"`
	SealedLastEmail  []byte    `json:"last_email,omitempty"`
	Locale           string    `json:"locale,omitempty"`
	DefaultMethod    string    `json:"default_method,omitempty"`
	DisableHash      []byte    `json:"disable_hash,omitempty"`
	DisableExpiresAt time.Time `json:"disable_expires_at,omitzero"`
}

// GetProfile returns sub's profile.
func (s *Store) GetProfile(ctx context.Context, sub string) (device.Profile, error) {
	d, rev, err := docsOf[profileDoc](s).Get(ctx, profileKey(sub))
	if err != nil {
		return device.Profile{}, fmt.Errorf("kv get profile: %w", translate(err))
	}
	if d.Sub != sub {
		return device.Profile{}, fmt.Errorf("kv get profile: hash collision: %w", device.ErrNotFound)
	}
	return withVersion(d, rev), nil
}

// PutProfile creates or compare-and-sets sub's profile.
func (s *Store) PutProfile(ctx context.Context, p device.Profile) (device.Profile, error) {
	rev, err := put(ctx, docsOf[profileDoc](s), profileKey(p.Sub), p.Version, profileDoc{
		Sub: p.Sub, SealedClaimEmail: p.SealedClaimEmail, SealedLastEmail: p.SealedLastEmail, Locale: p.Locale,
		DefaultMethod: p.DefaultMethod, DisableHash: p.DisableHash, DisableExpiresAt: p.DisableExpiresAt,
	}, nil)
	if err != nil {
		return device.Profile{}, fmt.Errorf("kv put profile: %w", err)
	}
	p.Version = rev
	return p, nil
}

// withVersion is d as the domain's profile fields, with version.
func withVersion(d profileDoc, version uint64) device.Profile {
	return device.Profile{Sub: d.Sub, SealedClaimEmail: d.SealedClaimEmail, SealedLastEmail: d.SealedLastEmail, Locale: d.Locale,
		DefaultMethod: d.DefaultMethod, DisableHash: d.DisableHash, DisableExpiresAt: d.DisableExpiresAt, Version: version}
}

// GetLockout returns sub's lockout record.
func (s *Store) GetLockout(ctx context.Context, sub string) (device.Lockout, error) {
	d, rev, err := docsOf[lockoutDoc](s).Get(ctx, lockoutKey(sub))
	if err != nil {
		return device.Lockout{}, fmt.Errorf("kv get lockout: %w", translate(err))
	}
	if d.Sub != sub {
		return device.Lockout{}, fmt.Errorf("kv get lockout: hash collision: %w", device.ErrNotFound)
	}
	return device.Lockout{Sub: d.Sub, Failures: d.Failures, Locks: d.Locks, LockedUntil: d.LockedUntil, ResetAt: d.ResetAt, Version: rev}, nil
}

// PutLockout creates or compare-and-sets sub's lockout record.
func (s *Store) PutLockout(ctx context.Context, l device.Lockout, msgs ...outbox.Message) (device.Lockout, error) {
	d := lockoutDoc{Sub: l.Sub, Failures: l.Failures, Locks: l.Locks, LockedUntil: l.LockedUntil, ResetAt: l.ResetAt}
	rev, err := put(ctx, docsOf[lockoutDoc](s), lockoutKey(l.Sub), l.Version, d, msgs)
	if err != nil {
		return device.Lockout{}, fmt.Errorf("kv put lockout: %w", err)
	}
	l.Version = rev
	return l, nil
}

// GetRecoverySet returns sub's recovery codes (hashes).
func (s *Store) GetRecoverySet(ctx context.Context, sub string) (device.RecoverySet, error) {
	d, rev, err := docsOf[recoveryDoc](s).Get(ctx, recoveryKey(sub))
	if err != nil {
		return device.RecoverySet{}, fmt.Errorf("kv get recovery set: %w", translate(err))
	}
	if d.Sub != sub {
		return device.RecoverySet{}, fmt.Errorf("kv get recovery set: hash collision: %w", device.ErrNotFound)
	}
	r := device.RecoverySet{Sub: d.Sub, Used: d.Used, UsedFor: d.UsedFor, CreatedAt: d.CreatedAt, Version: rev}
	for _, h := range d.Hashes {
		b, err := hex.DecodeString(h)
		if err != nil {
			return device.RecoverySet{}, fmt.Errorf("kv get recovery set: malformed hash: %w", err)
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
	rev, err := put(ctx, docsOf[recoveryDoc](s), recoveryKey(r.Sub), r.Version, d, msgs)
	if err != nil {
		return device.RecoverySet{}, fmt.Errorf("kv put recovery set: %w", err)
	}
	r.Version = rev
	return r, nil
}

// put creates the document when version is 0 and compare-and-sets it otherwise; a lost race
// either way is device.ErrStale.
func put[T any](ctx context.Context, docs *kvdoc.Store[T], key string, version uint64, d T, msgs []outbox.Message) (uint64, error) {
	if version == 0 {
		rev, err := docs.Create(ctx, key, d, msgs...)
		if errors.Is(err, kvdoc.ErrExists) {
			return 0, device.ErrStale
		}
		return rev, translate(err)
	}
	rev, err := docs.Update(ctx, key, version, d, msgs...)
	return rev, translate(err)
}
