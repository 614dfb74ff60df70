// Package kvdoctest runs kvdoc relays for the store conformance suites of the services' KV
// backends.
package kvdoctest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/nats-io/nats.go/jetstream"
)

// Relays runs relays on one bucket and filter, one after another, and answers for the latest
// (a store follows it with Relayed, as a service follows its own relay).
type Relays struct {
	KV     jetstream.KeyValue
	Filter string

	mu  sync.Mutex
	cur *kvdoc.Relay
}

// Run runs a new relay, publishing to js, until ctx ends.
func (r *Relays) Run(ctx context.Context, js jetstream.JetStream) {
	relay := &kvdoc.Relay{KV: r.KV, JS: js, Filter: r.Filter, Log: slog.New(slog.DiscardHandler)}
	r.mu.Lock()
	r.cur = relay
	r.mu.Unlock()
	_ = relay.Run(ctx)
}

// Relayed is kvdoc.Relay.Relayed of the latest relay; false before the first.
func (r *Relays) Relayed(key string, rev uint64) bool {
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	return cur != nil && cur.Relayed(key, rev)
}

// Pending counts the documents under the filter whose current value carries events (or a purge
// mark) the latest relay has not reported published.
func (r *Relays) Pending(ctx context.Context) (int, error) {
	lister, err := r.KV.ListKeysFiltered(ctx, r.Filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for key := range lister.Keys() {
		e, err := r.KV.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return 0, err
		}
		carries := bytes.Contains(e.Value(), []byte(`"outbox"`)) || bytes.Contains(e.Value(), []byte(`"purge"`))
		if carries && !r.Relayed(key, e.Revision()) {
			n++
		}
	}
	return n, nil
}
