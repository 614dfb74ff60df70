package tests_test

// TestSeeds walks the flow of each of the five source documents mfaflow was drawn from
// (/work/shared/seeds: ITS Private Cloud, UCloud, Rackspace Identity, OpenStack Keystone, cidaas)
// on mfaflow's own routes, step by step. Each step's comment names the step as its document
// does, so the test reads as the executable half of docs/coming-from.md: what a user of that
// API does on mfaflow instead, and what they can check along the way.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// subjectCode is the code a code mail states in its subject ("123456 is your mfaflow
// verification code", "… sign-in code").
var subjectCode = regexp.MustCompile(`^(\d{6,8}) is your `)

// mailedCode waits for the (n+1)-th mail to `to` whose subject contains kind ("verification
// code" for an enrollment, "sign-in code" for a sign-in) and returns the code of the newest.
// Security notices go to the same address, so it counts code mails only.
func (s *signIn) mailedCode(t *testing.T, to, kind string, n int) string {
	t.Helper()
	var code string
	natstest.Eventually(t, 15*time.Second, func() error {
		var newest *inboxMessage
		count := 0
		for _, m := range s.inbox(t, to) {
			if strings.Contains(m.Subject, kind) {
				count++
				if newest == nil || m.ReceivedAt.After(newest.ReceivedAt) {
					newest = &m
				}
			}
		}
		if count <= n {
			return fmt.Errorf("%d mails with a %s to %s, waiting for more than %d", count, kind, to, n)
		}
		m := subjectCode.FindStringSubmatch(newest.Subject)
		if m == nil {
			return fmt.Errorf("no code in the subject %q", newest.Subject)
		}
		code = m[1]
		return nil
	})
	return code
}

// waitStatus polls the status object, as cidaas's frontend does (every 4 s there; here as soon
// as it may, until a deadline), until it says want. A poll the per-user poll limit refuses
// (429) is a poll that comes again later.
func (s *signIn) waitStatus(t *testing.T, token, statusID, want string) statusResponse {
	t.Helper()
	var st statusResponse
	natstest.Eventually(t, 10*time.Second, func() error {
		r := s.Do(t, http.MethodGet, "/verification-srv/verificationstatus/"+statusID, token, nil)
		if r.Status == http.StatusTooManyRequests {
			return fmt.Errorf("poll limited, Retry-After %s", r.Header.Get("Retry-After"))
		}
		if r.Status != http.StatusOK {
			t.Fatalf("poll %s: %d %s", statusID, r.Status, r.Body)
		}
		st = statusResponse{}
		if err := json.Unmarshal(r.Body, &st); err != nil {
			t.Fatalf("poll %s: %s: %v", statusID, r.Body, err)
		}
		if st.Status != want {
			return fmt.Errorf("status %s, want %s", st.Status, want)
		}
		return nil
	})
	return st
}

// mfaStateOf is GET /verification-srv/mfa: UCloud's twoFactorStatus, Rackspace's
// multiFactorEnabled and factorType.
func (s *signIn) mfaStateOf(t *testing.T, token string) mfaState {
	t.Helper()
	var st mfaState
	s.MustJSON(t, http.MethodGet, "/verification-srv/mfa", token, nil, http.StatusOK, &st)
	return st
}

// seedDevice is one entry of GET /device-srv/devices.
type seedDevice struct {
	PHID         string `json:"ph_id"`
	DeviceID     string `json:"device_id"`
	Type         string `json:"type"`
	FriendlyName string `json:"friendly_name"`
	Verified     bool   `json:"verified"`
	Destination  string `json:"destination"`
}

// devicesOf is GET /device-srv/devices.
func (s *signIn) devicesOf(t *testing.T, token string) []seedDevice {
	t.Helper()
	var out []seedDevice
	s.MustJSON(t, http.MethodGet, "/device-srv/devices", token, nil, http.StatusOK, &out)
	return out
}

// authenticated decodes a verification answer and requires AUTHENTICATED with an mfa_token.
func authenticated(t *testing.T, r harness.Response) authResult {
	t.Helper()
	var res authResult
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &res) != nil || res.Status != "AUTHENTICATED" || res.MFAToken == "" {
		t.Fatalf("verification: %d %s, want 200 AUTHENTICATED with an mfa_token", r.Status, r.Body)
	}
	return res
}

