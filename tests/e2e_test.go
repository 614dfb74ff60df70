package tests_test

import (
	"bytes"
	"context"
	"encoding/base32"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/tests/eventschema"
	"github.com/mfaflow/mfaflow/tests/harness"
)

type initiateResponse struct {
	ExchangeID struct {
		ExchangeID string    `json:"exchange_id"`
		ExpiresAt  time.Time `json:"expires_at"`
	} `json:"exchange_id"`
	AuthenticatorClientID string `json:"authenticator_client_id"`
	Sub                   string `json:"sub"`
	StatusID              string `json:"status_id"`
	TOTPSecret            string `json:"totp_secret"`
	OTPAuthURI            string `json:"otpauth_uri"`
	QRCode                string `json:"qr_code"`
}

type statusResponse struct {
	Status    string    `json:"status"`
	ID        string    `json:"id"`
	Sub       string    `json:"sub"`
	Type      string    `json:"type"`
	ExpiresAt time.Time `json:"expires_at"`
	UpdatedAt time.Time `json:"updated_at"`
	DeviceID  string    `json:"device_id"`
	PHID      string    `json:"ph_id"`
	// MFAToken is an AUTHENTICATED sign-in's token, shown to its initiator.
	MFAToken string `json:"mfa_token"`
}

func initiate(t testing.TB, st *harness.Stack, token, query string) initiateResponse {
	t.Helper()
	var in initiateResponse
	st.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/totp"+query, token, nil, http.StatusOK, &in)
	return in
}

func poll(t *testing.T, st *harness.Stack, token, statusID string) statusResponse {
	t.Helper()
	var s statusResponse
	st.MustJSON(t, http.MethodGet, "/verification-srv/verificationstatus/"+statusID, token, nil, http.StatusOK, &s)
	return s
}

func codeFor(t *testing.T, secret string) string { return codeForB(t, secret) }

