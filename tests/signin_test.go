package tests_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// signIn is a dev stack on a test clock, so a test can move to the next TOTP step instead of
// waiting 30 seconds for it.
type signIn struct {
	*harness.Stack
	clock *testkit.Clock
	rec   *harness.Recorder
}

func startSignIn(t *testing.T, env map[string]string) *signIn {
	t.Helper()
	// 10 s into a step, so ±1 step never straddles a boundary mid-test.
	clock := testkit.NewClock(time.Unix(1_800_000_000/30*30+10, 0).UTC())
	st := harness.Start(t, harness.Options{Clock: clock.Now, SweepInterval: 50 * time.Millisecond}, env)
	return &signIn{Stack: st, clock: clock, rec: st.RecordEvents(t)}
}

// token mints a dev token through POST /dev/token with an optional scope and client id.
func (s *signIn) token(t testing.TB, sub, scope, clientID string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	s.MustJSON(t, http.MethodPost, "/dev/token", "", map[string]string{"sub": sub, "scope": scope, "client_id": clientID}, http.StatusOK, &out)
	return out.Token
}

// enrollDevice enrolls a TOTP device for the token's user by a typed code and returns its secret.
func (s *signIn) enrollDevice(t testing.TB, token string) string {
	t.Helper()
	in := initiate(t, s.Stack, token, "?qr=none")
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", token,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": s.code(t, in.TOTPSecret)}, http.StatusOK, nil)
	return in.TOTPSecret
}