func TestSeeds(t *testing.T) {
	t.Run("ITSPrivateCloud", seedITS)
	t.Run("UCloud", seedUCloud)
	t.Run("RackspaceIdentity", seedRackspace)
	t.Run("OpenStackKeystone", seedKeystone)
	t.Run("cidaas", seedCidaas)
}

// seedITS: ITS Private Cloud API, "Multi Factor Authentication with TOTP". ITS enables one
// method per account (EMAIL by default, AUTHENTICATOR, SMS), answers with recovery codes, and
// disables MFA only through an emailed link valid 15 minutes, "to switch methods". Here jqsmith
// walks EMAIL, switches to AUTHENTICATOR by disabling, and a second user walks SMS.
func seedITS(t *testing.T) {
	s := startSignIn(t, nil)
	const addr = "jqsmith@its.example.org"
	// "-u <username>": the user's own token; the identity provider vouches for the address.
	user := s.profileToken(t, "jqsmith", addr, "en")
	// ITS's /auth/request-token takes the credentials and the OTP together. On mfaflow the
	// identity provider's login service checks the password and asks mfaflow for the OTP.
	login := s.token(t, "its-login", "mfa:verify", "its-cloud-api")

	// "Enable MFA", method EMAIL ("If a payload or method is not provided, EMAIL is used by
	// default"): mfaflow has no default method, the route names it, and the address is in the
	// body. No key, uri or image: the code is mailed.
	var email sentEnrollment
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/email", user,
		map[string]string{"email": addr}, http.StatusOK, &email)
	if email.Type != "EMAIL" || email.Destination != "j***@its.example.org" || email.TOTPSecret != "" {
		t.Fatalf("EMAIL enable answer %+v", email)
	}
	// "Verify MFA": POST /tf/verify {"otp"} is the enrollment's verify with the mailed code.
	var enrolled sentStatus
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/email", user, map[string]string{
		"exchange_id": email.ExchangeID.ExchangeID, "verification_code": s.mailedCode(t, addr, "verification code", 0),
	}, http.StatusOK, &enrolled)
	if enrolled.Status != "ENROLLED" || enrolled.Type != "EMAIL" || enrolled.PHID == "" {
		t.Fatalf("EMAIL verify answer %+v", enrolled)
	}
	// "you should've received a confirmation email of your MFA setup".
	s.waitMail(t, addr, "A sign-in method was added")

	// "request tokens by making a POST request to /tf/request-token": a code is mailed…
	in := s.startAuth(t, login, "email", map[string]any{"usage_type": "MULTIFACTOR_AUTHENTICATION", "sub": "jqsmith"})
	// …and "Request Access Token" carries it.
	res := authenticated(t, s.verify(t, login, "email", in.ExchangeID.ExchangeID, s.mailedCode(t, addr, "sign-in code", 0)))
	if claims := s.verifyMFAToken(t, res.MFAToken, "its-cloud-api"); claims["sub"] != "jqsmith" || fmt.Sprint(claims["amr"]) != "[otp email]" {
		t.Fatalf("mfa_token claims %v", claims)
	}

	// "Disable MFA … to change the MFA method": "A request has to be submitted via /tf/disable
	// with your credentials" → 202, "An email is sent to your account's default address".
	var pending struct {
		Confirmation string    `json:"confirmation"`
		ExpiresAt    time.Time `json:"expires_at"`
	}
	s.MustJSON(t, http.MethodPost, "/verification-srv/mfa/disable", user, nil, http.StatusAccepted, &pending)
	if pending.Confirmation != "email" || pending.ExpiresAt.Sub(s.clock.Now()) != 15*time.Minute {
		t.Fatalf("disable answer %+v, want email confirmation valid 15 minutes", pending)
	}
	// "The email includes a link valid for 15 minutes that must be accessed with your
	// credentials": the frontend page behind the link posts its token with the user's token.
	link := linkToken.FindStringSubmatch(s.waitMail(t, addr, "Confirm disabling MFA").Text)
	if link == nil {
		t.Fatal("no link in the confirmation mail")
	}
	linkTok, err := url.QueryUnescape(link[1])
	if err != nil {
		t.Fatal(err)
	}
	var st mfaState
	s.MustJSON(t, http.MethodPost, "/verification-srv/mfa/disable/confirm", user, map[string]string{"token": linkTok}, http.StatusOK, &st)
	if st.Enabled || st.Factors != 0 {
		t.Fatalf("state after confirming %+v", st)
	}
	// "A confirmation email will be sent."
	s.waitMail(t, addr, "MFA was disabled")

	// "Enable MFA" again, method AUTHENTICATOR: ITS's image (an SVG), key and uri. With no
	// factor left this is a first factor again and needs no step-up.
	s.clock.Advance(time.Second) // an enrollment begun in the reset's very millisecond is void
	auth := initiate(t, s.Stack, user, "?qr=svg")
	if !strings.HasPrefix(strings.TrimSpace(auth.QRCode), "<svg") || auth.TOTPSecret == "" ||
		!strings.HasPrefix(auth.OTPAuthURI, "otpauth://totp/mfaflow:jqsmith?") || !strings.Contains(auth.OTPAuthURI, "secret="+auth.TOTPSecret) ||
		!strings.Contains(auth.OTPAuthURI, "issuer=mfaflow") {
		t.Fatalf("AUTHENTICATOR enable answer: key %q uri %q image %.40q", auth.TOTPSecret, auth.OTPAuthURI, auth.QRCode)
	}
	// "Verify MFA": "grab one of the Authenticator Codes".
	var totpEnrolled statusResponse
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", user, map[string]string{
		"exchange_id": auth.ExchangeID.ExchangeID, "verification_code": s.code(t, auth.TOTPSecret),
	}, http.StatusOK, &totpEnrolled)
	if totpEnrolled.Status != "ENROLLED" || totpEnrolled.PHID == "" {
		t.Fatalf("AUTHENTICATOR verify answer %+v", totpEnrolled)
	}

	// "a list of one-time recovery codes that can be used instead of providing a TOTP": ITS
	// returns 8 with the enable answer; mfaflow generates a set of 10 on its own route, and since
	// the user now has a factor, that change needs a fresh second factor (X-MFA-Token).
	var set struct {
		Codes []string `json:"codes"`
	}
	r := s.Do(t, http.MethodPost, "/verification-srv/backupcodes", user, nil, "X-MFA-Token", s.stepUp(t, user, auth.TOTPSecret))
	if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &set) != nil || len(set.Codes) != 10 {
		t.Fatalf("recovery codes: %d %s, want 201 with 10 codes", r.Status, r.Body)
	}
	for _, c := range set.Codes {
		if !regexp.MustCompile(`^[0-9A-Z]{5}-[0-9A-Z]{5}$`).MatchString(c) {
			t.Fatalf("recovery code %q is not XXXXX-XXXXX", c)
		}
	}

	// "Request Access Token … include a TOTP in the request payload": one request carrying
	// the OTP, the login service's single-step verification (no exchange).
	s.nextStep() // the step-up spent this window's code
	res = authenticated(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/verification", login,
		map[string]string{"sub": "jqsmith", "pass_code": s.code(t, auth.TOTPSecret)}))
	if claims := s.verifyMFAToken(t, res.MFAToken, "its-cloud-api"); claims["sub"] != "jqsmith" || fmt.Sprint(claims["amr"]) != "[otp]" {
		t.Fatalf("mfa_token claims %v", claims)
	}
	// …or a recovery code "instead of providing a TOTP", once.
	res = authenticated(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/backupcode/verification", login,
		map[string]string{"sub": "jqsmith", "pass_code": set.Codes[0]}))
	if res.Method != "BACKUPCODE" {
		t.Fatalf("recovery code sign-in %+v", res)
	}
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/backupcode/verification", login,
		map[string]string{"sub": "jqsmith", "pass_code": set.Codes[0]}), http.StatusBadRequest, "code_replayed")
	if st := s.mfaStateOf(t, user); !st.Enabled || st.RecoveryCodesRemaining != 9 || st.DefaultMethod != "TOTP" {
		t.Fatalf("state with an authenticator and 9 recovery codes left %+v", st)
	}

	// "Enable MFA", method SMS, for another user: "OTP code is sent upon request via SMS to a
	// given phone number during setup".
	const phone = "+4915112345678"
	other := s.token(t, "ktanaka", "", "")
	var sms sentEnrollment
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/sms", other,
		map[string]string{"phone": "+49 151 12345678"}, http.StatusOK, &sms)
	if sms.Type != "SMS" || sms.Destination != "+49 ••• •••••• 78" {
		t.Fatalf("SMS enable answer %+v", sms)
	}
	// "Verify MFA" with the texted code.
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/sms", other, map[string]string{
		"exchange_id": sms.ExchangeID.ExchangeID, "verification_code": s.nextCode(t, phone, 0),
	}, http.StatusOK, &enrolled)
	if enrolled.Status != "ENROLLED" || enrolled.Type != "SMS" {
		t.Fatalf("SMS verify answer %+v", enrolled)
	}
	// "/tf/request-token" texts a code, "Request Access Token" carries it.
	in = s.startAuth(t, login, "sms", map[string]any{"sub": "ktanaka"})
	res = authenticated(t, s.verify(t, login, "sms", in.ExchangeID.ExchangeID, s.nextCode(t, phone, 1)))
	if fmt.Sprint(s.verifyMFAToken(t, res.MFAToken, "its-cloud-api")["amr"]) != "[otp sms]" {
		t.Fatal("the SMS sign-in's mfa_token amr is not [otp sms]")
	}
	// Every step was an event that matches its schema, and none names the secret, a recovery
	// code, the address or the link's token.
	checkEvents(t, s.rec, auth.TOTPSecret, set.Codes[0], addr, linkTok, email.ExchangeID.ExchangeID)
}

