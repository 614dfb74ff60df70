package tests_test

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/devinbox"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The soak's EMAIL factor: every flow enrolls user-N@example.org first (its first factor, no
// step-up), reads the code from the mail the notifier sent to the test's SMTP server
// (pkg/devinbox), signs in once with a mailed code, and uses that sign-in's mfa_token as the
// X-MFA-Token of its TOTP enrollment. Two notifier replicas deliver, and one of them is killed
// with the other services. At the end the soak holds what the SMTP server received against
// what the registry stored on MFA_DELIVERIES (see checkDeliveries).

// soakCodeTTL is MFA_OOB_CODE_TTL of the soak: the shortest allowed, so that a flow whose code
// does not come within its life asks for another (resend) inside the flow's time.
const soakCodeTTL = time.Minute

// Subjects of the two kinds of mail (the notifier's built-in English templates): they tell an
// enrollment's code from a sign-in's, as they tell the user.
const (
	enrollmentMailSubject = "verification code"
	signInMailSubject     = "sign-in code"
)

// soakAddress is flow i's email address.
func soakAddress(i int) string { return fmt.Sprintf("user-%d@example.org", i) }

// deliveryTap records every delivery request the registry publishes, opened with the delivery
// key: one core NATS subscription on mfa.deliveries.v1.> per NATS node, so that with one node
// killed the others still see every publish. It sees what was published, which includes a
// publish the stream did not store (its publisher got an error and sent another code); what
// was stored is counted on the stream itself.
type deliveryTap struct {
	key        []byte
	mu         sync.Mutex
	byID       map[string]delivery.Request
	unreadable int
	conns      []*nats.Conn
}

func startDeliveryTap(t *testing.T, clientURLs []string, key []byte) *deliveryTap {
	t.Helper()
	tap := &deliveryTap{key: key, byID: map[string]delivery.Request{}}
	for i, u := range clientURLs {
		nc, err := natsx.Connect(u, fmt.Sprintf("soak-delivery-tap-%d", i+1), nats.IgnoreDiscoveredServers())
		if err != nil {
			t.Fatal(err)
		}
		tap.conns = append(tap.conns, nc)
		if _, err := nc.Subscribe(delivery.StreamSubjects, tap.receive); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, nc := range tap.conns {
			nc.Close()
		}
	})
	return tap
}

func (tap *deliveryTap) receive(m *nats.Msg) {
	r, err := delivery.Open(tap.key, m.Data)
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if err != nil {
		tap.unreadable++
		return
	}
	tap.byID[r.ID] = r
}

func (tap *deliveryTap) requests() map[string]delivery.Request {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	out := make(map[string]delivery.Request, len(tap.byID))
	for id, r := range tap.byID {
		out[id] = r
	}
	return out
}

// mailedCode is a code as a user finds it in the inbox.
type mailedCode struct {
	messageID, code string
}

// mailed returns the codes mailed to addr in mails whose subject holds subject, newest first.
func (w *soakWorld) mailed(addr, subject string) []mailedCode {
	var out []mailedCode
	for _, m := range w.inbox.Messages() {
		if m.Channel != "email" || !strings.EqualFold(m.To, addr) || !strings.Contains(m.Subject, subject) {
			continue
		}
		match := mailCode.FindStringSubmatch(m.Text)
		if match == nil {
			w.stats.bad("mail %s to %s has no code on a line of its own", m.MessageID, addr)
			continue
		}
		out = append(out, mailedCode{m.MessageID, match[1]})
	}
	return out
}

// errStaleCode: a mailed code was refused while its exchange is still open (a code a resend or
// a retried initiation replaced, or one that outlived its life); the next mail is tried.
var errStaleCode = errors.New("mailed code refused")

// codeStep is one exchange whose code comes by mail: an enrollment or a sign-in.
type codeStep struct {
	name, addr, subject string
	statusID, exchange  string
	done                string // the status object's state once the code was accepted
	resendPath          string
	// verify sends code once: nil when accepted, errStaleCode when refused, errRetry when the
	// answer was lost.
	verify func(code string) error
	// settle is called when a read of the status object (after a conflict) shows done.
	settle func(s statusResponse)
}