func (s *signIn) code(t testing.TB, secret string) string {
	t.Helper()
	c, err := totp.Code(secret, s.clock.Now(), totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nextStep moves the clock to the next TOTP time step: a new code.
func (s *signIn) nextStep() { s.clock.Advance(30 * time.Second) }

type authInitiation struct {
	ExchangeID struct {
		ExchangeID string    `json:"exchange_id"`
		ExpiresAt  time.Time `json:"expires_at"`
	} `json:"exchange_id"`
	StatusID string `json:"status_id"`
	Sub      string `json:"sub"`
}

type authResult struct {
	Status   string `json:"status"`
	StatusID string `json:"status_id"`
	Sub      string `json:"sub"`
	Method   string `json:"method"`
	PHID     string `json:"ph_id"`
	MFAToken string `json:"mfa_token"`
}

func (s *signIn) startAuth(t *testing.T, token, method string, body any) authInitiation {
	t.Helper()
	var out authInitiation
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/"+method+"/initiation", token, body, http.StatusOK, &out)
	if out.StatusID == "" || out.ExchangeID.ExchangeID == "" {
		t.Fatalf("initiation answer without ids: %+v", out)
	}
	return out
}

func (s *signIn) verify(t *testing.T, token, method, exchangeID, code string) harness.Response {
	t.Helper()
	return s.Do(t, http.MethodPost, "/verification-srv/authentication/"+method+"/verification", token,
		map[string]string{"exchange_id": exchangeID, "pass_code": code})
}

// jwks fetches the published keys as a relying app would.
func (s *signIn) jwks(t *testing.T) map[string]*ecdsa.PublicKey {
	t.Helper()
	var set struct {
		Keys []struct {
			Kty, Crv, X, Y, Kid, Alg, Use string
		} `json:"keys"`
	}
	s.MustJSON(t, http.MethodGet, "/.well-known/jwks.json", "", nil, http.StatusOK, &set)
	keys := map[string]*ecdsa.PublicKey{}
	for _, k := range set.Keys {
		x, errX := base64.RawURLEncoding.DecodeString(k.X)
		y, errY := base64.RawURLEncoding.DecodeString(k.Y)
		if k.Kty != "EC" || k.Crv != "P-256" || k.Alg != "ES256" || errX != nil || errY != nil {
			t.Fatalf("unexpected JWK %+v", k)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			t.Fatalf("JWK %s is not a P-256 point: %v", k.Kid, err)
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		t.Fatal("empty JWKS")
	}
	return keys
}

// verifyMFAToken checks an mfa_token with a stock JWT library against the JWKS, as a relying app
// does, and returns its claims.
func (s *signIn) verifyMFAToken(t *testing.T, tok, audience string) jwt.MapClaims {
	t.Helper()
	keys := s.jwks(t)
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(tk *jwt.Token) (any, error) {
		kid, _ := tk.Header["kid"].(string)
		if k, ok := keys[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("unknown kid %q", kid)
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(audience), jwt.WithIssuer(s.URL),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(s.clock.Now))
	if err != nil {
		t.Fatalf("mfa_token does not verify against the JWKS: %v", err)
	}
	return claims
}

// TestSignInWithTOTP: a signed-in user proves the second factor (step-up) with the device they
// enrolled: the enrollment code is refused as a replay, the next code authenticates, the answer
// carries an mfa_token that a stock JWT library verifies against the JWKS, and a replay of the
// sign-in code is refused. Every step is an event, none carries a code.
func TestSignInWithTOTP(t *testing.T) {
	s := startSignIn(t, nil)
	alice := s.token(t, "alice", "", "")
	secret := s.enrollDevice(t, alice)
	enrollCode := s.code(t, secret)

	in := s.startAuth(t, alice, "totp", map[string]any{"usage_type": "MULTIFACTOR_AUTHENTICATION"})
	if in.Sub != "alice" || !in.ExchangeID.ExpiresAt.Equal(s.clock.Now().Add(5*time.Minute)) {
		t.Fatalf("initiation = %+v, want alice, expiring in MFA_VERIFICATION_TTL (5m)", in)
	}
	if st := poll(t, s.Stack, alice, in.StatusID); st.Status != "INITIATED" {
		t.Fatalf("status after initiation = %+v", st)
	}
	s.MustProblem(t, s.verify(t, alice, "totp", in.ExchangeID.ExchangeID, enrollCode), http.StatusBadRequest, "code_replayed")

	s.nextStep()
	code := s.code(t, secret)
	r := s.verify(t, alice, "totp", in.ExchangeID.ExchangeID, code)
	var res authResult
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &res) != nil {
		t.Fatalf("verification: %d %s", r.Status, r.Body)
	}
	if res.Status != "AUTHENTICATED" || res.Sub != "alice" || res.Method != "TOTP" || res.PHID == "" || res.StatusID != in.StatusID {
		t.Fatalf("verification answer = %+v", res)
	}
	claims := s.verifyMFAToken(t, res.MFAToken, "alice") // a user token names no client: the audience is the caller
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if claims["sub"] != "alice" || claims["status_id"] != in.StatusID || fmt.Sprint(claims["amr"]) != "[otp]" ||
		claims["jti"] == "" || claims["auth_time"] == nil || exp.Sub(iat.Time) > 5*time.Minute {
		t.Fatalf("mfa_token claims = %v", claims)
	}
	// The status object says AUTHENTICATED, with the token for the caller that started it.
	var polled struct {
		Status   string `json:"status"`
		MFAToken string `json:"mfa_token"`
	}
	s.MustJSON(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, &polled)
	if polled.Status != "AUTHENTICATED" || polled.MFAToken == "" {
		t.Fatalf("poll after verification = %+v", polled)
	}
	s.verifyMFAToken(t, polled.MFAToken, "alice")
	// A finished authentication takes no more codes; a new one refuses the used code.
	s.MustProblem(t, s.verify(t, alice, "totp", in.ExchangeID.ExchangeID, code), http.StatusConflict, "conflict")
	again := s.startAuth(t, alice, "totp", nil)
	s.MustProblem(t, s.verify(t, alice, "totp", again.ExchangeID.ExchangeID, code), http.StatusBadRequest, "code_replayed")
	// Another user can neither see nor finish alice's authentication.
	bob := s.token(t, "bob", "", "")
	s.MustProblem(t, s.Do(t, http.MethodGet, "/verification-srv/verificationstatus/"+again.StatusID, bob, nil), http.StatusNotFound, "not_found")
	s.nextStep()
	s.MustProblem(t, s.verify(t, bob, "totp", again.ExchangeID.ExchangeID, s.code(t, secret)), http.StatusNotFound, "not_found")
	// Cancelling ends it.
	var cancelled statusResponse
	s.MustJSON(t, http.MethodDelete, "/verification-srv/verificationstatus/"+again.StatusID, alice, nil, http.StatusOK, &cancelled)
	if cancelled.Status != "CANCELLED" {
		t.Fatalf("cancel = %+v", cancelled)
	}
	// The device's last use is the sign-in.
	var devices []struct {
		PHID       string     `json:"ph_id"`
		LastUsedAt *time.Time `json:"last_used_at"`
	}
	s.MustJSON(t, http.MethodGet, "/device-srv/devices", alice, nil, http.StatusOK, &devices)
	if len(devices) != 1 || devices[0].PHID != res.PHID || devices[0].LastUsedAt == nil {
		t.Fatalf("devices after sign-in = %+v", devices)
	}

	s.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.VerificationFailed, events.VerificationSucceeded)
	s.rec.WaitTypes(t, again.StatusID, events.VerificationInitiated, events.VerificationFailed, events.VerificationCancelled)
	checkEvents(t, s.rec, secret, code, enrollCode, res.MFAToken, in.ExchangeID.ExchangeID)
}

// TestSignInAsIdentityProvider: Keystone-style multi-step sign-in. The identity provider's login
// service holds the first-factor result, starts an mfaflow authentication for the user with its
// own service token (scope mfa:verify, the user named in the body) and finishes it with the code
// the user typed; the mfa_token is for its client id. A plain user token naming someone else is
// refused.
func TestSignInAsIdentityProvider(t *testing.T) {
	s := startSignIn(t, nil)
	secret := s.enrollDevice(t, s.token(t, "alice", "", ""))
	idp := s.token(t, "login-service", "openid mfa:verify", "shop-frontend")
	mallory := s.token(t, "mallory", "", "")

	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/initiation", mallory,
		map[string]any{"sub": "alice"}), http.StatusForbidden, "forbidden")

	in := s.startAuth(t, idp, "totp", map[string]any{
		"usage_type": "MULTIFACTOR_AUTHENTICATION", "sub": "alice",
		"context": map[string]string{"app": "shop", "ip": "203.0.113.7", "user_agent": "Firefox", "secret_field": "dropped"},
	})
	if in.Sub != "alice" {
		t.Fatalf("initiation for alice = %+v", in)
	}
	// Rackspace-style: a wrong passcode is a 400 and the same exchange can be retried.
	s.nextStep()
	code := s.code(t, secret)
	s.MustProblem(t, s.verify(t, idp, "totp", in.ExchangeID.ExchangeID, wrongCode(code)), http.StatusBadRequest, "invalid_code")
	s.MustProblem(t, s.verify(t, idp, "totp", in.ExchangeID.ExchangeID, "12345"), http.StatusBadRequest, "invalid_code")
	var res authResult
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", idp,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "pass_code": code}, http.StatusOK, &res)
	claims := s.verifyMFAToken(t, res.MFAToken, "shop-frontend")
	if claims["sub"] != "alice" {
		t.Fatalf("mfa_token for %v, want alice", claims["sub"])
	}
	// The sign-in is the identity provider's: the user herself does not see it (404).
	s.MustProblem(t, s.Do(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID, s.token(t, "alice", "", ""), nil), http.StatusNotFound, "not_found")
	evs := s.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.VerificationFailed, events.VerificationSucceeded)
	var data events.Verification
	if err := json.Unmarshal(evs[0].Data, &data); err != nil || data.ClientID != "shop-frontend" || data.Context["app"] != "shop" || data.Context["secret_field"] != "" {
		t.Fatalf("initiated event data = %s", evs[0].Data)
	}
	// A user without any device gets a clear answer instead of a pending authentication.
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/initiation", idp,
		map[string]any{"sub": "nobody"}), http.StatusConflict, "no_factor")
	checkEvents(t, s.rec, secret, code)
}

