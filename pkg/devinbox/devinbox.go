// Package devinbox is the dev stack's stand-in for a mail server and an SMS provider: a real
// SMTP server (github.com/emersion/go-smtp) and an SMS webhook receiver that checks the
// X-Mfaflow-Signature, both on loopback, keeping the last messages in memory for a page
// (GET /dev/inbox) and a JSON list (GET /dev/inbox/messages). The notifier talks to it exactly
// as it would to a production server, so `make run` shows codes without any account anywhere.
// Tests use it as the receiving end of real SMTP (plain or STARTTLS) and webhook traffic.
package devinbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mfaflow/mfaflow/pkg/webhooksig"
)

// DefaultMax is how many messages an inbox keeps; older ones are dropped.
const DefaultMax = 500

// Message is one received mail or SMS.
type Message struct {
	// Channel is "email" or "sms".
	Channel string `json:"-"`
	To      string `json:"to"`
	// Subject is the mail's decoded subject, "SMS" for an SMS.
	Subject string `json:"subject"`
	// Text is the mail's text/plain part, or the SMS body.
	Text       string    `json:"text"`
	ReceivedAt time.Time `json:"received_at"`
	// What tests check beyond the page: the HTML part, headers, the raw mail.
	HTML       string `json:"-"`
	From       string `json:"-"`
	MessageID  string `json:"-"`
	DeliveryID string `json:"-"` // X-Mfaflow-Delivery of an SMS
	TLS        bool   `json:"-"` // the mail came over TLS (STARTTLS)
	Raw        []byte `json:"-"`
}

// Options configure an inbox.
type Options struct {
	// Max messages kept; 0 means DefaultMax.
	Max int
	// TLS, when set, makes the SMTP server offer STARTTLS with this certificate.
	TLS *tls.Config
	// Refuse, when set, is asked before a mail is accepted; a non-nil answer is the SMTP error
	// the server returns (tests: a *smtp.SMTPError with a 4xx or 5xx code).
	Refuse func(to string) error
	// Log receives the servers' errors; nil discards them.
	Log *slog.Logger
	// Clock checks the SMS webhook's timestamp and stamps received_at; nil means time.Now. The
	// dev stack passes its own, so a stack on a test clock signs and checks on the same time.
	Clock func() time.Time
}

func (in *Inbox) now() time.Time {
	if in.opt.Clock != nil {
		return in.opt.Clock()
	}
	return time.Now()
}

// Inbox is a running dev inbox.
type Inbox struct {
	opt    Options
	secret []byte

	smtp    *smtp.Server
	smtpLn  net.Listener
	hook    *http.Server
	hookLn  net.Listener
	hookURL string

	mu   sync.Mutex
	msgs []Message // oldest first
}

// Start runs the SMTP server and the SMS webhook receiver on 127.0.0.1 with random ports.
func Start(opt Options) (*Inbox, error) {
	if opt.Max <= 0 {
		opt.Max = DefaultMax
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	in := &Inbox{opt: opt, secret: []byte(base64.RawURLEncoding.EncodeToString(secret))}

	var err error
	if in.smtpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("devinbox: smtp listen: %w", err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{in: in, conn: c}, nil
	}))
	s.Domain = "localhost"
	s.MaxMessageBytes = 1 << 20
	s.MaxRecipients = 10
	s.ReadTimeout, s.WriteTimeout = 30*time.Second, 30*time.Second
	s.AllowInsecureAuth = true
	s.TLSConfig = opt.TLS
	s.ErrorLog = log.New(slogWriter{opt.Log}, "", 0)
	in.smtp = s
	go func() { _ = s.Serve(in.smtpLn) }()

	if in.hookLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		_ = in.Close()
		return nil, fmt.Errorf("devinbox: webhook listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sms", in.receiveSMS)
	in.hook = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	in.hookURL = "http://" + in.hookLn.Addr().String() + "/sms"
	go func() { _ = in.hook.Serve(in.hookLn) }()
	return in, nil
}

// SMTPAddr is the SMTP server's host:port.
func (in *Inbox) SMTPAddr() string { return in.smtpLn.Addr().String() }

// SMTPURL is the MFA_SMTP_URL that reaches the server: smtp:// (STARTTLS required) when it
// has TLS, else smtp+insecure://.
func (in *Inbox) SMTPURL() string {
	if in.opt.TLS != nil {
		return "smtp://" + in.SMTPAddr()
	}
	return "smtp+insecure://" + in.SMTPAddr()
}

// SMSWebhookURL is the MFA_SMS_WEBHOOK_URL of the receiver.
func (in *Inbox) SMSWebhookURL() string { return in.hookURL }

// SMSWebhookSecret is the MFA_SMS_WEBHOOK_SECRET the receiver checks signatures with (random
// per inbox, 43 characters).
func (in *Inbox) SMSWebhookSecret() string { return string(in.secret) }

// Messages returns the kept messages, newest first.
func (in *Inbox) Messages() []Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]Message, len(in.msgs))
	for i, m := range in.msgs {
		out[len(in.msgs)-1-i] = m
	}
	return out
}

