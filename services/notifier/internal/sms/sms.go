// Package sms sends the notifier's text messages through the operator's provider
// (MFA_SMS_PROVIDER):
//
//   - webhook: a POST of {"to","body","delivery_id"} to MFA_SMS_WEBHOOK_URL, signed like the
//     push wake-ups (pkg/webhooksig: X-Mfaflow-Signature, X-Mfaflow-Timestamp,
//     X-Mfaflow-Delivery = the delivery id, the same on every retry);
//   - twilio: Twilio's Messages API, a form POST of To, From and Body with Basic auth.
//
// Both answer the same way: 2xx is sent, 4xx other than 429 is a final refusal
// (courier.ErrRejected), 429, 5xx and network errors are temporary. Errors never carry the
// number or the provider's answer (which may quote it), and logs name only the URL's host.
package sms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mfaflow/mfaflow/pkg/webhooksig"
	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
)

// DefaultTimeout bounds one request of the default client.
const DefaultTimeout = 10 * time.Second

// NewClient is the HTTP client of both providers: a timeout, and no redirects — following one
// would send a code somewhere the operator did not configure.
func NewClient() *http.Client {
	return &http.Client{
		Timeout:       DefaultTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Webhook sends SMS by the operator's webhook; it implements courier.Sender.
type Webhook struct {
	URL    string
	Secret []byte
	Client *http.Client
	// Now stamps the signature; nil means time.Now.
	Now func() time.Time
}

var _ courier.Sender = (*Webhook)(nil)

// webhookBody is the contract with the operator's receiver.
type webhookBody struct {
	To         string `json:"to"`
	Body       string `json:"body"`
	DeliveryID string `json:"delivery_id"`
}

// Send posts one message.
func (w *Webhook) Send(ctx context.Context, m courier.Message, r courier.Rendered) error {
	body, err := json.Marshal(webhookBody{To: m.To, Body: r.Text, DeliveryID: m.ID})
	if err != nil {
		return courier.Rejected(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return courier.Rejected(errors.New("sms webhook: bad URL"))
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	req.Header.Set("Content-Type", "application/json")
	webhooksig.SetHeaders(req.Header, w.Secret, m.ID, now(), body)
	return do(client(w.Client), req, "sms webhook")
}

// Twilio sends SMS with Twilio's Messages API; it implements courier.Sender.
type Twilio struct {
	// BaseURL is MFA_TWILIO_BASE_URL (https://api.twilio.com).
	BaseURL    string
	AccountSID string
	AuthToken  string
	// From is a sender number or a messaging service SID (MG…).
	From   string
	Client *http.Client
}

var _ courier.Sender = (*Twilio)(nil)

// Send posts one message to /2010-04-01/Accounts/{sid}/Messages.json.
func (t *Twilio) Send(ctx context.Context, m courier.Message, r courier.Rendered) error {
	form := url.Values{"To": {m.To}, "Body": {r.Text}}
	if strings.HasPrefix(t.From, "MG") {
		form.Set("MessagingServiceSid", t.From)
	} else {
		form.Set("From", t.From)
	}
	endpoint := strings.TrimRight(t.BaseURL, "/") + "/2010-04-01/Accounts/" + url.PathEscape(t.AccountSID) + "/Messages.json"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return courier.Rejected(errors.New("twilio: bad URL"))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(t.AccountSID, t.AuthToken)
	return do(client(t.Client), req, "twilio")
}

func client(c *http.Client) *http.Client {
	if c == nil {
		return NewClient()
	}
	return c
}

// do sends req and maps the answer: 2xx nil, 4xx but 429 final, anything else temporary.
func do(c *http.Client, req *http.Request, what string) error {
	resp, err := c.Do(req)
	if err != nil {
		// *url.Error repeats the whole URL, query included: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s (%s): %w", what, req.URL.Host, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code >= 400 && code < 500 && code != http.StatusTooManyRequests:
		return courier.Rejected(fmt.Errorf("%s (%s): status %d", what, req.URL.Host, code))
	default:
		return fmt.Errorf("%s (%s): status %d", what, req.URL.Host, code)
	}
}
