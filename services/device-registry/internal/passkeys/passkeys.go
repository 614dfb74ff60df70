// Package passkeys is the registry's WebAuthn relying party: it implements device.RelyingParty
// with go-webauthn, so the domain states what a passkey ceremony needs (options, a session,
// a verified passkey) while the protocol (CBOR, attestation formats, and go-webauthn's own
// net/http dependency) stays out of it.
//
// It converts between the domain's Passkey and go-webauthn's Credential, and turns
// go-webauthn's refusals into the domain's: device.ErrInvalidCredential for what does not
// verify, a *device.ClonedError for a signature counter that did not advance (go-webauthn
// reports that as a flag on a verified credential, not as an error).
package passkeys

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/mfaflow/mfaflow/pkg/config"
	"github.com/mfaflow/mfaflow/services/device-registry/internal/device"
)

// RelyingParty runs passkey ceremonies for one relying party. It is safe for concurrent use.
type RelyingParty struct {
	wa *webauthn.WebAuthn
}

var _ device.RelyingParty = (*RelyingParty)(nil)

// New returns the relying party w (pkg/config.WebAuthn: RP ID, name, origins, user
// verification preferred or required). It asks for no attestation and prefers discoverable
// credentials. Settings go-webauthn refuses are an error that says why.
func New(w config.WebAuthn) (*RelyingParty, error) {
	uv := protocol.VerificationPreferred
	if w.UserVerification == string(protocol.VerificationRequired) {
		uv = protocol.VerificationRequired
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: w.RPID, RPDisplayName: w.RPName, RPOrigins: w.Origins,
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementPreferred, UserVerification: uv,
		},
	})
	if err != nil {
		return nil, err
	}
	return &RelyingParty{wa: wa}, nil
}

// BeginRegistration implements device.RelyingParty.
func (rp *RelyingParty) BeginRegistration(u device.PasskeyUser) (options, session []byte, err error) {
	wu := toUser(u)
	creation, sd, err := rp.wa.BeginRegistration(wu, webauthn.WithExclusions(webauthn.Credentials(wu.creds).CredentialDescriptors()))
	if err != nil {
		return nil, nil, fmt.Errorf("begin registration: %w", err)
	}
	return marshalCeremony(creation.Response, sd)
}

// FinishRegistration implements device.RelyingParty.
func (rp *RelyingParty) FinishRegistration(session, response []byte, u device.PasskeyUser) (device.Passkey, error) {
	sd, err := unmarshalSession(session)
	if err != nil {
		return device.Passkey{}, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return device.Passkey{}, fmt.Errorf("parse registration: %w", device.ErrInvalidCredential)
	}
	wc, err := rp.wa.CreateCredential(toUser(u), sd, parsed)
	if err != nil {
		return device.Passkey{}, fmt.Errorf("%v: %w", err, device.ErrInvalidCredential)
	}
	pk := toDomain(*wc)
	pk.UserHandle = sd.UserID
	return pk, nil
}

// BeginLogin implements device.RelyingParty.
func (rp *RelyingParty) BeginLogin(u device.PasskeyUser) (options, session []byte, err error) {
	assertion, sd, err := rp.wa.BeginLogin(toUser(u))
	if err != nil {
		return nil, nil, fmt.Errorf("begin login: %w", err)
	}
	return marshalCeremony(assertion.Response, sd)
}

