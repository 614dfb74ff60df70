package kv_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/kvdoc"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
	"github.com/mfaflow/mfaflow/services/status/internal/store/kv"
	"github.com/mfaflow/mfaflow/services/status/internal/store/storetest"
)

// runningView opens a store on a fresh server and a view in front of it, kept current by the
// watch of the bucket's outbox relay, as the status service runs it.
func runningView(t *testing.T, srv *natstest.Server, tune ...func(*kv.View)) *kv.View {
	t.Helper()
	js := srv.JetStream(t)
	s, err := kv.Open(context.Background(), js, "")
	if err != nil {
		t.Fatal(err)
	}
	v := kv.NewView(s)
	for _, f := range tune {
		f(v)
	}
	relay := &kvdoc.Relay{KV: s.KV(), JS: js, Filter: kv.DocFilter, Log: slog.New(slog.DiscardHandler), Tap: v}
	s.FollowRelay(relay.Relayed)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	ready := make(chan struct{})
	go func() { defer func() { done <- struct{}{} }(); v.Run(ctx, ready) }()
	go func() { defer func() { done <- struct{}{} }(); _ = relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("view watch did not start")
	}
	return v
}

// viewAndPeer is a running view, a second store on the same bucket (another replica), and an
// enrollment created through the view.
func viewAndPeer(t *testing.T, tune ...func(*kv.View)) (*kv.View, *kv.Store, enrollment.Enrollment) {
	t.Helper()
	srv := natstest.Start(t)
	v := runningView(t, srv, tune...)
	other, err := kv.Open(context.Background(), srv.JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := v.Create(context.Background(), newEnrollment(time.Now().UTC()))
	if err != nil {
		t.Fatal(err)
	}
	return v, other, e
}

func newEnrollment(now time.Time) enrollment.Enrollment {
	return enrollment.Enrollment{
		ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Method: "TOTP",
		State: enrollment.Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour), Seq: 1,
	}
}

// The view is a Store like any other.
func TestViewConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		v := runningView(t, natstest.Start(t))
		return storetest.Backend{Store: v, SignIns: v.SignIns()}
	})
}

// A write through the view is answered from memory by the very next read, with no waiting.
func TestViewReadYourWrites(t *testing.T) {
	ctx := context.Background()
	v := runningView(t, natstest.Start(t))
	e, err := v.Create(ctx, newEnrollment(time.Now().UTC()))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(2); seq <= 4; seq++ {
		next := e
		next.Seq = seq
		next.FailedAttempts = int(seq)
		if e, err = v.Update(ctx, next); err != nil {
			t.Fatal(err)
		}
		hits, _ := v.Stats()
		got, err := v.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if h, _ := v.Stats(); h != hits+1 {
			t.Fatalf("read after write was not answered from the view (hits %d → %d)", hits, h)
		}
		if got.Seq != seq || got.Version != e.Version {
			t.Fatalf("read after write: seq %d rev %d, want seq %d rev %d", got.Seq, got.Version, seq, e.Version)
		}
	}
}

// A write made behind the view's back (another replica) reaches it through the watch.
func TestViewFollowsOtherWriters(t *testing.T) {
	ctx := context.Background()
	v, other, e := viewAndPeer(t)
	next := e
	next.State, next.Seq = enrollment.Cancelled, 2
	if _, err := other.Update(ctx, next); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		got, err := v.Get(ctx, e.ID)
		if err != nil {
			return err
		}
		if got.State != enrollment.Cancelled || got.Seq != 2 {
			return errors.New("view still shows " + string(got.State))
		}
		return nil
	})
	if hits, _ := v.Stats(); hits == 0 {
		t.Fatal("the view never answered from memory")
	}
}

// A sign-in written behind the view's back reaches it through the watch as a sign-in: the view
// decodes each document as the aggregate its kind names.
func TestViewFollowsOtherWritersOfSignIns(t *testing.T) {
	ctx := context.Background()
	v, other, _ := viewAndPeer(t)
	now := time.Now().UTC()
	a, err := v.SignIns().Create(ctx, signin.Authentication{
		ID: uuid.NewString(), ExchangeID: uuid.NewString(), Sub: "alice", Method: method.TOTP, State: signin.Initiated,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour), Seq: 1, Initiator: "alice", ClientID: "alice",
	})
	if err != nil {
		t.Fatal(err)
	}
	next := a
	next.State, next.PHID, next.AuthTime, next.Seq = signin.Authenticated, "ph-1", now, 2
	if _, err := other.SignIns().Update(ctx, next); err != nil {
		t.Fatal(err)
	}
	hits, _ := v.Stats()
	natstest.Eventually(t, 5*time.Second, func() error {
		got, err := v.SignIns().Get(ctx, a.ID)
		if err != nil {
			return err
		}
		if got.State != signin.Authenticated || got.Seq != 2 || got.PHID != "ph-1" {
			return errors.New("view still shows " + string(got.State))
		}
		return nil
	})
	if after, _ := v.Stats(); after == hits {
		t.Fatal("the view never answered from memory")
	}
	if _, err := v.Get(ctx, a.ID); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("the sign-in read as an enrollment: %v", err)
	}
}

