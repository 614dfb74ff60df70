package registrysvc_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/rpc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// notifier answers the notifier's channels query on e's NATS, as services/notifier does.
func (e *env) notifier(t *testing.T, email, sms bool) {
	t.Helper()
	sub, err := e.nc.Subscribe(commands.NotifierChannels, func(m *nats.Msg) {
		b, _ := json.Marshal(commands.ChannelsReply{Email: email, SMS: sms})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// deliveryLog reads the delivery requests the registry publishes on MFA_DELIVERIES, in order, as the
// notifier would, and checks that neither the code nor the address is readable in the stored
// message.
type deliveryLog struct {
	e    *env
	cons jetstream.Consumer
}

func (e *env) deliveries(t *testing.T) *deliveryLog {
	t.Helper()
	// MFA_DELIVERIES is a work queue: its one consumer acknowledges what it took, as the
	// notifier's does.
	cons, err := e.js.CreateOrUpdateConsumer(ctxT(t), delivery.Stream, jetstream.ConsumerConfig{Durable: "test", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("consumer on %s: %v", delivery.Stream, err)
	}
	return &deliveryLog{e: e, cons: cons}
}

func (o *deliveryLog) next(t *testing.T) delivery.Request {
	t.Helper()
	msg, err := o.cons.Next(jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatalf("no delivery request: %v", err)
	}
	_ = msg.Ack()
	r, err := delivery.Open(o.e.deliveryKey, msg.Data())
	if err != nil {
		t.Fatalf("open delivery request: %v", err)
	}
	if bytes.Contains(msg.Data(), []byte(r.Code)) || bytes.Contains(msg.Data(), []byte(r.To)) {
		t.Fatal("the stored delivery request shows the code or the address in plain text")
	}
	if got := msg.Headers().Get(jetstream.MsgIDHeader); got != r.ID {
		t.Errorf("Nats-Msg-Id %q, want the delivery id %q", got, r.ID)
	}
	return r
}

func (e *env) createOOB(t *testing.T, statusID string, req commands.CreateCredentialRequest) (commands.CreateCredentialReply, error) {
	t.Helper()
	req.StatusID = statusID
	if req.ExpiresAt.IsZero() {
		req.ExpiresAt = e.clock.Now().Add(10 * time.Minute)
	}
	var reply commands.CreateCredentialReply
	err := rpc.Call(ctxT(t), e.nc, commands.RegistryCreateCredential, req, &reply)
	if err == nil {
		e.pendingMu.Lock()
		e.pending[statusID] = reply.PendingCredential
		e.pendingMu.Unlock()
	}
	return reply, err
}

// TestEmailFactor enrolls an address (the code comes through MFA_DELIVERIES, sealed), refuses
// it a second time, signs in with a sent code and counts wrong ones, on both backends.
func TestEmailFactor(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			e := startOn(t, backend)
			e.notifier(t, true, false)
			out := e.deliveries(t)
			statusID := uuid.NewString()
			reply, err := e.createOOB(t, statusID, commands.CreateCredentialRequest{Sub: "alice", Method: "EMAIL", Destination: "Alice@Example.ORG", Locale: "de"})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if reply.Secret != "" || reply.Destination != "A***@example.org" || reply.DeliveryID == "" {
				t.Fatalf("create reply = %+v", reply)
			}
			sent := out.next(t)
			if sent.To != "Alice@example.org" || sent.Kind != delivery.EnrollmentCode || sent.Channel != delivery.Email ||
				sent.StatusID != statusID || sent.ID != reply.DeliveryID || sent.Locale != "de" || len(sent.Code) != 6 {
				t.Fatalf("delivery = %+v", sent)
			}
			if bytes.Contains(reply.PendingCredential, []byte(sent.Code)) || bytes.Contains(reply.PendingCredential, []byte("Alice")) {
				t.Fatal("the sealed pending credential shows the code or the address")
			}

			err = e.verify(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: wrongCode(sent.Code)}, &commands.CredentialClaim{})
			assertCode(t, err, fault.InvalidCode)
			claim, err := e.activate(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "alice", Code: sent.Code})
			if err != nil {
				t.Fatalf("enroll with the sent code: %v", err)
			}
			resp, body := e.do(t, "alice", http.MethodGet, "/device-srv/devices", "")
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"type":"EMAIL"`) ||
				!strings.Contains(string(body), `"destination":"A***@example.org"`) || strings.Contains(string(body), "Alice@") {
				t.Fatalf("device list: %d %s", resp.StatusCode, body)
			}

			_, err = e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "alice", Method: "EMAIL", Destination: "alice@example.org"})
			assertCode(t, err, fault.AlreadyEnrolled)

			signIn := uuid.NewString()
			var ch commands.ChallengeReply
			if err := rpc.Call(ctxT(t), e.nc, commands.RegistryFactorsChallenge, commands.ChallengeRequest{Sub: "alice", Method: "EMAIL", StatusID: signIn}, &ch); err != nil {
				t.Fatalf("challenge: %v", err)
			}
			code := out.next(t)
			if ch.PHID != claim.PHID || ch.Destination != "A***@example.org" || code.Kind != delivery.SignInCode || code.ID != ch.DeliveryID {
				t.Fatalf("challenge %+v, delivery %+v", ch, code)
			}
			check := func(c, statusID string, challenge []byte) error {
				return rpc.Call(ctxT(t), e.nc, commands.RegistryFactorsCheck, commands.FactorRequest{
					Sub: "alice", Method: "EMAIL", Code: c, StatusID: statusID, Challenge: challenge}, nil)
			}
			assertCode(t, check(wrongCode(code.Code), signIn, ch.Challenge), fault.InvalidCode)
			// The code belongs to its sign-in: with another sign-in's id the challenge does not open.
			assertCode(t, check(code.Code, uuid.NewString(), ch.Challenge), fault.BadRequest)
			var ok commands.FactorReply
			if err := rpc.Call(ctxT(t), e.nc, commands.RegistryFactorsCheck, commands.FactorRequest{
				Sub: "alice", Method: "EMAIL", Code: code.Code, StatusID: signIn, Challenge: ch.Challenge}, &ok); err != nil || ok.PHID != claim.PHID {
				t.Fatalf("right code: %+v %v", ok, err)
			}
			// A code past its life is wrong.
			e.clock.Advance(6 * time.Minute)
			assertCode(t, check(code.Code, signIn, ch.Challenge), fault.InvalidCode)
		})
	}
}

// TestEmailEnrollmentResend: a resent code replaces the first one.
func TestEmailEnrollmentResend(t *testing.T) {
	e := start(t)
	e.notifier(t, true, false)
	out := e.deliveries(t)
	statusID := uuid.NewString()
	if _, err := e.createOOB(t, statusID, commands.CreateCredentialRequest{Sub: "bob", Method: "EMAIL", Destination: "bob@example.org"}); err != nil {
		t.Fatal(err)
	}
	first := out.next(t)
	e.pendingMu.Lock()
	pending := e.pending[statusID]
	e.pendingMu.Unlock()
	var (
		again  commands.CreateCredentialReply
		second delivery.Request
	)
	// Codes are random: resend until the new one differs from the first (one in a million
	// does not), so the old code's refusal says something.
	for range 3 {
		if err := rpc.Call(ctxT(t), e.nc, commands.RegistryResendCredential, commands.ResendCredentialRequest{StatusID: statusID, Sub: "bob", PendingCredential: pending}, &again); err != nil {
			t.Fatalf("resend: %v", err)
		}
		second = out.next(t)
		if second.Code != first.Code {
			break
		}
	}
	if second.ID == first.ID || second.ID != again.DeliveryID || second.To != "bob@example.org" || second.Code == first.Code {
		t.Fatalf("second delivery %+v after %+v", second, first)
	}
	err := e.verify(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "bob", Code: first.Code, PendingCredential: again.PendingCredential}, &commands.CredentialClaim{})
	assertCode(t, err, fault.InvalidCode)
	var claim commands.CredentialClaim
	if err := e.verify(t, commands.VerifyCredentialRequest{StatusID: statusID, Sub: "bob", Code: second.Code, PendingCredential: again.PendingCredential}, &claim); err != nil {
		t.Fatalf("the resent code: %v", err)
	}
}

// TestSMSRules: numbers are normalised to E.164 and masked, regions outside MFA_SMS_REGIONS are
// refused, the hourly limits refuse with Retry-After and send nothing, while no notifier has
// answered yet the caller is told to retry, and a notifier that cannot send SMS makes the method
// inactive.
func TestSMSRules(t *testing.T) {
	e := start(t)
	out := e.deliveries(t)
	_, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "carol", Method: "SMS", Destination: "0151 12345678", Region: "DE"})
	assertCode(t, err, fault.Unavailable)
	e.notifier(t, false, true)
	// "Nobody answered" is not remembered: the next request asks again and finds the notifier.
	reply, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "carol", Method: "SMS", Destination: "0151 12345678", Region: "DE"})
	if err != nil || reply.Destination != "+49 ••• •••••• 78" {
		t.Fatalf("create: %+v %v", reply, err)
	}
	if r := out.next(t); r.To != "+4915112345678" || r.Channel != delivery.SMS {
		t.Fatalf("delivery = %+v", r)
	}
	_, err = e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "carol", Method: "SMS", Destination: "+1 415 555 2671"})
	assertCode(t, err, fault.RegionNotAllowed)
	_, err = e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "carol", Method: "SMS", Destination: "12"})
	assertCode(t, err, fault.BadRequest)
	// Per number: 2 an hour (this test's policy); the first went out above.
	if _, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "dave", Method: "SMS", Destination: "+4915112345678"}); err != nil {
		t.Fatal(err)
	}
	out.next(t)
	_, err = e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "erin", Method: "SMS", Destination: "+4915112345678"})
	assertCode(t, err, fault.TooManyRequests)
	var fe *fault.Error
	if !errors.As(err, &fe) || !fe.Until.After(e.clock.Now()) {
		t.Errorf("the refusal says no retry time: %v", err)
	}
	// Per user: 3 an hour; carol has had 1.
	for i, n := range []string{"+4915112345601", "+4915112345602"} {
		if _, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "carol", Method: "SMS", Destination: n}); err != nil {
			t.Fatalf("sms %d: %v", i, err)
		}
		out.next(t)
	}
	_, err = e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "carol", Method: "SMS", Destination: "+4915112345603"})
	assertCode(t, err, fault.TooManyRequests)
	// A new hour, a new allowance.
	e.clock.Advance(time.Hour)
	if _, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "carol", Method: "SMS", Destination: "+4915112345603"}); err != nil {
		t.Fatalf("after an hour: %v", err)
	}
}

// TestSMSInactiveWithoutProvider: a notifier that answers it has no SMS provider makes SMS
// inactive at once (409 method_inactive), nothing published, while EMAIL works.
func TestSMSInactiveWithoutProvider(t *testing.T) {
	e := start(t)
	out := e.deliveries(t)
	e.notifier(t, true, false)
	_, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "dave", Method: "SMS", Destination: "+4915112345678"})
	assertCode(t, err, fault.MethodInactive)
	if _, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{Sub: "dave", Method: "EMAIL", Destination: "dave@example.org"}); err != nil {
		t.Fatalf("email: %v", err)
	}
	if r := out.next(t); r.Channel != delivery.Email {
		t.Fatalf("the first delivery is %+v, want the email (nothing for the SMS)", r)
	}
}

// TestSMSLimitUnderConcurrency: requests racing at a limit do not all pass: of 8 concurrent SMS
// enrollments of one user (3 an hour), on both backends, exactly 3 send a code and 5 are refused
// with 429, and only the 3 reach MFA_DELIVERIES.
func TestSMSLimitUnderConcurrency(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			e := startOn(t, backend)
			e.notifier(t, false, true)
			const racers = 8
			errs := make(chan error, racers)
			var wg sync.WaitGroup
			for i := range racers {
				wg.Go(func() {
					_, err := e.createOOB(t, uuid.NewString(), commands.CreateCredentialRequest{
						Sub: "grace", Method: "SMS", Destination: fmt.Sprintf("+49151123456%02d", i)})
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			var sent, refused int
			for err := range errs {
				switch {
				case err == nil:
					sent++
				case fault.CodeOf(err) == fault.TooManyRequests:
					refused++
				default:
					t.Errorf("unexpected answer: %v", err)
				}
			}
			if sent != 3 || refused != racers-3 {
				t.Fatalf("%d sent, %d refused; want 3 sent (MFA_SMS_USER_RATE 3) and %d refused", sent, refused, racers-3)
			}
			stream, err := e.js.Stream(ctxT(t), delivery.Stream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := stream.Info(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != 3 {
				t.Fatalf("%d delivery requests on %s, want 3 (nothing sent for a refusal)", info.State.Msgs, delivery.Stream)
			}
		})
	}
}
