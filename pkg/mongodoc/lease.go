package mongodoc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// LeaseCollection holds one relay lease per collection with events: {_id: <collection>, v,
// owner}. The holder bumps v every LeaseTTL/3 (at most every second); the others read it as often, and one takes the
// lease over once v has not moved for LeaseTTL by its own clock, so no two replicas' clocks are
// compared. Every change of the document is a compare-and-set on v (with a version claim on
// FerretDB, as for any document).
const LeaseCollection = "relay_leases"

// DefaultLeaseTTL is how long a lease's version must stand still before another replica takes
// it over: a killed relay's collection is relayed again within about LeaseTTL plus one renewal.
const DefaultLeaseTTL = 3 * time.Second

type leaseDoc struct {
	ID    string `bson:"_id"`
	V     int64  `bson:"v"`
	Owner string `bson:"owner"`
}

// lease is one relay's view of its collection's lease. Its keeper (refresh, release) runs in
// one goroutine; the relay's loop reads only until.
type lease struct {
	c     *Collection // the lease collection, with version claims where needed
	id    string      // the relayed collection's name
	owner string
	ttl   time.Duration

	v       int64     // the version last seen
	owned   bool      // v is ours
	renewed time.Time // when we last set v, by our clock
	seenV   time.Time // when v last changed, by our clock
	holder  string    // the owner last seen

	// until is the end (Unix ns) of the time this relay may relay: half a TTL after it last set
	// the lease's version. Another replica takes over a full TTL after it last saw the version
	// move, so an owner whose renewals stall stops before it can be taken over.
	until atomic.Int64
}

func newLease(c *Collection, owner string, ttl time.Duration) *lease {
	lc := &Collection{Coll: c.Coll.Database().Collection(LeaseCollection), claimTimeout: ttl}
	if c.claims != nil {
		lc.claims = c.Coll.Database().Collection(LeaseCollection + "_cas")
	}
	return &lease{c: lc, id: c.Coll.Name(), owner: owner, ttl: ttl}
}

// newOwner names a relay for its lease: host, process and a random part, so a restarted
// process is a new owner.
func newOwner() string {
	host, _ := os.Hostname()
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + rand.Text()[:8]
}

// held says whether this relay may relay now (see until).
func (l *lease) held(now time.Time) bool { return now.UnixNano() < l.until.Load() }

// keep refreshes the lease every TTL/3 (at most every second, so that a lease let go is taken
// soon whatever the TTL) until ctx ends, waking the relay when it takes the lease and logging
// each change of hands.
func (r *Relay) keep(ctx context.Context, l *lease) {
	t := time.NewTicker(min(l.ttl/3, time.Second))
	defer t.Stop()
	failing := false
	for {
		took, lost, err := l.refresh(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && !failing:
			r.Log.Warn("relay: reading the relay lease failed; retrying", "collection", l.id, "err", err)
		case took:
			r.Log.Info("relay: took the relay lease; this replica relays the collection", "collection", l.id, "owner", l.owner)
			r.C.Wake()
		case lost:
			r.Log.Info("relay: relay lease taken over; another replica relays the collection", "collection", l.id, "holder", l.holder)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh renews the lease if this relay holds it, takes it if it is free or has expired, and
// otherwise notes how long it has stood still. It reports a change of holder as took or lost.
func (l *lease) refresh(ctx context.Context) (took, lost bool, err error) {
	wasHeld := l.owned
	defer func() {
		took, lost = !wasHeld && l.owned, wasHeld && !l.owned
	}()
	ctx, cancel := context.WithTimeout(ctx, l.ttl/2)
	defer cancel()
	now := time.Now()
	var d leaseDoc
	err = l.c.Coll.FindOne(ctx, bson.D{{Key: fieldID, Value: l.id}}).Decode(&d)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		_, err = l.c.Coll.InsertOne(ctx, leaseDoc{ID: l.id, V: 1, Owner: l.owner})
		if mongo.IsDuplicateKeyError(err) {
			return took, lost, nil // another replica was first; read it next time
		}
		if err != nil {
			return took, lost, fmt.Errorf("relay lease of %s: %w", l.id, err)
		}
		l.hold(1, now)
		return took, lost, nil
	case err != nil:
		return took, lost, fmt.Errorf("relay lease of %s: %w", l.id, err)
	}
	if d.V != l.v || d.Owner != l.holder {
		l.v, l.seenV, l.holder = d.V, now, d.Owner
	}
	switch {
	case d.Owner == l.owner: // ours: renew
	case d.Owner == "" || now.Sub(l.seenV) >= l.ttl: // released, or its owner stopped renewing
	default:
		l.drop()
		return took, lost, nil
	}
	if err := l.set(ctx, d.V, l.owner); err != nil {
		if errors.Is(err, ErrStale) {
			l.drop() // someone else moved it: we see who next time
			return took, lost, nil
		}
		return took, lost, err
	}
	l.hold(d.V+1, now)
	return took, lost, nil
}

// hold records that this relay set the lease to version v at now.
func (l *lease) hold(v int64, now time.Time) {
	l.v, l.owned, l.renewed, l.seenV, l.holder = v, true, now, now, l.owner
	l.until.Store(now.Add(l.ttl / 2).UnixNano())
}

func (l *lease) drop() {
	l.owned = false
	l.until.Store(0)
}

// set moves the lease from version v to v+1 with owner; ErrStale if it is no longer at v.
func (l *lease) set(ctx context.Context, v int64, owner string) error {
	unlock, err := l.c.lock(ctx, l.id, v+1)
	if err != nil {
		return err
	}
	res, err := l.c.Coll.UpdateOne(ctx, bson.D{{Key: fieldID, Value: l.id}, {Key: fieldVersion, Value: v}},
		bson.D{{Key: "$set", Value: bson.D{{Key: fieldVersion, Value: v + 1}, {Key: "owner", Value: owner}}}})
	unlock(err)
	if err != nil {
		return fmt.Errorf("relay lease of %s: %w", l.id, err)
	}
	if res.MatchedCount == 0 {
		return ErrStale
	}
	return nil
}

// release hands the lease back on a clean stop, so another replica takes it at its next
// refresh instead of after a TTL. Call it once the keeper has stopped.
func (l *lease) release() {
	if !l.owned {
		return
	}
	l.drop()
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl/2)
	defer cancel()
	_ = l.set(ctx, l.v, "")
}
