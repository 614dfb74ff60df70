package tests_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/devinbox"
	"github.com/mfaflow/mfaflow/pkg/mongotest"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// inboxMessage is one message of GET /dev/inbox/messages.
type inboxMessage struct {
	To         string    `json:"to"`
	Subject    string    `json:"subject"`
	Text       string    `json:"text"`
	ReceivedAt time.Time `json:"received_at"`
}

var (
	// A mail states its code on a line of its own; an SMS ends with the WebOTP line
	// "@host #code".
	mailCode = regexp.MustCompile(`(?m)^\s*(\d{6,8})\s*$`)
	smsCode  = regexp.MustCompile(`(?m)^@[^ ]+ #(\d{6,8})$`)
)

// inbox returns what the dev inbox holds for to, as a user reads it at /dev/inbox.
func (s *signIn) inbox(t *testing.T, to string) []inboxMessage { return devInbox(t, s.Stack, to) }

// nextCode waits for message number n+1 to to and returns its code (see inboxCode).
func (s *signIn) nextCode(t *testing.T, to string, n int) string { return inboxCode(t, s.Stack, to, n) }

// devInbox returns what the dev inbox of st holds for to.
func devInbox(t *testing.T, st *harness.Stack, to string) []inboxMessage {
	t.Helper()
	var all []inboxMessage
	st.MustJSON(t, http.MethodGet, "/dev/inbox/messages", "", nil, http.StatusOK, &all)
	var out []inboxMessage
	for _, m := range all {
		if strings.EqualFold(m.To, to) {
			out = append(out, m)
		}
	}
	return out
}

// inboxCode waits until the inbox of st holds more than n messages with a code for to (security
// notifications carry none and do not count) and returns the newest one's code: a mail's on a
// line of its own, an SMS's (to starts with +) on its WebOTP line. The inbox lists newest first.
func inboxCode(t *testing.T, st *harness.Stack, to string, n int) string {
	t.Helper()
	re := mailCode
	if strings.HasPrefix(to, "+") {
		re = smsCode
	}
	var code string
	natstest.Eventually(t, 15*time.Second, func() error {
		var codes []string
		for _, m := range devInbox(t, st, to) {
			if match := re.FindStringSubmatch(m.Text); match != nil {
				codes = append(codes, match[1])
			}
		}
		if len(codes) <= n {
			return fmt.Errorf("%d messages with a code for %s, waiting for more than %d", len(codes), to, n)
		}
		code = codes[0]
		return nil
	})
	return code
}

type sentEnrollment struct {
	ExchangeID struct {
		ExchangeID string `json:"exchange_id"`
	} `json:"exchange_id"`
	StatusID    string `json:"status_id"`
	Type        string `json:"type"`
	Destination string `json:"destination"`
	TOTPSecret  string `json:"totp_secret"`
}

type sentStatus struct {
	Status      string `json:"status"`
	Type        string `json:"type"`
	PHID        string `json:"ph_id"`
	Destination string `json:"destination"`
	Delivery    string `json:"delivery"`
}

