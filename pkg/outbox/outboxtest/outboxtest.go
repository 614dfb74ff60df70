// Package outboxtest holds the parts of the services' store conformance suites that are the
// same for every store with a transactional outbox (pkg/outbox), whatever it stores: events
// written with a document are relayed exactly once, and of writers racing from one version
// exactly one wins. Each suite supplies the writes of its own documents.
package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats.go/jetstream"
)

// Relay is a backend's outbox relay.
type Relay struct {
	// Run runs the relay, publishing to js, until ctx ends.
	Run func(ctx context.Context, js jetstream.JetStream)
	// Pending counts the documents whose events are not yet relayed (the outbox depth).
	Pending func(ctx context.Context) (int, error)
}

// Writes writes documents with events to the store under test while no relay runs. It
// returns the ids of the events of accepted writes, which must be published once each, and
// of refused (stale) writes, which must never be.
type Writes func(t *testing.T) (want, refused []string)

// RelayedExactlyOnce checks the outbox contract on an embedded NATS server: the events of first,
// written while no relay runs, are published once a relay starts; a refused write's events
// never are; once the outbox is drained and the relay stopped, a relay started again after
// second publishes only what second wrote, again exactly once.
func RelayedExactlyOnce(t *testing.T, r Relay, first, second Writes) {
	t.Helper()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	if _, err := natsx.EnsureEventStream(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	published := natstest.CountPublishes(t, srv.Connect(t), "mfa.events.>")
	var want, refused []string
	for _, writes := range []Writes{first, second} {
		w, ref := writes(t)
		want, refused = append(want, w...), append(refused, ref...)
		stop := run(t, r.Run, js)
		published.Wait(t, 30*time.Second, w...)
		waitDrained(t, r.Pending)
		stop()
	}
	published.Sync(t, js.Conn(), "mfa.events.marker")
	for _, id := range want {
		if n := published.Count(id); n != 1 {
			t.Errorf("event %s published %d times, want exactly once", id, n)
		}
	}
	for _, id := range refused {
		if n := published.Count(id); n != 0 {
			t.Errorf("event %s of a refused write published %d times", id, n)
		}
	}
}

// OneWinner starts writers compare-and-set writes of one document, all from the same version
// (write(i) is writer i's), at once: exactly one must succeed and the others fail with
// errStale. It returns the winner's i, for the caller to check the stored document against.
func OneWinner(t *testing.T, writers int, errStale error, write func(i int) error) int {
	t.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []int
		stale   int
	)
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			err := write(i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, i)
			case errors.Is(err, errStale):
				stale++
			default:
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 || stale != writers-1 {
		t.Fatalf("winners %v, stale %d; want one winner and %d stale", winners, stale, writers-1)
	}
	return winners[0]
}

// waitDrained waits until the backend's outbox is empty: the relay has published everything
// written, so a relay started later must publish none of it again.
func waitDrained(t *testing.T, pending func(context.Context) (int, error)) {
	t.Helper()
	natstest.Eventually(t, 30*time.Second, func() error {
		n, err := pending(context.Background())
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("%d documents with events not yet relayed", n)
		}
		return nil
	})
}

// run runs relay on js and returns a function that stops it and waits for it.
func run(t *testing.T, relay func(context.Context, jetstream.JetStream), js jetstream.JetStream) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); relay(ctx, js) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}