func (in *Inbox) add(m Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, m)
	if over := len(in.msgs) - in.opt.Max; over > 0 {
		in.msgs = append(in.msgs[:0:0], in.msgs[over:]...)
	}
}

// Close stops both servers.
func (in *Inbox) Close() error {
	var errs []error
	if in.smtp != nil {
		errs = append(errs, in.smtp.Close())
	}
	if in.hook != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		errs = append(errs, in.hook.Shutdown(ctx))
	} else if in.hookLn != nil {
		errs = append(errs, in.hookLn.Close())
	}
	for i, err := range errs {
		if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// session receives one SMTP connection's mails.
type session struct {
	in   *Inbox
	conn *smtp.Conn
	from string
	to   []string
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.in.opt.Refuse != nil {
		if err := s.in.opt.Refuse(strings.Join(s.to, ",")); err != nil {
			return err
		}
	}
	m, err := ParseMail(raw)
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "unparseable message"}
	}
	_, m.TLS = s.conn.TLSConnectionState()
	m.ReceivedAt = s.in.now().UTC()
	for _, to := range s.to {
		m.To = to
		s.in.add(m)
	}
	return nil
}

// ParseMail reads a mail with net/mail and mime/multipart: the decoded subject, From,
// Message-ID, and the text/plain and text/html parts (at any depth of multipart/*).
func ParseMail(raw []byte) (Message, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Message{}, err
	}
	dec := new(mime.WordDecoder)
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		subject = msg.Header.Get("Subject")
	}
	m := Message{Channel: "email", Subject: subject, From: msg.Header.Get("From"), MessageID: msg.Header.Get("Message-Id"), Raw: raw}
	if err := walk(&m, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body); err != nil {
		return Message{}, err
	}
	return m, nil
}

// walk fills m's text and HTML from a body of type ctype.
func walk(m *Message, ctype, encoding string, body io.Reader) error {
	if ctype == "" {
		ctype = "text/plain"
	}
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return fmt.Errorf("content type: %w", err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextPart() // decodes quoted-printable itself
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := walk(m, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p); err != nil {
				return err
			}
		}
	}
	if strings.EqualFold(strings.TrimSpace(encoding), "base64") {
		body = base64.NewDecoder(base64.StdEncoding, &newlineStripper{r: body})
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	switch mt {
	case "text/plain":
		if m.Text == "" {
			m.Text = string(b)
		}
	case "text/html":
		if m.HTML == "" {
			m.HTML = string(b)
		}
	}
	return nil
}

// newlineStripper drops CR and LF so base64 lines decode as one.
type newlineStripper struct{ r io.Reader }

func (n *newlineStripper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		j := 0
		for _, c := range p[:k] {
			if c != '\r' && c != '\n' {
				p[j] = c
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// smsBody is the SMS webhook's request, as the notifier sends it.
type smsBody struct {
	To         string `json:"to"`
	Body       string `json:"body"`
	DeliveryID string `json:"delivery_id"`
}

// receiveSMS accepts a signed SMS webhook request.
func (in *Inbox) receiveSMS(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	if err := webhooksig.VerifyRequest(in.secret, r, body, in.now(), 5*time.Minute); err != nil {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b smsBody
	if err := json.Unmarshal(body, &b); err != nil || b.To == "" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	in.add(Message{Channel: "sms", To: b.To, Subject: "SMS", Text: b.Body, ReceivedAt: in.now().UTC(),
		DeliveryID: r.Header.Get(webhooksig.HeaderDelivery), Raw: body})
	w.WriteHeader(http.StatusAccepted)
}

// MessagesHandler answers GET /dev/inbox/messages: [{"to","subject","text","received_at"}],
// newest first.
func (in *Inbox) MessagesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(in.Messages())
	})
}

var page = template.Must(template.New("inbox").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>mfaflow dev inbox</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.4em;text-align:left;vertical-align:top}pre{white-space:pre-wrap;margin:0}</style></head>
<body>
<h1>mfaflow dev inbox</h1>
<p>Every mail and SMS the notifier sent in this dev stack, newest first (the last {{.Max}}; this page reloads every 5 s; JSON at <a href="/dev/inbox/messages">/dev/inbox/messages</a>).</p>
<table>
<tr><th>received</th><th>to</th><th>subject</th><th>text</th></tr>
{{range .Messages}}<tr><td>{{.ReceivedAt.Format "15:04:05"}}</td><td>{{.To}}</td><td>{{.Subject}}</td><td><pre>{{.Text}}</pre></td></tr>
{{else}}<tr><td colspan="4">No messages yet.</td></tr>
{{end}}</table>
</body>
</html>
`))

// PageHandler answers GET /dev/inbox with an HTML list of the messages.
func (in *Inbox) PageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = page.Execute(w, struct {
			Max      int
			Messages []Message
		}{in.opt.Max, in.Messages()})
	})
}

// slogWriter turns the SMTP server's log lines into debug records.
type slogWriter struct{ log *slog.Logger }

func (s slogWriter) Write(p []byte) (int, error) {
	s.log.Debug("devinbox smtp", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}
