package store_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/store"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// The stored field names are what documents already written carry: both backends must keep
// reading them. The lists are pinned here, not derived from the tags.
func TestStoredFieldNames(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	full := device.Credential{
		PHID: "ph-1", DeviceID: "d1", Sub: "alice", StatusID: "st-1", Method: "TOTP",
		SealedSecret: []byte{1, 2, 3}, Params: totp.Default, Verified: true, FriendlyName: "Phone",
		Platform: "ios", LastStep: 7, LastStepFor: "x", CreatedAt: at, ExpiresAt: at, VerifiedAt: at,
		LastUsedAt: at, PushKey: &device.PushKey{X: "x", Y: "y"}, PendingID: "p-1", Version: 9,
	}
	bare := device.Credential{PHID: "ph-1", Sub: "alice", StatusID: "st-1", Method: "TOTP", CreatedAt: at}
	all := []string{"ph_id", "device_id", "sub", "status_id", "method", "sealed_secret", "algorithm", "digits", "period",
		"verified", "friendly_name", "platform", "last_step", "last_step_for", "created_at", "expires_at",
		"verified_at", "last_used_at", "push_key", "pending_id"}
	for _, tc := range []struct {
		name     string
		c        device.Credential
		kv, bson []string
	}{
		{"Full", full, all, all},
		{"Bare", bare,
			[]string{"ph_id", "sub", "status_id", "method", "algorithm", "digits", "period", "verified", "created_at"},
			[]string{"ph_id", "sub", "status_id", "method", "algorithm", "digits", "period", "verified", "created_at",
				"expires_at", "verified_at", "last_used_at"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := store.ToDoc(tc.c)
			js, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var kv map[string]any
			if err := json.Unmarshal(js, &kv); err != nil {
				t.Fatal(err)
			}
			bs, err := bson.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var mg bson.M
			if err := bson.Unmarshal(bs, &mg); err != nil {
				t.Fatal(err)
			}
			assertKeys(t, "KV (JSON)", kv, tc.kv)
			assertKeys(t, "MongoDB (BSON)", mg, tc.bson)
			if tc.c.PushKey != nil {
				assertKeys(t, "KV push_key", kv["push_key"].(map[string]any), []string{"x", "y"})
				pk := bson.M{}
				for _, e := range mg["push_key"].(bson.D) {
					pk[e.Key] = e.Value
				}
				assertKeys(t, "MongoDB push_key", pk, []string{"x", "y"})
			}
		})
	}
}

func assertKeys[M ~map[string]any](t *testing.T, what string, m M, want []string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s fields %v, want %v", what, got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := device.Credential{
		PHID: "ph-1", DeviceID: "d1", Sub: "alice", StatusID: "st-1", Method: "PUSH",
		SealedSecret: []byte{1, 2, 3}, Params: totp.Default, Verified: true, FriendlyName: "Phone",
		Platform: "ios", LastStep: 7, LastStepFor: "x", CreatedAt: at, ExpiresAt: at, VerifiedAt: at,
		LastUsedAt: at, PushKey: &device.PushKey{X: "x", Y: "y"}, PendingID: "p-1",
	}
	got := store.ToDomain(store.ToDoc(c), 9)
	want := c
	want.Version = 9
	if gj, _ := json.Marshal(got); string(gj) != string(must(json.Marshal(want))) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	ts := store.Tombstone(c)
	if ts.SealedSecret != nil || ts.LastStep != 0 || ts.LastStepFor != "" || ts.PushKey != nil || ts.Sub != "alice" || ts.PHID != "ph-1" {
		t.Fatalf("tombstone keeps a secret or loses the owner: %+v", ts)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestPasskeyRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := device.Credential{
		PHID: "ph-1", DeviceID: "d1", Sub: "alice", StatusID: "st-1", Method: "WEBAUTHN", Verified: true,
		FriendlyName: "iCloud Keychain", CreatedAt: at, VerifiedAt: at, LastUsedAt: at, LastStep: 1,
		Passkey: &device.Passkey{ID: []byte{1, 2}, PublicKey: []byte{3, 4}, UserHandle: []byte{5}, SignCount: 7, AAGUID: make([]byte, 16),
			Transports: []string{"internal", "hybrid"}, AttestationType: "none", AttestationFormat: "packed", Attachment: "platform",
			UserPresent: true, UserVerified: true, BackupEligible: true, BackupState: true},
	}
	d := store.ToDoc(c)
	bs, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var fromBSON store.CredentialDoc
	if err := bson.Unmarshal(bs, &fromBSON); err != nil {
		t.Fatal(err)
	}
	var fromJSON store.CredentialDoc
	if err := json.Unmarshal(must(json.Marshal(d)), &fromJSON); err != nil {
		t.Fatal(err)
	}
	want := c
	want.Version = 3
	for name, doc := range map[string]store.CredentialDoc{"KV (JSON)": fromJSON, "MongoDB (BSON)": fromBSON} {
		got := store.ToDomain(doc, 3)
		got.CreatedAt, got.VerifiedAt, got.LastUsedAt = got.CreatedAt.UTC(), got.VerifiedAt.UTC(), got.LastUsedAt.UTC()
		if gj, wj := must(json.Marshal(got)), must(json.Marshal(want)); string(gj) != string(wj) {
			t.Errorf("%s round trip:\n got %s\nwant %s", name, gj, wj)
		}
	}
	var kv map[string]any
	if err := json.Unmarshal(must(json.Marshal(d)), &kv); err != nil {
		t.Fatal(err)
	}
	assertKeys(t, "KV passkey", kv["passkey"].(map[string]any), []string{"id", "public_key", "user_handle", "sign_count", "aaguid", "transports",
		"attestation_type", "attestation_format", "attachment", "up", "uv", "be", "bs"})
	if ts := store.Tombstone(c); ts.Passkey != nil {
		t.Fatal("a tombstone keeps the passkey")
	}
}