// awaitCode reads the inbox until a mailed code of step is accepted, trying the newest code not
// tried yet first. A code not delivered within its life (from issued, when the code was
// answered as sent) is asked for again with the resend route.
func (w *soakWorld) awaitCode(ctx context.Context, tok string, step codeStep, issued time.Time) error {
	tried := map[string]bool{}
	for {
		next := ""
		for _, m := range w.mailed(step.addr, step.subject) {
			if !tried[m.code] {
				next = m.code
				break
			}
		}
		if next != "" {
			tried[next] = true
			w.stats.remember("", next)
			err := w.retrying(ctx, step.name+" code", func() error { return step.verify(next) })
			if !errors.Is(err, errStaleCode) {
				return err
			}
			w.stats.retry(step.name + ": mailed code refused (replaced or expired), next mail")
			continue
		}
		if time.Since(issued) > soakCodeTTL {
			done, err := w.resend(ctx, tok, step)
			if err != nil || done {
				return err
			}
			issued = time.Now()
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no code in the inbox for %s: %w", step.name, step.statusID, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// resend asks for a new code of step: 202, or 429 when a code went out moments ago (perhaps by
// an attempt whose answer was lost). done says the exchange got to its end meanwhile.
func (w *soakWorld) resend(ctx context.Context, tok string, step codeStep) (done bool, err error) {
	err = w.retrying(ctx, step.name+" resend", func() error {
		code, b, err := w.call(ctx, http.MethodPost, baseURL(pick(w.status))+step.resendPath, tok, "",
			map[string]string{"exchange_id": step.exchange})
		var r errRetry
		if errors.As(err, &r) && strings.HasPrefix(r.reason, "http 429") {
			w.stats.retry(step.name + " resend: 429 (a code went out moments ago; wait for it)")
			return nil
		}
		if err != nil {
			return err
		}
		switch code {
		case http.StatusAccepted:
			w.stats.retry(step.name + ": no code within its life, resent (202)")
			return nil
		case http.StatusConflict:
			s, ok, err := w.afterConflict(ctx, tok, step.statusID, step.done, fmt.Errorf("resend: %d %s", code, b))
			if ok {
				done = true
				step.settle(s)
			}
			return err
		}
		return fmt.Errorf("resend: %d %s", code, b)
	})
	return done, err
}

// problemCode is the code of a problem answer.
func problemCode(b []byte) string {
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &p)
	return p.Code
}

// emailEnroll enrolls res.email as the user's first factor.
func (w *soakWorld) emailEnroll(ctx context.Context, tok string, res *flowResult) error {
	var in initiateResponse
	if err := w.initiate(ctx, "email initiation", w.initiation, "/verification-srv/v2/setup/initiate/email", tok,
		map[string]string{"email": res.email}, &in); err != nil {
		return err
	}
	issued := time.Now()
	res.emailEnrollID = in.StatusID
	settle := func(s statusResponse) { res.emailPHID = s.PHID }
	step := codeStep{
		name: "email enrollment", addr: res.email, subject: enrollmentMailSubject, statusID: in.StatusID,
		exchange: in.ExchangeID.ExchangeID, done: "ENROLLED", resendPath: "/verification-srv/v2/setup/resend/email", settle: settle,
	}
	step.verify = func(code string) error {
		c, b, err := w.call(ctx, http.MethodPost, baseURL(pick(w.status))+"/verification-srv/v2/setup/enroll/email", tok, "",
			map[string]string{"exchange_id": step.exchange, "verification_code": code})
		if err != nil {
			return err
		}
		switch {
		case c == http.StatusOK:
			var s statusResponse
			if err := json.Unmarshal(b, &s); err != nil || s.Status != "ENROLLED" || s.PHID == "" {
				return fmt.Errorf("enroll answer %d %s", c, b)
			}
			settle(s)
			return nil
		case c == http.StatusConflict:
			s, ok, err := w.afterConflict(ctx, tok, step.statusID, "ENROLLED", fmt.Errorf("%d %s", c, b))
			if ok {
				settle(s)
			}
			return err
		case c == http.StatusBadRequest && problemCode(b) == "invalid_code":
			// An earlier attempt with this code may have enrolled before its answer was lost.
			s, err := w.pollState(ctx, tok, step.statusID)
			if err == nil && s.Status == "ENROLLED" {
				settle(s)
				return nil
			}
			return errStaleCode
		}
		return fmt.Errorf("%d %s", c, b)
	}
	if err := w.awaitCode(ctx, tok, step, issued); err != nil {
		return err
	}
	if res.emailPHID == "" {
		return fmt.Errorf("email enrollment %s: ENROLLED without a ph_id", in.StatusID)
	}
	// The factor is in the registry (through either replica) before the sign-in uses it: the
	// answer ENROLLED stands even when the registration right after it failed, and the registry
	// then registers it from the enrolled event.
	return w.retrying(ctx, "email factor listed", func() error {
		code, b, err := w.call(ctx, http.MethodGet, baseURL(pick(w.registry))+"/device-srv/devices", tok, "", nil)
		if err != nil {
			return err
		}
		var devices []struct {
			PHID string `json:"ph_id"`
		}
		if code != http.StatusOK || json.Unmarshal(b, &devices) != nil {
			return fmt.Errorf("devices: %d %s", code, b)
		}
		for _, d := range devices {
			if d.PHID == res.emailPHID {
				return nil
			}
		}
		return errRetry{"email factor not registered yet"}
	})
}

// emailSignIn signs the user in with a mailed code (usage MULTIFACTOR_AUTHENTICATION, or
// STEP_UP for a fresh proof) and returns the sign-in's status id and mfa_token.
func (w *soakWorld) emailSignIn(ctx context.Context, tok, addr, usage string) (statusID, mfaToken string, err error) {
	var ai authInitiation
	if err := w.initiate(ctx, "email sign-in initiation", w.status, "/verification-srv/authentication/email/initiation", tok,
		map[string]string{"usage_type": usage}, &ai); err != nil {
		return "", "", err
	}
	issued := time.Now()
	settle := func(s statusResponse) { mfaToken = s.MFAToken }
	step := codeStep{
		name: "email sign-in", addr: addr, subject: signInMailSubject, statusID: ai.StatusID,
		exchange: ai.ExchangeID.ExchangeID, done: "AUTHENTICATED", resendPath: "/verification-srv/authentication/email/resend", settle: settle,
	}
	step.verify = func(code string) error {
		c, b, err := w.call(ctx, http.MethodPost, baseURL(pick(w.status))+"/verification-srv/authentication/email/verification", tok, "",
			map[string]string{"exchange_id": step.exchange, "pass_code": code})
		if err != nil {
			// The attempt may have been refused (a verification.failed event) before its
			// answer was lost.
			w.stats.refusal(step.statusID, false)
			return err
		}
		switch {
		case c == http.StatusOK:
			var r authResult
			if err := json.Unmarshal(b, &r); err != nil || r.Status != "AUTHENTICATED" || r.MFAToken == "" {
				return fmt.Errorf("verification answer %d %s", c, b)
			}
			mfaToken = r.MFAToken
			return nil
		case c == http.StatusConflict:
			s, ok, err := w.afterConflict(ctx, tok, step.statusID, "AUTHENTICATED", fmt.Errorf("%d %s", c, b))
			if ok {
				settle(s)
			}
			return err
		case c == http.StatusBadRequest && problemCode(b) == "invalid_code":
			w.stats.refusal(step.statusID, true)
			s, err := w.pollState(ctx, tok, step.statusID)
			if err == nil && s.Status == "AUTHENTICATED" {
				settle(s)
				return nil
			}
			return errStaleCode
		}
		return fmt.Errorf("%d %s", c, b)
	}
	if err := w.awaitCode(ctx, tok, step, issued); err != nil {
		return ai.StatusID, "", err
	}
	if mfaToken == "" {
		return ai.StatusID, "", fmt.Errorf("email sign-in %s: AUTHENTICATED without an mfa_token for its initiator", ai.StatusID)
	}
	return ai.StatusID, mfaToken, nil
}

// initiateTOTPWithStepUp starts the TOTP enrollment of a user who has a factor (the email
// address): X-MFA-Token is the mfa_token of res's email sign-in, every attempt carries the same
// Idempotency-Key. A retry of an initiation whose answer was lost needs no new proof once the
// enrollment is recorded; if the first attempt spent the proof and stopped before that, the
// answer is 403 step_up_required, and the documented way on is a fresh proof: another email
// sign-in (usage STEP_UP).
func (w *soakWorld) initiateTOTPWithStepUp(ctx context.Context, tok string, res *flowResult, out *initiateResponse) error {
	key := crand.Text()
	proof := res.mfaToken
	return w.retrying(ctx, "initiate", func() error {
		code, b, err := w.call(ctx, http.MethodPost, baseURL(pick(w.initiation))+"/verification-srv/v2/setup/initiate/totp?qr=none", tok, key, nil,
			"X-MFA-Token", proof)
		if err != nil {
			return err
		}
		switch {
		case code == http.StatusOK:
			return json.Unmarshal(b, out)
		case code == http.StatusForbidden && problemCode(b) == "step_up_required":
			id, tokn, err := w.emailSignIn(ctx, tok, res.email, "STEP_UP")
			if id != "" {
				res.stepUpIDs = append(res.stepUpIDs, id)
			}
			if err != nil {
				return fmt.Errorf("fresh step-up proof: %w", err)
			}
			proof = tokn
			return errRetry{"403 step_up_required (proof spent by a lost attempt; new STEP_UP sign-in)"}
		}
		return fmt.Errorf("%d %s", code, b)
	})
}

// deliveryReport is what checkDeliveries found.
type deliveryReport struct {
	published, stored, mails, distinct, duplicates, notStored int
	duplicateIDs                                              []string
	// Security notifications (Message-ID <notice-<event id>@host>): how many events asked for
	// one, how many mails arrived, and those that came twice.
	noticeEvents, notices, noticeDuplicates int
}

// noticePrefix starts the Message-ID of a security notification: the event id follows.
const noticePrefix = "<notice-"

// checkDeliveries holds the SMTP server's mails against the deliveries: every delivery the
// registry stored on MFA_DELIVERIES arrived (the stream is empty and as many distinct
// Message-IDs arrived as requests were stored), each mail is the one its id names (recipient,
// code, kind), one delivery has one Message-ID, and a Message-ID came twice at most as often
// as a notifier replica was killed (a kill between sending and recording the delivery).
func checkDeliveries(ctx context.Context, t *testing.T, w *soakWorld, js jetstream.JetStream, notifierKills int) deliveryReport {
	t.Helper()
	var rep deliveryReport
	var info *jetstream.StreamInfo
	// A request a killed notifier held is delivered again once its AckWait has passed.
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := js.Stream(ctx, delivery.Stream)
		if err == nil {
			info, err = st.Info(ctx)
		}
		distinct := map[string]bool{}
		for _, m := range w.inbox.Messages() {
			distinct[m.MessageID] = true
		}
		if err == nil && info.State.Msgs == 0 && uint64(len(distinct)) >= info.State.LastSeq {
			break
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Errorf("deliveries: %s: %v", delivery.Stream, err)
				return rep
			}
			t.Errorf("deliveries: after 90 s %d requests still on %s (%d stored in all), %d distinct mails arrived",
				info.State.Msgs, delivery.Stream, info.State.LastSeq, len(distinct))
			break
		}
		time.Sleep(250 * time.Millisecond) // a bounded wait for redeliveries, not synchronisation
	}
	requests := w.tap.requests()
	rep.published, rep.stored = len(requests), int(info.State.LastSeq)
	if w.tap.unreadable > 0 {
		t.Errorf("deliveries: %d published requests did not open with MFA_DELIVERY_KEY", w.tap.unreadable)
	}

	msgs := w.inbox.Messages()
	rep.mails = len(msgs)
	count := map[string]int{}
	midsOf := map[string]map[string]bool{} // delivery id → Message-IDs
	for _, m := range msgs {
		if m.Channel != "email" {
			t.Errorf("deliveries: an SMS to %s; the soak sends none", m.To)
			continue
		}
		if strings.HasPrefix(m.MessageID, noticePrefix) {
			continue // a security notification: checkNotices
		}
		count[m.MessageID]++
		mid := strings.TrimSuffix(strings.TrimPrefix(m.MessageID, "<"), ">")
		at := strings.LastIndexByte(mid, '@')
		if at <= 0 {
			t.Errorf("deliveries: Message-ID %q is not <delivery-id@host>", m.MessageID)
			continue
		}
		id := mid[:at]
		if midsOf[id] == nil {
			midsOf[id] = map[string]bool{}
		}
		midsOf[id][m.MessageID] = true
		r, ok := requests[id]
		if !ok {
			t.Errorf("deliveries: mail %s names delivery %s, which no one published", m.MessageID, id)
			continue
		}
		kind := map[string]string{delivery.EnrollmentCode: enrollmentMailSubject, delivery.SignInCode: signInMailSubject}[r.Kind]
		match := mailCode.FindStringSubmatch(m.Text)
		switch {
		case !strings.EqualFold(m.To, r.To):
			t.Errorf("deliveries: mail %s went to another address than its request's", m.MessageID)
		case match == nil || match[1] != r.Code:
			t.Errorf("deliveries: mail %s does not carry its request's code", m.MessageID)
		case kind == "" || !strings.Contains(m.Subject, kind):
			t.Errorf("deliveries: mail %s has subject %q, not one of a %s", m.MessageID, m.Subject, r.Kind)
		}
	}
	rep.distinct = len(count)
	rep.mails -= countNotices(msgs)
	for id, mids := range midsOf {
		if len(mids) > 1 {
			t.Errorf("deliveries: delivery %s arrived under %d Message-IDs %v, want one", id, len(mids), keys(mids))
		}
	}
	for mid, n := range count {
		if n > 1 {
			rep.duplicates += n - 1
			rep.duplicateIDs = append(rep.duplicateIDs, fmt.Sprintf("%s ×%d", mid, n))
		}
	}
	sort.Strings(rep.duplicateIDs)
	if rep.duplicates > notifierKills {
		t.Errorf("deliveries: %d mails sent again (%v), more than the %d notifier kills explain", rep.duplicates, rep.duplicateIDs, notifierKills)
	}
	// Every stored request arrived: the notifier sends only stored requests, each id is stored
	// once (the stream's dedupe window), so as many distinct deliveries as stored ones.
	if len(midsOf) != rep.stored {
		t.Errorf("deliveries: %d stored on %s, %d distinct deliveries arrived at the SMTP server", rep.stored, delivery.Stream, len(midsOf))
	}
	for id := range requests {
		if midsOf[id] == nil {
			rep.notStored++
		}
	}
	return rep
}

