package setup

import (
	"net/url"
	"strconv"
	"testing"
)

// referenceURI is the otpauth URI as url.Values and url.URL build it, which uri must match
// byte for byte.
func referenceURI(s *Service, in Initiated, cred Credential) string {
	q := url.Values{}
	q.Set("secret", cred.Secret)
	q.Set("issuer", s.Issuer)
	q.Set("algorithm", cred.Algorithm)
	q.Set("digits", strconv.Itoa(cred.Digits))
	q.Set("period", strconv.Itoa(cred.Period))
	q.Set("eid", in.ExchangeID)
	q.Set("burl", s.PublicURL)
	q.Set("cid", s.ClientID)
	q.Set("sub", in.Sub)
	q.Set("t", "totp")
	u := url.URL{Scheme: "otpauth", Host: "totp", Path: "/" + s.Issuer + ":" + in.Sub, RawQuery: q.Encode()}
	return u.String()
}

func TestURIMatchesNetURL(t *testing.T) {
	subs := []string{"alice", "alice@example.com", "", "a b+c&d=e?f#g/h%i:j;k", "ünïcödé ✓", "../..", "x\x00y\n", "%zz", "100%"}
	issuers := []string{"mfaflow", "Example Corp", "a/b:c?d", "é&"}
	for _, iss := range issuers {
		for _, sub := range subs {
			s := &Service{Issuer: iss, PublicURL: "https://mfa.example.com/base?x=1&y=2", ClientID: "0d3c7f52-6c1e-4b1a-9f0e-8e5d2a4b6c71"}
			in := Initiated{ExchangeID: "9b2f6f1e-2c1a-4b8e-9a55-1d0f7a3c4e21", Sub: sub}
			for _, cred := range []Credential{{Secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", Algorithm: "SHA1", Digits: 6, Period: 30}, worstCredential} {
				if got, want := s.uri(in, cred), referenceURI(s, in, cred); got != want {
					t.Errorf("issuer %q sub %q:\n got %s\nwant %s", iss, sub, got, want)
				}
			}
		}
	}
}
