package notifiersvc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/devinbox"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/natsx"
	"github.com/mfaflow/mfaflow/services/notifier/internal/natsapi"
	"github.com/mfaflow/mfaflow/services/notifier/notifiersvc"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// registry answers commands.RegistryContact as the device registry does: a micro service on
// its own connection, not_found for a user without a contact address.
type registry struct {
	svc      micro.Service
	mu       sync.Mutex
	contacts map[string]commands.ContactReply
	asked    int
}

func (w *world) startRegistry(contacts map[string]commands.ContactReply) *registry {
	w.t.Helper()
	r := &registry{contacts: contacts}
	svc, err := micro.AddService(w.srv.Connect(w.t), micro.Config{Name: "test-registry", Version: "0.0.1"})
	if err != nil {
		w.t.Fatal(err)
	}
	err = svc.AddEndpoint("contact", micro.HandlerFunc(func(req micro.Request) {
		var cr commands.ContactRequest
		_ = json.Unmarshal(req.Data(), &cr)
		r.mu.Lock()
		r.asked++
		c, ok := r.contacts[cr.Sub]
		r.mu.Unlock()
		if !ok {
			_ = req.Error("not_found", "no contact address", nil)
			return
		}
		_ = req.RespondJSON(c)
	}), micro.WithEndpointSubject(commands.RegistryContact))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = svc.Stop() })
	r.svc = svc
	return r
}

func (r *registry) questions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.asked
}

// publishEvent publishes a CloudEvent on MFA_EVENTS as the services do: events.New, the type's
// subject, Nats-Msg-Id = the event id. msgID overrides the Nats-Msg-Id (a copy the stream
// stores again, as a redelivery hands it over again).
func (w *world) publishEvent(t events.Type, id, subject string, at time.Time, data any, msgID ...string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := natsx.EnsureEventStream(ctx, w.js); err != nil {
		w.t.Fatal(err)
	}
	env, err := events.New(id, events.SourceRegistry, t, subject, at, data)
	if err != nil {
		w.t.Fatal(err)
	}
	raw, err := json.Marshal(env)
	if err != nil {
		w.t.Fatal(err)
	}
	mid := id
	if len(msgID) > 0 {
		mid = msgID[0]
	}
	if _, err := w.js.Publish(ctx, t.Subject(), raw, jetstream.WithMsgID(mid)); err != nil {
		w.t.Fatal(err)
	}
}

// noticesSettled waits until the notifier has finished with every event published: nothing
// pending or unacknowledged on its events consumer.
func (w *world) noticesSettled() {
	w.t.Helper()
	natstest.Eventually(w.t, 15*time.Second, func() error {
		c, err := w.js.Consumer(context.Background(), events.Stream, natsapi.EventsConsumer)
		if err != nil {
			return err
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
			return fmt.Errorf("pending %d, ack pending %d, redelivered %d", info.NumPending, info.NumAckPending, info.NumRedelivered)
		}
		return nil
	})
}

// byMessageID groups the inbox's mails by Message-ID.
func byMessageID(in *devinbox.Inbox) map[string][]devinbox.Message {
	out := map[string][]devinbox.Message{}
	for _, m := range in.Messages() {
		out[m.MessageID] = append(out[m.MessageID], m)
	}
	return out
}

func noticeMessageID(eventID string) string { return "<notice-" + eventID + "@example.org>" }

var contacts = map[string]commands.ContactReply{
	"alice": {Email: "alice@example.org", Locale: "en"},
	"bernd": {Email: "bernd@example.de", Locale: "de-AT"},
}

