package mongo_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"github.com/mfaflow/mfaflow/services/status/internal/store/mongo"
	"github.com/mfaflow/mfaflow/services/status/internal/store/storetest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestConformance runs the status store suite (enrollments and sign-ins) on a fresh database per subtest, on the
// server of MFA_MONGODB_URI or an embedded FerretDB.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		s, err := mongo.Open(t.Context(), mongotest.Database(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		return storetest.Backend{Store: s, SignIns: s.SignIns(), Relay: func(ctx context.Context, js jetstream.JetStream) {
			var wg sync.WaitGroup
			for _, r := range s.Relays(js, nil) {
				r.Poll = 20 * time.Millisecond
				wg.Go(func() { _ = r.Run(ctx) })
			}
			wg.Wait()
		}, Pending: func(ctx context.Context) (int, error) {
			total := 0
			for _, r := range s.Relays(nil, nil) {
				n, err := r.Depth(ctx)
				if err != nil {
					return 0, err
				}
				total += int(n)
			}
			return total, nil
		}, Ledger: s}
	})
}