// TestCodesByEmailAndSMS walks what a frontend does with the new methods on both storage
// backends, with the notifier delivering to the dev stack's real SMTP server and SMS webhook
// receiver: enroll an email address (wrong code refused, right code ENROLLED, delivery shown),
// sign in with a mailed code (mfa_token amr otp+email), resend (too soon refused, the old code
// dead afterwards), enroll a phone number with step-up and sign in by SMS. No event carries a
// code or the address.
func TestCodesByEmailAndSMS(t *testing.T) {
	for _, backend := range []string{"nats", "mongo"} {
		t.Run(backend, func(t *testing.T) {
			// The test polls the delivery state faster than a frontend would (the poll limiter
			// runs on the wall clock): lift it.
			env := map[string]string{"MFA_POLL_RATE": "0"}
			if backend == "mongo" {
				env["MFA_STORE"], env["MFA_MONGODB_URI"] = "mongo", mongotest.DatabaseURI(t)
			}
			s := startSignIn(t, env)
			alice := s.token(t, "alice", "", "")
			var listed []struct {
				VerificationType string `json:"verificationType"`
				Active           bool   `json:"active"`
			}
			s.MustJSON(t, http.MethodGet, "/verification-srv/config/list", alice, nil, http.StatusOK, &listed)
			for _, l := range listed {
				if (l.VerificationType == "EMAIL" || l.VerificationType == "SMS") && !l.Active {
					t.Errorf("config/list: %s inactive with the dev inbox running", l.VerificationType)
				}
			}

			// Enroll an email address.
			var in sentEnrollment
			s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/email", alice,
				map[string]string{"email": "alice@example.org"}, http.StatusOK, &in)
			if in.Type != "EMAIL" || in.Destination != "a***@example.org" || in.TOTPSecret != "" {
				t.Fatalf("initiation answer %+v", in)
			}
			code := s.nextCode(t, "alice@example.org", 0)
			natstest.Eventually(t, 10*time.Second, func() error {
				var st sentStatus
				s.MustJSON(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, &st)
				if st.Delivery != "sent" || st.Destination != "a***@example.org" || st.Type != "EMAIL" {
					return fmt.Errorf("status %+v, want delivery sent", st)
				}
				return nil
			})
			wrong := fmt.Sprintf("%06d", (atoi(code)+1)%1_000_000)
			s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/v2/setup/enroll/email", alice,
				map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": wrong}), http.StatusBadRequest, "invalid_code")
			var enrolled sentStatus
			s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/email", alice,
				map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code}, http.StatusOK, &enrolled)
			if enrolled.Status != "ENROLLED" || enrolled.PHID == "" {
				t.Fatalf("enroll answer %+v", enrolled)
			}
			r := s.Do(t, http.MethodGet, "/device-srv/devices", alice, nil)
			if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte(`"type":"EMAIL"`)) || !bytes.Contains(r.Body, []byte(`"destination":"a***@example.org"`)) {
				t.Fatalf("device list: %d %s", r.Status, r.Body)
			}

			// Sign in with a mailed code; a resend too soon is refused, a later one replaces
			// the code.
			auth := s.startAuth(t, alice, "email", nil)
			first := s.nextCode(t, "alice@example.org", 1)
			resend := s.Do(t, http.MethodPost, "/verification-srv/authentication/email/resend", alice, map[string]string{"exchange_id": auth.ExchangeID.ExchangeID})
			s.MustProblem(t, resend, http.StatusTooManyRequests, "too_many_requests")
			if resend.Header.Get("Retry-After") == "" {
				t.Error("a resend too soon has no Retry-After")
			}
			s.clock.Advance(31 * time.Second)
			var again struct {
				ResendAfter time.Time `json:"resend_after"`
			}
			s.MustJSON(t, http.MethodPost, "/verification-srv/authentication/email/resend", alice,
				map[string]string{"exchange_id": auth.ExchangeID.ExchangeID}, http.StatusAccepted, &again)
			if !again.ResendAfter.After(s.clock.Now()) {
				t.Errorf("resend_after %v is not after now %v", again.ResendAfter, s.clock.Now())
			}
			second := s.nextCode(t, "alice@example.org", 2)
			if second != first {
				s.MustProblem(t, s.verify(t, alice, "email", auth.ExchangeID.ExchangeID, first), http.StatusBadRequest, "invalid_code")
			}
			var res authResult
			if err := json.Unmarshal(s.verify(t, alice, "email", auth.ExchangeID.ExchangeID, second).Body, &res); err != nil || res.Status != "AUTHENTICATED" || res.MFAToken == "" {
				t.Fatalf("verification with the resent code: %+v %v", res, err)
			}
			claims := s.verifyMFAToken(t, res.MFAToken, "alice")
			if fmt.Sprint(claims["amr"]) != "[otp email]" {
				t.Errorf("amr %v, want [otp email]", claims["amr"])
			}

			// A phone: alice has a factor now, so it needs a fresh mfa_token (the one above).
			s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/sms", alice,
				map[string]string{"phone": "0151 12345678", "region": "DE"}), http.StatusForbidden, "step_up_required")
			r = s.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/sms", alice,
				map[string]string{"phone": "0151 12345678", "region": "DE"}, "X-MFA-Token", res.MFAToken)
			var sms sentEnrollment
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &sms) != nil || sms.Destination != "+49 ••• •••••• 78" {
				t.Fatalf("sms initiation: %d %s", r.Status, r.Body)
			}
			smsEnrollCode := s.nextCode(t, "+4915112345678", 0)
			s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/enroll/sms", alice,
				map[string]string{"exchange_id": sms.ExchangeID.ExchangeID, "verification_code": smsEnrollCode}, http.StatusOK, &enrolled)
			smsAuth := s.startAuth(t, alice, "sms", map[string]string{"ph_id": enrolled.PHID})
			smsCode := s.nextCode(t, "+4915112345678", 1)
			res = authResult{}
			if err := json.Unmarshal(s.verify(t, alice, "sms", smsAuth.ExchangeID.ExchangeID, smsCode).Body, &res); err != nil || res.Status != "AUTHENTICATED" || res.PHID != enrolled.PHID {
				t.Fatalf("sms verification: %+v %v", res, err)
			}
			if fmt.Sprint(s.verifyMFAToken(t, res.MFAToken, "alice")["amr"]) != "[otp sms]" {
				t.Error("the SMS sign-in's amr is not [otp sms]")
			}

			s.rec.WaitTypes(t, smsAuth.StatusID, events.VerificationInitiated, events.VerificationSucceeded)
			// Every event matches its schema and none carries a code or the address.
			checkEvents(t, s.rec, code, first, second, smsEnrollCode, smsCode, "alice@example.org", "4915112345678")
		})
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestSMSInactiveWithoutAProvider: with a mail server configured and no SMS provider, the dev
// stack runs no inbox, the notifier says it cannot send SMS, config/list shows SMS inactive and
// an SMS initiation is refused with 409 method_inactive, nothing stored.
func TestSMSInactiveWithoutAProvider(t *testing.T) {
	s := startSignIn(t, map[string]string{"MFA_SMTP_URL": "smtp+insecure://127.0.0.1:9"})
	alice := s.token(t, "alice", "", "")
	var listed []struct {
		VerificationType string `json:"verificationType"`
		Active           bool   `json:"active"`
	}
	s.MustJSON(t, http.MethodGet, "/verification-srv/config/list", alice, nil, http.StatusOK, &listed)
	active := map[string]bool{}
	for _, l := range listed {
		active[l.VerificationType] = l.Active
	}
	if !active["EMAIL"] || active["SMS"] {
		t.Fatalf("config/list %+v: want EMAIL active and SMS inactive", listed)
	}
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/v2/setup/initiate/sms", alice,
		map[string]string{"phone": "+4915112345678"}), http.StatusConflict, "method_inactive")
	r := s.Do(t, http.MethodGet, "/device-srv/devices", alice, nil)
	if r.Status != http.StatusOK || bytes.Contains(r.Body, []byte("SMS")) {
		t.Fatalf("device list after a refused SMS enrollment: %d %s", r.Status, r.Body)
	}
}

