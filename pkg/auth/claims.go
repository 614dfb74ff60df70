package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/golang-jwt/jwt/v5"
)

// claims are the token claims mfaflow reads, in both token modes (HS256 and JWKS).
//
// golang-jwt decodes a payload with encoding/json, which matches member names regardless of case
// and lets the last of two equal names win: `{"SCOPE":"mfa:admin"}` would grant the scope and
// `{"sub":"a","sub":"b"}` would be whichever came last. So claims decode themselves
// (UnmarshalJSON, called by golang-jwt's parser) with readClaims, which matches names exactly and
// refuses a payload that names a claim twice; golang-jwt still checks the signature, the
// algorithm, expiry (with leeway), issuer and audience on what it reads.
type claims struct {
	jwt.RegisteredClaims
	// Scope is a space-separated string or an array of strings: providers differ.
	Scope any `json:"scope,omitempty"`
	// Scp is the same as an array under another name (some providers); only JWKS reads it.
	Scp      any    `json:"scp,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	AZP      string `json:"azp,omitempty"`
	// Locale is the OIDC `locale` claim (en, de-DE): the language of the messages sent to the user.
	Locale string `json:"locale,omitempty"`
	// Email and EmailVerified are the OIDC `email` and `email_verified` claims: where security
	// notifications may go when the user has no EMAIL factor.
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified,omitempty"`
}

// UnmarshalJSON implements json.Unmarshaler with readClaims.
func (c *claims) UnmarshalJSON(payload []byte) error {
	read, err := readClaims(payload)
	if err != nil {
		return err
	}
	*c = read
	return nil
}

// readClaims is the one strict reader of a token payload: a JSON object whose members have
// distinct names (after unescaping), claims matched by their exact name (a `Sub` or `SCOPE`
// member is not `sub` or `scope`; members mfaflow does not read are ignored), and `exp`, `nbf`
// and `iat` JSON numbers where present. Whether `sub` and `exp` are there is for the verifiers.
func readClaims(payload []byte) (claims, error) {
	members, err := readMembers(payload)
	if err != nil {
		return claims{}, err
	}
	var c claims
	for name, raw := range members {
		switch name {
		case "iss":
			err = json.Unmarshal(raw, &c.Issuer)
		case "sub":
			err = json.Unmarshal(raw, &c.Subject)
		case "aud":
			err = json.Unmarshal(raw, &c.Audience)
		case "jti":
			err = json.Unmarshal(raw, &c.ID)
		case "exp":
			c.ExpiresAt, err = numericDate(raw)
		case "nbf":
			c.NotBefore, err = numericDate(raw)
		case "iat":
			c.IssuedAt, err = numericDate(raw)
		case "scope":
			err = json.Unmarshal(raw, &c.Scope)
		case "scp":
			err = json.Unmarshal(raw, &c.Scp)
		case "client_id":
			err = json.Unmarshal(raw, &c.ClientID)
		case "azp":
			err = json.Unmarshal(raw, &c.AZP)
		case "email":
			if json.Unmarshal(raw, &c.Email) != nil || len(c.Email) > 254 {
				c.Email = ""
			}
		case "email_verified":
			// Some providers send "true" as a string.
			var b any
			if json.Unmarshal(raw, &b) == nil {
				c.EmailVerified = b == true || b == "true"
			}
		case "locale":
			// Only a language preference: one that is not a string is ignored, not fatal.
			if json.Unmarshal(raw, &c.Locale) != nil || len(c.Locale) > 35 {
				c.Locale = ""
			}
		}
		if err != nil {
			return claims{}, fmt.Errorf("claim %q: %w", name, err)
		}
	}
	return c, nil
}

// readMembers splits a JSON object into its members, refusing one whose name appears twice.
func readMembers(payload []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("claims: the payload is not a JSON object")
	}
	members := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		name, ok := t.(string)
		if !ok {
			return nil, errors.New("claims: a member name is not a string")
		}
		if _, dup := members[name]; dup {
			return nil, fmt.Errorf("claims: %q appears twice", name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("claims: %q: %w", name, err)
		}
		members[name] = raw
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("claims: the payload is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("claims: data after the payload object")
	}
	return members, nil
}

// numericDate reads a NumericDate (RFC 7519 §2) that must be a JSON number: encoding/json would
// also take a string holding a number (`"exp":"9999999999"`), and so would jwt.NumericDate.
func numericDate(raw json.RawMessage) (*jwt.NumericDate, error) {
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return nil, errors.New("not a JSON number")
	}
	var d jwt.NumericDate
	if err := d.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	return &d, nil
}