// An older version fed after a newer one (a late watch message, a slow read) is ignored.
func TestViewNeverGoesBackwards(t *testing.T) {
	ctx := context.Background()
	v := runningView(t, natstest.Start(t))
	e, err := v.Create(ctx, newEnrollment(time.Now().UTC()))
	if err != nil {
		t.Fatal(err)
	}
	newer := e
	newer.State, newer.Seq, newer.Version = enrollment.Scanned, 5, e.Version+10
	v.Observe(newer)
	older := e
	older.State, older.Seq, older.Version = enrollment.Initiated, 4, e.Version+20
	v.Observe(older)
	sameSeqOlderRev := newer
	sameSeqOlderRev.Version, sameSeqOlderRev.State = e.Version+9, enrollment.Initiated
	v.Observe(sameSeqOlderRev)
	got, err := v.Get(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 5 || got.State != enrollment.Scanned || got.Version != newer.Version {
		t.Fatalf("view went backwards: %+v", got)
	}
	// The same sequence at a newer revision (the value written again without a new write of
	// the enrollment) is taken.
	relayed := newer
	relayed.Version++
	v.Observe(relayed)
	if got, _ := v.Get(ctx, e.ID); got.Version != relayed.Version {
		t.Fatalf("same seq, newer revision not taken: rev %d", got.Version)
	}
}

// A write that loses compare-and-set against a stale view entry drops it, so the retry reads
// the bucket.
func TestViewStaleEntryDroppedOnConflict(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Start(t)
	v := runningView(t, srv)
	e, err := v.Create(ctx, newEnrollment(time.Now().UTC()))
	if err != nil {
		t.Fatal(err)
	}
	// Make the view's entry stale: it claims a revision the bucket does not have.
	stale := e
	stale.Seq, stale.Version = 1, e.Version+100
	v.Observe(stale)
	next := stale
	next.Seq = 2
	if _, err := v.Update(ctx, next); !errors.Is(err, enrollment.ErrStale) {
		t.Fatalf("update from a stale entry: %v", err)
	}
	got, err := v.Get(ctx, e.ID)
	if err != nil || got.Version != e.Version {
		t.Fatalf("after a lost compare-and-set the view must read the bucket: %+v %v", got, err)
	}
}

// Memory stays bounded: at most Cap entries; terminal ones go after KeepTerminal, open ones past
// their expiry; whatever is not held is read from the bucket, and unknown ids stay not found.
func TestViewBounded(t *testing.T) {
	ctx := context.Background()
	v := runningView(t, natstest.Start(t))
	start := time.Now().UTC()
	clock := testkit.NewClock(start)
	v.Now, v.Cap, v.KeepTerminal = clock.Now, 3, time.Minute

	var all []enrollment.Enrollment
	for range 6 {
		e, err := v.Create(ctx, newEnrollment(start))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, e)
		if n := v.Len(); n > 3 {
			t.Fatalf("view holds %d entries, cap 3", n)
		}
	}
	for _, e := range all {
		if got, err := v.Get(ctx, e.ID); err != nil || got.ID != e.ID {
			t.Fatalf("evicted enrollment not read from the bucket: %v", err)
		}
		if n := v.Len(); n > 3 {
			t.Fatalf("view holds %d entries, cap 3", n)
		}
	}
	if _, err := v.Get(ctx, uuid.NewString()); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}

	v.Cap = 100
	ended := all[0]
	ended.State, ended.Seq = enrollment.Cancelled, 2
	if _, err := v.Update(ctx, ended); err != nil {
		t.Fatal(err)
	}
	open := all[1]
	if _, err := v.Get(ctx, open.ID); err != nil {
		t.Fatal(err)
	}
	if v.Len() < 2 {
		t.Fatalf("view holds %d entries, want the ended and the open one", v.Len())
	}
	clock.Advance(59 * time.Second)
	v.Prune()
	hits, _ := v.Stats()
	if _, err := v.Get(ctx, ended.ID); err != nil {
		t.Fatal(err)
	}
	if h, _ := v.Stats(); h != hits+1 {
		t.Fatal("terminal entry evicted before KeepTerminal")
	}
	clock.Advance(time.Second)
	v.Prune()
	_, misses := v.Stats()
	if _, err := v.Get(ctx, ended.ID); err != nil {
		t.Fatal(err)
	}
	if _, m := v.Stats(); m != misses+1 {
		t.Fatal("terminal entry still held after KeepTerminal")
	}
	// Past expiry, open entries go too.
	clock.Advance(time.Hour)
	v.Prune()
	if n := v.Len(); n != 0 {
		t.Fatalf("view holds %d entries after every enrollment expired or ended long ago", n)
	}
}

