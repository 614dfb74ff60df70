package kv_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/kv"
	"github.com/nats-io/nats.go"
)

func credentialOf(sub string) device.Credential {
	status := uuid.NewString()
	return device.Credential{PHID: device.PHIDFor(status), Sub: sub, StatusID: status, Method: "TOTP",
		SealedSecret: []byte("sealed"), CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
}

// TestUserListingCostsOneRead: reading a user's credentials is one read of the user's index
// document plus one per credential, however many other users' credentials the bucket holds
// (with u. keys it was one next-by-subject read per credential more, each a search of the
// stream from the last one found, whose cost grew with what was stored after it).
func TestUserListingCostsOneRead(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	bucket, err := natsx.EnsureKV(ctx, js, kv.BucketConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	store := kv.New(bucket, js)
	if _, err := store.MigrateUserIndex(ctx); err != nil {
		t.Fatal(err)
	}
	nc := js.Conn()
	var (
		mu    sync.Mutex
		reads int
	)
	// Reads are direct gets; other JetStream API traffic in the window (a stream info after a
	// slow reply, say) is not a read of the listing and made the count flaky on a loaded machine.
	sub, err := nc.Subscribe("$JS.API.DIRECT.GET.>", func(m *nats.Msg) { mu.Lock(); reads++; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	listCost := func(user string, want int) int {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		reads = 0
		mu.Unlock()
		cs, err := store.ListBySub(ctx, user)
		if err != nil || len(cs) != want {
			t.Fatalf("ListBySub(%s) = %d credentials, %v; want %d", user, len(cs), err, want)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return reads
	}
	if _, err := store.Create(ctx, credentialOf("alice")); err != nil {
		t.Fatal(err)
	}
	emptyBefore, aliceBefore := listCost("nobody", 0), listCost("alice", 1)
	if emptyBefore != 1 {
		t.Errorf("listing a user without credentials: %d JetStream requests, want 1", emptyBefore)
	}
	for i := range 300 {
		if _, err := store.Create(ctx, credentialOf(fmt.Sprintf("user-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Create(ctx, credentialOf("alice")); err != nil {
		t.Fatal(err)
	}
	if got := listCost("nobody", 0); got != emptyBefore {
		t.Errorf("listing a user without credentials: %d requests after 300 more users, %d before", got, emptyBefore)
	}
	if got := listCost("alice", 2); got != aliceBefore+1 {
		t.Errorf("listing alice's 2 credentials: %d requests after 300 more users, want %d (one more document)", got, aliceBefore+1)
	}
}

// TestUserIndexMigration: a bucket written before the per-user index documents (credentials
// listed only by u.<hash>.<ph_id> keys) still lists every user's credentials, before and after
// MigrateUserIndex, which gives each user a document once and marks the bucket; a removal after
// it leaves the user's listing right.
func TestUserIndexMigration(t *testing.T) {
	ctx := context.Background()
	js := natstest.Start(t).JetStream(t)
	bucket, err := natsx.EnsureKV(ctx, js, kv.BucketConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	// The old layout: documents and u. keys only, as an older registry wrote them.
	old := kv.New(bucket, js)
	var created []device.Credential
	for _, user := range []string{"alice", "alice", "bob"} {
		c, err := old.Create(ctx, credentialOf(user))
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, c)
	}
	for _, user := range []string{"alice", "bob"} {
		h := sha256.Sum256([]byte(user))
		if err := bucket.Purge(ctx, "i."+hex.EncodeToString(h[:])[:32]); err != nil {
			t.Fatal(err)
		}
	}
	if err := bucket.Purge(ctx, kv.UserIndexMarker); err != nil {
		t.Fatal(err)
	}

	store := kv.New(bucket, js)
	count := func(user string) int {
		t.Helper()
		cs, err := store.ListBySub(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return len(cs)
	}
	if a, b := count("alice"), count("bob"); a != 2 || b != 1 {
		t.Fatalf("before the migration: alice %d, bob %d; want 2 and 1", a, b)
	}
	n, err := store.MigrateUserIndex(ctx)
	if err != nil || n != 2 {
		t.Fatalf("migration indexed %d users, %v; want 2", n, err)
	}
	if _, err := bucket.Get(ctx, kv.UserIndexMarker); err != nil {
		t.Fatalf("no marker after the migration: %v", err)
	}
	fresh := kv.New(bucket, js) // another replica, which reads the marker
	if n, err := fresh.MigrateUserIndex(ctx); err != nil || n != 0 {
		t.Fatalf("a second migration indexed %d users, %v; want none", n, err)
	}
	for _, s := range []*kv.Store{store, fresh} {
		if cs, err := s.ListBySub(ctx, "alice"); err != nil || len(cs) != 2 {
			t.Fatalf("after the migration: alice %d, %v; want 2", len(cs), err)
		}
	}
	if err := store.Remove(ctx, created[0]); err != nil {
		t.Fatal(err)
	}
	if cs, err := fresh.ListBySub(ctx, "alice"); err != nil || len(cs) != 1 || cs[0].PHID != created[1].PHID {
		t.Fatalf("after a removal: %+v, %v; want alice's second credential", cs, err)
	}
	if cs, err := fresh.ListBySub(ctx, "carol"); err != nil || len(cs) != 0 {
		t.Fatalf("a user without credentials: %+v, %v", cs, err)
	}
}
