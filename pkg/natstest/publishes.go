package natstest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publishes counts every message published on a subject filter by its Nats-Msg-Id, duplicates
// included: the stream's dedupe hides a doubled publish, a core subscription does not. Outbox
// tests use it to prove that each event is relayed exactly once.
type Publishes struct {
	nc     *nats.Conn
	filter string
	mu     sync.Mutex
	counts map[string]int
}

// CountPublishes subscribes on nc to filter (e.g. "mfa.events.>") until tb ends.
func CountPublishes(tb testing.TB, nc *nats.Conn, filter string) *Publishes {
	tb.Helper()
	p := &Publishes{nc: nc, filter: filter, counts: map[string]int{}}
	sub, err := nc.Subscribe(filter, func(m *nats.Msg) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.counts[m.Header.Get(jetstream.MsgIDHeader)]++
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// Count is how often a message with Nats-Msg-Id id has been seen.
func (p *Publishes) Count(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[id]
}

// Wait waits until every id has been seen at least once.
func (p *Publishes) Wait(tb testing.TB, deadline time.Duration, ids ...string) {
	tb.Helper()
	Eventually(tb, deadline, func() error {
		for _, id := range ids {
			if p.Count(id) == 0 {
				return fmt.Errorf("message %s not published yet", id)
			}
		}
		return nil
	})
}

// Sync publishes a marker on via (the connection the publishers used) to a subject of the
// filter and waits until it is counted: every message published on via before it is counted
// by then. subject must match the filter.
func (p *Publishes) Sync(tb testing.TB, via *nats.Conn, subject string) {
	tb.Helper()
	marker := "marker-" + uuid.NewString()
	m := &nats.Msg{Subject: subject, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, marker)
	if err := via.PublishMsg(m); err != nil {
		tb.Fatal(err)
	}
	Eventually(tb, 10*time.Second, func() error {
		if p.Count(marker) == 0 {
			return errors.New("marker not yet counted")
		}
		return nil
	})
}
