package qr

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode/decoder"
	zenc "github.com/makiuchi-d/gozxing/qrcode/encoder"
)

// contents returns byte-mode contents (lower case keeps gozxing off numeric and alphanumeric
// mode) whose lengths cover every version at level M, the boundaries included.
func contents(t testing.TB) []string {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789%&=?:/.-_+ë"
	var out []string
	add := func(n int) {
		b := make([]byte, 0, n)
		for len(b) < n {
			b = append(b, chars[r.IntN(len(chars)-2)])
		}
		out = append(out, string(b))
	}
	for v := 1; v <= 40; v++ {
		ccBits := 8
		if v >= 10 {
			ccBits = 16
		}
		maxLen := (8*versions[v].dataBytes() - 4 - ccBits) / 8
		add(maxLen)
		add(1 + r.IntN(maxLen))
	}
	for n := 200; n <= 600; n += 29 {
		add(n)
	}
	out = append(out, "otpauth://totp/mfaflow:Zoë?secret=JBSWY3DPEHPK3PXP&issuer=mfaflow")
	return out
}

func zxingMatrix(t *testing.T, content string, mask int) *zenc.ByteMatrix {
	t.Helper()
	hints := map[gozxing.EncodeHintType]any{}
	if mask >= 0 {
		hints[gozxing.EncodeHintType_QR_MASK_PATTERN] = mask
	}
	code, err := zenc.Encoder_encode(content, decoder.ErrorCorrectionLevel_M, hints)
	if err != nil {
		t.Fatal(err)
	}
	return code.GetMatrix()
}

func sameAs(t *testing.T, what string, got []byte, dim int, want *zenc.ByteMatrix) {
	t.Helper()
	if want.GetWidth() != dim {
		t.Fatalf("%s: %d modules, gozxing %d", what, dim, want.GetWidth())
	}
	for y := range dim {
		for x := range dim {
			if got[y*dim+x] != byte(want.Get(x, y)) {
				t.Fatalf("%s: module (%d,%d) differs from gozxing's", what, x, y)
			}
		}
	}
}

// TestMatchesGozxing holds encode to the symbol gozxing's encoder draws for the same content,
// module for module: with each of the eight masks forced, and with the mask both choose.
func TestMatchesGozxing(t *testing.T) {
	var s scratch
	for i, c := range contents(t) {
		m, err := encode(c, &s)
		if err != nil {
			t.Fatalf("%d bytes: %v", len(c), err)
		}
		ver := (m.dim - 17) / 4
		name := fmt.Sprintf("%d bytes, version %d", len(c), ver)
		chosen := append([]byte(nil), m.mods...)
		if ver > 20 && i%4 != 0 {
			// gozxing is slow at large versions (seconds under -race): check the masks of a
			// sample of them only.
			sameAs(t, name, chosen, m.dim, zxingMatrix(t, c, -1))
			continue
		}
		got := make([]byte, m.dim*m.dim)
		rows, cols := make([]line, m.dim), make([]line, m.dim)
		for mask := range 8 {
			applyMask(got, s.base, layoutFor(ver).isData, m.dim, mask)
			want := zxingMatrix(t, c, mask)
			sameAs(t, fmt.Sprintf("%s, mask %d", name, mask), got, m.dim, want)
			// And the penalty must be ZXing's, for the mask choice to be.
			clear(rows)
			clear(cols)
			for y := range m.dim {
				for x := range m.dim {
					rows[y].set(x, got[y*m.dim+x])
					cols[x].set(y, got[y*m.dim+x])
				}
			}
			zp := zenc.MaskUtil_applyMaskPenaltyRule1(want) + zenc.MaskUtil_applyMaskPenaltyRule2(want) +
				zenc.MaskUtil_applyMaskPenaltyRule3(want) + zenc.MaskUtil_applyMaskPenaltyRule4(want)
			if p := penalty(rows, cols, m.dim); p != zp {
				t.Fatalf("%s, mask %d: penalty %d, gozxing's %d", name, mask, p, zp)
			}
		}
		sameAs(t, name, chosen, m.dim, zxingMatrix(t, c, -1))
	}
}

func TestTooLong(t *testing.T) {
	var s scratch
	longest := (8*versions[40].dataBytes() - 20) / 8
	if _, err := encode(string(make([]byte, longest)), &s); err != nil {
		t.Fatalf("%d bytes: %v", longest, err)
	}
	if _, err := encode(string(make([]byte, longest+1)), &s); err == nil {
		t.Fatalf("%d bytes: want error", longest+1)
	}
}
