package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// The hand-written encoding of the poll answer is byte for byte what encoding/json writes.
func TestAppendStatusMatchesEncodingJSON(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 37, 1, 123456789, time.UTC)
	cases := []StatusDTO{
		{Status: "INITIATED", ID: "2f0b6f4e-1", Sub: "alice", Type: "TOTP", ExpiresAt: now, UpdatedAt: now.Add(-time.Second)},
		{Status: "ENROLLED", ID: "x", Sub: "bob", Type: "TOTP", ExpiresAt: now.Truncate(time.Second), UpdatedAt: now.In(time.FixedZone("x", 3600)), DeviceID: "d-1", PHID: "p-1"},
		{Status: "SCANNED", ID: "y", Sub: "weird \"sub\" \\ <&> \n\t\x01 é 日本 \u2028 \xff", Type: "TOTP"},
		{Status: "ENROLLED", Sub: "", PHID: "only-ph"},
		{Status: "AUTHENTICATED", ID: "z", Sub: "alice", Type: "BACKUPCODE", MFAToken: "eyJhbGciOiJFUzI1NiJ9.e30.sig-_"},
		{Status: "INITIATED", ID: "s", Sub: "alice", Type: "SMS", Destination: "+49 ••• •••••• 78", Delivery: "sent"},
		{Status: "AUTHENTICATED", ID: "e", Sub: "alice", Type: "EMAIL", Destination: "a***@example.org", Delivery: "pending", MFAToken: "t"},
	}
	for _, d := range cases {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(d); err != nil {
			t.Fatal(err)
		}
		got := appendStatus(nil, d)
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("encoding differs:\n got %s\nwant %s", got, want.Bytes())
		}
	}
}
