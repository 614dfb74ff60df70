package auth_test

import (
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/auth"
	"github.com/mfaflow/mfaflow/pkg/testkit"
)

// countingVerifier counts the signature checks that reach it.
type countingVerifier struct {
	auth.HS256
	n int
}

func (c *countingVerifier) VerifyUntil(tok string) (auth.Identity, time.Time, error) {
	c.n++
	return c.HS256.VerifyUntil(tok)
}

func TestCacheChecksOnceAndHonoursExpiry(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	hs := auth.HS256{Key: []byte("0123456789abcdef0123456789abcdef"), Now: clock.Now}
	cv := &countingVerifier{HS256: hs}
	c := &auth.Cache{V: cv, Max: 2, Now: clock.Now}
	tok, err := hs.Mint("alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if sub, err := c.Verify(tok); err != nil || sub != "alice" {
			t.Fatalf("verify: %q %v", sub, err)
		}
	}
	if cv.n != 1 {
		t.Fatalf("signature checked %d times for one token, want 1", cv.n)
	}
	// A forged token (same claims, wrong signature) is never accepted, cached or not.
	forged := tok[:len(tok)-2] + "AA"
	if forged == tok {
		forged = tok[:len(tok)-2] + "BB"
	}
	for range 2 {
		if _, err := c.Verify(forged); err == nil {
			t.Fatal("forged token accepted")
		}
	}
	// Past exp plus the 30 s leeway the cached token is refused too.
	clock.Advance(time.Minute + 31*time.Second)
	if _, err := c.Verify(tok); err == nil {
		t.Fatal("expired token accepted from the cache")
	}
	// Bounded.
	for _, sub := range []string{"a", "b", "c", "d"} {
		tk, _ := hs.Mint(sub, time.Minute)
		if got, err := c.Verify(tk); err != nil || got != sub {
			t.Fatalf("verify %s: %q %v", sub, got, err)
		}
		if c.Len() > 2 {
			t.Fatalf("cache holds %d tokens, max 2", c.Len())
		}
	}
}

func TestNewCacheOnlyWrapsExpiringVerifiers(t *testing.T) {
	hs := auth.HS256{Key: []byte("0123456789abcdef0123456789abcdef")}
	if _, ok := auth.NewCache(hs, 0).(*auth.Cache); !ok {
		t.Fatal("HS256 not cached")
	}
	var plain auth.Verifier = plainVerifier{}
	if _, ok := auth.NewCache(plain, 0).(*auth.Cache); ok {
		t.Fatal("a verifier without expiry was cached")
	}
}

type plainVerifier struct{}

func (plainVerifier) Verify(string) (string, error) { return "x", nil }