// TestSignInReplayUnderConcurrency: 20 concurrent submissions of one right code, on one
// authentication and on 20, give exactly one success each time and no 5xx.
func TestSignInReplayUnderConcurrency(t *testing.T) {
	// One user starts 21 sign-ins at once: lift the per-user limit (0 = off).
	s := startSignIn(t, map[string]string{"MFA_USER_START_RATE": "0"})
	alice := s.token(t, "alice", "", "")
	secret := s.enrollDevice(t, alice)
	for _, shared := range []bool{true, false} {
		t.Run("shared="+strconv.FormatBool(shared), func(t *testing.T) {
			s.nextStep()
			code := s.code(t, secret)
			var exchanges []string
			for i := range 20 {
				if i == 0 || !shared {
					exchanges = append(exchanges, s.startAuth(t, alice, "totp", nil).ExchangeID.ExchangeID)
				} else {
					exchanges = append(exchanges, exchanges[0])
				}
			}
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				statuses = map[string]int{}
			)
			for _, x := range exchanges {
				wg.Go(func() {
					r := s.verify(t, alice, "totp", x, code)
					var p harness.Problem
					_ = json.Unmarshal(r.Body, &p)
					mu.Lock()
					statuses[strconv.Itoa(r.Status)+" "+p.Code]++
					mu.Unlock()
				})
			}
			wg.Wait()
			ok := statuses["200 "]
			if ok != 1 {
				t.Fatalf("20 concurrent submissions: %v, want exactly one 200", statuses)
			}
			for k, n := range statuses {
				switch k {
				case "200 ", "400 code_replayed":
				case "409 conflict":
					if !shared {
						t.Fatalf("%d × %s on separate authentications", n, k)
					}
				default:
					t.Fatalf("unexpected answers %v", statuses)
				}
			}
		})
	}
}