// seedUCloud: UCloud's 2FA, "Creating 2FA credentials": twoFactorStatus (connected false),
// createCredentials (otpAuthUri, qrCodeB64Data, secret, challengeId), answerChallenge
// (challengeId, verificationCode), twoFactorStatus (connected true).
func seedUCloud(t *testing.T) {
	s := startSignIn(t, nil)
	user := s.token(t, "ucloud-user", "", "")

	// twoFactorStatus: GET /auth/2fa/status → {"connected": false}.
	if st := s.mfaStateOf(t, user); st.Enabled {
		t.Fatalf("before any factor %+v, want enabled false", st)
	}

	// createCredentials: POST /auth/2fa → otpAuthUri, qrCodeB64Data, secret, challengeId.
	in := initiate(t, s.Stack, user, "") // ?qr=png is the default
	challengeID := in.ExchangeID.ExchangeID
	b64, ok := strings.CutPrefix(in.QRCode, "data:image/png;base64,")
	if !ok || challengeID == "" || in.TOTPSecret == "" || !strings.HasPrefix(in.OTPAuthURI, "otpauth://totp/") {
		t.Fatalf("credentials: challenge %q secret %q uri %q qr %.40q", challengeID, in.TOTPSecret, in.OTPAuthURI, in.QRCode)
	}
	// qrCodeB64Data is the PNG's base64; mfaflow wraps it in a data URI an <img> shows as is.
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("the QR is not a base64 PNG: %v", err)
	}
	if text, err := companion.DecodeQR(png); err != nil || text != in.OTPAuthURI {
		t.Fatalf("the QR encodes %q (%v), want the otpAuthUri %q", text, err, in.OTPAuthURI)
	}

	// answerChallenge: POST /auth/2fa/challenge {"challengeId", "verificationCode": 999999}.
	// UCloud's code is an Int; mfaflow's is a string (a code may start with 0), and a number is
	// refused without counting as a wrong code.
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", user,
		map[string]any{"exchange_id": challengeID, "verification_code": 999999}), http.StatusBadRequest, "bad_request")
	// UCloud answers Unit ({}); mfaflow answers the status object.
	var answered statusResponse
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", user,
		map[string]string{"exchange_id": challengeID, "verification_code": s.code(t, in.TOTPSecret)}, http.StatusOK, &answered)
	if answered.Status != "ENROLLED" || answered.ID != in.StatusID {
		t.Fatalf("answerChallenge %+v", answered)
	}

	// twoFactorStatus: {"connected": true}.
	if st := s.mfaStateOf(t, user); !st.Enabled || len(st.Methods) != 1 || st.Methods[0] != "TOTP" || st.Factors != 1 {
		t.Fatalf("after answering %+v, want enabled with one TOTP factor", st)
	}
	checkEvents(t, s.rec, in.TOTPSecret, challengeID)
}

