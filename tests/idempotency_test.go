package tests_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/mfaflow/mfaflow/tests/harness"
	"github.com/nats-io/nats.go"
)

// keyedInitiate sends an enrollment initiation with an Idempotency-Key.
func keyedInitiate(t *testing.T, st *harness.Stack, token, key string) (harness.Response, initiateResponse) {
	t.Helper()
	r := st.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", token, nil, "Idempotency-Key", key)
	var in initiateResponse
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &in); err != nil {
			t.Fatalf("decode %s: %v", r.Body, err)
		}
	}
	return r, in
}

// countEvents counts the recorded events of type typ.
func countEvents(rec *harness.Recorder, typ events.Type) int {
	n := 0
	for _, ev := range rec.All() {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// TestIdempotentEnrollmentInitiation: a client that retries an initiation with the same
// Idempotency-Key (its first answer lost) gets the same enrollment, not a second one, with a
// new secret that replaces the one it never saw; once the enrollment has moved on the key is
// spent (409). Keys are per user, and a malformed key is a 400 that stores nothing.
func TestIdempotentEnrollmentInitiation(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	rec := st.RecordEvents(t)
	alice, bob := st.Token(t, "alice-idem"), st.Token(t, "bob-idem")
	const key = "6f1c2d3e-retry-me"

	r1, first := keyedInitiate(t, st, alice, key)
	r2, retry := keyedInitiate(t, st, alice, key)
	if r1.Status != http.StatusOK || r2.Status != http.StatusOK {
		t.Fatalf("initiation answered %d then %d: %s %s", r1.Status, r2.Status, r1.Body, r2.Body)
	}
	if retry.StatusID != first.StatusID || retry.ExchangeID.ExchangeID != first.ExchangeID.ExchangeID || !retry.ExchangeID.ExpiresAt.Equal(first.ExchangeID.ExpiresAt) {
		t.Fatalf("retry started another enrollment: first %s/%s, retry %s/%s", first.StatusID, first.ExchangeID.ExchangeID, retry.StatusID, retry.ExchangeID.ExchangeID)
	}
	if retry.TOTPSecret == first.TOTPSecret || retry.TOTPSecret == "" {
		t.Fatal("the retry must hand out a new secret (the first answer may never have arrived)")
	}
	if !strings.Contains(retry.OTPAuthURI, "secret="+retry.TOTPSecret) {
		t.Fatal("the retry's otpauth URI does not carry its secret")
	}

	// The first secret no longer enrolls; the retry's does.
	enroll := func(secret string) harness.Response {
		return st.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice,
			map[string]string{"exchange_id": first.ExchangeID.ExchangeID, "verification_code": codeFor(t, secret)})
	}
	st.MustProblem(t, enroll(first.TOTPSecret), http.StatusBadRequest, "invalid_code")
	if r := enroll(retry.TOTPSecret); r.Status != http.StatusOK {
		t.Fatalf("enroll with the retry's secret: %d %s", r.Status, r.Body)
	}
	rec.WaitTypes(t, first.StatusID, events.EnrollmentInitiated, events.EnrollmentEnrolled)

	// The key has done its work: the enrollment is ENROLLED, and its secret is not handed out again.
	r3, _ := keyedInitiate(t, st, alice, key)
	st.MustProblem(t, r3, http.StatusConflict, "conflict")
	if loc := r3.Header.Get("Location"); loc != "/verification-srv/verificationstatus/"+first.StatusID {
		t.Fatalf("409 Location %q, want the enrollment the key started", loc)
	}

	// The same key from another user is another enrollment.
	rb, bobs := keyedInitiate(t, st, bob, key)
	if rb.Status != http.StatusOK || bobs.StatusID == first.StatusID {
		t.Fatalf("bob's initiation with alice's key: %d, status id %s (alice's %s)", rb.Status, bobs.StatusID, first.StatusID)
	}
	rec.WaitTypes(t, bobs.StatusID, events.EnrollmentInitiated)

	// Malformed keys: a 400, nothing started.
	for _, bad := range []string{strings.Repeat("k", 256), "has space", "tab\tkey", "nön-ascii"} {
		r, _ := keyedInitiate(t, st, alice, bad)
		st.MustProblem(t, r, http.StatusBadRequest, "bad_request")
	}
	// One unkeyed initiation as a barrier: its event comes after any a malformed key had caused.
	barrier := initiate(t, st, bob, "?qr=none")
	rec.WaitTypes(t, barrier.StatusID, events.EnrollmentInitiated)
	if n := countEvents(rec, events.EnrollmentInitiated); n != 3 {
		t.Fatalf("%d enrollment.initiated events, want 3 (alice's once, bob's, the barrier)", n)
	}
}

// TestIdempotentInitiationCompletesAPartialAttempt: the first attempt stored the pending
// credential and died before the enrollment was recorded (a killed replica); the retry with the
// same key completes that enrollment instead of failing on the credential it finds.
func TestIdempotentInitiationCompletesAPartialAttempt(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	rec := st.RecordEvents(t)
	token := st.Token(t, "carol-idem")
	const key = "partial-attempt"

	nc, err := nats.Connect(st.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// What the first attempt did before it died: derive the ids, create the credential.
	var keyed commands.KeyedIDsReply
	if err := rpc.Call(ctx, nc, commands.StatusKeyedIDs, commands.KeyedIDsRequest{Sub: "carol-idem", Key: key}, &keyed); err != nil {
		t.Fatal(err)
	}
	if keyed.Existing != nil || keyed.StatusID != ids.StatusIDFor(keyed.ExchangeID) {
		t.Fatalf("keyed ids of a new key: %+v", keyed)
	}
	var lost commands.CreateCredentialReply
	if err := rpc.Call(ctx, nc, commands.RegistryCreateCredential, commands.CreateCredentialRequest{
		StatusID: keyed.StatusID, Sub: "carol-idem", ExpiresAt: time.Now().Add(5 * time.Minute),
	}, &lost); err != nil {
		t.Fatal(err)
	}

	r, in := keyedInitiate(t, st, token, key)
	if r.Status != http.StatusOK {
		t.Fatalf("retry after a partial attempt: %d %s", r.Status, r.Body)
	}
	if in.StatusID != keyed.StatusID || in.ExchangeID.ExchangeID != keyed.ExchangeID {
		t.Fatalf("retry answered %s, the first attempt's ids are %s", in.StatusID, keyed.StatusID)
	}
	if in.TOTPSecret == lost.Secret {
		t.Fatal("the lost attempt's secret was handed out again")
	}
	if s := poll(t, st, token, in.StatusID); s.Status != "INITIATED" {
		t.Fatalf("completed enrollment is %s", s.Status)
	}
	rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated)
}

// TestIdempotentSignInInitiation: a retried sign-in initiation with the same key answers the
// same authentication (one verification.initiated), in whatever state it is now.
func TestIdempotentSignInInitiation(t *testing.T) {
	s := startSignIn(t, nil)
	token := s.token(t, "dave-idem", "", "")
	secret := s.enrollDevice(t, token)
	const key = "signin-key-1"

	start := func(key string) (harness.Response, authInitiation) {
		r := s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/initiation", token, map[string]string{}, "Idempotency-Key", key)
		var out authInitiation
		if r.Status == http.StatusOK {
			if err := json.Unmarshal(r.Body, &out); err != nil {
				t.Fatal(err)
			}
		}
		return r, out
	}
	r1, first := start(key)
	r2, retry := start(key)
	if r1.Status != http.StatusOK || r2.Status != http.StatusOK || retry.StatusID != first.StatusID || retry.ExchangeID.ExchangeID != first.ExchangeID.ExchangeID {
		t.Fatalf("retry: %d %s / %d %s", r1.Status, r1.Body, r2.Status, r2.Body)
	}
	s.nextStep()
	var res authResult
	vr := s.verify(t, token, "totp", first.ExchangeID.ExchangeID, s.code(t, secret))
	if vr.Status != http.StatusOK {
		t.Fatalf("verify: %d %s", vr.Status, vr.Body)
	}
	if err := json.Unmarshal(vr.Body, &res); err != nil || res.Status != "AUTHENTICATED" {
		t.Fatalf("verify answered %s (%v)", vr.Body, err)
	}
	// After the end, the key still names the same authentication: no new sign-in starts.
	if r3, again := start(key); r3.Status != http.StatusOK || again.StatusID != first.StatusID {
		t.Fatalf("retry after AUTHENTICATED: %d %s", r3.Status, r3.Body)
	}
	// Another key is another sign-in.
	if _, other := start("signin-key-2"); other.StatusID == "" || other.StatusID == first.StatusID {
		t.Fatalf("a new key answered %q", other.StatusID)
	}
	s.rec.WaitTypes(t, first.StatusID, events.VerificationInitiated, events.VerificationSucceeded)
	if r, _ := start(strings.Repeat("x", 300)); r.Status != http.StatusBadRequest {
		t.Fatalf("malformed key: %d", r.Status)
	}
}

// TestSignInCodeRetryAfterLostAnswer: the registry accepted a sign-in code but the
// authentication was never written (its status replica or NATS node died in between). The
// client's retry with the same code on the same authentication succeeds, instead of being
// refused as a replay; the code still cannot complete any other authentication. For TOTP codes
// and recovery codes alike.
func TestSignInCodeRetryAfterLostAnswer(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_STEP_UP": "off"}) // a device and recovery codes in a row

	token := s.token(t, "erin-idem", "", "")
	secret := s.enrollDevice(t, token)
	var set struct {
		Codes []string `json:"codes"`
	}
	s.MustJSON(t, http.MethodPost, "/verification-srv/backupcodes", token, nil, http.StatusCreated, &set)
	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	for _, m := range []struct{ route, method string }{{"totp", "TOTP"}, {"backupcode", "BACKUPCODE"}} {
		t.Run(m.route, func(t *testing.T) {
			s.nextStep()
			code := s.code(t, secret)
			if m.route == "backupcode" {
				code = set.Codes[0]
			}
			in := s.startAuth(t, token, m.route, nil)
			other := s.startAuth(t, token, m.route, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// The lost attempt: the status service asked the registry, which accepted the code.
			// A refusal would be an error: the check answers only a right code with a reply.
			var lost commands.FactorReply
			if err := rpc.Call(ctx, nc, commands.RegistryFactorsCheck, commands.FactorRequest{Sub: "erin-idem", Method: m.method, Code: code, StatusID: in.StatusID}, &lost); err != nil {
				t.Fatalf("the lost attempt's check answered %v", err)
			}
			// Another authentication cannot use the spent code.
			s.MustProblem(t, s.verify(t, token, m.route, other.ExchangeID.ExchangeID, code), http.StatusBadRequest, "code_replayed")
			// The retry of the lost attempt completes its authentication.
			r := s.verify(t, token, m.route, in.ExchangeID.ExchangeID, code)
			var res authResult
			if err := json.Unmarshal(r.Body, &res); r.Status != http.StatusOK || err != nil || res.Status != "AUTHENTICATED" || res.MFAToken == "" {
				t.Fatalf("retry with the same code: %d %s", r.Status, r.Body)
			}
			// Once AUTHENTICATED, the authentication is finished: sending the code again is a conflict.
			if again := s.verify(t, token, m.route, in.ExchangeID.ExchangeID, code); again.Status != http.StatusConflict {
				t.Fatalf("a finished authentication answered %d %s", again.Status, again.Body)
			}
		})
	}
}