func codeForB(tb testing.TB, secret string) string {
	tb.Helper()
	c, err := totp.Code(secret, time.Now(), totp.Default)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func wrongCode(right string) string {
	if right == "000000" {
		return "999999"
	}
	return "000000"
}

func dial(t *testing.T, st *harness.Stack) *companion.Client { return dialB(t, st) }

func dialB(tb testing.TB, st *harness.Stack) *companion.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := companion.Dial(ctx, st.URL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func bridgeCode(err error) string {
	var be *companion.BridgeError
	if errors.As(err, &be) {
		return be.Code
	}
	return ""
}

// checkEvents validates every event of the run against its schema and the catalogue's rules,
// and that no secret or code ever appears in one.
func checkEvents(t *testing.T, rec *harness.Recorder, forbidden ...string) {
	t.Helper()
	for _, ev := range rec.All() {
		if err := eventschema.Validate(ev.Raw); err != nil {
			t.Errorf("event %s %s does not match its schema: %v\n%s", ev.Type, ev.ID, err, ev.Raw)
		}
		if ev.MsgID != ev.ID {
			t.Errorf("event %s: Nats-Msg-Id %q != id %q", ev.Type, ev.MsgID, ev.ID)
		}
		if ev.NATS != ev.Type.Subject() {
			t.Errorf("event %s published on %s", ev.Type, ev.NATS)
		}
		for _, f := range forbidden {
			if f != "" && bytes.Contains(ev.Raw, []byte(f)) {
				t.Errorf("event %s contains a secret, code or exchange id %q", ev.Type, f)
			}
		}
	}
}

// TestEndToEnd drives the whole flow as a frontend and a companion app would: initiate over
// HTTP, decode the QR image, scan and enroll over the websocket bridge, poll the status, and
// read the events on the stream.
func TestEndToEnd(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	rec := st.RecordEvents(t)
	alice := st.Token(t, "alice")

	var methods []map[string]any
	st.MustJSON(t, http.MethodGet, "/verification-srv/config/list", alice, nil, http.StatusOK, &methods)
	// EMAIL and SMS are active: the dev stack's notifier delivers to its dev inbox. WEBAUTHN is
	// not: the harness's public URL is http://127.0.0.1:…, and an IP address is no RP ID.
	wantMethods := []string{"TOTP", "BACKUPCODE", "PUSH", "EMAIL", "SMS", "WEBAUTHN"}
	if len(methods) != len(wantMethods) {
		t.Fatalf("methods = %v, want %v", methods, wantMethods)
	}
	for i, want := range wantMethods {
		active := want != "WEBAUTHN"
		if methods[i]["verificationType"] != want || methods[i]["active"] != active || len(methods[i]) != 2 {
			t.Fatalf("methods[%d] = %v, want {verificationType:%s active:%v}", i, methods[i], want, active)
		}
	}

	in := initiate(t, st, alice, "")
	if in.Sub != "alice" || in.StatusID == "" || in.ExchangeID.ExchangeID == "" || in.AuthenticatorClientID == "" {
		t.Fatalf("initiation = %+v", in)
	}
	if ttl := time.Until(in.ExchangeID.ExpiresAt); ttl < 9*time.Minute || ttl > 10*time.Minute+time.Second {
		t.Fatalf("expires_at %v is not ~10m ahead", in.ExchangeID.ExpiresAt)
	}

	t.Run("QRImageEncodesExactlyTheURI", func(t *testing.T) {
		if !strings.HasPrefix(in.QRCode, "data:image/png;base64,") {
			t.Fatalf("qr_code is not a PNG data URI: %.40s", in.QRCode)
		}
		text, err := companion.DecodeQRDataURI(in.QRCode)
		if err != nil {
			t.Fatal(err)
		}
		if text != in.OTPAuthURI {
			t.Fatalf("QR encodes %q, want %q", text, in.OTPAuthURI)
		}
	})
	t.Run("URIFollowsKeyUriFormat", func(t *testing.T) {
		u, err := url.Parse(in.OTPAuthURI)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		want := map[string]string{
			"secret": in.TOTPSecret, "issuer": "mfaflow", "algorithm": "SHA1", "digits": "6", "period": "30",
			"eid": in.ExchangeID.ExchangeID, "burl": st.URL, "cid": in.AuthenticatorClientID, "sub": "alice", "t": "totp",
		}
		for k, v := range want {
			if q.Get(k) != v {
				t.Errorf("%s = %q, want %q", k, q.Get(k), v)
			}
		}
		if u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/mfaflow:alice" {
			t.Errorf("label: %s://%s%s", u.Scheme, u.Host, u.Path)
		}
		raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(in.TOTPSecret)
		if err != nil || len(raw) < 20 {
			t.Errorf("secret has %d bytes (%v), want >= 20", len(raw), err)
		}
	})

	// A poll right after initiation answers INITIATED, never 404.
	if s := poll(t, st, alice, in.StatusID); s.Status != "INITIATED" || s.ID != in.StatusID || s.Type != "TOTP" || s.Sub != "alice" {
		t.Fatalf("first poll = %+v", s)
	}

	t.Run("OtherUserSeesNothing", func(t *testing.T) {
		bob := st.Token(t, "bob")
		st.MustProblem(t, st.Do(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID, bob, nil), http.StatusNotFound, "not_found")
		st.MustProblem(t, st.Do(t, http.MethodDelete, "/verification-srv/verificationstatus/"+in.StatusID, bob, nil), http.StatusNotFound, "not_found")
		st.MustProblem(t, st.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", bob,
			map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": codeFor(t, in.TOTPSecret)}), http.StatusNotFound, "not_found")
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	phone := dial(t, st)
	dev := protocol.Device{DeviceID: "e2e-phone-1", Name: "Alice's phone", Platform: "android"}
	ack, err := phone.Scan(ctx, in.ExchangeID.ExchangeID, dev)
	if err != nil || ack.Status != "SCANNED" || ack.StatusID != in.StatusID {
		t.Fatalf("scan = %+v, %v", ack, err)
	}
	if s := poll(t, st, alice, in.StatusID); s.Status != "SCANNED" {
		t.Fatalf("poll after scan = %+v", s)
	}
	code := codeFor(t, in.TOTPSecret)
	if _, err := phone.Enroll(ctx, in.ExchangeID.ExchangeID, wrongCode(code)); bridgeCode(err) != "invalid_code" {
		t.Fatalf("enroll with a wrong code: %v", err)
	}
	ack, err = phone.Enroll(ctx, in.ExchangeID.ExchangeID, code)
	if err != nil || ack.Status != "ENROLLED" || ack.PHID == "" || ack.DeviceID != dev.DeviceID {
		t.Fatalf("enroll = %+v, %v", ack, err)
	}
	s := poll(t, st, alice, in.StatusID)
	if s.Status != "ENROLLED" || s.PHID != ack.PHID || s.DeviceID != dev.DeviceID {
		t.Fatalf("poll after enroll = %+v", s)
	}

	rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentScanned, events.EnrollmentEnrolled)
	// The same frame again (its answer might have been lost) is answered the same; a finished
	// enrollment takes no other code over the bridge (PROTOCOL.md: conflict), and an error
	// names no device.
	if again, err := phone.Enroll(ctx, in.ExchangeID.ExchangeID, code); err != nil || again.Status != "ENROLLED" || again.PHID != ack.PHID || again.DeviceID != dev.DeviceID {
		t.Fatalf("the enroll frame repeated = %+v, %v; want the first ack %+v", again, err, ack)
	}
	if again, err := phone.Enroll(ctx, in.ExchangeID.ExchangeID, wrongCode(code)); bridgeCode(err) != "conflict" || again.PHID != "" {
		t.Fatalf("enroll frame on an ENROLLED enrollment with another code = %+v, %v; want a conflict error frame", again, err)
	}
	reg := rec.WaitTypes(t, ack.PHID, events.DeviceRegistered)
	if !bytes.Contains(reg[0].Raw, []byte(`"friendly_name":"Alice's phone"`)) {
		t.Errorf("device.registered lacks the name given at scan: %s", reg[0].Raw)
	}
	checkEvents(t, rec, in.TOTPSecret, code, in.ExchangeID.ExchangeID)
}

func TestTypedCodeAndFailures(t *testing.T) {
	// One user runs enrollment after enrollment: step-up (tests/stepup_test.go) is off.
	st := harness.Start(t, harness.Options{}, map[string]string{"MFA_STEP_UP": "off"})
	rec := st.RecordEvents(t)
	alice := st.Token(t, "alice")
	enroll := func(in initiateResponse, code string) harness.Response {
		return st.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice,
			map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code, "friendly_name": "Work phone"})
	}
	var secrets []string

	t.Run("TypedCodeEnrollsFromInitiated", func(t *testing.T) {
		in := initiate(t, st, alice, "?qr=none")
		secrets = append(secrets, in.TOTPSecret)
		if in.QRCode != "" {
			t.Fatalf("qr=none returned a QR code")
		}
		code := codeFor(t, in.TOTPSecret)
		st.MustProblem(t, enroll(in, wrongCode(code)), http.StatusBadRequest, "invalid_code")
		r := enroll(in, code)
		if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`"status":"ENROLLED"`)) {
			t.Fatalf("enroll: %d %s", r.Status, r.Body)
		}
		// A finished enrollment takes no more codes, neither the right one nor any other
		// (a client that lost the answer polls the status instead).
		st.MustProblem(t, enroll(in, code), http.StatusConflict, "conflict")
		st.MustProblem(t, enroll(in, "000000"), http.StatusConflict, "conflict")
		rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentEnrolled)
	})
	t.Run("FiveWrongCodesFail", func(t *testing.T) {
		in := initiate(t, st, alice, "?qr=svg")
		secrets = append(secrets, in.TOTPSecret)
		if !strings.Contains(in.QRCode, "<svg") {
			t.Fatalf("qr=svg returned %.60q", in.QRCode)
		}
		bad := wrongCode(codeFor(t, in.TOTPSecret))
		for i := range 5 {
			st.MustProblem(t, enroll(in, bad), http.StatusBadRequest, "invalid_code")
			if i < 4 {
				if s := poll(t, st, alice, in.StatusID); s.Status != "INITIATED" {
					t.Fatalf("after %d wrong codes: %s", i+1, s.Status)
				}
			}
		}
		if s := poll(t, st, alice, in.StatusID); s.Status != "FAILED" {
			t.Fatalf("after 5 wrong codes: %s", s.Status)
		}
		st.MustProblem(t, enroll(in, codeFor(t, in.TOTPSecret)), http.StatusConflict, "conflict")
		rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentFailed)
	})
	t.Run("CancelEndsTheEnrollment", func(t *testing.T) {
		in := initiate(t, st, alice, "?qr=none")
		secrets = append(secrets, in.TOTPSecret)
		var s statusResponse
		st.MustJSON(t, http.MethodDelete, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, &s)
		if s.Status != "CANCELLED" {
			t.Fatalf("cancel = %+v", s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := dial(t, st).Scan(ctx, in.ExchangeID.ExchangeID, protocol.Device{DeviceID: "late"}); bridgeCode(err) != "conflict" {
			t.Fatalf("scan after cancel: %v", err)
		}
		st.MustProblem(t, enroll(in, codeFor(t, in.TOTPSecret)), http.StatusConflict, "conflict")
		rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentCancelled)
	})
	checkEvents(t, rec, secrets...)
}

