package webhooksig_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/webhooksig"
)

// TestSignMatchesTheDocumentedScheme recomputes the signature from its definition, so a change
// of the scheme (which every receiver depends on) fails here.
func TestSignMatchesTheDocumentedScheme(t *testing.T) {
	secret, body, ts := []byte("0123456789abcdef0123456789abcdef"), []byte(`{"to":"+4915112345678"}`), "1767225600"
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "." + string(body)))
	if got, want := webhooksig.Sign(secret, ts, body), "v1="+hex.EncodeToString(m.Sum(nil)); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	secret, body := []byte("0123456789abcdef0123456789abcdef"), []byte(`{"x":1}`)
	now := time.Unix(1767225600, 0)
	h := http.Header{}
	webhooksig.SetHeaders(h, secret, "d-1", now, body)
	if h.Get(webhooksig.HeaderDelivery) != "d-1" || h.Get(webhooksig.HeaderTimestamp) != "1767225600" {
		t.Fatalf("headers: %v", h)
	}
	ts, sig := h.Get(webhooksig.HeaderTimestamp), h.Get(webhooksig.HeaderSignature)
	t.Run("OK", func(t *testing.T) {
		if err := webhooksig.Verify(secret, ts, sig, body, now.Add(time.Minute), 5*time.Minute); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ErrSignature", func(t *testing.T) {
		for name, c := range map[string]struct {
			secret, body []byte
			sig          string
		}{
			"other body":   {secret, []byte(`{"x":2}`), sig},
			"other secret": {[]byte("another secret, just as long....."), body, sig},
			"no prefix":    {secret, body, sig[3:]},
			"not hex":      {secret, body, "v1=zz"},
		} {
			if err := webhooksig.Verify(c.secret, ts, c.sig, c.body, now, 5*time.Minute); !errors.Is(err, webhooksig.ErrSignature) {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
	t.Run("ErrTimestamp", func(t *testing.T) {
		for _, at := range []time.Time{now.Add(6 * time.Minute), now.Add(-6 * time.Minute)} {
			if err := webhooksig.Verify(secret, ts, sig, body, at, 5*time.Minute); !errors.Is(err, webhooksig.ErrTimestamp) {
				t.Errorf("at %v: %v", at, err)
			}
		}
		if err := webhooksig.Verify(secret, "soon", sig, body, now, 5*time.Minute); !errors.Is(err, webhooksig.ErrTimestamp) {
			t.Errorf("malformed: %v", err)
		}
	})
}