// TestNotices publishes one event of every kind for a user in English and one in German and
// expects one mail each, in the contact's language, saying what happened, when, and what to do.
func TestNotices(t *testing.T) {
	w := newWorld(t)
	in := startInbox(t, devinbox.Options{})
	w.startRegistry(contacts)
	w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})

	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	lockedUntil := at.Add(15 * time.Minute)
	type event struct {
		typ  events.Type
		data func(sub string) any
		// en and de are what the subject and text must say.
		en, de []string
	}
	cases := map[string]event{
		"registered": {events.DeviceRegistered, func(sub string) any {
			return events.Device{PHID: "ph1", DeviceID: "dev1", Sub: sub, Method: "TOTP", FriendlyName: "Work phone"}
		}, []string{"added", "authenticator app", "Work phone", at.Format("15:04 MST"), "Was it not you?"},
			[]string{"hinzugefügt", "Authenticator-App", "Work phone", at.Format("15:04 MST"), "Das waren nicht Sie?"}},
		"removed": {events.DeviceRemoved, func(sub string) any {
			return events.Device{PHID: "ph2", DeviceID: "dev2", Sub: sub, Method: "EMAIL", FriendlyName: "Mail"}
		}, []string{"removed", "email address", "If that was you"}, []string{"entfernt", "E-Mail-Adresse", "Wenn Sie das waren"}},
		"removedByAdmin": {events.DeviceRemoved, func(sub string) any {
			return events.Device{PHID: "ph3", DeviceID: "dev3", Sub: sub, Method: "WEBAUTHN", Actor: "admin-1"}
		}, []string{"removed", "passkey", "by an administrator"}, []string{"entfernt", "Passkey", "von einem Administrator"}},
		"recoveryGenerated": {events.RecoveryGenerated, func(sub string) any {
			return events.Recovery{Sub: sub, Remaining: 10, CreatedAt: at}
		}, []string{"10 recovery codes", "no longer work"}, []string{"10 neue Wiederherstellungscodes", "gelten nicht mehr"}},
		"recoveryUsed": {events.RecoveryUsed, func(sub string) any {
			return events.Recovery{Sub: sub, Remaining: 4, CreatedAt: at, StatusID: "st1"}
		}, []string{"recovery code was used", "4 recovery codes left"}, []string{"Wiederherstellungscode", "noch 4 Wiederherstellungscodes"}},
		"locked": {events.VerificationLocked, func(sub string) any {
			return events.Lock{Sub: sub, LockedUntil: lockedUntil, Lock: 1, FailedAttempts: 5}
		}, []string{"too many wrong codes", lockedUntil.Format("15:04 MST")}, []string{"zu viele falsche Codes", lockedUntil.Format("15:04 MST")}},
		"pushDeniedNotMe": {events.VerificationDenied, func(sub string) any {
			return events.Verification{StatusID: "st2", Sub: sub, Method: "PUSH", Status: "DENIED", Reason: "not_me",
				Context: map[string]string{"app": "Webshop", "ip": "192.0.2.7"}}
		}, []string{"not me", "Webshop", "192.0.2.7", "Change your password"}, []string{"Das war ich nicht", "Webshop", "Passwort"}},
		"mfaDisabled": {events.FactorsReset, func(sub string) any {
			return events.Reset{Sub: sub, DevicesRemoved: 2, RecoveryCodesRemoved: true, Actor: sub, Reason: "user_disabled"}
		}, []string{"MFA was disabled", "as you confirmed", "Was it not you?"}, []string{"ausgeschaltet", "Das waren nicht Sie?"}},
		"adminReset": {events.FactorsReset, func(sub string) any {
			return events.Reset{Sub: sub, DevicesRemoved: 1, Actor: "admin-1", Reason: "admin_reset"}
		}, []string{"reset by an administrator", "support team"}, []string{"von einem Administrator zurückgesetzt", "Support"}},
		"resetOfOldVersion": {events.FactorsReset, func(sub string) any {
			return events.Reset{Sub: sub, Actor: "admin-1"}
		}, []string{"reset by an administrator"}, []string{"von einem Administrator zurückgesetzt"}},
	}
	ids := map[string]string{} // case/user → event id
	for name, c := range cases {
		for _, sub := range []string{"alice", "bernd", "carol"} {
			id := uuid.NewString()
			ids[name+"/"+sub] = id
			w.publishEvent(c.typ, id, sub, at, c.data(sub))
		}
	}
	// Pushes denied for another reason than "not me" are the user's own answers: no mail.
	quiet := []string{uuid.NewString(), uuid.NewString()}
	for i, reason := range []string{"denied", "wrong_number"} {
		w.publishEvent(events.VerificationDenied, quiet[i], "st-q", at, events.Verification{StatusID: "st-q", Sub: "alice", Method: "PUSH", Reason: reason})
	}
	// A device renamed is not a notice: the consumer does not even take it.
	w.publishEvent(events.DeviceRenamed, uuid.NewString(), "ph1", at, events.Device{PHID: "ph1", Sub: "alice", FriendlyName: "x"})

	waitMessages(t, in, 2*len(cases))
	w.noticesSettled()
	mails := byMessageID(in)
	if len(in.Messages()) != 2*len(cases) {
		t.Fatalf("%d mails, want %d (one per event of alice and bernd, none for carol or plain denials)", len(in.Messages()), 2*len(cases))
	}
	for name, c := range cases {
		for _, u := range []struct{ sub, to string }{{"alice", "alice@example.org"}, {"bernd", "bernd@example.de"}} {
			t.Run(name+"/"+u.sub, func(t *testing.T) {
				got := mails[noticeMessageID(ids[name+"/"+u.sub])]
				if len(got) != 1 {
					t.Fatalf("%d mails for the event", len(got))
				}
				m := got[0]
				if m.To != u.to || m.Subject == "" || !strings.Contains(m.HTML, "<p>") {
					t.Fatalf("mail to %q subject %q html %q", m.To, m.Subject, m.HTML)
				}
				want := c.en
				if u.sub == "bernd" {
					want = c.de
				}
				for _, s := range want {
					if !strings.Contains(m.Subject+"\n"+m.Text, s) {
						t.Errorf("mail lacks %q:\nsubject %s\n%s", s, m.Subject, m.Text)
					}
				}
			})
		}
		if n := len(mails[noticeMessageID(ids[name+"/carol"])]); n != 0 {
			t.Errorf("%s: %d mails for a user without a contact address", name, n)
		}
	}
}

