package device

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// Recovery codes: RecoveryCodeCount codes per set, each RecoveryCodeLength characters from
// recoveryAlphabet (32 symbols, 5 bits each: 50 bits per code), shown as two groups of five.
// The alphabet leaves out 0, O, 1 and I, which people confuse when they copy a code from paper.
const (
	RecoveryCodeCount  = 10
	RecoveryCodeLength = 10
	recoveryAlphabet   = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
)

// RecoverySet is a user's current recovery codes, stored only as keyed hashes. Generating a new
// set replaces it, so the previous codes stop working.
type RecoverySet struct {
	Sub string
	// Hashes are HMAC-SHA256(recovery key, normalised code), one per code.
	Hashes [][]byte
	// Used marks the codes already spent, by index.
	Used []bool
	// UsedFor is the status id of the authentication each spent code completed, by index, so
	// that a retry of that authentication with the same code (its answer lost) succeeds again.
	UsedFor   []string
	CreatedAt time.Time
	Version   uint64
}

// Remaining counts the unused codes.
func (r RecoverySet) Remaining() int {
	n := 0
	for i := range r.Hashes {
		if i >= len(r.Used) || !r.Used[i] {
			n++
		}
	}
	return n
}

// String describes r without its hashes.
func (r RecoverySet) String() string {
	return fmt.Sprintf("recovery{remaining=%d version=%d}", r.Remaining(), r.Version)
}

// errNoRecoveryKey: the service was built without WithRecoveryKey.
var errNoRecoveryKey = errors.New("recovery codes need a recovery key")

// GenerateRecoveryCodes gives sub a fresh set of recovery codes and returns them, the only time
// they are ever shown; the previous set stops working in the same write, which also carries
// mfa.recovery.generated.
func (s *Service) GenerateRecoveryCodes(ctx context.Context, sub string) ([]string, RecoverySet, error) {
	if sub == "" {
		return nil, RecoverySet{}, invalid("sub is missing")
	}
	if len(s.recoveryKey) == 0 {
		return nil, RecoverySet{}, errNoRecoveryKey
	}
	codes := make([]string, RecoveryCodeCount)
	hashes := make([][]byte, RecoveryCodeCount)
	for i := range codes {
		c, err := newRecoveryCode()
		if err != nil {
			return nil, RecoverySet{}, err
		}
		codes[i] = c[:5] + "-" + c[5:]
		hashes[i] = s.recoveryHash(c)
	}
	for range maxAttempts {
		cur, err := s.store.GetRecoverySet(ctx, sub)
		if errors.Is(err, ErrNotFound) {
			cur, err = RecoverySet{Sub: sub}, nil
		}
		if err != nil {
			return nil, RecoverySet{}, fmt.Errorf("generate recovery codes: %w", err)
		}
		now := s.clock.Now().UTC()
		next := RecoverySet{Sub: sub, Hashes: hashes, Used: make([]bool, len(hashes)), CreatedAt: now, Version: cur.Version}
		msg, err := recoveryEvent(events.RecoveryGenerated, sub+"/recovery/generated/"+strconv.FormatUint(cur.Version, 10), next, "", now)
		if err != nil {
			return nil, RecoverySet{}, err
		}
		saved, err := s.store.PutRecoverySet(ctx, next, msg)
		if errors.Is(err, ErrStale) {
			continue
		}
		if err != nil {
			return nil, RecoverySet{}, fmt.Errorf("generate recovery codes: %w", err)
		}
		return codes, publicSet(saved), nil
	}
	return nil, RecoverySet{}, fmt.Errorf("generate recovery codes: %w", ErrStale)
}

// RecoveryStatus returns sub's current set without its hashes; ErrNotFound if there is none
// (never generated, or deleted by ResetFactors).
func (s *Service) RecoveryStatus(ctx context.Context, sub string) (RecoverySet, error) {
	r, err := s.store.GetRecoverySet(ctx, sub)
	if err != nil {
		return RecoverySet{}, err
	}
	if len(r.Hashes) == 0 {
		return RecoverySet{}, ErrNotFound // deleted by a reset: no set
	}
	return publicSet(r), nil
}

