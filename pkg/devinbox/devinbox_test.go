package devinbox_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/devinbox"
	"github.com/mfaflow/mfaflow/pkg/webhooksig"
)

const mailText = "From: mfaflow <no-reply@example.org>\r\n" +
	"To: alice@example.org\r\n" +
	"Subject: =?UTF-8?q?Ihr_Best=C3=A4tigungscode?=\r\n" +
	"Message-ID: <d-1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=b1\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Code: 123456 =C3=A4\r\n" +
	"--b1\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+MTIzNDU2PC9wPg==\r\n" +
	"--b1--\r\n"

func start(t *testing.T, opt devinbox.Options) *devinbox.Inbox {
	t.Helper()
	in, err := devinbox.Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	return in
}

func TestMailPlain(t *testing.T) {
	in := start(t, devinbox.Options{})
	if !strings.HasPrefix(in.SMTPURL(), "smtp+insecure://127.0.0.1:") {
		t.Fatalf("SMTPURL = %s", in.SMTPURL())
	}
	if err := smtp.SendMail(in.SMTPAddr(), nil, "no-reply@example.org", []string{"alice@example.org"}, []byte(mailText)); err != nil {
		t.Fatal(err)
	}
	msgs := in.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if m.To != "alice@example.org" || m.Subject != "Ihr Bestätigungscode" || m.Text != "Code: 123456 ä" || m.HTML != "<p>123456</p>" ||
		m.MessageID != "<d-1@example.org>" || m.TLS {
		t.Fatalf("parsed %+v", m)
	}
	rec := httptest.NewRecorder()
	in.MessagesHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/dev/inbox/messages", nil))
	var list []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 1 || len(list[0]) != 4 || list[0]["subject"] != "Ihr Bestätigungscode" {
		t.Fatalf("messages JSON %s (%v)", rec.Body, err)
	}
	rec = httptest.NewRecorder()
	in.PageHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/dev/inbox", nil))
	if !strings.Contains(rec.Body.String(), "alice@example.org") || !strings.Contains(rec.Body.String(), "Code: 123456") {
		t.Fatalf("page %s", rec.Body)
	}
}

func TestMailSTARTTLS(t *testing.T) {
	server, roots, err := devinbox.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	in := start(t, devinbox.Options{TLS: server})
	if !strings.HasPrefix(in.SMTPURL(), "smtp://") {
		t.Fatalf("SMTPURL = %s", in.SMTPURL())
	}
	c, err := smtp.Dial(in.SMTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("no-reply@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("alice@example.org"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte(mailText))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if m := in.Messages(); len(m) != 1 || !m[0].TLS {
		t.Fatalf("messages %+v", m)
	}
}

func TestKeepsTheLastMessages(t *testing.T) {
	in := start(t, devinbox.Options{Max: 2})
	for _, to := range []string{"a@example.org", "b@example.org", "c@example.org"} {
		if err := smtp.SendMail(in.SMTPAddr(), nil, "x@example.org", []string{to}, []byte(mailText)); err != nil {
			t.Fatal(err)
		}
	}
	if m := in.Messages(); len(m) != 2 || m[0].To != "c@example.org" || m[1].To != "b@example.org" {
		t.Fatalf("messages %+v", m)
	}
}

func TestSMSWebhook(t *testing.T) {
	in := start(t, devinbox.Options{})
	body := []byte(`{"to":"+4915112345678","body":"123456 is your code\n\n@localhost #123456","delivery_id":"d-2"}`)
	post := func(secret string) int {
		req, _ := http.NewRequest("POST", in.SMSWebhookURL(), bytes.NewReader(body))
		webhooksig.SetHeaders(req.Header, []byte(secret), "d-2", time.Now(), body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("ErrSignature", func(t *testing.T) {
		if code := post("not the inbox's secret, but as long as it"); code != http.StatusUnauthorized || len(in.Messages()) != 0 {
			t.Fatalf("status %d, %d messages", code, len(in.Messages()))
		}
	})
	t.Run("OK", func(t *testing.T) {
		if code := post(in.SMSWebhookSecret()); code != http.StatusAccepted {
			t.Fatalf("status %d", code)
		}
		m := in.Messages()
		if len(m) != 1 || m[0].To != "+4915112345678" || m[0].Subject != "SMS" || !strings.HasSuffix(m[0].Text, "@localhost #123456") || m[0].DeliveryID != "d-2" {
			t.Fatalf("messages %+v", m)
		}
	})
}