// seedRackspace: Rackspace Identity, "Set up multi-factor authentication by OTP device": add an
// OTP device (id, keyUri, PNG data-URI qrcode, verified false), verify it with a passcode (204;
// 400 "invalid or expired"), turn multi-factor on with factorType OTP, then authenticate in two
// steps (401 with a sessionId, then the passcode).
func seedRackspace(t *testing.T) {
	s := startSignIn(t, nil)
	// "Authenticate to the Identity service": the user's token (X-Auth-Token there).
	user := s.token(t, "jqsmith", "", "")

	// "Add an OTP device to your account": POST …/RAX-AUTH/multi-factor/otp-devices
	// {"name"} → 201 {id, keyUri, name, qrcode, verified:false}. mfaflow's device exists only
	// once verified: the pending one is an enrollment (its exchange id is what the verify call
	// names; its name comes with the verify call).
	dev := initiate(t, s.Stack, user, "")
	if !strings.HasPrefix(dev.QRCode, "data:image/png;base64,") || !strings.HasPrefix(dev.OTPAuthURI, "otpauth://totp/") {
		t.Fatalf("OTP device: keyUri %q qrcode %.40q", dev.OTPAuthURI, dev.QRCode)
	}
	// "verified": false: not in the device list yet; its status says INITIATED.
	if devs := s.devicesOf(t, user); len(devs) != 0 {
		t.Fatalf("device list with a pending device %+v, want [] (pending devices are not listed)", devs)
	}
	if st := s.waitStatus(t, user, dev.StatusID, "INITIATED"); st.PHID != "" {
		t.Fatalf("pending device %+v", st)
	}

	// "Add the QR code to the mobile passcode application": the data URI works as an <img src>
	// and a phone reads the keyUri from it.
	if text, err := companion.DecodeQRDataURI(dev.QRCode); err != nil || text != dev.OTPAuthURI {
		t.Fatalf("qrcode encodes %q (%v), want the keyUri", text, err)
	}

	// "To verify the device, send the passcode": POST …/otp-devices/$DEVICE_ID/verify
	// {"RAX-AUTH:verificationCode":{"code"}}. "If you provide an invalid or expired passcode, the
	// Identity service returns … 400": a wrong passcode, and one the app showed minutes ago, are
	// 400 invalid_code, and the same device can be verified again.
	verify := func(code string) (int, []byte) {
		r := s.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", user, map[string]string{
			"exchange_id": dev.ExchangeID.ExchangeID, "verification_code": code, "friendly_name": "NewOTPDevice",
		})
		return r.Status, r.Body
	}
	right := s.code(t, dev.TOTPSecret)
	stale, err := totp.Code(dev.TOTPSecret, s.clock.Now().Add(-3*30*time.Second), totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{wrongCode(right), stale} {
		if bad == right {
			continue // one chance in a million: the stale code happens to be this window's
		}
		s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", user,
			map[string]string{"exchange_id": dev.ExchangeID.ExchangeID, "verification_code": bad}), http.StatusBadRequest, "invalid_code")
	}
	// "The Identity service returns a 204": mfaflow answers 200 with the status object.
	status, body := verify(right)
	var verified statusResponse
	if status != http.StatusOK || json.Unmarshal(body, &verified) != nil || verified.Status != "ENROLLED" || verified.PHID == "" {
		t.Fatalf("verify the device: %d %s", status, body)
	}
	devs := s.devicesOf(t, user)
	if len(devs) != 1 || !devs[0].Verified || devs[0].PHID != verified.PHID || devs[0].FriendlyName != "NewOTPDevice" || devs[0].Type != "TOTP" {
		t.Fatalf("device list after verify %+v, want the device, verified", devs)
	}

	// "Check account information and turn on multi-factor authentication if necessary":
	// multiFactorEnabled is mfaflow's enabled, true as soon as a verified factor exists (there is
	// nothing to turn on).
	if st := s.mfaStateOf(t, user); !st.Enabled {
		t.Fatalf("state after verifying %+v", st)
	}
	// "Update the multi-factor authentication settings to use the OTP device":
	// {"RAX-AUTH:multiFactor":{"factorType":"OTP"}} → 204; mfaflow: default_method, 200 with the
	// state. A method the user has no factor for is 409 no_factor.
	s.MustProblem(t, s.Do(t, http.MethodPut, "/verification-srv/mfa", user, map[string]string{"default_method": "SMS"}), http.StatusConflict, "no_factor")
	var st mfaState
	s.MustJSON(t, http.MethodPut, "/verification-srv/mfa", user, map[string]string{"default_method": "TOTP"}, http.StatusOK, &st)
	if !st.Enabled || st.DefaultMethod != "TOTP" {
		t.Fatalf("state after setting the factor type %+v", st)
	}

	// "Submit an authentication request with username and password": the login service checks
	// them and, instead of Rackspace's "401 … WWW-Authenticate: OS-MF sessionId='…'", starts an
	// mfaflow sign-in; its exchange id is the sessionId.
	login := s.token(t, "rackspace-login", "mfa:verify", "cloud-control-panel")
	session := s.startAuth(t, login, "totp", map[string]any{"usage_type": "MULTIFACTOR_AUTHENTICATION", "sub": "jqsmith"})
	// "Submit a second authentication request with sessionId and passcode credentials".
	s.nextStep() // the code of the verify call is spent
	res := authenticated(t, s.verify(t, login, "totp", session.ExchangeID.ExchangeID, s.code(t, dev.TOTPSecret)))
	// "RAX-AUTH:authenticatedBy": ["OTPPASSCODE", "PASSWORD"]: the mfa_token says amr otp; the
	// password half is the identity provider's.
	if claims := s.verifyMFAToken(t, res.MFAToken, "cloud-control-panel"); claims["sub"] != "jqsmith" || fmt.Sprint(claims["amr"]) != "[otp]" {
		t.Fatalf("mfa_token claims %v", claims)
	}

	// The "expired" half of "invalid or expired" on mfaflow: a device not verified within
	// MFA_ENROLLMENT_TTL (10 minutes) is gone, 410 expired. (A second device needs a step-up.)
	second := s.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=none", user, nil, "X-MFA-Token", s.stepUp(t, user, dev.TOTPSecret))
	var late initiateResponse
	if second.Status != http.StatusOK || json.Unmarshal(second.Body, &late) != nil {
		t.Fatalf("a second OTP device: %d %s", second.Status, second.Body)
	}
	s.clock.Advance(10*time.Minute + time.Second)
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", user, map[string]string{
		"exchange_id": late.ExchangeID.ExchangeID, "verification_code": s.code(t, late.TOTPSecret),
	}), http.StatusGone, "expired")
	s.waitStatus(t, user, late.StatusID, "EXPIRED")
	checkEvents(t, s.rec, dev.TOTPSecret, late.TOTPSecret, right)
}

