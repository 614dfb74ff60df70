package companion_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
)

const qrText = "otpauth://totp/ACME:alice%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=ACME" +
	"&algorithm=SHA1&digits=6&period=30&eid=3f6c1a9e-5b7d-4c1e-9a77-0d2b8e4f1c3a&burl=https%3A%2F%2Fmfa.example.com&t=totp"

// qrImage renders text as a QR code of size pixels, with margin pixels of white around it.
func qrImage(t *testing.T, text string, size, margin int) image.Image {
	t.Helper()
	code, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		t.Fatal(err)
	}
	code, err = barcode.Scale(code, size, size)
	if err != nil {
		t.Fatal(err)
	}
	img := image.NewGray(image.Rect(0, 0, size+2*margin, size+2*margin))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, code.Bounds().Add(image.Pt(margin, margin)), code, code.Bounds().Min, draw.Src)
	return img
}

func pngBytes(t *testing.T, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pngHeader is a PNG that claims width×height pixels and stops after its header, which is all
// a decoder looks at before allocating.
func pngHeader(width, height uint32) []byte {
	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:], width)
	binary.BigEndian.PutUint32(ihdr[4:], height)
	ihdr[8], ihdr[9] = 8, 0 // 8-bit grayscale
	chunk := append([]byte("IHDR"), ihdr[:]...)
	out := []byte("\x89PNG\r\n\x1a\n")
	out = binary.BigEndian.AppendUint32(out, uint32(len(ihdr)))
	out = append(out, chunk...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(chunk))
}

func TestDecodeQR(t *testing.T) {
	t.Run("PNG", func(t *testing.T) {
		got, err := companion.DecodeQR(pngBytes(t, qrImage(t, qrText, 256, 16)))
		if err != nil || got != qrText {
			t.Fatalf("DecodeQR = %q, %v; want %q", got, err, qrText)
		}
	})
	t.Run("PNGWithoutQuietZone", func(t *testing.T) {
		got, err := companion.DecodeQR(pngBytes(t, qrImage(t, qrText, 256, 0)))
		if err != nil || got != qrText {
			t.Fatalf("DecodeQR = %q, %v; want %q", got, err, qrText)
		}
	})
	t.Run("JPEG", func(t *testing.T) {
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, qrImage(t, qrText, 300, 20), &jpeg.Options{Quality: 80}); err != nil {
			t.Fatal(err)
		}
		got, err := companion.DecodeQR(buf.Bytes())
		if err != nil || got != qrText {
			t.Fatalf("DecodeQR = %q, %v; want %q", got, err, qrText)
		}
	})
	t.Run("ErrNoCode", func(t *testing.T) {
		blank := image.NewGray(image.Rect(0, 0, 100, 100))
		if got, err := companion.DecodeQR(pngBytes(t, blank)); err == nil {
			t.Fatalf("DecodeQR of a blank image = %q, want an error", got)
		}
	})
	t.Run("ErrNotAnImage", func(t *testing.T) {
		if got, err := companion.DecodeQR([]byte("otpauth://totp/x")); err == nil {
			t.Fatalf("DecodeQR of text = %q, want an error", got)
		}
	})
	t.Run("ErrTooLarge", func(t *testing.T) {
		if got, err := companion.DecodeQR(pngHeader(100000, 100000)); err == nil {
			t.Fatalf("DecodeQR of a 10-gigapixel header = %q, want an error", got)
		}
	})
}

func TestDecodeQRDataURI(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString(pngBytes(t, qrImage(t, qrText, 256, 16)))
	tests := []struct {
		name    string
		uri     string
		wantErr bool
	}{
		{name: "OK", uri: "data:image/png;base64," + b64},
		{name: "ErrNotDataURI", uri: "https://example.com/qr.png", wantErr: true},
		{name: "ErrNotImage", uri: "data:text/plain;base64," + b64, wantErr: true},
		{name: "ErrNoPayload", uri: "data:image/png;base64", wantErr: true},
		{name: "ErrNotBase64", uri: "data:image/png;base64,!!!", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := companion.DecodeQRDataURI(tt.uri)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("DecodeQRDataURI = %q, want an error", got)
				}
				return
			}
			if err != nil || got != qrText {
				t.Fatalf("DecodeQRDataURI = %q, %v; want %q", got, err, qrText)
			}
		})
	}
}
