package totp_test

import (
	"encoding/base32"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/pkg/totp"
)

// b32 encodes an RFC seed the way a secret would arrive in an otpauth URI.
func b32(s string) string {
	return strings.TrimRight(base32.StdEncoding.EncodeToString([]byte(s)), "=")
}

var (
	seedSHA1   = b32("12345678901234567890")
	seedSHA256 = b32("12345678901234567890123456789012")
	seedSHA512 = b32("1234567890123456789012345678901234567890123456789012345678901234")
)

// TestCodeRFC6238 pins the code computation to RFC 6238 Appendix B, so a change of library or
// of parameter mapping cannot silently produce codes that apps do not.
func TestCodeRFC6238(t *testing.T) {
	tests := []struct {
		unix int64
		alg  string
		want string
	}{
		{59, "SHA1", "94287082"},
		{59, "SHA256", "46119246"},
		{59, "SHA512", "90693936"},
		{1111111109, "SHA1", "07081804"},
		{1111111109, "SHA256", "68084774"},
		{1111111109, "SHA512", "25091201"},
		{1111111111, "SHA1", "14050471"},
		{1111111111, "SHA256", "67062674"},
		{1111111111, "SHA512", "99943326"},
		{1234567890, "SHA1", "89005924"},
		{1234567890, "SHA256", "91819424"},
		{1234567890, "SHA512", "93441116"},
		{2000000000, "SHA1", "69279037"},
		{2000000000, "SHA256", "90698825"},
		{2000000000, "SHA512", "38618901"},
		{20000000000, "SHA1", "65353130"},
		{20000000000, "SHA256", "77737706"},
		{20000000000, "SHA512", "47863826"},
	}
	seeds := map[string]string{"SHA1": seedSHA1, "SHA256": seedSHA256, "SHA512": seedSHA512}
	for _, tc := range tests {
		t.Run(tc.alg+"/"+time.Unix(tc.unix, 0).UTC().Format(time.RFC3339), func(t *testing.T) {
			p := totp.Params{Algorithm: tc.alg, Digits: 8, Period: 30}
			now := time.Unix(tc.unix, 0)
			got, err := totp.Code(seeds[tc.alg], now, p)
			if err != nil {
				t.Fatalf("Code: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Code = %s, want %s", got, tc.want)
			}
			step, ok, err := totp.Check(seeds[tc.alg], tc.want, now, p, 0, 0)
			if err != nil || !ok || step != tc.unix/30 {
				t.Fatalf("Check(RFC code) = %d, %v, %v; want %d, true, nil", step, ok, err, tc.unix/30)
			}
		})
	}
}

func TestStep(t *testing.T) {
	p := totp.Default
	for _, tc := range []struct {
		unix, want int64
	}{
		{0, 0}, {29, 0}, {30, 1}, {59, 1}, {1111111109, 37037036}, {20000000000, 666666666},
		{-1, -1}, {-30, -1}, {-31, -2},
	} {
		if got := totp.Step(time.Unix(tc.unix, 0), p); got != tc.want {
			t.Errorf("Step(%d) = %d, want %d", tc.unix, got, tc.want)
		}
	}
}

func TestCheckWindow(t *testing.T) {
	// A fixed secret: with a random one a code outside the window could equal one inside it by
	// chance (about 1e-6), and the test could not tell that from a wrong window.
	secret := seedSHA1
	p := totp.Default
	now := time.Unix(1_700_000_015, 0)
	cur := totp.Step(now, p)
	for _, tc := range []struct {
		offset int64
		ok     bool
	}{
		{-2, false}, {-1, true}, {0, true}, {1, true}, {2, false},
	} {
		at := now.Add(time.Duration(tc.offset*int64(p.Period)) * time.Second)
		code, err := totp.Code(secret, at, p)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.ok && sharesCode(t, secret, code, now, p) {
			t.Fatalf("fixture: the code for offset %d equals one inside the window; pick another secret or time", tc.offset)
		}
		step, ok, err := totp.Check(secret, code, now, p, 1, 0)
		if err != nil {
			t.Fatalf("offset %d: %v", tc.offset, err)
		}
		if ok != tc.ok {
			t.Errorf("offset %d: ok = %v, want %v", tc.offset, ok, tc.ok)
		}
		if ok && step != cur+tc.offset {
			t.Errorf("offset %d: step = %d, want %d", tc.offset, step, cur+tc.offset)
		}
	}
}

func sharesCode(t *testing.T, secret, code string, now time.Time, p totp.Params) bool {
	t.Helper()
	for d := -1; d <= 1; d++ {
		c, err := totp.Code(secret, now.Add(time.Duration(d*p.Period)*time.Second), p)
		if err != nil {
			t.Fatal(err)
		}
		if c == code {
			return true
		}
	}
	return false
}

