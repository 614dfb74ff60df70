package device

import (
	"context"
	"errors"
	"fmt"
)

// RekeyResult says how far a rekey pass went; Next is where the next pass starts ("" when done).
type RekeyResult struct {
	Scanned, Rekeyed int
	Next             string
}

// Rekey re-seals, with the current key, the secrets of up to limit credentials after `after`
// (ph_id order) that an older key sealed. It is resumable (pass Next back) and safe beside
// running replicas: each re-seal is a compare-and-set, and a credential that changed meanwhile is
// read again. Once a pass over everything reports nothing to rekey, the older keys can leave the
// ring.
func (s *Service) Rekey(ctx context.Context, after string, limit int) (RekeyResult, error) {
	ring, ok := s.sealer.(KeyRing)
	if !ok {
		return RekeyResult{}, errors.New("rekey: the sealer has a single key")
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	cs, err := s.store.ListCredentials(ctx, after, limit)
	if err != nil {
		return RekeyResult{}, fmt.Errorf("rekey: %w", err)
	}
	var res RekeyResult
	for _, c := range cs {
		res.Scanned++
		done, err := s.rekeyOne(ctx, ring, c)
		if err != nil {
			return res, err
		}
		if done {
			res.Rekeyed++
		}
	}
	if len(cs) == limit {
		res.Next = cs[len(cs)-1].PHID
	}
	return res, nil
}

func (s *Service) rekeyOne(ctx context.Context, ring KeyRing, c Credential) (bool, error) {
	for range maxAttempts {
		if len(c.SealedSecret) == 0 || ring.Current(c.SealedSecret) {
			return false, nil
		}
		secret, err := ring.Open(c.SealedSecret, []byte(c.PHID))
		if err != nil {
			return false, fmt.Errorf("rekey %s: %w", c.PHID, err)
		}
		sealed, err := ring.Seal(secret, []byte(c.PHID))
		clear(secret)
		if err != nil {
			return false, fmt.Errorf("rekey %s: %w", c.PHID, err)
		}
		c.SealedSecret = sealed
		_, err = s.store.Update(ctx, c)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, ErrNotFound):
			return false, nil // removed meanwhile
		case errors.Is(err, ErrStale):
			if c, err = s.store.Get(ctx, c.PHID); errors.Is(err, ErrNotFound) {
				return false, nil
			} else if err != nil {
				return false, fmt.Errorf("rekey %s: %w", c.PHID, err)
			}
		default:
			return false, fmt.Errorf("rekey %s: %w", c.PHID, err)
		}
	}
	return false, fmt.Errorf("rekey %s: %w", c.PHID, ErrStale)
}