// A view whose watch is not running answers nothing from memory and records nothing.
func TestViewWithoutWatchReadsTheBucket(t *testing.T) {
	ctx := context.Background()
	s, err := kv.Open(ctx, natstest.Start(t).JetStream(t), "")
	if err != nil {
		t.Fatal(err)
	}
	v := kv.NewView(s)
	e, err := v.Create(ctx, newEnrollment(time.Now().UTC()))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := v.Get(ctx, e.ID); err != nil {
			t.Fatal(err)
		}
	}
	if hits, misses := v.Stats(); hits != 0 || misses != 2 || v.Len() != 0 {
		t.Fatalf("unwatched view: hits %d misses %d len %d", hits, misses, v.Len())
	}
}

// A watch that stalls without ending (its node died and the ordered consumer has not noticed)
// must not leave the view answering a peer's old state: once it cannot confirm that it is
// current for MaxLag, Gets read the bucket; when the watch delivers again, memory answers again.
func TestViewStopsAnsweringFromAStalledWatch(t *testing.T) {
	ctx := context.Background()
	const maxLag = 200 * time.Millisecond
	v, other, e := viewAndPeer(t, func(v *kv.View) { v.MaxLag = maxLag })
	v.PauseWatch(true)
	next := e
	next.State, next.Seq = enrollment.Cancelled, 2
	if _, err := other.Update(ctx, next); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	natstest.Eventually(t, 5*time.Second, func() error {
		got, err := v.Get(ctx, e.ID)
		if err != nil {
			return err
		}
		if got.State != enrollment.Cancelled {
			return errors.New("the stalled view still answers " + string(got.State))
		}
		return nil
	})
	// Bounded by MaxLag plus a probe interval and scheduling, not by the consumer's own
	// heartbeat timeout (seconds).
	if lag := time.Since(written); lag > 4*maxLag+time.Second {
		t.Fatalf("the stalled view answered the old state for %v", lag)
	}
	v.PauseWatch(false)
	natstest.Eventually(t, 5*time.Second, func() error {
		hits, _ := v.Stats()
		got, err := v.Get(ctx, e.ID)
		if err != nil {
			return err
		}
		if h, _ := v.Stats(); h != hits+1 || got.State != enrollment.Cancelled {
			return errors.New("memory does not answer again after the watch recovered")
		}
		return nil
	})
}

// The watch does not decode a value of an id this replica is writing, since the writer records
// its own; but when a peer's newer write went past meanwhile, the writer's older value must not
// be recorded over it: the entry is dropped and the next read goes to the bucket.
func TestViewWriterDoesNotRecordOverANewerPeerWrite(t *testing.T) {
	ctx := context.Background()
	v, other, e := viewAndPeer(t)
	tok := v.BeginWrite(e.ID)
	peer := e
	peer.State, peer.Seq = enrollment.Cancelled, 2
	written, err := other.Update(ctx, peer)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if v.PassedOver(e.ID) < written.Version {
			return errors.New("the watch has not passed over the peer's write")
		}
		return nil
	})
	// This replica's own write, older than the peer's (as if its answer came back late).
	v.EndWrite(tok, e, true)
	got, err := v.Get(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != enrollment.Cancelled || got.Version != written.Version {
		t.Fatalf("view answers %s at revision %d, want the peer's CANCELLED at %d", got.State, got.Version, written.Version)
	}

	// A write that is the newest value is recorded and answered from memory.
	next := got
	next.State, next.Seq = enrollment.Expired, 3
	if next, err = v.Update(ctx, next); err != nil {
		t.Fatal(err)
	}
	hits, _ := v.Stats()
	if got, err = v.Get(ctx, e.ID); err != nil || got.Version != next.Version {
		t.Fatalf("read after write: %+v %v", got, err)
	}
	if h, _ := v.Stats(); h != hits+1 {
		t.Fatal("the view did not answer its own write from memory")
	}
}