// FinishLogin implements device.RelyingParty.
func (rp *RelyingParty) FinishLogin(session, assertion []byte, u device.PasskeyUser) (device.PasskeyAssertion, error) {
	sd, err := unmarshalSession(session)
	if err != nil {
		return device.PasskeyAssertion{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(assertion)
	if err != nil {
		return device.PasskeyAssertion{}, fmt.Errorf("parse assertion: %w", device.ErrInvalidCredential)
	}
	var used *device.Passkey
	for i, p := range u.Passkeys {
		if bytes.Equal(p.ID, parsed.RawID) {
			used = &u.Passkeys[i]
		}
	}
	if used == nil {
		return device.PasskeyAssertion{}, fmt.Errorf("not a passkey of the user: %w", device.ErrInvalidCredential)
	}
	wc, err := rp.wa.ValidateLogin(toUser(u), sd, parsed)
	if err != nil {
		return device.PasskeyAssertion{}, fmt.Errorf("%v: %w", err, device.ErrInvalidCredential)
	}
	if wc.Authenticator.CloneWarning {
		return device.PasskeyAssertion{}, &device.ClonedError{PasskeyID: wc.ID}
	}
	flags := parsed.Response.AuthenticatorData.Flags
	pk := toDomain(*wc)
	pk.UserHandle = used.UserHandle
	pk.BackupState = flags.HasBackupState()
	return device.PasskeyAssertion{Passkey: pk, UserVerified: flags.HasUserVerified()}, nil
}

// marshalCeremony encodes a ceremony's options for the browser and its session for the domain.
func marshalCeremony(opts any, sd *webauthn.SessionData) (options, session []byte, err error) {
	if options, err = json.Marshal(opts); err != nil {
		return nil, nil, err
	}
	if session, err = json.Marshal(sd); err != nil {
		return nil, nil, err
	}
	return options, session, nil
}

func unmarshalSession(session []byte) (webauthn.SessionData, error) {
	var sd webauthn.SessionData
	if err := json.Unmarshal(session, &sd); err != nil {
		return webauthn.SessionData{}, fmt.Errorf("%v: %w", err, device.ErrCeremonySession)
	}
	return sd, nil
}

// user is a user as go-webauthn sees one.
type user struct {
	handle []byte
	name   string
	creds  []webauthn.Credential
}

func (u user) WebAuthnID() []byte                         { return u.handle }
func (u user) WebAuthnName() string                       { return u.name }
func (u user) WebAuthnDisplayName() string                { return u.name }
func (u user) WebAuthnCredentials() []webauthn.Credential { return u.creds }

func toUser(u device.PasskeyUser) user {
	wu := user{handle: u.Handle, name: u.Name}
	for _, p := range u.Passkeys {
		wu.creds = append(wu.creds, toWebAuthn(p))
	}
	return wu
}

// toWebAuthn is the credential record p as go-webauthn keeps one.
func toWebAuthn(p device.Passkey) webauthn.Credential {
	var f protocol.AuthenticatorFlags
	for _, b := range []struct {
		on   bool
		flag protocol.AuthenticatorFlags
	}{{p.UserPresent, protocol.FlagUserPresent}, {p.UserVerified, protocol.FlagUserVerified},
		{p.BackupEligible, protocol.FlagBackupEligible}, {p.BackupState, protocol.FlagBackupState}} {
		if b.on {
			f |= b.flag
		}
	}
	c := webauthn.Credential{
		ID: p.ID, PublicKey: p.PublicKey, AttestationType: p.AttestationType, AttestationFormat: p.AttestationFormat,
		Flags:         webauthn.NewCredentialFlags(f),
		Authenticator: webauthn.Authenticator{AAGUID: p.AAGUID, SignCount: p.SignCount, Attachment: protocol.AuthenticatorAttachment(p.Attachment)},
	}
	for _, t := range p.Transports {
		c.Transport = append(c.Transport, protocol.AuthenticatorTransport(t))
	}
	return c
}

// toDomain is go-webauthn's credential c as the domain's passkey (without its user handle,
// which go-webauthn does not keep on a credential).
func toDomain(c webauthn.Credential) device.Passkey {
	p := device.Passkey{
		ID: c.ID, PublicKey: c.PublicKey, SignCount: c.Authenticator.SignCount, AAGUID: c.Authenticator.AAGUID,
		AttestationType: c.AttestationType, AttestationFormat: c.AttestationFormat, Attachment: string(c.Authenticator.Attachment),
		UserPresent: c.Flags.UserPresent, UserVerified: c.Flags.UserVerified, BackupEligible: c.Flags.BackupEligible, BackupState: c.Flags.BackupState,
	}
	for _, t := range c.Transport {
		p.Transports = append(p.Transports, string(t))
	}
	return p
}