func countNotices(msgs []devinbox.Message) int {
	n := 0
	for _, m := range msgs {
		if strings.HasPrefix(m.MessageID, noticePrefix) {
			n++
		}
	}
	return n
}

// checkNotices holds the security notifications against the events: every factor registered
// (mfa.device.registered of a soak user, who has an email factor, so a contact) was mailed to
// the user exactly once, a notifier kill between sending and recording excepted, whatever the
// redeliveries and restarts.
func checkNotices(t *testing.T, w *soakWorld, all []soakEvent, notifierKills int, rep *deliveryReport) {
	t.Helper()
	want := map[string]bool{}
	for _, e := range all {
		if e.Type == events.DeviceRegistered {
			want[e.ID] = true
		}
	}
	rep.noticeEvents = len(want)
	got := map[string]int{}
	// The notifier mails an event once it reads it: wait a bounded while for the last ones.
	deadline := time.Now().Add(90 * time.Second)
	for {
		clear(got)
		for _, m := range w.inbox.Messages() {
			if id, ok := strings.CutPrefix(m.MessageID, noticePrefix); ok {
				if at := strings.LastIndexByte(id, '@'); at > 0 {
					got[id[:at]]++
				}
			}
		}
		missing := 0
		for id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("notices: %d of %d registered factors were never mailed to their user", missing, len(want))
			break
		}
		time.Sleep(250 * time.Millisecond) // a bounded wait for the notifier, not synchronisation
	}
	for id, n := range got {
		rep.notices += n
		if !want[id] {
			t.Errorf("notices: a mail names event %s, which is no registered factor of this run", id)
		}
		if n > 1 {
			rep.noticeDuplicates += n - 1
		}
	}
	if rep.noticeDuplicates > notifierKills {
		t.Errorf("notices: %d sent again, more than the %d notifier kills explain", rep.noticeDuplicates, notifierKills)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
