package mongo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mfaflow/mfaflow/pkg/mongodoc"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// ledgerDoc is a user's push ledger (collection push_ledgers, _id = sub). It carries no outbox.
type ledgerDoc struct {
	Sub string `bson:"sub"`
	// Sent are the unix seconds of the pushes in the current window.
	Sent    []int64   `bson:"sent"`
	Pending string    `bson:"pending,omitempty"`
	GCAt    time.Time `bson:"gc_at"`
}

// Reserve implements signin.PushLedger with compare-and-set on the user's ledger.
func (s *Store) Reserve(ctx context.Context, sub, id string, now time.Time, max int, window time.Duration) (string, error) {
	ledgers := mongodoc.New[ledgerDoc](s.ledgers)
	for range 16 {
		l, v, err := ledgers.Get(ctx, sub)
		if err != nil && !errors.Is(err, mongodoc.ErrNotFound) {
			return "", fmt.Errorf("push ledger: %w", err)
		}
		since := now.Add(-window).Unix()
		l.Sent = slices.DeleteFunc(l.Sent, func(t int64) bool { return t <= since })
		if len(l.Sent) >= max {
			return "", &signin.TooManyPushesError{RetryAt: time.Unix(slices.Min(l.Sent), 0).Add(window)}
		}
		previous := l.Pending
		// Kept a day past the window: the pending push id outlives any authentication.
		l.Sub, l.Sent, l.Pending, l.GCAt = sub, append(l.Sent, now.Unix()), id, now.Add(window+24*time.Hour)
		if v == 0 {
			_, err = ledgers.Create(ctx, sub, l)
		} else {
			_, err = ledgers.Update(ctx, sub, v, l)
		}
		if errors.Is(err, mongodoc.ErrExists) || errors.Is(err, mongodoc.ErrStale) || errors.Is(err, mongodoc.ErrNotFound) {
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
	l, _, err := mongodoc.New[ledgerDoc](s.ledgers).Get(ctx, sub)
	if errors.Is(err, mongodoc.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("push ledger: %w", err)
	}
	return l.Pending, nil
}