// TestLockout: wrong codes are counted per user across authentications; the threshold-th locks
// the user (429 locked with Retry-After, a right code included, new initiations too), the lock
// is one event, an administrator unlocks, and the back-off doubles on the next lock.
func TestLockout(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_LOCKOUT_THRESHOLD": "3"})
	alice := s.token(t, "alice", "", "")
	secret := s.enrollDevice(t, alice)
	s.nextStep()
	right := s.code(t, secret)
	first := s.startAuth(t, alice, "totp", nil)
	second := s.startAuth(t, alice, "totp", nil)
	s.MustProblem(t, s.verify(t, alice, "totp", first.ExchangeID.ExchangeID, wrongCode(right)), http.StatusBadRequest, "invalid_code")
	s.MustProblem(t, s.verify(t, alice, "totp", second.ExchangeID.ExchangeID, wrongCode(right)), http.StatusBadRequest, "invalid_code")
	r := s.verify(t, alice, "totp", first.ExchangeID.ExchangeID, wrongCode(right))
	s.MustProblem(t, r, http.StatusTooManyRequests, "locked")
	if r.Header.Get("Retry-After") != "60" {
		t.Fatalf("Retry-After = %q, want 60 (1 minute)", r.Header.Get("Retry-After"))
	}
	s.MustProblem(t, s.verify(t, alice, "totp", second.ExchangeID.ExchangeID, right), http.StatusTooManyRequests, "locked")
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/initiation", alice, nil), http.StatusTooManyRequests, "locked")
	// The lock is about the user, once.
	waitEvents(t, s.rec, events.VerificationLocked, "alice", 1)

	admin := s.token(t, "ops", "mfa:admin", "")
	s.MustProblem(t, s.Do(t, http.MethodDelete, "/verification-srv/admin/users/alice/lockout", alice, nil), http.StatusForbidden, "forbidden")
	if r := s.Do(t, http.MethodDelete, "/verification-srv/admin/users/alice/lockout", admin, nil); r.Status != http.StatusNoContent {
		t.Fatalf("unlock: %d %s", r.Status, r.Body)
	}
	var res authResult
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/totp/verification", alice,
		map[string]string{"exchange_id": second.ExchangeID.ExchangeID, "pass_code": right}, http.StatusOK, &res)

	// Locked again (without unlocking) lasts the first lock's length again after a success,
	// and twice as long when the user keeps failing.
	third := s.startAuth(t, alice, "totp", nil)
	for range 3 {
		s.verify(t, alice, "totp", third.ExchangeID.ExchangeID, wrongCode(right))
	}
	s.clock.Advance(time.Minute)
	fourth := s.startAuth(t, alice, "totp", nil)
	for range 2 {
		s.MustProblem(t, s.verify(t, alice, "totp", fourth.ExchangeID.ExchangeID, "000001"), http.StatusBadRequest, "invalid_code")
	}
	r = s.verify(t, alice, "totp", fourth.ExchangeID.ExchangeID, "000001")
	s.MustProblem(t, r, http.StatusTooManyRequests, "locked")
	if r.Header.Get("Retry-After") != "120" {
		t.Fatalf("second lock Retry-After = %q, want 120", r.Header.Get("Retry-After"))
	}
	waitEvents(t, s.rec, events.VerificationLocked, "alice", 3)
	checkEvents(t, s.rec, secret, right)
}

