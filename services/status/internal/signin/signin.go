// Package signin holds the rules of what a finished sign-in proves, and to whom: the claims of
// the mfa_token an AUTHENTICATED authentication earns (amr per method, RFC 8176) and which
// caller may have it. Transports only mint and hand out what it decides; it imports none.
package signin

import (
	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/mfatoken"
)

// jtiNamespace derives an authentication's token id from its status id, so a token re-minted
// on a later poll has the same claims as the one the verification answered with.
var jtiNamespace = uuid.MustParse("8f7d3f2e-4b8a-4c61-9d0e-2a7b5c3e1f90")

// TokenClaims returns the claims of the mfa_token of e for caller, or false when caller gets
// none: e is not an AUTHENTICATED authentication, or caller is not the one that started it.
func TokenClaims(e enrollment.Enrollment, caller enrollment.Caller) (mfatoken.Claims, bool) {
	if e.Kind != enrollment.KindAuthentication || e.State != enrollment.Authenticated || !e.VisibleTo(caller) {
		return mfatoken.Claims{}, false
	}
	return mfatoken.Claims{
		Sub: e.Sub, Audience: e.ClientID, StatusID: e.ID, AMR: amr(e.Method), AuthTime: e.AuthTime,
		JTI: uuid.NewSHA1(jtiNamespace, []byte(e.ID)).String(),
	}, true
}

// amr is what a factor of method proves, as RFC 8176 names it.
func amr(method string) []string {
	switch method {
	case enrollment.MethodBackupCode:
		return []string{"kba"} // knowledge-based: a code written down in advance
	case enrollment.MethodPush:
		return []string{"swk", "user"} // a software-secured key signed it; the user picked the number
	}
	return []string{"otp"}
}
