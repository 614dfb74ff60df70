package notifiersvc_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/commands"
	"github.com/mfaflow/mfaflow/pkg/delivery"
	"github.com/mfaflow/mfaflow/pkg/devinbox"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/services/notifier/notifiersvc"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	code    = "481516"
	address = "alice@example.org"
	phone   = "+4915112345678"
)

var key = bytes.Repeat([]byte{0x42}, delivery.KeySize)

// world is one test's NATS server, a status-service stand-in that records delivery reports,
// and the notifiers started on it.
type world struct {
	t   *testing.T
	srv *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream

	mu      sync.Mutex
	reports []commands.DeliveryReport
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, srv: natstest.Start(t)}
	w.nc = w.srv.Connect(t)
	var err error
	if w.js, err = jetstream.New(w.nc); err != nil {
		t.Fatal(err)
	}
	// A real responder on the status service's subject, as the status service answers.
	sub, err := w.nc.Subscribe(commands.StatusDelivery, func(m *nats.Msg) {
		var r commands.DeliveryReport
		_ = json.Unmarshal(m.Data, &r)
		w.mu.Lock()
		w.reports = append(w.reports, r)
		w.mu.Unlock()
		_ = m.Respond([]byte(`{}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *world) start(cfg notifiersvc.Config) *notifiersvc.Service {
	w.t.Helper()
	cfg.DeliveryKey = key
	if cfg.MailFrom == "" {
		cfg.MailFrom = "mfaflow <no-reply@example.org>"
	}
	cfg.PublicURL = "https://login.example.org:8443"
	cfg.Backoff, cfg.MaxBackoff = 20*time.Millisecond, 100*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc, err := notifiersvc.New(ctx, w.srv.Connect(w.t), cfg, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = svc.Close() })
	return svc
}

func (w *world) publish(r delivery.Request) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := natsEnsure(ctx, w.js); err != nil {
		w.t.Fatal(err)
	}
	p := delivery.Publisher{JS: w.js, Key: key}
	if err := p.Publish(ctx, r); err != nil {
		w.t.Fatal(err)
	}
}

// publishAs publishes r sealed under another Nats-Msg-Id: a publisher's retry beyond the
// dedupe window, which the stream stores again.
func (w *world) publishAs(r delivery.Request, msgID string) {
	w.t.Helper()
	sealed, err := delivery.Seal(key, r)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.js.Publish(context.Background(), delivery.Subject(r.Channel), sealed, jetstream.WithMsgID(msgID)); err != nil {
		w.t.Fatal(err)
	}
}

func natsEnsure(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, delivery.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return js.CreateStream(ctx, delivery.StreamConfig())
	}
	return st, err
}

func (w *world) reportsFor(id string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var states []string
	for _, r := range w.reports {
		if r.DeliveryID == id {
			states = append(states, r.State)
		}
	}
	return states
}

// settled waits until the notifier has finished with everything published: nothing pending
// or unacknowledged on its consumer.
func (w *world) settled() {
	w.t.Helper()
	natstest.Eventually(w.t, 10*time.Second, func() error {
		c, err := w.js.Consumer(context.Background(), delivery.Stream, delivery.Consumer)
		if err != nil {
			return err
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
		}
		return nil
	})
}

// failures reads the mfa.delivery.failed events stored on MFA_EVENTS.
func (w *world) failures() []events.Envelope {
	w.t.Helper()
	ctx := context.Background()
	cons, err := w.js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.DeliveryFailed.Subject()}})
	if err != nil {
		w.t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(100)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []events.Envelope
	for m := range batch.Messages() {
		var env events.Envelope
		if err := json.Unmarshal(m.Data(), &env); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, env)
	}
	return out
}

func request(id, channel string, ttl time.Duration) delivery.Request {
	r := delivery.Request{ID: id, Channel: channel, Kind: delivery.SignInCode, Code: code, Sub: "alice", StatusID: "st-" + id,
		ExpiresAt: time.Now().Add(ttl)}
	if channel == delivery.Email {
		r.To, r.Masked = address, delivery.MaskEmail(address)
	} else {
		r.To, r.Masked = phone, "+49 ••• •••• 78"
	}
	return r
}

func startInbox(t *testing.T, opt devinbox.Options) *devinbox.Inbox {
	t.Helper()
	in, err := devinbox.Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	return in
}

func waitMessages(t *testing.T, in *devinbox.Inbox, n int) []devinbox.Message {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		if got := len(in.Messages()); got < n {
			return fmt.Errorf("%d messages, want %d", got, n)
		}
		return nil
	})
	return in.Messages()
}

func checkMail(t *testing.T, m devinbox.Message, id string) {
	t.Helper()
	if m.To != address || !strings.Contains(m.From, "no-reply@example.org") || m.MessageID != "<"+id+"@example.org>" {
		t.Fatalf("headers: to %q from %q message-id %q", m.To, m.From, m.MessageID)
	}
	if !strings.Contains(m.Subject, code) || !strings.Contains(m.Text, code) || !strings.Contains(m.HTML, code) ||
		!strings.Contains(m.HTML, "<p") || !strings.Contains(m.Text, "Did not try to sign in?") {
		t.Fatalf("mail lacks the code, the HTML part or the warning:\nsubject %q\ntext %q\nhtml %q", m.Subject, m.Text, m.HTML)
	}
}

func TestEmail(t *testing.T) {
	t.Run("Plain", func(t *testing.T) {
		w := newWorld(t)
		in := startInbox(t, devinbox.Options{})
		w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
		w.publish(request("d-plain", delivery.Email, time.Minute))
		m := waitMessages(t, in, 1)[0]
		checkMail(t, m, "d-plain")
		natstest.Eventually(t, 5*time.Second, func() error {
			if s := w.reportsFor("d-plain"); len(s) != 1 || s[0] != "sent" {
				return fmt.Errorf("reports %v", s)
			}
			return nil
		})
	})
	t.Run("STARTTLS", func(t *testing.T) {
		w := newWorld(t)
		server, roots, err := devinbox.SelfSigned()
		if err != nil {
			t.Fatal(err)
		}
		in := startInbox(t, devinbox.Options{TLS: server})
		w.start(notifiersvc.Config{SMTPURL: in.SMTPURL(), SMTPTLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
		w.publish(request("d-tls", delivery.Email, time.Minute))
		m := waitMessages(t, in, 1)[0]
		checkMail(t, m, "d-tls")
		if !m.TLS {
			t.Fatal("mail did not come over TLS")
		}
	})
	t.Run("STARTTLSRequired", func(t *testing.T) {
		// smtp:// against a server without STARTTLS: nothing is sent in clear text.
		w := newWorld(t)
		in := startInbox(t, devinbox.Options{})
		w.start(notifiersvc.Config{SMTPURL: "smtp://" + in.SMTPAddr()})
		w.publish(request("d-notls", delivery.Email, 300*time.Millisecond))
		natstest.Eventually(t, 10*time.Second, func() error {
			if len(w.failures()) != 1 {
				return errors.New("no failure event yet")
			}
			return nil
		})
		if n := len(in.Messages()); n != 0 {
			t.Fatalf("%d mails sent without TLS", n)
		}
	})
}

func TestSMSWebhook(t *testing.T) {
	w := newWorld(t)
	in := startInbox(t, devinbox.Options{})
	w.start(notifiersvc.Config{SMSProvider: "webhook", SMSWebhookURL: in.SMSWebhookURL(), SMSWebhookSecret: []byte(in.SMSWebhookSecret())})
	r := request("d-sms", delivery.SMS, time.Minute)
	r.Locale = "de-AT"
	w.publish(r)
	m := waitMessages(t, in, 1)[0]
	lines := strings.Split(m.Text, "\n")
	if m.To != phone || m.DeliveryID != "d-sms" || lines[len(lines)-1] != "@login.example.org #"+code || !strings.Contains(m.Text, "Anmeldecode") {
		t.Fatalf("sms %+v", m)
	}
}

func TestTwilio(t *testing.T) {
	w := newWorld(t)
	var mu sync.Mutex
	var got []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if r.Method != http.MethodPost || r.URL.Path != "/2010-04-01/Accounts/AC123/Messages.json" || !ok || user != "AC123" || pass != "tok" {
			http.Error(rw, "unauthorized", http.StatusUnauthorized)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(rw, "bad form", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, r.PostForm)
		mu.Unlock()
		rw.WriteHeader(http.StatusCreated)
		_, _ = rw.Write([]byte(`{"sid":"SM1","status":"queued"}`))
	}))
	t.Cleanup(srv.Close)
	w.start(notifiersvc.Config{SMSProvider: "twilio", TwilioBaseURL: srv.URL, TwilioAccountSID: "AC123", TwilioAuthToken: "tok", TwilioFrom: "+15005550006"})
	w.publish(request("d-twilio", delivery.SMS, time.Minute))
	natstest.Eventually(t, 10*time.Second, func() error {
		if s := w.reportsFor("d-twilio"); len(s) != 1 || s[0] != "sent" {
			return fmt.Errorf("reports %v", s)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Get("To") != phone || got[0].Get("From") != "+15005550006" || !strings.HasSuffix(got[0].Get("Body"), "#"+code) {
		t.Fatalf("twilio got %v", got)
	}
}

func TestIdempotent(t *testing.T) {
	t.Run("PublishedTwice", func(t *testing.T) {
		w := newWorld(t)
		in := startInbox(t, devinbox.Options{})
		w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
		r := request("d-twice", delivery.Email, time.Minute)
		w.publishAs(r, "first")
		w.publishAs(r, "second")
		waitMessages(t, in, 1)
		w.settled()
		if n := len(in.Messages()); n != 1 {
			t.Fatalf("%d mails for one delivery", n)
		}
	})
	t.Run("RedeliveredAfterRestart", func(t *testing.T) {
		w := newWorld(t)
		in := startInbox(t, devinbox.Options{})
		first := w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
		r := request("d-restart", delivery.Email, time.Minute)
		w.publish(r)
		waitMessages(t, in, 1)
		w.settled()
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		// The request comes back (an ack lost with the first notifier), to a new notifier.
		w.publishAs(r, "again")
		w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
		w.settled()
		if n := len(in.Messages()); n != 1 {
			t.Fatalf("%d mails for one delivery", n)
		}
	})
}

func TestRetry(t *testing.T) {
	w := newWorld(t)
	var refused atomic.Int32
	in := startInbox(t, devinbox.Options{Refuse: func(string) error {
		if refused.Load() < 2 {
			refused.Add(1)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}})
	w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
	w.publish(request("d-retry", delivery.Email, time.Minute))
	m := waitMessages(t, in, 1)[0]
	w.settled()
	checkMail(t, m, "d-retry")
	if n, r := len(in.Messages()), refused.Load(); n != 1 || r != 2 {
		t.Fatalf("%d mails after %d refusals", n, r)
	}
}

func TestGiveUp(t *testing.T) {
	for _, c := range []struct {
		name, reason string
		smtpCode     int
	}{{"Expired", "expired", 451}, {"Rejected", "rejected", 550}} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			in := startInbox(t, devinbox.Options{Refuse: func(string) error {
				return &smtp.SMTPError{Code: c.smtpCode, EnhancedCode: smtp.EnhancedCode{c.smtpCode / 100, 0, 0}, Message: "no"}
			}})
			w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
			w.publish(request("d-"+c.reason, delivery.Email, 400*time.Millisecond))
			natstest.Eventually(t, 10*time.Second, func() error {
				if s := w.reportsFor("d-" + c.reason); len(s) != 1 || s[0] != "failed" {
					return fmt.Errorf("reports %v", s)
				}
				return nil
			})
			w.settled()
			fs := w.failures()
			if len(fs) != 1 {
				t.Fatalf("%d failure events", len(fs))
			}
			env := fs[0]
			var d events.Delivery
			if err := json.Unmarshal(env.Data, &d); err != nil {
				t.Fatal(err)
			}
			if env.ID != "delivery-failed-d-"+c.reason || env.Subject != d.DeliveryID || env.Source != events.SourceNotifier ||
				d.Reason != c.reason || d.Destination != "a***@example.org" || d.Attempts < 1 || d.StatusID != "st-d-"+c.reason {
				t.Fatalf("event %+v data %+v", env, d)
			}
			if bytes.Contains(env.Data, []byte(code)) || bytes.Contains(env.Data, []byte(address)) {
				t.Fatalf("event leaks the code or the address: %s", env.Data)
			}
		})
	}
}

func TestUnreadable(t *testing.T) {
	w := newWorld(t)
	in := startInbox(t, devinbox.Options{})
	w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
	other := bytes.Repeat([]byte{1}, delivery.KeySize)
	sealed, err := delivery.Seal(other, request("d-unreadable", delivery.Email, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.js.Publish(context.Background(), delivery.Subject(delivery.Email), sealed, jetstream.WithMsgID("d-unreadable")); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if len(w.failures()) != 1 {
			return errors.New("no failure event")
		}
		return nil
	})
	var d events.Delivery
	_ = json.Unmarshal(w.failures()[0].Data, &d)
	if d.Reason != "unreadable" || d.DeliveryID != "d-unreadable" || d.Channel != "email" {
		t.Fatalf("data %+v", d)
	}
	if len(in.Messages()) != 0 {
		t.Fatal("an unreadable request was sent")
	}
}

// TestStreamHoldsNoPlainText reads the raw request off MFA_DELIVERIES: neither the code nor
// the address may be readable there.
func TestStreamHoldsNoPlainText(t *testing.T) {
	w := newWorld(t)
	w.publish(request("d-raw", delivery.Email, time.Minute))
	st, err := w.js.Stream(context.Background(), delivery.Stream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{code, address, "alice@", "example.org"} {
		if bytes.Contains(raw.Data, []byte(secret)) {
			t.Fatalf("stream message holds %q in plain text", secret)
		}
	}
}

func TestChannels(t *testing.T) {
	w := newWorld(t)
	in := startInbox(t, devinbox.Options{})
	w.start(notifiersvc.Config{SMTPURL: in.SMTPURL()})
	msg, err := w.nc.Request(commands.NotifierChannels, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r commands.ChannelsReply
	if err := json.Unmarshal(msg.Data, &r); err != nil || !r.Email || r.SMS {
		t.Fatalf("channels %s (%v)", msg.Data, err)
	}
}