// TestUndeliverableCode: a mail server that refuses the address for good makes the notifier give
// up at once: the enrollment's status object says "delivery":"failed" (the frontend can offer
// another address), and mfa.delivery.failed names the delivery with the address masked.
func TestUndeliverableCode(t *testing.T) {
	server, err := devinbox.Start(devinbox.Options{Refuse: func(string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	s := startSignIn(t, map[string]string{"MFA_SMTP_URL": server.SMTPURL(), "MFA_POLL_RATE": "0"})
	alice := s.token(t, "alice", "", "")
	var in sentEnrollment
	s.MustJSON(t, http.MethodPost, "/verification-srv/v2/setup/initiate/email", alice,
		map[string]string{"email": "nobody@example.org"}, http.StatusOK, &in)
	natstest.Eventually(t, 15*time.Second, func() error {
		var st sentStatus
		s.MustJSON(t, http.MethodGet, "/verification-srv/verificationstatus/"+in.StatusID, alice, nil, http.StatusOK, &st)
		if st.Delivery != "failed" {
			return fmt.Errorf("delivery %q, want failed", st.Delivery)
		}
		return nil
	})
	natstest.Eventually(t, 10*time.Second, func() error {
		for _, ev := range s.rec.All() {
			if ev.Type != events.DeliveryFailed {
				continue
			}
			var d events.Delivery
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return err
			}
			if d.StatusID != in.StatusID || d.Destination != "n***@example.org" || d.Reason != "rejected" || bytes.Contains(ev.Raw, []byte("nobody@")) {
				return fmt.Errorf("mfa.delivery.failed %s", ev.Raw)
			}
			return nil
		}
		return fmt.Errorf("no %s yet", events.DeliveryFailed)
	})
}