func TestCheckReplay(t *testing.T) {
	secret, err := totp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	p := totp.Default
	now := time.Unix(1_700_000_015, 0)
	code, err := totp.Code(secret, now, p)
	if err != nil {
		t.Fatal(err)
	}
	step, ok, err := totp.Check(secret, code, now, p, 1, 0)
	if err != nil || !ok {
		t.Fatalf("first use: ok=%v err=%v", ok, err)
	}
	// The same code again, within its validity window, must be refused once its step is
	// recorded, both at the same instant and a step later when it is still within skew.
	for _, at := range []time.Time{now, now.Add(30 * time.Second)} {
		if _, ok, err := totp.Check(secret, code, at, p, 1, step); err != nil || ok {
			t.Errorf("replay at %v: ok=%v err=%v, want refused", at.Unix(), ok, err)
		}
	}
	// A code from an earlier step than the recorded one is refused too, not only the same step.
	prev, err := totp.Code(secret, now.Add(-30*time.Second), p)
	if err != nil {
		t.Fatal(err)
	}
	if prev != code {
		if _, ok, _ := totp.Check(secret, prev, now, p, 1, step); ok {
			t.Error("code of a step below lastStep accepted")
		}
	}
	// The next step's code still works after the current one was used.
	next, err := totp.Code(secret, now.Add(30*time.Second), p)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := totp.Check(secret, next, now, p, 1, step); err != nil || !ok || got != step+1 {
		t.Errorf("next step: step=%d ok=%v err=%v, want %d true nil", got, ok, err, step+1)
	}
}

func TestCheckMalformedCode(t *testing.T) {
	secret, err := totp.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_015, 0)
	good, err := totp.Code(secret, now, totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{
		"", "12345", "1234567", good + "0", good[:5], "12a456", "-12345", " " + good[1:],
		good[:3] + " " + good[3:], "１２３４５６", "abcdef",
	} {
		_, ok, err := totp.Check(secret, code, now, totp.Default, 1, 0)
		if err != nil {
			t.Errorf("Check(%q): err = %v, want nil", code, err)
		}
		if ok {
			t.Errorf("Check(%q): accepted", code)
		}
	}
}

func TestCheckErrors(t *testing.T) {
	now := time.Unix(1_700_000_015, 0)
	for _, secret := range []string{"", "   ", "not base32!", "JBSWY3DPEHPK3PX1", "A"} {
		if _, ok, err := totp.Check(secret, "123456", now, totp.Default, 1, 0); err == nil || ok {
			t.Errorf("Check(secret %q): ok=%v err=%v, want error", secret, ok, err)
		}
		if _, err := totp.Code(secret, now, totp.Default); err == nil {
			t.Errorf("Code(secret %q): want error", secret)
		}
	}
	secret, _ := totp.NewSecret()
	for _, p := range []totp.Params{
		{Algorithm: "MD5", Digits: 6, Period: 30},
		{Algorithm: "sha1", Digits: 6, Period: 30},
		{Algorithm: "SHA1", Digits: 5, Period: 30},
		{Algorithm: "SHA1", Digits: 9, Period: 30},
		{Algorithm: "SHA1", Digits: 6, Period: 0},
	} {
		if _, _, err := totp.Check(secret, "123456", now, p, 1, 0); err == nil {
			t.Errorf("Check with %+v: want error", p)
		}
	}
	if _, _, err := totp.Check(secret, "123456", now, totp.Default, -1, 0); err == nil {
		t.Error("Check with negative skew: want error")
	}
}

// TestCheckLenientSecret keeps Check in agreement with what apps accept when scanning: the
// secret in lower case or padded is the same secret.
func TestCheckLenientSecret(t *testing.T) {
	now := time.Unix(1_700_000_015, 0)
	code, err := totp.Code(seedSHA1, now, totp.Default)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{strings.ToLower(seedSHA1), base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))} {
		if _, ok, err := totp.Check(s, code, now, totp.Default, 1, 0); err != nil || !ok {
			t.Errorf("Check(secret %q): ok=%v err=%v", s, ok, err)
		}
	}
}

func TestNewSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s, err := totp.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 32 {
			t.Fatalf("len(%q) = %d, want 32", s, len(s))
		}
		if strings.ContainsAny(s, "=abcdefghijklmnopqrstuvwxyz") {
			t.Fatalf("%q: want upper case without padding", s)
		}
		b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
		if err != nil {
			t.Fatalf("%q does not decode: %v", s, err)
		}
		if len(b) != totp.SecretBytes {
			t.Fatalf("%q decodes to %d bytes, want %d", s, len(b), totp.SecretBytes)
		}
		if seen[s] {
			t.Fatalf("NewSecret repeated %q", s)
		}
		seen[s] = true
	}
}

func BenchmarkCheck(b *testing.B) {
	secret, err := totp.NewSecret()
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1_700_000_015, 0)
	code, err := totp.Code(secret, now, totp.Default)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := totp.Check(secret, code, now, totp.Default, 1, 0); err != nil || !ok {
			b.Fatal("refused", err)
		}
	}
}

func BenchmarkNewSecret(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := totp.NewSecret(); err != nil {
			b.Fatal(err)
		}
	}
}
