// Package mail sends the notifier's mails over SMTP (github.com/wneessen/go-mail), as
// MFA_SMTP_URL says: smtp:// requires STARTTLS (a server that does not offer it gets nothing,
// so a network attacker cannot strip TLS and read codes), smtps:// is TLS from the first byte,
// smtp+insecure:// is plain for a development server. Each mail has a text and an HTML part and
// the Message-ID <delivery-id@domain of the From address>, the same on every retry, so a
// receiving system can tell a retry from a second mail.
package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	netmail "net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
)

// Config configures a Sender.
type Config struct {
	// URL is MFA_SMTP_URL.
	URL string
	// From is MFA_MAIL_FROM.
	From string
	// TLS, when set, is the TLS configuration (tests: a self-signed server's root); nil means
	// the system roots and the URL's host as server name.
	TLS *tls.Config
	// Timeout bounds connecting and each command; 0 means 15 s.
	Timeout time.Duration
}

// Sender sends mails; it implements courier.Sender.
type Sender struct {
	client *gomail.Client
	from   *netmail.Address
	domain string
}

var _ courier.Sender = (*Sender)(nil)

// New checks cfg and prepares the client; it connects only when sending.
func New(cfg Config) (*Sender, error) {
	from, err := netmail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mail: MFA_MAIL_FROM: %w", err)
	}
	domain := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Hostname() == "" {
		return nil, errors.New("mail: MFA_SMTP_URL is not a URL with a host")
	}
	host := u.Hostname()
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	opts := []gomail.Option{gomail.WithTimeout(timeout), gomail.WithHELO(domain)}
	tlsCfg := cfg.TLS
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		tlsCfg = tlsCfg.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = host
	}
	var port int
	switch u.Scheme {
	case config.SchemeSMTP:
		port = 587
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory), gomail.WithTLSConfig(tlsCfg))
	case config.SchemeSMTPS:
		port = 465
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSConfig(tlsCfg))
	case config.SchemeSMTPInsecure:
		port = 25
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		return nil, fmt.Errorf("mail: MFA_SMTP_URL: unknown scheme %q", u.Scheme)
	}
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, errors.New("mail: MFA_SMTP_URL: bad port")
		}
	}
	opts = append(opts, gomail.WithPort(port))
	if u.User != nil {
		pass, _ := u.User.Password()
		auth := gomail.SMTPAuthAutoDiscover
		if u.Scheme == config.SchemeSMTPInsecure {
			// The operator chose a plain connection (development): PLAIN is what such
			// servers take, and the library refuses it without TLS unless told.
			auth = gomail.SMTPAuthPlainNoEnc
		}
		opts = append(opts, gomail.WithSMTPAuth(auth), gomail.WithUsername(u.User.Username()), gomail.WithPassword(pass))
	}
	client, err := gomail.NewClient(host, opts...)
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	return &Sender{client: client, from: from, domain: domain}, nil
}

// MessageID is the Message-ID of a delivery's mail, without angle brackets.
func (s *Sender) MessageID(deliveryID string) string { return deliveryID + "@" + s.domain }

// Send sends one mail. Errors never carry the address (a server's answer may quote it): 5xx
// answers are courier.ErrRejected, anything else is temporary.
func (s *Sender) Send(ctx context.Context, m courier.Message, r courier.Rendered) error {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(s.from)
	if err := msg.To(m.To); err != nil {
		return courier.Rejected(errors.New("not a valid mail address"))
	}
	msg.Subject(r.Subject)
	msg.SetMessageIDWithValue(s.MessageID(m.ID))
	msg.SetDate()
	// Automatic replies (vacation notices) to a code are noise for everyone.
	msg.SetGenHeader(gomail.HeaderXAutoResponseSuppress, "All")
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetBodyString(gomail.TypeTextPlain, r.Text)
	msg.AddAlternativeString(gomail.TypeTextHTML, r.HTML)
	if err := s.client.DialAndSendWithContext(ctx, msg); err != nil {
		return classify(err)
	}
	return nil
}

// classify turns go-mail's error into one without recipients or server text.
func classify(err error) error {
	var se *gomail.SendError
	if errors.As(err, &se) {
		code := se.ErrorCode()
		e := fmt.Errorf("smtp: %s (code %d %s)", se.Reason, code, se.EnhancedStatusCode())
		if code >= 500 && code < 600 {
			return courier.Rejected(e)
		}
		return e
	}
	// Dial, TLS and protocol errors name the server, not the recipient.
	return fmt.Errorf("smtp: %w", err)
}
