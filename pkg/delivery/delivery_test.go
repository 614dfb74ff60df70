package delivery_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/delivery"
)

func TestSealOpen(t *testing.T) {
	key := bytes.Repeat([]byte{7}, delivery.KeySize)
	r := delivery.Request{ID: "d1", Channel: delivery.Email, To: "alice@example.org", Masked: "a***@example.org",
		Kind: delivery.SignInCode, Code: "123456", Sub: "alice", ExpiresAt: time.Unix(1_800_000_000, 0).UTC()}
	sealed, err := delivery.Seal(key, r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("123456")) || bytes.Contains(sealed, []byte("alice@example.org")) {
		t.Fatal("the sealed request shows the code or the address")
	}
	got, err := delivery.Open(key, sealed)
	if err != nil || got != r {
		t.Fatalf("Open = %+v, %v; want %+v", got, err, r)
	}
	if _, err := delivery.Open(bytes.Repeat([]byte{8}, delivery.KeySize), sealed); !errors.Is(err, delivery.ErrUnreadable) {
		t.Errorf("another key: %v, want ErrUnreadable", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := delivery.Open(key, sealed); !errors.Is(err, delivery.ErrUnreadable) {
		t.Errorf("tampered: %v, want ErrUnreadable", err)
	}
	if _, err := delivery.Seal(key, delivery.Request{ID: "x", Channel: "fax", To: "1", Kind: "k", Sub: "s", ExpiresAt: time.Now()}); err == nil {
		t.Error("an unknown channel was sealed")
	}
}

func TestMaskEmail(t *testing.T) {
	for in, want := range map[string]string{"alice@example.org": "a***@example.org", "élise@x.de": "é***@x.de", "nope": "***"} {
		if got := delivery.MaskEmail(in); got != want {
			t.Errorf("MaskEmail(%q) = %q, want %q", in, got, want)
		}
	}
}