// useRecoveryCode spends one of sub's recovery codes. The code is compared, as a keyed hash and
// in constant time, with every code of the set; spending it is a compare-and-set, so two
// concurrent uses of one code give one success and one factor.ErrReplayed.
func (s *Service) useRecoveryCode(ctx context.Context, in checkInput) (Authenticated, error) {
	sub, code, statusID := in.sub, in.code, in.statusID
	if len(s.recoveryKey) == 0 {
		return Authenticated{}, errNoRecoveryKey
	}
	norm, ok := normaliseRecoveryCode(code)
	if !ok {
		return Authenticated{}, fmt.Errorf("use recovery code: %w", factor.ErrMalformedCode)
	}
	// A set made before a key rotation is hashed under an older key: compare with each.
	hs := s.recoveryHashes(norm)
	for range maxAttempts {
		set, err := s.store.GetRecoverySet(ctx, sub)
		if errors.Is(err, ErrNotFound) {
			return Authenticated{}, fmt.Errorf("use recovery code: %w", factor.ErrNoFactor)
		}
		if err != nil {
			return Authenticated{}, fmt.Errorf("use recovery code: %w", err)
		}
		idx := -1
		for i, want := range set.Hashes {
			for _, h := range hs {
				if subtle.ConstantTimeCompare(want, h) == 1 {
					idx = i
				}
			}
		}
		if idx < 0 {
			if set.Remaining() == 0 {
				return Authenticated{}, fmt.Errorf("use recovery code: %w", factor.ErrNoFactor)
			}
			return Authenticated{}, fmt.Errorf("use recovery code: %w", factor.ErrInvalidCode)
		}
		for len(set.Used) < len(set.Hashes) {
			set.Used = append(set.Used, false)
		}
		for len(set.UsedFor) < len(set.Hashes) {
			set.UsedFor = append(set.UsedFor, "")
		}
		if set.Used[idx] {
			if statusID != "" && set.UsedFor[idx] == statusID {
				// Spent on this very authentication, whose answer was lost: the same answer.
				return Authenticated{Method: method.BackupCode, Remaining: set.Remaining()}, nil
			}
			return Authenticated{}, fmt.Errorf("use recovery code: %w", factor.ErrReplayed)
		}
		set.Used[idx] = true
		set.UsedFor[idx] = statusID
		now := s.clock.Now().UTC()
		// The spent code's hash names the fact: unique per code of every set, and one-way.
		seed := sub + "/recovery/used/" + hex.EncodeToString(set.Hashes[idx])
		msg, err := recoveryEvent(events.RecoveryUsed, seed, set, statusID, now)
		if err != nil {
			return Authenticated{}, err
		}
		saved, err := s.store.PutRecoverySet(ctx, set, msg)
		if errors.Is(err, ErrStale) {
			continue // a concurrent use (maybe of this very code) won: look again
		}
		if err != nil {
			return Authenticated{}, fmt.Errorf("use recovery code: %w", err)
		}
		return Authenticated{Method: method.BackupCode, Remaining: saved.Remaining()}, nil
	}
	return Authenticated{}, fmt.Errorf("use recovery code: %w", ErrStale)
}

// recoveryHash is the stored form of a normalised code. The codes carry 50 random bits, so a
// slow password hash would buy nothing against guessing online (the lockout does that) and cost
// every check; the key, which is not in the store, is what stops an offline search of a stolen
// store.
func (s *Service) recoveryHash(normalised string) []byte {
	return recoveryHashWith(s.recoveryKey, normalised)
}

// recoveryHashes are the code's hashes under the current and every older recovery key.
func (s *Service) recoveryHashes(normalised string) [][]byte {
	out := [][]byte{s.recoveryHash(normalised)}
	for _, k := range s.olderRecoveryKeys {
		out = append(out, recoveryHashWith(k, normalised))
	}
	return out
}

func recoveryHashWith(key []byte, normalised string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(normalised))
	return m.Sum(nil)
}

// normaliseRecoveryCode accepts what people type: any case, spaces and dashes anywhere.
func normaliseRecoveryCode(code string) (string, bool) {
	var b strings.Builder
	for _, r := range strings.ToUpper(code) {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			continue
		case r < 128 && strings.IndexByte(recoveryAlphabet, byte(r)) >= 0:
			b.WriteRune(r)
		default:
			return "", false
		}
		if b.Len() > RecoveryCodeLength {
			return "", false
		}
	}
	return b.String(), b.Len() == RecoveryCodeLength
}

func newRecoveryCode() (string, error) {
	var raw [RecoveryCodeLength]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("random recovery code: %w", err)
	}
	for i, v := range raw {
		raw[i] = recoveryAlphabet[v&31] // 256 is a multiple of 32: no bias
	}
	return string(raw[:]), nil
}

func publicSet(r RecoverySet) RecoverySet {
	r.Hashes = make([][]byte, len(r.Hashes)) // keep the count, drop the hashes
	return r
}

func recoveryEvent(t events.Type, seed string, set RecoverySet, statusID string, at time.Time) (outbox.Message, error) {
	env, err := events.New(uuid.NewSHA1(eventNamespace, []byte(seed)).String(),
		events.SourceRegistry, t, set.Sub, at,
		events.Recovery{Sub: set.Sub, Remaining: set.Remaining(), CreatedAt: set.CreatedAt.UTC(), StatusID: statusID})
	if err != nil {
		return outbox.Message{}, fmt.Errorf("build %s event: %w", t, err)
	}
	return outbox.FromEnvelope(env)
}

// readyRecoveryCode is the BACKUPCODE method's readiness (its entry in factorChecks): an unused
// code of the user's current set.
func (s *Service) readyRecoveryCode(ctx context.Context, sub string) error {
	set, err := s.store.GetRecoverySet(ctx, sub)
	if errors.Is(err, ErrNotFound) || err == nil && set.Remaining() == 0 {
		return fmt.Errorf("ready: %w", factor.ErrNoFactor)
	}
	if err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	return nil
}