// TestNoticeOnce: an event handed over again — after the notifier was closed and a new one
// started, or as a second copy on the stream — is not mailed twice.
func TestNoticeOnce(t *testing.T) {
	w := newWorld(t)
	in := startInbox(t, devinbox.Options{})
	w.startRegistry(contacts)
	first := w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
	at := time.Now().UTC()
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	w.publishEvent(events.DeviceRegistered, a, "ph1", at, events.Device{PHID: "ph1", Sub: "alice", Method: "TOTP"})
	w.publishEvent(events.RecoveryUsed, b, "alice", at, events.Recovery{Sub: "alice", Remaining: 3})
	waitMessages(t, in, 2)
	w.noticesSettled()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// While no notifier runs: a new event, and copies of the mailed ones (what a lost ack
	// hands over again).
	w.publishEvent(events.VerificationLocked, c, "alice", at, events.Lock{Sub: "alice", LockedUntil: at.Add(time.Hour)})
	w.publishEvent(events.DeviceRegistered, a, "ph1", at, events.Device{PHID: "ph1", Sub: "alice", Method: "TOTP"}, "copy-a")
	w.publishEvent(events.RecoveryUsed, b, "alice", at, events.Recovery{Sub: "alice", Remaining: 3}, "copy-b")
	second := w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
	waitMessages(t, in, 3)
	w.noticesSettled()
	// And once more after another restart: the durable consumer remembers where it was.
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	w.publishEvent(events.VerificationLocked, c, "alice", at, events.Lock{Sub: "alice", LockedUntil: at.Add(time.Hour)}, "copy-c")
	w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
	w.noticesSettled()
	mails := byMessageID(in)
	for _, id := range []string{a, b, c} {
		if n := len(mails[noticeMessageID(id)]); n != 1 {
			t.Errorf("event %s: %d mails, want 1", id, n)
		}
	}
	if n := len(in.Messages()); n != 3 {
		t.Fatalf("%d mails for 3 events", n)
	}
}

