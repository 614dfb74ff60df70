// Package signin is the sign-in aggregate of mfaflow's status service: a user proving a factor
// (an "authentication" in the routes and events), with its own states, errors and events
// (mfa.verification.*, mfa.push.*). Its state machine:
//
//	INITIATED → AUTHENTICATED                               (TOTP, BACKUPCODE: a right code)
//	INITIATED → PUSH_ACKNOWLEDGED → ALLOWED → AUTHENTICATED (PUSH: the right number approved)
//	INITIATED | PUSH_ACKNOWLEDGED → DENIED                  (PUSH: denied, or a wrong number)
//	INITIATED | PUSH_ACKNOWLEDGED → EXPIRED | CANCELLED     (a new push also cancels the old)
//
// A refused code leaves a sign-in open (mfa.verification.failed) until it expires or the
// registry locks the user. ALLOWED is passed through within one answer of the device; it is
// only ever seen when the write to AUTHENTICATED failed, and the device's repeated approval
// finishes it. FAILED belongs to the contract's set of states but no transition enters it.
// Terminal states never change. Every transition is a compare-and-set on the stored sign-in
// and carries its CloudEvent in the same write (outbox).
//
// The package also holds the rules of what a finished sign-in proves, and to whom: the claims
// of the mfa_token an AUTHENTICATED sign-in earns (amr per method, RFC 8176), which caller may
// have it (TokenClaims), and the one-time redemption of that token as a step-up proof
// (RedeemStepUp). Transports only mint and hand out what it decides; it imports none.
package signin

import (
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events/method"
)

// jtiNamespace derives a sign-in's token id from its status id, so a token re-minted on a
// later poll has the same claims as the one the verification answered with.
var jtiNamespace = uuid.MustParse("8f7d3f2e-4b8a-4c61-9d0e-2a7b5c3e1f90")

// Claims are what the mfa_token of a sign-in says (the HTTP adapter has package mfatoken sign
// them; this package imports no signer, which serves HTTP).
type Claims struct {
	Sub      string    // the user
	Audience string    // the relying app: the sign-in's client id
	StatusID string    // the sign-in's status_id
	JTI      string    // derived from the status id: the same on every re-mint
	AMR      []string  // RFC 8176 values: ["otp"], ["swk","user"], ["kba"]
	AuthTime time.Time // when the sign-in became AUTHENTICATED
}

// TokenClaims returns the claims of the mfa_token of a for caller, or false when caller gets
// none: a is not AUTHENTICATED, or caller is not the one that started it.
func TokenClaims(a Authentication, caller Caller) (Claims, bool) {
	if a.State != Authenticated || !a.VisibleTo(caller) {
		return Claims{}, false
	}
	return Claims{
		Sub: a.Sub, Audience: a.ClientID, StatusID: a.ID, AMR: amr(a.Method, a.UserVerified), AuthTime: a.AuthTime,
		JTI: uuid.NewSHA1(jtiNamespace, []byte(a.ID)).String(),
	}, true
}

// amr is what a factor of the method called name proves, as RFC 8176 names it: the method's
// registration says (events/method); none for a method not registered, which mints no token.
//
// A passkey whose authenticator verified the user adds "user" (method.AMRUserVerified).
func amr(name string, userVerified bool) []string {
	m, _ := method.ByName(name)
	if userVerified && m.SignIn == method.Assertion {
		return append(m.AMR, method.AMRUserVerified)
	}
	return m.AMR
}