// TestSignInWithRecoveryCode: ITS-style, a recovery code works where a TOTP code would, once.
func TestSignInWithRecoveryCode(t *testing.T) {
	s := startSignIn(t, nil)
	alice := s.token(t, "alice", "", "")
	secret := s.enrollDevice(t, alice)
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil), http.StatusForbidden, "step_up_required")
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/backupcode/initiation", alice, nil), http.StatusConflict, "no_factor")
	var set struct {
		Codes []string `json:"codes"`
	}
	r := s.Do(t, http.MethodPost, "/verification-srv/backupcodes", alice, nil, "X-MFA-Token", s.stepUp(t, alice, secret))
	if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &set) != nil {
		t.Fatalf("recovery codes with step-up: %d %s", r.Status, r.Body)
	}
	if len(set.Codes) < 10 {
		t.Fatalf("%d recovery codes", len(set.Codes))
	}
	in := s.startAuth(t, alice, "backupcode", nil)
	var res authResult
	s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/backupcode/verification", alice,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "pass_code": set.Codes[0]}, http.StatusOK, &res)
	if res.Status != "AUTHENTICATED" || res.Method != "BACKUPCODE" || res.PHID != "" {
		t.Fatalf("recovery code sign-in = %+v", res)
	}
	if claims := s.verifyMFAToken(t, res.MFAToken, "alice"); fmt.Sprint(claims["amr"]) != "[kba]" {
		t.Fatalf("amr = %v, want [kba]", claims["amr"])
	}
	again := s.startAuth(t, alice, "backupcode", nil)
	s.MustProblem(t, s.verify(t, alice, "backupcode", again.ExchangeID.ExchangeID, set.Codes[0]), http.StatusBadRequest, "code_replayed")
	// A TOTP authentication does not take a recovery code, nor the other way round.
	s.MustProblem(t, s.verify(t, alice, "totp", again.ExchangeID.ExchangeID, set.Codes[1]), http.StatusConflict, "conflict")
	var remaining struct {
		Remaining int `json:"remaining"`
	}
	s.MustJSON(t, http.MethodGet, "/verification-srv/backupcodes", alice, nil, http.StatusOK, &remaining)
	if remaining.Remaining != len(set.Codes)-1 {
		t.Fatalf("remaining = %d", remaining.Remaining)
	}
	waitEvents(t, s.rec, events.RecoveryGenerated, "alice", 1)
	waitEvents(t, s.rec, events.RecoveryUsed, "alice", 1)
	checkEvents(t, s.rec, append(set.Codes, res.MFAToken)...)
}

// TestAuthenticationExpiry: an authentication nobody finishes expires with its event, and then
// takes no code.
func TestAuthenticationExpiry(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_VERIFICATION_TTL": "30s"})
	alice := s.token(t, "alice", "", "")
	secret := s.enrollDevice(t, alice)
	in := s.startAuth(t, alice, "totp", nil)
	s.clock.Advance(31 * time.Second)
	s.rec.WaitTypes(t, in.StatusID, events.VerificationInitiated, events.VerificationExpired)
	if st := poll(t, s.Stack, alice, in.StatusID); st.Status != "EXPIRED" {
		t.Fatalf("status = %+v", st)
	}
	s.MustProblem(t, s.verify(t, alice, "totp", in.ExchangeID.ExchangeID, s.code(t, secret)), http.StatusGone, "expired")
	checkEvents(t, s.rec, secret)
}

// waitEvents waits until exactly n events of type typ about subject are on the stream.
func waitEvents(t *testing.T, rec *harness.Recorder, typ events.Type, subject string, n int) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		got := 0
		for _, ev := range rec.For(subject) {
			if ev.Type == typ {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d %s events about %s, want %d", got, typ, subject, n)
		}
		return nil
	})
}
