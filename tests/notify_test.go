package tests_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/natstest"
)

// waitMail waits for a mail to `to` whose subject contains `subject` and returns it.
func (s *signIn) waitMail(t *testing.T, to, subject string) inboxMessage {
	t.Helper()
	var found inboxMessage
	natstest.Eventually(t, 15*time.Second, func() error {
		for _, m := range s.inbox(t, to) {
			if strings.Contains(m.Subject, subject) {
				found = m
				return nil
			}
		}
		return fmt.Errorf("no mail to %s about %q yet", to, subject)
	})
	return found
}

// mails counts the mails to `to` whose subject contains `subject`.
func (s *signIn) mails(t *testing.T, to, subject string) int {
	n := 0
	for _, m := range s.inbox(t, to) {
		if strings.Contains(m.Subject, subject) {
			n++
		}
	}
	return n
}

var linkToken = regexp.MustCompile(`[?&]token=([A-Za-z0-9_-]+)`)

// TestDisableByEmailedLink walks ITS's "disable MFA": without a fresh second factor the user gets
// a link by mail (the contact is the token's verified email claim), valid 15 minutes and once;
// only the same user can confirm it; confirming removes every factor and mails a confirmation.
// Along the way the notifier mails what changed: the factor added, the recovery codes generated.
func TestDisableByEmailedLink(t *testing.T) {
	s := startSignIn(t, nil)
	const addr = "erin@example.org"
	erin := s.profileToken(t, "erin", addr, "en")
	mallory := s.token(t, "mallory", "", "")
	var st mfaState
	s.MustJSON(t, http.MethodGet, "/verification-srv/mfa", erin, nil, http.StatusOK, &st) // remembers the contact
	secret := s.enrollDevice(t, erin)
	s.waitMail(t, addr, "A sign-in method was added")
	if r := s.Do(t, http.MethodPost, "/verification-srv/backupcodes", erin, nil, "X-MFA-Token", s.stepUp(t, erin, secret)); r.Status != http.StatusCreated {
		t.Fatalf("recovery codes: %d %s", r.Status, r.Body)
	}

	var pending struct {
		Confirmation string    `json:"confirmation"`
		ExpiresAt    time.Time `json:"expires_at"`
	}
	s.MustJSON(t, http.MethodPost, "/verification-srv/mfa/disable", erin, nil, http.StatusAccepted, &pending)
	if pending.Confirmation != "email" || pending.ExpiresAt.Sub(s.clock.Now()) != 15*time.Minute {
		t.Fatalf("disable answer %+v (now %v)", pending, s.clock.Now())
	}
	mail := s.waitMail(t, addr, "Confirm disabling MFA")
	m := linkToken.FindStringSubmatch(mail.Text)
	if m == nil {
		t.Fatalf("no link in %q", mail.Text)
	}
	token, err := url.QueryUnescape(m[1])
	if err != nil {
		t.Fatal(err)
	}
	confirm := func(bearer, tok string) *http.Response {
		r := s.Do(t, http.MethodPost, "/verification-srv/mfa/disable/confirm", bearer, map[string]string{"token": tok})
		return &http.Response{StatusCode: r.Status, Header: r.Header}
	}
	if r := confirm(mallory, token); r.StatusCode != http.StatusGone {
		t.Fatalf("another user's confirmation: %d, want 410", r.StatusCode)
	}
	if r := confirm(erin, token+"x"); r.StatusCode != http.StatusGone {
		t.Fatalf("a wrong token: %d, want 410", r.StatusCode)
	}
	r := s.Do(t, http.MethodPost, "/verification-srv/mfa/disable/confirm", erin, map[string]string{"token": token})
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &st) != nil || st.Enabled || st.Factors != 0 || st.RecoveryCodesRemaining != 0 {
		t.Fatalf("confirmation: %d %s", r.Status, r.Body)
	}
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/mfa/disable/confirm", erin, map[string]string{"token": token}), http.StatusGone, "expired")
	s.waitMail(t, addr, "MFA was disabled")

	// A second link expires after 15 minutes.
	s.clock.Advance(time.Second)
	s.enrollDevice(t, erin)
	s.MustJSON(t, http.MethodPost, "/verification-srv/mfa/disable", erin, nil, http.StatusAccepted, nil)
	var second string
	natstest.Eventually(t, 15*time.Second, func() error {
		for _, m := range s.inbox(t, addr) {
			if mm := linkToken.FindStringSubmatch(m.Text); strings.Contains(m.Subject, "Confirm disabling MFA") && mm != nil && mm[1] != token {
				second = mm[1]
				return nil
			}
		}
		return fmt.Errorf("no second link yet")
	})
	s.clock.Advance(15*time.Minute + time.Second)
	s.MustProblem(t, s.Do(t, http.MethodPost, "/verification-srv/mfa/disable/confirm", erin, map[string]string{"token": second}), http.StatusGone, "expired")
	if n := s.mails(t, addr, "A sign-in method was added"); n != 2 {
		t.Errorf("%d mails about an added factor, want 2 (one per enrollment)", n)
	}
}

// TestFactorAddedMailReachesTheTokensAddress: a user whose only call is the enrollment itself
// (the initiation service, then the status service) is told by mail that a factor was added:
// the initiation hands the token's verified email claim to the registry as the contact.
func TestFactorAddedMailReachesTheTokensAddress(t *testing.T) {
	s := startSignIn(t, nil)
	const addr = "fay@example.org"
	fay := s.profileToken(t, "fay", addr, "de")
	s.enrollDevice(t, fay)
	s.waitMail(t, addr, "Neue Anmeldemethode") // the German template: the token's locale
}