// TestNoticeRetry: a registry out of reach and a mail server that says "later" delay a notice,
// they do not lose it or double it.
func TestNoticeRetry(t *testing.T) {
	w := newWorld(t)
	var mu sync.Mutex
	refusals := 0
	in := startInbox(t, devinbox.Options{Refuse: func(string) error {
		mu.Lock()
		defer mu.Unlock()
		if refusals < 2 {
			refusals++
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}})
	w.start(notifiersvc.Config{SMTPURL: in.SMTPURL(), ContactTimeout: 200 * time.Millisecond})
	id := uuid.NewString()
	w.publishEvent(events.RecoveryGenerated, id, "alice", time.Now(), events.Recovery{Sub: "alice", Remaining: 10})
	// Nobody answers for the registry yet: the notice waits.
	natstest.Eventually(t, 10*time.Second, func() error {
		c, err := w.js.Consumer(context.Background(), events.Stream, natsapi.EventsConsumer)
		if err != nil {
			return err
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumRedelivered == 0 {
			return fmt.Errorf("not retried yet")
		}
		return nil
	})
	reg := w.startRegistry(contacts)
	m := waitMessages(t, in, 1)[0]
	w.noticesSettled()
	mu.Lock()
	defer mu.Unlock()
	if m.MessageID != noticeMessageID(id) || len(in.Messages()) != 1 || refusals != 2 || reg.questions() < 1 {
		t.Fatalf("mails %d, message-id %s, refusals %d, questions %d", len(in.Messages()), m.MessageID, refusals, reg.questions())
	}
}

// TestNoticeHorizon: history is not mailed — neither an event older than the horizon nor
// what the stream held before the events consumer was created; and a notice that cannot be
// mailed within its retry time is given up.
func TestNoticeHorizon(t *testing.T) {
	t.Run("OldEvent", func(t *testing.T) {
		w := newWorld(t)
		in := startInbox(t, devinbox.Options{})
		reg := w.startRegistry(contacts)
		w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
		w.publishEvent(events.DeviceRegistered, uuid.NewString(), "ph1", time.Now().Add(-25*time.Hour), events.Device{PHID: "ph1", Sub: "alice", Method: "TOTP"})
		fresh := uuid.NewString()
		w.publishEvent(events.DeviceRegistered, fresh, "ph2", time.Now(), events.Device{PHID: "ph2", Sub: "alice", Method: "TOTP"})
		waitMessages(t, in, 1)
		w.noticesSettled()
		if ms := in.Messages(); len(ms) != 1 || ms[0].MessageID != noticeMessageID(fresh) || reg.questions() != 1 {
			t.Fatalf("%d mails (%v), %d contact questions", len(ms), byMessageID(in), reg.questions())
		}
	})
	t.Run("StreamHistory", func(t *testing.T) {
		// Events stored a day and more before the notifier's first start: its clock says it is
		// 25 h later, so its new consumer starts after them.
		w := newWorld(t)
		in := startInbox(t, devinbox.Options{})
		reg := w.startRegistry(contacts)
		for range 3 {
			w.publishEvent(events.DeviceRegistered, uuid.NewString(), "ph1", time.Now(), events.Device{PHID: "ph1", Sub: "alice", Method: "TOTP"})
		}
		w.start(notifiersvc.Config{SMTPURL: in.SMTPURL(), Clock: func() time.Time { return time.Now().Add(25 * time.Hour) }})
		w.noticesSettled()
		c, err := w.js.Consumer(context.Background(), events.Stream, natsapi.EventsConsumer)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.Delivered.Consumer != 0 || len(in.Messages()) != 0 || reg.questions() != 0 {
			t.Fatalf("delivered %d, mails %d, questions %d", info.Delivered.Consumer, len(in.Messages()), reg.questions())
		}
	})
	t.Run("RetryTimeOver", func(t *testing.T) {
		// Two hours old, the registry out of reach: given up (acknowledged), not retried for ever.
		w := newWorld(t)
		in := startInbox(t, devinbox.Options{})
		w.start(notifiersvc.Config{SMTPURL: in.SMTPURL(), ContactTimeout: 100 * time.Millisecond})
		w.publishEvent(events.RecoveryUsed, uuid.NewString(), "alice", time.Now().Add(-2*time.Hour), events.Recovery{Sub: "alice", Remaining: 1})
		w.noticesSettled()
		if len(in.Messages()) != 0 {
			t.Fatal("mailed without a contact")
		}
	})
}

// TestDisableLink: the registry's disable_link delivery (a link, no code, no status) is mailed
// with the link; by SMS it is refused.
func TestDisableLink(t *testing.T) {
	w := newWorld(t)
	in := startInbox(t, devinbox.Options{})
	w.start(notifiersvc.Config{SMTPURL: in.SMTPURL(), SMSProvider: "webhook", SMSWebhookURL: in.SMSWebhookURL(), SMSWebhookSecret: []byte(in.SMSWebhookSecret())})
	link := "https://app.example.org/mfa/disable?token=tok_abcdef0123456789"
	r := delivery.Request{ID: "d-disable", Channel: delivery.Email, To: address, Masked: delivery.MaskEmail(address),
		Kind: delivery.DisableLink, Link: link, Sub: "alice", Locale: "de", ExpiresAt: time.Now().Add(15 * time.Minute)}
	w.publish(r)
	m := waitMessages(t, in, 1)[0]
	if m.To != address || m.MessageID != "<d-disable@example.org>" || !strings.Contains(m.Text, link) ||
		!strings.Contains(m.HTML, `href="`+link+`"`) || !strings.Contains(m.Text, "15 Minuten") || !strings.Contains(m.Subject, "MFA") {
		t.Fatalf("mail %+v", m)
	}
	sms := r
	sms.ID, sms.Channel, sms.To, sms.Masked = "d-disable-sms", delivery.SMS, phone, "+49 ••• •••• 78"
	w.publish(sms)
	natstest.Eventually(t, 10*time.Second, func() error {
		if len(w.failures()) != 1 {
			return fmt.Errorf("no failure event")
		}
		return nil
	})
	w.settled()
	if n := len(in.Messages()); n != 1 {
		t.Fatalf("%d messages: a link went by SMS", n)
	}
	if raw, _ := json.Marshal(w.failures()[0]); strings.Contains(string(raw), "tok_") {
		t.Fatal("the failure event holds the link")
	}
	if s := w.reportsFor("d-disable"); len(s) != 0 {
		t.Fatalf("a delivery without a status id was reported: %v", s)
	}
}
