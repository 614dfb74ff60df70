package tests_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
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
	// One connection sends far more frames than a phone: lift the bridge's frame limit, as
	// bench-load does.
	st := harness.Start(b, harness.Options{}, map[string]string{"MFA_USER_START_RATE": "0",
		"MFA_BRIDGE_FRAME_RATE": "100000", "MFA_BRIDGE_FRAME_BURST": "10000"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client := dialB(b, st)
	n := 0
	for b.Loop() {
		b.StopTimer()
		// A user per enrollment: a user's second factor would need step-up.
		n++
		tok := st.Token(b, fmt.Sprintf("bench-%d", n))
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

// BenchmarkSignInTOTP measures a whole TOTP sign-in as an identity provider's login service
// makes it (a service token): initiation and verification, in parallel. A pool of enrolled users
// on a test clock: each user signs in once per TOTP step, and the clock moves to the next step
// when the pool has been used up.
func BenchmarkSignInTOTP(b *testing.B) {
	clock := testkit.NewClock(time.Unix(1_800_000_000/30*30+10, 0).UTC())
	st := harness.Start(b, harness.Options{Clock: clock.Now}, map[string]string{"MFA_USER_START_RATE": "0"})
	si := &signIn{Stack: st, clock: clock}
	const pool = 256
	secrets := make([]string, pool)
	for i := range pool {
		secrets[i] = si.enrollDevice(b, st.Token(b, fmt.Sprintf("bench-%d", i)))
	}
	idp := si.token(b, "login-service", "mfa:verify", "shop")
	var (
		next atomic.Int64
		mu   sync.Mutex
	)
	clock.Advance(30 * time.Second) // the enrollment codes are spent
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1) - 1
			if n > 0 && n%pool == 0 {
				mu.Lock()
				clock.Advance(30 * time.Second)
				mu.Unlock()
			}
			user := int(n % pool)
			var in authInitiation
			r := st.Do(b, http.MethodPost, "/verification-srv/authentication/totp/initiation", idp, map[string]string{"sub": fmt.Sprintf("bench-%d", user)})
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &in) != nil {
				b.Errorf("initiation: %d %s", r.Status, r.Body)
				return
			}
			code, _ := totp.Code(secrets[user], clock.Now(), totp.Default)
			// A rare race with the clock's move makes a code one step old: refused as a replay.
			_ = st.Do(b, http.MethodPost, "/verification-srv/authentication/totp/verification", idp,
				map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "pass_code": code})
		}
	})
}
