package kv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/nats-io/nats.go/jetstream"
)

// pushKey is a user's push ledger: p.<sha256(sub), 32 hex> → {sub, sent, pending}. It carries no
// outbox (no event is about it), so the relay's filter (e.>) leaves it alone.
func pushKey(sub string) string {
	h := sha256.Sum256([]byte(sub))
	return "p." + hex.EncodeToString(h[:])[:32]
}

type pushLedger struct {
	Sub string `json:"sub"`
	// Sent are the unix seconds of the pushes in the current window.
	Sent    []int64 `json:"sent"`
	Pending string  `json:"pending,omitempty"`
}

var _ signin.PushLedger = (*Store)(nil)

// Reserve implements signin.PushLedger with compare-and-set on the user's ledger.
func (s *Store) Reserve(ctx context.Context, sub, id string, now time.Time, max int, window time.Duration) (string, error) {
	key := pushKey(sub)
	for range 16 {
		var l pushLedger
		var rev uint64
		e, err := s.kv.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(e.Value(), &l); err != nil {
				return "", fmt.Errorf("push ledger: %w", err)
			}
			rev = e.Revision()
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		default:
			return "", fmt.Errorf("push ledger: %w", err)
		}
		if l.Sub != "" && l.Sub != sub {
			l = pushLedger{} // a hash collision: start this user's own
		}
		since := now.Add(-window).Unix()
		l.Sent = slices.DeleteFunc(l.Sent, func(t int64) bool { return t <= since })
		if len(l.Sent) >= max {
			return "", &signin.TooManyPushesError{RetryAt: time.Unix(slices.Min(l.Sent), 0).Add(window)}
		}
		previous := l.Pending
		l.Sub, l.Sent, l.Pending = sub, append(l.Sent, now.Unix()), id
		data, err := json.Marshal(l)
		if err != nil {
			return "", err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, data)
		} else {
			_, err = s.kv.Update(ctx, key, data, rev)
		}
		if isCASConflict(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("push ledger: %w", err)
		}
		return previous, nil
	}
	return "", fmt.Errorf("push ledger: %w", signin.ErrStale)
}

// Pending implements signin.PushLedger.
func (s *Store) Pending(ctx context.Context, sub string) (string, error) {
	e, err := s.kv.Get(ctx, pushKey(sub))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("push ledger: %w", err)
	}
	var l pushLedger
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return "", fmt.Errorf("push ledger: %w", err)
	}
	if l.Sub != sub {
		return "", nil
	}
	return l.Pending, nil
}

func isCASConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
