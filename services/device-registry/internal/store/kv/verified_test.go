package kv_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store/kv"
)

// TestIndexNotesVerifiedCredentials: the user's index says "has a verified credential of this
// method" only for a credential that was verified and noted and is still there; an index an
// older version rewrote (without the notes) says nothing, so readiness reads the credentials.
func TestIndexNotesVerifiedCredentials(t *testing.T) {
	ctx := context.Background()
	js := natstest.Start(t).JetStream(t)
	bucket, err := natsx.EnsureKV(ctx, js, kv.BucketConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	store := kv.New(bucket, js)
	var _ device.VerifiedIndex = store
	has := func(sub, m string) bool {
		t.Helper()
		phids, err := store.Verified(ctx, sub, m)
		if err != nil {
			t.Fatal(err)
		}
		return len(phids) > 0
	}
	c, err := store.Create(ctx, credentialOf("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.NoteVerified(ctx, c); err != nil || has("alice", "TOTP") {
		t.Fatalf("a pending credential is noted (err %v)", err)
	}
	c.Verified = true
	if c, err = store.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	if has("alice", "TOTP") {
		t.Fatal("noted before NoteVerified")
	}
	if err := store.NoteVerified(ctx, c); err != nil {
		t.Fatal(err)
	}
	if !has("alice", "TOTP") || has("alice", "SMS") || has("bob", "TOTP") {
		t.Fatalf("after the note: alice TOTP %v, alice SMS %v, bob TOTP %v; want true false false",
			has("alice", "TOTP"), has("alice", "SMS"), has("bob", "TOTP"))
	}

	// An older replica rewrites the index without the notes: nothing is known, nothing is wrong.
	key := "i." + hashOf("alice")
	if _, err := bucket.Put(ctx, key, []byte(`{"doc":{"ph_ids":["`+c.PHID+`"]}}`)); err != nil {
		t.Fatal(err)
	}
	if has("alice", "TOTP") {
		t.Fatal("an index without notes says yes")
	}
	if err := store.NoteVerified(ctx, c); err != nil || !has("alice", "TOTP") {
		t.Fatalf("noted again: %v", err)
	}

	// A removed credential is no longer noted, and a late note of it changes nothing.
	if err := store.Remove(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := store.NoteVerified(ctx, c); err != nil || has("alice", "TOTP") {
		t.Fatalf("a removed credential is still noted (err %v)", err)
	}
}

// hashOf is the key token of a user's documents: sha256(sub), the first 32 hex digits.
func hashOf(sub string) string {
	h := sha256.Sum256([]byte(sub))
	return hex.EncodeToString(h[:])[:32]
}
