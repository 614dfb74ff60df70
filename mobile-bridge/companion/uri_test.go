package companion_test

import (
	"testing"

	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

func TestParseURI(t *testing.T) {
	const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	tests := []struct {
		name    string
		uri     string
		want    companion.Enrollment
		wantErr bool
	}{
		{
			name: "Cidaas",
			uri: "otpauth://totp/ACME:alice?secret=" + secret + "&issuer=ACME&algorithm=SHA256&digits=8&period=60" +
				"&eid=ex-1&burl=https%3A%2F%2Fmfa.example.com&cid=app-1&sub=alice-sub&t=totp",
			want: companion.Enrollment{
				Secret: secret, Issuer: "ACME", Account: "alice", ExchangeID: "ex-1",
				BaseURL: "https://mfa.example.com", ClientID: "app-1", Sub: "alice-sub", Method: "totp",
				Params: totp.Params{Algorithm: "SHA256", Digits: 8, Period: 60},
			},
		},
		{
			name: "PlainDefaults",
			uri:  "otpauth://totp/ACME:alice?secret=" + secret,
			want: companion.Enrollment{Secret: secret, Issuer: "ACME", Account: "alice", Params: totp.Default},
		},
		{
			name: "EscapedLabel",
			uri:  "otpauth://totp/ACME%20Corp%3Aalice%40example.com?secret=" + secret,
			want: companion.Enrollment{Secret: secret, Issuer: "ACME Corp", Account: "alice@example.com", Params: totp.Default},
		},
		{
			name: "IssuerParameterWins",
			uri:  "otpauth://totp/Old:alice?secret=" + secret + "&issuer=New",
			want: companion.Enrollment{Secret: secret, Issuer: "New", Account: "alice", Params: totp.Default},
		},
		{
			name: "LabelWithoutIssuer",
			uri:  "otpauth://totp/alice?secret=" + secret,
			want: companion.Enrollment{Secret: secret, Account: "alice", Params: totp.Default},
		},
		{
			name: "LenientSecretAndCase",
			uri:  "OTPAUTH://TOTP/ACME:alice?secret=jbsw%20y3dp%20ehpk%203pxp&algorithm=sha1",
			want: companion.Enrollment{Secret: "JBSWY3DPEHPK3PXP", Issuer: "ACME", Account: "alice", Params: totp.Default},
		},
		{name: "ErrMissingSecret", uri: "otpauth://totp/ACME:alice?issuer=ACME", wantErr: true},
		{name: "ErrSecretNotBase32", uri: "otpauth://totp/ACME:alice?secret=1189", wantErr: true},
		{name: "ErrWrongScheme", uri: "https://totp/ACME:alice?secret=" + secret, wantErr: true},
		{name: "ErrHOTP", uri: "otpauth://hotp/ACME:alice?secret=" + secret + "&counter=0", wantErr: true},
		{name: "ErrAlgorithm", uri: "otpauth://totp/ACME:alice?secret=" + secret + "&algorithm=MD5", wantErr: true},
		{name: "ErrDigits", uri: "otpauth://totp/ACME:alice?secret=" + secret + "&digits=10", wantErr: true},
		{name: "ErrPeriod", uri: "otpauth://totp/ACME:alice?secret=" + secret + "&period=0", wantErr: true},
		{name: "ErrBaseURL", uri: "otpauth://totp/ACME:alice?secret=" + secret + "&burl=javascript:alert(1)", wantErr: true},
		{name: "ErrNotAURI", uri: "%%%", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := companion.ParseURI(tt.uri)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseURI(%q) = %+v, want an error", tt.uri, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", tt.uri, err)
			}
			tt.want.URI = tt.uri
			if got != tt.want {
				t.Fatalf("ParseURI(%q)\n got %+v\nwant %+v", tt.uri, got, tt.want)
			}
		})
	}
}