// seedKeystone: OpenStack Keystone, "Using MFA": single step (password and totp in one request)
// or multi-step with auth receipts (401 + Openstack-Auth-Receipt, then the missing method with
// the receipt, again until the receipt expires). Keystone's password method is the identity
// provider's; mfaflow is the totp method, asked by the provider's login service.
func seedKeystone(t *testing.T) {
	s := startSignIn(t, nil)
	// "Configuring MFA right now has to be done entirely by an admin": on mfaflow the user
	// enrolls the device (here by a typed code).
	secret := s.enrollDevice(t, s.token(t, "2ed179c6af12496cafa1d279cb51a78f", "", ""))
	const userID = "2ed179c6af12496cafa1d279cb51a78f"
	keystone := s.token(t, "keystone", "mfa:verify", "keystone")

	// "Single step": "methods": ["password", "totp"], "totp": {"user": {"id", "passcode"}}. The
	// provider checks the password, then sends the totp half: sub and pass_code, no exchange.
	s.nextStep()
	res := authenticated(t, s.Do(t, http.MethodPost, "/verification-srv/authentication/totp/verification", keystone,
		map[string]string{"sub": userID, "pass_code": s.code(t, secret)}))
	if res.Sub != userID || res.Method != "TOTP" || res.StatusID == "" {
		t.Fatalf("single step %+v", res)
	}
	// "If all the supplied auth methods are valid, Keystone will return a token": the
	// single-step sign-in was created and ended at once, with its events.
	s.rec.WaitTypes(t, res.StatusID, events.VerificationInitiated, events.VerificationSucceeded)

	// "Multi-Step": the password alone gives Keystone's 401 with a receipt. The provider starts
	// an mfaflow sign-in: its exchange id is the receipt, its expires_at the receipt's.
	receipt := s.startAuth(t, keystone, "totp", map[string]any{"usage_type": "MULTIFACTOR_AUTHENTICATION", "sub": userID})
	if !receipt.ExchangeID.ExpiresAt.Equal(s.clock.Now().Add(5 * time.Minute)) {
		t.Fatalf("receipt expires_at %v, want MFA_VERIFICATION_TTL (5m) from now", receipt.ExchangeID.ExpiresAt)
	}
	// "required_auth_methods": [["totp","password"]]: the status says what is pending.
	if st := s.waitStatus(t, keystone, receipt.StatusID, "INITIATED"); st.Sub != userID {
		t.Fatalf("receipt status %+v", st)
	}
	// "supplying the missing auth methods, and supplying the header Openstack-Auth-Receipt":
	// exchange_id in the body. "If not you can try again until the auth receipt expires".
	s.nextStep()
	code := s.code(t, secret)
	s.MustProblem(t, s.verify(t, keystone, "totp", receipt.ExchangeID.ExchangeID, wrongCode(code)), http.StatusBadRequest, "invalid_code")
	res = authenticated(t, s.verify(t, keystone, "totp", receipt.ExchangeID.ExchangeID, code))
	if claims := s.verifyMFAToken(t, res.MFAToken, "keystone"); claims["sub"] != userID || claims["status_id"] != receipt.StatusID {
		t.Fatalf("mfa_token claims %v", claims)
	}
	// "(e.g in case of TOTP timeout)": once the receipt has expired it takes no passcode.
	expiring := s.startAuth(t, keystone, "totp", map[string]any{"sub": userID})
	s.clock.Advance(5*time.Minute + time.Second)
	s.MustProblem(t, s.verify(t, keystone, "totp", expiring.ExchangeID.ExchangeID, s.code(t, secret)), http.StatusGone, "expired")
	s.waitStatus(t, keystone, expiring.StatusID, "EXPIRED")
	checkEvents(t, s.rec, secret, code)
}

