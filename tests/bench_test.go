package tests_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// BenchmarkInitiate measures a whole initiation through the dev stack: HTTP, JWT, the registry
// creating and sealing a secret, the status service recording the enrollment (KV + outbox),
// and the QR rendering, per format.
func BenchmarkInitiate(b *testing.B) {
	// One user starts every enrollment: the per-user limit (0 = off) would measure 429s.
	st := harness.Start(b, harness.Options{}, map[string]string{"MFA_USER_START_RATE": "0"})
	tok := st.Token(b, "bench")
	for _, format := range []string{"png", "svg", "none"} {
		b.Run(format, func(b *testing.B) {
			for b.Loop() {
				if r := st.Do(b, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr="+format, tok, nil); r.Status != http.StatusOK {
					b.Fatalf("status %d: %s", r.Status, r.Body)
				}
			}
		})
	}
}

// BenchmarkPoll measures a status poll, plain and conditional (304).
func BenchmarkPoll(b *testing.B) {
	st := harness.Start(b, harness.Options{}, map[string]string{"MFA_POLL_RATE": "0"})
	tok := st.Token(b, "bench")
	var in initiateResponse
	st.MustJSON(b, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", tok, nil, http.StatusOK, &in)
	path := "/verification-srv/verificationstatus/" + in.StatusID
	etag := st.Do(b, http.MethodGet, path, tok, nil).Header.Get("ETag")
	b.Run("200", func(b *testing.B) {
		for b.Loop() {
			if r := st.Do(b, http.MethodGet, path, tok, nil); r.Status != http.StatusOK {
				b.Fatalf("status %d", r.Status)
			}
		}
	})
	b.Run("304", func(b *testing.B) {
		for b.Loop() {
			if r := st.Do(b, http.MethodGet, path, tok, nil, "If-None-Match", etag); r.Status != http.StatusNotModified {
				b.Fatalf("status %d", r.Status)
			}
		}
	})
}

// BenchmarkCompanionEnrollment measures the companion's part of an enrollment over one
// websocket: scan, then enroll with a code (the registry opens the secret and checks it).
func BenchmarkCompanionEnrollment(b *testing.B) {
	st := harness.Start(b, harness.Options{}, map[string]string{"MFA_USER_START_RATE": "0"})
	tok := st.Token(b, "bench")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client := dialB(b, st)
	for b.Loop() {
		b.StopTimer()
		var in initiateResponse
		st.MustJSON(b, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", tok, nil, http.StatusOK, &in)
		code := codeForB(b, in.TOTPSecret)
		b.StartTimer()
		if _, err := client.Scan(ctx, in.ExchangeID.ExchangeID, protocol.Device{DeviceID: "bench"}); err != nil {
			b.Fatal(err)
		}
		if _, err := client.Enroll(ctx, in.ExchangeID.ExchangeID, code); err != nil {
			b.Fatal(err)
		}
	}
}
