package enrollment

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// Repeated enroll frames. A companion whose enroll frame succeeded but whose answer was lost (the
// connection dropped, the bridge replica died) sends the frame again. The enrollment is ENROLLED
// by then and the code was consumed by the registry (a code enrolls once), so the registry cannot
// tell the repeat from a replay. The enrollment therefore keeps, when it becomes ENROLLED from the
// companion, a keyed hash of what enrolled it (EnrollProof): the code, the device id and the
// thumbprint of the device key. For RepeatWindow after that, the same frame from the same device
// is answered with the enrollment as it is (the same ack: status_id, device_id, ph_id) instead of
// ErrConflict. Any other device, key or code, or a repeat after the window, stays ErrConflict.
// The code itself is never stored: only an HMAC under a server secret (ProofSecret), which every
// replica shares.

// DefaultRepeatWindow is how long after enrolling a repeated enroll frame is answered again:
// two periods of the registry's TOTP credentials (30 s), so a code that was current when the
// frame was first sent still is, or has just stopped being.
const DefaultRepeatWindow = 2 * 30 * time.Second

func (s *Service) repeatWindow() time.Duration {
	if s.RepeatWindow > 0 {
		return s.RepeatWindow
	}
	return DefaultRepeatWindow
}

// enrollProof is the keyed hash of an enroll frame that made enrollment id ENROLLED; nil without
// a ProofSecret (repeats are then conflicts, as before).
func (s *Service) enrollProof(id, code, deviceID string, key *DeviceKey) []byte {
	if len(s.ProofSecret) == 0 {
		return nil
	}
	thumb := key.thumbprint()
	m := hmac.New(sha256.New, s.ProofSecret)
	// Lengths first, so that no two tuples feed the same bytes.
	fmt.Fprintf(m, "enroll-repeat v1\x00%d:%s%d:%s%d:%s%d:%s", len(id), id, len(code), code, len(deviceID), deviceID, len(thumb), thumb)
	return m.Sum(nil)
}

// isRepeat reports whether an enroll of the ENROLLED enrollment e repeats the companion frame
// that enrolled it: within the window, from the same device id, with the same device key (or
// none, if none was sent) and the same code.
func (s *Service) isRepeat(e Enrollment, in EnrollInput) bool {
	if in.Channel != ChannelCompanion || e.State != Enrolled || len(e.EnrollProof) == 0 {
		return false
	}
	if age := s.now().Sub(e.UpdatedAt); age < 0 || age > s.repeatWindow() {
		return false
	}
	deviceID := in.Device.DeviceID
	if deviceID == "" {
		// The enroll frame may leave the device to the scan; so did the first one.
		deviceID = e.Device.DeviceID
	}
	if deviceID != e.DeviceID {
		return false
	}
	want := s.enrollProof(e.ID, in.Code, deviceID, in.Device.Key)
	return want != nil && hmac.Equal(want, e.EnrollProof)
}

// thumbprint is the JWK thumbprint of k (RFC 7638: SHA-256 over the required members in
// lexicographic order, base64url); "" for no key.
func (k *DeviceKey) thumbprint() string {
	if k == nil {
		return ""
	}
	// encoding/json writes struct fields in declaration order, which is the order RFC 7638
	// requires, and escapes strings as JSON does.
	b, err := json.Marshal(struct {
		Crv string `json:"crv"`
		Kty string `json:"kty"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}{k.Crv, k.Kty, k.X, k.Y})
	if err != nil {
		return "" // strings always marshal
	}
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