// seedCidaas: cidaas, "TOTP (Verification)": present the verification methods, initiate the
// enrollment, build/show the QR with cidaas's extra parameters, poll the status every 4 s
// (INITIATED → SCANNED → ENROLLED with ph_id and device_id), add a friendly device name.
func seedCidaas(t *testing.T) {
	s := startSignIn(t, nil)
	const sub = "da65eb32-d460-4355-8b94-ee061896712f"
	user := s.token(t, sub, "", "")

	// "Step 2: Present Verification Methods": GET /verification-srv/config/list.
	var methods []struct {
		VerificationType string `json:"verificationType"`
		Active           bool   `json:"active"`
	}
	s.MustJSON(t, http.MethodGet, "/verification-srv/config/list", user, nil, http.StatusOK, &methods)
	if len(methods) == 0 || methods[0].VerificationType != "TOTP" || !methods[0].Active {
		t.Fatalf("config/list %+v, want TOTP active first", methods)
	}

	// "Step 3: Initiation of Enrollment": cidaas's own curl, POST
	// /verification-actions-srv/setup/{method}/initiation with its deviceInfo body (the
	// developer guide's /verification-srv/v2/setup/initiate/totp answers the same).
	var in initiateResponse
	s.MustJSON(t, http.MethodPost, "/verification-actions-srv/setup/totp/initiation", user,
		map[string]any{"deviceInfo": map[string]any{"deviceId": "", "location": map[string]string{"lat": "", "lon": ""}}}, http.StatusOK, &in)
	if in.ExchangeID.ExchangeID == "" || !in.ExchangeID.ExpiresAt.Equal(s.clock.Now().Add(10*time.Minute)) ||
		in.StatusID == "" || in.Sub != sub || in.TOTPSecret == "" || in.AuthenticatorClientID == "" {
		t.Fatalf("initiation %+v, want exchange_id{exchange_id,expires_at}, status_id, sub, totp_secret, authenticator_client_id", in)
	}

	// "Using the response you can construct the QR-Code": mfaflow constructs it; the QR holds
	// the otpauth URI with cidaas's parameters eid, burl, cid, sub and t (no tk, l or d: there
	// is no tenant).
	text, err := companion.DecodeQRDataURI(in.QRCode)
	if err != nil || text != in.OTPAuthURI {
		t.Fatalf("the QR encodes %q (%v), want otpauth_uri", text, err)
	}
	u, err := url.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, want := range map[string]string{
		"eid": in.ExchangeID.ExchangeID, "burl": s.URL, "cid": in.AuthenticatorClientID, "sub": sub, "t": "totp",
		"secret": in.TOTPSecret, "issuer": "mfaflow",
	} {
		if q.Get(k) != want {
			t.Errorf("QR parameter %s = %q, want %q", k, q.Get(k), want)
		}
	}

	// "Step 4: Check of Enrollment Status": "INITIATED … as long as you are showing the QR Code".
	s.waitStatus(t, user, in.StatusID, "INITIATED")

	// The user scans with the companion app: it reads eid and burl from the QR and reports
	// over mfaflow's websocket bridge. "After the user scanned the code, the state will change
	// to SCANNED".
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	app, err := companion.ParseURI(text)
	if err != nil || app.ExchangeID != in.ExchangeID.ExchangeID || app.BaseURL != s.URL {
		t.Fatalf("the companion reads %+v (%v)", app, err)
	}
	phone := dial(t, s.Stack)
	device := protocol.Device{DeviceID: "dd7e81392ff7bbd3", Name: "Poca's phone", Platform: "android"}
	if ack, err := phone.Scan(ctx, app.ExchangeID, device); err != nil || ack.Status != "SCANNED" {
		t.Fatalf("scan %+v, %v", ack, err)
	}
	s.waitStatus(t, user, in.StatusID, "SCANNED")

	// "The ENROLLED state will show as soon as the user successfully completed the enrollment
	// on the authenticator app", with "a device_id and ph_id".
	ack, err := phone.Enroll(ctx, app.ExchangeID, s.code(t, app.Secret))
	if err != nil || ack.Status != "ENROLLED" {
		t.Fatalf("enroll %+v, %v", ack, err)
	}
	st := s.waitStatus(t, user, in.StatusID, "ENROLLED")
	if st.ID != in.StatusID || st.Sub != sub || st.Type != "TOTP" || st.PHID != ack.PHID || st.DeviceID != device.DeviceID {
		t.Fatalf("ENROLLED status %+v, want id, sub, type TOTP, ph_id %s, device_id %s", st, ack.PHID, device.DeviceID)
	}

	// "Add friendly Device Name", with the ph_id of the ENROLLED status.
	var renamed seedDevice
	s.MustJSON(t, http.MethodPatch, "/device-srv/devices/"+url.PathEscape(st.PHID), user,
		map[string]string{"friendly_name": "Poca Hontas' phone"}, http.StatusOK, &renamed)
	if renamed.FriendlyName != "Poca Hontas' phone" || renamed.PHID != st.PHID {
		t.Fatalf("renamed device %+v", renamed)
	}
	if devs := s.devicesOf(t, user); len(devs) != 1 || devs[0].FriendlyName != "Poca Hontas' phone" || devs[0].DeviceID != device.DeviceID || !devs[0].Verified {
		t.Fatalf("device list %+v", devs)
	}
	s.rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentScanned, events.EnrollmentEnrolled)
	checkEvents(t, s.rec, in.TOTPSecret)
}