// TestExpiry: an enrollment nobody polls still expires, with its event, within a few seconds
// of expires_at; the next poll shows EXPIRED and the companion is told so.
func TestExpiry(t *testing.T) {
	st := harness.Start(t, harness.Options{SweepInterval: 100 * time.Millisecond}, map[string]string{"MFA_ENROLLMENT_TTL": "1s"})
	rec := st.RecordEvents(t)
	alice := st.Token(t, "alice")
	in := initiate(t, st, alice, "?qr=none")
	rec.WaitTypes(t, in.StatusID, events.EnrollmentInitiated, events.EnrollmentExpired)
	if s := poll(t, st, alice, in.StatusID); s.Status != "EXPIRED" {
		t.Fatalf("poll after expiry = %+v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dial(t, st).Scan(ctx, in.ExchangeID.ExchangeID, protocol.Device{DeviceID: "late"}); bridgeCode(err) != "expired" {
		t.Fatalf("scan after expiry: %v", err)
	}
	st.MustProblem(t, st.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice,
		map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": codeFor(t, in.TOTPSecret)}), http.StatusGone, "expired")
	checkEvents(t, rec, in.TOTPSecret)
}

// TestErrors: every bad request gets problem+json with a stable code and changes nothing.
func TestErrors(t *testing.T) {
	st := harness.Start(t, harness.Options{}, nil)
	alice := st.Token(t, "alice")
	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		code                      string
	}{
		{"NoToken", http.MethodPost, "/verification-srv/v2/setup/initiate/totp", "", nil, 401, "unauthorized"},
		{"BadToken", http.MethodGet, "/verification-srv/config/list", "not-a-jwt", nil, 401, "unauthorized"},
		{"UnknownRoute", http.MethodGet, "/nope", alice, nil, 404, "not_found"},
		{"WrongMethod", http.MethodPut, "/verification-srv/config/list", alice, nil, 405, "unsupported_method"},
		{"UnsupportedType", http.MethodPost, "/verification-srv/v2/setup/initiate/fax", alice, nil, 404, "not_found"},
		{"BadQRFormat", http.MethodPost, "/verification-srv/v2/setup/initiate/totp?qr=gif", alice, nil, 400, "bad_request"},
		{"MalformedJSON", http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice, "{", 400, "bad_request"},
		{"MissingExchange", http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice, map[string]string{"verification_code": "123456"}, 400, "bad_request"},
		{"MalformedCode", http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice, map[string]string{"exchange_id": "x", "verification_code": "12ab"}, 400, "bad_request"},
		{"UnknownExchange", http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice, map[string]string{"exchange_id": "nope", "verification_code": "123456"}, 404, "not_found"},
		{"UnknownStatus", http.MethodGet, "/verification-srv/verificationstatus/nope", alice, nil, 404, "not_found"},
		{"TooLarge", http.MethodPost, "/verification-srv/v2/setup/enroll/totp", alice, `{"exchange_id":"` + strings.Repeat("a", 1<<20) + `"}`, 413, "payload_too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := st.Do(t, c.method, c.path, c.token, c.body)
			st.MustProblem(t, r, c.status, c.code)
			if c.status == 405 && r.Header.Get("Allow") == "" {
				t.Error("405 without Allow header")
			}
			if c.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate header")
			}
		})
	}
	t.Run("DevTokenNeedsSub", func(t *testing.T) {
		st.MustProblem(t, st.Do(t, http.MethodPost, "/dev/token", "", map[string]string{}), 400, "bad_request")
	})
}
