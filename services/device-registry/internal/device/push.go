package device

import (
	"context"
	"crypto/ecdh"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/mfaflow/mfaflow/pkg/factor"
)

// validPushKey accepts the coordinates of a point on P-256: 32 bytes each, base64url without
// padding. Anything else is refused at enrollment, so every stored key can verify signatures.
func validPushKey(k PushKey) error {
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return invalid("device_key must be an EC P-256 JWK with 32-byte x and y (base64url)")
	}
	// crypto/ecdh checks that the uncompressed point is on the curve.
	if _, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, x...), y...)); err != nil {
		return invalid("device_key is not a point on P-256")
	}
	return nil
}

// Device returns the registered device phid (a verified credential), whoever owns it: the bridge
// asks for it to check a login signature. A pending, removed or unknown one is ErrNotFound.
func (s *Service) Device(ctx context.Context, phid string) (Credential, error) {
	if !validID(phid) {
		return Credential{}, ErrNotFound
	}
	c, err := s.store.Get(ctx, phid)
	if err != nil {
		return Credential{}, err
	}
	if !c.Verified || len(c.SealedSecret) == 0 {
		return Credential{}, ErrNotFound
	}
	return public(c), nil
}

// PushDevices returns sub's registered devices that can answer push challenges.
func (s *Service) PushDevices(ctx context.Context, sub string) ([]Credential, error) {
	all, err := s.List(ctx, sub)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, c := range all {
		if c.PushKey != nil {
			out = append(out, c)
		}
	}
	return out, nil
}

// CountFailure counts a failed use of a factor that is not a code (a push answered with the
// wrong number) like a wrong code: it may lock the user (then a *factor.LockedError).
func (s *Service) CountFailure(ctx context.Context, sub string) error {
	if sub == "" {
		return invalid("sub is missing")
	}
	if err := s.checkLock(ctx, sub); err != nil {
		return err
	}
	return s.countFailure(ctx, sub)
}

// readyPush reports whether sub has a push-capable device.
func (s *Service) readyPush(ctx context.Context, sub string) error {
	devs, err := s.PushDevices(ctx, sub)
	if err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	if len(devs) == 0 {
		return fmt.Errorf("ready: %w", factor.ErrNoFactor)
	}
	return nil
}

// MarkUsed records that sub's device phid just approved a sign-in (last_used_at), as a right
// code does for the device it matched.
func (s *Service) MarkUsed(ctx context.Context, phid, sub string) error {
	for range maxAttempts {
		c, err := s.owned(ctx, sub, phid)
		if err != nil {
			return fmt.Errorf("mark used %s: %w", phid, err)
		}
		c.LastUsedAt = s.clock.Now().UTC()
		if _, err := s.store.Update(ctx, c); errors.Is(err, ErrStale) {
			continue
		} else if err != nil {
			return fmt.Errorf("mark used %s: %w", phid, err)
		}
		return nil
	}
	return fmt.Errorf("mark used %s: %w", phid, ErrStale)
}
